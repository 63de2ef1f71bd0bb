-- Where a rule's alerts go ("socket,push,email,webhook"; NULL: the socket, and the webhook when
-- the rule has one), the outbox's channel per delivery (its target: a push subscription id or an
-- e-mail address), and users' alert e-mail addresses with their confirmation.
ALTER TABLE alert_rules ADD COLUMN deliver TEXT;
ALTER TABLE webhook_deliveries ADD COLUMN channel TEXT NOT NULL DEFAULT 'webhook';
ALTER TABLE webhook_deliveries ADD COLUMN target TEXT;
CREATE INDEX IF NOT EXISTS webhook_deliveries_channel_target ON webhook_deliveries(channel, target, status);

CREATE TABLE IF NOT EXISTS user_emails (
    user_id             TEXT PRIMARY KEY,
    email               TEXT NOT NULL,
    confirm_token_hash  TEXT,
    confirm_expires_ms  BIGINT,
    confirmed_at_ms     BIGINT,
    unsubscribe_token   TEXT NOT NULL UNIQUE,
    updated_at_ms       BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS email_sends (
    user_id    TEXT NOT NULL,
    kind       TEXT NOT NULL,
    sent_at_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS email_sends_user_time ON email_sends(user_id, sent_at_ms);
