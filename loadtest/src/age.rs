//! `market-age`: how old market data is on a client's screen. N subscribers on market channels
//! note, for every publication, their clock at receipt minus the payload's `source_ts` (when the
//! source took the data).
//!
//! The hub must poll a source whose data moves on every poll (`loadtest/fake500.py PORT N age`),
//! on the same machine, so both clocks are one. That source stamps each body as it sends it, so
//! the age is the hub's part alone: reading the answer, the market update, the fan-out and the
//! way to the client (a real source's own delay before its answer comes on top).
//! Subscribers scan each push for `source_ts` rather than decoding it whole, so the load
//! generator's CPU (shared with the hub) goes to sockets, not JSON.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value, json};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::fanout::{hello, number};
use crate::report::{self, Progress, hub_usage, now_us, procs_stats};
use crate::{Cli, hub_addrs, token_minter};

#[derive(clap::Args, Clone)]
#[group(id = "market-age")]
pub struct Args {
    /// Subscriber connections.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// The channels every subscriber is on, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "market:summary,gpu:rtx-4090,gpu:rtx-3090,gpu:a100-sxm4"
    )]
    pub channels: Vec<String>,
    /// Seconds to measure, from when every subscriber is subscribed.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Source addresses 127.0.0.<1..=n> to spread connections over (~28k ports each).
    #[arg(long, default_value_t = 2)]
    pub source_ips: u8,
    /// Give up after this many seconds, measuring or not.
    #[arg(long, default_value_t = 300)]
    pub max_seconds: u64,
}

/// A subscriber's task.
type Task = JoinHandle<anyhow::Result<()>>;

/// A process's RSS (bytes) and CPU seconds, as `report::procs_stats` reads them.
type Usage = Option<(u64, f64)>;

/// Handshakes in flight at once: a burst of thousands overflows the listen backlog, and its
/// retried SYNs would count as connect time, not as anything the hub does.
const CONNECTING: usize = 256;

pub async fn run(cli: &Cli, args: &Args) -> anyhow::Result<Value> {
    if args.channels.is_empty() {
        bail!("--channels needs at least one channel");
    }
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let hubs = hub_addrs(cli)?;
    let rss_start = procs_stats(&cli.hub_pid);
    let shared = Arc::new(Shared::new(args.channels.len()));
    let (stop, stopped) = watch::channel(false);

    let connect_started = Instant::now();
    let tasks = spawn_subscribers(args, &hubs, &shared, &stopped)?;
    let progress = Progress::start(
        "subscribed",
        args.connections as u64,
        shared.held.clone(),
        Some(shared.failed.clone()),
    );
    let permits = args.connections as u32;
    let all = tokio::time::timeout_at(deadline.into(), shared.ready.acquire_many(permits)).await;
    progress.finish().await;
    let connect_secs = connect_started.elapsed().as_secs_f64();
    let held = shared.held.load(Ordering::Relaxed);
    if all.is_err() {
        eprintln!("only {held} of {} subscribed in time", args.connections);
    }

    let before = procs_stats(&cli.hub_pid);
    let started = Instant::now();
    let window_end = (started + Duration::from_secs(args.seconds)).min(deadline);
    let window = window_end.saturating_duration_since(started);
    eprintln!("measuring for {} s", window.as_secs());
    shared.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep_until(window_end.into()).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let measured_secs = started.elapsed().as_secs_f64();
    let after = procs_stats(&cli.hub_pid);

    stop_all(&stop, tasks).await;
    let totals = std::mem::take(&mut *shared.totals.lock().unwrap_or_else(|e| e.into_inner()));
    let mut report = json!({
        "scenario": "market-age",
        "label": cli.label,
        "hubs": hubs.len(),
        "connections": args.connections,
        "connections_held": held,
        "connections_failed": shared.failed.load(Ordering::Relaxed),
        "connections_closed": shared.closed.load(Ordering::Relaxed),
        "connect_seconds": connect_secs,
        "channels": args.channels,
        "measured_seconds": measured_secs,
    });
    let figures = measured(&args.channels, &totals, measured_secs, (before, after));
    report::merge(&mut report, figures);
    report::merge(&mut report, hub_usage(rss_start, after, held));
    Ok(report)
}

/// One subscriber task per connection, spread over the hubs and the source addresses.
fn spawn_subscribers(
    args: &Args,
    hubs: &[SocketAddr],
    shared: &Arc<Shared>,
    stopped: &watch::Receiver<bool>,
) -> anyhow::Result<Vec<Task>> {
    let mint = token_minter()?;
    let channels = Arc::new(args.channels.clone());
    let mut tasks = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let source = Ipv4Addr::new(127, 0, 0, 1 + (i % args.source_ips.max(1) as usize) as u8);
        let subscriber = Subscriber {
            channels: channels.clone(),
            shared: shared.clone(),
            replies: 0,
            ages_us: Vec::new(),
            before_publish_us: Vec::new(),
            publications: vec![0; channels.len()],
        };
        let token = mint(&format!("age{i}"))?;
        let task = subscriber.run(hubs[i % hubs.len()], source, token, stopped.clone());
        tasks.push(tokio::spawn(task));
    }
    Ok(tasks)
}

/// Stop every subscriber and wait (a few seconds at most) until each has handed its samples over.
async fn stop_all(stop: &watch::Sender<bool>, tasks: Vec<Task>) {
    let _ = stop.send(true);
    let finish_by = Instant::now() + Duration::from_secs(10);
    for task in tasks {
        match tokio::time::timeout_at(finish_by.into(), task).await {
            Ok(Ok(Err(e))) => eprintln!("subscriber: {e}"),
            Ok(Err(e)) => eprintln!("task: {e}"),
            Err(_) => eprintln!("a subscriber did not stop in time"),
            Ok(Ok(Ok(()))) => {}
        }
    }
}

/// What the window measured: publications per channel, deliveries, data age, the hub's CPU.
fn measured(channels: &[String], totals: &Totals, seconds: f64, (before, after): (Usage, Usage)) -> Value {
    let deliveries = totals.ages_us.len() as u64;
    let per_channel: Map<String, Value> = channels
        .iter()
        .zip(&totals.publications)
        .map(|(channel, n)| (channel.clone(), json!(n)))
        .collect();
    let cpu_seconds = match (before, after) {
        (Some(b), Some(a)) => Some(a.1 - b.1),
        _ => None,
    };
    json!({
        "publications": totals.publications.iter().sum::<u64>(),
        "publications_per_channel": per_channel,
        "deliveries": deliveries,
        "deliveries_per_second": deliveries as f64 / seconds.max(1e-9),
        "age_ms": report::latency(&totals.ages_us),
        "before_publish_ms": report::latency(&totals.before_publish_us),
        "hub_cpu_seconds_measured": cpu_seconds,
        "hub_cpu_us_per_delivery": cpu_seconds.filter(|_| deliveries > 0).map(|s| s * 1e6 / deliveries as f64),
        "load_average": report::load_average(),
    })
}

/// What the subscribers share with the run.
struct Shared {
    /// Subscribers with every subscription in place.
    held: Arc<AtomicU64>,
    /// Subscribers that never got there (refused, or the connection failed).
    failed: Arc<AtomicU64>,
    /// Subscribers whose connection ended after they subscribed, before the end.
    closed: AtomicU64,
    /// A permit per subscriber that subscribed or gave up: the run waits for all of them.
    ready: Semaphore,
    /// Handshakes allowed now (see [`CONNECTING`]).
    connecting: Semaphore,
    /// Whether publications are being measured.
    measuring: AtomicBool,
    /// Every subscriber's samples, added when it stops.
    totals: std::sync::Mutex<Totals>,
}

impl Shared {
    fn new(channels: usize) -> Self {
        Self {
            held: Arc::default(),
            failed: Arc::default(),
            closed: AtomicU64::new(0),
            ready: Semaphore::new(0),
            connecting: Semaphore::new(CONNECTING),
            measuring: AtomicBool::new(false),
            totals: std::sync::Mutex::new(Totals {
                ages_us: Vec::new(),
                before_publish_us: Vec::new(),
                publications: vec![0; channels],
            }),
        }
    }
}

/// The samples of every subscriber.
#[derive(Default)]
struct Totals {
    /// The data age of each publication received while measuring, in µs.
    ages_us: Vec<u64>,
    /// Of that age, the part before the hub published (its `ts` minus `source_ts`), in µs.
    before_publish_us: Vec<u64>,
    /// Per channel (in `--channels` order), the most publications one subscriber received while
    /// measuring: how many the channel published.
    publications: Vec<u64>,
}

/// One client: its subscriptions and what it measured.
struct Subscriber {
    channels: Arc<Vec<String>>,
    shared: Arc<Shared>,
    /// Subscribe replies received.
    replies: usize,
    ages_us: Vec<u64>,
    before_publish_us: Vec<u64>,
    /// Publications received while measuring, per channel.
    publications: Vec<u64>,
}

impl Subscriber {
    /// Connect, subscribe and measure until `stop`; then hand the samples over.
    async fn run(
        mut self,
        hub: SocketAddr,
        source: Ipv4Addr,
        token: String,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let outcome = self.read(hub, source, token, stop).await;
        if self.replies < self.channels.len() {
            // Never subscribed: the wait for every subscription must not wait for this one.
            self.shared.failed.fetch_add(1, Ordering::Relaxed);
            self.shared.ready.add_permits(1);
        } else if outcome.is_err() {
            self.shared.closed.fetch_add(1, Ordering::Relaxed);
        }
        let mut totals = self.shared.totals.lock().unwrap_or_else(|e| e.into_inner());
        totals.ages_us.extend_from_slice(&self.ages_us);
        totals.before_publish_us.extend_from_slice(&self.before_publish_us);
        for (most, n) in totals.publications.iter_mut().zip(&self.publications) {
            *most = (*most).max(*n);
        }
        outcome
    }

    async fn read(
        &mut self,
        hub: SocketAddr,
        source: Ipv4Addr,
        token: String,
        mut stop: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let connecting = self.shared.connecting.acquire().await?;
        let mut ws = crate::open_ws(source, hub).await?;
        drop(connecting);
        ws.send(Message::text(hello(token, &self.channels))).await?;
        loop {
            let message = tokio::select! {
                _ = stop.changed() => return Ok(()),
                message = ws.next() => message,
            };
            let text = match message {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
                None => return Err(anyhow!("the hub closed the connection")),
            };
            let arrived_us = now_us();
            let mut pings = false;
            for line in text.as_str().split('\n') {
                pings |= self.take(line, arrived_us)?;
            }
            if pings {
                ws.send(Message::text("{}")).await?;
            }
        }
    }

    /// One line from the hub; `Ok(true)` for a ping, which wants its answer.
    fn take(&mut self, line: &str, arrived_us: u64) -> anyhow::Result<bool> {
        if line == "{}" {
            return Ok(true);
        }
        if line.starts_with("{\"push\"") {
            if self.shared.measuring.load(Ordering::Relaxed) {
                self.note(line, arrived_us);
            }
            return Ok(false);
        }
        // A reply: `{"id":N,"error":…}`, `{"id":1,"connect":…}` or `{"id":N,"subscribe":…}`.
        if let Some((head, rest)) = line.split_once(',')
            && head.starts_with("{\"id\":")
        {
            if rest.starts_with("\"error\"") {
                bail!("the hub refused: {line}");
            }
            if rest.starts_with("\"subscribe\"") {
                self.replies += 1;
                if self.replies == self.channels.len() {
                    self.shared.held.fetch_add(1, Ordering::Relaxed);
                    self.shared.ready.add_permits(1);
                }
            }
        }
        Ok(false)
    }

    /// A publication: its data's age, and one more on its channel.
    fn note(&mut self, line: &str, arrived_us: u64) {
        // Pushes without `source_ts` (an `unsubscribe`) are not publications of market data.
        let Some(source_ts_ms) = number(line, "\"source_ts\":") else {
            return;
        };
        self.ages_us
            .push(arrived_us.saturating_sub(source_ts_ms.saturating_mul(1000)));
        // `"ts":` (the hub's publish time) is not found inside `"source_ts":`.
        if let Some(ts_ms) = number(line, "\"ts\":") {
            self.before_publish_us.push(ts_ms.saturating_sub(source_ts_ms) * 1000);
        }
        let channel = channel_of(line);
        if let Some(i) = self.channels.iter().position(|n| Some(n.as_str()) == channel) {
            self.publications[i] += 1;
        }
    }
}

/// The channel of a push line, `{"push":{"channel":"<name>",…` (channel names need no escapes).
fn channel_of(line: &str) -> Option<&str> {
    line.strip_prefix("{\"push\":{\"channel\":\"")?.split('"').next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_line_gives_its_channel_and_source_time() {
        let line = r#"{"push":{"channel":"gpu:rtx-4090","pub":{"data":{"source_ts":1765139416932}}}}"#;
        assert_eq!(channel_of(line), Some("gpu:rtx-4090"));
        assert_eq!(number(line, "\"source_ts\":"), Some(1_765_139_416_932));
        assert_eq!(number(line, "\"missing\":"), None);
        assert_eq!(channel_of(r#"{"id":2,"subscribe":{}}"#), None);
    }

    #[test]
    fn replies_count_subscriptions_and_refusals_fail() {
        let shared = Arc::new(Shared::new(2));
        let mut s = Subscriber {
            channels: Arc::new(vec!["market:summary".into(), "gpu:rtx-4090".into()]),
            shared: shared.clone(),
            replies: 0,
            ages_us: Vec::new(),
            before_publish_us: Vec::new(),
            publications: vec![0; 2],
        };
        assert!(s.take("{}", 0).unwrap(), "a ping is answered");
        let connected = r#"{"id":1,"connect":{"client":"x","subs":{"subscribe":1}}}"#;
        assert!(!s.take(connected, 0).unwrap());
        let snapshot = r#"{"id":2,"subscribe":{"data":{"source_ts":1}}}"#;
        assert!(!s.take(snapshot, 0).unwrap());
        assert_eq!(shared.held.load(Ordering::Relaxed), 0);
        assert!(!s.take(r#"{"id":3,"subscribe":{}}"#, 0).unwrap());
        assert_eq!(shared.held.load(Ordering::Relaxed), 1);
        // Only publications received while measuring count.
        let push = r#"{"push":{"channel":"gpu:rtx-4090","pub":{"data":{"source_ts":2000}}}}"#;
        assert!(!s.take(push, 2_500_000).unwrap());
        assert!(s.ages_us.is_empty());
        shared.measuring.store(true, Ordering::Relaxed);
        assert!(!s.take(push, 2_500_000).unwrap());
        assert_eq!(s.ages_us, [500_000]);
        assert_eq!(s.publications, [0, 1]);
        let refused = r#"{"id":4,"error":{"code":103,"message":"permission denied"}}"#;
        assert!(s.take(refused, 0).is_err());
    }
}
