-- File contents kept in the database (`blob_store = "database"`, issue 15 row 8): for
-- deployments whose nodes share nothing but the database. Content-addressed like the
-- directory store: one row per SHA-256, never rewritten.
CREATE TABLE blob_data (
    sha256     TEXT PRIMARY KEY,
    bytes      BLOB NOT NULL,
    created_at BIGINT NOT NULL
);
