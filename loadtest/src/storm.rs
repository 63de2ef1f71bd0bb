//! `connect-storm`: authenticated connects at a rate until a cap or failures, held idle (pings
//! answered); connects per second, connect latency, the hub's memory per connection.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::{SinkExt, StreamExt};
use gpuscout_client::protocol;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

use crate::report::{self, Progress, hub_usage, procs_stats};
use crate::{Cli, hub_addrs, token_minter};

#[derive(clap::Args, Clone)]
#[group(id = "storm")]
pub struct Args {
    /// The most connections to open.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// New connections per second (0: as fast as the handshakes allow).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Stop ramping after this many failed connects.
    #[arg(long, default_value_t = 50)]
    pub max_failures: u64,
    /// Hold the connections idle this long after the ramp (pings answered), then count them.
    #[arg(long, default_value_t = 10)]
    pub hold_seconds: u64,
    /// Source addresses 127.0.0.<1..=n> to spread connections over (~28k ports each).
    #[arg(long, default_value_t = 1)]
    pub source_ips: u8,
    /// Give up ramping after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub max_seconds: u64,
}

pub async fn run(cli: &Cli, args: &Args) -> anyhow::Result<Value> {
    let Args {
        connections,
        rate,
        concurrency,
        max_failures,
        hold_seconds,
        source_ips,
        max_seconds,
    } = *args;
    let mint = token_minter()?;
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
    let progress = Progress::start("connected", connections as u64, open.clone(), Some(failed.clone()));
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
        let token = mint(&format!("cs{i}"))?;
        let source = Ipv4Addr::new(127, 0, 0, 1 + (i % source_ips.max(1) as usize) as u8);
        let hub = hubs[i % hubs.len()];
        let (failed_c, open_c, latencies, mut stop) =
            (failed.clone(), open.clone(), latencies.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(async move {
            let (failed, open) = (failed_c, open_c);
            let t0 = Instant::now();
            let ws = open_connection(hub, source, token).await;
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
    }
    // Let the last handshakes finish.
    let _ = tokio::time::timeout(Duration::from_secs(30), slots.acquire_many(concurrency.max(1) as u32)).await;
    progress.finish().await;
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
    let lat = std::mem::take(&mut *latencies.lock().await);
    let mut report = json!({
        "scenario": "connect-storm",
        "label": cli.label,
        "hubs": hubs.len(),
        "attempted": attempted,
        "connected": connected,
        "failed": failed.load(Ordering::Relaxed),
        "ramp_seconds": ramp_secs,
        "connects_per_second": connected as f64 / ramp_secs,
        "connect_latency_ms": report::latency(&lat),
        "held_after_seconds": hold_seconds,
        "held": held,
    });
    report::merge(&mut report, hub_usage(before, after, connected));
    Ok(report)
}

/// Connect one authenticated client; returns the socket once the hub answered `connect`.
async fn open_connection(
    hub: SocketAddr,
    source: Ipv4Addr,
    token: String,
) -> anyhow::Result<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>> {
    let mut ws = crate::open_ws(source, hub).await?;
    let connect = crate::fanout::connect_command(token);
    ws.send(Message::text(protocol::encode_command(&connect))).await?;
    while let Some(msg) = ws.next().await {
        let Message::Text(text) = msg? else { continue };
        for line in protocol::split_frame(text.as_str()) {
            let Ok(reply) = protocol::decode_reply(line) else {
                continue;
            };
            if reply.id != 1 {
                continue;
            }
            if let Some(e) = reply.error {
                bail!("connect refused: {e}");
            }
            return Ok(ws);
        }
    }
    bail!("closed before the connect reply")
}
