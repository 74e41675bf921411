-- why: an interrupted `kia propose` (Ctrl-C after 2 of 8 papers) looked complete and became every command's default run; `kia propose` clears finished_at when it starts on a run and sets it when it returns (runs made otherwise, and those already stored, count as finished).
ALTER TABLE runs ADD COLUMN finished_at TIMESTAMP DEFAULT current_timestamp;
UPDATE runs SET finished_at = started_at;
