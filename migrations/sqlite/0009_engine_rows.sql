-- Fewer b-tree writes per engine step (see docs/benchmarks.md, "Process engine").

-- Jobs live in their primary key's b-tree (WITHOUT ROWID): inserting or deleting a job is one
-- b-tree write fewer. The separate index on instance_id goes: UNIQUE (instance_id, token, kind)
-- already serves lookups by instance.
CREATE TABLE process_jobs_keyed (
    id           TEXT NOT NULL PRIMARY KEY,
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
) WITHOUT ROWID;
INSERT INTO process_jobs_keyed (id, instance_id, token, element, kind, task_type, state, retries,
        due_at, attempt, lock_owner, lock_expires, payload, last_error, created_at)
    SELECT id, instance_id, token, element, kind, task_type, state, retries, due_at, attempt,
        lock_owner, lock_expires, payload, last_error, created_at FROM process_jobs;
DROP TABLE process_jobs;
ALTER TABLE process_jobs_keyed RENAME TO process_jobs;
CREATE INDEX process_jobs_due ON process_jobs(due_at) WHERE state = 'ready';
CREATE INDEX process_jobs_expiry ON process_jobs(lock_expires) WHERE state = 'locked';

-- An instance's start key is unique where set. Most instances have none, and a column's UNIQUE
-- constraint indexes every NULL too; a partial unique index does not. SQLite cannot drop a
-- column constraint, so the table is rebuilt.
CREATE TABLE process_instances_keyed (
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
    start_key     TEXT,
    incidents     INTEGER NOT NULL DEFAULT 0,
    events        INTEGER NOT NULL DEFAULT 0,
    started_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    ended_at      INTEGER
);
INSERT INTO process_instances_keyed (id, definition_id, process_key, state, data, revision,
        parent_id, parent_token, chat_id, contact_id, case_id, started_by, start_key, incidents,
        events, started_at, updated_at, ended_at)
    SELECT id, definition_id, process_key, state, data, revision, parent_id, parent_token,
        chat_id, contact_id, case_id, started_by, start_key, incidents, events, started_at,
        updated_at, ended_at FROM process_instances;
DROP TABLE process_instances;
ALTER TABLE process_instances_keyed RENAME TO process_instances;
CREATE INDEX process_instances_state ON process_instances(state, started_at);
CREATE INDEX process_instances_chat ON process_instances(chat_id) WHERE chat_id IS NOT NULL;
CREATE INDEX process_instances_contact ON process_instances(contact_id) WHERE contact_id IS NOT NULL;
CREATE INDEX process_instances_parent ON process_instances(parent_id) WHERE parent_id IS NOT NULL;
CREATE UNIQUE INDEX process_instances_start_key ON process_instances(start_key)
    WHERE start_key IS NOT NULL;

-- History: one row per command instead of one per event. A command's events (an element
-- completed, the next one's gateway, the instance's end, …) share a time and are numbered
-- consecutively, so a row holds the first event's number and the events as a JSON array of
-- [element, event, detail]; readers number the rest (`list_events`). Three rows per instance
-- of a three-step process instead of seven.
CREATE TABLE process_history (
    instance_id TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    events      TEXT NOT NULL,
    PRIMARY KEY (instance_id, seq)
) WITHOUT ROWID;
INSERT INTO process_history (instance_id, seq, at, events)
    SELECT instance_id, seq, at, json_array(json_array(element, event, detail))
    FROM process_events;
DROP TABLE process_events;
