//! `failover`: a reconnect storm between two hub nodes sharing one Redis. Clients split over node
//! A and node B subscribe to a few channels fed by a publisher through B; then A is killed
//! (SIGKILL or SIGTERM) and its clients reconnect to B, recovering what they missed from the last
//! offset and epoch they saw of each channel.
//!
//! Measured: how long after the kill each of A's clients is live again (every subscribe reply of
//! its new connection in), how many subscriptions recovered and how many clients could not,
//! publications received twice or never (offsets checked per channel on every publication, live or
//! recovered), node B's CPU (the peak over any second) and RSS while it takes the storm, and its
//! counters from `/metrics` (connections accepted, market snapshots built).
//!
//! Clients decode each message with serde into views that keep ids and positions only: the
//! publication data is skipped, not copied, so the load generator's CPU (shared with both nodes
//! on this machine) goes to sockets.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use gpuscout_client::protocol::{self, Command, ProtoError, SubscribeRequest};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::Message;

use crate::fanout::connect_command;
use crate::report::{self, Progress, now_us, procs_stats};
use crate::{Cli, hub_addrs, token_minter};

/// Handshakes in flight while the clients first connect (the storm after the kill is not paced:
/// it is what is measured).
const RAMP_CONCURRENCY: usize = 256;
/// Publish requests in flight at once.
const PUBLISH_IN_FLIGHT: usize = 64;
/// A publish request not answered in this long counts as failed.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);
/// Opening a connection (TCP, WebSocket handshake, first frame) takes at most this long.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest back-off before a refused connect or subscribe is tried again.
const RESUBSCRIBE_MAX: Duration = Duration::from_secs(10);
/// A connection not live this long after it opened is given up and opened again.
const LIVE_TIMEOUT: Duration = Duration::from_secs(30);
/// Node B's `/proc` entries are read this often.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// The window of node B's CPU peak.
const CPU_WINDOW: Duration = Duration::from_secs(1);
/// After the last publication is answered, this long for its deliveries.
const DRAIN: Duration = Duration::from_secs(2);
/// A client of A live again later than this after the kill fails the run.
const LIVE_AGAIN_LIMIT_US: u64 = 10_000_000;
/// Errors printed; the rest are only counted.
const ERRORS_SHOWN: u64 = 5;

#[derive(clap::Args, Clone)]
#[group(id = "failover")]
pub struct Args {
    /// Client connections per node.
    #[arg(long, default_value_t = 9000)]
    pub connections: usize,
    /// Channels every client subscribes to (comma-separated).
    #[arg(long, default_value = "market:summary,gpu:lt-a,gpu:lt-b,gpu:lt-c")]
    pub channels: String,
    /// Publications per second on each channel (through node B).
    #[arg(long, default_value_t = 2)]
    pub rate: u64,
    /// Payload padding in bytes.
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    /// Source addresses 127.0.0.<1..=n> to spread connections over (~28k ports each).
    #[arg(long, default_value_t = 2)]
    pub source_ips: u8,
    /// The signal sent to node A (the first of `--hub` and `--hub-pid`).
    #[arg(long, value_enum, default_value_t = Signal::Sigkill)]
    pub kill: Signal,
    /// Seconds between every client subscribed and the kill.
    #[arg(long, default_value_t = 5)]
    pub after_seconds: u64,
    /// Seconds to publish and measure after the kill.
    #[arg(long, default_value_t = 20)]
    pub run_seconds: u64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub max_seconds: u64,
}

/// The signal sent to node A.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Signal {
    /// The node dies at once: its sockets are reset, nothing is flushed.
    Sigkill,
    /// The node shuts down: it closes its connections itself.
    Sigterm,
}

impl Signal {
    /// The option of `kill(1)`.
    fn kill_option(self) -> &'static str {
        match self {
            Signal::Sigkill => "-KILL",
            Signal::Sigterm => "-TERM",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Signal::Sigkill => "sigkill",
            Signal::Sigterm => "sigterm",
        }
    }
}

pub async fn run(cli: &Cli, args: &Args) -> anyhow::Result<Value> {
    let (nodes, pids) = nodes(cli)?;
    let channels: Arc<[String]> = args
        .channels
        .split(',')
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty())
        .collect();
    if channels.is_empty() {
        bail!("--channels names no channel");
    }
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let shared = Arc::new(Shared::new(deadline, args.max_seconds));
    let (stop_tx, stop_rx) = watch::channel(false);
    let clients = spawn_clients(args, nodes, &channels, &shared, &stop_rx)?;
    wait_subscribed(&shared, 2 * args.connections, deadline).await;

    let http = reqwest::Client::new();
    let page_before = metrics_page(&http, nodes[1]).await;
    let sampler = tokio::spawn(sample(pids[1], stop_rx.clone(), deadline));
    let kill_at = (Instant::now() + Duration::from_secs(args.after_seconds)).min(deadline);
    let end = (kill_at + Duration::from_secs(args.run_seconds)).min(deadline);
    let publisher = Arc::new(Publisher::new(cli, args, nodes[1], channels.clone(), http.clone()));
    let publishing = tokio::spawn(publisher.run(end, deadline));
    tokio::time::sleep_until(kill_at.into()).await;
    // T0: clients that lose their connection from now on move to B.
    shared.kill_us.store(now_us(), Ordering::Relaxed);
    send_signal(args.kill, pids[0])?;
    let progress = Progress::start("live again", args.connections as u64, shared.live_again.clone(), None);
    tokio::time::sleep_until(end.into()).await;
    let published = publishing.await?;
    tokio::time::sleep(DRAIN).await;
    progress.finish().await;
    let page_after = metrics_page(&http, nodes[1]).await;
    let _ = stop_tx.send(true);
    let measured = Measured {
        outcomes: outcomes(clients).await,
        published,
        samples: sampler.await.unwrap_or_default(),
        pages: [page_before, page_after],
    };
    Ok(build_report(cli, args, &channels, &shared, &measured))
}

/// Node A (killed) and node B (measured): their addresses and pids, from `--hub` and `--hub-pid`.
fn nodes(cli: &Cli) -> anyhow::Result<([SocketAddr; 2], [u32; 2])> {
    let hubs = hub_addrs(cli)?;
    let [a, b] = hubs[..] else {
        bail!("failover needs two nodes: --hub A,B (A is killed, B measured)");
    };
    let [pid_a, pid_b] = cli.hub_pid[..] else {
        bail!("failover needs the pids of both nodes: --hub-pid A,B");
    };
    Ok(([a, b], [pid_a, pid_b]))
}

/// Every client, started: the first `connections` on A, as many on B.
fn spawn_clients(
    args: &Args,
    nodes: [SocketAddr; 2],
    channels: &Arc<[String]>,
    shared: &Arc<Shared>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Vec<JoinHandle<Outcome>>> {
    let mint = token_minter()?;
    let total = 2 * args.connections;
    let mut tasks = Vec::with_capacity(total);
    for index in 0..total {
        let from_a = index < args.connections;
        let client = Client {
            index,
            from_a,
            first: if from_a { nodes[0] } else { nodes[1] },
            b: nodes[1],
            source: Ipv4Addr::new(127, 0, 0, 1 + (index % usize::from(args.source_ips.max(1))) as u8),
            token: mint(&format!("fo{index}"))?,
            channels: channels.clone(),
            shared: shared.clone(),
        };
        tasks.push(tokio::spawn(client.run(stop.clone())));
    }
    Ok(tasks)
}

/// Wait until every client is subscribed (or the deadline).
async fn wait_subscribed(shared: &Shared, clients: usize, deadline: Instant) {
    let progress = Progress::start("subscribed", clients as u64, shared.subscribed.clone(), None);
    let all = tokio::time::timeout_at(deadline.into(), shared.ready.acquire_many(clients as u32)).await;
    progress.finish().await;
    if all.is_err() {
        let subscribed = shared.subscribed.load(Ordering::Relaxed);
        eprintln!("only {subscribed} of {clients} clients subscribed in time");
    }
}

/// Send `signal` to node A.
fn send_signal(signal: Signal, pid: u32) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .arg(signal.kill_option())
        .arg(pid.to_string())
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill {} {pid}: {status}", signal.kill_option());
    }
    Ok(())
}

/// The clients' outcomes once they were told to stop (one still opening a connection notices
/// within `OPEN_TIMEOUT`); a client that does not finish in time has none.
async fn outcomes(tasks: Vec<JoinHandle<Outcome>>) -> Vec<Outcome> {
    let until = tokio::time::Instant::now() + OPEN_TIMEOUT + Duration::from_secs(5);
    let mut all = Vec::with_capacity(tasks.len());
    for task in tasks {
        if let Ok(Ok(outcome)) = tokio::time::timeout_at(until, task).await {
            all.push(outcome);
        }
    }
    all
}

/// Counts kept by every client.
#[derive(Default)]
struct Counts {
    /// Publications received on the channels, live or recovered.
    deliveries: AtomicU64,
    /// Publications received in subscribe replies (recovered).
    recovered_publications: AtomicU64,
    /// Publications at or below the offset already seen on their channel.
    duplicates: AtomicU64,
    /// Jumps over missing offsets, and the publications they skipped.
    gaps: AtomicU64,
    lost: AtomicU64,
    /// Resubscriptions answered with `recovered: true`.
    recovered_ok: AtomicU64,
    /// Messages that are not JSON of the protocol.
    unreadable: AtomicU64,
    /// Failed connects, refused commands, connections not live in time.
    errors: AtomicU64,
    /// Subscribes answered with a temporary error and sent again on the same connection.
    resubscribes: AtomicU64,
}

/// What every client shares: the counts, the time of the kill, and the pacing of the first
/// connects.
struct Shared {
    counts: Counts,
    /// Clients whose first connection went live (a permit added to `ready` for each).
    subscribed: Arc<AtomicU64>,
    ready: Semaphore,
    /// A's clients live again after the kill.
    live_again: Arc<AtomicU64>,
    ramp: Semaphore,
    /// When the kill was sent (µs since the Unix epoch); 0 before.
    kill_us: AtomicU64,
    /// Connections a client opens at most (failed ones pause at least 200 ms).
    max_attempts: u32,
    deadline: Instant,
}

impl Shared {
    fn new(deadline: Instant, max_seconds: u64) -> Self {
        Self {
            counts: Counts::default(),
            subscribed: Arc::default(),
            ready: Semaphore::new(0),
            live_again: Arc::default(),
            ramp: Semaphore::new(RAMP_CONCURRENCY),
            kill_us: AtomicU64::new(0),
            max_attempts: u32::try_from(max_seconds.saturating_mul(10).saturating_add(10)).unwrap_or(u32::MAX),
            deadline,
        }
    }

    fn killed(&self) -> bool {
        self.kill_us.load(Ordering::Relaxed) != 0
    }

    /// Count an error; print the first few.
    fn note(&self, what: std::fmt::Arguments<'_>) {
        if self.counts.errors.fetch_add(1, Ordering::Relaxed) < ERRORS_SHOWN {
            eprintln!("{what}");
        }
    }
}

/// How one client fared.
#[derive(Default)]
struct Outcome {
    from_a: bool,
    /// A connection of it went live once (every subscription answered).
    ever_live: bool,
    /// (A's clients) accepted by B after the kill.
    moved: bool,
    /// (A's clients) when it was last live again after the kill, in µs since the kill.
    live_again_us: Option<u64>,
    /// A resubscription missed publications it did not recover.
    recover_failed: bool,
}

/// Where a client is in one channel's stream.
#[derive(Clone, Default)]
struct Position {
    /// A subscribe reply placed it: the first reply places, later ones recover from here.
    known: bool,
    offset: u64,
    epoch: String,
}

impl Position {
    fn at(offset: u64, epoch: String) -> Self {
        Self {
            known: true,
            offset,
            epoch,
        }
    }

    /// A publication at `offset`, live or recovered: the next one, a duplicate, or after a gap.
    fn publication(&mut self, offset: u64, counts: &Counts) {
        counts.deliveries.fetch_add(1, Ordering::Relaxed);
        // Unpositioned (a channel without history), or before any reply: nothing to check.
        if offset == 0 || !self.known {
            return;
        }
        if offset <= self.offset {
            counts.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if offset > self.offset + 1 {
            counts.gaps.fetch_add(1, Ordering::Relaxed);
            counts.lost.fetch_add(offset - self.offset - 1, Ordering::Relaxed);
        }
        self.offset = offset;
    }

    /// A subscribe reply. The first places the position; a later one (a resubscription asking
    /// to recover from here) brings what was missed. False when something missed was not
    /// recovered.
    fn subscribed(&mut self, reply: SubscribeView, counts: &Counts) -> bool {
        if !self.known {
            *self = Position::at(reply.offset, reply.epoch);
            return true;
        }
        if reply.recovered {
            counts.recovered_ok.fetch_add(1, Ordering::Relaxed);
        }
        for publication in &reply.publications {
            counts.recovered_publications.fetch_add(1, Ordering::Relaxed);
            self.publication(publication.offset, counts);
        }
        if reply.epoch != self.epoch {
            // The stream started again: how much was missed cannot be told.
            *self = Position::at(reply.offset, reply.epoch);
            return false;
        }
        if reply.offset > self.offset {
            counts.gaps.fetch_add(1, Ordering::Relaxed);
            counts.lost.fetch_add(reply.offset - self.offset, Ordering::Relaxed);
            self.offset = reply.offset;
            return false;
        }
        true
    }
}

/// One server message as a client reads it: ids, errors and positions.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Incoming {
    id: u32,
    error: Option<ProtoError>,
    connect: Option<IgnoredAny>,
    subscribe: Option<SubscribeView>,
    push: Option<PushView>,
}

/// A subscribe reply: the channel's position, and what was recovered.
#[derive(Deserialize, Default)]
#[serde(default)]
struct SubscribeView {
    epoch: String,
    offset: u64,
    recovered: bool,
    publications: Vec<PublicationView>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PushView {
    channel: String,
    #[serde(rename = "pub")]
    publication: Option<PublicationView>,
    unsubscribe: Option<IgnoredAny>,
}

/// A publication's offset (its data is skipped).
#[derive(Deserialize, Default)]
#[serde(default)]
struct PublicationView {
    offset: u64,
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// How a connection ended.
enum SessionEnd {
    /// Told to stop, or the deadline.
    Stopped,
    /// Accepted, then lost (its node died or closed it): connect again after a short jitter.
    Dropped,
    /// Not accepted, or something refused: try again after a pause.
    Failed,
}

/// One simulated client: its nodes, its identity, and what it shares with the others.
struct Client {
    index: usize,
    from_a: bool,
    /// Its node until the kill: A for the first half of the clients, B for the others.
    first: SocketAddr,
    /// Node B, where every client connects after the kill.
    b: SocketAddr,
    source: Ipv4Addr,
    token: String,
    channels: Arc<[String]>,
    shared: Arc<Shared>,
}

impl Client {
    /// Connect, and connect again whenever the connection ends, until `stop` or the deadline.
    async fn run(self, mut stop: watch::Receiver<bool>) -> Outcome {
        let mut positions = vec![Position::default(); self.channels.len()];
        let mut outcome = Outcome {
            from_a: self.from_a,
            ..Outcome::default()
        };
        // Connections in a row that failed: the back-off doubles with each, as the SDKs' does.
        let mut failures = 0u32;
        for attempt in 0..self.shared.max_attempts {
            // Before the kill a client keeps to its node; after it, B is the one left.
            let node = if self.shared.killed() { self.b } else { self.first };
            let end = self.session(node, &mut positions, &mut outcome, &mut stop).await;
            if matches!(end, SessionEnd::Stopped) || Instant::now() >= self.shared.deadline {
                break;
            }
            let pause = if matches!(end, SessionEnd::Dropped) {
                failures = 0;
                spread(self.index, attempt, 0, 500)
            } else {
                failures = failures.saturating_add(1);
                backoff(self.index, attempt, failures)
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => break,
            }
        }
        outcome
    }

    /// One connection to `node`: open it (connect, and the subscriptions recovering from
    /// `positions`, in its first frame), then read it until it ends.
    async fn session(
        &self,
        node: SocketAddr,
        positions: &mut [Position],
        outcome: &mut Outcome,
        stop: &mut watch::Receiver<bool>,
    ) -> SessionEnd {
        let after_kill = self.shared.killed();
        let frame = hello(&self.token, &self.channels, positions);
        // Held until live: the first connects are paced by how fast the nodes answer them.
        let ramp = if outcome.ever_live || after_kill {
            None
        } else {
            self.shared.ramp.acquire().await.ok()
        };
        let opened = tokio::time::timeout(OPEN_TIMEOUT, open(node, self.source, frame)).await;
        let mut ws = match opened {
            Ok(Ok(ws)) => ws,
            Ok(Err(e)) => {
                self.shared.note(format_args!("connecting to {node}: {e:#}"));
                return SessionEnd::Failed;
            }
            Err(_) => {
                self.shared.note(format_args!("connecting to {node}: timed out"));
                return SessionEnd::Failed;
            }
        };
        let conn = Conn {
            ramp,
            client: self,
            positions,
            outcome,
            after_kill,
            accepted: false,
            replies: 0,
            retry_at: vec![None; self.channels.len()],
            refusals: vec![0; self.channels.len()],
        };
        conn.read(&mut ws, stop).await
    }
}

/// One open connection of a client, taking in what arrives.
struct Conn<'a> {
    /// The pacing permit of a first connect, returned once live.
    ramp: Option<tokio::sync::SemaphorePermit<'a>>,
    client: &'a Client,
    positions: &'a mut [Position],
    outcome: &'a mut Outcome,
    /// Opened after the kill (for A's clients: the move to B).
    after_kill: bool,
    /// The node answered `connect`.
    accepted: bool,
    /// Subscribe replies received: live with one per channel.
    replies: usize,
    /// Per channel: when a subscribe refused with a temporary error is to be sent again.
    retry_at: Vec<Option<Instant>>,
    /// Per channel: temporary refusals on this connection (the back-off doubles with each).
    refusals: Vec<u32>,
}

impl Conn<'_> {
    /// Read until the connection ends, `stop`, or the deadline; answer pings.
    async fn read(mut self, ws: &mut Ws, stop: &mut watch::Receiver<bool>) -> SessionEnd {
        let deadline = tokio::time::sleep_until(self.client.shared.deadline.into());
        let give_up = tokio::time::sleep(LIVE_TIMEOUT);
        tokio::pin!(deadline, give_up);
        loop {
            let retry = self.retry_at.iter().flatten().min().copied();
            let msg = tokio::select! {
                msg = ws.next() => msg,
                _ = tokio::time::sleep_until(retry.unwrap_or_else(Instant::now).into()), if retry.is_some() => {
                    if self.resubscribe(ws).await.is_err() {
                        return self.ended();
                    }
                    continue;
                }
                _ = stop.changed() => return SessionEnd::Stopped,
                _ = &mut deadline => return SessionEnd::Stopped,
                _ = &mut give_up, if !self.live() => {
                    self.client.shared.note(format_args!("not live {LIVE_TIMEOUT:?} after connecting"));
                    return SessionEnd::Failed;
                }
            };
            let text = match msg {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(_)) | Err(_)) | None => return self.ended(),
                Some(Ok(_)) => continue,
            };
            for line in protocol::split_frame(text.as_str()) {
                if line == "{}" {
                    if ws.send(Message::text("{}")).await.is_err() {
                        return self.ended();
                    }
                    continue;
                }
                if let Err(e) = self.absorb(line) {
                    self.client.shared.note(format_args!("{e:#}"));
                    return SessionEnd::Failed;
                }
            }
            if self.live() {
                self.ramp.take();
            }
        }
    }

    fn live(&self) -> bool {
        self.replies == self.client.channels.len()
    }

    /// The connection ended: dropped once accepted, failed before.
    fn ended(&self) -> SessionEnd {
        if self.accepted {
            SessionEnd::Dropped
        } else {
            SessionEnd::Failed
        }
    }

    /// One message (not a ping); an error when the node refused a command or a subscription.
    fn absorb(&mut self, line: &str) -> anyhow::Result<()> {
        let Ok(message) = serde_json::from_str::<Incoming>(line) else {
            self.client.shared.counts.unreadable.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        if let Some(e) = message.error {
            // A real client subscribes again after a back-off when the refusal is temporary.
            let channel = (message.id as usize).wrapping_sub(2);
            if e.temporary && channel < self.client.channels.len() {
                self.refused(channel);
                return Ok(());
            }
            bail!("command {} refused: {e}", message.id);
        }
        if message.connect.is_some() {
            self.accepted = true;
            self.outcome.moved |= self.client.from_a && self.after_kill;
        }
        if let Some(reply) = message.subscribe {
            self.subscribed(message.id, reply);
        }
        match message.push {
            Some(push) => self.pushed(push),
            None => Ok(()),
        }
    }

    /// The subscribe of `channel` was refused with a temporary error: send it again after a
    /// back-off that doubles with each refusal, up to `RESUBSCRIBE_MAX`, jittered per client.
    fn refused(&mut self, channel: usize) {
        let attempt = self.refusals[channel];
        self.refusals[channel] = attempt.saturating_add(1);
        let pause = backoff(self.client.index, attempt, attempt + 1);
        self.retry_at[channel] = Some(Instant::now() + pause);
    }

    /// Send the subscribes whose back-off is over, each recovering from the channel's position.
    async fn resubscribe(&mut self, ws: &mut Ws) -> anyhow::Result<()> {
        let now = Instant::now();
        for channel in 0..self.retry_at.len() {
            if self.retry_at[channel].is_some_and(|at| at <= now) {
                self.retry_at[channel] = None;
                let id = u32::try_from(channel + 2)?;
                let command = subscribe_command(id, &self.client.channels[channel], &self.positions[channel]);
                ws.send(Message::text(command)).await?;
                self.client.shared.counts.resubscribes.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// The reply to the subscribe command `id` (2 for the first channel).
    fn subscribed(&mut self, id: u32, reply: SubscribeView) {
        // Ids below 2 wrap around to no channel.
        let Some(position) = self.positions.get_mut((id as usize).wrapping_sub(2)) else {
            return;
        };
        if !position.subscribed(reply, &self.client.shared.counts) {
            self.outcome.recover_failed = true;
        }
        self.replies += 1;
        if self.live() {
            self.went_live();
        }
    }

    /// Every subscription of this connection answered.
    fn went_live(&mut self) {
        let shared = &self.client.shared;
        if !self.outcome.ever_live {
            self.outcome.ever_live = true;
            shared.subscribed.fetch_add(1, Ordering::Relaxed);
            shared.ready.add_permits(1);
        }
        if self.client.from_a && self.after_kill {
            if self.outcome.live_again_us.is_none() {
                shared.live_again.fetch_add(1, Ordering::Relaxed);
            }
            let since_kill = now_us().saturating_sub(shared.kill_us.load(Ordering::Relaxed));
            self.outcome.live_again_us = Some(since_kill);
        }
    }

    /// A push on one of the channels: a publication, or the node ending the subscription (an
    /// error: the client connects again and recovers).
    fn pushed(&mut self, push: PushView) -> anyhow::Result<()> {
        let Some(index) = self.client.channels.iter().position(|c| *c == push.channel) else {
            return Ok(());
        };
        if push.unsubscribe.is_some() {
            bail!("unsubscribed from {} by the node", push.channel);
        }
        if let Some(publication) = push.publication {
            self.positions[index].publication(publication.offset, &self.client.shared.counts);
        }
        Ok(())
    }
}

/// The first frame of a connection: `connect`, then one `subscribe` per channel asking to
/// recover from the client's position there (none yet on its first connection).
fn hello(token: &str, channels: &[String], positions: &[Position]) -> String {
    let connect = protocol::encode_command(&connect_command(token.to_owned()));
    let subscribes = channels
        .iter()
        .zip(positions)
        .zip(2u32..)
        .map(|((channel, position), id)| subscribe_command(id, channel, position));
    std::iter::once(connect)
        .chain(subscribes)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Subscribe command `id` for `channel`, recovering from `position` (from nothing before the
/// first reply).
fn subscribe_command(id: u32, channel: &str, position: &Position) -> String {
    protocol::encode_command(&Command {
        id,
        subscribe: Some(SubscribeRequest {
            channel: channel.to_owned(),
            recover: true,
            offset: position.offset,
            epoch: position.epoch.clone(),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Open a WebSocket to `node` from `source` and send `frame`.
async fn open(node: SocketAddr, source: Ipv4Addr, frame: String) -> anyhow::Result<Ws> {
    let mut ws = crate::open_ws(source, node).await?;
    ws.send(Message::text(frame)).await?;
    Ok(ws)
}

/// The pause after the `n`th refusal in a row (a failed connect, or a subscribe refused with a
/// temporary error): between half and all of 500 ms × 2^(n-1), at most `RESUBSCRIBE_MAX`.
fn backoff(index: usize, attempt: u32, n: u32) -> Duration {
    let high = RESUBSCRIBE_MAX.min(Duration::from_millis(500) * 2u32.saturating_pow(n.saturating_sub(1).min(8)));
    let high_ms = high.as_millis() as u64;
    spread(index, attempt, high_ms / 2, high_ms)
}

/// A pause of `low_ms..=high_ms`, spread over clients and attempts without a random source.
fn spread(index: usize, attempt: u32, low_ms: u64, high_ms: u64) -> Duration {
    // The finaliser of splitmix64.
    let mut x = (((index as u64) << 32) ^ u64::from(attempt)).wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    Duration::from_millis(low_ms + x % (high_ms - low_ms + 1))
}

/// Publishes every channel at `rate` through node B, on a fixed schedule.
struct Publisher {
    http: reqwest::Client,
    url: String,
    api_key: String,
    channels: Arc<[String]>,
    rate: u64,
    pad: String,
    in_flight: Semaphore,
    sent: AtomicU64,
    failed: AtomicU64,
}

impl Publisher {
    fn new(cli: &Cli, args: &Args, node: SocketAddr, channels: Arc<[String]>, http: reqwest::Client) -> Self {
        Self {
            http,
            url: format!("http://{node}/api/publish"),
            api_key: cli.api_key.clone(),
            channels,
            rate: args.rate.max(1),
            pad: "x".repeat(args.payload),
            in_flight: Semaphore::new(PUBLISH_IN_FLIGHT),
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// Publish until `until`, round k of every channel at the start plus k / rate, each request
    /// on its own task (a slow answer does not hold the schedule back); then wait for the
    /// answers until `deadline`. Returns the publications accepted and failed.
    async fn run(self: Arc<Self>, until: Instant, deadline: Instant) -> (u64, u64) {
        let start = Instant::now();
        let rounds = (until.saturating_duration_since(start).as_secs_f64() * self.rate as f64).ceil() as u64;
        let mut requests = Vec::with_capacity(rounds as usize * self.channels.len());
        for k in 0..rounds {
            let at = start + Duration::from_secs_f64(k as f64 / self.rate as f64);
            tokio::time::sleep_until(at.into()).await;
            for channel in 0..self.channels.len() {
                requests.push(tokio::spawn(self.clone().publish(channel, k + 1)));
            }
        }
        for request in requests {
            let _ = tokio::time::timeout_at(deadline.into(), request).await;
        }
        (self.sent.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }

    /// Publication `seq` of one channel, once fewer than `PUBLISH_IN_FLIGHT` are waiting.
    async fn publish(self: Arc<Self>, channel: usize, seq: u64) {
        let Ok(_slot) = self.in_flight.acquire().await else {
            return;
        };
        let body = json!({
            "channel": self.channels[channel],
            "data": {"seq": seq, "ts": now_us(), "pad": self.pad},
        });
        let response = self
            .http
            .post(&self.url)
            .header("X-API-Key", &self.api_key)
            .timeout(PUBLISH_TIMEOUT)
            .json(&body)
            .send()
            .await;
        let failure = match response {
            Ok(r) if r.status().is_success() => None,
            Ok(r) => Some(format!("HTTP {}", r.status())),
            Err(e) => Some(e.to_string()),
        };
        let Some(why) = failure else {
            self.sent.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if self.failed.fetch_add(1, Ordering::Relaxed) < ERRORS_SHOWN {
            eprintln!("publish failed: {why}");
        }
    }
}

/// One reading of node B.
#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    rss_bytes: u64,
    cpu_seconds: f64,
}

/// Node B's RSS and CPU time every `SAMPLE_EVERY`, until `stop` or the deadline.
async fn sample(pid: u32, mut stop: watch::Receiver<bool>, deadline: Instant) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let end = tokio::time::sleep_until(deadline.into());
    tokio::pin!(end);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
            _ = &mut end => break,
        }
        if let Some((rss_bytes, cpu_seconds)) = procs_stats(&[pid]) {
            samples.push(Sample {
                at: Instant::now(),
                rss_bytes,
                cpu_seconds,
            });
        }
    }
    samples
}

/// The most CPU used over any window of at least `CPU_WINDOW`, in percent of one core.
fn cpu_peak_percent(samples: &[Sample]) -> Option<f64> {
    let mut peak: Option<f64> = None;
    let mut later = 0;
    for (i, first) in samples.iter().enumerate() {
        later = later.max(i + 1);
        while later < samples.len() && samples[later].at.duration_since(first.at) < CPU_WINDOW {
            later += 1;
        }
        let Some(last) = samples.get(later) else {
            break;
        };
        let seconds = last.at.duration_since(first.at).as_secs_f64();
        let percent = (last.cpu_seconds - first.cpu_seconds) / seconds * 100.0;
        peak = Some(peak.map_or(percent, |p| p.max(percent)));
    }
    peak
}

/// Node B's `/metrics` page; `None` when it does not answer.
async fn metrics_page(http: &reqwest::Client, node: SocketAddr) -> Option<String> {
    let response = http
        .get(format!("http://{node}/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    response.text().await.ok()
}

/// A metric summed over its labels in a Prometheus text page; `None` when the page has none.
fn metric_sum(page: &str, name: &str) -> Option<f64> {
    let values = page.lines().filter_map(|line| {
        let rest = line.strip_prefix(name)?;
        let value = match rest.strip_prefix('{') {
            Some(labelled) => &labelled[labelled.rfind('}')? + 1..],
            None if rest.starts_with(' ') => rest,
            None => return None,
        };
        value.split_whitespace().next()?.parse::<f64>().ok()
    });
    values.reduce(|sum, v| sum + v)
}

/// How much a counter grew between two pages; `None` when either lacks it.
fn growth(before: Option<&str>, after: Option<&str>, name: &str) -> Option<u64> {
    let (before, after) = (metric_sum(before?, name)?, metric_sum(after?, name)?);
    Some((after - before).max(0.0) as u64)
}

/// What a run measured besides the shared counts.
struct Measured {
    outcomes: Vec<Outcome>,
    /// Publications accepted and failed.
    published: (u64, u64),
    samples: Vec<Sample>,
    /// Node B's `/metrics` before the kill and at the end.
    pages: [Option<String>; 2],
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// The report: A's clients live again, recovery, duplicates and losses, node B's load.
fn build_report(cli: &Cli, args: &Args, channels: &[String], shared: &Shared, m: &Measured) -> Value {
    let counts = &shared.counts;
    let of_a: Vec<&Outcome> = m.outcomes.iter().filter(|o| o.from_a).collect();
    let live_again: Vec<u64> = of_a.iter().filter_map(|o| o.live_again_us).collect();
    let last_live_us = live_again.iter().max().copied();
    let not_live = args.connections.saturating_sub(live_again.len());
    let (duplicates, lost) = (load(&counts.duplicates), load(&counts.lost));
    let pass =
        not_live == 0 && duplicates == 0 && lost == 0 && last_live_us.is_some_and(|us| us <= LIVE_AGAIN_LIMIT_US);
    let mut report = json!({
        "scenario": "failover",
        "label": cli.label,
        "connections": args.connections,
        "channels": channels,
        "killed": args.kill.name(),
        "subscribed": load(&shared.subscribed),
        "clients_moved": of_a.iter().filter(|o| o.moved).count(),
        "live_again_ms": report::latency(&live_again),
        "last_live_ms": last_live_us.map(|us| us as f64 / 1000.0),
        "not_live": not_live,
        "recovered_ok": load(&counts.recovered_ok),
        "recover_failed": m.outcomes.iter().filter(|o| o.recover_failed).count(),
        "duplicates": duplicates,
        "gaps": load(&counts.gaps),
        "lost": lost,
        "pass": pass,
    });
    let [before, after] = &m.pages;
    let (before, after) = (before.as_deref(), after.as_deref());
    let more = json!({
        "publications_sent": m.published.0,
        "publications_failed": m.published.1,
        "deliveries": load(&counts.deliveries),
        "recovered_publications": load(&counts.recovered_publications),
        "unreadable_messages": load(&counts.unreadable),
        "errors": load(&counts.errors),
        "resubscribes": load(&counts.resubscribes),
        "node_b_cpu_peak_percent": cpu_peak_percent(&m.samples),
        "node_b_rss_peak_bytes": m.samples.iter().map(|s| s.rss_bytes).max(),
        "node_b_rss_before_bytes": m.samples.first().map(|s| s.rss_bytes),
        "snapshots_built": growth(before, after, "gpuscout_snapshots_built_total"),
        "connections_accepted": growth(before, after, "gpuscout_connections_total"),
        // Positions and recoveries node B answered from its copy of a channel's tail, not Redis.
        "history_reads_from_memory": growth(before, after, "gpuscout_bus_history_cached_total"),
    });
    report::merge(&mut report, more);
    report
}
