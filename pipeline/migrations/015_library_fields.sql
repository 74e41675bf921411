-- why: a library must come back whole from `kia export --format bibtex|ris|csljson`: each entry keeps every field it had, in its own order (raw, as JSON pairs), its place in the library (position) and the format it was read in (source_format).
ALTER TABLE bib_entries ADD COLUMN raw VARCHAR;
ALTER TABLE bib_entries ADD COLUMN position INTEGER;
ALTER TABLE bib_entries ADD COLUMN source_format VARCHAR;
