-- Plugins: installations, their components (shared by every node), settings per scope
-- (an installation, or a connector channel), plugin key-value data, the delivery outbox for
-- connector channels and the audit of action runs.
CREATE TABLE plugins (
    id           TEXT PRIMARY KEY,
    version      TEXT NOT NULL,
    kind         TEXT NOT NULL,
    manifest     TEXT NOT NULL,
    sha256       TEXT NOT NULL,
    enabled      INTEGER NOT NULL DEFAULT 0,
    granted      TEXT NOT NULL DEFAULT '{}',
    installed_by TEXT,
    installed_at INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);

CREATE TABLE plugin_components (
    sha256 TEXT PRIMARY KEY,
    wasm   TEXT NOT NULL
);

CREATE TABLE plugin_settings (
    scope      TEXT PRIMARY KEY,
    plugin_id  TEXT NOT NULL,
    config     TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE plugin_kv (
    scope TEXT NOT NULL,
    key   TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (scope, key)
);

CREATE TABLE outbox (
    message_id   TEXT PRIMARY KEY,
    channel_id   TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      INTEGER NOT NULL,
    locked_until INTEGER,
    last_error   TEXT,
    created_at   INTEGER NOT NULL
);
CREATE INDEX outbox_due ON outbox(next_at);

CREATE TABLE plugin_runs (
    id         TEXT PRIMARY KEY,
    plugin_id  TEXT NOT NULL,
    action     TEXT NOT NULL,
    chat_id    TEXT,
    actor_id   TEXT,
    ok         INTEGER NOT NULL,
    error      TEXT,
    effects    TEXT NOT NULL DEFAULT '[]',
    created_at INTEGER NOT NULL
);
CREATE INDEX plugin_runs_chat ON plugin_runs(chat_id, created_at);
