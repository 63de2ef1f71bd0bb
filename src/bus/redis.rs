//! `RedisBus`: the bus of several hub nodes sharing one Redis.
//!
//! Each channel has a meta hash (`e`: epoch, `s`: top offset) and a stream of its recent
//! publications. One Lua script assigns the next offset, appends to the stream (capped by count,
//! entries older than the history TTL dropped) and publishes `"<offset> <epoch> <data>"` to the
//! channel's pub/sub channel, atomically, so every node sees the same offsets in the same order.
//! When the meta hash is gone (Redis restarted empty, or the channel idle past its TTL) the next
//! script creates a new epoch: clients holding the old one resync instead of trusting offsets.
//!
//! Every node holds one pub/sub subscription per channel with local subscribers (the hub counts
//! them). Delivery keeps, per channel, the last offset delivered: duplicates are dropped, a gap
//! (a lagging receiver, a reconnect) is filled from the stream, and when it cannot be filled or the
//! epoch changed the channel's local subscribers are told their state is insufficient (they
//! reconnect and recover or resync). Publications never reach a client twice under two offsets.
//!
//! Keys carry the channel as a hash tag (`gpuscout.meta.{market:summary}`), so a channel's keys
//! share a slot in a Redis Cluster; with `bus.redis_sharded` the pub/sub channel does too and the
//! bus uses `SPUBLISH`/`SSUBSCRIBE`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use dashmap::DashMap;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::Message;
use fred::types::scripts::Script;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::memory::new_epoch;
use super::tail::TailCache;
use super::{Bus, BusError, HistoryQuery, HistoryResult, Publication, PublicationHandler, StreamPosition};
use crate::clock::unix_now_ms;
use crate::config::BusSettings;
use crate::telemetry::Metrics;

const PUBLISH_LUA: &str = r#"
-- KEYS: meta, stream. ARGV: data, new epoch, max len, history ttl ms, meta ttl ms, pub/sub channel,
-- now ms, publish command.
local epoch = redis.call('hget', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[2]
  redis.call('hset', KEYS[1], 'e', epoch)
  redis.call('del', KEYS[2])
end
local offset = redis.call('hincrby', KEYS[1], 's', 1)
redis.call('pexpire', KEYS[1], ARGV[5])
redis.call('xadd', KEYS[2], 'MAXLEN', ARGV[3], offset .. '-0', 'd', ARGV[1], 't', ARGV[7])
redis.call('pexpire', KEYS[2], ARGV[4])
local oldest = tonumber(ARGV[7]) - tonumber(ARGV[4])
for _ = 1, 32 do
  local head = redis.call('xrange', KEYS[2], '-', '+', 'COUNT', 1)
  if #head == 0 or tonumber(head[1][2][4]) >= oldest then break end
  redis.call('xdel', KEYS[2], head[1][1])
end
redis.call(ARGV[8], ARGV[6], offset .. ' ' .. epoch .. ' ' .. ARGV[1])
return {offset, epoch}
"#;

const HISTORY_LUA: &str = r#"
-- KEYS: meta, stream. ARGV: new epoch, meta ttl ms, after offset, limit, reverse (0/1), oldest ms,
-- idle ttl ms (a channel never published to keeps its meta only this long after a read).
-- Returns {epoch, top, offset1, data1, offset2, data2, ...}.
local epoch = redis.call('hget', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('hset', KEYS[1], 'e', epoch, 's', 0)
  redis.call('del', KEYS[2])
end
local top = redis.call('hget', KEYS[1], 's') or '0'
if top == '0' then
  redis.call('pexpire', KEYS[1], ARGV[7])
else
  redis.call('pexpire', KEYS[1], ARGV[2])
end
local out = {epoch, top}
local limit = tonumber(ARGV[4])
if limit > 0 then
  local oldest = tonumber(ARGV[6])
  for _ = 1, 10000 do
    local head = redis.call('xrange', KEYS[2], '-', '+', 'COUNT', 1)
    if #head == 0 or tonumber(head[1][2][4]) >= oldest then break end
    redis.call('xdel', KEYS[2], head[1][1])
  end
  local from = '(' .. ARGV[3] .. '-0'
  local entries
  if ARGV[5] == '1' then
    entries = redis.call('xrevrange', KEYS[2], '+', from, 'COUNT', limit)
  else
    entries = redis.call('xrange', KEYS[2], from, '+', 'COUNT', limit)
  end
  for _, e in ipairs(entries) do
    local id = e[1]
    table.insert(out, string.sub(id, 1, string.find(id, '-', 1, true) - 1))
    table.insert(out, e[2][2])
  end
end
return out
"#;

/// What this node last delivered on a channel it is subscribed to.
#[derive(Debug, Clone)]
struct Delivered {
    epoch: String,
    offset: u64,
}

/// How many command connections the bus opens (see [`Clients`]).
const COMMAND_CONNECTIONS: usize = 4;

/// Command connections used in turn. fred sends nothing on a connection while an `EVALSHA` sent
/// on it waits for its answer (it never pipelines scripts), so on one connection every Lua call
/// (publish, history, the users' counts) waited for the one before: a reconnect storm's
/// thousands of calls ran one round trip at a time.
#[derive(Clone)]
pub struct Clients {
    all: Arc<[Client]>,
    next: Arc<AtomicUsize>,
}

impl Clients {
    /// The connection for the next command.
    pub fn next(&self) -> &Client {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.all.len();
        &self.all[i]
    }

    /// The first connection, for work that needs one (leadership, snapshots, the readiness ping).
    pub fn first(&self) -> &Client {
        &self.all[0]
    }

    fn connected(&self) -> bool {
        self.all.iter().all(|c| c.is_connected())
    }
}

/// A channel to subscribe or unsubscribe on the pub/sub connection, and who waits for it.
struct Change {
    subscribe: bool,
    name: String,
    done: oneshot::Sender<Result<(), String>>,
}

/// Most channels in one `SUBSCRIBE` or `UNSUBSCRIBE`.
const BATCH_CHANNELS: usize = 512;

/// Sends the queued changes in batches: fred sends nothing on the pub/sub connection while a
/// `SUBSCRIBE` waits for its answer, so one command per channel ran a reconnect storm's thousands
/// of subscriptions (three personal channels per connect) one round trip at a time. Consecutive
/// changes of one kind go out as one command, in order.
async fn pubsub_batches(
    subscriber: SubscriberClient,
    sharded: bool,
    mut changes: mpsc::UnboundedReceiver<Change>,
    stop: CancellationToken,
) {
    let mut next: Option<Change> = None;
    loop {
        let first = match next.take() {
            Some(change) => change,
            None => tokio::select! {
                _ = stop.cancelled() => return,
                change = changes.recv() => match change {
                    Some(change) => change,
                    None => return,
                },
            },
        };
        let kind = first.subscribe;
        let mut batch = vec![first];
        while batch.len() < BATCH_CHANNELS {
            match changes.try_recv() {
                Ok(change) if change.subscribe == kind => batch.push(change),
                Ok(change) => {
                    next = Some(change);
                    break;
                }
                Err(_) => break,
            }
        }
        let names: Vec<String> = batch.iter().map(|c| c.name.clone()).collect();
        let result = match (kind, sharded) {
            (true, true) => subscriber.ssubscribe(names).await,
            (true, false) => subscriber.subscribe(names).await,
            (false, true) => subscriber.sunsubscribe(names).await,
            (false, false) => subscriber.unsubscribe(names).await,
        };
        let result = result.map_err(|e| e.to_string());
        for change in batch {
            let _ = change.done.send(result.clone());
        }
    }
}

struct Inner {
    settings: BusSettings,
    /// Subscriptions and unsubscriptions for `pubsub_batches`.
    changes: mpsc::UnboundedSender<Change>,
    clients: Clients,
    subscriber: SubscriberClient,
    publish_script: Script,
    history_script: Script,
    handler: OnceLock<Arc<dyn PublicationHandler>>,
    /// Channels this node is subscribed to, with what was last delivered (`None`: nothing yet).
    delivered: DashMap<String, Option<Delivered>>,
    /// Serialises delivery with gap filling (one delivery task, but catch-up runs beside it).
    delivery: tokio::sync::Mutex<()>,
    lagged: Mutex<u64>,
    /// The recent tail of delivered channels, answering subscribes without Redis.
    tail: TailCache,
    metrics: Arc<Metrics>,
}

pub struct RedisBus {
    inner: Arc<Inner>,
    stop: CancellationToken,
}

impl Drop for RedisBus {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Build a fred client configuration from `bus.redis_url` with the hub's reconnect policy.
/// `events`: the capacity of the client's event channels (pub/sub messages among them); tokio's
/// broadcast channels allocate it up front, for each of several channels of every client.
pub fn redis_builder(url: &str, events: usize) -> Result<Builder, BusError> {
    let config = Config::from_url(url).map_err(|e| BusError::Unavailable(format!("bus.redis_url: {e}")))?;
    let mut builder = Builder::from_config(config);
    builder
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(2);
            c.internal_command_timeout = Duration::from_secs(2);
            // A command in flight when the connection drops is not sent again: a publish
            // retried after it ran would be delivered twice under two offsets.
            c.max_command_attempts = 1;
        })
        .with_performance_config(|p| {
            p.default_command_timeout = Duration::from_secs(3);
            p.broadcast_channel_capacity = events;
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2));
    Ok(builder)
}

impl RedisBus {
    /// Connect both clients (commands and pub/sub). The returned future is the delivery task
    /// (pub/sub messages to the attached handler, catch-up after a lag or reconnect): the caller
    /// runs it, supervised; it ends when `stop` is cancelled or the bus is dropped.
    pub async fn connect(
        settings: &BusSettings,
        stop: &CancellationToken,
        metrics: Arc<Metrics>,
    ) -> Result<(Self, impl Future<Output = ()> + Send + 'static), BusError> {
        let unavailable = |e: Error| BusError::Unavailable(e.to_string());
        let mut all = Vec::with_capacity(COMMAND_CONNECTIONS);
        for _ in 0..COMMAND_CONNECTIONS {
            let client = redis_builder(&settings.redis_url, 16)?.build().map_err(unavailable)?;
            client.init().await.map_err(unavailable)?;
            all.push(client);
        }
        let clients = Clients {
            all: all.into(),
            next: Arc::default(),
        };
        // Publications wait here for the delivery task; past this many it catches up from the
        // streams (counted in `lag_events`).
        let subscriber = redis_builder(&settings.redis_url, 4096)?
            .build_subscriber_client()
            .map_err(unavailable)?;
        subscriber.init().await.map_err(unavailable)?;
        // fred resubscribes every tracked channel after a reconnect only when asked to.
        let _resubscribe = subscriber.manage_subscriptions();
        let (changes, queued) = mpsc::unbounded_channel();
        let stop = stop.child_token();
        let batches = pubsub_batches(subscriber.clone(), settings.redis_sharded, queued, stop.clone());
        let inner = Arc::new(Inner {
            settings: settings.clone(),
            changes,
            clients,
            subscriber,
            publish_script: Script::from_lua(PUBLISH_LUA),
            history_script: Script::from_lua(HISTORY_LUA),
            handler: OnceLock::new(),
            delivered: DashMap::new(),
            delivery: tokio::sync::Mutex::new(()),
            lagged: Mutex::new(0),
            tail: TailCache::default(),
            metrics,
        });
        let delivery = deliver_loop(inner.clone(), stop.clone());
        let delivery = async move {
            tokio::join!(delivery, batches);
        };
        Ok((Self { inner, stop }, delivery))
    }

    /// The fred client for other Redis work of the hub (leadership, snapshots).
    pub fn client(&self) -> Client {
        self.inner.clients.first().clone()
    }

    /// The command connections, used in turn (for Lua scripts: see [`Clients`]).
    pub fn clients(&self) -> Clients {
        self.inner.clients.clone()
    }

    /// How many times the pub/sub receiver lagged (publications then came from the stream).
    pub fn lag_events(&self) -> u64 {
        *self.inner.lagged.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    /// Subscribe (or unsubscribe) the pub/sub connection to `channel`, in the next batch.
    async fn change(&self, subscribe: bool, channel: &str) -> Result<(), BusError> {
        let (done, answer) = oneshot::channel();
        let change = Change {
            subscribe,
            name: self.pubsub_channel(channel),
            done,
        };
        let stopped = || BusError::Unavailable("the bus is stopping".into());
        self.changes.send(change).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?.map_err(BusError::Unavailable)
    }

    fn meta_key(&self, channel: &str) -> String {
        format!("{}.meta.{{{channel}}}", self.settings.redis_prefix)
    }
    fn stream_key(&self, channel: &str) -> String {
        format!("{}.stream.{{{channel}}}", self.settings.redis_prefix)
    }
    fn pubsub_channel(&self, channel: &str) -> String {
        format!("{}.pub.{{{channel}}}", self.settings.redis_prefix)
    }
    fn channel_of<'a>(&self, pubsub: &'a str) -> Option<&'a str> {
        let rest = pubsub.strip_prefix(self.settings.redis_prefix.as_str())?;
        rest.strip_prefix(".pub.{")?.strip_suffix('}')
    }
    fn history_ttl_ms(&self) -> u64 {
        self.settings.history_ttl_s.max(1) * 1000
    }
    fn meta_ttl_ms(&self) -> u64 {
        self.settings.redis_meta_ttl_s.max(self.settings.history_ttl_s).max(1) * 1000
    }

    async fn history(&self, channel: &str, query: &HistoryQuery) -> Result<HistoryResult, BusError> {
        let oldest = unix_now_ms().saturating_sub(self.history_ttl_ms());
        let after = query.since.as_ref().map_or(0, |p| p.offset);
        let args: Vec<Value> = vec![
            new_epoch().into(),
            (self.meta_ttl_ms() as i64).into(),
            (after as i64).into(),
            (query.limit.min(i64::MAX as usize) as i64).into(),
            if query.reverse { "1" } else { "0" }.into(),
            (oldest as i64).into(),
            (self.settings.idle_channel_ttl_s.max(1) as i64 * 1000).into(),
        ];
        let keys = vec![self.meta_key(channel), self.stream_key(channel)];
        let reply: Vec<Value> = self
            .history_script
            .evalsha_with_reload(self.clients.next(), keys, args)
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        parse_history(reply)
    }

    fn deliver(&self, channel: &str, epoch: &str, publication: Publication) -> Step {
        let Some(mut slot) = self.delivered.get_mut(channel) else {
            return Step::Skip; // no longer subscribed here
        };
        match slot.as_mut() {
            None => {
                *slot = Some(Delivered {
                    epoch: epoch.to_owned(),
                    offset: publication.offset,
                });
            }
            Some(d) if d.epoch != epoch => {
                *slot = Some(Delivered {
                    epoch: epoch.to_owned(),
                    offset: publication.offset,
                });
                drop(slot);
                self.reset(channel);
                return Step::Delivered;
            }
            Some(d) if publication.offset <= d.offset => return Step::Skip,
            Some(d) if publication.offset > d.offset + 1 => return Step::Gap { after: d.offset },
            Some(d) => d.offset = publication.offset,
        }
        drop(slot);
        if let Some(h) = self.handler.get() {
            h.handle_publication(channel, &publication);
        }
        Step::Delivered
    }

    fn reset(&self, channel: &str) {
        tracing::warn!(
            channel,
            "bus position lost (Redis restarted or history gone): subscribers resync"
        );
        if let Some(h) = self.handler.get() {
            h.handle_reset(channel);
        }
    }

    /// Deliver what the stream holds between what was delivered and `upto` (exclusive), or reset.
    async fn fill_gap(&self, channel: &str, epoch: &str, after: u64, upto: u64) {
        let query = HistoryQuery {
            since: Some(StreamPosition {
                offset: after,
                epoch: epoch.to_owned(),
            }),
            limit: (upto - after - 1) as usize,
            reverse: false,
        };
        let filled = match self.history(channel, &query).await {
            Ok(h) if h.position.epoch == epoch => {
                let complete = h.publications.len() as u64 == upto - after - 1
                    && h.publications.first().is_none_or(|p| p.offset == after + 1);
                if complete {
                    for p in h.publications {
                        self.deliver(channel, epoch, p);
                    }
                }
                complete
            }
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(channel, error = %e, "filling a bus gap failed");
                false
            }
        };
        if !filled {
            if let Some(mut slot) = self.delivered.get_mut(channel) {
                *slot = None;
            }
            self.reset(channel);
        }
    }

    async fn on_message(&self, message: Message) {
        let Some(channel) = self.channel_of(&message.channel) else {
            return;
        };
        let Some(raw) = message.value.as_bytes() else {
            return;
        };
        let Some((offset, epoch, data)) = parse_message(raw) else {
            tracing::error!(channel, "malformed bus message dropped");
            return;
        };
        let publication = Publication {
            offset,
            data: Bytes::copy_from_slice(data),
        };
        let _serial = self.delivery.lock().await;
        if let Step::Gap { after } = self.deliver(channel, epoch, publication.clone()) {
            self.fill_gap(channel, epoch, after, offset).await;
            self.deliver(channel, epoch, publication);
        }
    }

    /// After a reconnect (or a lagging receiver): deliver what every channel missed, or reset it.
    async fn catch_up(&self) {
        let _serial = self.delivery.lock().await;
        let channels: Vec<(String, Option<Delivered>)> = self
            .delivered
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        for (channel, delivered) in channels {
            let Some(d) = delivered else { continue };
            let top = match self.history(&channel, &HistoryQuery::default()).await {
                Ok(h) => h.position,
                Err(e) => {
                    tracing::warn!(channel, error = %e, "bus catch-up failed");
                    continue;
                }
            };
            if top.epoch != d.epoch || top.offset < d.offset {
                if let Some(mut slot) = self.delivered.get_mut(&channel) {
                    *slot = None;
                }
                self.reset(&channel);
            } else if top.offset > d.offset {
                self.fill_gap(&channel, &d.epoch, d.offset, top.offset + 1).await;
            }
        }
    }
}

enum Step {
    Delivered,
    Skip,
    Gap { after: u64 },
}

/// `"<offset> <epoch> <data>"`.
fn parse_message(raw: &[u8]) -> Option<(u64, &str, &[u8])> {
    let sp1 = raw.iter().position(|&b| b == b' ')?;
    let offset: u64 = std::str::from_utf8(&raw[..sp1]).ok()?.parse().ok()?;
    let rest = &raw[sp1 + 1..];
    let sp2 = rest.iter().position(|&b| b == b' ')?;
    let epoch = std::str::from_utf8(&rest[..sp2]).ok()?;
    Some((offset, epoch, &rest[sp2 + 1..]))
}

fn parse_history(reply: Vec<Value>) -> Result<HistoryResult, BusError> {
    let bad = || BusError::Unavailable("unexpected history reply from Redis".into());
    let mut it = reply.into_iter();
    let epoch = it.next().and_then(|v| v.as_string()).ok_or_else(bad)?;
    let top = it.next().and_then(|v| v.as_u64()).ok_or_else(bad)?;
    let mut publications = Vec::new();
    while let Some(offset) = it.next() {
        let offset = offset.as_u64().ok_or_else(bad)?;
        let data = it
            .next()
            .and_then(|v| v.as_bytes().map(Bytes::copy_from_slice))
            .ok_or_else(bad)?;
        publications.push(Publication { offset, data });
    }
    Ok(HistoryResult {
        publications,
        position: StreamPosition { offset: top, epoch },
    })
}

async fn deliver_loop(inner: Arc<Inner>, stop: CancellationToken) {
    let mut messages = inner.subscriber.message_rx();
    let mut reconnects = inner.subscriber.reconnect_rx();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            m = messages.recv() => match m {
                Ok(message) => inner.on_message(message).await,
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(skipped = n, "bus receiver lagged; catching up from the streams");
                    *inner.lagged.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                    inner.catch_up().await;
                }
                Err(RecvError::Closed) => return,
            },
            r = reconnects.recv() => match r {
                Ok(_) | Err(RecvError::Lagged(_)) => {
                    tracing::info!("bus reconnected to Redis; catching up");
                    // fred resubscribes on its own; give it a moment before reading positions.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    inner.catch_up().await;
                }
                Err(RecvError::Closed) => return,
            },
        }
    }
}

#[async_trait]
impl Bus for RedisBus {
    fn attach(&self, handler: Arc<dyn PublicationHandler>) {
        let _ = self.inner.handler.set(handler);
    }

    async fn publish(&self, channel: &str, data: Bytes) -> Result<StreamPosition, BusError> {
        let inner = &self.inner;
        let command = if inner.settings.redis_sharded {
            "spublish"
        } else {
            "publish"
        };
        let args: Vec<Value> = vec![
            Value::Bytes(data),
            new_epoch().into(),
            (inner.settings.history_size.max(1) as i64).into(),
            (inner.history_ttl_ms() as i64).into(),
            (inner.meta_ttl_ms() as i64).into(),
            inner.pubsub_channel(channel).into(),
            (unix_now_ms() as i64).into(),
            command.into(),
        ];
        let keys = vec![inner.meta_key(channel), inner.stream_key(channel)];
        let (offset, epoch): (u64, String) = inner
            .publish_script
            .evalsha_with_reload(inner.clients.next(), keys, args)
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        Ok(StreamPosition { offset, epoch })
    }

    async fn subscribe(&self, channel: &str) -> Result<(), BusError> {
        let inner = &self.inner;
        inner.delivered.entry(channel.to_owned()).or_insert(None);
        inner.change(true, channel).await.inspect_err(|_| {
            inner.delivered.remove(channel);
        })
    }

    async fn unsubscribe(&self, channel: &str) -> Result<(), BusError> {
        let inner = &self.inner;
        inner.delivered.remove(channel);
        inner.tail.forget(channel);
        inner.change(false, channel).await
    }

    async fn history(&self, channel: &str, query: HistoryQuery) -> Result<HistoryResult, BusError> {
        let inner = &self.inner;
        // A channel this node delivers: its recent tail may answer (see `tail`).
        let delivered = inner.delivered.get(channel).and_then(|slot| slot.value().clone());
        if let Some(d) = &delivered
            && let Some(answer) = inner.tail.answer(channel, &query, &d.epoch, d.offset)
        {
            inner.metrics.bus_history_cached_total.fetch_add(1, Ordering::Relaxed);
            return Ok(answer);
        }
        let result = inner.history(channel, &query).await?;
        if delivered.is_some() {
            inner.tail.store(channel, &query, &result);
            // Unsubscribed meanwhile: nothing is kept for a channel the node no longer delivers.
            if !inner.delivered.contains_key(channel) {
                inner.tail.forget(channel);
            }
        }
        Ok(result)
    }

    async fn ready(&self) -> bool {
        let inner = &self.inner;
        if !(inner.clients.connected() && inner.subscriber.is_connected()) {
            return false;
        }
        let ping = inner.clients.first().ping::<String>(None);
        matches!(tokio::time::timeout(Duration::from_secs(1), ping).await, Ok(Ok(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::suite;
    use crate::config::Settings;

    /// A bus with its delivery task running (until the bus is dropped).
    async fn started(settings: &BusSettings) -> Result<RedisBus, BusError> {
        let metrics = Arc::new(Metrics::default());
        let (bus, delivery) = RedisBus::connect(settings, &CancellationToken::new(), metrics).await?;
        tokio::spawn(delivery);
        Ok(bus)
    }

    /// A bus on the test Redis (`GPUSCOUT_TEST_REDIS_URL`, default the local one) under a fresh
    /// prefix. `None` (skip) only off CI when no Redis answers.
    async fn bus(history_size: usize) -> Option<RedisBus> {
        let url = std::env::var("GPUSCOUT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let mut settings = Settings::defaults().bus;
        settings.redis_url = url.clone();
        settings.redis_prefix = format!("test{}", uuid::Uuid::new_v4().simple());
        settings.history_size = history_size;
        match tokio::time::timeout(Duration::from_secs(5), started(&settings)).await {
            Ok(Ok(bus)) => Some(bus),
            other => {
                let why = match other {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".into(),
                };
                assert!(
                    std::env::var("CI").is_err(),
                    "Redis at {url} is required under CI: {why}"
                );
                eprintln!("skipping: no Redis at {url}: {why}");
                None
            }
        }
    }

    #[tokio::test]
    async fn redis_offsets_are_sequential_and_delivered_in_order() {
        let Some(bus) = bus(300).await else { return };
        suite::offsets_are_sequential_and_delivered_in_order(&bus).await;
    }

    #[tokio::test]
    async fn redis_recovery_is_all_or_nothing() {
        let Some(bus) = bus(20).await else { return };
        suite::recovery_is_all_or_nothing(&bus, 20).await;
    }

    #[tokio::test]
    async fn redis_history_reads_forward_and_reverse() {
        let Some(bus) = bus(300).await else { return };
        suite::history_reads_forward_and_reverse(&bus).await;
    }

    #[tokio::test]
    async fn a_channel_only_read_keeps_its_meta_briefly_one_published_for_long() {
        let Some(bus) = bus(300).await else { return };
        let ttl = |channel: &'static str| {
            let (client, key) = (bus.client(), bus.inner.meta_key(channel));
            async move { client.pttl::<i64, _>(key).await.unwrap() }
        };
        bus.history("gpu:made-up", HistoryQuery::default()).await.unwrap();
        let idle_ms = bus.inner.settings.idle_channel_ttl_s as i64 * 1000;
        let read_only = ttl("gpu:made-up").await;
        assert!(read_only > 0 && read_only <= idle_ms, "{read_only} ms");
        bus.publish("gpu:real", Bytes::from_static(b"1")).await.unwrap();
        bus.history("gpu:real", HistoryQuery::default()).await.unwrap();
        assert!(
            ttl("gpu:real").await > idle_ms,
            "a published channel keeps its epoch for redis_meta_ttl_s"
        );
    }

    #[tokio::test]
    async fn redis_history_drops_publications_past_their_age() {
        let Some(bus) = bus(300).await else { return };
        let mut inner_settings = bus.inner.settings.clone();
        inner_settings.history_ttl_s = 1;
        let short = started(&inner_settings).await.unwrap();
        short.publish("t:age", Bytes::from_static(b"1")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let top = short.publish("t:age", Bytes::from_static(b"2")).await.unwrap();
        let h = short
            .history(
                "t:age",
                HistoryQuery {
                    since: None,
                    limit: 10,
                    reverse: false,
                },
            )
            .await
            .unwrap();
        assert_eq!(h.publications.iter().map(|p| p.offset).collect::<Vec<_>>(), vec![2]);
        assert_eq!(h.position, top);
    }

    #[tokio::test]
    async fn a_lost_meta_hash_starts_a_new_epoch_and_resets_subscribers() {
        let Some(bus) = bus(300).await else { return };
        let resets = Arc::new(Resets::default());
        bus.attach(resets.clone());
        bus.subscribe("t:reset").await.unwrap();
        let first = bus.publish("t:reset", Bytes::from_static(b"1")).await.unwrap();
        resets.wait_for(1, 0).await;
        // Redis restarted empty, as far as this channel is concerned.
        let inner = &bus.inner;
        let _: i64 = inner
            .clients
            .first()
            .del(vec![inner.meta_key("t:reset"), inner.stream_key("t:reset")])
            .await
            .unwrap();
        let second = bus.publish("t:reset", Bytes::from_static(b"2")).await.unwrap();
        assert_ne!(second.epoch, first.epoch);
        assert_eq!(second.offset, 1);
        resets.wait_for(1, 1).await;
        // A client recovering from the old epoch is told to resync.
        let r = crate::bus::recover(&bus, "t:reset", first, 100).await.unwrap();
        assert!(!r.recovered);
    }

    #[tokio::test]
    async fn a_gap_in_delivery_is_filled_from_the_stream() {
        let Some(bus) = bus(300).await else { return };
        let got = Arc::new(Resets::default());
        bus.attach(got.clone());
        bus.subscribe("t:gap").await.unwrap();
        bus.publish("t:gap", Bytes::from_static(b"1")).await.unwrap();
        got.wait_for(1, 0).await;
        // Two publications this node's subscription never sees (published under another
        // pub/sub name), then one it does: the two come from the stream, in order, once.
        let inner = &bus.inner;
        for d in ["2", "3"] {
            let args: Vec<Value> = vec![
                d.into(),
                "unused".into(),
                300.into(),
                60_000.into(),
                60_000.into(),
                "elsewhere".into(),
                (unix_now_ms() as i64).into(),
                "publish".into(),
            ];
            let _: (u64, String) = inner
                .publish_script
                .evalsha_with_reload(
                    inner.clients.first(),
                    vec![inner.meta_key("t:gap"), inner.stream_key("t:gap")],
                    args,
                )
                .await
                .unwrap();
        }
        bus.publish("t:gap", Bytes::from_static(b"4")).await.unwrap();
        got.wait_for(4, 0).await;
        let offsets: Vec<u64> = got.publications.lock().unwrap().iter().map(|p| p.0).collect();
        assert_eq!(offsets, vec![1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn subscribes_to_a_delivered_channel_are_answered_from_its_recent_tail() {
        let Some(bus) = bus(300).await else { return };
        let got = Arc::new(Resets::default());
        bus.attach(got.clone());
        bus.subscribe("t:tail").await.unwrap();
        let mut top = StreamPosition::default();
        for d in ["1", "2", "3"] {
            top = bus.publish("t:tail", Bytes::from_static(d.as_bytes())).await.unwrap();
        }
        got.wait_for(3, 0).await;
        let since = |offset: u64| HistoryQuery {
            since: Some(StreamPosition {
                offset,
                epoch: top.epoch.clone(),
            }),
            limit: 10,
            reverse: false,
        };
        let offsets = |h: &HistoryResult| h.publications.iter().map(|p| p.offset).collect::<Vec<_>>();
        assert_eq!(offsets(&bus.history("t:tail", since(1)).await.unwrap()), vec![2, 3]);
        // The stream is gone from Redis: what still answers is the node's copy of the tail.
        let inner = &bus.inner;
        let _: i64 = inner.clients.first().del(inner.stream_key("t:tail")).await.unwrap();
        let cached = bus.history("t:tail", since(2)).await.unwrap();
        assert_eq!((offsets(&cached), cached.position.clone()), (vec![3], top.clone()));
        assert_eq!(inner.metrics.bus_history_cached_total.load(Ordering::Relaxed), 1);
        // Delivered past the copy's top: Redis is read again (and holds only the new one).
        bus.publish("t:tail", Bytes::from_static(b"4")).await.unwrap();
        got.wait_for(4, 0).await;
        assert_eq!(offsets(&bus.history("t:tail", since(1)).await.unwrap()), vec![4]);
        assert_eq!(offsets(&bus.history("t:tail", since(3)).await.unwrap()), vec![4]);
        assert!(inner.tail.answer("t:tail", &since(3), &top.epoch, 4).is_some());
        // Not kept for a channel the node no longer delivers.
        bus.unsubscribe("t:tail").await.unwrap();
        assert!(inner.tail.answer("t:tail", &since(3), &top.epoch, 4).is_none());
        assert_eq!(inner.metrics.bus_history_cached_total.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn many_subscriptions_at_once_go_out_in_batches_and_all_deliver() {
        let Some(bus) = bus(300).await else { return };
        let got = Arc::new(Resets::default());
        bus.attach(got.clone());
        // More than one batch, subscribed concurrently (as a storm of connects does).
        let channels: Vec<String> = (0..BATCH_CHANNELS + 88).map(|i| format!("t:many{i}")).collect();
        let subscribed = futures_util::future::join_all(channels.iter().map(|c| bus.subscribe(c))).await;
        assert!(subscribed.iter().all(Result::is_ok));
        for channel in [&channels[0], &channels[channels.len() - 1]] {
            bus.publish(channel, Bytes::from_static(b"x")).await.unwrap();
        }
        got.wait_for(2, 0).await;
        let unsubscribed = futures_util::future::join_all(channels.iter().map(|c| bus.unsubscribe(c))).await;
        assert!(unsubscribed.iter().all(Result::is_ok));
        bus.publish(&channels[1], Bytes::from_static(b"y")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(got.publications.lock().unwrap().len(), 2, "nothing after unsubscribing");
    }

    #[derive(Default)]
    struct Resets {
        publications: Mutex<Vec<(u64, Bytes)>>,
        resets: Mutex<u32>,
    }
    impl PublicationHandler for Resets {
        fn handle_publication(&self, _channel: &str, p: &Publication) {
            self.publications.lock().unwrap().push((p.offset, p.data.clone()));
        }
        fn handle_reset(&self, _channel: &str) {
            *self.resets.lock().unwrap() += 1;
        }
    }
    impl Resets {
        async fn wait_for(&self, publications: usize, resets: u32) {
            for _ in 0..200 {
                if self.publications.lock().unwrap().len() >= publications && *self.resets.lock().unwrap() >= resets {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!(
                "waited for {publications} publications and {resets} resets; got {} and {}",
                self.publications.lock().unwrap().len(),
                self.resets.lock().unwrap()
            );
        }
    }

    #[test]
    fn messages_parse_offset_epoch_and_data() {
        let (o, e, d) = parse_message(b"42 abc {\"a\": 1}").unwrap();
        assert_eq!((o, e, d), (42, "abc", &b"{\"a\": 1}"[..]));
        assert!(parse_message(b"x abc {}").is_none());
        assert!(parse_message(b"42").is_none());
    }
}
