-- Connection tokens revoked through the server API (`/api/revoke_token`), by `jti`, kept until the
-- token would have expired: a restarted node refuses them as the running ones do.
CREATE TABLE IF NOT EXISTS revoked_tokens (
    jti          TEXT PRIMARY KEY,
    expire_at_s  BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS revoked_tokens_expiry ON revoked_tokens(expire_at_s);
