//! The advisor's tables: `conversations`, `messages` and `advisor_usage` (per user per UTC day).

use serde::Serialize;

use super::{Store, StoreError};

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Conversation {
    pub id: String,
    #[serde(skip)]
    pub user_id: String,
    pub title: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageRole {
    User,
    Assistant,
}

/// Where a message stands: an answer is `streaming` until it is `complete`, `failed` or
/// `cancelled`; a question is `complete` when stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    Complete,
    Streaming,
    Failed,
    Cancelled,
}

/// The stored text of each variant, and the variant of a stored text (an unknown one is a
/// decode error naming it).
macro_rules! stored_text {
    ($ty:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            pub const fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }

        impl TryFrom<String> for $ty {
            type Error = String;
            fn try_from(text: String) -> Result<Self, String> {
                match text.as_str() {
                    $($text => Ok(Self::$variant),)+
                    other => Err(format!("unknown {} {other:?}", stringify!($ty))),
                }
            }
        }
    };
}

stored_text!(MessageRole { User => "user", Assistant => "assistant" });
stored_text!(MessageStatus { Complete => "complete", Streaming => "streaming", Failed => "failed", Cancelled => "cancelled" });

/// A stored message.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Message {
    pub id: String,
    pub conversation_id: String,
    #[sqlx(try_from = "String")]
    pub role: MessageRole,
    pub content: String,
    #[sqlx(try_from = "String")]
    pub status: MessageStatus,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub stop_reason: Option<String>,
    pub error: Option<String>,
    pub created_at_ms: i64,
}

/// A message to insert.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    pub id: &'a str,
    pub role: MessageRole,
    pub content: &'a str,
    pub status: MessageStatus,
    pub provider: Option<&'a str>,
    pub model: Option<&'a str>,
}

/// How a streamed answer ended.
#[derive(Debug, Clone)]
pub struct Outcome<'a> {
    pub status: MessageStatus,
    pub content: &'a str,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub stop_reason: Option<&'a str>,
    pub error: Option<&'a str>,
}

/// A user's advisor use on one day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Usage {
    pub messages: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
}

const MESSAGE_COLUMNS: &str = "id, conversation_id, role, content, status, provider, model, input_tokens, \
                               output_tokens, stop_reason, error, created_at_ms";

const INSERT_CONVERSATION: &str =
    "INSERT INTO conversations (id, user_id, title, created_at_ms, updated_at_ms) VALUES ($1, $2, $3, $4, $5)";
const FINISH_MESSAGE: &str = "UPDATE messages SET status = $1, content = $2, input_tokens = $3, output_tokens = $4, \
                              stop_reason = $5, error = $6 WHERE id = $7";
/// The update that records how answer `id` ended.
fn finish<'q>(id: &'q str, outcome: &Outcome<'q>) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    sqlx::query(FINISH_MESSAGE)
        .bind(outcome.status.as_str())
        .bind(outcome.content)
        .bind(outcome.input_tokens)
        .bind(outcome.output_tokens)
        .bind(outcome.stop_reason)
        .bind(outcome.error)
        .bind(id)
}

const ADD_TOKENS: &str = "INSERT INTO advisor_usage (user_id, day, messages, input_tokens, output_tokens) \
                          VALUES ($1, $2, 0, $3, $4) ON CONFLICT (user_id, day) DO UPDATE SET \
                          input_tokens = advisor_usage.input_tokens + excluded.input_tokens, \
                          output_tokens = advisor_usage.output_tokens + excluded.output_tokens";

/// A conversation to create with its first messages.
#[derive(Debug, Clone, Copy)]
pub struct NewConversation<'a> {
    pub user_id: &'a str,
    pub title: &'a str,
}

/// Days since 1970-01-01 (UTC) of a time in ms: the quota day.
pub fn utc_day(now_ms: i64) -> i64 {
    now_ms.div_euclid(86_400_000)
}

impl Store {
    pub async fn create_conversation(
        &self,
        id: &str,
        user_id: &str,
        title: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(INSERT_CONVERSATION)
            .bind(id)
            .bind(user_id)
            .bind(title)
            .bind(now_ms)
            .bind(now_ms)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn conversation(&self, id: &str) -> Result<Option<Conversation>, StoreError> {
        let row =
            sqlx::query_as("SELECT id, user_id, title, created_at_ms, updated_at_ms FROM conversations WHERE id = $1")
                .bind(id)
                .fetch_optional(self.pool())
                .await?;
        Ok(row)
    }

    /// A user's conversations, most recently active first.
    pub async fn conversations(&self, user_id: &str, limit: i64) -> Result<Vec<Conversation>, StoreError> {
        let rows = sqlx::query_as(
            "SELECT id, user_id, title, created_at_ms, updated_at_ms FROM conversations WHERE user_id = $1 \
             ORDER BY updated_at_ms DESC, id LIMIT $2",
        )
        .bind(user_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }

    /// A conversation's messages in order.
    pub async fn messages(&self, conversation_id: &str) -> Result<Vec<Message>, StoreError> {
        let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 ORDER BY seq");
        let rows = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(conversation_id)
            .fetch_all(self.pool())
            .await?;
        Ok(rows)
    }

    /// The last `limit` messages of a conversation, oldest first.
    pub async fn recent_messages(&self, conversation_id: &str, limit: i64) -> Result<Vec<Message>, StoreError> {
        let sql =
            format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 ORDER BY seq DESC LIMIT $2");
        let mut messages: Vec<Message> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(conversation_id)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        messages.reverse();
        Ok(messages)
    }

    pub async fn message(&self, id: &str) -> Result<Option<Message>, StoreError> {
        let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = $1");
        let row = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row)
    }

    /// The user who owns a message (through its conversation).
    pub async fn message_owner(&self, id: &str) -> Result<Option<String>, StoreError> {
        let owner = sqlx::query_scalar(
            "SELECT c.user_id FROM messages m JOIN conversations c ON c.id = m.conversation_id WHERE m.id = $1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        Ok(owner)
    }

    /// Append messages to a conversation, in order, in one transaction; `new` creates the
    /// conversation first.
    pub async fn append_messages(
        &self,
        conversation_id: &str,
        new: Option<NewConversation<'_>>,
        messages: &[NewMessage<'_>],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        // Writes only, each computing its position itself: a SQLite transaction that read first
        // could not take the write lock while another writer is active (SQLITE_BUSY, no waiting).
        let mut tx = self.pool().begin().await?;
        if let Some(c) = new {
            sqlx::query(INSERT_CONVERSATION)
                .bind(conversation_id)
                .bind(c.user_id)
                .bind(c.title)
                .bind(now_ms)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("UPDATE conversations SET updated_at_ms = $1 WHERE id = $2")
            .bind(now_ms)
            .bind(conversation_id)
            .execute(&mut *tx)
            .await?;
        for m in messages {
            sqlx::query(
                "INSERT INTO messages (id, conversation_id, seq, role, content, status, provider, model, created_at_ms) \
                 SELECT $1, $2, COALESCE(MAX(seq), -1) + 1, $3, $4, $5, $6, $7, $8 FROM messages \
                 WHERE conversation_id = $9",
            )
            .bind(m.id)
            .bind(conversation_id)
            .bind(m.role.as_str())
            .bind(m.content)
            .bind(m.status.as_str())
            .bind(m.provider)
            .bind(m.model)
            .bind(now_ms)
            .bind(conversation_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Record how an answer ended.
    pub async fn finish_message(&self, id: &str, outcome: &Outcome<'_>) -> Result<(), StoreError> {
        finish(id, outcome).execute(self.pool()).await?;
        Ok(())
    }

    /// Record how an answer ended and add its tokens to the user's day, in one transaction.
    pub async fn finish_answer(
        &self,
        id: &str,
        outcome: &Outcome<'_>,
        user_id: &str,
        day: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        finish(id, outcome).execute(&mut *tx).await?;
        sqlx::query(ADD_TOKENS)
            .bind(user_id)
            .bind(day)
            .bind(outcome.input_tokens)
            .bind(outcome.output_tokens)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Answers left `streaming` by a hub that stopped: they will never finish.
    pub async fn fail_unfinished_messages(&self) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE messages SET status = 'failed', error = 'interrupted: the hub restarted' WHERE status = 'streaming'",
        )
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }

    pub async fn advisor_usage(&self, user_id: &str, day: i64) -> Result<Usage, StoreError> {
        let usage = sqlx::query_as(
            "SELECT messages, input_tokens, output_tokens FROM advisor_usage WHERE user_id = $1 AND day = $2",
        )
        .bind(user_id)
        .bind(day)
        .fetch_optional(self.pool())
        .await?;
        Ok(usage.unwrap_or_default())
    }

    /// Count one more message for the day if the user is below `limit`; false when at the limit.
    /// Atomic: concurrent questions cannot both take the last one.
    pub async fn take_advisor_message(&self, user_id: &str, day: i64, limit: i64) -> Result<bool, StoreError> {
        if limit <= 0 {
            return Ok(false);
        }
        let row = sqlx::query(
            "INSERT INTO advisor_usage (user_id, day, messages, input_tokens, output_tokens) VALUES ($1, $2, 1, 0, 0) \
             ON CONFLICT (user_id, day) DO UPDATE SET messages = advisor_usage.messages + 1 \
             WHERE advisor_usage.messages < $3 RETURNING messages",
        )
        .bind(user_id)
        .bind(day)
        .bind(limit)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.is_some())
    }

    /// Give back a message taken by [`Store::take_advisor_message`] (the question was not sent).
    pub async fn return_advisor_message(&self, user_id: &str, day: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE advisor_usage SET messages = messages - 1 WHERE user_id = $1 AND day = $2 AND messages > 0",
        )
        .bind(user_id)
        .bind(day)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Add an answer's tokens to the day's usage.
    pub async fn add_advisor_tokens(&self, user_id: &str, day: i64, input: i64, output: i64) -> Result<(), StoreError> {
        sqlx::query(ADD_TOKENS)
            .bind(user_id)
            .bind(day)
            .bind(input)
            .bind(output)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_statuses_read_back_what_they_store() {
        for role in [MessageRole::User, MessageRole::Assistant] {
            assert_eq!(MessageRole::try_from(role.as_str().to_owned()), Ok(role));
            assert_eq!(serde_json::to_value(role).unwrap(), role.as_str());
        }
        for status in [
            MessageStatus::Complete,
            MessageStatus::Streaming,
            MessageStatus::Failed,
            MessageStatus::Cancelled,
        ] {
            assert_eq!(MessageStatus::try_from(status.as_str().to_owned()), Ok(status));
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
        let unknown = MessageStatus::try_from("done".to_owned()).unwrap_err();
        assert!(unknown.contains("\"done\""), "{unknown}");
    }
}
