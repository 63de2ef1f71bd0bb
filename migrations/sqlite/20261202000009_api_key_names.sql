-- API keys as developers manage them: a name, the short prefix shown in lists (the key itself is
-- kept only as its SHA-256), and when it was last used.
ALTER TABLE api_keys ADD COLUMN name TEXT NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN prefix TEXT NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN last_used_ms BIGINT;
