-- why: sentences of a paper that address the labeller or the model (prompt injection) are never evidence; the proposal is flagged `suspicious_text` and keeps the sentences so review and report can show them.
ALTER TABLE proposals ADD COLUMN suspicious_text BOOLEAN;
CREATE TABLE suspicious_sentences (
    run_id VARCHAR NOT NULL,
    paper_key VARCHAR NOT NULL,
    idx INTEGER NOT NULL,
    sentence VARCHAR NOT NULL,
    start_char INTEGER NOT NULL,
    end_char INTEGER NOT NULL,
    page INTEGER,
    section VARCHAR,
    PRIMARY KEY (run_id, paper_key, idx)
);
