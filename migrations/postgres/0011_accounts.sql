-- Login throttling and rate limits: one row per key, changed by one conditional upsert, so
-- parallel attempts are counted before any of them is checked (core/store/src/security.rs).
DROP TABLE login_failures;
CREATE TABLE throttle (
    key        TEXT PRIMARY KEY,
    attempts   BIGINT NOT NULL,
    since      BIGINT NOT NULL,
    next_at    BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX throttle_updated ON throttle(updated_at);

-- Widget visitor sessions no longer need a contact: the identity (with this id) and its contact
-- are created by the visitor's first message. Sessions expire when idle (last_seen_at).
ALTER TABLE visitor_sessions DROP CONSTRAINT IF EXISTS visitor_sessions_identity_id_fkey;
ALTER TABLE visitor_sessions ADD COLUMN external_id TEXT, ADD COLUMN display_name TEXT,
    ADD COLUMN last_seen_at BIGINT;
UPDATE visitor_sessions v SET external_id = i.external_id, display_name = i.display_name,
    last_seen_at = (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT
    FROM contact_identities i WHERE i.id = v.identity_id;
DELETE FROM visitor_sessions WHERE external_id IS NULL;
ALTER TABLE visitor_sessions ALTER COLUMN external_id SET NOT NULL,
    ALTER COLUMN last_seen_at SET NOT NULL;
CREATE INDEX visitor_sessions_seen ON visitor_sessions(last_seen_at);
