//! The database: one sqlx pool (SQLite embedded, or PostgreSQL), migrations, and one repository
//! per table group. Holds no business rules.
//!
//! The `Any` driver runs the same SQL (with `$1` placeholders) on both backends; times are i64
//! epoch milliseconds and JSON is TEXT, the types `Any` supports everywhere.

use std::path::Path;

use secrecy::ExposeSecret;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};

use crate::config::DatabaseSettings;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database path: {0}")]
    Io(#[from] std::io::Error),
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
        let pool = AnyPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect(&url)
            .await?;
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

    pub async fn user_tier(&self, id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT tier FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get::<String, _>(0)?),
            None => None,
        })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
