//! Retention: the market's minute rows folded into hourly rows (the averages of each model's
//! hour) and deleted after `store.market_snapshot_retention_days`, the hourly rows after
//! `store.market_hourly_retention_days`, fired alerts and advisor messages after their own
//! settings. Run by the leader.

use super::{MarketPoint, POINT_COLUMNS, Store, StoreError};

const HOUR_MS: i64 = 3_600_000;

/// One row per model and hour from the minute rows in `[$2, $3)` (of model `$1` when it is not
/// NULL): the hour's averages, counts rounded. The fold and the history's unfolded hours share it.
const HOURS_OF_MINUTES: &str = "SELECT (ts_ms / 3600000) * 3600000 AS ts_ms, model, MAX(source) AS source, \
     COUNT(*) AS minutes, CAST(ROUND(AVG(gpus_total)) AS BIGINT) AS gpus_total, \
     CAST(ROUND(AVG(gpus_rented)) AS BIGINT) AS gpus_rented, CAST(ROUND(AVG(gpus_available)) AS BIGINT) AS gpus_available, \
     AVG(utilisation) AS utilisation, AVG(price_available_median) AS price_available_median, \
     AVG(price_available_p10) AS price_available_p10, AVG(price_available_p90) AS price_available_p90, \
     AVG(price_rented_median) AS price_rented_median, AVG(price_all_median) AS price_all_median, \
     AVG(price_all_p10) AS price_all_p10, AVG(price_all_p90) AS price_all_p90 \
     FROM market_snapshots WHERE ts_ms >= $1 AND ts_ms < $2 AND ($3 = '' OR model = $3) \
     GROUP BY (ts_ms / 3600000) * 3600000, model";

/// The cut-off times (milliseconds since the epoch): older rows go.
#[derive(Debug, Clone, Copy)]
pub struct Cutoffs {
    pub now_ms: i64,
    pub minutes_before_ms: i64,
    pub hours_before_ms: i64,
    /// `None`: kept for ever.
    pub alerts_before_ms: Option<i64>,
    pub messages_before_ms: Option<i64>,
}

impl Cutoffs {
    /// The cut-offs `days` settings give at `now_ms` (0 days for alerts or messages: none).
    pub fn of(s: &crate::config::StoreSettings, now_ms: i64) -> Self {
        let before = |days: u32| now_ms - i64::from(days) * 24 * HOUR_MS;
        let optional = |days: u32| (days > 0).then(|| before(days));
        Self {
            now_ms,
            minutes_before_ms: before(s.market_snapshot_retention_days),
            hours_before_ms: before(s.market_hourly_retention_days),
            alerts_before_ms: optional(s.alert_event_retention_days),
            messages_before_ms: optional(s.advisor_message_retention_days),
        }
    }
}

/// What one pass did, in rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    pub hours_folded: u64,
    pub minutes_deleted: u64,
    pub hours_deleted: u64,
    pub alert_events_deleted: u64,
    pub messages_deleted: u64,
}

impl Store {
    /// Fold every complete hour not folded yet, then delete what is past its cut-off.
    pub async fn enforce_retention(&self, c: &Cutoffs) -> Result<Pruned, StoreError> {
        let pool = self.pool();
        let folded_until: Option<i64> = sqlx::query_scalar("SELECT MAX(ts_ms) FROM market_hourly")
            .fetch_one(pool)
            .await?;
        let from = folded_until.map_or(0, |t| t + HOUR_MS);
        let this_hour = c.now_ms / HOUR_MS * HOUR_MS;
        let fold = format!(
            "INSERT INTO market_hourly (ts_ms, model, source, minutes, gpus_total, gpus_rented, gpus_available, \
             utilisation, price_available_median, price_available_p10, price_available_p90, price_rented_median, \
             price_all_median, price_all_p10, price_all_p90) {HOURS_OF_MINUTES} ON CONFLICT (model, ts_ms) DO NOTHING"
        );
        let mut out = Pruned {
            hours_folded: sqlx::query(sqlx::AssertSqlSafe(fold))
                .bind(from)
                .bind(this_hour)
                .bind("")
                .execute(pool)
                .await?
                .rows_affected(),
            ..Pruned::default()
        };
        let delete = |sql: &'static str, before: i64| sqlx::query(sql).bind(before).execute(pool);
        // Only folded minutes go: an hour not folded yet (at or after `from`'s) stays.
        out.minutes_deleted = delete(
            "DELETE FROM market_snapshots WHERE ts_ms < $1",
            c.minutes_before_ms.min(this_hour),
        )
        .await?
        .rows_affected();
        out.hours_deleted = delete("DELETE FROM market_hourly WHERE ts_ms < $1", c.hours_before_ms)
            .await?
            .rows_affected();
        if let Some(before) = c.alerts_before_ms {
            out.alert_events_deleted = self.delete_alert_events(before).await?;
        }
        if let Some(before) = c.messages_before_ms {
            out.messages_deleted = self.delete_messages(before).await?;
        }
        Ok(out)
    }

    /// Fired alerts before `before`, with their finished deliveries and attempts (pending ones
    /// still go out).
    async fn delete_alert_events(&self, before: i64) -> Result<u64, StoreError> {
        let pool = self.pool();
        let deleted = sqlx::query("DELETE FROM alert_events WHERE fired_at_ms < $1")
            .bind(before)
            .execute(pool)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM webhook_deliveries WHERE created_at_ms < $1 AND status <> 'pending'")
            .bind(before)
            .execute(pool)
            .await?;
        sqlx::query("DELETE FROM webhook_attempts WHERE delivery_id NOT IN (SELECT id FROM webhook_deliveries)")
            .execute(pool)
            .await?;
        Ok(deleted)
    }

    /// Advisor messages before `before` (not one still streaming), and conversations left empty.
    async fn delete_messages(&self, before: i64) -> Result<u64, StoreError> {
        let pool = self.pool();
        let deleted = sqlx::query("DELETE FROM messages WHERE created_at_ms < $1 AND status <> 'streaming'")
            .bind(before)
            .execute(pool)
            .await?
            .rows_affected();
        sqlx::query(
            "DELETE FROM conversations WHERE updated_at_ms < $1 \
             AND NOT EXISTS (SELECT 1 FROM messages WHERE messages.conversation_id = conversations.id)",
        )
        .bind(before)
        .execute(pool)
        .await?;
        Ok(deleted)
    }

    /// A model's hourly history between two times (inclusive), oldest first: the folded hours,
    /// then the hours whose minutes are not folded yet, averaged the same way.
    pub async fn market_history_hourly(
        &self,
        model: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<MarketPoint>, StoreError> {
        let pool = self.pool();
        // The hour `from_ms` falls in is part of the answer.
        let first_hour = from_ms / HOUR_MS * HOUR_MS;
        let mut points: Vec<MarketPoint> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {POINT_COLUMNS} FROM market_hourly WHERE model = $1 AND ts_ms >= $2 AND ts_ms <= $3 ORDER BY ts_ms"
        )))
        .bind(model)
        .bind(first_hour)
        .bind(to_ms)
        .fetch_all(pool)
        .await?;
        let unfolded_from = points.last().map_or(first_hour, |p| p.ts_ms + HOUR_MS);
        let sql = format!("SELECT {POINT_COLUMNS} FROM ({HOURS_OF_MINUTES}) AS hours ORDER BY ts_ms");
        let recent: Vec<MarketPoint> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(unfolded_from)
            .bind(to_ms.saturating_add(1))
            .bind(model)
            .fetch_all(pool)
            .await?;
        points.extend(recent);
        Ok(points)
    }
}
