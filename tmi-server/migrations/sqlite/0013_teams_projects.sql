-- Teams and projects (`/teams`, `/projects`): one table for both ("organization units"), each row
-- an indexed head plus the JSON document the API reads and writes. A project belongs to a team;
-- a team that still has projects cannot be deleted (the foreign key, and the 409 the contract asks
-- for). Memberships and relationships are mirrored out of the document for the list filters and the
-- authorization checks; notes of teams and projects go with their parent.
CREATE TABLE org_units (
    id BLOB PRIMARY KEY,
    kind TEXT NOT NULL,
    team_id BLOB REFERENCES org_units (id),
    name TEXT NOT NULL,
    name_lc TEXT NOT NULL,
    status TEXT NOT NULL,
    created_by BLOB NOT NULL,
    version INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    modified_at TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX org_units_kind ON org_units (kind, created_at DESC);
CREATE INDEX org_units_team ON org_units (team_id);

CREATE TABLE team_members (
    team_id BLOB NOT NULL REFERENCES org_units (id) ON DELETE CASCADE,
    user_uuid BLOB NOT NULL,
    PRIMARY KEY (team_id, user_uuid)
);
CREATE INDEX team_members_user ON team_members (user_uuid);

CREATE TABLE org_relations (
    from_id BLOB NOT NULL REFERENCES org_units (id) ON DELETE CASCADE,
    to_id BLOB NOT NULL REFERENCES org_units (id) ON DELETE CASCADE,
    relationship TEXT NOT NULL,
    PRIMARY KEY (from_id, to_id, relationship)
);
CREATE INDEX org_relations_to ON org_relations (to_id);

CREATE TABLE org_notes (
    id BLOB PRIMARY KEY,
    parent_id BLOB NOT NULL REFERENCES org_units (id) ON DELETE CASCADE,
    sharable BOOLEAN NOT NULL,
    created_at TEXT NOT NULL,
    modified_at TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX org_notes_parent ON org_notes (parent_id, created_at);
