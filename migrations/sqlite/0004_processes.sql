-- The process engine: deployed definitions (every version kept), instances with their token
-- state as JSON, the history, jobs (service tasks, timers, called processes) claimed with leases,
-- message subscriptions, user tasks and incidents. Then cases and the chat Actions menu.
CREATE TABLE process_definitions (
    id             TEXT PRIMARY KEY,
    process_key    TEXT NOT NULL,
    version        INTEGER NOT NULL,
    name           TEXT,
    xml            TEXT NOT NULL,
    sha256         TEXT NOT NULL,
    start_messages TEXT NOT NULL DEFAULT '[]',
    deployed_by    TEXT,
    deployed_at    INTEGER NOT NULL,
    UNIQUE (process_key, version)
);

CREATE TABLE process_instances (
    id            TEXT PRIMARY KEY,
    definition_id TEXT NOT NULL REFERENCES process_definitions(id),
    process_key   TEXT NOT NULL,
    state         TEXT NOT NULL,
    data          TEXT NOT NULL,
    revision      INTEGER NOT NULL DEFAULT 0,
    parent_id     TEXT,
    parent_token  INTEGER,
    chat_id       TEXT,
    contact_id    TEXT,
    case_id       TEXT,
    started_by    TEXT,
    start_key     TEXT UNIQUE,
    incidents     INTEGER NOT NULL DEFAULT 0,
    events        INTEGER NOT NULL DEFAULT 0,
    started_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    ended_at      INTEGER
);
CREATE INDEX process_instances_state ON process_instances(state, started_at);
CREATE INDEX process_instances_chat ON process_instances(chat_id);
CREATE INDEX process_instances_contact ON process_instances(contact_id);
CREATE INDEX process_instances_parent ON process_instances(parent_id);

CREATE TABLE process_events (
    instance_id TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    element     TEXT NOT NULL,
    event       TEXT NOT NULL,
    detail      TEXT,
    PRIMARY KEY (instance_id, seq)
);

CREATE TABLE process_jobs (
    id           TEXT PRIMARY KEY,
    instance_id  TEXT NOT NULL,
    token        INTEGER NOT NULL,
    element      TEXT NOT NULL,
    kind         TEXT NOT NULL,
    task_type    TEXT NOT NULL DEFAULT '',
    state        TEXT NOT NULL,
    retries      INTEGER NOT NULL,
    due_at       INTEGER NOT NULL,
    attempt      INTEGER NOT NULL DEFAULT 0,
    lock_owner   TEXT,
    lock_expires INTEGER,
    payload      TEXT NOT NULL,
    last_error   TEXT,
    created_at   INTEGER NOT NULL,
    UNIQUE (instance_id, token, kind)
);
CREATE INDEX process_jobs_due ON process_jobs(due_at) WHERE state = 'ready';
CREATE INDEX process_jobs_expiry ON process_jobs(lock_expires) WHERE state = 'locked';
CREATE INDEX process_jobs_instance ON process_jobs(instance_id);

CREATE TABLE process_subscriptions (
    instance_id     TEXT NOT NULL,
    token           INTEGER NOT NULL,
    element         TEXT NOT NULL,
    message_name    TEXT NOT NULL,
    correlation_key TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (instance_id, token)
);
CREATE INDEX process_subscriptions_message ON process_subscriptions(message_name, correlation_key);

CREATE TABLE user_tasks (
    id               TEXT PRIMARY KEY,
    instance_id      TEXT NOT NULL,
    token            INTEGER NOT NULL,
    element          TEXT NOT NULL,
    name             TEXT,
    process_key      TEXT NOT NULL,
    assignee         TEXT,
    candidate_groups TEXT,
    form             TEXT,
    state            TEXT NOT NULL,
    chat_id          TEXT,
    case_id          TEXT,
    created_at       INTEGER NOT NULL,
    completed_at     INTEGER,
    completed_by     TEXT,
    result           TEXT,
    UNIQUE (instance_id, token)
);
CREATE INDEX user_tasks_open ON user_tasks(state, assignee);

CREATE TABLE process_incidents (
    id          TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL,
    job_id      TEXT,
    element     TEXT NOT NULL,
    message     TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    resolved_at INTEGER,
    resolved_by TEXT
);
CREATE INDEX process_incidents_open ON process_incidents(instance_id) WHERE resolved_at IS NULL;

CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);

CREATE TABLE cases (
    id             TEXT PRIMARY KEY,
    number         INTEGER NOT NULL UNIQUE,
    subject        TEXT NOT NULL,
    description    TEXT NOT NULL DEFAULT '',
    status         TEXT NOT NULL,
    priority       TEXT NOT NULL,
    contact_id     TEXT REFERENCES contacts(id),
    channel_id     TEXT REFERENCES channels(id),
    chat_id        TEXT REFERENCES chats(id),
    responsible_id TEXT REFERENCES users(id),
    created_by     TEXT,
    source_key     TEXT UNIQUE,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    closed_at      INTEGER
);
CREATE INDEX cases_contact ON cases(contact_id, created_at);
CREATE INDEX cases_status ON cases(status, created_at);

ALTER TABLE chats ADD COLUMN case_id TEXT REFERENCES cases(id);

CREATE TABLE chat_actions (
    id       TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    caption  TEXT NOT NULL,
    kind     TEXT NOT NULL,
    target   TEXT NOT NULL,
    queues   TEXT NOT NULL DEFAULT '[]',
    enabled  INTEGER NOT NULL DEFAULT 1,
    UNIQUE (kind, target)
);

-- Chat events for processes (message start events, correlation), written in the transaction
-- of the chat change and consumed by whichever node's engine claims them first.
CREATE TABLE process_signals (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    correlation_key TEXT NOT NULL,
    variables       TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    locked_until    INTEGER
);
