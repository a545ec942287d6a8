-- Buffered messages: a message published with a time to live that no instance was waiting for
-- is kept until it expires; the first subscription that opens for its name and correlation key
-- takes it (Zeebe's message buffering).
CREATE TABLE process_messages (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    correlation_key TEXT NOT NULL,
    variables       TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    -- 1: only an instance that started before the message may take it (chat signals).
    earlier_only    BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX process_messages_key ON process_messages(name, correlation_key, created_at);
CREATE INDEX process_messages_expiry ON process_messages(expires_at);
