-- Revoked access tokens (`token:<sha256>`) and token families (`family:<id>`: every token of one
-- login), from logout, /oauth2/revoke and refresh-token reuse. Kept until nothing they name can be
-- used anyway (`expires_at`, unix seconds); `revoked_at` (unix milliseconds) lets replicas load
-- what is new since their last look. Redis and process memory only cache this table, so a Redis
-- restart without persistence does not revive a revoked token.
CREATE TABLE token_revocations (
    key TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER NOT NULL
);
CREATE INDEX token_revocations_revoked_at ON token_revocations (revoked_at);
