-- Lighter writes for the process engine: lookup columns that most instances leave empty are
-- indexed only where set (as on SQLite). Equality lookups use them as before.
DROP INDEX process_instances_chat;
CREATE INDEX process_instances_chat ON process_instances(chat_id) WHERE chat_id IS NOT NULL;
DROP INDEX process_instances_contact;
CREATE INDEX process_instances_contact ON process_instances(contact_id) WHERE contact_id IS NOT NULL;
DROP INDEX process_instances_parent;
CREATE INDEX process_instances_parent ON process_instances(parent_id) WHERE parent_id IS NOT NULL;
