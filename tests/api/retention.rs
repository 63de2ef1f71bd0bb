//! Retention, with rows back-dated by the test: minute rows folded into hourly averages and
//! deleted after `store.market_snapshot_retention_days`, hourly rows after
//! `store.market_hourly_retention_days`, fired alerts and advisor messages after their own
//! settings; the leader's pass at start-up does it, and `/api/v1/market/history` answers long
//! ranges from the hours. On SQLite and PostgreSQL.

use gpuscout_hub::config::DatabaseSettings;
use gpuscout_hub::store::Store;
use gpuscout_hub::tier::Tier;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::alerts::request;
use crate::helpers::*;

const DAY_MS: i64 = 24 * 3600 * 1000;
const HOUR_MS: i64 = 3600 * 1000;

fn aggregate(gpus: i64, median: f64) -> Value {
    json!({"gpus_total": gpus, "gpus_rented": gpus / 2, "gpus_available": gpus - gpus / 2, "utilisation": 0.5,
           "price_available": {"median": median, "p10": median - 0.1, "p90": median + 0.1},
           "price_rented": {"median": median},
           "price_all": {"median": median + 0.05, "p10": median - 0.05, "p90": median + 0.2}})
}

async fn count(store: &Store, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(store.pool()).await.unwrap()
}

/// Rows of every kind at 800 days, 40 days, 10 days and 5 minutes ago (or at the start of this
/// hour, when it began less than 5 minutes ago: the row must be in the hour not complete yet).
async fn back_date(store: &Store, now: i64) {
    let hour_40d = (now - 40 * DAY_MS) / HOUR_MS * HOUR_MS;
    let recent = (now - 5 * 60_000).max(now / HOUR_MS * HOUR_MS);
    for (at, gpus, median) in [
        (now - 800 * DAY_MS, 8, 0.9),
        (hour_40d + 60_000, 10, 0.30),
        (hour_40d + 120_000, 20, 0.40),
        (hour_40d + 180_000, 30, 0.50),
        (now - 10 * DAY_MS, 40, 0.60),
        (recent, 50, 0.70),
    ] {
        let rows = vec![("rtx-4090".to_owned(), aggregate(gpus, median))];
        store.insert_market_snapshots(at, "simulated", &rows).await.unwrap();
    }
    for (id, at) in [("old", now - 400 * DAY_MS), ("new", now - DAY_MS)] {
        sqlx::query(
            "INSERT INTO alert_events (id, rule_id, user_id, idempotency_key, payload, fired_at_ms) \
             VALUES ($1, 'r', 'keeper', $2, '{}', $3)",
        )
        .bind(id)
        .bind(format!("k-{id}"))
        .bind(at)
        .execute(store.pool())
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO conversations (id, user_id, title, created_at_ms, updated_at_ms) VALUES ($1, 'keeper', 't', $2, $2)",
        )
        .bind(id)
        .bind(at)
        .execute(store.pool())
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO messages (id, conversation_id, seq, role, content, status, created_at_ms) \
             VALUES ($1, $1, 1, 'user', 'hello', 'complete', $2)",
        )
        .bind(id)
        .bind(at)
        .execute(store.pool())
        .await
        .unwrap();
    }
}

async fn old_rows_are_folded_and_deleted(database_url: String) {
    let now = gpuscout_hub::clock::unix_now_ms() as i64;
    let settings = DatabaseSettings {
        url: SecretString::from(database_url.clone()),
        max_connections: 2,
    };
    let store = Store::connect(&settings).await.unwrap();
    store.migrate().await.unwrap();
    back_date(&store, now).await;
    assert_eq!(count(&store, "SELECT COUNT(*) FROM market_snapshots").await, 6);

    // The hub's leader passes once at start; its last step empties the old conversation, so the
    // pass is over when both are gone.
    let app = spawn_app_with(move |s| s.database.url = SecretString::from(database_url)).await;
    let mut passed = false;
    for _ in 0..100 {
        if count(&store, "SELECT COUNT(*) FROM market_snapshots").await == 2
            && count(&store, "SELECT COUNT(*) FROM conversations").await == 1
        {
            passed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        passed,
        "minute rows older than 30 days and the emptied conversation are deleted"
    );
    // 800 days: folded then gone (730); 40 days: one hour of three minutes; 10 days: one hour.
    // The recent row's hour is not complete, so not folded.
    let hours: Vec<(i64, i64, i64, f64)> =
        sqlx::query_as("SELECT ts_ms, minutes, gpus_total, price_available_median FROM market_hourly ORDER BY ts_ms")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(hours.len(), 2, "{hours:?}");
    let hour_40d = (now - 40 * DAY_MS) / HOUR_MS * HOUR_MS;
    assert_eq!((hours[0].0, hours[0].1, hours[0].2), (hour_40d, 3, 20), "{hours:?}");
    assert!((hours[0].3 - 0.40).abs() < 1e-9, "the hour's average median: {hours:?}");
    assert_eq!(hours[1].1, 1);
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM alert_events WHERE id = 'old'").await,
        0
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM alert_events WHERE id = 'new'").await,
        1
    );
    assert_eq!(count(&store, "SELECT COUNT(*) FROM messages").await, 1);
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM conversations").await,
        1,
        "the emptied conversation goes"
    );

    // 60 days: hourly points (the 40-day hour, the 10-day hour, and the current hour's minute
    // row averaged the same way); the last hour: the minute rows.
    let token = app.token("keeper", Tier::Professional);
    let path = format!(
        "/api/v1/market/history?model=rtx-4090&from={}&to={now}",
        now - 60 * DAY_MS
    );
    let (_, long) = request(&app, "GET", &path, &token, None).await;
    assert_eq!(long["resolution"], "hour", "{long}");
    assert_eq!(long["step"], 3600);
    let medians: Vec<f64> = long["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["price_available_median"].as_f64().unwrap())
        .collect();
    // The all-GPU median is folded into the hours the same way.
    let all: Vec<f64> = long["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["price_all_median"].as_f64().unwrap())
        .collect();
    assert!(
        all.iter().zip(&medians).all(|(a, m)| (a - m - 0.05).abs() < 1e-9),
        "{all:?} against {medians:?}"
    );
    assert_eq!(medians.len(), 3, "{long}");
    assert!(
        (medians[0] - 0.40).abs() < 1e-9 && medians[1] == 0.60 && medians[2] == 0.70,
        "{medians:?}"
    );
    let path = format!("/api/v1/market/history?model=rtx-4090&from={}&to={now}", now - HOUR_MS);
    let (_, short) = request(&app, "GET", &path, &token, None).await;
    assert_eq!(short["resolution"], "minute", "{short}");
    assert_eq!(short["points"].as_array().unwrap().len(), 1, "{short}");
    store.close().await;
}

#[tokio::test]
async fn old_rows_are_folded_and_deleted_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    old_rows_are_folded_and_deleted(format!("sqlite://{}/retention.db", dir.path().display())).await;
}

#[tokio::test]
async fn old_rows_are_folded_and_deleted_on_postgres() {
    if let Some(url) = fresh_postgres_url().await {
        old_rows_are_folded_and_deleted(url).await;
    }
}
