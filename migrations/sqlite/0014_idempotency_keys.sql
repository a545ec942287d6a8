-- Idempotency keys (issue 15, row 5): a mutating request sent with `Idempotency-Key` is
-- answered once; a retry with the same key, caller and request gets the stored answer.
-- `scope` is the SHA-256 of the caller's credential; `request_hash` of the method, path,
-- query and body. `status` is NULL while the first request runs. Kept 24 hours.
CREATE TABLE idempotency_keys (
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    status       INTEGER,
    content_type TEXT,
    body         TEXT,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
