-- Initial schema for tmi-server on PostgreSQL.
-- Resources are stored as JSON documents with the columns that filters, locking and authorization need.

CREATE TABLE users (
    internal_uuid UUID PRIMARY KEY,
    provider TEXT NOT NULL,
    provider_user_id TEXT NOT NULL,
    email TEXT NOT NULL,
    name TEXT NOT NULL,
    email_verified BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TIMESTAMPTZ NOT NULL,
    last_login TIMESTAMPTZ,
    UNIQUE (provider, provider_user_id)
);
CREATE INDEX users_email ON users (provider, email);

CREATE TABLE groups (
    internal_uuid UUID PRIMARY KEY,
    provider TEXT NOT NULL,
    group_name TEXT NOT NULL,
    name TEXT NOT NULL,
    UNIQUE (provider, group_name)
);

CREATE TABLE group_members (
    group_uuid UUID NOT NULL REFERENCES groups (internal_uuid) ON DELETE CASCADE,
    user_uuid UUID NOT NULL REFERENCES users (internal_uuid) ON DELETE CASCADE,
    PRIMARY KEY (group_uuid, user_uuid)
);

-- Built-in groups with the fixed UUIDs of upstream TMI.
INSERT INTO groups (internal_uuid, provider, group_name, name) VALUES
    ('00000000-0000-0000-0000-000000000000', 'tmi', 'everyone', 'Everyone'),
    ('00000000-0000-0000-0000-000000000001', 'tmi', 'security-reviewers', 'Security Reviewers'),
    ('00000000-0000-0000-0000-000000000002', 'tmi', 'administrators', 'Administrators'),
    ('00000000-0000-0000-0000-000000000003', 'tmi', 'confidential-project-reviewers', 'Confidential Project Reviewers'),
    ('00000000-0000-0000-0000-000000000004', 'tmi', 'tmi-automation', 'TMI Automation'),
    ('00000000-0000-0000-0000-000000000005', 'tmi', 'embedding-automation', 'Embedding Automation');

CREATE TABLE alias_counters (
    scope TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);

CREATE TABLE threat_models (
    id UUID PRIMARY KEY,
    alias BIGINT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    owner_provider TEXT NOT NULL,
    owner_provider_id TEXT NOT NULL,
    owner_email TEXT NOT NULL,
    reviewer_email TEXT,
    status TEXT NOT NULL,
    version BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    modified_at TIMESTAMPTZ NOT NULL,
    deleted_at TIMESTAMPTZ,
    doc JSONB NOT NULL
);
CREATE INDEX threat_models_created ON threat_models (created_at DESC);

CREATE TABLE tm_access (
    threat_model_id UUID NOT NULL REFERENCES threat_models (id) ON DELETE CASCADE,
    principal_type TEXT NOT NULL,
    provider TEXT NOT NULL,
    provider_id TEXT NOT NULL,
    role TEXT NOT NULL,
    PRIMARY KEY (threat_model_id, principal_type, provider, provider_id)
);
CREATE INDEX tm_access_subject ON tm_access (provider_id, provider);

CREATE TABLE children (
    id UUID PRIMARY KEY,
    threat_model_id UUID NOT NULL REFERENCES threat_models (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    alias BIGINT NOT NULL,
    version BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    modified_at TIMESTAMPTZ NOT NULL,
    deleted_at TIMESTAMPTZ,
    doc JSONB NOT NULL,
    UNIQUE (threat_model_id, kind, alias)
);
CREATE INDEX children_parent ON children (threat_model_id, kind, created_at);

CREATE TABLE metadata (
    entity_type TEXT NOT NULL,
    entity_id UUID NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    position BIGINT NOT NULL,
    PRIMARY KEY (entity_id, key)
);

CREATE TABLE user_preferences (
    user_uuid UUID PRIMARY KEY REFERENCES users (internal_uuid) ON DELETE CASCADE,
    doc JSONB NOT NULL
);
