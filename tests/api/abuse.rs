//! One hostile client against a real hub process on a 100,000-offer market: it asks for the
//! `offers:all` snapshot (~35 MB) again and again and never reads. The hub must close it (3008)
//! without its memory growing by the snapshots it asked for, while a thousand other subscribers
//! keep getting every publication.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use gpuscout_hub::auth::TokenVerifier;
use gpuscout_hub::config::Settings;
use gpuscout_hub::tier::Tier;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::fakes::FakeServer;
use crate::helpers::*;

const MODELS: [&str; 8] = [
    "RTX 4090",
    "RTX 3090",
    "H100 SXM",
    "A100 SXM4",
    "RTX A6000",
    "L40S",
    "RTX 4080",
    "A40",
];

/// A 500.farm `/machines` body of `n` machines.
fn machines(n: usize) -> String {
    let records: Vec<Value> = (0..n)
        .map(|i| {
            let gpus = [1, 2, 4, 8][i % 4];
            json!({"machine_id": 100_000 + i, "host_id": 1_000 + i / 10, "gpu_name": MODELS[i % MODELS.len()],
                   "num_gpus": gpus, "num_gpus_rented": i % (gpus + 1), "dph_base": 0.2 + (i % 97) as f64 / 100.0,
                   "verification": "verified", "verified": true, "hosting_type": i % 2,
                   "geolocation": "Oregon, US", "reliability2": 0.99, "gpu_ram": 24576, "chunks": [], "min_chunk": 1})
        })
        .collect();
    json!({"url": "/machines", "timestamp": "2026-11-28T00:00:00.123456789Z", "count": n, "note": "Sorted from newest to oldest.", "offers": records})
        .to_string()
}

struct Hub {
    child: Child,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Hub {
    fn start(farm: &str) -> Self {
        Self::start_with(farm, &[])
    }

    fn start_with(farm: &str, env: &[(&str, &str)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_gpuscout"))
            .current_dir(dir.path())
            .env("GPUSCOUT__SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("GPUSCOUT__API__KEY", API_KEY)
            .env("GPUSCOUT__API__ALLOW_MARKET_CHANNELS", "true")
            .env("GPUSCOUT__INGEST__SIMULATED__ENABLED", "false")
            .env("GPUSCOUT__INGEST__FARM500__ENABLED", "true")
            .env("GPUSCOUT__INGEST__FARM500__BASE_URL", farm)
            .env("GPUSCOUT__INGEST__FARM500__POLL_INTERVAL_MS", "600000")
            .env("GPUSCOUT__INGEST__FARM500__TIMEOUT_MS", "60000")
            .env("GPUSCOUT__SERVER__WRITE_TIMEOUT_MS", "10000")
            .env("GPUSCOUT__LOG__LEVEL", "warn")
            .env_remove("RUST_LOG")
            .env_remove("GPUSCOUT__ENVIRONMENT")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start gpuscout");
        Self {
            child,
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            _dir: dir,
        }
    }

    fn rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kb / 1024.0
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

async fn metric(http: &reqwest::Client, hub: &Hub, name: &str) -> f64 {
    // 0 while the hub is still starting.
    let Ok(response) = http.get(hub.url("/metrics")).send().await else {
        return 0.0;
    };
    metric_value(&response.text().await.unwrap_or_default(), name).unwrap_or(0.0)
}

/// A subscriber that counts every publication on its channel and checks none is missing.
async fn subscriber(hub: std::net::SocketAddr, token: String, channel: &'static str, want: u64) -> Result<(), String> {
    let mut ws = ws_at(hub).await;
    ws.send(json!({"connect": {"token": token}})).await;
    ws.json().await;
    let reply = ws.subscribe(channel).await;
    let mut last = reply["subscribe"]["offset"].as_u64().unwrap_or(0);
    let start = last;
    while last < start + want {
        let push = match ws.next_within(Duration::from_secs(30)).await {
            Some(Incoming::Json(v)) => v,
            other => return Err(format!("stopped at offset {last}: {other:?}")),
        };
        let offset = push["push"]["pub"]["offset"]
            .as_u64()
            .ok_or(format!("not a publication: {push}"))?;
        if offset != last + 1 {
            return Err(format!("offset {offset} after {last}"));
        }
        last = offset;
    }
    Ok(())
}

#[tokio::test]
async fn a_client_hoarding_snapshots_is_closed_without_hurting_others() {
    gpuscout_hub::startup::install_tls_provider();
    let farm = FakeServer::start().await;
    farm.fake.set("/machines", machines(100_000));
    let hub = Hub::start(&farm.url);
    let http = reqwest::Client::new();
    let verifier = TokenVerifier::new(&Settings::defaults().auth).unwrap();
    // The market loaded.
    let started = Instant::now();
    while metric(&http, &hub, "gpuscout_source_polls_total").await < 1.0 {
        assert!(started.elapsed() < Duration::from_secs(120), "the hub never polled");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A thousand ordinary subscribers, each to get every one of 40 publications.
    const PUBLICATIONS: u64 = 40;
    let mut others = Vec::new();
    for i in 0..1000 {
        let token = verifier.mint(&format!("u{i}"), Tier::Individual, 3600).unwrap();
        others.push(tokio::spawn(subscriber(hub.addr, token, "gpu:rtx-4090", PUBLICATIONS)));
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Each holds four: its three personal channels (alerts, advisor, portfolio) and the gpu one.
    while metric(&http, &hub, "gpuscout_subscriptions").await < 4000.0 {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "subscribers did not all subscribe"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = hub.rss_mb();

    // The hostile client: a tiny receive window, snapshot requests, nothing read.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(hub.addr).await.unwrap();
    let url = format!("ws://{}/connection/websocket", hub.addr);
    let (mut hostile, _) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
    let token = verifier.mint("hoarder", Tier::Enterprise, 3600).unwrap();
    hostile
        .send(Message::text(json!({"id": 1, "connect": {"token": token}}).to_string()))
        .await
        .unwrap();
    hostile.next().await.unwrap().unwrap();
    let publisher = {
        let (http, url) = (http.clone(), hub.url("/api/publish"));
        tokio::spawn(async move {
            for n in 0..PUBLICATIONS {
                let body = json!({"channel": "gpu:rtx-4090", "data": {"n": n}});
                let r = http
                    .post(&url)
                    .header("X-API-Key", API_KEY)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mut peak = before;
    // Twenty subscribe/unsubscribe pairs in one frame (the protocol allows several commands per
    // frame): without a bound on replies, twenty snapshots would queue at once.
    let pairs: Vec<String> = (0..20u32)
        .flat_map(|n| {
            [
                json!({"id": 2 + 2 * n, "subscribe": {"channel": "offers:all"}}).to_string(),
                json!({"id": 3 + 2 * n, "unsubscribe": {"channel": "offers:all"}}).to_string(),
            ]
        })
        .collect();
    hostile.send(Message::text(pairs.join("\n"))).await.unwrap();
    let sent = Instant::now();
    let mut closed = false;
    while sent.elapsed() < Duration::from_secs(15) {
        peak = peak.max(hub.rss_mb());
        if metric(&http, &hub, "gpuscout_slow_disconnects_total").await >= 1.0 {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("hoarding client closed with 3008 after {:?}", sent.elapsed());
    for _ in 0..20 {
        peak = peak.max(hub.rss_mb());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(closed, "the hoarding client was never closed");
    publisher.await.unwrap();
    for other in others {
        other
            .await
            .unwrap()
            .expect("every other subscriber got every publication");
    }
    eprintln!("hub RSS: {before:.0} MB before, {peak:.0} MB at peak");
    assert!(peak - before < 100.0, "hub RSS grew {:.0} MB", peak - before);
}

/// Channel names of the client's invention leave nothing behind: 100,000 distinct ones, each
/// subscribed and unsubscribed, and the hub's memory returns to where it was.
#[tokio::test]
async fn made_up_channel_names_leave_no_state_behind() {
    gpuscout_hub::startup::install_tls_provider();
    let farm = FakeServer::start().await;
    farm.fake.set("/machines", machines(1_000));
    // Names may exist here (the server API may feed any model), so the pruning is what frees them.
    let hub = Hub::start_with(
        &farm.url,
        &[
            ("GPUSCOUT__BUS__IDLE_CHANNEL_TTL_S", "1"),
            ("GPUSCOUT__BUS__HISTORY_TTL_S", "1"),
            ("GPUSCOUT__TIERS__ENTERPRISE__COMMANDS_PER_SECOND", "100000"),
            ("GPUSCOUT__TIERS__ENTERPRISE__COMMAND_BURST", "100000"),
            ("GPUSCOUT__TIERS__ENTERPRISE__USER_COMMANDS_PER_SECOND", "1000000"),
        ],
    );
    let http = reqwest::Client::new();
    let verifier = TokenVerifier::new(&Settings::defaults().auth).unwrap();
    let started = Instant::now();
    while metric(&http, &hub, "gpuscout_source_polls_total").await < 1.0 {
        assert!(started.elapsed() < Duration::from_secs(60), "the hub never polled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let token = verifier.mint("namer", Tier::Enterprise, 3600).unwrap();
    let mut ws = ws_at(hub.addr).await;
    ws.send(json!({"connect": {"token": token}})).await;
    ws.json().await;
    // A first round, so what a first use allocates once (buffers, caches) is in the baseline.
    names_round(&mut ws, 0, 10_000).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = hub.rss_mb();
    names_round(&mut ws, 10_000, 110_000).await;
    let during = hub.rss_mb();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = hub.rss_mb();
    eprintln!("hub RSS: {before:.1} MB before, {during:.1} MB after 100,000 names, {after:.1} MB once pruned");
    assert!(
        after <= before * 1.10,
        "{after:.1} MB is more than 10% over {before:.1} MB"
    );
}

/// Subscribe to and unsubscribe from `gpu:made-up-<n>` for every `n` in `from..to`, a hundred
/// pairs a frame; every reply must be a success.
async fn names_round(ws: &mut WsClient, from: u32, to: u32) {
    let numbers: Vec<u32> = (from..to).collect();
    for chunk in numbers.chunks(100) {
        let frame: Vec<String> = chunk
            .iter()
            .flat_map(|n| {
                let channel = format!("gpu:made-up-{n}");
                [
                    json!({"id": 2 * n + 10, "subscribe": {"channel": channel}}).to_string(),
                    json!({"id": 2 * n + 11, "unsubscribe": {"channel": channel}}).to_string(),
                ]
            })
            .collect();
        ws.send_text(&frame.join("\n")).await;
        for _ in 0..2 * chunk.len() {
            let v = ws.json().await;
            assert!(v.get("error").is_none(), "{v}");
        }
    }
}
