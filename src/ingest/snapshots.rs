//! Subscribe snapshots of the market channels, for the hub: this node's own market while it leads
//! and has polled, otherwise the leader's, shared through the bus ([`SnapshotReplica`]).
//!
//! A market channel's snapshot is built once per market version and shared: every subscriber of
//! that version gets the same allocation, and a reconnect storm builds each channel once
//! (`offers:all` at 100k offers is ~35 MB; built per subscribe, a burst of subscribes would hold
//! one copy each). Offer snapshots, the large ones, are built on
//! the blocking pool, never on a runtime worker. A follower keeps what it read from the leader for
//! [`REPLICA_FRESH`], one read at a time per channel: a storm of subscribes reads each channel
//! once a second, not once per subscriber. A subscriber served a copy older than a delta it then
//! receives sees the gap (`prev_seq`) and resubscribes, as after any missed delta.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dashmap::DashMap;
use serde_json::value::RawValue;
use tokio::sync::Mutex;

use crate::bus::leader::Leadership;
use crate::bus::snapshots::SnapshotReplica;
use crate::channels::ChannelKind;
use crate::clock::unix_now_ms;
use crate::hub::SnapshotProvider;
use crate::market::Market;
use crate::market::models::canonical_slug;
use crate::portfolio::Portfolio;
use crate::telemetry::Metrics;

/// How long a follower serves a snapshot read from the leader before reading it again.
pub const REPLICA_FRESH: Duration = Duration::from_secs(1);

/// Most channels with a cached snapshot; past it the cache starts over (names come from clients).
const MAX_CACHED: usize = 4096;

/// What a channel's slot holds: the snapshot and what it is valid for.
enum Cached {
    /// Built from this node's market at this version.
    Local(u64, Arc<RawValue>),
    /// Read from the leader at this time.
    Replica(Instant, Arc<RawValue>),
}

/// Subscribe snapshots of the market channels: this node's own market while it leads and has
/// polled; otherwise the leader's, from Redis.
pub struct MarketSnapshots {
    pub market: Market,
    pub leadership: Leadership,
    pub replica: Option<Arc<SnapshotReplica>>,
    /// Any well-formed model name may exist (`api.allow_market_channels`: the server API may
    /// create it by publishing).
    open_names: bool,
    /// One slot per channel; its lock makes concurrent subscribers wait for one build.
    cache: DashMap<String, Arc<Mutex<Option<Cached>>>>,
    /// The users' `portfolio:#<uid>` snapshots.
    portfolio: Option<Arc<Portfolio>>,
    /// Where builds and replica reads are counted.
    metrics: Arc<Metrics>,
}

impl MarketSnapshots {
    pub fn new(
        market: Market,
        leadership: Leadership,
        replica: Option<Arc<SnapshotReplica>>,
        open_names: bool,
    ) -> Self {
        Self {
            market,
            leadership,
            replica,
            open_names,
            cache: DashMap::new(),
            portfolio: None,
            metrics: Arc::default(),
        }
    }

    /// Count builds and replica reads in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Serve `portfolio:#<uid>` snapshots from `portfolio`.
    pub fn with_portfolio(mut self, portfolio: Arc<Portfolio>) -> Self {
        self.portfolio = Some(portfolio);
        self
    }

    fn slot(&self, channel: &str) -> Arc<Mutex<Option<Cached>>> {
        if let Some(slot) = self.cache.get(channel) {
            return slot.clone();
        }
        if self.cache.len() >= MAX_CACHED {
            self.cache.clear();
        }
        self.cache.entry(channel.to_owned()).or_default().clone()
    }

    /// This node's snapshot of `channel` at the market's current version, built once per version:
    /// a reconnect storm resubscribing thousands of clients builds each channel once.
    async fn local(&self, channel: &str) -> Option<Arc<RawValue>> {
        if !cached(channel) {
            return self.build(channel).await.map(|(_, snapshot)| snapshot);
        }
        let slot = self.slot(channel);
        let mut cached = slot.lock().await;
        if let Some(Cached::Local(version, snapshot)) = &*cached
            && *version == self.market.version()
        {
            return Some(snapshot.clone());
        }
        let (version, snapshot) = self.build(channel).await?;
        *cached = Some(Cached::Local(version, snapshot.clone()));
        Some(snapshot)
    }

    /// Build the snapshot with the version it shows; offer snapshots on the blocking pool.
    async fn build(&self, channel: &str) -> Option<(u64, Arc<RawValue>)> {
        let market = self.market.clone();
        let channel_owned = channel.to_owned();
        let build = move || {
            let state = market.read();
            let version = market.version();
            let text = state.snapshot_text(&channel_owned, unix_now_ms() as i64)?;
            let raw: Arc<RawValue> = RawValue::from_string(text).ok()?.into();
            Some((version, raw))
        };
        let built = if large(channel) {
            tokio::task::spawn_blocking(build).await.ok()?
        } else {
            build()
        };
        if built.is_some() {
            self.metrics.snapshots_built_total.fetch_add(1, Ordering::Relaxed);
        }
        built
    }

    /// The leader's snapshot, read at most every [`REPLICA_FRESH`]; `None` when it has none.
    async fn replicated(&self, replica: &SnapshotReplica, channel: &str) -> Option<Arc<RawValue>> {
        if !cached(channel) {
            self.metrics
                .snapshot_replica_reads_total
                .fetch_add(1, Ordering::Relaxed);
            return RawValue::from_string(replica.load(channel).await?).ok().map(Arc::from);
        }
        let slot = self.slot(channel);
        let mut cached = slot.lock().await;
        if let Some(Cached::Replica(at, snapshot)) = &*cached
            && at.elapsed() < REPLICA_FRESH
        {
            return Some(snapshot.clone());
        }
        self.metrics
            .snapshot_replica_reads_total
            .fetch_add(1, Ordering::Relaxed);
        let json = replica.load(channel).await?;
        let snapshot: Arc<RawValue> = RawValue::from_string(json).ok()?.into();
        *cached = Some(Cached::Replica(Instant::now(), snapshot.clone()));
        Some(snapshot)
    }
}

/// The market channels, whose snapshots are cached per market version. The users' own channels
/// (alerts, advisor) have none; caching their names would only churn the cache.
fn cached(channel: &str) -> bool {
    matches!(
        ChannelKind::parse(channel),
        Some(
            ChannelKind::MarketSummary
                | ChannelKind::MarketSummary1m
                | ChannelKind::Gpu(_)
                | ChannelKind::Offers(_)
                | ChannelKind::OffersAll
                | ChannelKind::SourcesStatus
        )
    )
}

/// The offer channels: their snapshots are the large ones (every offer of a model, or of the
/// market), built off the runtime.
fn large(channel: &str) -> bool {
    matches!(
        ChannelKind::parse(channel),
        Some(ChannelKind::Offers(_) | ChannelKind::OffersAll)
    )
}

#[async_trait]
impl SnapshotProvider for MarketSnapshots {
    /// A model channel exists when the market has held the model since start; before it held
    /// any, when the name is a canonical slug.
    fn channel_exists(&self, channel: &str) -> bool {
        let model = match ChannelKind::parse(channel) {
            Some(ChannelKind::Gpu(m) | ChannelKind::Offers(m)) => m,
            _ => return true,
        };
        if self.open_names {
            return true;
        }
        match self.market.read().has_seen(model) {
            Some(seen) => seen,
            None => canonical_slug(model).as_deref() == Some(model),
        }
    }

    async fn snapshot(&self, channel: &str) -> Option<Arc<RawValue>> {
        if let (Some(ChannelKind::Portfolio(user)), Some(portfolio)) = (ChannelKind::parse(channel), &self.portfolio) {
            let snapshot = portfolio.current(user).await;
            return RawValue::from_string(snapshot.to_string()).ok().map(Arc::from);
        }
        let Some(replica) = &self.replica else {
            return self.local(channel).await;
        };
        let own = self.leadership.is_leader() && self.market.read().has_own_data();
        if own {
            return self.local(channel).await;
        }
        // Not a market channel: nothing to read.
        let fallback = self.local(channel).await?;
        Some(self.replicated(replica, channel).await.unwrap_or(fallback))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::simulated::SimulatedMarket;

    #[tokio::test]
    async fn subscribers_of_one_version_share_one_snapshot_and_a_write_makes_a_new_one() {
        let market = Market::default();
        let mut sim = SimulatedMarket::new(7);
        market.write().apply_offers("simulated", sim.offers(0), 0);
        let metrics = Arc::new(Metrics::default());
        let snapshots =
            MarketSnapshots::new(market.clone(), Leadership::single_node(), None, false).with_metrics(metrics.clone());
        assert!(snapshots.channel_exists("gpu:rtx-4090") && snapshots.channel_exists("offers:all"));
        assert!(!snapshots.channel_exists("gpu:x1") && !snapshots.channel_exists("offers:made-up-9"));
        assert!(MarketSnapshots::new(market.clone(), Leadership::single_node(), None, true).channel_exists("gpu:x1"));
        let channels = ["offers:all", "offers:rtx-4090", "market:summary", "gpu:rtx-4090"];
        for channel in channels {
            let a = snapshots.snapshot(channel).await.unwrap();
            let b = snapshots.snapshot(channel).await.unwrap();
            assert!(Arc::ptr_eq(&a, &b), "{channel}: one allocation for one version");
            sim.step();
            market.write().apply_offers("simulated", sim.offers(1), 1);
            let c = snapshots.snapshot(channel).await.unwrap();
            assert!(!Arc::ptr_eq(&a, &c), "{channel}: rebuilt after a write");
            let fresh = market.read().snapshot_text(channel, 0).unwrap();
            let (c, fresh): (serde_json::Value, serde_json::Value) = (
                serde_json::from_str(c.get()).unwrap(),
                serde_json::from_str(&fresh).unwrap(),
            );
            assert_eq!(c["seq"], fresh["seq"], "{channel}");
            assert_eq!(c["checksum"], fresh["checksum"], "{channel}");
        }
        // Per channel: one build, then one after the write; none for the repeat.
        assert_eq!(
            metrics.snapshots_built_total.load(Ordering::Relaxed),
            2 * channels.len() as u64
        );
        assert!(
            snapshots.snapshot("alerts:#7").await.is_none(),
            "a user's channel has no market snapshot"
        );
        assert!(!snapshots.cache.contains_key("alerts:#7"), "nor a cache slot");
    }
}
