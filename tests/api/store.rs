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
    let base =
        std::env::var("GPUSCOUT_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let admin = Store::connect(&DatabaseSettings {
        url: SecretString::from(format!("{base}/postgres")),
        max_connections: 1,
    })
    .await;
    let admin = match admin {
        Ok(a) => a,
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("skipping PostgreSQL test: {e}");
            return None;
        }
        Err(e) => panic!("PostgreSQL is required under CI: {e}"),
    };
    let name = format!("gpuscout_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(admin.pool())
        .await
        .unwrap();
    let store = Store::connect(&DatabaseSettings {
        url: SecretString::from(format!("{base}/{name}")),
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

#[tokio::test]
async fn sqlite_store() {
    let (store, _dir) = sqlite().await;
    users_round_trip(&store).await;
}

#[tokio::test]
async fn postgres_store() {
    if let Some(store) = postgres().await {
        users_round_trip(&store).await;
    }
}
