-- why: store each ingested document once (keyed by the sha256 of its bytes) with pages and sections as character offsets, and log every ingest attempt so failures are kept, not lost.
CREATE TABLE documents (
    sha256 VARCHAR PRIMARY KEY,
    paper_key VARCHAR NOT NULL,
    path VARCHAR NOT NULL,
    format VARCHAR NOT NULL,
    title VARCHAR,
    arxiv_id VARCHAR,
    n_pages INTEGER NOT NULL,
    n_chars INTEGER NOT NULL,
    text VARCHAR NOT NULL,
    extractor VARCHAR NOT NULL,
    extractor_version VARCHAR NOT NULL,
    ingested_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
CREATE TABLE pages (
    sha256 VARCHAR NOT NULL,
    page_no INTEGER NOT NULL,
    start_char INTEGER NOT NULL,
    end_char INTEGER NOT NULL,
    PRIMARY KEY (sha256, page_no)
);
CREATE TABLE sections (
    sha256 VARCHAR NOT NULL,
    idx INTEGER NOT NULL,
    name VARCHAR NOT NULL,
    heading VARCHAR,
    start_char INTEGER NOT NULL,
    end_char INTEGER NOT NULL,
    PRIMARY KEY (sha256, idx)
);
CREATE SEQUENCE ingest_log_seq;
CREATE TABLE ingest_log (
    id BIGINT PRIMARY KEY DEFAULT nextval('ingest_log_seq'),
    path VARCHAR NOT NULL,
    paper_key VARCHAR,
    sha256 VARCHAR,
    status VARCHAR NOT NULL,
    error VARCHAR,
    logged_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
