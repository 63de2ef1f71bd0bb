-- Users as the hub knows them (the account service owns the rest) and their API keys.
CREATE TABLE IF NOT EXISTS users (
    id            TEXT PRIMARY KEY,
    tier          TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS api_keys (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    key_hash      TEXT NOT NULL UNIQUE,
    scopes        TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
);
CREATE INDEX IF NOT EXISTS api_keys_user ON api_keys(user_id);
