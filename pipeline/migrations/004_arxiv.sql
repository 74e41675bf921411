-- why: remember which arXiv papers (id and version) were fetched, with their API metadata and where the files are, so fetches dedupe and batches resume.
CREATE TABLE arxiv_papers (
    arxiv_id VARCHAR NOT NULL,
    version INTEGER NOT NULL,
    title VARCHAR,
    authors VARCHAR,
    published VARCHAR,
    updated VARCHAR,
    categories VARCHAR,
    abstract VARCHAR,
    pdf_path VARCHAR,
    html_path VARCHAR,
    fetched_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (arxiv_id, version)
);
