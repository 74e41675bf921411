-- why: a database says which kia last wrote it and the highest migration it holds, so an older kia refuses to write to a newer database (one line naming both versions) instead of corrupting it.
CREATE TABLE store_meta (
    key VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL,
    updated_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
