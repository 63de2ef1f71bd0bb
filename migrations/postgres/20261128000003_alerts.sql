-- Users' alert rules, the alerts they fired, and the webhook outbox with every attempt.
CREATE TABLE IF NOT EXISTS alert_rules (
    id                TEXT PRIMARY KEY,
    user_id           TEXT NOT NULL,
    name              TEXT NOT NULL,
    kind              TEXT NOT NULL,
    params            TEXT NOT NULL,
    cooldown_s        BIGINT NOT NULL,
    enabled           BIGINT NOT NULL,
    webhook_url       TEXT,
    webhook_format    TEXT,
    webhook_secret    TEXT,
    last_condition    BIGINT,
    last_fired_at_ms  BIGINT,
    crossings         BIGINT NOT NULL DEFAULT 0,
    created_at_ms     BIGINT NOT NULL,
    updated_at_ms     BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_rules_user ON alert_rules(user_id);

CREATE TABLE IF NOT EXISTS alert_events (
    id                 TEXT PRIMARY KEY,
    rule_id            TEXT NOT NULL,
    user_id            TEXT NOT NULL,
    idempotency_key    TEXT NOT NULL UNIQUE,
    payload            TEXT NOT NULL,
    fired_at_ms        BIGINT NOT NULL,
    acknowledged_at_ms BIGINT
);
CREATE INDEX IF NOT EXISTS alert_events_user_time ON alert_events(user_id, fired_at_ms);

CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id                 TEXT PRIMARY KEY,
    event_id           TEXT NOT NULL,
    url                TEXT NOT NULL,
    format             TEXT NOT NULL,
    secret             TEXT NOT NULL,
    status             TEXT NOT NULL,
    attempts           BIGINT NOT NULL DEFAULT 0,
    next_attempt_at_ms BIGINT NOT NULL,
    created_at_ms      BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries(status, next_attempt_at_ms);

CREATE TABLE IF NOT EXISTS webhook_attempts (
    delivery_id  TEXT NOT NULL,
    attempt      BIGINT NOT NULL,
    status_code  BIGINT,
    error        TEXT,
    at_ms        BIGINT NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
