-- Ferrydesk schema (SQLite). Keep in step with ../postgres/0001_init.sql: same tables, same
-- columns, same names. Times are Unix milliseconds (INTEGER); flags are 0/1 INTEGER; JSON is TEXT.

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    display_name  TEXT NOT NULL,
    email         TEXT,
    role          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    locale        TEXT NOT NULL DEFAULT 'en',
    status        TEXT NOT NULL DEFAULT 'inactive',
    chat_limit    INTEGER,
    active_chats  INTEGER NOT NULL DEFAULT 0,
    last_chat_at  INTEGER,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    CHECK (active_chats >= 0)
);

CREATE TABLE status_history (
    id       TEXT PRIMARY KEY,
    user_id  TEXT NOT NULL REFERENCES users(id),
    status   TEXT NOT NULL,
    reason   TEXT NOT NULL,
    actor_id TEXT,
    at       INTEGER NOT NULL
);
CREATE INDEX status_history_user ON status_history(user_id, at);

CREATE TABLE sessions (
    token_hash   TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id),
    csrf_token   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL
);
CREATE INDEX sessions_user ON sessions(user_id);
CREATE INDEX sessions_expiry ON sessions(expires_at);

CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id),
    name         TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER
);

CREATE TABLE login_failures (
    key TEXT NOT NULL,
    at  INTEGER NOT NULL
);
CREATE INDEX login_failures_key ON login_failures(key, at);

CREATE TABLE queues (
    id                      TEXT PRIMARY KEY,
    name                    TEXT NOT NULL UNIQUE,
    routing_rule            TEXT NOT NULL,
    accept_timeout_secs     INTEGER NOT NULL,
    completion_timeout_mins INTEGER,
    created_at              INTEGER NOT NULL
);

CREATE TABLE queue_members (
    queue_id TEXT NOT NULL REFERENCES queues(id) ON DELETE CASCADE,
    user_id  TEXT NOT NULL REFERENCES users(id),
    PRIMARY KEY (queue_id, user_id)
);
CREATE INDEX queue_members_user ON queue_members(user_id);

CREATE TABLE channels (
    id         TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    name       TEXT NOT NULL,
    queue_id   TEXT NOT NULL REFERENCES queues(id),
    active     INTEGER NOT NULL DEFAULT 1,
    settings   TEXT NOT NULL DEFAULT '{}',
    public_key TEXT UNIQUE,
    token_hash TEXT UNIQUE,
    created_at INTEGER NOT NULL
);

CREATE TABLE contacts (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    photo_url    TEXT,
    email        TEXT,
    phone        TEXT,
    merged_into  TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);

CREATE TABLE contact_identities (
    id           TEXT PRIMARY KEY,
    contact_id   TEXT NOT NULL REFERENCES contacts(id),
    channel_id   TEXT NOT NULL REFERENCES channels(id),
    external_id  TEXT NOT NULL,
    display_name TEXT,
    created_at   INTEGER NOT NULL,
    UNIQUE (channel_id, external_id)
);
CREATE INDEX identities_contact ON contact_identities(contact_id);

CREATE TABLE chats (
    id                       TEXT PRIMARY KEY,
    status                   TEXT NOT NULL,
    contact_id               TEXT NOT NULL REFERENCES contacts(id),
    channel_id               TEXT NOT NULL REFERENCES channels(id),
    identity_id              TEXT REFERENCES contact_identities(id),
    queue_id                 TEXT NOT NULL REFERENCES queues(id),
    responsible_id           TEXT REFERENCES users(id),
    directed_to              TEXT REFERENCES users(id),
    parent_id                TEXT REFERENCES chats(id),
    started_at               INTEGER NOT NULL,
    queued_at                INTEGER NOT NULL,
    accepted_at              INTEGER,
    first_reply_at           INTEGER,
    ended_at                 INTEGER,
    last_message_at          INTEGER,
    last_message_direction   TEXT,
    preview                  TEXT,
    last_client_message_at   INTEGER,
    last_operator_message_at INTEGER,
    unread_count             INTEGER NOT NULL DEFAULT 0,
    close_reason             TEXT,
    closed_by                TEXT,
    accept_deadline          INTEGER,
    autofinish_at            INTEGER,
    missed_count             INTEGER NOT NULL DEFAULT 0,
    operator_initiated       INTEGER NOT NULL DEFAULT 0
);
-- At most one unfinished chat per contact and channel: concurrent first messages converge on it.
CREATE UNIQUE INDEX chats_open_per_contact ON chats(contact_id, channel_id) WHERE status <> 'completed';
CREATE INDEX chats_status_queue ON chats(status, queue_id, queued_at);
CREATE INDEX chats_responsible ON chats(responsible_id, status);
CREATE INDEX chats_directed ON chats(directed_to) WHERE directed_to IS NOT NULL;
CREATE INDEX chats_accept_deadline ON chats(accept_deadline) WHERE accept_deadline IS NOT NULL;
CREATE INDEX chats_autofinish ON chats(autofinish_at) WHERE autofinish_at IS NOT NULL;
CREATE INDEX chats_contact ON chats(contact_id, started_at);
CREATE INDEX chats_started ON chats(started_at);

CREATE TABLE messages (
    id              TEXT PRIMARY KEY,
    chat_id         TEXT NOT NULL REFERENCES chats(id),
    channel_id      TEXT NOT NULL,
    direction       TEXT NOT NULL,
    author_id       TEXT,
    body            TEXT NOT NULL,
    external_id     TEXT,
    delivery_status TEXT,
    created_at      INTEGER NOT NULL,
    UNIQUE (channel_id, external_id)
);
CREATE INDEX messages_chat ON messages(chat_id, created_at, id);
CREATE INDEX messages_outbound ON messages(channel_id, direction, id);

CREATE TABLE files (
    id            TEXT PRIMARY KEY,
    sha256        TEXT NOT NULL,
    size          INTEGER NOT NULL,
    content_type  TEXT NOT NULL,
    filename      TEXT NOT NULL,
    uploader_user TEXT,
    uploader_identity TEXT,
    message_id    TEXT REFERENCES messages(id),
    chat_id       TEXT,
    created_at    INTEGER NOT NULL
);
CREATE INDEX files_message ON files(message_id);

CREATE TABLE templates (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    body       TEXT NOT NULL,
    queue_id   TEXT REFERENCES queues(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE drafts (
    chat_id    TEXT NOT NULL REFERENCES chats(id),
    user_id    TEXT NOT NULL REFERENCES users(id),
    body       TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (chat_id, user_id)
);

CREATE TABLE routing_decisions (
    id         TEXT PRIMARY KEY,
    chat_id    TEXT NOT NULL REFERENCES chats(id),
    at         INTEGER NOT NULL,
    action     TEXT NOT NULL,
    rule       TEXT,
    queue_id   TEXT,
    chosen     TEXT,
    candidates TEXT NOT NULL,
    reason     TEXT NOT NULL
);
CREATE INDEX routing_decisions_chat ON routing_decisions(chat_id, at);

CREATE TABLE visitor_sessions (
    token_hash  TEXT PRIMARY KEY,
    channel_id  TEXT NOT NULL REFERENCES channels(id),
    identity_id TEXT NOT NULL REFERENCES contact_identities(id),
    created_at  INTEGER NOT NULL
);
