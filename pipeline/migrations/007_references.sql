-- why: a survey author's library (BibTeX, RIS, CSL-JSON) is the source of truth for bibliographic data; keep each entry with its identifiers and attached file, the paper it became, and every further file of a known paper linked rather than dropped or stored twice.
CREATE TABLE bib_entries (
    source VARCHAR NOT NULL,
    entry_key VARCHAR NOT NULL,
    entry_type VARCHAR,
    paper_key VARCHAR,
    title VARCHAR,
    authors VARCHAR,
    year VARCHAR,
    doi VARCHAR,
    arxiv_id VARCHAR,
    url VARCHAR,
    file_path VARCHAR,
    status VARCHAR NOT NULL,
    reason VARCHAR,
    added_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (source, entry_key)
);
CREATE TABLE paper_links (
    paper_key VARCHAR NOT NULL,
    path VARCHAR NOT NULL,
    sha256 VARCHAR,
    reason VARCHAR NOT NULL,
    linked_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (paper_key, path)
);
