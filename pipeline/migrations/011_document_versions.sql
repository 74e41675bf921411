-- why: a second file of a known paper (same key, arXiv id or DOI, other bytes) is kept as a version; one version per paper is current (the longer, complete text unless the user prefers the new one), so a truncated copy never replaces the full paper silently.
ALTER TABLE documents ADD COLUMN doi VARCHAR;
ALTER TABLE documents ADD COLUMN is_current BOOLEAN DEFAULT false;
UPDATE documents SET is_current = true
WHERE ingested_at = (SELECT max(x.ingested_at) FROM documents x WHERE x.paper_key = documents.paper_key);
