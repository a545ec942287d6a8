-- Bulk duplicate search (S18): a scan over all contacts runs in the background and leaves
-- groups of likely duplicates for review; pairs a reviewer called "not duplicates" are
-- remembered so later scans leave them apart.
CREATE TABLE duplicate_scans (
    id           TEXT PRIMARY KEY,
    state        TEXT NOT NULL,
    started_by   TEXT,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    finished_at  INTEGER,
    contacts     INTEGER NOT NULL DEFAULT 0,
    compared     INTEGER NOT NULL DEFAULT 0,
    groups_found INTEGER NOT NULL DEFAULT 0,
    duration_ms  INTEGER,
    stats        TEXT NOT NULL DEFAULT '{}',
    error        TEXT
);
-- At most one scan runs at a time, across every node.
CREATE UNIQUE INDEX duplicate_scans_one_running ON duplicate_scans(state) WHERE state = 'running';
CREATE INDEX duplicate_scans_started ON duplicate_scans(started_at);

CREATE TABLE duplicate_groups (
    id          TEXT PRIMARY KEY,
    scan_id     TEXT NOT NULL,
    position    INTEGER NOT NULL,
    rule_id     TEXT NOT NULL,
    rule        TEXT NOT NULL,
    size        INTEGER NOT NULL,
    links       TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'open',
    reviewed_by TEXT,
    reviewed_at INTEGER
);
CREATE INDEX duplicate_groups_scan ON duplicate_groups(scan_id, status, position);

CREATE TABLE duplicate_group_members (
    group_id   TEXT NOT NULL,
    contact_id TEXT NOT NULL,
    position   INTEGER NOT NULL,
    PRIMARY KEY (group_id, contact_id)
);
CREATE INDEX duplicate_group_members_contact ON duplicate_group_members(contact_id);

CREATE TABLE duplicate_dismissals (
    a     TEXT NOT NULL,
    b     TEXT NOT NULL,
    by_id TEXT,
    at    INTEGER NOT NULL,
    PRIMARY KEY (a, b)
);
