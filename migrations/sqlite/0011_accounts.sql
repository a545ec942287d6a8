-- Login throttling and rate limits: one row per key, changed by one conditional upsert, so
-- parallel attempts are counted before any of them is checked (core/store/src/security.rs).
DROP TABLE login_failures;
CREATE TABLE throttle (
    key        TEXT PRIMARY KEY,
    attempts   INTEGER NOT NULL,
    since      INTEGER NOT NULL,
    next_at    INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX throttle_updated ON throttle(updated_at);

-- Widget visitor sessions no longer need a contact: the identity (with this id) and its contact
-- are created by the visitor's first message. Sessions expire when idle (last_seen_at).
CREATE TABLE visitor_sessions_new (
    token_hash   TEXT PRIMARY KEY,
    channel_id   TEXT NOT NULL REFERENCES channels(id),
    identity_id  TEXT NOT NULL,
    external_id  TEXT NOT NULL,
    display_name TEXT,
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL
);
INSERT INTO visitor_sessions_new
    SELECT v.token_hash, v.channel_id, v.identity_id, i.external_id, i.display_name, v.created_at,
           CAST(strftime('%s', 'now') AS INTEGER) * 1000
    FROM visitor_sessions v JOIN contact_identities i ON i.id = v.identity_id;
DROP TABLE visitor_sessions;
ALTER TABLE visitor_sessions_new RENAME TO visitor_sessions;
CREATE INDEX visitor_sessions_seen ON visitor_sessions(last_seen_at);
