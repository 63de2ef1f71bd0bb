//! The database: one sqlx pool (SQLite embedded, or PostgreSQL), migrations, and one repository
//! per table group. Holds no business rules.
//!
//! The `Any` driver runs the same SQL (with `$1` placeholders) on both backends; times are i64
//! epoch milliseconds and JSON is TEXT, the types `Any` supports everywhere.

pub mod advisor;
pub mod alerts;
pub mod email;
pub mod keys;
pub mod portfolio;
pub mod push;
pub mod queue;
pub mod retention;

use std::path::Path;

use secrecy::ExposeSecret;
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

use crate::config::DatabaseSettings;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database path: {0}")]
    Io(#[from] std::io::Error),
    #[error("unreadable row: {0}")]
    Corrupt(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Connect (creating a SQLite file and its folder when missing).
    pub async fn connect(settings: &DatabaseSettings) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let url = settings.url.expose_secret();
        let (backend, url) = if let Some(rest) = url.strip_prefix("sqlite:") {
            let path = rest.trim_start_matches("//");
            let file = path.split('?').next().unwrap_or_default();
            if !file.is_empty()
                && file != ":memory:"
                && let Some(dir) = Path::new(file).parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir)?;
            }
            let url = if path.contains("mode=") {
                format!("sqlite://{path}")
            } else if path.contains('?') {
                format!("sqlite://{path}&mode=rwc")
            } else {
                format!("sqlite://{path}?mode=rwc")
            };
            (Backend::Sqlite, url)
        } else {
            (Backend::Postgres, url.to_owned())
        };
        let mut options = AnyPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(std::time::Duration::from_secs(5));
        if backend == Backend::Sqlite {
            // With WAL, `NORMAL` syncs at checkpoints instead of at every commit: still safe from
            // corruption, and many times the commits per second (every advisor answer commits).
            options = options.after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query("PRAGMA synchronous=NORMAL").execute(conn).await?;
                    Ok(())
                })
            });
        }
        let pool = options.connect(&url).await?;
        if backend == Backend::Sqlite {
            // WAL lets readers work while the minute writer writes.
            sqlx::query("PRAGMA journal_mode=WAL").execute(&pool).await?;
        }
        Ok(Self { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Apply the migrations of this backend (`migrations/sqlite` or `migrations/postgres`).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite").run(&self.pool).await?,
            Backend::Postgres => sqlx::migrate!("migrations/postgres").run(&self.pool).await?,
        }
        Ok(())
    }

    /// A round trip to the database (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Record a user and the tier last seen in their token.
    pub async fn upsert_user(&self, id: &str, tier: &str, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO users (id, tier, created_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET tier = excluded.tier",
        )
        .bind(id)
        .bind(tier)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Record a revoked token id until `expire_at_s` (a later expiry of the same id wins).
    pub async fn revoke_token(&self, jti: &str, expire_at_s: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO revoked_tokens (jti, expire_at_s) VALUES ($1, $2) ON CONFLICT (jti) DO UPDATE \
             SET expire_at_s = CASE WHEN excluded.expire_at_s > revoked_tokens.expire_at_s \
             THEN excluded.expire_at_s ELSE revoked_tokens.expire_at_s END",
        )
        .bind(jti)
        .bind(expire_at_s)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The revocations still in force at `now_s` (the expired ones are deleted first).
    pub async fn revoked_tokens(&self, now_s: i64) -> Result<Vec<(String, i64)>, StoreError> {
        sqlx::query("DELETE FROM revoked_tokens WHERE expire_at_s <= $1")
            .bind(now_s)
            .execute(&self.pool)
            .await?;
        let rows = sqlx::query_as("SELECT jti, expire_at_s FROM revoked_tokens")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows)
    }

    pub async fn user_tier(&self, id: &str) -> Result<Option<String>, StoreError> {
        let tier = sqlx::query_scalar("SELECT tier FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(tier)
    }

    /// Write one minute's per-model aggregates (`rows`: slug and aggregate JSON). Idempotent per
    /// model and minute.
    pub async fn insert_market_snapshots(
        &self,
        ts_ms: i64,
        source: &str,
        rows: &[(String, serde_json::Value)],
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        // Multi-row inserts: one round trip per 64 models instead of one per model.
        const COLUMNS: usize = 15;
        let mut tx = self.pool.begin().await?;
        for batch in rows.chunks(64) {
            let mut sql = String::from(
                "INSERT INTO market_snapshots (ts_ms, model, source, gpus_total, gpus_rented, gpus_available, \
                 utilisation, price_available_median, price_available_p10, price_available_p90, price_rented_median, \
                 price_all_median, price_all_p10, price_all_p90, data) VALUES ",
            );
            for i in 0..batch.len() {
                let placeholders: Vec<String> = (1..=COLUMNS).map(|c| format!("${}", i * COLUMNS + c)).collect();
                sql.push_str(if i == 0 { "(" } else { ", (" });
                sql.push_str(&placeholders.join(", "));
                sql.push(')');
            }
            sql.push_str(" ON CONFLICT (model, ts_ms) DO NOTHING");
            // Only placeholders are interpolated; every value is bound.
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (model, a) in batch {
                let int = |k: &str| a[k].as_i64().unwrap_or(0);
                let price = |side: &str, k: &str| a[side][k].as_f64();
                query = query
                    .bind(ts_ms)
                    .bind(model.clone())
                    .bind(source.to_owned())
                    .bind(int("gpus_total"))
                    .bind(int("gpus_rented"))
                    .bind(int("gpus_available"))
                    .bind(a["utilisation"].as_f64().unwrap_or(0.0))
                    .bind(price("price_available", "median"))
                    .bind(price("price_available", "p10"))
                    .bind(price("price_available", "p90"))
                    .bind(price("price_rented", "median"))
                    .bind(price("price_all", "median"))
                    .bind(price("price_all", "p10"))
                    .bind(price("price_all", "p90"))
                    .bind(a.to_string());
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A model's stored aggregates between two times (inclusive), oldest first.
    pub async fn market_history(&self, model: &str, from_ms: i64, to_ms: i64) -> Result<Vec<MarketPoint>, StoreError> {
        let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {POINT_COLUMNS} FROM market_snapshots \
             WHERE model = $1 AND ts_ms >= $2 AND ts_ms <= $3 ORDER BY ts_ms LIMIT 100000"
        )))
        .bind(model)
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A JSON document stored as text, read with `#[sqlx(try_from = "String")]`; it serializes as
/// the document itself.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[serde(transparent)]
pub struct JsonText(pub serde_json::Value);

impl TryFrom<String> for JsonText {
    type Error = serde_json::Error;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        serde_json::from_str(&text).map(Self)
    }
}

impl std::ops::Deref for JsonText {
    type Target = serde_json::Value;
    fn deref(&self) -> &serde_json::Value {
        &self.0
    }
}

/// The columns of a [`MarketPoint`], in the minute and the hourly rows alike.
pub(crate) const POINT_COLUMNS: &str = "ts_ms, gpus_total, gpus_rented, gpus_available, utilisation, \
     price_available_median, price_available_p10, price_available_p90, price_rented_median, \
     price_all_median, price_all_p10, price_all_p90";

/// One stored minute of a model's market.
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct MarketPoint {
    pub ts_ms: i64,
    pub gpus_total: i64,
    pub gpus_rented: i64,
    pub gpus_available: i64,
    pub utilisation: f64,
    pub price_available_median: Option<f64>,
    pub price_available_p10: Option<f64>,
    pub price_available_p90: Option<f64>,
    pub price_rented_median: Option<f64>,
    /// Every GPU, rented and available together (`price_all` of the aggregate).
    pub price_all_median: Option<f64>,
    pub price_all_p10: Option<f64>,
    pub price_all_p90: Option<f64>,
}
