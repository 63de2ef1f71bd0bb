//! `/ws`: the WebSocket upgrade and the connection loop.
//!
//! One task per connection, `select!`ing on the socket, the outbound queue, the ping timer, the
//! connection's deadlines and shutdown. Queued messages are joined with `\n` into as few frames as
//! possible and flushed once per wake-up. A message longer than [`FRAGMENT_BYTES`] is written as
//! fragments of that size (RFC 6455 §5.4), so a connection's write buffer never grows past one
//! fragment (see `http::upgrade`).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, Utf8Bytes};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::Instrument;

use super::AppState;
use super::error::ApiError;
use super::upgrade::{Socket, Upgrade};
use crate::clock::unix_now_s;
use crate::config::ServerSettings;
use crate::hub::{Client, Hub, Outbox};
use crate::protocol::{Disconnect, PING};
use crate::telemetry::Metrics;

/// The largest frame written: longer messages go out as fragments of this size.
pub const FRAGMENT_BYTES: usize = 16 * 1024;

pub async fn upgrade(State(app): State<AppState>, ws: Upgrade) -> Response {
    let s = &app.settings.server;
    // Before the upgrade, while the answer can still be an HTTP status.
    if app.hub.metrics.connections.load(Ordering::Relaxed) >= i64::try_from(s.max_connections).unwrap_or(i64::MAX) {
        app.hub
            .metrics
            .refused_connections_total
            .fetch_add(1, Ordering::Relaxed);
        let full = ApiError::unavailable("this node holds server.max_connections connections; retry later");
        return full.into_response();
    }
    let hub = app.hub.clone();
    let tracker = app.tracker.clone();
    let config = WebSocketConfig::default()
        .read_buffer_size(s.read_buffer_bytes)
        .write_buffer_size(s.write_buffer_bytes)
        .max_write_buffer_size(s.max_write_buffer_bytes)
        .max_message_size(Some(s.max_message_bytes))
        .max_frame_size(Some(s.max_message_bytes));
    ws.on_upgrade(config, move |socket| {
        // Every line a session logs carries its connection id, and its user and tier once
        // `connect` is accepted.
        use tracing::field::Empty;
        let span = tracing::info_span!(parent: None, "ws", conn = Empty, user = Empty, tier = Empty);
        tracker.track_future(supervised(socket, hub).instrument(span))
    })
}

/// One connection, counted while it lives. A panic in it is logged and counted
/// (`gpuscout_connection_panics_total`) and hurts no one else: the protocol client frees its
/// session and subscriptions when dropped, and the gauge is kept by a guard.
async fn supervised(socket: Socket, hub: Arc<Hub>) {
    let metrics = hub.metrics.clone();
    if AssertUnwindSafe(run_connection(socket, hub))
        .catch_unwind()
        .await
        .is_err()
    {
        metrics.connection_panics_total.fetch_add(1, Ordering::Relaxed);
        tracing::error!("a connection task panicked; its session was freed");
    }
}

/// `gpuscout_connections` up while it lives; down, and a disconnect counted, when dropped.
struct Live(Arc<Metrics>);

impl Live {
    fn new(metrics: Arc<Metrics>) -> Self {
        metrics.connections.fetch_add(1, Ordering::Relaxed);
        metrics.connections_total.fetch_add(1, Ordering::Relaxed);
        Self(metrics)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
        self.0.disconnects_total.fetch_add(1, Ordering::Relaxed);
    }
}

/// Why the loop ended: with a close frame to send, the peer's close to answer, or the peer gone.
enum End {
    Close(Disconnect),
    /// The peer sent a close frame: the answering frame is queued (RFC 6455 §5.5.1) and must be
    /// flushed, or the peer sees 1006 instead of its own code.
    PeerClosed,
    Gone,
}

async fn run_connection(mut socket: Socket, hub: Arc<Hub>) {
    let settings = hub.settings.clone();
    let s = &settings.server;
    let (outbox, mut client, live) = open(&hub);
    tracing::Span::current().record("conn", client.id());
    let mut timers = Timers::new(s);
    let mut batch: Vec<Bytes> = Vec::new();
    let shutdown = hub.shutdown_token().clone();

    let end = loop {
        let (deadline, expiry) = timers.next_wake(&client, settings.auth.leeway_s);
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break End::Close(Disconnect::SHUTDOWN),
            _ = outbox.notified() => {
                // `server.write_delay_ms`: let more pushes join this frame (a close waits too,
                // by at most the delay; shutdown is still seen at once on the next turn).
                if s.write_delay_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(s.write_delay_ms)).await;
                }
                // A peer that stops reading (a zero TCP window) would park the write, and with it
                // pings, token expiry and the 3008 close: the write gets a deadline.
                let write = write_queued(&mut socket, &outbox, &mut batch, s.max_batch_bytes, &hub);
                match tokio::time::timeout(Duration::from_millis(s.write_timeout_ms), write).await {
                    Ok(Ok(Some(d))) => break End::Close(d),
                    Ok(Ok(None)) => {}
                    Ok(Err(())) => break End::Gone,
                    Err(_) => {
                        hub.metrics.write_timeouts_total.fetch_add(1, Ordering::Relaxed);
                        break End::Close(Disconnect::SLOW);
                    }
                }
            }
            message = socket.next() => {
                if let Some(end) = on_message(&mut client, &mut timers, message).await {
                    break end;
                }
            }
            _ = sleep_until(deadline) => {
                if let Some(end) = timers.on_wake(&client, &outbox, expiry) {
                    break end;
                }
            }
        }
    };

    client.close().await;
    drop(live);
    close_connection(&mut socket, &outbox, &mut batch, &hub, end).await;
}

/// Set-up: the connection's outbox and protocol client, counted in the connection metrics.
fn open(hub: &Arc<Hub>) -> (Arc<Outbox>, Client, Live) {
    let s = &hub.settings.server;
    let outbox = Arc::new(Outbox::new(s.outbox_max_bytes, s.outbox_max_messages));
    let client = Client::new(hub.clone(), outbox.clone());
    (outbox, client, Live::new(hub.metrics.clone()))
}

/// The connection's timers: pings, the pong owed for the last one, and the `connect` deadline.
struct Timers {
    ping_every: Duration,
    pong_timeout: Duration,
    connect_deadline: Instant,
    next_ping: Instant,
    /// Set when a ping is sent, cleared when the client answers.
    pong_deadline: Option<Instant>,
}

impl Timers {
    /// Timers for a connection opened now.
    fn new(s: &ServerSettings) -> Self {
        let ping_every = Duration::from_secs(s.ping_interval_s.into());
        let pong_timeout = Duration::from_secs(s.pong_timeout_s.into());
        let connect_deadline = Instant::now() + Duration::from_secs(s.connect_timeout_s.into());
        Self {
            ping_every,
            pong_timeout,
            connect_deadline,
            next_ping: Instant::now() + ping_every,
            pong_deadline: None,
        }
    }

    /// The earliest deadline the connection must act on, and when its token expires (if connected).
    fn next_wake(&self, client: &Client, leeway_s: u64) -> (Instant, Option<Instant>) {
        let mut deadline = self.next_ping;
        if !client.connected() {
            deadline = deadline.min(self.connect_deadline);
        }
        if let Some(p) = self.pong_deadline {
            deadline = deadline.min(p);
        }
        // Tokens are accepted up to `auth.leeway_s` past `exp` (clock skew); the connection lives as
        // long, so a token just inside the leeway is not accepted and dropped at once.
        let expiry = client.expires_at().map(|exp| {
            // `exp` is at most `auth::MAX_LIFETIME_S` away (verified), so this cannot overflow.
            let left = exp.saturating_add(leeway_s).saturating_sub(unix_now_s());
            Instant::now() + Duration::from_secs(left.min(crate::auth::MAX_LIFETIME_S))
        });
        if let Some(e) = expiry {
            deadline = deadline.min(e);
        }
        (deadline, expiry)
    }

    /// A deadline passed: close for a missing `connect`, a missing pong or an expired token, else
    /// queue a ping when one is due.
    fn on_wake(&mut self, client: &Client, outbox: &Outbox, expiry: Option<Instant>) -> Option<End> {
        let now = Instant::now();
        if !client.connected() && now >= self.connect_deadline {
            return Some(End::Close(Disconnect::new(3000, "connect timeout")));
        }
        if self.pong_deadline.is_some_and(|p| now >= p) {
            return Some(End::Close(Disconnect::NO_PONG));
        }
        if expiry.is_some_and(|e| now >= e) {
            return Some(End::Close(Disconnect::EXPIRED));
        }
        if now >= self.next_ping {
            self.next_ping = now + self.ping_every;
            // Pings are part of the protocol only once connected.
            if client.connected() {
                let _ = outbox.push(Bytes::from_static(PING));
                if self.pong_deadline.is_none() {
                    self.pong_deadline = Some(now + self.pong_timeout);
                }
            }
        }
        None
    }
}

/// One read from the socket: text frames go to the client (a pong among them clears the pong
/// deadline). `Some` ends the loop.
async fn on_message(
    client: &mut Client,
    timers: &mut Timers,
    message: Option<Result<Message, WsError>>,
) -> Option<End> {
    match message {
        None => Some(End::Gone),
        Some(Err(e)) => Some(read_error(e)),
        Some(Ok(Message::Text(text))) => {
            if let Err(d) = client.handle_frame(text.as_str()).await {
                return Some(End::Close(d));
            }
            if client.take_pong() {
                timers.pong_deadline = None;
            }
            None
        }
        // The protocol is JSON text only.
        Some(Ok(Message::Binary(_))) => Some(End::Close(Disconnect::BAD_REQUEST)),
        Some(Ok(Message::Close(_))) => Some(End::PeerClosed),
        Some(Ok(_)) => None,
    }
}

/// Tear-down, once the client's hub state is released and the metrics updated: unless the peer
/// is gone, send what is still queued and the close frame.
async fn close_connection(socket: &mut Socket, outbox: &Outbox, batch: &mut Vec<Bytes>, hub: &Hub, end: End) {
    if let End::PeerClosed = end {
        let _ = tokio::time::timeout(Duration::from_secs(1), socket.flush()).await;
    }
    if let End::Close(disconnect) = end {
        if disconnect == Disconnect::SLOW {
            // Whatever overflowed (a push, a reply) or a write that timed out.
            hub.metrics.slow_disconnects_total.fetch_add(1, Ordering::Relaxed);
        }
        if disconnect != Disconnect::SLOW && disconnect != Disconnect::WRITE_ERROR {
            // Replies already queued (an error before a close, say) go out first.
            let max_batch_bytes = hub.settings.server.max_batch_bytes;
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                write_queued(socket, outbox, batch, max_batch_bytes, hub),
            )
            .await;
        }
        let frame = CloseFrame {
            code: disconnect.code.into(),
            reason: Utf8Bytes::from(disconnect.reason),
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), socket.send(Message::Close(Some(frame)))).await;
    }
}

fn read_error(error: WsError) -> End {
    use tokio_tungstenite::tungstenite::error::CapacityError;
    match error {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => End::Close(Disconnect::MESSAGE_TOO_BIG),
        WsError::Utf8(_) => End::Close(Disconnect::BAD_REQUEST),
        _ => End::Gone,
    }
}

/// Write everything queued as few `\n`-joined frames as the batch limit allows, then flush once.
/// `Ok(Some(d))` when the queue asks to close; `Err` when the socket failed.
async fn write_queued(
    socket: &mut Socket,
    outbox: &Outbox,
    batch: &mut Vec<Bytes>,
    max_batch_bytes: usize,
    hub: &Hub,
) -> Result<Option<Disconnect>, ()> {
    let close = outbox.drain(batch);
    if close == Some(Disconnect::SLOW) {
        batch.clear();
        return Ok(close);
    }
    if batch.is_empty() {
        return Ok(close);
    }
    let mut frames = 0u64;
    let mut pending: Option<BytesMut> = None;
    let mut single: Option<Bytes> = None;
    // Bytes after the current message: a frame's buffer is sized once, not grown message by message.
    let mut left: usize = batch.iter().map(|m| m.len() + 1).sum();
    for message in batch.drain(..) {
        left -= message.len() + 1;
        let size = pending.as_ref().map(|b| b.len()).or(single.as_ref().map(|b| b.len()));
        let size = size.unwrap_or(0);
        if size > 0 && size + 1 + message.len() > max_batch_bytes {
            let frame = take_frame(&mut pending, &mut single);
            frames += feed(socket, frame).await?;
        }
        match (&mut pending, &single) {
            (Some(buf), _) => {
                buf.extend_from_slice(b"\n");
                buf.extend_from_slice(&message);
            }
            (None, Some(first)) => {
                let needed = first.len() + 1 + message.len();
                let mut buf = BytesMut::with_capacity((needed + left).min(max_batch_bytes).max(needed));
                buf.extend_from_slice(first);
                buf.extend_from_slice(b"\n");
                buf.extend_from_slice(&message);
                single = None;
                pending = Some(buf);
            }
            (None, None) => single = Some(message),
        }
    }
    if pending.is_some() || single.is_some() {
        let frame = take_frame(&mut pending, &mut single);
        frames += feed(socket, frame).await?;
    }
    socket.flush().await.map_err(|_| ())?;
    outbox.written();
    hub.metrics
        .frames_written_total
        .fetch_add(frames, std::sync::atomic::Ordering::Relaxed);
    Ok(close)
}

fn take_frame(pending: &mut Option<BytesMut>, single: &mut Option<Bytes>) -> Bytes {
    // A lone message is sent as the shared bytes themselves: no copy.
    match (pending.take(), single.take()) {
        (Some(buf), _) => buf.freeze(),
        (None, Some(b)) => b,
        (None, None) => Bytes::new(),
    }
}

/// Queue one text message: as one frame up to [`FRAGMENT_BYTES`], else as fragments of that size
/// (slices of the same bytes, not copies). Returns the frames queued.
async fn feed(socket: &mut Socket, message: Bytes) -> Result<u64, ()> {
    if message.len() <= FRAGMENT_BYTES {
        // Every message queued is JSON we produced, so this check never fails in practice.
        let text = Utf8Bytes::try_from(message).map_err(|_| ())?;
        socket.feed(Message::Text(text)).await.map_err(|_| ())?;
        return Ok(1);
    }
    // A fragment may end inside a UTF-8 sequence: only the whole message must be valid text.
    let len = message.len();
    for start in (0..len).step_by(FRAGMENT_BYTES) {
        let end = (start + FRAGMENT_BYTES).min(len);
        let opcode = if start == 0 { Data::Text } else { Data::Continue };
        let fragment = Frame::message(message.slice(start..end), OpCode::Data(opcode), end == len);
        socket.feed(Message::Frame(fragment)).await.map_err(|_| ())?;
    }
    Ok(len.div_ceil(FRAGMENT_BYTES) as u64)
}
