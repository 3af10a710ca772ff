-- OAuth 2.0 client credentials (`/me/client_credentials`, `grant_type=client_credentials`): a user's
-- machine identities. The secret is a 256-bit random value shown once at creation; only its SHA-256
-- (hex) is kept, which is enough for a value that cannot be guessed (docs/security.md). Deleting the
-- owner deletes their credentials.
CREATE TABLE client_credentials (
    id BLOB PRIMARY KEY,
    owner_uuid BLOB NOT NULL REFERENCES users (internal_uuid) ON DELETE CASCADE,
    client_id TEXT NOT NULL UNIQUE,
    secret_sha256 TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT,
    created_at TEXT NOT NULL,
    modified_at TEXT NOT NULL,
    expires_at TEXT,
    last_used_at TEXT
);
CREATE INDEX client_credentials_owner ON client_credentials (owner_uuid, created_at);
