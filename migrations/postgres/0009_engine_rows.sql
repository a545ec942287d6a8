-- Fewer index writes per engine step (as on SQLite; see docs/benchmarks.md).

-- UNIQUE (instance_id, token, kind) already serves lookups of jobs by instance.
DROP INDEX process_jobs_instance;

-- An instance's start key is unique where set; most instances have none, and those need no
-- index entry.
ALTER TABLE process_instances DROP CONSTRAINT process_instances_start_key_key;
CREATE UNIQUE INDEX process_instances_start_key ON process_instances(start_key)
    WHERE start_key IS NOT NULL;

-- History: one row per command instead of one per event (as on SQLite): the first event's
-- number and the command's events as a JSON array of [element, event, detail].
CREATE TABLE process_history (
    instance_id TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    events      TEXT NOT NULL,
    PRIMARY KEY (instance_id, seq)
);
INSERT INTO process_history (instance_id, seq, at, events)
    SELECT instance_id, seq, at, json_build_array(json_build_array(element, event, detail))::text
    FROM process_events;
DROP TABLE process_events;
