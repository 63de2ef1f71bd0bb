//! The store against SQLite and PostgreSQL, each test on a fresh database.

use gpuscout_hub::config::DatabaseSettings;
use gpuscout_hub::store::Store;
use secrecy::SecretString;

async fn sqlite() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/nested/dir/store.db", dir.path().display());
    let store = Store::connect(&DatabaseSettings {
        url: SecretString::from(url),
        max_connections: 2,
    })
    .await
    .expect("sqlite store");
    store.migrate().await.unwrap();
    (store, dir)
}

/// A fresh PostgreSQL database, or `None` on a laptop without one (never under CI).
async fn postgres() -> Option<Store> {
    let url = crate::helpers::fresh_postgres_url().await?;
    let store = Store::connect(&DatabaseSettings {
        url: SecretString::from(url),
        max_connections: 2,
    })
    .await
    .unwrap();
    store.migrate().await.unwrap();
    Some(store)
}

async fn users_round_trip(store: &Store) {
    store.upsert_user("42", "free", 1).await.unwrap();
    assert_eq!(store.user_tier("42").await.unwrap().as_deref(), Some("free"));
    store.upsert_user("42", "enterprise", 2).await.unwrap();
    assert_eq!(store.user_tier("42").await.unwrap().as_deref(), Some("enterprise"));
    assert_eq!(store.user_tier("43").await.unwrap(), None);
    // Migrations are idempotent.
    store.migrate().await.unwrap();
    store.ping().await.unwrap();
}

async fn market_history_round_trip(store: &Store) {
    let a = serde_json::json!({"gpus_total": 10, "gpus_rented": 4, "gpus_available": 6, "utilisation": 0.4,
        "price_available": {"gpus": 6, "median": 0.35, "p10": 0.3, "p90": 0.5}, "price_rented": {"gpus": 4}});
    let rows = vec![("rtx-4090".to_owned(), a.clone()), ("h100-sxm".to_owned(), a)];
    store.insert_market_snapshots(60_000, "farm500", &rows).await.unwrap();
    store.insert_market_snapshots(120_000, "farm500", &rows).await.unwrap();
    // The same minute again is ignored.
    store.insert_market_snapshots(120_000, "farm500", &rows).await.unwrap();
    let points = store.market_history("rtx-4090", 0, 200_000).await.unwrap();
    assert_eq!(points.len(), 2);
    assert_eq!(points[0].ts_ms, 60_000);
    assert_eq!(points[1].gpus_available, 6);
    assert_eq!(points[1].price_available_median, Some(0.35));
    assert_eq!(points[1].price_rented_median, None);
    assert!(
        store
            .market_history("rtx-4090", 70_000, 80_000)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn sqlite_store() {
    let (store, _dir) = sqlite().await;
    users_round_trip(&store).await;
    market_history_round_trip(&store).await;
}

#[tokio::test]
async fn postgres_store() {
    if let Some(store) = postgres().await {
        users_round_trip(&store).await;
        market_history_round_trip(&store).await;
    }
}
