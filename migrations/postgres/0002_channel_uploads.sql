-- Files uploaded by an API-channel integration (for inbound messages).
ALTER TABLE files ADD COLUMN uploader_channel TEXT;
