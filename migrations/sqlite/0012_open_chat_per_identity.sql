-- One unfinished chat per contact identity and channel (was: per contact and channel). After
-- an operator merges two contacts, each identity (a widget visitor session, a messenger
-- account) keeps its own conversation: a message from one never joins the other's open chat,
-- and replies go to the identity that wrote. Concurrent first messages of one sender still
-- converge (identities are unique per channel and external id).
DROP INDEX chats_open_per_contact;
CREATE UNIQUE INDEX chats_open_per_identity ON chats(contact_id, channel_id, COALESCE(identity_id, ''))
    WHERE status <> 'completed';
