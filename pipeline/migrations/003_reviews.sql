-- why: keep every human review decision (per paper and axis, per reviewer, with note and time) the moment it is made, so reviews resume and reviewers can be compared.
CREATE SEQUENCE reviews_seq;
CREATE TABLE reviews (
    id BIGINT PRIMARY KEY DEFAULT nextval('reviews_seq'),
    paper_key VARCHAR NOT NULL,
    run_id VARCHAR,
    axis VARCHAR,
    labels VARCHAR,
    decision VARCHAR NOT NULL,
    reviewer VARCHAR NOT NULL,
    note VARCHAR,
    decided_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
