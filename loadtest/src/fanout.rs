//! `fanout`: N subscribers on one channel, a publisher at R publications/s through the server API.
//!
//! Subscribers speak the protocol with the wire types of `gpuscout-client` for their commands and
//! scan each push for its timestamps rather than decoding it whole, so the load generator's CPU
//! (shared with the hub on this machine) goes to sockets, not JSON.
//!
//! Latency without coordinated omission: publication k carries the time it was scheduled for
//! (`sched`: the start plus k / rate) besides the time it was actually sent (`ts`). When the hub
//! is saturated the publisher waits on its replies and falls behind the schedule; latency from
//! `ts` leaves that waiting out, latency from `sched` counts it, as a client of a real market
//! (which does not wait for the hub) would see it. The report gives both, and how far the
//! publisher fell behind.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::{SinkExt, StreamExt};
use gpuscout_client::protocol::{self, Command, ConnectRequest, SubscribeRequest};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::report::{self, Progress, SyscallCount, hub_counter, hub_usage, now_us, procs_stats};
use crate::{Cli, hub_addrs, token_minter};

#[derive(clap::Args, Clone)]
#[group(id = "fanout")]
pub struct Args {
    /// Subscriber connections.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    #[arg(long, default_value = "gpu:loadtest")]
    pub channel: String,
    /// Publications in all.
    #[arg(long, default_value_t = 1000)]
    pub publications: u64,
    /// Publications per second (over all channels).
    #[arg(long, default_value_t = 100)]
    pub rate: u64,
    /// Channels every subscriber is on (`<channel>-0` … `<channel>-<n-1>` when more than one);
    /// publications go to them in turn, so each subscriber receives every publication.
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
    /// Publish requests in flight at once: the publisher keeps to its schedule while the hub
    /// answers, and falls behind only when this many are waiting.
    #[arg(long, default_value_t = 64)]
    pub in_flight: usize,
    /// Payload padding in bytes.
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    /// Source addresses 127.0.0.<1..=n> to spread connections over (~28k ports each).
    #[arg(long, default_value_t = 1)]
    pub source_ips: u8,
    /// Connects (TCP, WebSocket handshake, connect and subscribe replies) in flight at once: the
    /// hub drops a connection that does not send its request headers within
    /// `server.header_timeout_ms`, which thousands of handshakes started at once can miss.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Fail (exit 1) if any publication is not delivered to every subscriber.
    #[arg(long)]
    pub fail_on_loss: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub max_seconds: u64,
    /// Hostile connections running while publishing: each asks for `--hoard-channel`'s snapshot
    /// twenty times in one frame and never reads, and does it again once the hub closes it.
    #[arg(long, default_value_t = 0)]
    pub hoarders: usize,
    #[arg(long, default_value = "offers:all")]
    pub hoard_channel: String,
}

pub async fn run(cli: &Cli, args: &Args) -> anyhow::Result<Value> {
    let Args {
        connections,
        ref channel,
        publications,
        rate,
        payload,
        source_ips,
        max_seconds,
        ..
    } = *args;
    if args.channels == 0 || publications < args.channels as u64 {
        bail!("--channels must be at least 1 and at most --publications");
    }
    let deadline = Instant::now() + Duration::from_secs(max_seconds);
    let mint = token_minter()?;
    let hubs = hub_addrs(cli)?;
    let hub = hubs[0];
    // (from the schedule, from the actual send), in microseconds.
    let latencies = Arc::new(Latencies::default());
    let delivered = Arc::new(AtomicU64::new(0));
    let held = Arc::new(AtomicU64::new(0));
    let ready = Arc::new(tokio::sync::Semaphore::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let connecting = Arc::new(tokio::sync::Semaphore::new(args.connect_concurrency.max(1)));
    let rss_before = procs_stats(&cli.hub_pid);

    let connect_started = Instant::now();
    let mut tasks = Vec::with_capacity(connections);
    for i in 0..connections {
        let token = mint(&format!("lt{i}"))?;
        let source = Ipv4Addr::new(127, 0, 0, 1 + (i % source_ips.max(1) as usize) as u8);
        let hub = hubs[i % hubs.len()];
        let (channels, latencies, delivered, held, ready) = (
            channel_names(channel, args.channels),
            latencies.clone(),
            delivered.clone(),
            held.clone(),
            ready.clone(),
        );
        let (failed, connecting) = (failed.clone(), connecting.clone());
        tasks.push(tokio::spawn(async move {
            let mut subscribed = false;
            let outcome: anyhow::Result<()> = async {
                let mut slot = Some(connecting.acquire_owned().await?);
                let mut ws = crate::open_ws(source, hub).await?;
                let subscribed_reply = format!("{{\"id\":{},", channels.len() + 1);
                let mut lasts_due = channels.len();
                ws.send(Message::text(hello(token, &channels))).await?;
                // This subscriber's samples since they were last added to the run's.
                let mut mine = Vec::with_capacity(FLUSH_EVERY);
                let mut count = 0u64;
                while let Some(msg) = ws.next().await {
                    let Message::Text(text) = msg? else { continue };
                    let arrived = now_us();
                    for line in text.as_str().split('\n') {
                        if line == "{}" {
                            ws.send(Message::text("{}")).await?;
                            continue;
                        }
                        if !subscribed && line.starts_with(&subscribed_reply) {
                            subscribed = true;
                            slot.take();
                            held.fetch_add(1, Ordering::Relaxed);
                            ready.add_permits(1);
                            continue;
                        }
                        // Publications only: a reply (the connect reply carries the portfolio's
                        // snapshot, with a `ts` of its own) is not a delivery.
                        if !line.starts_with("{\"push\"") {
                            continue;
                        }
                        if let (Some(sched), Some(ts)) = (number(line, "\"sched\":"), number(line, "\"ts\":")) {
                            mine.push((arrived.saturating_sub(sched), arrived.saturating_sub(ts)));
                            count += 1;
                            lasts_due -= usize::from(line.contains("\"last\":true"));
                            if lasts_due == 0 {
                                delivered.fetch_add(count, Ordering::Relaxed);
                                latencies.add(i, &mut mine);
                                return anyhow::Ok(());
                            }
                            if mine.len() >= FLUSH_EVERY {
                                latencies.add(i, &mut mine);
                            }
                        }
                    }
                }
                delivered.fetch_add(count, Ordering::Relaxed);
                latencies.add(i, &mut mine);
                anyhow::Ok(())
            }
            .await;
            // A connection that never subscribed no longer holds up the start.
            if let (false, Err(e)) = (subscribed, &outcome) {
                if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                    eprintln!("connection {i} failed before subscribing: {e:#}");
                }
                ready.add_permits(1);
            }
            outcome
        }));
    }
    // Wait until every subscription is in place (or time runs out).
    let progress = Progress::start("subscribed", connections as u64, held.clone(), None);
    let all = tokio::time::timeout_at(deadline.into(), ready.acquire_many(connections as u32)).await;
    progress.finish().await;
    let connect_secs = connect_started.elapsed().as_secs_f64();
    if all.is_err() {
        eprintln!(
            "only {} of {connections} subscribed in time",
            held.load(Ordering::Relaxed)
        );
    }

    let stop_hoarding = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hoarder_closes = Arc::new(AtomicU64::new(0));
    for i in 0..args.hoarders {
        let token = mint(&format!("hoarder{i}"))?;
        let (channel, stop, closes) = (
            args.hoard_channel.clone(),
            stop_hoarding.clone(),
            hoarder_closes.clone(),
        );
        tokio::spawn(async move { hoard(hub, token, channel, stop, closes).await });
    }

    let http = reqwest::Client::new();
    let frames_before = hub_counter(&http, hub, "gpuscout_frames_written_total").await;
    // System calls over the schedule's span (publications / rate).
    let span = publications as f64 / rate.max(1) as f64;
    let syscalls = SyscallCount::start(&cli.hub_pid, span);
    // CPU from here on is the publications' (the connects' is left out), the hub's and ours.
    let cpu_before = (procs_stats(&cli.hub_pid), procs_stats(&[std::process::id()]));
    let started = Instant::now();
    let publisher = Publisher {
        url: format!("http://{hub}/api/publish"),
        api_key: cli.api_key.clone(),
        channels: channel_names(channel, args.channels),
        pad: "x".repeat(payload),
        http: http.clone(),
        in_flight: Arc::new(tokio::sync::Semaphore::new(args.in_flight.max(1))),
        failed: Arc::default(),
    };
    let sent = Arc::new(AtomicU64::new(0));
    let progress = Progress::start("published", publications, sent.clone(), None);
    let behind = publisher
        .run(publications, rate, args.in_flight.max(1), &sent, deadline)
        .await?;
    progress.finish().await;
    let publish_secs = started.elapsed().as_secs_f64();
    // Subscribers stop at the last publication; give them until the deadline.
    for t in tasks {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left.max(Duration::from_secs(1)), t).await {
            Ok(Ok(Err(e))) => eprintln!("connection error: {e}"),
            Ok(Err(e)) => eprintln!("task: {e}"),
            Err(_) => eprintln!("a subscriber timed out"),
            Ok(Ok(Ok(()))) => {}
        }
    }
    let total_secs = started.elapsed().as_secs_f64();
    stop_hoarding.store(true, Ordering::Relaxed);
    let (from_schedule, from_send) = latencies.merged();
    let held = held.load(Ordering::Relaxed);
    let expected = held * publications;
    let got = delivered.load(Ordering::Relaxed);
    let rss_after = procs_stats(&cli.hub_pid);
    let rates = report::write_rates(
        (
            frames_before,
            hub_counter(&http, hub, "gpuscout_frames_written_total").await,
        ),
        syscalls.finish(span).await,
        got,
        total_secs,
    );
    let per_delivery = |before: Option<(u64, f64)>, after: Option<(u64, f64)>| match (before, after) {
        (Some(b), Some(a)) if got > 0 => Some((a.1 - b.1) * 1e6 / got as f64),
        _ => None,
    };
    let hub_cpu_us_per_delivery = per_delivery(cpu_before.0, rss_after);
    let generator_cpu_us_per_delivery = per_delivery(cpu_before.1, procs_stats(&[std::process::id()]));
    let mut report = json!({
        "scenario": "fanout",
        "label": cli.label,
        "hubs": hubs.len(),
        "connections": connections,
        "connections_held": held,
        "connections_failed": failed.load(Ordering::Relaxed),
        "connect_seconds": connect_secs,
        "publications": publications,
        "rate": rate,
        "channels": args.channels,
        "payload_bytes": payload,
        "expected_deliveries": expected,
        "delivered": got,
        "lost": expected.saturating_sub(got),
        "deliveries_per_second": got as f64 / total_secs,
        "publish_seconds": publish_secs,
        "latency_ms": report::summary(&from_schedule),
        "latency_from_send_ms": report::summary(&from_send),
        "publisher_behind_ms": report::latency(&behind),
        "hub_cpu_us_per_delivery": hub_cpu_us_per_delivery,
        "generator_cpu_us_per_delivery": generator_cpu_us_per_delivery,
        "load_average": report::load_average(),
        "hoarders": args.hoarders,
        "hoarder_closes": hoarder_closes.load(Ordering::Relaxed),
    });
    report::merge(&mut report, hub_usage(rss_before, rss_after, held));
    report::merge(&mut report, rates);
    Ok(report)
}

/// The unsigned integer after `key` in `line`.
pub fn number(line: &str, key: &str) -> Option<u64> {
    let p = line.find(key)? + key.len();
    line[p..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// A subscriber adds its samples to the run's every this many deliveries (and at its end).
const FLUSH_EVERY: usize = 256;
/// Histogram shards, so subscribers on different threads rarely wait for one another.
const SHARDS: usize = 16;

/// The run's latencies (from the schedule, from the send; µs) in HDR histograms: memory stays
/// constant however many deliveries there are, where keeping every sample took 16 bytes each
/// (486 MB at 19,000 × 1,600), memory the kernel had to fault in while it was measured.
struct Latencies([std::sync::Mutex<(Histogram<u64>, Histogram<u64>)>; SHARDS]);

impl Default for Latencies {
    fn default() -> Self {
        Self(std::array::from_fn(|_| {
            std::sync::Mutex::new((report::histogram(), report::histogram()))
        }))
    }
}

impl Latencies {
    /// Record subscriber `i`'s samples and empty `mine`.
    fn add(&self, i: usize, mine: &mut Vec<(u64, u64)>) {
        let mut shard = self.0[i % SHARDS].lock().unwrap_or_else(|e| e.into_inner());
        for (from_schedule, from_send) in mine.drain(..) {
            report::record(&mut shard.0, from_schedule);
            report::record(&mut shard.1, from_send);
        }
    }

    /// Every shard's samples together.
    fn merged(&self) -> (Histogram<u64>, Histogram<u64>) {
        let (mut a, mut b) = (report::histogram(), report::histogram());
        for shard in &self.0 {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            // Auto-resizing histograms take any other's values.
            let _ = a.add(&shard.0);
            let _ = b.add(&shard.1);
        }
        (a, b)
    }
}

/// A hostile client until `stop`: a tiny receive window, twenty subscribe/unsubscribe pairs of
/// `channel` in one frame, nothing read; when the hub closes it (a write fails), again.
async fn hoard(
    hub: SocketAddr,
    token: String,
    channel: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
    closes: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let pairs: Vec<String> = (0..20u32)
        .flat_map(|n| {
            [
                json!({"id": 2 + 2 * n, "subscribe": {"channel": channel}}).to_string(),
                json!({"id": 3 + 2 * n, "unsubscribe": {"channel": channel}}).to_string(),
            ]
        })
        .collect();
    let frame = pairs.join("\n");
    while !stop.load(Ordering::Relaxed) {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_recv_buffer_size(4096)?;
        let stream = socket.connect(hub).await?;
        let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{hub}/connection/websocket"), stream).await?;
        ws.send(Message::text(serde_json::to_string(&connect_command(token.clone()))?))
            .await?;
        ws.next().await;
        ws.send(Message::text(frame.clone())).await?;
        // Never read; probe with pings until a write fails (the hub closed it).
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if ws.send(Message::Ping(Vec::new().into())).await.is_err() {
                closes.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
    Ok(())
}

/// Fail (the CI check) when `--fail-on-loss` and anything was lost, or more was counted than was
/// published (a duplicate, or a message that is not a publication taken for one).
pub fn check(args: &Args, report: &Value) -> anyhow::Result<()> {
    let lost = report["lost"].as_u64().unwrap_or(0);
    let held = report["connections_held"].as_u64().unwrap_or(0);
    let (got, expected) = (
        report["delivered"].as_u64().unwrap_or(0),
        report["expected_deliveries"].as_u64().unwrap_or(0),
    );
    let wrong = lost > 0 || held < args.connections as u64 || got > expected;
    if args.fail_on_loss && wrong {
        bail!(
            "{lost} deliveries lost, {got} counted of {expected}, {held} of {} connections held",
            args.connections
        );
    }
    println!("{} passed, {} failed", u64::from(!wrong), u64::from(wrong));
    Ok(())
}

/// The `connect` command (id 1) of a load-test client.
pub fn connect_command(token: String) -> Command {
    Command {
        id: 1,
        connect: Some(ConnectRequest {
            token,
            name: "loadtest".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The first frame of a subscriber: connect and its subscribes (ids 2, 3, …), batched.
pub fn hello(token: String, channels: &[String]) -> String {
    let mut frame = protocol::encode_command(&connect_command(token));
    for (n, channel) in channels.iter().enumerate() {
        let subscribe = Command {
            id: 2 + n as u32,
            subscribe: Some(SubscribeRequest {
                channel: channel.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        frame.push('\n');
        frame.push_str(&protocol::encode_command(&subscribe));
    }
    frame
}

/// `channel` itself, or `<channel>-0` … `<channel>-<n-1>` for several.
fn channel_names(channel: &str, n: usize) -> Vec<String> {
    match n {
        1 => vec![channel.to_owned()],
        _ => (0..n).map(|i| format!("{channel}-{i}")).collect(),
    }
}

/// Publishes on a schedule through `/api/publish`, several requests in flight.
struct Publisher {
    url: String,
    api_key: String,
    channels: Vec<String>,
    pad: String,
    http: reqwest::Client,
    in_flight: Arc<tokio::sync::Semaphore>,
    failed: Arc<std::sync::Mutex<Option<String>>>,
}

impl Publisher {
    /// Publication k (from 1) is due at start + (k - 1) / rate and goes to channel (k - 1) mod n;
    /// the last publication of each channel (`"last": true`) goes once every other has been
    /// answered, so a subscriber that has seen every channel's last has seen everything. Returns
    /// how far behind the schedule each publication was sent, in µs.
    async fn run(
        &self,
        publications: u64,
        rate: u64,
        in_flight: usize,
        sent: &AtomicU64,
        deadline: Instant,
    ) -> anyhow::Result<Vec<u64>> {
        let rate = rate.max(1);
        let start_us = now_us();
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let lasts_from = publications - self.channels.len() as u64 + 1;
        let mut behind = Vec::with_capacity(publications as usize);
        for n in 1..=publications {
            tick.tick().await;
            if Instant::now() > deadline {
                break;
            }
            let last = n >= lasts_from;
            // Every earlier publication answered before the first `last`.
            let permit = match last {
                true => self.in_flight.clone().acquire_many_owned(in_flight as u32).await?,
                false => self.in_flight.clone().acquire_owned().await?,
            };
            // When it should have gone (the schedule), and when it goes.
            let sched = start_us + (n - 1) * 1_000_000 / rate;
            let ts = now_us();
            behind.push(ts.saturating_sub(sched));
            let channel = &self.channels[(n - 1) as usize % self.channels.len()];
            let data = json!({"sched": sched, "ts": ts, "seq": n, "last": last, "pad": self.pad});
            let request = self
                .http
                .post(&self.url)
                .header("X-API-Key", &self.api_key)
                .json(&json!({"channel": channel, "data": data}));
            let failed = self.failed.clone();
            let answer = async move {
                let outcome = match request.send().await {
                    Ok(r) if r.status().is_success() => None,
                    Ok(r) => Some(format!("HTTP {}", r.status())),
                    Err(e) => Some(format!("{e:?}")),
                };
                if let Some(e) = outcome {
                    failed.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
                }
                drop(permit);
            };
            match last {
                true => answer.await,
                false => drop(tokio::spawn(answer)),
            }
            sent.store(n, Ordering::Relaxed);
        }
        if let Some(e) = self.failed.lock().unwrap_or_else(|e| e.into_inner()).take() {
            bail!("publish failed: {e}");
        }
        Ok(behind)
    }
}
