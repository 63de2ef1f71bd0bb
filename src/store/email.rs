//! Users' alert e-mail addresses (`user_emails`, confirmed by a link before any alert is sent)
//! and the mails sent to each (`email_sends`, for the per-hour limit).

use serde::Serialize;

use super::{Store, StoreError};

/// A user's address as stored. The tokens stay in the database.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct UserEmail {
    #[serde(skip)]
    pub user_id: String,
    pub email: String,
    pub confirmed_at_ms: Option<i64>,
    #[serde(skip)]
    pub unsubscribe_token: String,
    pub updated_at_ms: i64,
}

/// What a confirmation link asks for.
pub struct NewAddress<'a> {
    pub user_id: &'a str,
    pub email: &'a str,
    /// SHA-256 (hex) of the token in the link.
    pub confirm_token_hash: &'a str,
    pub confirm_expires_ms: i64,
    pub unsubscribe_token: &'a str,
    pub now_ms: i64,
}

const COLUMNS: &str = "user_id, email, confirmed_at_ms, unsubscribe_token, updated_at_ms";

impl Store {
    /// Set a user's address, unconfirmed until the link is followed (a new address replaces the
    /// old one, which gets nothing more).
    pub async fn set_user_email(&self, a: &NewAddress<'_>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO user_emails (user_id, email, confirm_token_hash, confirm_expires_ms, confirmed_at_ms, \
             unsubscribe_token, updated_at_ms) VALUES ($1, $2, $3, $4, NULL, $5, $6) \
             ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, \
             confirm_token_hash = excluded.confirm_token_hash, confirm_expires_ms = excluded.confirm_expires_ms, \
             confirmed_at_ms = NULL, unsubscribe_token = excluded.unsubscribe_token, updated_at_ms = excluded.updated_at_ms",
        )
        .bind(a.user_id)
        .bind(a.email)
        .bind(a.confirm_token_hash)
        .bind(a.confirm_expires_ms)
        .bind(a.unsubscribe_token)
        .bind(a.now_ms)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Confirm the address whose link carries this token (unexpired); the address, or `None`.
    pub async fn confirm_user_email(&self, token_hash: &str, now_ms: i64) -> Result<Option<UserEmail>, StoreError> {
        let user: Option<String> = sqlx::query_scalar(
            "SELECT user_id FROM user_emails WHERE confirm_token_hash = $1 AND confirm_expires_ms >= $2",
        )
        .bind(token_hash)
        .bind(now_ms)
        .fetch_optional(self.pool())
        .await?;
        let Some(user) = user else {
            return Ok(None);
        };
        sqlx::query(
            "UPDATE user_emails SET confirmed_at_ms = $1, confirm_token_hash = NULL, confirm_expires_ms = NULL \
             WHERE user_id = $2 AND confirm_token_hash = $3",
        )
        .bind(now_ms)
        .bind(&user)
        .bind(token_hash)
        .execute(self.pool())
        .await?;
        self.user_email(&user).await
    }

    pub async fn user_email(&self, user_id: &str) -> Result<Option<UserEmail>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM user_emails WHERE user_id = $1");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(user_id)
            .fetch_optional(self.pool())
            .await?)
    }

    pub async fn delete_user_email(&self, user_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM user_emails WHERE user_id = $1")
            .bind(user_id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Remove the address an unsubscribe link names; whether there was one.
    pub async fn unsubscribe_email(&self, token: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM user_emails WHERE unsubscribe_token = $1")
            .bind(token)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Note one mail sent to a user (`alert`, `digest` or `confirm`).
    pub async fn record_email_send(&self, user_id: &str, kind: &str, at_ms: i64) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO email_sends (user_id, kind, sent_at_ms) VALUES ($1, $2, $3)")
            .bind(user_id)
            .bind(kind)
            .bind(at_ms)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Mails of these kinds sent to a user since `since_ms`.
    pub async fn email_sends_since(&self, user_id: &str, kinds: &[&str], since_ms: i64) -> Result<i64, StoreError> {
        let mut count = 0;
        for kind in kinds {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM email_sends WHERE user_id = $1 AND kind = $2 AND sent_at_ms >= $3",
            )
            .bind(user_id)
            .bind(*kind)
            .bind(since_ms)
            .fetch_one(self.pool())
            .await?;
            count += n;
        }
        Ok(count)
    }
}
