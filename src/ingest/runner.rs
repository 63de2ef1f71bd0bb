//! The market runner: receives every source's poll outcomes, keeps the market state, publishes
//! what changed through the hub, tracks each source's health, and once a minute publishes
//! `market:summary.1m` and writes the aggregates to the database.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::poller::{self, Schedule, SourceEvent};
use super::{Fetched, MarketSource, farm500, http_client, runpod, simulated, vast};
use crate::alerts::delivery::AlertService;
use crate::auth::unix_now_ms;
use crate::config::IngestSettings;
use crate::hub::{Hub, SnapshotProvider};
use crate::market::state::{MarketState, Outgoing, SourceHealth};
use crate::protocol::Raw;
use crate::store::Store;

/// The market state shared by the runner (writer) and subscribe snapshots and REST (readers).
/// A std lock: held for computation only, never across `.await`.
#[derive(Clone, Default)]
pub struct Market(pub Arc<RwLock<MarketState>>);

impl Market {
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, MarketState> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, MarketState> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl SnapshotProvider for Market {
    fn snapshot(&self, channel: &str) -> Option<Raw> {
        let value = self.read().snapshot(channel, unix_now_ms() as i64)?;
        RawValue::from_string(value.to_string()).ok()
    }
}

/// Health bookkeeping of one source.
struct Tracker {
    stale_after_ms: i64,
    health: SourceHealth,
}

impl Tracker {
    fn new(source: &str, stale_after_ms: u64) -> Self {
        Self {
            stale_after_ms: stale_after_ms as i64,
            health: SourceHealth {
                source: source.to_owned(),
                state: "waiting".into(),
                stale: false,
                last_success_ms: None,
                last_error: None,
                last_error_ms: None,
                consecutive_failures: 0,
                offers: 0,
                circuit_open: false,
            },
        }
    }

    fn refresh_stale(&mut self, now_ms: i64) {
        self.health.stale = self
            .health
            .last_success_ms
            .is_some_and(|t| now_ms - t > self.stale_after_ms);
    }
}

/// Start the enabled sources and the runner. The simulated market runs only while no real source
/// is enabled, so simulated and real data never mix.
pub fn spawn(
    hub: Arc<Hub>,
    store: Store,
    alerts: Arc<AlertService>,
    settings: &IngestSettings,
    tracker: &TaskTracker,
    stop: CancellationToken,
) -> Market {
    let market = Market::default();
    hub.set_snapshot_provider(Arc::new(market.clone()));
    let (tx, rx) = mpsc::channel(64);
    let client = http_client();
    let mut trackers = BTreeMap::new();
    let mut start = |source: Box<dyn MarketSource>, schedule: Schedule, stale_after_ms: u64| {
        trackers.insert(source.name(), Tracker::new(source.name(), stale_after_ms));
        tracker.spawn(poller::run(source, schedule, tx.clone(), stop.clone()));
    };
    if settings.farm500.enabled {
        start(
            Box::new(farm500::Farm500Source::new(client.clone(), &settings.farm500)),
            Schedule::from(&settings.farm500),
            settings.farm500.stale_after_ms,
        );
    }
    if settings.vast.enabled {
        start(
            Box::new(vast::VastSource::new(client.clone(), &settings.vast)),
            Schedule::from(&settings.vast),
            settings.vast.stale_after_ms,
        );
    }
    if settings.runpod.enabled {
        start(
            Box::new(runpod::RunpodSource::new(client.clone(), &settings.runpod)),
            Schedule::from(&settings.runpod),
            settings.runpod.stale_after_ms,
        );
    }
    if settings.simulated.enabled && !settings.any_real_source() {
        let interval = Duration::from_millis(settings.simulated.poll_interval_ms);
        let schedule = Schedule {
            interval,
            jitter_ratio: 0.0,
            timeout: interval.max(Duration::from_secs(5)),
            max_retries: 0,
            backoff_initial: interval,
            backoff_max: interval,
            breaker_failures: u32::MAX,
            breaker_cooldown: interval,
        };
        start(
            Box::new(simulated::SimulatedSource::new(settings.simulated.seed)),
            schedule,
            u64::MAX / 4,
        );
    }
    drop(tx);
    let summary_every = Duration::from_secs(settings.summary_interval_s);
    tracker.spawn(run(
        hub,
        store,
        alerts,
        market.clone(),
        rx,
        trackers,
        summary_every,
        stop,
    ));
    market
}

#[allow(clippy::too_many_arguments)]
async fn run(
    hub: Arc<Hub>,
    store: Store,
    alerts: Arc<AlertService>,
    market: Market,
    mut events: mpsc::Receiver<SourceEvent>,
    mut trackers: BTreeMap<&'static str, Tracker>,
    summary_every: Duration,
    stop: CancellationToken,
) {
    // Every source is listed from the start, waiting for its first poll.
    let now = unix_now_ms() as i64;
    for t in trackers.values() {
        let out = market.write().apply_health(t.health.clone(), now);
        publish(&hub, out.into_iter().collect()).await;
    }
    let mut minute = tokio::time::interval_at(tokio::time::Instant::now() + summary_every, summary_every);
    minute.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stale_check = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            event = events.recv() => {
                let Some(event) = event else { return };
                handle(&hub, &market, &mut trackers, event).await;
                // Every market change (offers or a source's health) is an alert evaluation.
                alerts.on_market_change(&market.0).await;
            }
            _ = minute.tick() => {
                let now = unix_now_ms() as i64;
                let (out, rows) = {
                    let mut state = market.write();
                    let out = state.minute_snapshot(now);
                    let label = state.label();
                    let rows: Vec<(String, serde_json::Value)> = state
                        .rows()
                        .into_iter()
                        .map(|(m, a)| (m.to_owned(), serde_json::to_value(a).unwrap_or_default()))
                        .collect();
                    (out, (label, rows))
                };
                publish(&hub, vec![out]).await;
                if let Err(e) = store.insert_market_snapshots(now, &rows.0, &rows.1).await {
                    tracing::warn!(error = %e, "writing market snapshots failed");
                }
            }
            _ = stale_check.tick() => {
                let now = unix_now_ms() as i64;
                let mut out = Vec::new();
                for t in trackers.values_mut() {
                    let was = t.health.stale;
                    t.refresh_stale(now);
                    if t.health.stale != was {
                        out.extend(market.write().apply_health(t.health.clone(), now));
                    }
                }
                publish(&hub, out).await;
            }
        }
    }
}

async fn handle(hub: &Hub, market: &Market, trackers: &mut BTreeMap<&'static str, Tracker>, event: SourceEvent) {
    let mut out: Vec<Outgoing> = Vec::new();
    match event {
        SourceEvent::Polled { source, fetched, at_ms } => {
            let t = trackers.get_mut(source);
            let offers = match fetched {
                Fetched::Offers(offers) => Some(offers),
                Fetched::Unchanged => None,
            };
            if let Some(t) = t {
                t.health.state = "ok".into();
                t.health.last_success_ms = Some(at_ms);
                t.health.consecutive_failures = 0;
                t.health.circuit_open = false;
                if let Some(o) = &offers {
                    t.health.offers = o.len() as u32;
                }
                t.refresh_stale(at_ms);
                out.extend(market.write().apply_health(t.health.clone(), at_ms));
            }
            if let Some(offers) = offers {
                let started = std::time::Instant::now();
                out.extend(market.write().apply_offers(source, offers, at_ms));
                tracing::debug!(
                    source,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "market updated"
                );
            }
        }
        SourceEvent::Failed {
            source,
            error,
            consecutive_failures,
            circuit_open,
            at_ms,
        } => {
            if let Some(t) = trackers.get_mut(source) {
                t.health.state = "degraded".into();
                t.health.last_error = Some(error);
                t.health.last_error_ms = Some(at_ms);
                t.health.consecutive_failures = consecutive_failures;
                t.health.circuit_open = circuit_open;
                t.refresh_stale(at_ms);
                out.extend(market.write().apply_health(t.health.clone(), at_ms));
            }
        }
    }
    publish(hub, out).await;
}

/// Publish in order; a failed publish is logged (clients resync by checksum and seq).
async fn publish(hub: &Hub, out: Vec<Outgoing>) {
    for o in out {
        let Ok(raw) = RawValue::from_string(o.payload.to_string()) else {
            continue;
        };
        if let Err(e) = hub.publish(&o.channel, &raw).await {
            tracing::warn!(channel = %o.channel, error = %e, "market publish failed");
        }
    }
}
