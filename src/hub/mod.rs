//! The hub: every connection of this node, who is subscribed to what, and the fan-out of bus
//! publications to their queues.
//!
//! One bus subscription per channel per node, however many local subscribers; each publication is
//! serialised once and the same bytes are queued to every subscriber. Never parses market data.

pub mod client;
pub mod outbox;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::num::NonZeroU32;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use dashmap::DashMap;
use governor::clock::DefaultClock;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use crate::auth::TokenVerifier;
use crate::bus::control::Control;
use crate::bus::leader::Leadership;
use crate::bus::users::UserState;
use crate::bus::{Bus, BusError, Publication, PublicationHandler, StreamPosition};
use crate::channels::ChannelKind;
use crate::config::Settings;
use crate::protocol::{self, Disconnect, ProtoError, Raw};
use crate::telemetry::Metrics;
use crate::tier::Tier;

pub use client::Client;
pub use outbox::{Outbox, PushError};

/// Who is calling an RPC method.
#[derive(Debug, Clone)]
pub struct RpcContext {
    pub client: String,
    pub user: String,
    pub tier: Tier,
}

/// A server method clients call with the `rpc` command.
#[async_trait]
pub trait RpcHandler: Send + Sync + 'static {
    async fn call(&self, ctx: &RpcContext, data: Option<&RawValue>) -> Result<Option<Raw>, ProtoError>;
}

/// Where subscribe snapshots come from (the market, for its channels).
#[async_trait]
pub trait SnapshotProvider: Send + Sync + 'static {
    /// The channel's snapshot, shared: every subscriber of the same market version may get the
    /// same allocation.
    async fn snapshot(&self, channel: &str) -> Option<Arc<RawValue>>;

    /// Whether a market channel's name can exist (its model is one the market knows); a name
    /// that cannot is refused with 102, so clients cannot make the hub keep state for names
    /// of their invention.
    fn channel_exists(&self, _channel: &str) -> bool {
        true
    }
}

/// No channel has a snapshot: subscribe replies carry no `data` (a hub without a market).
pub struct NoSnapshots;

#[async_trait]
impl SnapshotProvider for NoSnapshots {
    async fn snapshot(&self, _channel: &str) -> Option<Arc<RawValue>> {
        None
    }
}

/// A subscription of one connection to one channel, as the fan-out sees it.
pub struct Subscriber {
    pub outbox: Arc<Outbox>,
    /// While the subscribe reply is being prepared, publications are held back here, then sent
    /// after the reply, skipping what the reply already covers.
    sync: Mutex<SyncState>,
}

enum SyncState {
    Syncing(Vec<(u64, Bytes)>),
    /// Live: deliver publications with an offset above this one.
    Live(u64),
}

impl Subscriber {
    pub fn new(outbox: Arc<Outbox>) -> Arc<Self> {
        Arc::new(Self {
            outbox,
            sync: Mutex::new(SyncState::Syncing(Vec::new())),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SyncState> {
        self.sync.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue one publication push; `Err` when the connection's queue is over its bound.
    fn deliver(&self, offset: u64, push: &Bytes) -> Result<bool, PushError> {
        let mut state = self.lock();
        match &mut *state {
            SyncState::Syncing(held) => {
                held.push((offset, push.clone()));
                Ok(false)
            }
            SyncState::Live(after) if offset <= *after => Ok(false),
            SyncState::Live(after) => {
                *after = offset;
                self.outbox.push(push.clone()).map(|_| true)
            }
        }
    }

    /// Queue `reply`, then what was held back past the positions it covers, and go live. Holding
    /// every subscriber's lock while queueing keeps the reply ahead of any later publication.
    pub fn go_live(outbox: &Outbox, reply: Bytes, subs: &[(&Subscriber, u64)]) {
        let mut guards: Vec<_> = subs.iter().map(|(s, after)| (s.lock(), *after)).collect();
        let _ = outbox.push_reply(reply);
        for (guard, after) in guards.iter_mut() {
            let mut top = *after;
            if let SyncState::Syncing(held) = &mut **guard {
                for (offset, push) in held.drain(..) {
                    if offset > top {
                        top = offset;
                        let _ = outbox.push(push);
                    }
                }
            }
            **guard = SyncState::Live(top);
        }
    }
}

struct ChannelSubscribers {
    list: RwLock<Vec<Arc<Subscriber>>>,
}

/// A connection as the registry knows it.
struct SessionEntry {
    user: String,
    /// The connection token's id, for revocation.
    jti: Option<String>,
    outbox: Arc<Outbox>,
}

const SUB_LOCK_STRIPES: usize = 64;

/// The RPC methods clients may call, by name.
pub type RpcTable = HashMap<&'static str, Arc<dyn RpcHandler>>;

/// What a hub is built from; `startup` chooses each part.
pub struct HubParts {
    pub settings: Arc<Settings>,
    /// Where every publication goes and comes from.
    pub bus: Arc<dyn Bus>,
    /// Checks connection and subscription tokens.
    pub verifier: Arc<TokenVerifier>,
    pub metrics: Arc<Metrics>,
    /// Connection counts and revoked tokens shared between nodes.
    pub users: Arc<dyn UserState>,
    /// Where subscribe replies get their channel snapshot (`data`) from.
    pub snapshots: Arc<dyn SnapshotProvider>,
    /// RPC methods besides the hub's own `session.info`.
    pub rpc: RpcTable,
    /// Whether this node leads (reported by health and `info`).
    pub leadership: Leadership,
    /// Cancelled at shutdown: every connection closes with 3001.
    pub shutdown: CancellationToken,
}

pub struct Hub {
    pub settings: Arc<Settings>,
    pub bus: Arc<dyn Bus>,
    pub metrics: Arc<Metrics>,
    pub verifier: Arc<TokenVerifier>,
    channels: DashMap<Arc<str>, Arc<ChannelSubscribers>>,
    /// Serialise the 0→1 and 1→0 transitions of a channel's local subscribers with the bus
    /// subscribe/unsubscribe that goes with them (async, so a tokio mutex), striped by channel.
    sub_locks: Vec<tokio::sync::Mutex<()>>,
    sessions: DashMap<String, SessionEntry>,
    user_connections: DashMap<String, u32>,
    user_limiters: Vec<DefaultKeyedRateLimiter<String>>,
    snapshots: Arc<dyn SnapshotProvider>,
    rpc: RpcTable,
    shutdown: CancellationToken,
    hasher: std::collections::hash_map::RandomState,
    started: Instant,
    node_id: String,
    leadership: Leadership,
    users: Arc<dyn UserState>,
    /// The clock of every connection's command rate limiter. Made once: making one runs CPUID,
    /// which in a virtual machine traps to the hypervisor (a cost per connect in a storm).
    limiter_clock: DefaultClock,
}

impl Hub {
    /// A hub with every part in place, attached to its bus. `node_id` is this node's id (new at
    /// each start).
    pub fn new(parts: HubParts, node_id: String) -> Arc<Self> {
        let settings = parts.settings;
        let user_limiters = Tier::ALL
            .iter()
            .map(|t| {
                let tier = settings.tier(*t);
                RateLimiter::keyed(quota(
                    tier.user_commands_per_second,
                    tier.command_burst.max(tier.user_commands_per_second),
                ))
            })
            .collect();
        let mut rpc = parts.rpc;
        rpc.insert("session.info", Arc::new(SessionInfo));
        let hub = Arc::new(Self {
            settings,
            bus: parts.bus.clone(),
            metrics: parts.metrics,
            verifier: parts.verifier,
            channels: DashMap::new(),
            sub_locks: (0..SUB_LOCK_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            sessions: DashMap::new(),
            user_connections: DashMap::new(),
            user_limiters,
            snapshots: parts.snapshots,
            rpc,
            shutdown: parts.shutdown,
            hasher: Default::default(),
            started: Instant::now(),
            node_id,
            leadership: parts.leadership,
            users: parts.users,
            limiter_clock: DefaultClock::default(),
        });
        parts.bus.attach(Arc::new(FanOut(Arc::downgrade(&hub))));
        hub
    }

    /// A command rate limiter for one connection.
    pub fn connection_limiter(&self, quota: Quota) -> DefaultDirectRateLimiter {
        RateLimiter::direct_with_clock(quota, self.limiter_clock.clone())
    }

    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    pub fn rpc_handler(&self, method: &str) -> Option<Arc<dyn RpcHandler>> {
        self.rpc.get(method).cloned()
    }

    /// The current snapshot of a channel, for its subscribe reply.
    pub fn channel_exists(&self, channel: &str) -> bool {
        self.snapshots.channel_exists(channel)
    }

    pub async fn snapshot(&self, channel: &str) -> Option<Arc<RawValue>> {
        self.snapshots.snapshot(channel).await
    }

    /// Publish compact JSON to a channel through the bus (the one path to clients).
    pub async fn publish(&self, channel: &str, data: &RawValue) -> Result<StreamPosition, BusError> {
        self.bus.publish_json(channel, data).await
    }

    /// Whether a channel name is one the hub serves.
    pub fn known_channel(channel: &str) -> bool {
        ChannelKind::parse(channel).is_some()
    }

    fn sub_lock(&self, channel: &str) -> &tokio::sync::Mutex<()> {
        &self.sub_locks[self.hasher.hash_one(channel) as usize % SUB_LOCK_STRIPES]
    }

    /// Add a local subscriber; subscribes the node on the bus when it is the channel's first.
    pub async fn add_subscriber(&self, channel: &str, sub: Arc<Subscriber>) -> Result<(), BusError> {
        let _guard = self.sub_lock(channel).lock().await;
        let entry = self
            .channels
            .entry(Arc::from(channel))
            .or_insert_with(|| {
                Arc::new(ChannelSubscribers {
                    list: RwLock::new(Vec::new()),
                })
            })
            .clone();
        let first = {
            let mut list = entry.list.write().unwrap_or_else(|e| e.into_inner());
            list.push(sub.clone());
            list.len() == 1
        };
        if first {
            if let Err(e) = self.bus.subscribe(channel).await {
                self.remove_locked(channel, &sub);
                return Err(e);
            }
            self.metrics.bus_subscriptions.fetch_add(1, Ordering::Relaxed);
        }
        self.metrics.subscriptions.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Remove a local subscriber; unsubscribes the node on the bus when it was the last.
    pub async fn remove_subscriber(&self, channel: &str, sub: &Arc<Subscriber>) {
        let _guard = self.sub_lock(channel).lock().await;
        if self.remove_locked(channel, sub) {
            self.metrics.subscriptions.fetch_sub(1, Ordering::Relaxed);
            if !self.channels.contains_key(channel) {
                if let Err(e) = self.bus.unsubscribe(channel).await {
                    tracing::warn!(channel, error = %e, "bus unsubscribe failed");
                }
                self.metrics.bus_subscriptions.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Remove under the channel's sub lock; drops the channel entry when empty. True if found.
    fn remove_locked(&self, channel: &str, sub: &Arc<Subscriber>) -> bool {
        let Some(entry) = self.channels.get(channel).map(|e| e.clone()) else {
            return false;
        };
        let (found, empty) = {
            let mut list = entry.list.write().unwrap_or_else(|e| e.into_inner());
            let before = list.len();
            list.retain(|s| !Arc::ptr_eq(s, sub));
            (list.len() != before, list.is_empty())
        };
        if empty {
            self.channels.remove(channel);
        }
        found
    }

    /// Fan a publication out to every local subscriber of its channel.
    pub fn fan_out(&self, channel: &str, publication: &Publication) {
        let Some(entry) = self.channels.get(channel).map(|e| e.clone()) else {
            return;
        };
        let Ok(data) = std::str::from_utf8(&publication.data) else {
            tracing::error!(channel, "publication is not UTF-8; dropped");
            return;
        };
        // Serialised once; every queue holds a reference to the same bytes.
        let push = Bytes::from(protocol::encode_publication_push(channel, publication.offset, data));
        let mut delivered = 0u64;
        let mut dropped = 0u64;
        {
            let list = entry.list.read().unwrap_or_else(|e| e.into_inner());
            for sub in list.iter() {
                match sub.deliver(publication.offset, &push) {
                    Ok(true) => delivered += 1,
                    Ok(false) => {}
                    // The close is counted where it happens (`gpuscout_slow_disconnects_total`).
                    Err(PushError::Overflow | PushError::Closed) => dropped += 1,
                }
            }
        }
        self.metrics.publications_total.fetch_add(1, Ordering::Relaxed);
        self.metrics.deliveries_total.fetch_add(delivered, Ordering::Relaxed);
        if dropped > 0 {
            self.metrics.queue_drops_total.fetch_add(dropped, Ordering::Relaxed);
        }
    }

    /// The channel's position was lost on the bus: close its local subscribers' connections with
    /// 3010 (insufficient state); they reconnect and recover, or resync on the new epoch.
    pub fn reset_channel(&self, channel: &str) -> usize {
        let Some(entry) = self.channels.get(channel).map(|e| e.clone()) else {
            return 0;
        };
        let list = entry.list.read().unwrap_or_else(|e| e.into_inner());
        for sub in list.iter() {
            sub.outbox.close(Disconnect::INSUFFICIENT_STATE);
        }
        list.len()
    }

    /// Where users' connection counts and revoked tokens are shared between nodes.
    pub fn users(&self) -> &Arc<dyn UserState> {
        &self.users
    }

    /// Close this node's connections that use a revoked token, until shutdown (a critical task:
    /// `startup` runs it).
    pub fn follow_revocations(self: &Arc<Self>) -> impl Future<Output = ()> + Send + 'static {
        let hub = Arc::downgrade(self);
        self.users
            .control()
            .follow("hub", self.shutdown.clone(), move |message| {
                if let Control::Revoke { jti } = message
                    && let Some(hub) = hub.upgrade()
                {
                    hub.disconnect_token(&jti);
                }
            })
    }

    /// Close this node's connections made with the token `jti` (revoked).
    pub fn disconnect_token(&self, jti: &str) -> usize {
        let mut n = 0;
        for entry in self.sessions.iter() {
            if entry.jti.as_deref() == Some(jti) {
                entry.outbox.close(Disconnect::TOKEN_REVOKED);
                n += 1;
            }
        }
        n
    }

    /// The connection now uses a refreshed token.
    pub fn set_session_jti(&self, client: &str, jti: Option<String>) {
        if let Some(mut entry) = self.sessions.get_mut(client) {
            entry.jti = jti;
        }
    }

    /// Every local connection as `(user, client)`, for the cross-node heartbeat.
    pub fn session_pairs(&self) -> Vec<(String, String)> {
        self.sessions
            .iter()
            .map(|e| (e.value().user.clone(), e.key().clone()))
            .collect()
    }

    /// Count a new connection of `user` on this node; refused beyond the tier's connections per
    /// user (across nodes the client also acquires it in [`Hub::users`]).
    pub fn register_session(
        &self,
        client: &str,
        user: &str,
        tier: Tier,
        jti: Option<String>,
        outbox: Arc<Outbox>,
    ) -> Result<(), Disconnect> {
        let limit = self.settings.tier(tier).connections_per_user;
        {
            let mut count = self.user_connections.entry(user.to_owned()).or_insert(0);
            if *count >= limit {
                return Err(Disconnect::CONNECTION_LIMIT);
            }
            *count += 1;
        }
        self.sessions.insert(
            client.to_owned(),
            SessionEntry {
                user: user.to_owned(),
                jti,
                outbox,
            },
        );
        Ok(())
    }

    pub fn unregister_session(&self, client: &str) {
        if let Some((_, entry)) = self.sessions.remove(client) {
            let remove = match self.user_connections.get_mut(&entry.user) {
                Some(mut count) => {
                    *count = count.saturating_sub(1);
                    *count == 0
                }
                None => false,
            };
            if remove {
                self.user_connections.remove_if(&entry.user, |_, c| *c == 0);
            }
        }
    }

    /// Per-user command budget, shared by all the user's connections on this node.
    pub fn check_user_rate(&self, user: &str, tier: Tier) -> bool {
        self.user_limiters[tier.index()].check_key(&user.to_owned()).is_ok()
    }

    /// Forget rate-limiter state of users not seen recently (keyed limiters grow otherwise).
    pub fn prune_limiters(&self) {
        for l in &self.user_limiters {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    /// Close every connection of `user` with `disconnect`.
    pub fn disconnect_user(&self, user: &str, disconnect: Disconnect) -> usize {
        let mut n = 0;
        for entry in self.sessions.iter() {
            if entry.user == user {
                entry.outbox.close(disconnect);
                n += 1;
            }
        }
        n
    }

    pub fn num_clients(&self) -> usize {
        self.sessions.len()
    }
    pub fn num_users(&self) -> usize {
        self.user_connections.len()
    }
    pub fn num_channels(&self) -> usize {
        self.channels.len()
    }
    /// Whether this node is the leader (a single node always is).
    pub fn is_leader(&self) -> bool {
        self.leadership.is_leader()
    }

    /// The fencing term of this node's current or last lease (0 with one node).
    pub fn leader_term(&self) -> u64 {
        self.leadership.term()
    }

    /// This node's id (new at each start).
    pub fn node_id(&self) -> &str {
        &self.node_id
    }
    pub fn uptime_s(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}

pub(crate) fn quota(per_second: u32, burst: u32) -> Quota {
    let rate = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(rate).allow_burst(burst)
}

/// The bus's handler: a weak reference so the bus does not keep a stopped hub alive.
struct FanOut(std::sync::Weak<Hub>);

impl PublicationHandler for FanOut {
    fn handle_publication(&self, channel: &str, publication: &Publication) {
        if let Some(hub) = self.0.upgrade() {
            hub.fan_out(channel, publication);
        }
    }
    fn handle_reset(&self, channel: &str) {
        if let Some(hub) = self.0.upgrade() {
            hub.reset_channel(channel);
        }
    }
}

/// `session.info`: who the connection is, as the hub sees it.
struct SessionInfo;

#[async_trait]
impl RpcHandler for SessionInfo {
    async fn call(&self, ctx: &RpcContext, _data: Option<&RawValue>) -> Result<Option<Raw>, ProtoError> {
        let value = serde_json::json!({"client": ctx.client, "user": ctx.user, "tier": ctx.tier});
        RawValue::from_string(value.to_string())
            .map(Some)
            .map_err(|_| ProtoError::internal())
    }
}
