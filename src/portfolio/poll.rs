//! Reading linked accounts: each when due (`portfolio.poll_interval_ms` with jitter), all of
//! them within one rate limit (`portfolio.requests_per_second`, Vast's limit is per IP), with
//! backoff while Vast is unavailable, and never again after a 401/403 until the account is
//! linked anew. Earnings are read at most every `portfolio.earnings_interval_ms`.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::Portfolio;
use super::machine::from_vast;
use super::vast_host::HostError;
use crate::backoff::Backoff;
use crate::clock::unix_now_ms;
use crate::store::StoreError;
use crate::store::portfolio::{AccountRow, MachineRow};

/// When each account is next due, and how many polls in a row failed.
#[derive(Debug, Clone, Copy, Default)]
struct Schedule {
    next_ms: i64,
    failures: u32,
    earnings_next_ms: i64,
}

/// How long the list of linked accounts is kept before it is read again (a change of a user's
/// accounts is read at once).
const ACCOUNTS_FRESH: Duration = Duration::from_secs(5);

pub(super) struct Poller {
    portfolio: Arc<Portfolio>,
    schedules: Mutex<HashMap<String, Schedule>>,
    limiter: DefaultDirectRateLimiter,
    /// The accounts as last read, and when.
    accounts: tokio::sync::Mutex<(Option<std::time::Instant>, Vec<AccountRow>)>,
}

impl Poller {
    pub(super) fn new(portfolio: Arc<Portfolio>) -> Self {
        // Requests per second as a quota with a period (fractions allowed): one request every 1/rps s.
        let period = Duration::from_secs_f64(1.0 / portfolio.settings.requests_per_second);
        let quota = Quota::with_period(period)
            .expect("a positive period")
            .allow_burst(NonZeroU32::MIN);
        Self {
            portfolio,
            schedules: Mutex::default(),
            limiter: RateLimiter::direct(quota),
            accounts: tokio::sync::Mutex::new((None, Vec::new())),
        }
    }

    /// The linked accounts: read again when `force`d or older than [`ACCOUNTS_FRESH`].
    async fn accounts(&self, force: bool) -> Result<Vec<AccountRow>, StoreError> {
        let mut cached = self.accounts.lock().await;
        if force || cached.0.is_none_or(|at| at.elapsed() >= ACCOUNTS_FRESH) {
            *cached = (
                Some(std::time::Instant::now()),
                self.portfolio.store.accounts(None).await?,
            );
        }
        Ok(cached.1.clone())
    }

    fn schedule(&self, id: &str) -> Schedule {
        self.schedules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .copied()
            .unwrap_or_default()
    }

    fn set_schedule(&self, id: &str, s: Schedule) {
        self.schedules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_owned(), s);
    }

    /// Poll every account that is due; whether any machine data changed.
    pub(super) async fn poll_due(&self, stop: &CancellationToken, force: bool) -> bool {
        let accounts = match self.accounts(force).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "reading linked accounts failed");
                return false;
            }
        };
        let now = unix_now_ms() as i64;
        let mut changed = false;
        for account in accounts {
            if account.status == "unauthorized" || self.schedule(&account.id).next_ms > now {
                continue;
            }
            tokio::select! {
                _ = stop.cancelled() => return changed,
                _ = self.limiter.until_ready() => {}
            }
            match self.poll(&account).await {
                Ok(c) => changed |= c,
                Err(e) => tracing::warn!(account = %account.id, error = %e, "storing a poll failed"),
            }
        }
        changed
    }

    /// The next poll time: the interval with jitter (each account drifts apart from the others).
    fn next_after(&self, now: i64) -> i64 {
        let s = &self.portfolio.settings;
        let jitter = s.jitter_ratio * (2.0 * rand::random::<f64>() - 1.0);
        now + (s.poll_interval_ms as f64 * (1.0 + jitter)) as i64
    }

    async fn poll(&self, account: &AccountRow) -> Result<bool, StoreError> {
        let store = &self.portfolio.store;
        let now = unix_now_ms() as i64;
        let mut schedule = self.schedule(&account.id);
        let key = match self.portfolio.sealer.open(&account.api_key_sealed) {
            Ok(k) => k,
            Err(e) => {
                let why = format!("the stored key cannot be opened ({e}); link the account again");
                store
                    .set_account_status(&account.id, "degraded", None, Some(&why))
                    .await?;
                schedule.next_ms = self.next_after(now);
                self.set_schedule(&account.id, schedule);
                return Ok(false);
            }
        };
        if !self.portfolio.sealer.is_current(&account.api_key_sealed) {
            store
                .reseal_account_key(&account.id, &self.portfolio.sealer.seal(&key))
                .await?;
        }
        let result = self.portfolio.host.machines(&key).await;
        let changed = match result {
            Ok(records) => {
                self.store_machines(account, &records, now).await?;
                store.set_account_status(&account.id, "ok", Some(now), None).await?;
                schedule.failures = 0;
                schedule.next_ms = self.next_after(now);
                if schedule.earnings_next_ms <= now {
                    self.read_earnings(account, &key, now).await?;
                    schedule.earnings_next_ms = now + self.portfolio.settings.earnings_interval_ms as i64;
                }
                true
            }
            Err(e) => {
                self.failed(account, &e, &mut schedule, now).await?;
                false
            }
        };
        self.set_schedule(&account.id, schedule);
        Ok(changed)
    }

    async fn failed(&self, account: &AccountRow, e: &HostError, s: &mut Schedule, now: i64) -> Result<(), StoreError> {
        let store = &self.portfolio.store;
        let words = e.words();
        match e {
            HostError::Unauthorized(_) => {
                // Never again (the account list read a moment ago may still say otherwise).
                s.next_ms = i64::MAX;
                store
                    .set_account_status(&account.id, "unauthorized", None, Some(&words))
                    .await?;
            }
            HostError::Unavailable { retry_after, .. } => {
                s.failures += 1;
                let backoff = Backoff::from_millis(5_000, self.portfolio.settings.poll_interval_ms * 10);
                let wait = backoff.wait(s.failures - 1).max(retry_after.unwrap_or_default());
                s.next_ms = now + wait.as_millis() as i64;
                store
                    .set_account_status(&account.id, "degraded", None, Some(&words))
                    .await?;
            }
            HostError::Refused { .. } => {
                s.next_ms = self.next_after(now);
                store
                    .set_account_status(&account.id, "degraded", None, Some(&words))
                    .await?;
            }
        }
        tracing::info!(account = %account.id, error = %words, "polling a linked account failed");
        Ok(())
    }

    /// Store the machines an account lists (the hub's id kept for known ones; when a GPU was
    /// last rented tracked), and drop those it no longer lists.
    async fn store_machines(&self, account: &AccountRow, records: &[Value], now: i64) -> Result<(), StoreError> {
        let store = &self.portfolio.store;
        let known: HashMap<String, MachineRow> = store
            .machines(Some(&account.user_id))
            .await?
            .into_iter()
            .filter(|m| m.account_id.as_deref() == Some(account.id.as_str()))
            .filter_map(|m| Some((m.platform_id.clone()?, m)))
            .collect();
        let mut listed = std::collections::HashSet::new();
        for record in records {
            let Some(machine) = from_vast(record, String::new(), &account.id) else {
                continue;
            };
            let platform_id = machine.machine_id.clone().unwrap_or_default();
            let before = known.get(&platform_id);
            let id = before.map_or_else(|| uuid::Uuid::new_v4().to_string(), |m| m.id.clone());
            let machine = super::machine::Machine {
                id: id.clone(),
                ..machine
            };
            let last_rented = if machine.gpus_rented() > 0 {
                Some(now)
            } else {
                before.and_then(|m| m.last_rented_at_ms)
            };
            listed.insert(platform_id.clone());
            store
                .upsert_linked_machine(&MachineRow {
                    id,
                    user_id: account.user_id.clone(),
                    account_id: Some(account.id.clone()),
                    platform_id: Some(platform_id),
                    data: serde_json::to_string(&machine).unwrap_or_default(),
                    last_rented_at_ms: last_rented,
                    first_seen_ms: before.map_or(now, |m| m.first_seen_ms),
                    updated_at_ms: now,
                })
                .await?;
        }
        for (platform_id, m) in &known {
            if !listed.contains(platform_id) {
                store.delete_machine(&account.user_id, &m.id, false).await?;
            }
        }
        Ok(())
    }

    async fn read_earnings(&self, account: &AccountRow, key: &str, now: i64) -> Result<(), StoreError> {
        let today = now / 86_400_000;
        let _permit = self.limiter.until_ready().await;
        match self.portfolio.host.earnings(key, today, 7).await {
            Ok(earnings) => {
                self.portfolio
                    .store
                    .set_account_earnings(&account.id, &earnings.to_string(), now)
                    .await
            }
            Err(e) => {
                tracing::info!(account = %account.id, error = %e.words(), "reading earnings failed; the next hour retries");
                Ok(())
            }
        }
    }
}
