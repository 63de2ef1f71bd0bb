//! The `push_subscriptions` table: browsers' Web Push subscriptions, per user.

use serde::Serialize;

use super::{Store, StoreError};

/// A stored subscription. The keys are for encrypting pushes; they are not shown back.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct PushSubscription {
    pub id: String,
    #[serde(skip)]
    pub user_id: String,
    pub endpoint: String,
    #[serde(skip)]
    pub p256dh: String,
    #[serde(skip)]
    pub auth: String,
    pub created_at_ms: i64,
}

const COLUMNS: &str = "id, user_id, endpoint, p256dh, auth, created_at_ms";

impl Store {
    /// Store a subscription unless the user already has `max` others; the same endpoint again
    /// replaces its keys (a browser that subscribed anew). `None` when at the limit.
    pub async fn save_push_subscription(
        &self,
        s: &PushSubscription,
        max: i64,
    ) -> Result<Option<PushSubscription>, StoreError> {
        let mut tx = self.pool().begin().await?;
        let updated =
            sqlx::query("UPDATE push_subscriptions SET p256dh = $1, auth = $2 WHERE user_id = $3 AND endpoint = $4")
                .bind(&s.p256dh)
                .bind(&s.auth)
                .bind(&s.user_id)
                .bind(&s.endpoint)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if updated == 0 {
            let inserted = sqlx::query(
                "INSERT INTO push_subscriptions (id, user_id, endpoint, p256dh, auth, created_at_ms) \
                 SELECT $1, $2, $3, $4, $5, $6 WHERE (SELECT COUNT(*) FROM push_subscriptions WHERE user_id = $7) < $8",
            )
            .bind(&s.id)
            .bind(&s.user_id)
            .bind(&s.endpoint)
            .bind(&s.p256dh)
            .bind(&s.auth)
            .bind(s.created_at_ms)
            .bind(&s.user_id)
            .bind(max)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                tx.rollback().await?;
                return Ok(None);
            }
        }
        let sql = format!("SELECT {COLUMNS} FROM push_subscriptions WHERE user_id = $1 AND endpoint = $2");
        let saved = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(&s.user_id)
            .bind(&s.endpoint)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(saved))
    }

    pub async fn push_subscriptions(&self, user_id: &str) -> Result<Vec<PushSubscription>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM push_subscriptions WHERE user_id = $1 ORDER BY created_at_ms, id");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(user_id)
            .fetch_all(self.pool())
            .await?)
    }

    pub async fn push_subscription(&self, id: &str) -> Result<Option<PushSubscription>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM push_subscriptions WHERE id = $1");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.pool())
            .await?)
    }

    pub async fn delete_push_subscription(&self, user_id: &str, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM push_subscriptions WHERE id = $1 AND user_id = $2")
            .bind(id)
            .bind(user_id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
