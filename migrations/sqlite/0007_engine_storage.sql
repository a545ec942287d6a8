-- Lighter writes for the process engine (every instance inserts one row here and seven history
-- rows; see docs/benchmarks.md).

-- Lookup columns that most instances leave empty are indexed only where set: an instance with
-- no parent, chat or contact adds no entry to those indexes. Equality lookups use them as before.
DROP INDEX process_instances_chat;
CREATE INDEX process_instances_chat ON process_instances(chat_id) WHERE chat_id IS NOT NULL;
DROP INDEX process_instances_contact;
CREATE INDEX process_instances_contact ON process_instances(contact_id) WHERE contact_id IS NOT NULL;
DROP INDEX process_instances_parent;
CREATE INDEX process_instances_parent ON process_instances(parent_id) WHERE parent_id IS NOT NULL;

-- History rows are stored in their primary key's b-tree (one insert per row instead of a table
-- row plus an index entry).
CREATE TABLE process_events_keyed (
    instance_id TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    element     TEXT NOT NULL,
    event       TEXT NOT NULL,
    detail      TEXT,
    PRIMARY KEY (instance_id, seq)
) WITHOUT ROWID;
INSERT INTO process_events_keyed (instance_id, seq, at, element, event, detail)
    SELECT instance_id, seq, at, element, event, detail FROM process_events;
DROP TABLE process_events;
ALTER TABLE process_events_keyed RENAME TO process_events;
