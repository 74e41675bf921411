-- why: abstention is a result, not a failure: an axis on which no category is supported is stored as `unclear` with its reason and no quote, and a paper judged outside the taxonomy's scope is flagged with its score.
ALTER TABLE proposals ADD COLUMN in_scope BOOLEAN;
ALTER TABLE proposals ADD COLUMN scope_score DOUBLE;
CREATE TABLE axis_status (
    run_id VARCHAR NOT NULL,
    paper_key VARCHAR NOT NULL,
    axis VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    reason VARCHAR,
    PRIMARY KEY (run_id, paper_key, axis)
);
