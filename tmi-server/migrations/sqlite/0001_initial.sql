-- Initial schema for tmi-server on SQLite (UUIDs as 16-byte BLOBs, timestamps as RFC 3339 TEXT).
-- Resources are stored as JSON documents with the columns that filters, locking and authorization need.

CREATE TABLE users (
    internal_uuid BLOB PRIMARY KEY,
    provider TEXT NOT NULL,
    provider_user_id TEXT NOT NULL,
    email TEXT NOT NULL,
    name TEXT NOT NULL,
    email_verified BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TEXT NOT NULL,
    last_login TEXT,
    UNIQUE (provider, provider_user_id)
);
CREATE INDEX users_email ON users (provider, email);

CREATE TABLE groups (
    internal_uuid BLOB PRIMARY KEY,
    provider TEXT NOT NULL,
    group_name TEXT NOT NULL,
    name TEXT NOT NULL,
    UNIQUE (provider, group_name)
);

CREATE TABLE group_members (
    group_uuid BLOB NOT NULL REFERENCES groups (internal_uuid) ON DELETE CASCADE,
    user_uuid BLOB NOT NULL REFERENCES users (internal_uuid) ON DELETE CASCADE,
    PRIMARY KEY (group_uuid, user_uuid)
);

-- Built-in groups with the fixed BLOBs of upstream TMI.
INSERT INTO groups (internal_uuid, provider, group_name, name) VALUES
    (X'00000000000000000000000000000000', 'tmi', 'everyone', 'Everyone'),
    (X'00000000000000000000000000000001', 'tmi', 'security-reviewers', 'Security Reviewers'),
    (X'00000000000000000000000000000002', 'tmi', 'administrators', 'Administrators'),
    (X'00000000000000000000000000000003', 'tmi', 'confidential-project-reviewers', 'Confidential Project Reviewers'),
    (X'00000000000000000000000000000004', 'tmi', 'tmi-automation', 'TMI Automation'),
    (X'00000000000000000000000000000005', 'tmi', 'embedding-automation', 'Embedding Automation');

CREATE TABLE alias_counters (
    scope TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);

CREATE TABLE threat_models (
    id BLOB PRIMARY KEY,
    alias INTEGER NOT NULL UNIQUE,
    name TEXT NOT NULL,
    owner_provider TEXT NOT NULL,
    owner_provider_id TEXT NOT NULL,
    owner_email TEXT NOT NULL,
    reviewer_email TEXT,
    status TEXT NOT NULL,
    version INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    modified_at TEXT NOT NULL,
    deleted_at TEXT,
    doc TEXT NOT NULL
);
CREATE INDEX threat_models_created ON threat_models (created_at DESC);

CREATE TABLE tm_access (
    threat_model_id BLOB NOT NULL REFERENCES threat_models (id) ON DELETE CASCADE,
    principal_type TEXT NOT NULL,
    provider TEXT NOT NULL,
    provider_id TEXT NOT NULL,
    role TEXT NOT NULL,
    PRIMARY KEY (threat_model_id, principal_type, provider, provider_id)
);
CREATE INDEX tm_access_subject ON tm_access (provider_id, provider);

CREATE TABLE children (
    id BLOB PRIMARY KEY,
    threat_model_id BLOB NOT NULL REFERENCES threat_models (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    alias INTEGER NOT NULL,
    version INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    modified_at TEXT NOT NULL,
    deleted_at TEXT,
    doc TEXT NOT NULL,
    UNIQUE (threat_model_id, kind, alias)
);
CREATE INDEX children_parent ON children (threat_model_id, kind, created_at);

CREATE TABLE metadata (
    entity_type TEXT NOT NULL,
    entity_id BLOB NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (entity_id, key)
);

CREATE TABLE user_preferences (
    user_uuid BLOB PRIMARY KEY REFERENCES users (internal_uuid) ON DELETE CASCADE,
    doc TEXT NOT NULL
);
