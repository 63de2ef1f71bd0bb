//! A reconnecting WebSocket client of the hub.
//!
//! One task per [`Client`] owns the socket: it connects with a token (or a token callback, asked
//! again before the token expires and after a `token expired` refusal), reconnects with exponential
//! backoff and jitter after a transport failure or a reconnecting close code, answers server pings
//! and treats a missing ping as a dead connection, and resubscribes every subscription after a
//! reconnect with recovery from its last offset and epoch. Server-side subscriptions (`alerts:#…`,
//! `advisor:#…`) are recovered the same way through `connect.subs`.
//!
//! Commands issued while the connection is down wait for it (up to the request timeout).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use crate::backoff::Backoff;
use crate::book::{Applied, Book, Resync};
use crate::protocol::{
    self, Command, ConnectRequest, ConnectResult, ProtoError, Raw, RefreshRequest, Reply, RpcRequest,
    SubscribeRecovery, SubscribeRequest, SubscribeResult, UnsubscribeRequest,
};

/// A token, or a callback that fetches a fresh one (called at every connect and before expiry).
#[derive(Clone)]
pub enum TokenSource {
    Static(String),
    Callback(Arc<dyn Fn() -> TokenFuture + Send + Sync>),
}

pub type TokenFuture = Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;

impl TokenSource {
    /// An API key (`gsk_…`): the client exchanges it for a connection token at every connect and
    /// before the token expires (`POST /api/v1/token` on the hub at `ws_url`).
    #[cfg(feature = "api-key")]
    pub fn api_key(ws_url: &str, key: impl Into<String>) -> Self {
        install_crypto_provider();
        let endpoint = http_origin(ws_url).map(|o| format!("{o}/api/v1/token"));
        let key: String = key.into();
        let http = reqwest::Client::new();
        Self::callback(move || {
            let (endpoint, key, http) = (endpoint.clone(), key.clone(), http.clone());
            async move {
                let endpoint = endpoint.ok_or("the hub URL is not ws:// or wss://")?;
                let response = http
                    .post(&endpoint)
                    .bearer_auth(&key)
                    .send()
                    .await
                    .map_err(|e| format!("exchanging the API key failed: {e}"))?;
                let status = response.status();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                match body["token"].as_str() {
                    Some(token) if status.is_success() => Ok(token.to_owned()),
                    _ => Err(format!(
                        "exchanging the API key failed: {}",
                        body["error"]["message"].as_str().unwrap_or(status.as_str())
                    )),
                }
            }
        })
    }

    /// A callback token source from an async function.
    pub fn callback<F, Fut>(f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, String>> + Send + 'static,
    {
        Self::Callback(Arc::new(move || Box::pin(f())))
    }

    async fn get(&self) -> Result<String, String> {
        match self {
            Self::Static(t) => Ok(t.clone()),
            Self::Callback(f) => f().await,
        }
    }
}

/// How to reach the hub and how to behave when it goes away.
#[derive(Clone)]
pub struct Options {
    /// `ws://host:port/connection/websocket`.
    pub url: String,
    pub token: TokenSource,
    /// Reported to the hub in `connect.name`.
    pub name: String,
    /// First reconnect delay; doubles per failed attempt up to `max_reconnect_delay`, with jitter.
    pub min_reconnect_delay: Duration,
    pub max_reconnect_delay: Duration,
    /// How long a request (connect, rpc) may wait for its reply.
    pub timeout: Duration,
    /// Extra time after the advertised ping interval before a silent connection counts as dead.
    pub max_server_ping_delay: Duration,
    /// Local address to connect from (to spread many connections over 127.0.0.x).
    pub bind: Option<std::net::IpAddr>,
    /// For `wss://`: the TLS settings (e.g. your own root certificates); `None`: the system's
    /// roots.
    #[cfg(feature = "tls")]
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Options {
    pub fn new(url: impl Into<String>, token: TokenSource) -> Self {
        Self {
            url: url.into(),
            token,
            name: "gpuscout-client-rust".into(),
            min_reconnect_delay: Duration::from_millis(200),
            max_reconnect_delay: Duration::from_secs(20),
            timeout: Duration::from_secs(10),
            max_server_ping_delay: Duration::from_secs(10),
            bind: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

/// The ring provider for rustls, installed once for the process (both the WebSocket's TLS and the
/// API key exchange use it).
#[cfg(any(feature = "tls", feature = "api-key"))]
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The hub's HTTP origin from its WebSocket URL (`wss://h:8443/connection/websocket` →
/// `https://h:8443`).
pub fn http_origin(ws_url: &str) -> Option<String> {
    let (scheme, rest) = ws_url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let http = match scheme {
        "wss" => "https",
        "ws" => "http",
        _ => return None,
    };
    Some(format!("{http}://{authority}"))
}

/// The connection's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Connecting,
    Connected {
        client: String,
    },
    /// Closed for good: by [`Client::close`] or a close code that forbids reconnecting.
    Closed {
        code: u16,
        reason: String,
    },
}

/// What happened to the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Connecting {
        attempt: u32,
    },
    Connected {
        client: String,
    },
    /// The connection went away; `reconnect` says whether the client tries again.
    Disconnected {
        code: u16,
        reason: String,
        reconnect: bool,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The hub answered with a protocol error.
    #[error("hub error {0}")]
    Protocol(#[from] ProtoError),
    #[error("no reply in time")]
    Timeout,
    /// The client was closed (or closed itself for good).
    #[error("client closed")]
    Closed,
    /// The connection went while the request was in flight; the client reconnects.
    #[error("disconnected before the reply")]
    Disconnected,
    #[error("bad data: {0}")]
    Json(#[from] serde_json::Error),
}

/// What a subscription receives.
#[derive(Debug)]
pub enum SubEvent {
    /// The subscription is in place (again). `data` is the channel's snapshot where it has one;
    /// `recovered` says every publication missed while away follows (as `Publication`s).
    Subscribed {
        data: Option<Raw>,
        recovered: bool,
        was_recovering: bool,
    },
    Publication {
        data: Raw,
        offset: u64,
    },
    /// The hub refused the subscription for good (permission, limits); it is not retried. A
    /// temporary refusal (rate limits) is retried with backoff and not reported.
    Error(ProtoError),
    /// The hub removed the subscription for good.
    Unsubscribed {
        code: u32,
        reason: String,
    },
}

/// Which registration of a channel an op comes from: a dropped, replaced `Subscription` must not
/// touch its successor.
type RegId = u64;

enum Op {
    Subscribe {
        channel: String,
        server_side: bool,
        events: mpsc::UnboundedSender<SubEvent>,
        id: RegId,
    },
    Resubscribe {
        channel: String,
        recover: bool,
        id: RegId,
    },
    Unsubscribe {
        channel: String,
        id: RegId,
    },
    Rpc {
        method: String,
        data: Option<Raw>,
        done: oneshot::Sender<Result<Option<Raw>, Error>>,
    },
    Close,
}

/// A client of one hub. Cheap to clone; the connection closes when [`Client::close`] is called or
/// every clone is dropped.
#[derive(Clone)]
pub struct Client {
    ops: mpsc::UnboundedSender<Op>,
    events: broadcast::Sender<Event>,
    state: watch::Receiver<State>,
    timeout: Duration,
    next_reg: Arc<std::sync::atomic::AtomicU64>,
}

impl Client {
    /// Start connecting (in a task of the current tokio runtime).
    pub fn connect(options: Options) -> Self {
        let (ops, ops_rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(64);
        let (state_tx, state) = watch::channel(State::Connecting);
        let timeout = options.timeout;
        let actor = Actor {
            options,
            ops: ops_rx,
            events: events.clone(),
            state: state_tx,
            subs: HashMap::new(),
            queued: Vec::new(),
            attempt: 0,
        };
        tokio::spawn(actor.run());
        Self {
            ops,
            events,
            state,
            timeout,
            next_reg: Arc::new(std::sync::atomic::AtomicU64::new(1)),
        }
    }

    /// Connection events from now on.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    pub fn state(&self) -> State {
        self.state.borrow().clone()
    }

    /// Wait until connected (the client id) or closed for good.
    pub async fn connected(&self) -> Result<String, Error> {
        let mut state = self.state.clone();
        let wait = state.wait_for(|s| !matches!(s, State::Connecting));
        match tokio::time::timeout(self.timeout, wait).await {
            Err(_) => Err(Error::Timeout),
            Ok(Err(_)) => Err(Error::Closed),
            Ok(Ok(s)) => match &*s {
                State::Connected { client } => Ok(client.clone()),
                _ => Err(Error::Closed),
            },
        }
    }

    /// Subscribe to a channel; events arrive on the returned [`Subscription`].
    pub fn subscribe(&self, channel: impl Into<String>) -> Subscription {
        self.register(channel.into(), false)
    }

    /// Receive a server-side subscription's publications (the hub subscribes the user to
    /// `alerts:#<uid>`, `advisor:#<uid>` and `portfolio:#<uid>` at connect; nothing is sent for it).
    pub fn server_subscription(&self, channel: impl Into<String>) -> Subscription {
        self.register(channel.into(), true)
    }

    fn register(&self, channel: String, server_side: bool) -> Subscription {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.next_reg.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = self.ops.send(Op::Subscribe {
            channel: channel.clone(),
            server_side,
            events: tx,
            id,
        });
        Subscription {
            channel,
            id,
            events: rx,
            ops: self.ops.clone(),
        }
    }

    /// A market book on a channel: snapshot and deltas applied, every checksum verified.
    pub fn market_book(&self, channel: impl Into<String>) -> MarketBook {
        MarketBook {
            sub: self.subscribe(channel),
            book: Book::new(),
            pending: std::collections::VecDeque::new(),
            resyncing: false,
            resync_streak: 0,
            last_resync: None,
        }
    }

    /// The user's own machines (`portfolio:#<user>`, a server-side subscription) as a market book:
    /// the snapshot of the connect reply, then every delta, each checksum verified; on a gap it
    /// subscribes to the channel again for a fresh snapshot.
    pub fn portfolio_book(&self, user: &str) -> MarketBook {
        MarketBook {
            sub: self.server_subscription(format!("portfolio:#{user}")),
            book: Book::new(),
            pending: std::collections::VecDeque::new(),
            resyncing: false,
            resync_streak: 0,
            last_resync: None,
        }
    }

    /// Call an RPC method; the result's `data` (JSON `null` when the method returned none).
    pub async fn rpc(&self, method: &str, data: &impl Serialize) -> Result<Value, Error> {
        let data = RawValue::from_string(serde_json::to_string(data)?)?;
        let (done, rx) = oneshot::channel();
        self.ops
            .send(Op::Rpc {
                method: method.to_owned(),
                data: Some(data),
                done,
            })
            .map_err(|_| Error::Closed)?;
        match tokio::time::timeout(self.timeout, rx).await {
            Err(_) => Err(Error::Timeout),
            Ok(Err(_)) => Err(Error::Closed),
            Ok(Ok(result)) => match result? {
                Some(raw) => Ok(serde_json::from_str(raw.get())?),
                None => Ok(Value::Null),
            },
        }
    }

    /// Close the connection for good (code 1000).
    pub fn close(&self) {
        let _ = self.ops.send(Op::Close);
    }
}

/// One channel's events. Dropping it unsubscribes.
pub struct Subscription {
    channel: String,
    id: RegId,
    events: mpsc::UnboundedReceiver<SubEvent>,
    ops: mpsc::UnboundedSender<Op>,
}

impl Subscription {
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The next event; `None` once the client is closed.
    pub async fn next(&mut self) -> Option<SubEvent> {
        self.events.recv().await
    }

    /// Subscribe again: with recovery from the last position, or from scratch (a fresh snapshot).
    pub fn resubscribe(&self, recover: bool) {
        let _ = self.ops.send(Op::Resubscribe {
            channel: self.channel.clone(),
            recover,
            id: self.id,
        });
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let _ = self.ops.send(Op::Unsubscribe {
            channel: std::mem::take(&mut self.channel),
            id: self.id,
        });
    }
}

/// What a [`MarketBook`] reports.
#[derive(Debug, Clone, PartialEq)]
pub enum BookEvent {
    /// The book changed (a snapshot or a delta was applied).
    Update(Applied),
    /// The book was refused a payload and resubscribes for a fresh snapshot.
    Resync(Resync),
    /// The hub refused the subscription.
    Error(ProtoError),
}

/// A market channel kept exact: see [`crate::book`]. Resyncs (resubscribes without recovery) by
/// itself on a gap or a checksum mismatch.
pub struct MarketBook {
    sub: Subscription,
    book: Book,
    pending: std::collections::VecDeque<BookEvent>,
    /// A fresh snapshot was asked for: publications are skipped until it arrives.
    resyncing: bool,
    /// Resyncs in a row (each less than a minute after the previous), for the backoff.
    resync_streak: u32,
    last_resync: Option<Instant>,
}

impl MarketBook {
    pub fn book(&self) -> &Book {
        &self.book
    }

    pub fn channel(&self) -> &str {
        self.sub.channel()
    }

    /// The next change to the book; `None` once the client is closed.
    pub async fn next(&mut self) -> Option<BookEvent> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            let payload = match self.sub.next().await? {
                SubEvent::Error(e) => return Some(BookEvent::Error(e)),
                SubEvent::Unsubscribed { code, reason } => {
                    return Some(BookEvent::Error(ProtoError {
                        code,
                        message: reason,
                        temporary: false,
                    }));
                }
                SubEvent::Subscribed { data, recovered, .. } => {
                    self.resyncing = false;
                    // A recovered subscription continues from the book's own state.
                    if recovered && self.book.is_live() {
                        continue;
                    }
                    self.book.invalidate();
                    match data {
                        Some(d) => d,
                        None => continue,
                    }
                }
                // Deltas for the position given up: the fresh snapshot replaces them.
                SubEvent::Publication { .. } if self.resyncing => continue,
                SubEvent::Publication { data, .. } => data,
            };
            let Ok(value) = serde_json::from_str::<Value>(payload.get()) else {
                continue;
            };
            match self.book.apply(&value) {
                Applied::Ignored | Applied::Skipped { .. } => continue,
                Applied::Resync(reason) => {
                    // One resubscribe per resync, and resyncs in quick succession (a snapshot that
                    // keeps failing its checksum) back off: 0, 0.5, 1, 2 … 30 s.
                    self.resyncing = true;
                    let now = Instant::now();
                    let recent = self.last_resync.is_some_and(|t| now - t < Duration::from_secs(60));
                    self.resync_streak = if recent { self.resync_streak + 1 } else { 0 };
                    self.last_resync = Some(now);
                    if self.resync_streak > 0 {
                        let ms = 250u64.saturating_mul(1 << self.resync_streak.min(7)).min(30_000);
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                    }
                    self.sub.resubscribe(false);
                    return Some(BookEvent::Resync(reason));
                }
                applied => return Some(BookEvent::Update(applied)),
            }
        }
    }
}

struct SubState {
    /// The listener; `None` for a server-side channel nobody listens to (yet): its events wait
    /// in `backlog` for the first listener.
    events: Option<mpsc::UnboundedSender<SubEvent>>,
    backlog: Vec<SubEvent>,
    owner: RegId,
    server_side: bool,
    offset: u64,
    epoch: String,
    recoverable: bool,
    /// Temporary subscribe refusals in a row (rate limits), for the retry backoff.
    retries: u32,
}

/// Events kept for a server-side channel until a listener registers.
const BACKLOG_MAX: usize = 10_000;

/// Retries of a temporarily refused subscribe (rate limits): windows of 0.5, 1, 2 … 30 s.
const SUBSCRIBE_RETRY: Backoff = Backoff::from_millis(500, 30_000);

impl SubState {
    fn new(events: Option<mpsc::UnboundedSender<SubEvent>>, owner: RegId, server_side: bool) -> Self {
        Self {
            events,
            backlog: Vec::new(),
            owner,
            server_side,
            offset: 0,
            epoch: String::new(),
            recoverable: false,
            retries: 0,
        }
    }

    fn emit(&mut self, event: SubEvent) {
        match &self.events {
            Some(tx) => {
                let _ = tx.send(event);
            }
            None if self.backlog.len() < BACKLOG_MAX => self.backlog.push(event),
            None => {}
        }
    }
}

enum Pending {
    Connect,
    Refresh,
    Subscribe(String),
    Rpc(oneshot::Sender<Result<Option<Raw>, Error>>),
    Other,
}

/// How a session ended.
enum Ended {
    Closed,
    Disconnected { code: u16, reason: String, reconnect: bool },
}

#[cfg(feature = "tls")]
type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
#[cfg(not(feature = "tls"))]
type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

struct Actor {
    options: Options,
    ops: mpsc::UnboundedReceiver<Op>,
    events: broadcast::Sender<Event>,
    state: watch::Sender<State>,
    subs: HashMap<String, SubState>,
    /// RPCs asked while disconnected.
    queued: Vec<Op>,
    attempt: u32,
}

/// Whether a client reconnects after a close code (the protocol's ranges: 3000–3499 and
/// 4000–4499 reconnect, 3500–3999 and 4500–4999 do not; transport codes do).
pub fn close_code_reconnects(code: u16) -> bool {
    // 1009: a message over the hub's size limit; the same connect would be refused again.
    !((3500..4000).contains(&code) || (4500..5000).contains(&code) || code == 1009)
}

impl Actor {
    async fn run(mut self) {
        loop {
            let _ = self.state.send(State::Connecting);
            let _ = self.events.send(Event::Connecting { attempt: self.attempt });
            let ended = self.session().await;
            let (code, reason) = match ended {
                Ended::Closed => (1000, "client closed".to_owned()),
                Ended::Disconnected {
                    code,
                    reason,
                    reconnect,
                } => {
                    let _ = self.events.send(Event::Disconnected {
                        code,
                        reason: reason.clone(),
                        reconnect,
                    });
                    if reconnect {
                        let _ = self.state.send(State::Connecting);
                        if self.wait_backoff().await {
                            continue;
                        }
                    }
                    (code, reason)
                }
            };
            self.shut(code, reason);
            return;
        }
    }

    fn shut(&mut self, code: u16, reason: String) {
        for op in self.queued.drain(..) {
            if let Op::Rpc { done, .. } = op {
                let _ = done.send(Err(Error::Closed));
            }
        }
        self.subs.clear();
        let _ = self.state.send(State::Closed { code, reason });
    }

    /// Sleep before the next attempt, taking ops meanwhile; false when the client was closed.
    async fn wait_backoff(&mut self) -> bool {
        // Full jitter: clients cut off together do not return together.
        let delay = Backoff::new(self.options.min_reconnect_delay, self.options.max_reconnect_delay).wait(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return true,
                op = self.ops.recv() => match op {
                    None | Some(Op::Close) => return false,
                    Some(op) => self.offline_op(op),
                },
            }
        }
    }

    /// Record a subscription. A server-side one keeps the position already tracked for it and gets
    /// what arrived while nobody listened; for a client-side one, `Some(replaced)` says a
    /// subscribe must be sent (after an unsubscribe when it replaced an earlier one).
    fn register(
        &mut self,
        channel: String,
        server_side: bool,
        events: mpsc::UnboundedSender<SubEvent>,
        id: RegId,
    ) -> Option<bool> {
        if server_side && let Some(existing) = self.subs.get_mut(&channel) {
            for event in existing.backlog.drain(..) {
                let _ = events.send(event);
            }
            existing.events = Some(events);
            existing.owner = id;
            existing.server_side = true;
            return None;
        }
        let replaced = self.subs.insert(channel, SubState::new(Some(events), id, server_side));
        (!server_side).then(|| replaced.is_some_and(|s| !s.server_side))
    }

    /// Forget registration `id` of `channel` (not a later one); whether a client-side
    /// subscription went. A server-side channel keeps its position for a later listener.
    fn unregister(&mut self, channel: &str, id: RegId) -> bool {
        let Some(sub) = self.subs.get_mut(channel) else {
            return false;
        };
        if sub.owner != id {
            return false;
        }
        if sub.server_side {
            sub.events = None;
            sub.owner = 0;
            return false;
        }
        self.subs.remove(channel);
        true
    }

    fn owns(&self, channel: &str, id: RegId) -> bool {
        self.subs.get(channel).is_some_and(|s| s.owner == id && !s.server_side)
    }

    /// An op while disconnected: recorded, acted on at the next connect.
    fn offline_op(&mut self, op: Op) {
        match op {
            Op::Subscribe {
                channel,
                server_side,
                events,
                id,
            } => {
                self.register(channel, server_side, events, id);
            }
            Op::Resubscribe { channel, recover, id } => {
                if !recover
                    && self.owns(&channel, id)
                    && let Some(s) = self.subs.get_mut(&channel)
                {
                    s.recoverable = false;
                }
            }
            Op::Unsubscribe { channel, id } => {
                self.unregister(&channel, id);
            }
            op @ Op::Rpc { .. } => self.queued.push(op),
            Op::Close => {}
        }
    }

    async fn open_socket(&self) -> Result<Socket, String> {
        let url = &self.options.url;
        let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("bad url {url}"))?;
        let authority = rest.split('/').next().unwrap_or_default();
        // A port is optional in the URL, not for the lookup.
        let has_port = authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok());
        let authority = match (has_port, scheme) {
            (true, _) => authority.to_owned(),
            (false, "wss") => format!("{authority}:443"),
            (false, _) => format!("{authority}:80"),
        };
        let addr: SocketAddr = tokio::net::lookup_host(authority.as_str())
            .await
            .map_err(|e| e.to_string())?
            .next()
            .ok_or_else(|| format!("{authority} does not resolve"))?;
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .map_err(|e| e.to_string())?;
        if let Some(ip) = self.options.bind {
            socket.bind(SocketAddr::new(ip, 0)).map_err(|e| e.to_string())?;
        }
        let stream = socket.connect(addr).await.map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        #[cfg(feature = "tls")]
        let (ws, _) = {
            install_crypto_provider();
            let connector = self.options.tls.clone().map(tokio_tungstenite::Connector::Rustls);
            tokio_tungstenite::client_async_tls_with_config(url.as_str(), stream, None, connector)
                .await
                .map_err(|e| e.to_string())?
        };
        #[cfg(not(feature = "tls"))]
        let (ws, _) = tokio_tungstenite::client_async(url.as_str(), stream)
            .await
            .map_err(|e| e.to_string())?;
        Ok(ws)
    }

    fn transport_error(reason: String) -> Ended {
        Ended::Disconnected {
            code: 0,
            reason,
            reconnect: true,
        }
    }

    async fn session(&mut self) -> Ended {
        // Registrations made before this attempt go into the connect (server-side positions)
        // and the first batch of subscribes.
        while let Ok(op) = self.ops.try_recv() {
            if let Op::Close = op {
                return Ended::Closed;
            }
            self.offline_op(op);
        }
        // The token first: the hub allows a new socket only a few seconds to send `connect`.
        let token = match tokio::time::timeout(self.options.timeout, self.options.token.get()).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => return Self::transport_error(format!("token: {e}")),
            Err(_) => return Self::transport_error("token: no answer in time".into()),
        };
        let opened = tokio::time::timeout(self.options.timeout, self.open_socket()).await;
        let mut ws = match opened {
            Err(_) => return Self::transport_error("connect timed out".into()),
            Ok(Err(e)) => return Self::transport_error(e),
            Ok(Ok(ws)) => ws,
        };
        let subs = self
            .subs
            .iter()
            .filter(|(_, s)| s.server_side && s.recoverable)
            .map(|(c, s)| {
                let position = SubscribeRecovery {
                    recover: true,
                    offset: s.offset,
                    epoch: s.epoch.clone(),
                };
                (c.clone(), position)
            })
            .collect();
        let connect = Command {
            id: 1,
            connect: Some(ConnectRequest {
                token,
                subs,
                name: self.options.name.clone(),
                version: env!("CARGO_PKG_VERSION").into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        if let Err(e) = ws.send(Message::text(protocol::encode_command(&connect))).await {
            return Self::transport_error(e.to_string());
        }
        let mut session = Session {
            next_id: 2,
            pending: HashMap::from([(1, Pending::Connect)]),
            ping: None,
            refresh_at: None,
            pong: false,
            retry: Vec::new(),
        };
        let connect_deadline = Instant::now() + self.options.timeout;
        let mut connected = false;
        loop {
            let ping_deadline = session
                .ping
                .map(|(last, every)| last + every + self.options.max_server_ping_delay);
            let wake = if connected {
                ping_deadline.unwrap_or_else(far_future)
            } else {
                connect_deadline
            };
            tokio::select! {
                msg = ws.next() => {
                    let text = match msg {
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Close(frame))) => return closed_by_hub(frame),
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => return Self::transport_error(e.to_string()),
                        None => return Self::transport_error("connection closed".into()),
                    };
                    if let Some((last, _)) = session.ping.as_mut() {
                        *last = Instant::now();
                    }
                    let mut out = Vec::new();
                    for line in protocol::split_frame(text.as_str()) {
                        let Ok(reply) = protocol::decode_reply(line) else { continue };
                        if reply.is_ping() {
                            if session.pong {
                                out.push("{}".to_owned());
                            }
                            continue;
                        }
                        match self.handle(&mut session, reply, &mut out) {
                            Ok(true) => connected = true,
                            Ok(false) => {}
                            Err(ended) => {
                                let _ = ws.close(None).await;
                                return ended;
                            }
                        }
                    }
                    if let Err(e) = send_batched(&mut ws, out).await {
                        return Self::transport_error(e);
                    }
                }
                op = self.ops.recv() => {
                    let mut out = Vec::new();
                    match op {
                        None | Some(Op::Close) => {
                            let _ = ws.close(Some(CloseFrame { code: 1000.into(), reason: "".into() })).await;
                            return Ended::Closed;
                        }
                        // Before the connect reply: recorded, acted on once connected.
                        Some(op) if !connected => self.offline_op(op),
                        Some(op) => self.online_op(&mut session, op, &mut out),
                    }
                    if let Err(e) = send_batched(&mut ws, out).await {
                        return Self::transport_error(e);
                    }
                }
                _ = tokio::time::sleep_until(session.next_retry()), if connected && !session.retry.is_empty() => {
                    let now = Instant::now();
                    let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut session.retry).into_iter().partition(|(at, _)| *at <= now);
                    session.retry = later;
                    let mut out = Vec::new();
                    for (_, channel) in due {
                        self.subscribe_cmd(&mut session, &channel, true, &mut out);
                    }
                    if let Err(e) = send_batched(&mut ws, out).await {
                        return Self::transport_error(e);
                    }
                }
                _ = tokio::time::sleep_until(session.refresh_at.unwrap_or_else(far_future)), if connected => {
                    session.refresh_at = None;
                    // Bounded: the socket is not read while the callback runs.
                    match tokio::time::timeout(Duration::from_secs(5), self.options.token.get()).await {
                        Ok(Ok(token)) => {
                            let id = session.track(Pending::Refresh);
                            let cmd = Command { id, refresh: Some(RefreshRequest { token }), ..Default::default() };
                            if let Err(e) = ws.send(Message::text(protocol::encode_command(&cmd))).await {
                                return Self::transport_error(e.to_string());
                            }
                        }
                        // Retry shortly; the hub closes with 3005 if the token runs out first.
                        _ => session.refresh_at = Some(Instant::now() + Duration::from_secs(5)),
                    }
                }
                _ = tokio::time::sleep_until(wake) => {
                    let _ = ws.close(None).await;
                    let reason = if connected { "no ping from the hub" } else { "connect timed out" };
                    return Self::transport_error(reason.into());
                }
            }
        }
    }

    /// Handle one reply or push; `Ok(true)` when it completed the connect.
    fn handle(&mut self, session: &mut Session, reply: Reply, out: &mut Vec<String>) -> Result<bool, Ended> {
        if let Some(push) = reply.push {
            if let Some(p) = push.publication {
                self.deliver(&push.channel, p.data, p.offset);
            } else if let Some(u) = push.unsubscribe {
                // Codes from 2500 ask the client to subscribe again; below, the server is done.
                if u.code >= 2500 {
                    self.subscribe_cmd(session, &push.channel, true, out);
                } else if let Some(mut s) = self.subs.remove(&push.channel) {
                    s.emit(SubEvent::Unsubscribed {
                        code: u.code,
                        reason: u.reason,
                    });
                }
            }
            return Ok(false);
        }
        let Some(pending) = session.pending.remove(&reply.id) else {
            return Ok(false);
        };
        match pending {
            Pending::Connect => match (reply.error, reply.connect) {
                (Some(e), _) => Err(self.connect_refused(e)),
                (None, Some(result)) => {
                    self.on_connected(session, result, out);
                    Ok(true)
                }
                (None, None) => Err(Self::transport_error("connect reply without a result".into())),
            },
            Pending::Subscribe(channel) => {
                match (reply.error, reply.subscribe) {
                    (Some(e), _) if e.temporary => {
                        // Rate limits: try again after a pause growing with each refusal in a row
                        // (0.5, 1, 2 … 30 s, with jitter); the listener hears nothing of it.
                        if let Some(s) = self.subs.get_mut(&channel) {
                            s.retries = s.retries.saturating_add(1);
                            let wait = SUBSCRIBE_RETRY.wait(s.retries - 1);
                            session.retry.push((Instant::now() + wait, channel));
                        }
                    }
                    (Some(e), _) => {
                        if let Some(mut s) = self.subs.remove(&channel) {
                            s.emit(SubEvent::Error(e));
                        }
                    }
                    (None, Some(result)) => self.on_subscribed(&channel, result),
                    (None, None) => {}
                }
                Ok(false)
            }
            Pending::Rpc(done) => {
                let result = match (reply.error, reply.rpc) {
                    (Some(e), _) => Err(Error::Protocol(e)),
                    (None, rpc) => Ok(rpc.and_then(|r| r.data)),
                };
                let _ = done.send(result);
                Ok(false)
            }
            Pending::Refresh => {
                match (reply.error, reply.refresh) {
                    // Refused (expired, or the hub busy): fetch another token shortly.
                    (Some(_), _) => session.refresh_at = Some(Instant::now() + Duration::from_secs(5)),
                    (None, Some(refresh)) if refresh.expires => session.refresh_at = Some(refresh_time(refresh.ttl)),
                    _ => {}
                }
                Ok(false)
            }
            Pending::Other => Ok(false),
        }
    }

    fn connect_refused(&mut self, e: ProtoError) -> Ended {
        // An expired token is fetched again at once by a callback; a static one cannot improve.
        // Codes under 100 are transport-level and temporary, as the protocol says.
        let callback = matches!(self.options.token, TokenSource::Callback(_));
        let reconnect = e.temporary || e.code < 100 || (e.code == 109 && callback);
        Ended::Disconnected {
            code: e.code as u16,
            reason: e.message,
            reconnect,
        }
    }

    fn on_connected(&mut self, session: &mut Session, result: ConnectResult, out: &mut Vec<String>) {
        self.attempt = 0;
        if result.ping > 0 {
            session.ping = Some((Instant::now(), Duration::from_secs(result.ping as u64)));
        }
        session.pong = result.pong;
        if result.expires && matches!(self.options.token, TokenSource::Callback(_)) {
            session.refresh_at = Some(refresh_time(result.ttl));
        }
        for (channel, sub) in result.subs {
            // One nobody listens to yet: its position is tracked so a later listener recovers.
            // What arrives for it waits in its backlog for the first listener.
            self.subs
                .entry(channel.clone())
                .or_insert_with(|| SubState::new(None, 0, true));
            if self.subs.get(&channel).is_some_and(|s| s.server_side) {
                self.on_subscribed(&channel, sub);
            }
        }
        let channels: Vec<String> = self
            .subs
            .iter()
            .filter(|(_, s)| !s.server_side)
            .map(|(c, _)| c.clone())
            .collect();
        for channel in channels {
            self.subscribe_cmd(session, &channel, true, out);
        }
        for op in std::mem::take(&mut self.queued) {
            self.online_op(session, op, out);
        }
        let _ = self.state.send(State::Connected {
            client: result.client.clone(),
        });
        let _ = self.events.send(Event::Connected { client: result.client });
    }

    fn on_subscribed(&mut self, channel: &str, result: SubscribeResult) {
        let Some(sub) = self.subs.get_mut(channel) else { return };
        let recovered = result.recovered;
        let continues = recovered && sub.epoch == result.epoch;
        if !continues {
            sub.offset = 0;
        }
        sub.epoch = result.epoch;
        sub.recoverable = result.recoverable;
        sub.retries = 0;
        sub.emit(SubEvent::Subscribed {
            data: result.data,
            recovered,
            was_recovering: result.was_recovering,
        });
        for p in result.publications {
            self.deliver(channel, p.data, p.offset);
        }
        if let Some(sub) = self.subs.get_mut(channel)
            && result.offset > sub.offset
        {
            sub.offset = result.offset;
        }
    }

    fn deliver(&mut self, channel: &str, data: Raw, offset: u64) {
        let Some(sub) = self.subs.get_mut(channel) else { return };
        if offset > 0 {
            // Recovered publications can repeat what already arrived live: deliver each once.
            if offset <= sub.offset {
                return;
            }
            sub.offset = offset;
        }
        sub.emit(SubEvent::Publication { data, offset });
    }

    fn subscribe_cmd(&mut self, session: &mut Session, channel: &str, recover: bool, out: &mut Vec<String>) {
        let Some(sub) = self.subs.get(channel) else { return };
        let recover = recover && sub.recoverable && !sub.epoch.is_empty();
        let id = session.track(Pending::Subscribe(channel.to_owned()));
        let cmd = Command {
            id,
            subscribe: Some(SubscribeRequest {
                channel: channel.to_owned(),
                recover,
                offset: if recover { sub.offset } else { 0 },
                epoch: if recover { sub.epoch.clone() } else { String::new() },
                ..Default::default()
            }),
            ..Default::default()
        };
        out.push(protocol::encode_command(&cmd));
    }

    fn unsubscribe_cmd(session: &mut Session, channel: &str, out: &mut Vec<String>) {
        let id = session.track(Pending::Other);
        let cmd = Command {
            id,
            unsubscribe: Some(UnsubscribeRequest {
                channel: channel.to_owned(),
            }),
            ..Default::default()
        };
        out.push(protocol::encode_command(&cmd));
    }

    fn online_op(&mut self, session: &mut Session, op: Op, out: &mut Vec<String>) {
        match op {
            Op::Subscribe {
                channel,
                server_side,
                events,
                id,
            } => {
                if let Some(replaced) = self.register(channel.clone(), server_side, events, id) {
                    if replaced {
                        Self::unsubscribe_cmd(session, &channel, out);
                    }
                    self.subscribe_cmd(session, &channel, false, out);
                }
            }
            Op::Resubscribe { channel, recover, id } => {
                if self.owns(&channel, id) {
                    Self::unsubscribe_cmd(session, &channel, out);
                    self.subscribe_cmd(session, &channel, recover, out);
                }
            }
            Op::Unsubscribe { channel, id } => {
                if self.unregister(&channel, id) {
                    Self::unsubscribe_cmd(session, &channel, out);
                }
            }
            // Its caller gave up waiting: not sent (an `advisor.ask` would still count).
            Op::Rpc { done, .. } if done.is_closed() => {}
            Op::Rpc { method, data, done } => {
                let id = session.track(Pending::Rpc(done));
                let cmd = Command {
                    id,
                    rpc: Some(RpcRequest { method, data }),
                    ..Default::default()
                };
                out.push(protocol::encode_command(&cmd));
            }
            Op::Close => {}
        }
    }
}

struct Session {
    next_id: u32,
    pending: HashMap<u32, Pending>,
    /// Last message from the hub and the advertised ping interval.
    ping: Option<(Instant, Duration)>,
    refresh_at: Option<Instant>,
    pong: bool,
    /// Subscribes to send again (after a temporary refusal), and when.
    retry: Vec<(Instant, String)>,
}

impl Drop for Session {
    /// RPCs in flight when the connection went: their callers learn it now, not at their timeout.
    fn drop(&mut self) {
        for (_, pending) in self.pending.drain() {
            if let Pending::Rpc(done) = pending {
                let _ = done.send(Err(Error::Disconnected));
            }
        }
    }
}

impl Session {
    fn next_retry(&self) -> Instant {
        self.retry.iter().map(|(at, _)| *at).min().unwrap_or_else(far_future)
    }

    fn track(&mut self, pending: Pending) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(2);
        self.pending.insert(id, pending);
        id
    }
}

/// A hub frame may be at most this large (`server.max_message_bytes`): commands are sent in
/// frames below it.
const MAX_FRAME_BYTES: usize = 60 * 1024;

/// Send the commands as `\n`-joined frames of at most [`MAX_FRAME_BYTES`] (one command per frame
/// when a single one is larger).
async fn send_batched(ws: &mut Socket, commands: Vec<String>) -> Result<(), String> {
    let mut frame = String::new();
    for command in commands {
        if !frame.is_empty() && frame.len() + 1 + command.len() > MAX_FRAME_BYTES {
            ws.send(Message::text(std::mem::take(&mut frame)))
                .await
                .map_err(|e| e.to_string())?;
        }
        if !frame.is_empty() {
            frame.push('\n');
        }
        frame.push_str(&command);
    }
    if !frame.is_empty() {
        ws.send(Message::text(frame)).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

/// When to refresh a token that expires in `ttl` seconds: a little before.
fn refresh_time(ttl: u32) -> Instant {
    let ttl = ttl as u64;
    Instant::now() + Duration::from_secs(ttl.saturating_sub((ttl / 10).clamp(1, 60)).max(1))
}

fn closed_by_hub(frame: Option<CloseFrame>) -> Ended {
    match frame {
        Some(f) => {
            let code = u16::from(f.code);
            Ended::Disconnected {
                code,
                reason: f.reason.to_string(),
                reconnect: close_code_reconnects(code),
            }
        }
        None => Ended::Disconnected {
            code: 1005,
            reason: "closed without a code".into(),
            reconnect: true,
        },
    }
}
