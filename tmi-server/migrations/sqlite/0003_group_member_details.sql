-- Membership records as `GET /me/groups/{group_id}/members` lists them (`GroupMember`): an id and
-- when the member was added. Existing memberships get a random id and the migration time (SQLite
-- cannot add NOT NULL columns to a filled table; the store always writes both).
ALTER TABLE group_members ADD COLUMN id BLOB;
ALTER TABLE group_members ADD COLUMN added_at TEXT;
UPDATE group_members SET id = randomblob(16), added_at = strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now');
CREATE UNIQUE INDEX group_members_id ON group_members (id);
