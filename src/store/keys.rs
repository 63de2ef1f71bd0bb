//! The `api_keys` table: a user's API keys, each stored as the SHA-256 of the key (with a short
//! prefix to show in lists), its scopes, and when it was created, last used and revoked.

use serde::Serialize;

use super::{Store, StoreError};

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct KeyRow {
    pub id: String,
    #[serde(skip)]
    pub user_id: String,
    pub name: String,
    pub prefix: String,
    #[serde(skip)]
    pub key_hash: String,
    /// Space-separated.
    #[serde(skip)]
    pub scopes: String,
    pub created_at_ms: i64,
    pub last_used_ms: Option<i64>,
    #[serde(skip)]
    pub revoked_at_ms: Option<i64>,
}

const COLUMNS: &str = "id, user_id, name, prefix, key_hash, scopes, created_at_ms, last_used_ms, revoked_at_ms";

impl Store {
    /// Insert a key unless the user has `max` live ones already; false then.
    pub async fn insert_key(&self, k: &KeyRow, max: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, scopes, created_at_ms) \
             SELECT $1, $2, $3, $4, $5, $6, $7 \
             WHERE (SELECT COUNT(*) FROM api_keys WHERE user_id = $8 AND revoked_at_ms IS NULL) < $9",
        )
        .bind(&k.id)
        .bind(&k.user_id)
        .bind(&k.name)
        .bind(&k.prefix)
        .bind(&k.key_hash)
        .bind(&k.scopes)
        .bind(k.created_at_ms)
        .bind(&k.user_id)
        .bind(max)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// A user's live keys, oldest first.
    pub async fn keys(&self, user_id: &str) -> Result<Vec<KeyRow>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM api_keys WHERE user_id = $1 AND revoked_at_ms IS NULL ORDER BY created_at_ms, id"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(user_id)
            .fetch_all(self.pool())
            .await?)
    }

    /// The live key with this hash.
    pub async fn key_by_hash(&self, hash: &str) -> Result<Option<KeyRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE key_hash = $1 AND revoked_at_ms IS NULL");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(hash)
            .fetch_optional(self.pool())
            .await?)
    }

    /// Revoke a live key of the user; false when there is none.
    pub async fn revoke_key(&self, user_id: &str, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at_ms = $1 WHERE id = $2 AND user_id = $3 AND revoked_at_ms IS NULL",
        )
        .bind(now_ms)
        .bind(id)
        .bind(user_id)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Note that a key was used (at most once a minute per key).
    pub async fn touch_key(&self, id: &str, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE api_keys SET last_used_ms = $1 WHERE id = $2 AND (last_used_ms IS NULL OR last_used_ms < $3)",
        )
        .bind(now_ms)
        .bind(id)
        .bind(now_ms - 60_000)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}
