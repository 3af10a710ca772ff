-- Membership records as `GET /me/groups/{group_id}/members` lists them (`GroupMember`): an id and
-- when the member was added. Existing memberships get a random id and the migration time.
ALTER TABLE group_members ADD COLUMN id UUID;
ALTER TABLE group_members ADD COLUMN added_at TIMESTAMPTZ;
UPDATE group_members SET id = md5(random()::text || clock_timestamp()::text || user_uuid::text)::uuid,
    added_at = now();
ALTER TABLE group_members ALTER COLUMN id SET NOT NULL;
ALTER TABLE group_members ALTER COLUMN added_at SET NOT NULL;
CREATE UNIQUE INDEX group_members_id ON group_members (id);
