-- The advisor's conversations, their messages, and usage per user per UTC day (for quotas).
CREATE TABLE IF NOT EXISTS conversations (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL,
    title         TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS conversations_user ON conversations(user_id, updated_at_ms);

-- role: user | assistant; status: complete | streaming | failed | cancelled.
CREATE TABLE IF NOT EXISTS messages (
    id              TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    -- Position in the conversation (0, 1, 2, ...): the order of its messages.
    seq             BIGINT NOT NULL,
    role            TEXT NOT NULL,
    content         TEXT NOT NULL,
    status          TEXT NOT NULL,
    provider        TEXT,
    model           TEXT,
    input_tokens    BIGINT,
    output_tokens   BIGINT,
    stop_reason     TEXT,
    error           TEXT,
    created_at_ms   BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_conversation ON messages(conversation_id, seq);

-- day: days since 1970-01-01 (UTC).
CREATE TABLE IF NOT EXISTS advisor_usage (
    user_id       TEXT NOT NULL,
    day           BIGINT NOT NULL,
    messages      BIGINT NOT NULL,
    input_tokens  BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    PRIMARY KEY (user_id, day)
);
