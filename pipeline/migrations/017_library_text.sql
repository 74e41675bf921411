-- why: a library written back over itself must keep every byte kia did not add (each entry's text as written; the comments, @string/@preamble/@comment blocks and unreadable entries around it), a library ingested again is that file's state (an entry gone from it is retired: kept, never written back), and a relative `file` path stays relative to the library's folder (kept absolute) wherever the export is written.
ALTER TABLE bib_entries ADD COLUMN verbatim VARCHAR;
ALTER TABLE bib_entries ADD COLUMN text_before VARCHAR;
ALTER TABLE bib_entries ADD COLUMN text_after VARCHAR;
ALTER TABLE bib_entries ADD COLUMN source_path VARCHAR;
ALTER TABLE bib_entries ADD COLUMN retired_at TIMESTAMP;
