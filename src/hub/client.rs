//! One client connection's protocol state: authentication, subscriptions, limits, and the handling
//! of every command it sends. Replies and pushes go to the connection's [`Outbox`]; the socket is
//! the caller's business, so this runs the same over a real socket and in tests.

use serde_json::value::RawValue;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use governor::DefaultDirectRateLimiter;

use super::{Hub, Outbox, RpcContext, Subscriber, quota};
use crate::auth::{AuthError, Claims};
use crate::bus::{self, HistoryQuery, Publication, StreamPosition};
use crate::channels::{ChannelKind, personal_channels};
use crate::clock::unix_now_s;
use crate::protocol::{
    self, ConnectRequest, ConnectResult, Disconnect, Empty, Method, ProtoError, Publication as PublicationOut,
    RefreshRequest, RefreshResult, ReplyBody, RpcRequest, RpcResult, SubRefreshResult, SubscribeRecovery,
    SubscribeRequest, SubscribeResult,
};
use crate::telemetry::CommandKind;
use crate::tier::{Tier, authorize_subscribe};

/// The hub's version, reported in connect and refresh replies.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

struct Identity {
    user: String,
    tier: Tier,
    /// Token expiry, seconds since the epoch.
    expires_at: u64,
    /// An API key token's scopes (`None`: the user's own token).
    scopes: Option<Vec<String>>,
}

impl Identity {
    fn allows(&self, scope: &str) -> bool {
        self.scopes.as_ref().is_none_or(|s| s.iter().any(|x| x == scope))
    }
}

/// Refused for a missing scope (103, as any other permission).
fn missing_scope(scope: &str) -> ProtoError {
    ProtoError::permission_denied().with_message(format!("this API key lacks the `{scope}` scope"))
}

/// Results of the server-side subscriptions made at connect, by channel, and each subscriber with
/// the offset it goes live after.
type PersonalSubs = (BTreeMap<String, SubscribeResult>, Vec<(Arc<Subscriber>, u64)>);

pub struct Client {
    hub: Arc<Hub>,
    id: String,
    outbox: Arc<Outbox>,
    identity: Option<Identity>,
    subs: HashMap<String, Arc<Subscriber>>,
    limiter: Option<DefaultDirectRateLimiter>,
    /// Set when the client answered a ping (`{}`); the connection loop reads and clears it.
    pong_seen: bool,
}

impl Client {
    pub fn new(hub: Arc<Hub>, outbox: Arc<Outbox>) -> Self {
        Self {
            hub,
            id: uuid::Uuid::new_v4().to_string(),
            outbox,
            identity: None,
            subs: HashMap::new(),
            limiter: None,
            pong_seen: false,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn connected(&self) -> bool {
        self.identity.is_some()
    }

    /// Token expiry (seconds since the epoch) once connected.
    pub fn expires_at(&self) -> Option<u64> {
        self.identity.as_ref().map(|i| i.expires_at)
    }

    pub fn take_pong(&mut self) -> bool {
        std::mem::take(&mut self.pong_seen)
    }

    fn send(&self, bytes: Vec<u8>) {
        let _ = self.outbox.push_reply(Bytes::from(bytes));
    }

    fn reply(&self, id: u32, body: ReplyBody<'_>) {
        self.send(protocol::encode_reply(id, body));
    }

    fn reply_error(&self, id: u32, error: &ProtoError) {
        self.send(protocol::encode_error(id, error));
    }

    /// Handle one text frame: its commands in order. `Err` closes the connection with that code.
    pub async fn handle_frame(&mut self, frame: &str) -> Result<(), Disconnect> {
        for line in protocol::split_frame(frame) {
            let command = protocol::decode_command(line).map_err(|_| Disconnect::BAD_REQUEST)?;
            let method = command.method().ok_or(Disconnect::BAD_REQUEST)?;
            self.handle_command(command.id, method).await?;
            if self.outbox.closing().is_some() {
                break;
            }
        }
        Ok(())
    }

    async fn handle_command(&mut self, id: u32, method: Method<'_>) -> Result<(), Disconnect> {
        if let Method::Pong = method {
            self.pong_seen = true;
            return Ok(());
        }
        // Every other command expects a reply, so it needs an id; `send` alone is fire-and-forget.
        if id == 0 && !matches!(method, Method::Send) {
            return Err(Disconnect::BAD_REQUEST);
        }
        let started = Instant::now();
        let kind = match &method {
            Method::Connect(_) => CommandKind::Connect,
            Method::Subscribe(_) => CommandKind::Subscribe,
            Method::Unsubscribe(_) => CommandKind::Unsubscribe,
            Method::Rpc(_) => CommandKind::Rpc,
            Method::Refresh(_) => CommandKind::Refresh,
            Method::SubRefresh(_) => CommandKind::SubRefresh,
            Method::Publish(_) => CommandKind::Publish,
            _ => CommandKind::Other,
        };
        let result = match method {
            Method::Connect(req) => self.connect(id, req).await,
            _ if self.identity.is_none() => Err(Disconnect::BAD_REQUEST),
            method => {
                if self.rate_limited() {
                    self.hub
                        .metrics
                        .commands_rejected_rate_total
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.reply_error(id, &ProtoError::too_many_requests());
                    return Ok(());
                }
                self.dispatch(id, method).await
            }
        };
        self.hub.metrics.observe_command(kind, started.elapsed());
        result
    }

    fn rate_limited(&self) -> bool {
        let (Some(limiter), Some(identity)) = (&self.limiter, &self.identity) else {
            return false;
        };
        limiter.check().is_err() || !self.hub.check_user_rate(&identity.user, identity.tier)
    }

    async fn dispatch(&mut self, id: u32, method: Method<'_>) -> Result<(), Disconnect> {
        match method {
            Method::Subscribe(req) => {
                if let Err(e) = self.subscribe(id, req).await {
                    self.reply_error(id, &e);
                }
            }
            Method::Unsubscribe(req) => {
                if let Some(sub) = self.subs.remove(&req.channel) {
                    self.hub.remove_subscriber(&req.channel, &sub).await;
                    if let Some(identity) = &self.identity
                        && counted_per_user(&req.channel)
                    {
                        self.hub
                            .users()
                            .release_channel(&identity.user, &self.id, &req.channel)
                            .await;
                    }
                }
                self.reply(id, ReplyBody::Unsubscribe(Empty {}));
            }
            Method::Rpc(req) => match self.rpc(req).await {
                Ok(result) => self.reply(id, ReplyBody::Rpc(result)),
                Err(e) => self.reply_error(id, &e),
            },
            Method::Refresh(req) => self.refresh(id, req).await?,
            Method::SubRefresh(req) => {
                if self.subs.contains_key(&req.channel) {
                    self.reply(id, ReplyBody::SubRefresh(SubRefreshResult { expires: false, ttl: 0 }));
                } else {
                    self.reply_error(id, &ProtoError::bad_request().with_message("not subscribed"));
                }
            }
            // Clients never publish: market data comes from the hub's sources only.
            Method::Publish(_) => self.reply_error(id, &ProtoError::permission_denied()),
            Method::Presence | Method::PresenceStats(_) | Method::History | Method::Ping => {
                self.reply_error(id, &ProtoError::not_available())
            }
            // Asynchronous messages have no handler yet; the protocol sends no reply.
            Method::Send => {}
            Method::Connect(_) | Method::Pong => {}
        }
        Ok(())
    }

    async fn connect(&mut self, id: u32, req: &ConnectRequest) -> Result<(), Disconnect> {
        if self.identity.is_some() {
            return Err(Disconnect::BAD_REQUEST);
        }
        let Some(claims) = self.verify_connect_token(id, &req.token).await? else {
            return Ok(());
        };
        self.check_not_revoked(&claims).await?;
        self.admit(&claims).await?;
        let user = claims.sub.clone();
        self.identity = Some(Identity {
            user: claims.sub,
            tier: claims.tier,
            expires_at: claims.exp,
            scopes: claims.scopes,
        });
        let (results, live) = match self.subscribe_personal(&user, req).await {
            Ok(subscribed) => subscribed,
            Err(e) => {
                self.reply_error(id, &e);
                return Ok(());
            }
        };
        self.reply_connected(id, results, &live);
        Ok(())
    }

    /// Check a `connect` token. `Ok(None)` when the client was sent an error reply (missing or
    /// expired token) and stays unauthenticated; `Err` closes the connection (invalid token).
    async fn verify_connect_token(&self, id: u32, token: &str) -> Result<Option<Claims>, Disconnect> {
        if token.is_empty() {
            self.reply_error(id, &ProtoError::unauthorized().with_message("token required"));
            return Ok(None);
        }
        match self.hub.verifier.verify_fresh(token).await {
            Ok(c) => Ok(Some(c)),
            // Expiry is recoverable: the client may fetch a fresh token and connect again.
            Err(AuthError::Expired) => {
                self.reply_error(id, &ProtoError::token_expired());
                Ok(None)
            }
            Err(e) => {
                tracing::debug!(error = %e, "connect refused");
                Err(Disconnect::INVALID_TOKEN)
            }
        }
    }

    /// Refuse a token whose id (`jti`) has been revoked.
    async fn check_not_revoked(&self, claims: &Claims) -> Result<(), Disconnect> {
        if let Some(jti) = &claims.jti {
            match self.hub.users().is_revoked(jti).await {
                Ok(false) => {}
                Ok(true) => return Err(Disconnect::TOKEN_REVOKED),
                // Redis unreachable: serve (the bus is down too; revocations are re-checked at refresh).
                Err(e) => tracing::warn!(error = %e, "revocation check failed; connection allowed"),
            }
        }
        Ok(())
    }

    /// Count the connection against the user's limits, on this node and across nodes, and set up
    /// its command rate limiter. `Err` (limit reached) leaves nothing registered.
    async fn admit(&mut self, claims: &Claims) -> Result<(), Disconnect> {
        self.hub.register_session(
            &self.id,
            &claims.sub,
            claims.tier,
            claims.jti.clone(),
            self.outbox.clone(),
        )?;
        let tier = self.hub.settings.tier(claims.tier);
        match self
            .hub
            .users()
            .acquire(&claims.sub, &self.id, tier.connections_per_user)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                // No identity yet, so `close` would not undo the local registration: undo it here.
                self.hub.unregister_session(&self.id);
                return Err(Disconnect::CONNECTION_LIMIT);
            }
            Err(e) => tracing::warn!(error = %e, "cross-node connection count failed; connection allowed"),
        }
        self.limiter = Some(
            self.hub
                .connection_limiter(quota(tier.commands_per_second, tier.command_burst)),
        );
        let span = tracing::Span::current();
        span.record("user", claims.sub.as_str());
        span.record("tier", claims.tier.as_str());
        Ok(())
    }

    /// Server-side subscriptions: the user's personal channels, recovered when `req` asks. Returns
    /// each channel's result and the subscribers with the offset they go live after; `Err` is the
    /// error to reply with (channels already subscribed stay in `subs`, released by `close`).
    async fn subscribe_personal(&mut self, user: &str, req: &ConnectRequest) -> Result<PersonalSubs, ProtoError> {
        let mut results = BTreeMap::new();
        let mut live = Vec::new();
        // An API key's token gets the personal channels its scopes cover.
        let scopes_allow = |channel: &str| {
            let Some(identity) = &self.identity else { return false };
            match ChannelKind::parse(channel) {
                Some(ChannelKind::Alerts(_)) => identity.allows("alerts:read"),
                Some(ChannelKind::Advisor(_)) => identity.allows("advisor"),
                _ => identity.scopes.is_none(),
            }
        };
        let channels: Vec<String> = personal_channels(user)
            .into_iter()
            .filter(|c| scopes_allow(c))
            .collect();
        for channel in channels {
            let sub = Subscriber::new(self.outbox.clone());
            if self.hub.add_subscriber(&channel, sub.clone()).await.is_err() {
                return Err(ProtoError::internal());
            }
            self.subs.insert(channel.clone(), sub.clone());
            let recovery = req.subs.get(&channel).filter(|r| r.recover);
            let (mut result, top, snapshot) = self.position_subscription(&channel, recovery).await?;
            result.data = snapshot.map(|s| RawValue::to_owned(&s));
            live.push((sub, top));
            results.insert(channel, result);
        }
        Ok((results, live))
    }

    /// Queue the `connect` reply and put the server-side subscribers live right after it, so no
    /// publication reaches the client before its reply.
    fn reply_connected(&self, id: u32, results: BTreeMap<String, SubscribeResult>, live: &[(Arc<Subscriber>, u64)]) {
        let ttl = self.ttl();
        let reply = protocol::encode_reply(
            id,
            ReplyBody::Connect(ConnectResult {
                client: self.id.clone(),
                version: VERSION.into(),
                expires: true,
                ttl,
                ping: self.hub.settings.server.ping_interval_s,
                pong: true,
                subs: results,
                data: None,
            }),
        );
        let pairs: Vec<(&Subscriber, u64)> = live.iter().map(|(s, top)| (s.as_ref(), *top)).collect();
        Subscriber::go_live(&self.outbox, Bytes::from(reply), &pairs);
    }

    fn ttl(&self) -> u32 {
        let exp = self.expires_at().unwrap_or(0);
        exp.saturating_sub(unix_now_s()).clamp(1, u32::MAX as u64) as u32
    }

    /// The subscribe result for a channel (recovered publications when asked) and the offset the
    /// subscriber goes live after.
    async fn position_subscription(
        &self,
        channel: &str,
        recovery: Option<&SubscribeRecovery>,
    ) -> Result<(SubscribeResult, u64, Option<Arc<RawValue>>), ProtoError> {
        let hub = &self.hub;
        let (publications, position, recovered) = match recovery {
            Some(r) => {
                let since = StreamPosition {
                    offset: r.offset,
                    epoch: r.epoch.clone(),
                };
                let rec = bus::recover(
                    hub.bus.as_ref(),
                    channel,
                    since,
                    hub.settings.bus.recovery_max_publications,
                )
                .await
                .map_err(|_| ProtoError::internal())?;
                (rec.publications, rec.position, rec.recovered)
            }
            None => {
                let h = hub
                    .bus
                    .history(
                        channel,
                        HistoryQuery {
                            since: None,
                            limit: 0,
                            reverse: false,
                        },
                    )
                    .await
                    .map_err(|_| ProtoError::internal())?;
                (Vec::new(), h.position, false)
            }
        };
        let top = position.offset;
        let result = SubscribeResult {
            recoverable: true,
            positioned: true,
            epoch: position.epoch,
            offset: position.offset,
            was_recovering: recovery.is_some(),
            recovered,
            publications: publications_out(publications),
            ..Default::default()
        };
        Ok((result, top, hub.snapshot(channel).await))
    }

    async fn subscribe(&mut self, id: u32, req: &SubscribeRequest) -> Result<(), ProtoError> {
        let identity = self.identity.as_ref().ok_or_else(ProtoError::unauthorized)?;
        if req.channel.is_empty() || req.kind != 0 {
            return Err(ProtoError::bad_request());
        }
        if self.subs.contains_key(&req.channel) {
            return Err(ProtoError::already_subscribed());
        }
        if !identity.allows("subscribe") {
            return Err(missing_scope("subscribe"));
        }
        let policy = self.hub.settings.tier(identity.tier);
        let kind = authorize_subscribe(policy, &identity.user, &req.channel)?;
        if !self.hub.channel_exists(&req.channel) {
            return Err(ProtoError::unknown_channel().with_message("no such model in the market"));
        }
        if self.subs.len() >= policy.channels_per_connection as usize {
            return Err(ProtoError::limit_exceeded().with_message("channel limit for your tier"));
        }
        let counted = matches!(kind, ChannelKind::Gpu(_)) && policy.max_gpu_channels > 0;
        if counted {
            // Per user, across their connections and the nodes (not per connection).
            let user = identity.user.clone();
            let users = self.hub.users();
            let acquired = users
                .acquire_channel(&user, &self.id, &req.channel, policy.max_gpu_channels)
                .await
                .map_err(|_| ProtoError::internal().with_message("bus unavailable, retry"))?;
            if !acquired {
                return Err(ProtoError::limit_exceeded().with_message("gpu channel limit for your tier"));
            }
        }
        let result = self.join(id, req).await;
        if result.is_err() && counted {
            let user = &self.identity.as_ref().expect("identified above").user;
            self.hub.users().release_channel(user, &self.id, &req.channel).await;
        }
        result
    }

    /// Add the connection to the channel's subscribers and answer with its position, recovered
    /// publications and snapshot.
    async fn join(&mut self, id: u32, req: &SubscribeRequest) -> Result<(), ProtoError> {
        let sub = Subscriber::new(self.outbox.clone());
        self.hub
            .add_subscriber(&req.channel, sub.clone())
            .await
            .map_err(|_| ProtoError::internal())?;
        let recovery = req.recover.then(|| SubscribeRecovery {
            recover: true,
            offset: req.offset,
            epoch: req.epoch.clone(),
        });
        match self.position_subscription(&req.channel, recovery.as_ref()).await {
            Ok((result, top, snapshot)) => {
                self.subs.insert(req.channel.clone(), sub.clone());
                let reply = protocol::encode_reply(id, ReplyBody::Subscribe(result));
                // The shared snapshot is written into the reply once, never cloned first.
                let reply = match snapshot {
                    Some(data) => with_data(reply, &data),
                    None => reply,
                };
                Subscriber::go_live(&self.outbox, Bytes::from(reply), &[(&sub, top)]);
                Ok(())
            }
            Err(e) => {
                self.hub.remove_subscriber(&req.channel, &sub).await;
                Err(e)
            }
        }
    }

    async fn rpc(&self, req: &RpcRequest) -> Result<RpcResult, ProtoError> {
        let identity = self.identity.as_ref().ok_or_else(ProtoError::unauthorized)?;
        if req.method.is_empty() {
            return Err(ProtoError::bad_request().with_message("rpc method required"));
        }
        let handler = self
            .hub
            .rpc_handler(&req.method)
            .ok_or_else(ProtoError::method_not_found)?;
        if req.method.starts_with("advisor.") && !identity.allows("advisor") {
            return Err(missing_scope("advisor"));
        }
        let ctx = RpcContext {
            client: self.id.clone(),
            user: identity.user.clone(),
            tier: identity.tier,
        };
        let data = handler.call(&ctx, req.data.as_deref()).await?;
        Ok(RpcResult { data })
    }

    async fn refresh(&mut self, id: u32, req: &RefreshRequest) -> Result<(), Disconnect> {
        let claims = match self.hub.verifier.verify_fresh(&req.token).await {
            Ok(c) => c,
            Err(AuthError::Expired) => {
                self.reply_error(id, &ProtoError::token_expired());
                return Ok(());
            }
            Err(_) => return Err(Disconnect::INVALID_TOKEN),
        };
        if let Some(jti) = &claims.jti
            && let Ok(true) = self.hub.users().is_revoked(jti).await
        {
            return Err(Disconnect::TOKEN_REVOKED);
        }
        let Some(identity) = self.identity.as_mut() else {
            return Err(Disconnect::BAD_REQUEST);
        };
        // A refreshed token must be for the same user, tier and scopes: anything else is a new
        // connection.
        if claims.sub != identity.user || claims.tier != identity.tier || claims.scopes != identity.scopes {
            return Err(Disconnect::INVALID_TOKEN);
        }
        identity.expires_at = claims.exp;
        self.hub.set_session_jti(&self.id, claims.jti);
        let ttl = self.ttl();
        self.reply(
            id,
            ReplyBody::Refresh(RefreshResult {
                client: self.id.clone(),
                version: VERSION.into(),
                expires: true,
                ttl,
            }),
        );
        Ok(())
    }

    /// Release everything the connection holds in the hub.
    pub async fn close(&mut self) {
        let (subs, identity) = (std::mem::take(&mut self.subs), self.identity.take());
        release(&self.hub, &self.id, subs, identity).await;
    }
}

/// A client dropped without [`Client::close`] (its connection task panicked, or was aborted)
/// still frees its subscriptions, session and per-user count, from a task of its own.
impl Drop for Client {
    fn drop(&mut self) {
        let (subs, identity) = (std::mem::take(&mut self.subs), self.identity.take());
        if subs.is_empty() && identity.is_none() {
            return;
        }
        let (hub, id) = (self.hub.clone(), std::mem::take(&mut self.id));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { release(&hub, &id, subs, identity).await });
        }
    }
}

/// Channels counted per user across connections and nodes (`tiers.<t>.max_gpu_channels`).
fn counted_per_user(channel: &str) -> bool {
    matches!(ChannelKind::parse(channel), Some(ChannelKind::Gpu(_)))
}

/// Free what a client holds in the hub.
async fn release(hub: &Hub, id: &str, subs: HashMap<String, Arc<Subscriber>>, identity: Option<Identity>) {
    for (channel, sub) in subs {
        hub.remove_subscriber(&channel, &sub).await;
        if let Some(identity) = &identity
            && counted_per_user(&channel)
        {
            hub.users().release_channel(&identity.user, id, &channel).await;
        }
    }
    if let Some(identity) = identity {
        hub.unregister_session(id);
        hub.users().release(&identity.user, id).await;
    }
}

/// A subscribe reply (`{"id":…,"subscribe":{…}}`, encoded without `data`) with `data` added as
/// the last field of its result.
fn with_data(reply: Vec<u8>, data: &RawValue) -> Vec<u8> {
    debug_assert!(reply.ends_with(b"}}"), "a subscribe reply ends its result and itself");
    let head = &reply[..reply.len() - 2];
    let empty = head.ends_with(b"{");
    let mut out = Vec::with_capacity(reply.len() + data.get().len() + 10);
    out.extend_from_slice(head);
    out.extend_from_slice(if empty { b"\"data\":" } else { b",\"data\":" });
    out.extend_from_slice(data.get().as_bytes());
    out.extend_from_slice(b"}}");
    out
}

fn publications_out(publications: Vec<Publication>) -> Vec<PublicationOut> {
    publications
        .into_iter()
        .filter_map(|p| {
            let text = String::from_utf8(p.data.to_vec()).ok()?;
            let data = serde_json::value::RawValue::from_string(text).ok()?;
            Some(PublicationOut { data, offset: p.offset })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::TokenVerifier;
    use crate::bus::MemoryBus;
    use crate::config::Settings;
    use crate::telemetry::Metrics;
    use proptest::prelude::*;
    use tokio_util::sync::CancellationToken;

    fn hub() -> Arc<Hub> {
        let settings = Arc::new(Settings::defaults());
        let bus = Arc::new(MemoryBus::new(&settings.bus));
        let verifier = Arc::new(TokenVerifier::new(&settings.auth).unwrap());
        let parts = crate::hub::HubParts {
            settings,
            bus,
            verifier,
            metrics: Arc::new(Metrics::default()),
            users: Arc::new(crate::bus::users::LocalUsers::default()),
            snapshots: Arc::new(crate::hub::NoSnapshots),
            rpc: Default::default(),
            leadership: crate::bus::leader::Leadership::single_node(),
            shutdown: CancellationToken::new(),
        };
        Hub::new(parts, "node-1".into())
    }

    #[test]
    fn a_reply_with_spliced_data_is_the_reply_serde_writes() {
        let data = RawValue::from_string(r#"{"items":{"a":[1,2]},"seq":3}"#.to_owned()).unwrap();
        let results = || {
            [
                SubscribeResult::default(),
                SubscribeResult {
                    recoverable: true,
                    epoch: "e".into(),
                    offset: 7,
                    ..Default::default()
                },
            ]
        };
        for (result, mut whole) in results().into_iter().zip(results()) {
            let spliced = with_data(protocol::encode_reply(4, ReplyBody::Subscribe(result)), &data);
            whole.data = Some(data.clone());
            let expected = protocol::encode_reply(4, ReplyBody::Subscribe(whole));
            let (a, b): (serde_json::Value, serde_json::Value) = (
                serde_json::from_slice(&spliced).unwrap(),
                serde_json::from_slice(&expected).unwrap(),
            );
            assert_eq!(a, b);
        }
    }

    #[tokio::test]
    async fn a_client_dropped_without_close_frees_its_session_and_subscriptions() {
        let hub = hub();
        let outbox = Arc::new(Outbox::new(1 << 20, 1024));
        let mut client = Client::new(hub.clone(), outbox.clone());
        let token = hub.verifier.mint("7", crate::tier::Tier::Enterprise, 60).unwrap();
        let connect = serde_json::json!({"id": 1, "connect": {"token": token}}).to_string();
        client.handle_frame(&connect).await.unwrap();
        let subscribe = serde_json::json!({"id": 2, "subscribe": {"channel": "market:summary"}}).to_string();
        client.handle_frame(&subscribe).await.unwrap();
        // market:summary and the user's personal channels, subscribed server-side.
        assert_eq!(hub.num_clients(), 1);
        assert!(hub.num_channels() >= 2, "{}", hub.num_channels());
        // As when the connection task panics: no close().
        drop(client);
        for _ in 0..100 {
            if (hub.num_clients(), hub.num_channels()) == (0, 0) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!(
            "still held: {} sessions, {} channels",
            hub.num_clients(),
            hub.num_channels()
        );
    }

    /// Every reply the client produced must be one JSON object; returns them.
    fn replies(outbox: &Outbox) -> Vec<serde_json::Value> {
        let mut batch = Vec::new();
        outbox.drain(&mut batch);
        batch
            .iter()
            .map(|b| serde_json::from_slice(b).expect("every queued message is JSON"))
            .collect()
    }

    fn check_outcome(result: Result<(), Disconnect>, outbox: &Outbox) {
        if let Err(d) = result {
            assert!(
                (3000..4000).contains(&d.code) || d.code == 1009,
                "close code {}",
                d.code
            );
        }
        for reply in replies(outbox) {
            if let Some(e) = reply.get("error") {
                let code = e["code"].as_u64().unwrap();
                assert!((100..=112).contains(&code), "error code {code}");
                assert!(reply["id"].as_u64().is_some_and(|id| id > 0));
            }
        }
    }

    fn command() -> impl Strategy<Value = String> {
        let method = prop_oneof![
            Just("connect"),
            Just("subscribe"),
            Just("unsubscribe"),
            Just("publish"),
            Just("rpc"),
            Just("refresh"),
            Just("sub_refresh"),
            Just("presence"),
            Just("history"),
            Just("send"),
            Just("bogus"),
        ];
        let value = prop_oneof![
            Just(serde_json::json!(null)),
            Just(serde_json::json!({})),
            Just(serde_json::json!({"channel": "market:summary"})),
            Just(serde_json::json!({"channel": "gpu:rtx-4090", "recover": true, "offset": 3, "epoch": "x"})),
            Just(serde_json::json!({"channel": "alerts:#1"})),
            Just(serde_json::json!({"method": "session.info"})),
            Just(serde_json::json!({"method": "nope", "data": [1, 2]})),
            Just(serde_json::json!({"token": "abc"})),
            Just(serde_json::json!({"channel": 5, "offset": -1})),
            any::<String>().prop_map(|s| serde_json::json!({"channel": s, "token": s})),
        ];
        (any::<u32>(), method, value).prop_map(|(id, m, v)| {
            let mut cmd = serde_json::json!({ m: v });
            if id % 5 != 0 {
                cmd["id"] = serde_json::json!(id % 1000);
            }
            cmd.to_string()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let hub = hub();
                let outbox = Arc::new(Outbox::new(1 << 20, 1024));
                let mut client = Client::new(hub, outbox.clone());
                let text = String::from_utf8_lossy(&bytes);
                let result = client.handle_frame(&text).await;
                check_outcome(result, &outbox);
                client.close().await;
            });
        }

        #[test]
        fn arbitrary_commands_never_panic(commands in proptest::collection::vec(command(), 1..12), connect_first in any::<bool>()) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let hub = hub();
                let outbox = Arc::new(Outbox::new(1 << 20, 1024));
                let mut client = Client::new(hub.clone(), outbox.clone());
                let mut frame = Vec::new();
                if connect_first {
                    let token = hub.verifier.mint("1", Tier::Professional, 60).unwrap();
                    frame.push(serde_json::json!({"id": 1, "connect": {"token": token}}).to_string());
                }
                frame.extend(commands);
                let result = client.handle_frame(&frame.join("\n")).await;
                check_outcome(result, &outbox);
                client.close().await;
                // Everything the connection held is released.
                assert_eq!(hub.num_channels(), 0);
                assert_eq!(hub.num_clients(), 0);
            });
        }
    }
}
