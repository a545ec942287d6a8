-- Who changed what on a case (the case history, GET /api/v1/cases/{id}/history): one row per
-- changed field. actor_id is NULL for changes made by a process.
CREATE TABLE case_changes (
    id        TEXT PRIMARY KEY,
    case_id   TEXT NOT NULL REFERENCES cases(id),
    actor_id  TEXT,
    field     TEXT NOT NULL,
    old_value TEXT,
    new_value TEXT,
    at        BIGINT NOT NULL
);
CREATE INDEX case_changes_case ON case_changes(case_id, at, id);
