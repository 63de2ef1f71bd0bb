-- A host's own machines: linked platform accounts (the API key sealed, never in the clear),
-- machines read from them or entered by hand, what the hub tracks across polls, and every price
-- change made on the host's behalf.
CREATE TABLE IF NOT EXISTS portfolio_accounts (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL,
    platform        TEXT NOT NULL,
    label           TEXT NOT NULL,
    api_key_sealed  TEXT NOT NULL,
    status          TEXT NOT NULL,
    last_success_ms BIGINT,
    last_error      TEXT,
    earnings        TEXT,
    earnings_at_ms  BIGINT,
    created_at_ms   BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS portfolio_accounts_user ON portfolio_accounts(user_id);

CREATE TABLE IF NOT EXISTS portfolio_machines (
    id                TEXT PRIMARY KEY,
    user_id           TEXT NOT NULL,
    account_id        TEXT,
    platform_id       TEXT,
    data              TEXT NOT NULL,
    last_rented_at_ms BIGINT,
    first_seen_ms     BIGINT NOT NULL,
    updated_at_ms     BIGINT NOT NULL,
    UNIQUE (account_id, platform_id)
);
CREATE INDEX IF NOT EXISTS portfolio_machines_user ON portfolio_machines(user_id);

CREATE TABLE IF NOT EXISTS portfolio_changes (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    machine_id  TEXT NOT NULL,
    field       TEXT NOT NULL,
    old_value   TEXT,
    new_value   TEXT NOT NULL,
    result      TEXT NOT NULL,
    at_ms       BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS portfolio_changes_user_time ON portfolio_changes(user_id, at_ms);
