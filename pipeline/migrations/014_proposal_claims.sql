-- why: two `kia propose` on one database must not both pay the model for the same paper: a process claims what it is about to propose (by cache key: same paper text and settings), and another skips what a live process holds.
CREATE TABLE proposal_claims (
    cache_key VARCHAR PRIMARY KEY,
    run_id VARCHAR NOT NULL,
    paper_key VARCHAR NOT NULL,
    owner VARCHAR NOT NULL,
    host VARCHAR NOT NULL,
    pid INTEGER NOT NULL,
    claimed_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
