//! The market runner: receives every source's poll outcomes, keeps the market state, publishes
//! what changed through the bus, tracks each source's health, and once a minute publishes
//! `market:summary.1m` and writes the aggregates to the database.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::poller::{self, Schedule, SourceEvent};
use super::{Fetched, MarketSource, farm500, http_client, runpod, simulated, vast};
use crate::alerts::delivery::AlertService;
use crate::backoff::Backoff;
use crate::bus::Bus;
use crate::bus::leader::Leadership;
use crate::bus::snapshots::SnapshotReplica;
use crate::channels::{MARKET_SUMMARY, SOURCES_STATUS};
use crate::clock::unix_now_ms;
use crate::config::{HttpSourceSettings, IngestSettings};
use crate::market::Market;
use crate::market::state::{MarketState, Outgoing, SourceHealth, SourceState};
use crate::store::Store;
use crate::store::queue::WriteQueue;
use crate::tasks::Tasks;
use crate::telemetry::Metrics;

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
                state: SourceState::Waiting,
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

/// What the runner needs to know of the other nodes: whether this one leads, and where the
/// leader shares its snapshots (`None` with one node).
#[derive(Clone)]
pub struct Role {
    pub leadership: Leadership,
    pub replica: Option<Arc<SnapshotReplica>>,
}

impl Role {
    pub fn single_node() -> Self {
        Self {
            leadership: Leadership::single_node(),
            replica: None,
        }
    }
}

/// What the runner works with, built by `startup`.
pub struct RunnerParts {
    /// The market it keeps (its one writer).
    pub market: Market,
    /// Where what changed is published.
    pub bus: Arc<dyn Bus>,
    pub metrics: Arc<Metrics>,
    /// Where the minute aggregates are written.
    pub store: Store,
    /// The minute snapshots are written from here, off the market loop.
    pub writes: WriteQueue,
    /// Evaluated on every market change.
    pub alerts: Arc<AlertService>,
    pub role: Role,
}

/// A source with its schedule and how long its data stays fresh.
struct Polled {
    source: Box<dyn MarketSource>,
    schedule: Schedule,
    stale_after_ms: u64,
}

/// The sources the settings enable. The simulated market runs only while no real source is
/// enabled, so simulated and real data never mix.
fn enabled_sources(settings: &IngestSettings) -> Vec<Polled> {
    let client = http_client();
    let mut sources = Vec::new();
    let mut add = |source: Box<dyn MarketSource>, settings: &HttpSourceSettings| {
        sources.push(Polled {
            source,
            schedule: Schedule::from(settings),
            stale_after_ms: settings.stale_after_ms,
        })
    };
    if settings.farm500.enabled {
        add(
            Box::new(farm500::Farm500Source::new(client.clone(), &settings.farm500)),
            &settings.farm500,
        );
    }
    if settings.vast.enabled {
        add(
            Box::new(vast::VastSource::new(client.clone(), &settings.vast)),
            &settings.vast,
        );
    }
    if settings.runpod.enabled {
        add(
            Box::new(runpod::RunpodSource::new(client.clone(), &settings.runpod)),
            &settings.runpod,
        );
    }
    if settings.simulated.enabled && !settings.any_real_source() {
        let interval = Duration::from_millis(settings.simulated.poll_interval_ms);
        sources.push(Polled {
            source: Box::new(simulated::SimulatedSource::new(settings.simulated.seed)),
            schedule: Schedule {
                interval,
                jitter_ratio: 0.0,
                timeout: interval.max(Duration::from_secs(5)),
                max_retries: 0,
                backoff: Backoff::new(interval, interval),
                breaker_failures: u32::MAX,
                breaker_cooldown: interval,
            },
            stale_after_ms: u64::MAX / 4,
        });
    }
    sources
}

/// Start a poller per enabled source (`poller:<source>`) and the runner (`market-runner`), as
/// critical tasks. Sources are polled only while this node is the leader.
pub fn spawn(parts: RunnerParts, settings: &IngestSettings, tasks: &Tasks) {
    let (tx, rx) = mpsc::channel(64);
    let mut trackers = BTreeMap::new();
    for polled in enabled_sources(settings) {
        let name = polled.source.name();
        trackers.insert(name, Tracker::new(name, polled.stale_after_ms));
        tasks.spawn_critical(
            format!("poller:{name}"),
            poller::run(
                polled.source,
                polled.schedule,
                tx.clone(),
                parts.role.leadership.clone(),
                tasks.stop_token().clone(),
            ),
        );
    }
    drop(tx);
    let runner = Runner {
        market: parts.market,
        bus: parts.bus,
        metrics: parts.metrics,
        store: parts.store,
        writes: parts.writes,
        alerts: parts.alerts,
        role: parts.role,
        trackers,
        was_leader: false,
    };
    let summary_every = Duration::from_secs(settings.summary_interval_s);
    tasks.spawn_critical(
        "market-runner",
        run(runner, rx, summary_every, tasks.stop_token().clone()),
    );
}

struct Runner {
    market: Market,
    bus: Arc<dyn Bus>,
    metrics: Arc<Metrics>,
    store: Store,
    writes: WriteQueue,
    alerts: Arc<AlertService>,
    role: Role,
    trackers: BTreeMap<&'static str, Tracker>,
    /// Whether this node led at the last [`Runner::sync_role`].
    was_leader: bool,
}

impl Runner {
    fn leads(&self) -> bool {
        self.role.leadership.is_leader()
    }

    /// Follow a change of role. A node that becomes the leader starts a fresh market whose `seq`
    /// continue above the last leader's (clients see a gap and resync, never an old number again).
    async fn sync_role(&mut self) {
        let leads = self.leads();
        if leads && !self.was_leader && self.role.replica.is_some() {
            *self.market.write() = MarketState::with_seq_base(unix_now_ms());
            let now = unix_now_ms() as i64;
            let mut out = Vec::new();
            for t in self.trackers.values_mut() {
                t.health = Tracker::new(t.health.source.as_str(), t.stale_after_ms as u64).health;
                out.extend(self.market.write().apply_health(t.health.clone(), now));
            }
            self.publish(out).await;
            // The previous leader evaluated the rules: take its crossing state as it stored it,
            // so no crossing fires twice or is missed across the takeover.
            if let Err(e) = self.alerts.reload_all(false).await {
                tracing::warn!(error = %e, "reloading alert rules on taking over failed");
            }
        }
        if !leads && let Some(replica) = &self.role.replica {
            let summary = replica.load(MARKET_SUMMARY).await;
            let status = replica.load(SOURCES_STATUS).await;
            let parse = |s: Option<String>| s.and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default();
            let (summary, status): (serde_json::Value, serde_json::Value) = (parse(summary), parse(status));
            let mut state = self.market.write();
            if state.has_own_data() {
                *state = MarketState::new();
            }
            state.mirror(&summary, &status);
        }
        self.was_leader = leads;
    }

    /// Publish in order, each channel's snapshot shared first when other nodes read it; only the
    /// leader publishes. A failed publish is logged (clients resync by checksum and seq).
    async fn publish(&self, out: Vec<Outgoing>) {
        if out.is_empty() || !self.leads() {
            return;
        }
        let started = std::time::Instant::now();
        if let Some(replica) = &self.role.replica {
            let now = unix_now_ms() as i64;
            // CPU work (the whole book for `offers:all`): off the async workers.
            let market = self.market.clone();
            let channels: Vec<String> = {
                let mut seen = std::collections::HashSet::new();
                out.iter()
                    .filter(|o| seen.insert(o.channel.as_str()))
                    .map(|o| o.channel.clone())
                    .collect()
            };
            let snapshots = tokio::task::spawn_blocking(move || {
                let state = market.read();
                channels
                    .into_iter()
                    .filter_map(|c| {
                        let json = state.snapshot_text(&c, now)?;
                        Some((c, json))
                    })
                    .collect::<Vec<(String, String)>>()
            })
            .await
            .unwrap_or_default();
            let computed = started.elapsed();
            if let Err(e) = replica.store(snapshots).await {
                tracing::warn!(error = %e, "sharing market snapshots failed");
            }
            tracing::debug!(
                compute_ms = computed.as_millis() as u64,
                total_ms = started.elapsed().as_millis() as u64,
                "market snapshots shared"
            );
        }
        let count = out.len();
        for o in out {
            let Ok(raw) = RawValue::from_string(o.payload) else {
                continue;
            };
            if let Err(e) = self.bus.publish_json(&o.channel, &raw).await {
                tracing::warn!(channel = %o.channel, error = %e, "market publish failed");
            }
        }
        tracing::debug!(
            count,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "market published"
        );
    }
}

async fn run(mut r: Runner, mut events: mpsc::Receiver<SourceEvent>, summary_every: Duration, stop: CancellationToken) {
    r.sync_role().await;
    // Every source is listed from the start, waiting for its first poll.
    let now = unix_now_ms() as i64;
    let mut out = Vec::new();
    for t in r.trackers.values() {
        out.extend(r.market.write().apply_health(t.health.clone(), now));
    }
    r.publish(out).await;
    let mut minute = tokio::time::interval_at(tokio::time::Instant::now() + summary_every, summary_every);
    minute.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // With no source enabled there is nothing to receive, but followers still mirror the leader.
    let mut sources = true;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            event = events.recv(), if sources => match event {
                Some(event) => r.on_event(event).await,
                None => sources = false,
            },
            _ = minute.tick(), if r.was_leader => r.minute_snapshot().await,
            _ = tick.tick() => r.refresh_staleness().await,
        }
    }
}

impl Runner {
    /// A poll's outcome: merged into the market, published, and evaluated by the alerts.
    async fn on_event(&mut self, event: SourceEvent) {
        self.sync_role().await;
        if !self.was_leader {
            return; // polled before this node stepped down: not ours to publish
        }
        match &event {
            SourceEvent::Polled { source, .. } => self.metrics.count_poll(source, true),
            SourceEvent::Failed { source, .. } => self.metrics.count_poll(source, false),
        }
        // CPU work (merging a poll into the book): off the async workers.
        let market = self.market.clone();
        let mut trackers = std::mem::take(&mut self.trackers);
        let (out, trackers) = tokio::task::spawn_blocking(move || {
            let out = handle(&market, &mut trackers, event);
            (out, trackers)
        })
        .await
        .expect("market update task");
        self.trackers = trackers;
        self.publish(out).await;
        // Every market change (offers or a source's health) is an alert evaluation.
        self.alerts.on_market_change(&self.market);
    }

    /// `market:summary.1m`, and the aggregates written to the database.
    async fn minute_snapshot(&mut self) {
        let now = unix_now_ms() as i64;
        let (out, (label, rows)) = {
            let mut state = self.market.write();
            let out = state.minute_snapshot(now);
            let label = state.label();
            let rows: Vec<(String, serde_json::Value)> = state
                .rows()
                .into_iter()
                .map(|(m, a)| (m.to_owned(), serde_json::to_value(a).unwrap_or_default()))
                .collect();
            (out, (label, rows))
        };
        self.publish(vec![out]).await;
        let (store, rows) = (self.store.clone(), Arc::new(rows));
        self.writes.push(
            "market snapshots",
            Box::new(move || {
                let (store, label, rows) = (store.clone(), label.clone(), rows.clone());
                Box::pin(async move { store.insert_market_snapshots(now, &label, &rows).await })
            }),
        );
    }

    /// Once a second: follow the role, and publish sources that went stale or fresh.
    async fn refresh_staleness(&mut self) {
        self.sync_role().await;
        if !self.was_leader {
            return;
        }
        let now = unix_now_ms() as i64;
        let mut out = Vec::new();
        for t in self.trackers.values_mut() {
            let was = t.health.stale;
            t.refresh_stale(now);
            if t.health.stale != was {
                out.extend(self.market.write().apply_health(t.health.clone(), now));
            }
        }
        self.publish(out).await;
    }
}

fn handle(market: &Market, trackers: &mut BTreeMap<&'static str, Tracker>, event: SourceEvent) -> Vec<Outgoing> {
    match event {
        SourceEvent::Polled { source, fetched, at_ms } => polled(market, trackers, source, fetched, at_ms),
        SourceEvent::Failed {
            source,
            error,
            consecutive_failures,
            circuit_open,
            at_ms,
        } => {
            let mut out = Vec::new();
            if let Some(t) = trackers.get_mut(source) {
                t.health.state = SourceState::Degraded;
                t.health.last_error = Some(error);
                t.health.last_error_ms = Some(at_ms);
                t.health.consecutive_failures = consecutive_failures;
                t.health.circuit_open = circuit_open;
                t.refresh_stale(at_ms);
                out.extend(market.write().apply_health(t.health.clone(), at_ms));
            }
            out
        }
    }
}

/// A poll that answered: the source's health, then its offers (a 304 has none), each change
/// saying when the source took the data.
fn polled(
    market: &Market,
    trackers: &mut BTreeMap<&'static str, Tracker>,
    source: &'static str,
    fetched: Fetched,
    at_ms: i64,
) -> Vec<Outgoing> {
    let mut out: Vec<Outgoing> = Vec::new();
    let offers = match fetched {
        Fetched::Offers { offers, source_ts_ms } => Some((offers, source_ts_ms)),
        Fetched::Unchanged => None,
    };
    if let Some(t) = trackers.get_mut(source) {
        t.health.state = SourceState::Ok;
        t.health.last_success_ms = Some(at_ms);
        t.health.consecutive_failures = 0;
        t.health.circuit_open = false;
        if let Some((o, _)) = &offers {
            t.health.offers = o.len() as u32;
        }
        t.refresh_stale(at_ms);
        let mut m = market.write();
        // In the same write (one market version): the health change this poll makes says it too.
        if let Some((_, source_ts_ms)) = &offers {
            m.note_source_ts(*source_ts_ms);
        }
        out.extend(m.apply_health(t.health.clone(), at_ms));
    }
    if let Some((offers, source_ts_ms)) = offers {
        let started = std::time::Instant::now();
        out.extend(market.write().apply_poll(source, offers, at_ms, source_ts_ms));
        tracing::debug!(
            source,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "market updated"
        );
    }
    out
}
