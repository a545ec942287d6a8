-- Who an installation's id belongs to (issue 14, row 9): an Ed25519 publisher key
-- (`ed25519:…`, signed packages), `local` (a plugin directory on the server: the plugins
-- directory, the demo, the command line) or `unsigned` (an uploaded unsigned package). Only a
-- package with the same identity may upgrade it. Installations from before are taken as
-- `local`, so an upload cannot take them over.
ALTER TABLE plugins ADD COLUMN publisher TEXT;
UPDATE plugins SET publisher = 'local';
