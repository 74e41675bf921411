-- why: runs get readable names (backend, model, date) while the hash of their settings stays their identity, so a rerun with the same settings finds and resumes the same run by that hash.
ALTER TABLE runs ADD COLUMN identity_hash VARCHAR;
