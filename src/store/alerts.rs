//! Alert rules, fired alerts and the webhook outbox.

use super::{JsonText, Store, StoreError};

const RULE_COLUMNS: &str = "id, user_id, name, kind, params, cooldown_s, enabled, webhook_url, webhook_format, \
     webhook_secret, deliver, last_condition, last_fired_at_ms, crossings, created_at_ms, updated_at_ms";

/// An alert rule as stored: its condition is JSON text (`params`) of its `kind`; flags are 0 or 1
/// (the `Any` driver has no booleans). `alerts::Rule` converts from and to it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct RuleRow {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub kind: String,
    pub params: String,
    pub cooldown_s: i64,
    pub enabled: i64,
    pub webhook_url: Option<String>,
    pub webhook_format: Option<String>,
    pub webhook_secret: Option<String>,
    /// Delivery channels, comma-separated; `NULL`: the socket and the webhook when there is one.
    pub deliver: Option<String>,
    pub last_condition: Option<i64>,
    pub last_fired_at_ms: Option<i64>,
    pub crossings: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A firing to record: one crossing of a rule, once per idempotency key.
#[derive(Debug, Clone, Copy)]
pub struct FiringRecord<'a> {
    pub rule_id: &'a str,
    pub user_id: &'a str,
    pub idempotency_key: &'a str,
    pub payload: &'a serde_json::Value,
    pub fired_at_ms: i64,
    pub crossings: i64,
}

/// A fired alert as stored.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AlertEvent {
    pub id: String,
    pub rule_id: String,
    /// The alert as `alerts:#<uid>` published it.
    #[sqlx(try_from = "String")]
    #[schema(value_type = Object)]
    pub payload: JsonText,
    pub fired_at_ms: i64,
    pub acknowledged_at_ms: Option<i64>,
}

/// One webhook attempt and the state it leaves the delivery in.
pub struct Attempt<'a> {
    pub delivery_id: &'a str,
    pub attempt: i64,
    pub status_code: Option<i64>,
    pub error: Option<&'a str>,
    pub at_ms: i64,
    /// `pending` (with `next_attempt_at_ms`), `delivered` or `failed`.
    pub status: &'a str,
    pub next_attempt_at_ms: i64,
}

/// One delivery of a fired alert to queue with it: a webhook, a push subscription or an e-mail.
#[derive(Debug, Clone)]
pub struct OutboxItem {
    /// `webhook`, `push` or `email`.
    pub channel: &'static str,
    /// The webhook URL, the push endpoint, or `mailto:` and the address.
    pub url: String,
    /// The webhook's body format; `push`; `email` (or `digest` once folded into one).
    pub format: String,
    /// The webhook's signing secret (empty for the others).
    pub secret: String,
    /// The push subscription's id.
    pub target: Option<String>,
}

impl OutboxItem {
    pub fn new(channel: &'static str, url: &str, format: &str, secret: &str, target: Option<String>) -> Self {
        Self {
            channel,
            url: url.to_owned(),
            format: format.to_owned(),
            secret: secret.to_owned(),
            target,
        }
    }
}

/// A delivery waiting for its next attempt.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Delivery {
    pub id: String,
    pub event_id: String,
    pub user_id: String,
    pub channel: String,
    pub target: Option<String>,
    pub url: String,
    pub format: String,
    pub secret: String,
    pub attempts: i64,
    #[sqlx(try_from = "String")]
    pub payload: JsonText,
}

impl Store {
    /// Insert a rule unless its user already has `max_rules`; false then. The count and the
    /// insert are one step: concurrent creations cannot race past the limit.
    pub async fn insert_rule(&self, rule: &RuleRow, max_rules: i64) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        if self.backend == super::Backend::Postgres {
            // Creations of one user take turns (SQLite runs one write at a time anyway).
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                .bind(rule.user_id.clone())
                .execute(&mut *tx)
                .await?;
        }
        let inserted = sqlx::query(
            "INSERT INTO alert_rules (id, user_id, name, kind, params, cooldown_s, enabled, webhook_url, webhook_format, \
             webhook_secret, deliver, last_condition, last_fired_at_ms, crossings, created_at_ms, updated_at_ms) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL, NULL, 0, $12, $13 \
             WHERE (SELECT COUNT(*) FROM alert_rules WHERE user_id = $14) < $15",
        )
        .bind(rule.id.clone())
        .bind(rule.user_id.clone())
        .bind(rule.name.clone())
        .bind(rule.kind.clone())
        .bind(rule.params.clone())
        .bind(rule.cooldown_s)
        .bind(rule.enabled)
        .bind(rule.webhook_url.clone())
        .bind(rule.webhook_format.clone())
        .bind(rule.webhook_secret.clone())
        .bind(rule.deliver.clone())
        .bind(rule.created_at_ms)
        .bind(rule.updated_at_ms)
        .bind(rule.user_id.clone())
        .bind(max_rules)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(inserted == 1)
    }

    /// Replace a rule's user-editable fields; its remembered condition restarts.
    pub async fn update_rule(&self, rule: &RuleRow) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE alert_rules SET name = $1, kind = $2, params = $3, cooldown_s = $4, enabled = $5, webhook_url = $6, \
             webhook_format = $7, webhook_secret = $8, deliver = $9, last_condition = NULL, updated_at_ms = $10 \
             WHERE id = $11 AND user_id = $12",
        )
        .bind(rule.name.clone())
        .bind(rule.kind.clone())
        .bind(rule.params.clone())
        .bind(rule.cooldown_s)
        .bind(rule.enabled)
        .bind(rule.webhook_url.clone())
        .bind(rule.webhook_format.clone())
        .bind(rule.webhook_secret.clone())
        .bind(rule.deliver.clone())
        .bind(rule.updated_at_ms)
        .bind(rule.id.clone())
        .bind(rule.user_id.clone())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn delete_rule(&self, user_id: &str, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM alert_rules WHERE id = $1 AND user_id = $2")
            .bind(id)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// A rule by id, whoever owns it (for the evaluating node, told that it changed).
    pub async fn rule_by_id(&self, id: &str) -> Result<Option<RuleRow>, StoreError> {
        let sql = format!("SELECT {RULE_COLUMNS} FROM alert_rules WHERE id = $1");
        let row = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row)
    }

    pub async fn rule(&self, user_id: &str, id: &str) -> Result<Option<RuleRow>, StoreError> {
        let sql = format!("SELECT {RULE_COLUMNS} FROM alert_rules WHERE id = $1 AND user_id = $2");
        let row = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row)
    }

    pub async fn rules_of(&self, user_id: &str) -> Result<Vec<RuleRow>, StoreError> {
        let sql = format!("SELECT {RULE_COLUMNS} FROM alert_rules WHERE user_id = $1 ORDER BY created_at_ms, id");
        let rows = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows)
    }

    /// Every rule, for the evaluating node at start.
    pub async fn all_rules(&self) -> Result<Vec<RuleRow>, StoreError> {
        let sql = format!("SELECT {RULE_COLUMNS} FROM alert_rules");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(&self.pool).await?)
    }

    pub async fn set_rule_condition(&self, id: &str, condition: bool) -> Result<(), StoreError> {
        sqlx::query("UPDATE alert_rules SET last_condition = $1 WHERE id = $2")
            .bind(i64::from(condition))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Record a firing (once per idempotency key) and queue its deliveries (`outbox`), in one
    /// transaction. Returns the event id, or `None` if this crossing was recorded before (by this
    /// node or another).
    pub async fn record_firing(
        &self,
        firing: &FiringRecord<'_>,
        outbox: &[OutboxItem],
    ) -> Result<Option<String>, StoreError> {
        let id = uuid::Uuid::new_v4().to_string();
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO alert_events (id, rule_id, user_id, idempotency_key, payload, fired_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(id.clone())
        .bind(firing.rule_id)
        .bind(firing.user_id)
        .bind(firing.idempotency_key)
        .bind(firing.payload.to_string())
        .bind(firing.fired_at_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        sqlx::query("UPDATE alert_rules SET last_fired_at_ms = $1, crossings = $2, last_condition = 1 WHERE id = $3")
            .bind(firing.fired_at_ms)
            .bind(firing.crossings)
            .bind(firing.rule_id)
            .execute(&mut *tx)
            .await?;
        for item in outbox {
            sqlx::query(
                "INSERT INTO webhook_deliveries (id, event_id, channel, target, url, format, secret, status, attempts, \
                 next_attempt_at_ms, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', 0, $8, $9)",
            )
            .bind(uuid::Uuid::new_v4().to_string())
            .bind(id.clone())
            .bind(item.channel)
            .bind(item.target.as_deref())
            .bind(item.url.as_str())
            .bind(item.format.as_str())
            .bind(item.secret.as_str())
            .bind(firing.fired_at_ms)
            .bind(firing.fired_at_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Some(id))
    }

    /// A user's fired alerts, newest first, optionally for one rule and a time range, paginated by
    /// `before_ms` (the `fired_at_ms` of the last event of the previous page).
    pub async fn alert_events(
        &self,
        user_id: &str,
        rule_id: Option<&str>,
        from_ms: i64,
        to_ms: i64,
        before_ms: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AlertEvent>, StoreError> {
        let events = sqlx::query_as(
            "SELECT id, rule_id, payload, fired_at_ms, acknowledged_at_ms FROM alert_events \
             WHERE user_id = $1 AND ($2 = '' OR rule_id = $2) AND fired_at_ms >= $3 AND fired_at_ms <= $4 \
             AND fired_at_ms < $5 ORDER BY fired_at_ms DESC, id DESC LIMIT $6",
        )
        .bind(user_id)
        .bind(rule_id.unwrap_or(""))
        .bind(from_ms)
        .bind(to_ms)
        .bind(before_ms.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(events)
    }

    pub async fn acknowledge_event(&self, user_id: &str, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE alert_events SET acknowledged_at_ms = $1 WHERE id = $2 AND user_id = $3 AND acknowledged_at_ms IS NULL",
        )
        .bind(now_ms)
        .bind(id)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(true);
        }
        // Already acknowledged counts as done; another user's event as not found.
        let row = sqlx::query("SELECT 1 FROM alert_events WHERE id = $1 AND user_id = $2")
            .bind(id)
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Deliveries due now.
    pub async fn due_deliveries(&self, now_ms: i64, limit: i64) -> Result<Vec<Delivery>, StoreError> {
        let due = sqlx::query_as(
            "SELECT d.id, d.event_id, e.user_id, d.channel, d.target, d.url, d.format, d.secret, d.attempts, e.payload \
             FROM webhook_deliveries d JOIN alert_events e ON e.id = d.event_id \
             WHERE d.status = 'pending' AND d.next_attempt_at_ms <= $1 ORDER BY d.next_attempt_at_ms LIMIT $2",
        )
        .bind(now_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(due)
    }

    /// Claim a delivery read by [`Store::due_deliveries`] for one attempt: only if it is still
    /// as it was read (pending, due, the same attempt count and format), so a stale read never
    /// sends it twice; it is then not due again until `lease_until_ms`, the time by which its
    /// attempt is recorded (or, if this node dies first, tried again).
    pub async fn claim_delivery(&self, d: &Delivery, now_ms: i64, lease_until_ms: i64) -> Result<bool, StoreError> {
        let claimed = sqlx::query(
            "UPDATE webhook_deliveries SET next_attempt_at_ms = $1 WHERE id = $2 AND status = 'pending' \
             AND attempts = $3 AND format = $4 AND next_attempt_at_ms <= $5",
        )
        .bind(lease_until_ms)
        .bind(&d.id)
        .bind(d.attempts)
        .bind(&d.format)
        .bind(now_ms)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(claimed == 1)
    }

    /// A user's e-mail deliveries folded into the digest and due now (with `claimed`, the digest
    /// row being attempted), oldest first.
    pub async fn due_digest(&self, user_id: &str, now_ms: i64, claimed: &str) -> Result<Vec<Delivery>, StoreError> {
        let due = sqlx::query_as(
            "SELECT d.id, d.event_id, e.user_id, d.channel, d.target, d.url, d.format, d.secret, d.attempts, e.payload \
             FROM webhook_deliveries d JOIN alert_events e ON e.id = d.event_id \
             WHERE e.user_id = $1 AND d.channel = 'email' AND d.format = 'digest' AND d.status = 'pending' \
             AND (d.next_attempt_at_ms <= $2 OR d.id = $3) ORDER BY e.fired_at_ms, d.id",
        )
        .bind(user_id)
        .bind(now_ms)
        .bind(claimed)
        .fetch_all(&self.pool)
        .await?;
        Ok(due)
    }

    /// Fold a delivery into the digest sent at `at_ms` (no attempt is spent).
    pub async fn fold_into_digest(&self, delivery_id: &str, at_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE webhook_deliveries SET format = 'digest', next_attempt_at_ms = $1 WHERE id = $2 AND status = 'pending'",
        )
            .bind(at_ms)
            .bind(delivery_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A delivery's state: `pending`, `delivered` or `failed` (for tests and tools).
    pub async fn deliveries_of(&self, event_id: &str) -> Result<Vec<(String, String, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT channel, format, status FROM webhook_deliveries WHERE event_id = $1 ORDER BY channel, id",
        )
        .bind(event_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Record one attempt and the delivery's new state.
    pub async fn record_attempt(&self, a: &Attempt<'_>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO webhook_attempts (delivery_id, attempt, status_code, error, at_ms) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(a.delivery_id)
        .bind(a.attempt)
        .bind(a.status_code)
        .bind(a.error)
        .bind(a.at_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE webhook_deliveries SET status = $1, attempts = $2, next_attempt_at_ms = $3 WHERE id = $4")
            .bind(a.status)
            .bind(a.attempt)
            .bind(a.next_attempt_at_ms)
            .bind(a.delivery_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Attempts of an event's deliveries: (attempt, status code, error), in order.
    pub async fn delivery_attempts(
        &self,
        event_id: &str,
    ) -> Result<Vec<(i64, Option<i64>, Option<String>)>, StoreError> {
        let attempts = sqlx::query_as(
            "SELECT a.attempt, a.status_code, a.error FROM webhook_attempts a JOIN webhook_deliveries d \
             ON d.id = a.delivery_id WHERE d.event_id = $1 ORDER BY a.attempt",
        )
        .bind(event_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(attempts)
    }
}
