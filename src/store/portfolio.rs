//! The portfolio tables: linked accounts (their platform key sealed by the caller), machines
//! (linked or hand-entered, as normalised JSON), and the price changes made for hosts.

use serde::Serialize;

use super::{Store, StoreError};

/// A linked platform account. The sealed key stays in the store's callers.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AccountRow {
    pub id: String,
    #[serde(skip)]
    pub user_id: String,
    pub platform: String,
    pub label: String,
    #[serde(skip)]
    pub api_key_sealed: String,
    pub status: String,
    pub last_success_ms: Option<i64>,
    pub last_error: Option<String>,
    #[serde(skip)]
    pub earnings: Option<String>,
    #[serde(skip)]
    pub earnings_at_ms: Option<i64>,
    pub created_at_ms: i64,
}

/// A machine as stored: the normalised machine as JSON, and what the hub tracks about it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct MachineRow {
    pub id: String,
    pub user_id: String,
    pub account_id: Option<String>,
    pub platform_id: Option<String>,
    pub data: String,
    pub last_rented_at_ms: Option<i64>,
    pub first_seen_ms: i64,
    pub updated_at_ms: i64,
}

/// A price change made on a host's behalf.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ChangeRow {
    pub id: String,
    #[serde(skip)]
    pub user_id: String,
    pub machine_id: String,
    pub field: String,
    pub old_value: Option<String>,
    pub new_value: String,
    pub result: String,
    pub at_ms: i64,
}

const ACCOUNT_COLUMNS: &str = "id, user_id, platform, label, api_key_sealed, status, last_success_ms, last_error, \
     earnings, earnings_at_ms, created_at_ms";
const MACHINE_COLUMNS: &str =
    "id, user_id, account_id, platform_id, data, last_rented_at_ms, first_seen_ms, updated_at_ms";

impl Store {
    /// Insert an account unless the user has `max` already; false then.
    pub async fn insert_account(&self, a: &AccountRow, max: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO portfolio_accounts (id, user_id, platform, label, api_key_sealed, status, created_at_ms) \
             SELECT $1, $2, $3, $4, $5, $6, $7 WHERE (SELECT COUNT(*) FROM portfolio_accounts WHERE user_id = $8) < $9",
        )
        .bind(&a.id)
        .bind(&a.user_id)
        .bind(&a.platform)
        .bind(&a.label)
        .bind(&a.api_key_sealed)
        .bind(&a.status)
        .bind(a.created_at_ms)
        .bind(&a.user_id)
        .bind(max)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// A user's accounts, or every account (`None`), oldest first.
    pub async fn accounts(&self, user_id: Option<&str>) -> Result<Vec<AccountRow>, StoreError> {
        let sql = format!(
            "SELECT {ACCOUNT_COLUMNS} FROM portfolio_accounts WHERE ($1 = '' OR user_id = $1) ORDER BY created_at_ms, id"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(user_id.unwrap_or(""))
            .fetch_all(self.pool())
            .await?)
    }

    /// An account's state after a poll.
    pub async fn set_account_status(
        &self,
        id: &str,
        status: &str,
        last_success_ms: Option<i64>,
        last_error: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE portfolio_accounts SET status = $1, last_success_ms = COALESCE($2, last_success_ms), \
             last_error = $3 WHERE id = $4",
        )
        .bind(status)
        .bind(last_success_ms)
        .bind(last_error)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// An account's earnings (personal fields already dropped) as of `at_ms`.
    pub async fn set_account_earnings(&self, id: &str, earnings: &str, at_ms: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE portfolio_accounts SET earnings = $1, earnings_at_ms = $2 WHERE id = $3")
            .bind(earnings)
            .bind(at_ms)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Re-seal an account's key (after a key rotation).
    pub async fn reseal_account_key(&self, id: &str, sealed: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE portfolio_accounts SET api_key_sealed = $1 WHERE id = $2")
            .bind(sealed)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Delete an account of the user and the machines read from it.
    pub async fn delete_account(&self, user_id: &str, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let done = sqlx::query("DELETE FROM portfolio_accounts WHERE id = $1 AND user_id = $2")
            .bind(id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 1 {
            sqlx::query("DELETE FROM portfolio_machines WHERE account_id = $1 AND user_id = $2")
                .bind(id)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// A user's machines, or every machine (`None`).
    pub async fn machines(&self, user_id: Option<&str>) -> Result<Vec<MachineRow>, StoreError> {
        let sql = format!(
            "SELECT {MACHINE_COLUMNS} FROM portfolio_machines WHERE ($1 = '' OR user_id = $1) ORDER BY first_seen_ms, id"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(user_id.unwrap_or(""))
            .fetch_all(self.pool())
            .await?)
    }

    /// Insert a hand-entered machine unless the user has `max` machines already; false then.
    pub async fn insert_machine(&self, m: &MachineRow, max: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO portfolio_machines (id, user_id, account_id, platform_id, data, last_rented_at_ms, \
             first_seen_ms, updated_at_ms) SELECT $1, $2, $3, $4, $5, $6, $7, $8 \
             WHERE (SELECT COUNT(*) FROM portfolio_machines WHERE user_id = $9) < $10",
        )
        .bind(&m.id)
        .bind(&m.user_id)
        .bind(&m.account_id)
        .bind(&m.platform_id)
        .bind(&m.data)
        .bind(m.last_rented_at_ms)
        .bind(m.first_seen_ms)
        .bind(m.updated_at_ms)
        .bind(&m.user_id)
        .bind(max)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Store a machine as read from a linked account (insert or replace by account and
    /// platform id); the hub's id is kept.
    pub async fn upsert_linked_machine(&self, m: &MachineRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO portfolio_machines (id, user_id, account_id, platform_id, data, last_rented_at_ms, \
             first_seen_ms, updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (account_id, platform_id) DO UPDATE SET data = excluded.data, \
             last_rented_at_ms = excluded.last_rented_at_ms, updated_at_ms = excluded.updated_at_ms",
        )
        .bind(&m.id)
        .bind(&m.user_id)
        .bind(&m.account_id)
        .bind(&m.platform_id)
        .bind(&m.data)
        .bind(m.last_rented_at_ms)
        .bind(m.first_seen_ms)
        .bind(m.updated_at_ms)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Replace a hand-entered machine of the user.
    pub async fn update_manual_machine(
        &self,
        user_id: &str,
        id: &str,
        data: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE portfolio_machines SET data = $1, updated_at_ms = $2 WHERE id = $3 AND user_id = $4 AND account_id IS NULL",
        )
        .bind(data)
        .bind(now_ms)
        .bind(id)
        .bind(user_id)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Delete a machine of the user: a hand-entered one (`manual_only`: only such), or one a
    /// linked account no longer lists.
    pub async fn delete_machine(&self, user_id: &str, id: &str, manual_only: bool) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "DELETE FROM portfolio_machines WHERE id = $1 AND user_id = $2 AND ($3 = 0 OR account_id IS NULL)",
        )
        .bind(id)
        .bind(user_id)
        .bind(i64::from(manual_only))
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn record_change(&self, c: &ChangeRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO portfolio_changes (id, user_id, machine_id, field, old_value, new_value, result, at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&c.id)
        .bind(&c.user_id)
        .bind(&c.machine_id)
        .bind(&c.field)
        .bind(&c.old_value)
        .bind(&c.new_value)
        .bind(&c.result)
        .bind(c.at_ms)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// A user's changes, newest first.
    pub async fn changes(&self, user_id: &str, limit: i64) -> Result<Vec<ChangeRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, user_id, machine_id, field, old_value, new_value, result, at_ms FROM portfolio_changes \
             WHERE user_id = $1 ORDER BY at_ms DESC, id DESC LIMIT $2",
        )
        .bind(user_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?)
    }
}
