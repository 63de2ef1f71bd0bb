//! `loadtest`: drive a running hub through the protocol and its server API, and measure.
//!
//! `fanout`: N subscriber connections on one channel (spread over 127.0.0.x source addresses), a
//! publisher through `/api/publish` at R publications/s carrying a send timestamp; reports
//! connections held, delivered vs expected, loss, latency percentiles, deliveries per second, and
//! the hub's RSS and CPU time from `/proc/<pid>`. Bounded in count and time; `--fail-on-loss`
//! makes any loss an error (the CI check).
//!
//! `cargo run --release -p loadtest -- fanout --connections 1000 --publications 1000 --rate 200`

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use gpuscout_hub::auth::{Tier, TokenVerifier};
use gpuscout_hub::config::Settings;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
#[command(name = "loadtest", about = "Load generator for GPUScout Hub")]
struct Cli {
    /// The hub's HTTP address; several nodes comma-separated (subscribers are spread over them
    /// round-robin, publications go through the first).
    #[arg(long, default_value = "127.0.0.1:8080", global = true)]
    hub: String,
    /// Server API key (`api.key` of the hub).
    #[arg(long, env = "GPUSCOUT__API__KEY", default_value = "", global = true)]
    api_key: String,
    /// Hub process ids (comma-separated), to read their RSS and CPU time from /proc (summed).
    #[arg(long, global = true, value_delimiter = ',')]
    hub_pid: Vec<u32>,
    /// Write the results as JSON here.
    #[arg(long, global = true)]
    json: Option<std::path::PathBuf>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Subscribers on one channel, a publisher at a fixed rate.
    Fanout {
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        #[arg(long, default_value = "gpu:loadtest")]
        channel: String,
        /// Publications in all.
        #[arg(long, default_value_t = 1000)]
        publications: u64,
        /// Publications per second.
        #[arg(long, default_value_t = 100)]
        rate: u64,
        /// Payload padding in bytes.
        #[arg(long, default_value_t = 100)]
        payload: usize,
        /// Source addresses 127.0.0.<1..=n> to spread connections over (~28k ports each).
        #[arg(long, default_value_t = 1)]
        source_ips: u8,
        /// Fail (exit 1) if any publication is not delivered to every subscriber.
        #[arg(long)]
        fail_on_loss: bool,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 300)]
        max_seconds: u64,
    },
    /// Open authenticated connections at a rate until a cap (or failures), hold them idle, and
    /// report connects per second, connect latency and the hub's memory per connection.
    ConnectStorm {
        /// The most connections to open.
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// New connections per second (0: as fast as the handshakes allow).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Handshakes in flight at once.
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        /// Stop ramping after this many failed connects.
        #[arg(long, default_value_t = 50)]
        max_failures: u64,
        /// Hold the connections idle this long after the ramp (pings answered), then count them.
        #[arg(long, default_value_t = 10)]
        hold_seconds: u64,
        /// Source addresses 127.0.0.<1..=n> to spread connections over (~28k ports each).
        #[arg(long, default_value_t = 1)]
        source_ips: u8,
        /// Give up ramping after this many seconds.
        #[arg(long, default_value_t = 300)]
        max_seconds: u64,
    },
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// RSS (bytes) and CPU seconds of processes, summed; `None` without pids or when one is gone.
fn procs_stats(pids: &[u32]) -> Option<(u64, f64)> {
    if pids.is_empty() {
        return None;
    }
    pids.iter()
        .map(|p| proc_stats(*p))
        .try_fold((0, 0.0), |acc, s| s.map(|s| (acc.0 + s.0, acc.1 + s.1)))
}

/// RSS (bytes) and CPU seconds of a process.
fn proc_stats(pid: u32) -> Option<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some((rss_kb * 1024, ticks / 100.0))
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    gpuscout_hub::startup::install_tls_provider();
    match cli.scenario {
        Scenario::Fanout {
            connections,
            ref channel,
            publications,
            rate,
            payload,
            source_ips,
            fail_on_loss,
            max_seconds,
        } => {
            let report = fanout(
                &cli,
                connections,
                channel,
                publications,
                rate,
                payload,
                source_ips,
                max_seconds,
            )
            .await?;
            emit(&cli, &report)?;
            let lost = report["lost"].as_u64().unwrap_or(0);
            let held = report["connections_held"].as_u64().unwrap_or(0);
            if fail_on_loss && (lost > 0 || held < connections as u64) {
                bail!("{lost} deliveries lost, {held} of {connections} connections held");
            }
            println!("{} passed, {} failed", u64::from(lost == 0), u64::from(lost > 0));
        }
        Scenario::ConnectStorm {
            connections,
            rate,
            concurrency,
            max_failures,
            hold_seconds,
            source_ips,
            max_seconds,
        } => {
            let report = connect_storm(
                &cli,
                connections,
                rate,
                concurrency,
                max_failures,
                hold_seconds,
                source_ips,
                max_seconds,
            )
            .await?;
            emit(&cli, &report)?;
        }
    }
    Ok(())
}

/// Print the report, and write it as JSON where `--json` says.
fn emit(cli: &Cli, report: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(report)?);
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_vec_pretty(report)?)?;
    }
    Ok(())
}

/// The hub addresses of `--hub`.
fn hub_addrs(cli: &Cli) -> anyhow::Result<Vec<SocketAddr>> {
    cli.hub
        .split(',')
        .map(|h| h.trim().parse().context("--hub is host:port[,host:port...]"))
        .collect()
}

/// Connect one authenticated client; returns the socket once the hub answered `connect`.
async fn open_connection(
    hub: SocketAddr,
    source: Ipv4Addr,
    token: &str,
) -> anyhow::Result<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    let stream = socket.connect(hub).await?;
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{hub}/connection/websocket"), stream).await?;
    ws.send(Message::text(json!({"id": 1, "connect": {"token": token}}).to_string()))
        .await?;
    while let Some(msg) = ws.next().await {
        let Message::Text(text) = msg? else { continue };
        for line in text.as_str().split('\n') {
            if line.starts_with("{\"id\":1,") {
                if line.contains("\"connect\"") {
                    return Ok(ws);
                }
                bail!("connect refused: {line}");
            }
        }
    }
    bail!("closed before the connect reply")
}

#[allow(clippy::too_many_arguments)]
async fn connect_storm(
    cli: &Cli,
    connections: usize,
    rate: u64,
    concurrency: usize,
    max_failures: u64,
    hold_seconds: u64,
    source_ips: u8,
    max_seconds: u64,
) -> anyhow::Result<Value> {
    let settings = Settings::load().context("loading settings for the token secret")?;
    let verifier = TokenVerifier::new(&settings.auth)?;
    let hubs = hub_addrs(cli)?;
    let before = procs_stats(&cli.hub_pid);
    let deadline = Instant::now() + Duration::from_secs(max_seconds);
    let failed = Arc::new(AtomicU64::new(0));
    let open = Arc::new(AtomicU64::new(0));
    let latencies: Arc<Mutex<Vec<u64>>> = Arc::default();
    let slots = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tick = (rate > 0).then(|| tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64)));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(connections);
    let mut attempted = 0u64;
    for i in 0..connections {
        if Instant::now() > deadline || failed.load(Ordering::Relaxed) >= max_failures {
            break;
        }
        if let Some(t) = tick.as_mut() {
            t.tick().await;
        }
        let permit = slots.clone().acquire_owned().await?;
        attempted += 1;
        let token = verifier.mint(&format!("cs{i}"), Tier::Enterprise, 3600)?;
        let source = Ipv4Addr::new(127, 0, 0, 1 + (i % source_ips.max(1) as usize) as u8);
        let hub = hubs[i % hubs.len()];
        let (failed_c, open_c, latencies, mut stop) =
            (failed.clone(), open.clone(), latencies.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(async move {
            let (failed, open) = (failed_c, open_c);
            let t0 = Instant::now();
            let ws = open_connection(hub, source, &token).await;
            drop(permit);
            let mut ws = match ws {
                Ok(ws) => ws,
                Err(e) => {
                    if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("connect failed: {e}");
                    }
                    return;
                }
            };
            latencies.lock().await.push(t0.elapsed().as_micros() as u64);
            open.fetch_add(1, Ordering::Relaxed);
            // Idle: answer pings until told to stop or the hub closes.
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    msg = ws.next() => match msg {
                        Some(Ok(Message::Text(t))) if t.as_str() == "{}" => {
                            if ws.send(Message::text("{}")).await.is_err() { break; }
                        }
                        Some(Ok(_)) => {}
                        _ => break,
                    },
                }
            }
            open.fetch_sub(1, Ordering::Relaxed);
        }));
        if i % 1000 == 999 {
            eprintln!(
                "{} open, {} failed, {:.0}/s",
                open.load(Ordering::Relaxed),
                failed.load(Ordering::Relaxed),
                (i + 1) as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    // Let the last handshakes finish.
    let _ = tokio::time::timeout(Duration::from_secs(30), slots.acquire_many(concurrency.max(1) as u32)).await;
    let ramp_secs = started.elapsed().as_secs_f64();
    let connected = open.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = procs_stats(&cli.hub_pid);
    tokio::time::sleep(Duration::from_secs(hold_seconds)).await;
    let held = open.load(Ordering::Relaxed);
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    let mut lat = std::mem::take(&mut *latencies.lock().await);
    lat.sort_unstable();
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(json!({
        "scenario": "connect-storm",
        "hubs": hubs.len(),
        "attempted": attempted,
        "connected": connected,
        "failed": failed.load(Ordering::Relaxed),
        "ramp_seconds": ramp_secs,
        "connects_per_second": connected as f64 / ramp_secs,
        "connect_latency_ms": {
            "p50": ms(percentile(&lat, 50.0)), "p99": ms(percentile(&lat, 99.0)), "max": ms(lat.last().copied().unwrap_or(0)),
        },
        "held_after_seconds": hold_seconds,
        "held": held,
        "hub_rss_bytes_before": before.map(|s| s.0),
        "hub_rss_bytes_after": after.map(|s| s.0),
        "hub_rss_bytes_per_connection": match (before, after) {
            (Some(b), Some(a)) if connected > 0 => Some(a.0.saturating_sub(b.0) / connected),
            _ => None,
        },
        "hub_cpu_seconds": match (before, after) { (Some(b), Some(a)) => Some(a.1 - b.1), _ => None },
    }))
}

#[allow(clippy::too_many_arguments)]
async fn fanout(
    cli: &Cli,
    connections: usize,
    channel: &str,
    publications: u64,
    rate: u64,
    payload: usize,
    source_ips: u8,
    max_seconds: u64,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(max_seconds);
    // Tokens signed like `gpuscout token`, with the hub's configured secret.
    let settings = Settings::load().context("loading settings for the token secret")?;
    let verifier = TokenVerifier::new(&settings.auth)?;
    let hubs = hub_addrs(cli)?;
    let hub = hubs[0];
    let latencies: Arc<Mutex<Vec<u64>>> = Arc::default();
    let delivered = Arc::new(AtomicU64::new(0));
    let held = Arc::new(AtomicU64::new(0));
    let ready = Arc::new(tokio::sync::Semaphore::new(0));
    let rss_before = procs_stats(&cli.hub_pid);

    let connect_started = Instant::now();
    let mut tasks = Vec::with_capacity(connections);
    for i in 0..connections {
        let token = verifier.mint(&format!("lt{i}"), Tier::Enterprise, 3600)?;
        let source = Ipv4Addr::new(127, 0, 0, 1 + (i % source_ips.max(1) as usize) as u8);
        let hub = hubs[i % hubs.len()];
        let (channel, latencies, delivered, held, ready) = (
            channel.to_owned(),
            latencies.clone(),
            delivered.clone(),
            held.clone(),
            ready.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
            let stream = socket.connect(hub).await?;
            let (mut ws, _) =
                tokio_tungstenite::client_async(format!("ws://{hub}/connection/websocket"), stream).await?;
            let hello = format!(
                "{}\n{}",
                json!({"id": 1, "connect": {"token": token}}),
                json!({"id": 2, "subscribe": {"channel": channel}})
            );
            ws.send(Message::text(hello)).await?;
            let mut mine = Vec::with_capacity(publications as usize);
            let mut subscribed = false;
            while let Some(msg) = ws.next().await {
                let Message::Text(text) = msg? else { continue };
                let arrived = now_us();
                for line in text.as_str().split('\n') {
                    if line == "{}" {
                        ws.send(Message::text("{}")).await?;
                        continue;
                    }
                    if !subscribed && line.contains("\"id\":2") {
                        subscribed = true;
                        held.fetch_add(1, Ordering::Relaxed);
                        ready.add_permits(1);
                        continue;
                    }
                    if let Some(ts) = line.find("\"ts\":").and_then(|p| {
                        line[p + 5..]
                            .split(|c: char| !c.is_ascii_digit())
                            .next()?
                            .parse::<u64>()
                            .ok()
                    }) {
                        mine.push(arrived.saturating_sub(ts));
                        if line.contains("\"last\":true") {
                            delivered.fetch_add(mine.len() as u64, Ordering::Relaxed);
                            latencies.lock().await.extend_from_slice(&mine);
                            return anyhow::Ok(());
                        }
                    }
                }
            }
            delivered.fetch_add(mine.len() as u64, Ordering::Relaxed);
            latencies.lock().await.extend_from_slice(&mine);
            anyhow::Ok(())
        }));
    }
    // Wait until every subscription is in place (or time runs out).
    let all = tokio::time::timeout_at(deadline.into(), ready.acquire_many(connections as u32)).await;
    let connect_secs = connect_started.elapsed().as_secs_f64();
    if all.is_err() {
        eprintln!(
            "only {} of {connections} subscribed in time",
            held.load(Ordering::Relaxed)
        );
    }

    let http = reqwest::Client::new();
    let url = format!("http://{hub}/api/publish");
    let pad = "x".repeat(payload);
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let started = Instant::now();
    let mut tick = tokio::time::interval(interval);
    for n in 1..=publications {
        tick.tick().await;
        if Instant::now() > deadline {
            break;
        }
        let body =
            json!({"channel": channel, "data": {"ts": now_us(), "seq": n, "last": n == publications, "pad": pad}});
        let r = http
            .post(&url)
            .header("X-API-Key", &cli.api_key)
            .json(&body)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("publish failed: HTTP {}", r.status());
        }
    }
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
    let mut lat = std::mem::take(&mut *latencies.lock().await);
    lat.sort_unstable();
    let held = held.load(Ordering::Relaxed);
    let expected = held * publications;
    let got = delivered.load(Ordering::Relaxed);
    let rss_after = procs_stats(&cli.hub_pid);
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(json!({
        "scenario": "fanout",
        "connections": connections,
        "connections_held": held,
        "connect_seconds": connect_secs,
        "publications": publications,
        "rate": rate,
        "payload_bytes": payload,
        "expected_deliveries": expected,
        "delivered": got,
        "lost": expected.saturating_sub(got),
        "deliveries_per_second": got as f64 / total_secs,
        "publish_seconds": publish_secs,
        "latency_ms": {
            "p50": ms(percentile(&lat, 50.0)), "p90": ms(percentile(&lat, 90.0)), "p99": ms(percentile(&lat, 99.0)),
            "p99.9": ms(percentile(&lat, 99.9)), "max": ms(lat.last().copied().unwrap_or(0)),
        },
        "hub_rss_bytes_before": rss_before.map(|s| s.0),
        "hub_rss_bytes_after": rss_after.map(|s| s.0),
        "hub_rss_bytes_per_connection": match (rss_before, rss_after) {
            (Some(b), Some(a)) if held > 0 => Some((a.0.saturating_sub(b.0)) / held),
            _ => None,
        },
        "hub_cpu_seconds": match (rss_before, rss_after) { (Some(b), Some(a)) => Some(a.1 - b.1), _ => None },
    }))
}
