//! What the nodes must agree on about users: how many connections each has across all nodes, and
//! which tokens are revoked; and a control channel between nodes.
//!
//! `LocalUsers` serves one node (its own counts are the hub's; revocations live in memory).
//! `RedisUsers` keeps, per user, a sorted set of `<node>:<client>` scored by an expiry that every
//! node refreshes for its live connections (a node that dies leaves entries that expire on their
//! own), and revoked token ids as keys that expire with the token. A revocation is announced on a
//! control channel so every node closes the connections that used the token; so is a request to
//! cancel an advisor answer, which only the node generating it can abort.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use dashmap::DashMap;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::scripts::Script;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::BusError;
use super::control::{Control, ControlFeed};
use super::redis::Clients;
use crate::clock::{unix_now_ms, unix_now_s};

/// How long a connection's entry lives without a heartbeat.
pub const CONNECTION_TTL: Duration = Duration::from_secs(60);
/// How often a node refreshes its connections' entries.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(20);

#[async_trait]
pub trait UserState: Send + Sync + 'static {
    /// Count a connection of `user` against `limit` across nodes; `false` when the user is at it.
    async fn acquire(&self, user: &str, client: &str, limit: u32) -> Result<bool, BusError>;
    /// Forget a connection.
    async fn release(&self, user: &str, client: &str);
    /// Count `channel`, held by connection `client`, against the `limit` of distinct channels of
    /// its kind the user may hold across all their connections and nodes; `false` when the user
    /// holds `limit` others. A channel the user already holds elsewhere costs nothing more.
    async fn acquire_channel(&self, user: &str, client: &str, channel: &str, limit: u32) -> Result<bool, BusError>;
    /// Forget that `client` holds `channel`.
    async fn release_channel(&self, user: &str, client: &str, channel: &str);
    /// Refresh the entries of this node's live connections (`(user, client)` pairs).
    async fn heartbeat(&self, sessions: Vec<(String, String)>);
    /// Whether the token with this id was revoked.
    async fn is_revoked(&self, jti: &str) -> Result<bool, BusError>;
    /// Revoke a token id until `expire_at_s` (seconds since the epoch); every node hears
    /// [`Control::Revoke`] and closes the connections that used it.
    async fn revoke(&self, jti: &str, expire_at_s: u64) -> Result<(), BusError>;
    /// Ask every node to cancel the advisor answer `message_id` ([`Control::CancelAnswer`]): the
    /// node generating it aborts it.
    async fn cancel_answer(&self, message_id: &str) -> Result<(), BusError>;
    /// Tell every node, this one included, that alert rule `rule_id` changed
    /// ([`Control::RuleChanged`]).
    async fn rule_changed(&self, rule_id: &str) -> Result<(), BusError>;
    /// Tell every node that a user's portfolio changed (`Control::PortfolioChanged`).
    async fn portfolio_changed(&self, user_id: &str) -> Result<(), BusError>;
    /// The control messages this node hears, this node's own included.
    fn control(&self) -> &ControlFeed;
}

/// One node: connection counts are the hub's own; revocations and held channels are kept in
/// memory.
#[derive(Default)]
pub struct LocalUsers {
    revoked: DashMap<String, u64>,
    /// Per user, per counted channel, the connections holding it.
    channels: DashMap<String, HashMap<String, HashSet<String>>>,
    control: ControlFeed,
}

#[async_trait]
impl UserState for LocalUsers {
    async fn acquire(&self, _user: &str, _client: &str, _limit: u32) -> Result<bool, BusError> {
        Ok(true)
    }
    async fn release(&self, _user: &str, _client: &str) {}
    async fn acquire_channel(&self, user: &str, client: &str, channel: &str, limit: u32) -> Result<bool, BusError> {
        let mut held = self.channels.entry(user.to_owned()).or_default();
        if !held.contains_key(channel) && held.len() >= limit as usize {
            return Ok(false);
        }
        held.entry(channel.to_owned()).or_default().insert(client.to_owned());
        Ok(true)
    }
    async fn release_channel(&self, user: &str, client: &str, channel: &str) {
        if let Some(mut held) = self.channels.get_mut(user)
            && let Some(clients) = held.get_mut(channel)
        {
            clients.remove(client);
            if clients.is_empty() {
                held.remove(channel);
            }
        }
        self.channels.remove_if(user, |_, held| held.is_empty());
    }
    async fn heartbeat(&self, _sessions: Vec<(String, String)>) {
        let now = unix_now_s();
        self.revoked.retain(|_, until| *until > now);
    }
    async fn is_revoked(&self, jti: &str) -> Result<bool, BusError> {
        Ok(self.revoked.get(jti).is_some_and(|until| *until > unix_now_s()))
    }
    async fn revoke(&self, jti: &str, expire_at_s: u64) -> Result<(), BusError> {
        self.revoked.insert(jti.to_owned(), expire_at_s);
        self.control.deliver(Control::Revoke { jti: jti.to_owned() });
        Ok(())
    }
    async fn cancel_answer(&self, message_id: &str) -> Result<(), BusError> {
        self.control.deliver(Control::CancelAnswer {
            message_id: message_id.to_owned(),
        });
        Ok(())
    }
    async fn rule_changed(&self, rule_id: &str) -> Result<(), BusError> {
        self.control.deliver(Control::RuleChanged {
            rule_id: rule_id.to_owned(),
        });
        Ok(())
    }
    async fn portfolio_changed(&self, user_id: &str) -> Result<(), BusError> {
        self.control.deliver(Control::PortfolioChanged {
            user_id: user_id.to_owned(),
        });
        Ok(())
    }
    fn control(&self) -> &ControlFeed {
        &self.control
    }
}

const ACQUIRE_LUA: &str = r#"
-- KEYS: the user's connections. ARGV: now ms, expiry ms, member, limit, key ttl ms.
redis.call('zremrangebyscore', KEYS[1], '-inf', ARGV[1])
if redis.call('zscore', KEYS[1], ARGV[3]) then return 1 end
if redis.call('zcard', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
redis.call('zadd', KEYS[1], ARGV[2], ARGV[3])
redis.call('pexpire', KEYS[1], ARGV[5])
return 1
"#;

/// A set of `<channel>|<node>:<client>` per user; an entry lives while its connection's entry
/// does (a dead node's entries go with its connections).
const ACQUIRE_CHANNEL_LUA: &str = r#"
-- KEYS: the user's held channels, the user's connections. ARGV: now ms, channel, member, limit, ttl ms.
local held = {}
local count = 0
local mine = false
for _, entry in ipairs(redis.call('smembers', KEYS[1])) do
  local sep = string.find(entry, '|', 1, true)
  local channel = string.sub(entry, 1, sep - 1)
  local score = redis.call('zscore', KEYS[2], string.sub(entry, sep + 1))
  if score and tonumber(score) > tonumber(ARGV[1]) then
    if not held[channel] then held[channel] = true; count = count + 1 end
    if channel == ARGV[2] then mine = true end
  else
    redis.call('srem', KEYS[1], entry)
  end
end
if not mine and count >= tonumber(ARGV[4]) then return 0 end
redis.call('sadd', KEYS[1], ARGV[2] .. '|' .. ARGV[3])
redis.call('pexpire', KEYS[1], ARGV[5])
return 1
"#;

pub struct RedisUsers {
    /// The bus's command connections, used in turn (fred runs one script at a time per connection).
    clients: Clients,
    prefix: String,
    node: String,
    acquire: Script,
    acquire_channel: Script,
    /// The control channel's name.
    control: String,
    feed: ControlFeed,
    stop: CancellationToken,
}

impl Drop for RedisUsers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl RedisUsers {
    /// `subscriber` is a pub/sub client of its own for the control channel. The returned future
    /// hears that channel and feeds [`UserState::control`]: the caller runs it, supervised; it
    /// ends when `stop` is cancelled or the state is dropped.
    pub async fn start(
        clients: Clients,
        subscriber: SubscriberClient,
        prefix: &str,
        node: &str,
        stop: &CancellationToken,
    ) -> Result<(Self, impl Future<Output = ()> + Send + 'static), BusError> {
        let unavailable = |e: Error| BusError::Unavailable(e.to_string());
        subscriber.init().await.map_err(unavailable)?;
        let _resubscribe = subscriber.manage_subscriptions();
        let control = format!("{prefix}.control");
        subscriber.subscribe(control.clone()).await.map_err(unavailable)?;
        let feed = ControlFeed::default();
        let stop = stop.child_token();
        let messages = subscriber.message_rx();
        let listener = hear_control(subscriber, messages, feed.clone(), stop.clone());
        let users = Self {
            clients,
            prefix: prefix.to_owned(),
            node: node.to_owned(),
            acquire: Script::from_lua(ACQUIRE_LUA),
            acquire_channel: Script::from_lua(ACQUIRE_CHANNEL_LUA),
            control,
            feed,
            stop,
        };
        Ok((users, listener))
    }

    fn conns_key(&self, user: &str) -> String {
        format!("{}.conns.{{{user}}}", self.prefix)
    }
    /// Publish `control` on the control channel: every node hears it, this one included.
    async fn announce(&self, control: Control) -> Result<(), BusError> {
        let _: i64 = self
            .clients
            .next()
            .publish(self.control.clone(), control.encode())
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        Ok(())
    }

    fn channels_key(&self, user: &str) -> String {
        format!("{}.channels.{{{user}}}", self.prefix)
    }
    fn revoked_key(&self, jti: &str) -> String {
        format!("{}.revoked.{jti}", self.prefix)
    }
    fn member(&self, client: &str) -> String {
        format!("{}:{client}", self.node)
    }
}

#[async_trait]
impl UserState for RedisUsers {
    async fn acquire(&self, user: &str, client: &str, limit: u32) -> Result<bool, BusError> {
        let now = unix_now_ms() as i64;
        let ttl = CONNECTION_TTL.as_millis() as i64;
        let args: Vec<Value> = vec![
            now.into(),
            (now + ttl).into(),
            self.member(client).into(),
            i64::from(limit).into(),
            ttl.into(),
        ];
        let ok: i64 = self
            .acquire
            .evalsha_with_reload(self.clients.next(), vec![self.conns_key(user)], args)
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        Ok(ok == 1)
    }

    async fn release(&self, user: &str, client: &str) {
        let removed: Result<i64, Error> = self
            .clients
            .next()
            .zrem(self.conns_key(user), self.member(client))
            .await;
        if let Err(e) = removed {
            tracing::debug!(error = %e, "releasing a connection entry failed (it expires by itself)");
        }
    }

    async fn acquire_channel(&self, user: &str, client: &str, channel: &str, limit: u32) -> Result<bool, BusError> {
        let ttl = CONNECTION_TTL.as_millis() as i64;
        let args: Vec<Value> = vec![
            (unix_now_ms() as i64).into(),
            channel.into(),
            self.member(client).into(),
            i64::from(limit).into(),
            ttl.into(),
        ];
        let keys = vec![self.channels_key(user), self.conns_key(user)];
        let ok: i64 = self
            .acquire_channel
            .evalsha_with_reload(self.clients.next(), keys, args)
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        Ok(ok == 1)
    }

    async fn release_channel(&self, user: &str, client: &str, channel: &str) {
        let entry = format!("{channel}|{}", self.member(client));
        let removed: Result<i64, Error> = self.clients.next().srem(self.channels_key(user), entry).await;
        if let Err(e) = removed {
            tracing::debug!(error = %e, "releasing a held channel failed (it goes with its connection)");
        }
    }

    async fn heartbeat(&self, sessions: Vec<(String, String)>) {
        let expiry = (unix_now_ms() + CONNECTION_TTL.as_millis() as u64) as f64;
        let ttl = CONNECTION_TTL.as_millis() as i64;
        for chunk in sessions.chunks(500) {
            let pipeline = self.clients.next().pipeline();
            for (user, client) in chunk {
                let key = self.conns_key(user);
                let _: Result<(), Error> = pipeline
                    .zadd(
                        key.clone(),
                        Some(SetOptions::XX),
                        None,
                        false,
                        false,
                        (expiry, self.member(client)),
                    )
                    .await;
                let _: Result<(), Error> = pipeline.pexpire(key, ttl, None).await;
                let _: Result<(), Error> = pipeline.pexpire(self.channels_key(user), ttl, None).await;
            }
            let sent: Result<Vec<Value>, Error> = pipeline.all().await;
            if let Err(e) = sent {
                tracing::warn!(error = %e, "refreshing connection entries failed");
                return;
            }
        }
    }

    async fn is_revoked(&self, jti: &str) -> Result<bool, BusError> {
        let n: i64 = self
            .clients
            .next()
            .exists(self.revoked_key(jti))
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        Ok(n > 0)
    }

    async fn revoke(&self, jti: &str, expire_at_s: u64) -> Result<(), BusError> {
        let unavailable = |e: Error| BusError::Unavailable(e.to_string());
        let _: () = self
            .clients
            .next()
            .set(
                self.revoked_key(jti),
                1,
                Some(Expiration::EXAT(expire_at_s as i64)),
                None,
                false,
            )
            .await
            .map_err(unavailable)?;
        let _: i64 = self
            .clients
            .next()
            .publish(self.control.clone(), Control::Revoke { jti: jti.to_owned() }.encode())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn cancel_answer(&self, message_id: &str) -> Result<(), BusError> {
        // Every node hears it, this one included: the node generating the answer aborts it.
        self.announce(Control::CancelAnswer {
            message_id: message_id.to_owned(),
        })
        .await
    }

    async fn rule_changed(&self, rule_id: &str) -> Result<(), BusError> {
        self.announce(Control::RuleChanged {
            rule_id: rule_id.to_owned(),
        })
        .await
    }

    async fn portfolio_changed(&self, user_id: &str) -> Result<(), BusError> {
        self.announce(Control::PortfolioChanged {
            user_id: user_id.to_owned(),
        })
        .await
    }

    fn control(&self) -> &ControlFeed {
        &self.feed
    }
}

/// Read the control channel into `feed` until `stop`. Redis pub/sub messages missed while this
/// reader fell behind fred's buffer are logged; the connection is resubscribed by fred.
async fn hear_control(
    subscriber: SubscriberClient,
    mut messages: tokio::sync::broadcast::Receiver<fred::types::Message>,
    feed: ControlFeed,
    stop: CancellationToken,
) {
    let _keep = subscriber;
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => return,
            m = messages.recv() => m,
        };
        match message {
            Ok(m) => {
                let text = m.value.as_string().unwrap_or_default();
                match Control::decode(&text) {
                    Some(control) => feed.deliver(control),
                    None => tracing::debug!(message = %text, "unknown control message skipped"),
                }
            }
            Err(RecvError::Lagged(n)) => {
                tracing::error!(missed = n, "control channel messages missed: the reader fell behind");
            }
            Err(RecvError::Closed) => return,
        }
    }
}
