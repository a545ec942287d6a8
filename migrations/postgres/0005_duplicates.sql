-- Duplicate search (S18): normalised keys of each contact (phone in E.164, email case-folded,
-- name as sorted Latin tokens), the 3-letter prefixes of its name tokens for blocking, the
-- admin's duplicate rules, and the record of merges.
ALTER TABLE contacts ADD COLUMN phone_key TEXT;
ALTER TABLE contacts ADD COLUMN email_key TEXT;
ALTER TABLE contacts ADD COLUMN name_key TEXT;
CREATE INDEX contacts_phone_key ON contacts(phone_key) WHERE phone_key IS NOT NULL;
CREATE INDEX contacts_email_key ON contacts(email_key) WHERE email_key IS NOT NULL;
CREATE INDEX contacts_merged_into ON contacts(merged_into) WHERE merged_into IS NOT NULL;

CREATE TABLE contact_name_tokens (
    prefix     TEXT NOT NULL,
    contact_id TEXT NOT NULL,
    PRIMARY KEY (prefix, contact_id)
);
CREATE INDEX contact_name_tokens_contact ON contact_name_tokens(contact_id);

CREATE TABLE duplicate_rules (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    position   BIGINT NOT NULL,
    enabled    BIGINT NOT NULL DEFAULT 1,
    conditions TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE contact_merges (
    id        TEXT PRIMARY KEY,
    master_id TEXT NOT NULL,
    merged_id TEXT NOT NULL,
    actor_id  TEXT,
    at        BIGINT NOT NULL,
    detail    TEXT NOT NULL
);
CREATE INDEX contact_merges_master ON contact_merges(master_id);
