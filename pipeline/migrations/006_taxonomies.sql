-- why: a run is read back with the taxonomy it used (any survey's axes, ids, names and single/multi-label), so the file itself is kept beside its content hash; runs of different taxonomies in one database are told apart and never mixed.
CREATE TABLE taxonomies (
    taxonomy_hash VARCHAR PRIMARY KEY,
    taxonomy_name VARCHAR NOT NULL,
    content VARCHAR NOT NULL,
    stored_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
