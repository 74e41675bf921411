-- why: keep every proposal run with what produced it (backend, model, prompt/schema/taxonomy hashes, version, commit), its labels per axis with confidence, evidence quotes located in the text, and one row per LLM call with tokens and latency.
CREATE TABLE runs (
    run_id VARCHAR PRIMARY KEY,
    backend VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    endpoint_host VARCHAR,
    prompt_hash VARCHAR NOT NULL,
    schema_hash VARCHAR NOT NULL,
    taxonomy_hash VARCHAR NOT NULL,
    taxonomy_name VARCHAR NOT NULL,
    package_version VARCHAR NOT NULL,
    git_commit VARCHAR,
    prompt_file VARCHAR,
    params VARCHAR NOT NULL,
    started_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
CREATE TABLE proposals (
    run_id VARCHAR NOT NULL,
    paper_key VARCHAR NOT NULL,
    sha256 VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    error VARCHAR,
    cache_key VARCHAR,
    cached BOOLEAN NOT NULL DEFAULT false,
    prompt_hash VARCHAR,
    schema_hash VARCHAR,
    model VARCHAR,
    package_version VARCHAR,
    raw_response VARCHAR,
    context_sections VARCHAR,
    prompt_tokens_saved INTEGER,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (run_id, paper_key)
);
CREATE TABLE labels (
    run_id VARCHAR NOT NULL,
    paper_key VARCHAR NOT NULL,
    axis VARCHAR NOT NULL,
    category VARCHAR NOT NULL,
    confidence DOUBLE NOT NULL,
    rationale VARCHAR,
    grounded BOOLEAN NOT NULL,
    PRIMARY KEY (run_id, paper_key, axis, category)
);
CREATE TABLE evidence (
    run_id VARCHAR NOT NULL,
    paper_key VARCHAR NOT NULL,
    axis VARCHAR NOT NULL,
    category VARCHAR NOT NULL,
    idx INTEGER NOT NULL,
    quote VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    score DOUBLE,
    start_char INTEGER,
    end_char INTEGER,
    page INTEGER,
    section VARCHAR,
    PRIMARY KEY (run_id, paper_key, axis, category, idx)
);
CREATE SEQUENCE llm_calls_seq;
CREATE TABLE llm_calls (
    id BIGINT PRIMARY KEY DEFAULT nextval('llm_calls_seq'),
    run_id VARCHAR NOT NULL,
    paper_key VARCHAR NOT NULL,
    attempt INTEGER NOT NULL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    latency_s DOUBLE,
    error VARCHAR,
    logged_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
