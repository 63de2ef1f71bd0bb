//! Several hub processes on one private Redis, started by the tests on a free port (never the
//! shared one), and one database: fan-out across nodes, leader failover, Redis restarted empty,
//! Redis paused, limits and revocations across nodes, an advisor answer cancelled from another node,
//! a Redis Cluster with sharded pub/sub. The
//! hubs are the real binary, killed with SIGKILL where a test says so.
//!
//! A test binary of its own, and one test at a time (`serial()`): each test runs several hubs, and
//! their timings (a leader's takeover) must not depend on what other tests do to the two cores.

#[allow(dead_code)]
#[path = "../common/mod.rs"]
mod common;
use common::{fakes, helpers, llm_fake};

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gpuscout_hub::auth::TokenVerifier;
use gpuscout_hub::config::Settings;
use gpuscout_hub::tier::Tier;
use serde_json::{Value, json};

use crate::helpers::*;

/// Held by every test: one at a time.
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static ONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    ONE.lock().await
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .unwrap()
        .port()
}

fn under_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// A `redis-server` of the test's own: no persistence, so a restart comes back empty.
struct PrivateRedis {
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl PrivateRedis {
    /// `None` (the test skips) only off CI when `redis-server` is not installed.
    fn start() -> Option<Self> {
        if Command::new("redis-server").arg("--version").output().is_err() {
            assert!(!under_ci(), "redis-server is required under CI");
            eprintln!("skipping: redis-server is not installed");
            return None;
        }
        let mut redis = Self {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        redis.spawn();
        Some(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        self.spawn_with(&[]);
    }

    /// Start (again, on the same port) with `extra` arguments; no persistence.
    fn spawn_with(&mut self, extra: &[&str]) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no"])
            .args(extra)
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let ok = Command::new("kill").args([signal, &pid]).status().unwrap().success();
        assert!(ok, "kill {signal} {pid}");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.signal_cont();
        }
        self.kill();
    }
}

impl PrivateRedis {
    fn signal_cont(&self) -> Option<()> {
        let pid = self.child.as_ref()?.id().to_string();
        Command::new("kill").args(["-CONT", &pid]).status().ok().map(|_| ())
    }
}

/// One hub process.
struct Node {
    child: Child,
    addr: SocketAddr,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The hubs of one test: one Redis prefix and one database.
struct Cluster {
    redis_url: String,
    extra: Vec<(String, String)>,
    prefix: String,
    database: String,
    _db_dir: tempfile::TempDir,
}

impl Cluster {
    async fn new(redis: &PrivateRedis) -> Self {
        Self::on(redis.url(), &[]).await
    }

    /// Nodes on the Redis at `redis_url`, with `extra` settings as environment variables.
    async fn on(redis_url: String, extra: &[(&str, &str)]) -> Self {
        gpuscout_hub::startup::install_tls_provider();
        let db_dir = tempfile::tempdir().unwrap();
        let database = match fresh_postgres_url().await {
            Some(url) => url,
            None => format!("sqlite://{}/hub.db", db_dir.path().display()),
        };
        Self {
            redis_url,
            extra: extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            prefix: format!("c{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
            database,
            _db_dir: db_dir,
        }
    }

    /// Start a node and wait until it is ready. `simulated`: run the simulated market (polled by
    /// whichever node leads).
    async fn node(&self, simulated: bool) -> Node {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("hub.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_gpuscout"))
            .arg("serve")
            .current_dir(dir.path())
            .env("GPUSCOUT__SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("GPUSCOUT__BUS__REDIS_URL", &self.redis_url)
            .env("GPUSCOUT__BUS__REDIS_PREFIX", &self.prefix)
            .env("GPUSCOUT__BUS__LEADER_LEASE_MS", LEASE_MS.to_string())
            .env("GPUSCOUT__API__KEY", API_KEY)
            .env("GPUSCOUT__API__ALLOW_MARKET_CHANNELS", "true")
            .env("GPUSCOUT__API__ALLOW_PERSONAL_CHANNELS", "true")
            .env("GPUSCOUT__DATABASE__URL", &self.database)
            .env("GPUSCOUT__INGEST__SIMULATED__ENABLED", simulated.to_string())
            .env("GPUSCOUT__INGEST__SIMULATED__POLL_INTERVAL_MS", "500")
            .env("GPUSCOUT__LOG__LEVEL", "info")
            .envs(self.extra.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start gpuscout");
        let node = Node {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
            _dir: dir,
        };
        node.wait_ready(Duration::from_secs(20)).await;
        node
    }
}

impl Node {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn ready(&self) -> Option<Value> {
        let resp = self.http.get(self.url("/readyz")).send().await.ok()?;
        let ok = resp.status() == 200;
        let body: Value = resp.json().await.ok()?;
        ok.then_some(body)
    }

    async fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while self.ready().await.is_none() {
            assert!(Instant::now() < deadline, "node {} not ready in {within:?}", self.addr);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn metric(&self, name: &str) -> f64 {
        let text = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        helpers::metric_value(&text, name).unwrap_or_else(|| {
            // Declared without a sample: a labelled family before its first event.
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} not in /metrics");
            0.0
        })
    }

    /// The server API's answer to a publish (a result or an error).
    async fn publish(&self, channel: &str, data: Value) -> Value {
        self.http
            .post(self.url("/api/publish"))
            .header("X-API-Key", API_KEY)
            .json(&json!({"channel": channel, "data": data}))
            .send()
            .await
            .expect("server API reachable")
            .json()
            .await
            .expect("server API JSON")
    }

    async fn publish_ok(&self, channel: &str, data: Value) -> u64 {
        let v = self.publish(channel, data).await;
        v["result"]["offset"]
            .as_u64()
            .unwrap_or_else(|| panic!("publish failed: {v}"))
    }

    async fn connect(&self, user: &str) -> WsClient {
        let token = mint(user, Tier::Professional);
        self.connect_with(&token)
            .await
            .unwrap_or_else(|code| panic!("connect closed with {code}"))
    }

    /// Connect with `token`: the client, or the close code the hub answered with.
    async fn connect_with(&self, token: &str) -> Result<WsClient, u16> {
        let mut ws = ws_at(self.addr).await;
        let id = ws.send(json!({"connect": {"token": token}})).await;
        match ws.next().await {
            Incoming::Json(v) if v["id"] == json!(id) && v.get("connect").is_some() => Ok(ws),
            Incoming::Close(code, _) => Err(code),
            other => panic!("unexpected answer to connect: {other:?}"),
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mint(user: &str, tier: Tier) -> String {
    TokenVerifier::new(&Settings::defaults().auth)
        .unwrap()
        .mint(user, tier, 3600)
        .unwrap()
}

/// Read publications of `channel` until `count` arrived; returns (offset, data) in arrival order.
async fn read_pubs(ws: &mut WsClient, channel: &str, count: usize) -> Vec<(u64, Value)> {
    let mut got = Vec::new();
    while got.len() < count {
        match ws.next_within(Duration::from_secs(10)).await {
            Some(Incoming::Json(v)) if v["push"]["channel"] == channel && v["push"].get("pub").is_some() => {
                got.push((
                    v["push"]["pub"]["offset"].as_u64().unwrap(),
                    v["push"]["pub"]["data"].clone(),
                ));
            }
            Some(Incoming::Json(_)) => {}
            other => panic!("waiting for publication {} of {count}: {other:?}", got.len() + 1),
        }
    }
    got
}

/// Nothing more on `channel` for a while (a duplicate would show up here).
async fn assert_quiet(ws: &mut WsClient, channel: &str) {
    let deadline = Instant::now() + Duration::from_millis(400);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match ws.next_within(left).await {
            Some(Incoming::Json(v)) if v["push"]["channel"] == channel => panic!("unexpected: {v}"),
            Some(Incoming::Close(code, reason)) => panic!("closed {code} {reason}"),
            _ => {}
        }
    }
}

const CH: &str = "gpu:rtx-4090";
/// The leader lease of the test nodes.
const LEASE_MS: u64 = 2_000;

#[tokio::test]
async fn publications_through_any_of_three_nodes_reach_every_subscriber_once_in_order() {
    let _one = serial().await;
    let Some(redis) = PrivateRedis::start() else { return };
    let cluster = Cluster::new(&redis).await;
    let nodes = [
        cluster.node(false).await,
        cluster.node(false).await,
        cluster.node(false).await,
    ];
    let mut clients = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for j in 0..3 {
            let mut ws = node.connect(&format!("u{i}{j}")).await;
            let r = ws.subscribe(CH).await;
            assert!(r.get("subscribe").is_some(), "{r}");
            clients.push(ws);
        }
    }
    for n in 1..=60u64 {
        let offset = nodes[n as usize % 3].publish_ok(CH, json!({"n": n})).await;
        assert_eq!(offset, n, "offsets are shared by all nodes");
    }
    for ws in &mut clients {
        let got = read_pubs(ws, CH, 60).await;
        let expected: Vec<(u64, Value)> = (1..=60u64).map(|n| (n, json!({"n": n}))).collect();
        assert_eq!(got, expected);
        assert_quiet(ws, CH).await;
    }
    // History is shared too: any node answers it.
    let h: Value = nodes[2]
        .http
        .post(nodes[2].url("/api/history"))
        .header("X-API-Key", API_KEY)
        .json(&json!({"channel": CH, "limit": 5, "reverse": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let offsets: Vec<u64> = h["result"]["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, vec![60, 59, 58, 57, 56], "{h}");
}

/// Which nodes say they lead.
async fn leaders(nodes: &[&Node]) -> Vec<usize> {
    let mut out = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        if n.metric("gpuscout_leader").await == 1.0 {
            out.push(i);
        }
    }
    out
}

async fn polls(nodes: &[&Node]) -> Vec<f64> {
    let mut out = Vec::new();
    for n in nodes {
        out.push(n.metric("gpuscout_source_polls_total").await);
    }
    out
}

/// Exactly one node leads and only it polls, until it has polled twice more (within `within`).
/// Returns its index.
async fn one_poller(nodes: &[&Node], within: Duration) -> usize {
    let before = polls(nodes).await;
    let lead = leaders(nodes).await;
    assert_eq!(lead.len(), 1, "exactly one leader: {lead:?}");
    let leader = lead[0];
    let deadline = Instant::now() + within;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = polls(nodes).await;
        assert_eq!(leaders(nodes).await, lead, "the leader did not change");
        for i in (0..nodes.len()).filter(|i| *i != leader) {
            assert_eq!(after[i], before[i], "a follower never polls: {before:?} → {after:?}");
        }
        if after[leader] >= before[leader] + 2.0 {
            return leader;
        }
        assert!(
            Instant::now() < deadline,
            "the leader did not poll twice in {within:?}: {before:?} → {after:?}"
        );
    }
}

#[tokio::test]
async fn when_the_leader_dies_another_node_polls_within_the_lease() {
    let _one = serial().await;
    let Some(redis) = PrivateRedis::start() else { return };
    let cluster = Cluster::new(&redis).await;
    let mut nodes = vec![
        cluster.node(true).await,
        cluster.node(true).await,
        cluster.node(true).await,
    ];
    let deadline = Instant::now() + Duration::from_secs(5);
    while leaders(&nodes.iter().collect::<Vec<_>>()).await.len() != 1 {
        assert!(Instant::now() < deadline, "no leader elected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Market work through Redis takes about a second per poll in a debug build.
    let leader = one_poller(&nodes.iter().collect::<Vec<_>>(), Duration::from_secs(20)).await;

    // A follower serves the leader's market: a subscribe snapshot with data, then live deltas.
    let follower = (leader + 1) % 3;
    let mut ws = nodes[follower].connect("watcher").await;
    let r = ws.subscribe("market:summary").await;
    let snapshot = &r["subscribe"]["data"];
    assert_eq!(snapshot["type"], "snapshot", "{r}");
    assert_eq!(snapshot["source"], "simulated", "{r}");
    assert!(snapshot["items"].as_object().is_some_and(|m| m.len() > 50), "{r}");
    let deltas = read_pubs(&mut ws, "market:summary", 2).await;
    assert!(deltas.iter().all(|(_, d)| d["type"] == "delta"));

    // The lease as Redis holds it (read directly: a node's HTTP answers may wait behind the market
    // work a new leader starts with).
    let holder = || {
        let out = Command::new("redis-cli")
            .args([
                "-p",
                &redis.port.to_string(),
                "GET",
                &format!("{}.leader", cluster.prefix),
            ])
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let old_holder = holder();
    assert!(!old_holder.is_empty(), "the leader holds the lease");
    let killed_at = Instant::now();
    nodes[leader].kill();
    let survivors: Vec<&Node> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, n)| n)
        .collect();
    loop {
        let now_holder = holder();
        if !now_holder.is_empty() && now_holder != old_holder {
            break;
        }
        assert!(killed_at.elapsed() < Duration::from_secs(10), "no takeover");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let takeover = killed_at.elapsed();
    // Within the lease plus one attempt period (a sixth of it), plus scheduling slack.
    let bound = Duration::from_millis(LEASE_MS + LEASE_MS / 6 + 700);
    assert!(takeover < bound, "took over after {takeover:?}, more than {bound:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while leaders(&survivors).await.len() != 1 {
        assert!(Instant::now() < deadline, "the new leader does not say so");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    one_poller(&survivors, Duration::from_secs(20)).await;

    // The watcher's stream goes on from the new leader: its seq jumped past the old leader's, so
    // a client book sees a gap and resyncs rather than trusting stale numbers.
    let mut last_seq = deltas.last().unwrap().1["seq"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, d) = read_pubs(&mut ws, "market:summary", 1).await.remove(0);
        let seq = d["seq"].as_u64().unwrap();
        if d["prev_seq"].as_u64() != Some(last_seq) {
            assert!(seq > last_seq, "the new leader's seq {seq} follows {last_seq}");
            break;
        }
        last_seq = seq;
        assert!(Instant::now() < deadline, "no delta from the new leader");
    }
    eprintln!("takeover after {takeover:?}");
    drop(nodes);
}

#[tokio::test]
async fn after_redis_restarts_empty_clients_resync_and_nothing_comes_twice() {
    let _one = serial().await;
    let Some(mut redis) = PrivateRedis::start() else { return };
    let cluster = Cluster::new(&redis).await;
    let nodes = [cluster.node(false).await, cluster.node(false).await];
    let mut a = nodes[0].connect("a").await;
    let mut b = nodes[1].connect("b").await;
    let epoch = a.subscribe(CH).await["subscribe"]["epoch"].as_str().unwrap().to_owned();
    b.subscribe(CH).await;
    for n in 1..=10u64 {
        nodes[n as usize % 2].publish_ok(CH, json!({"n": n})).await;
    }
    for ws in [&mut a, &mut b] {
        assert_eq!(read_pubs(ws, CH, 10).await.last().unwrap().0, 10);
    }

    redis.kill();
    redis.spawn();
    for node in &nodes {
        node.wait_ready(Duration::from_secs(10)).await;
    }
    // The channel's position is gone: each node tells its subscribers (3010: reconnect).
    for ws in [&mut a, &mut b] {
        match ws.next_within(Duration::from_secs(10)).await {
            Some(Incoming::Close(code, _)) => assert_eq!(code, 3010),
            other => panic!("expected close 3010, got {other:?}"),
        }
    }
    let mut clients = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let mut ws = node.connect(&format!("r{i}")).await;
        let r = ws
            .request(json!({"subscribe": {"channel": CH, "recover": true, "offset": 10, "epoch": epoch}}))
            .await;
        let s = &r["subscribe"];
        assert_eq!(s["was_recovering"], true, "{r}");
        assert!(s.get("recovered").is_none() || s["recovered"] == false, "{r}");
        assert_ne!(s["epoch"].as_str().unwrap(), epoch, "a new epoch: {r}");
        assert!(s.get("publications").is_none_or(|p| p.as_array().unwrap().is_empty()));
        clients.push(ws);
    }
    for n in 11..=15u64 {
        let offset = nodes[n as usize % 2].publish_ok(CH, json!({"n": n})).await;
        assert_eq!(offset, n - 10, "offsets restart in the new epoch");
    }
    for ws in &mut clients {
        let got = read_pubs(ws, CH, 5).await;
        let expected: Vec<(u64, Value)> = (11..=15u64).map(|n| (n - 10, json!({"n": n}))).collect();
        assert_eq!(got, expected);
        assert_quiet(ws, CH).await;
    }
}

#[tokio::test]
async fn while_redis_is_stopped_the_hub_stays_up_not_ready_and_resumes_on_its_own() {
    let _one = serial().await;
    let Some(redis) = PrivateRedis::start() else { return };
    let cluster = Cluster::new(&redis).await;
    let nodes = [cluster.node(false).await, cluster.node(false).await];
    let mut a = nodes[0].connect("a").await;
    let mut b = nodes[1].connect("b").await;
    a.subscribe(CH).await;
    b.subscribe(CH).await;
    for n in 1..=5u64 {
        nodes[n as usize % 2].publish_ok(CH, json!({"n": n})).await;
    }
    for ws in [&mut a, &mut b] {
        read_pubs(ws, CH, 5).await;
    }

    redis.signal("-STOP");
    let stopped = Instant::now();
    // Not ready, with the reason, within a few seconds; still serving HTTP.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let resp = nodes[0].http.get(nodes[0].url("/readyz")).send().await.unwrap();
        if resp.status() == 503 {
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["checks"]["bus"], "down", "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "/readyz still ready with Redis stopped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let health = nodes[1].http.get(nodes[1].url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    // A publish fails with a clear error instead of hanging.
    let failed = nodes[1].publish(CH, json!({"n": "while stopped"})).await;
    assert_eq!(failed["error"]["code"], 100, "{failed}");
    // The connections stay open (pings answered) and get nothing wrong.
    for ws in [&mut a, &mut b] {
        if let Some(Incoming::Close(code, reason)) = ws.next_within(Duration::from_millis(500)).await {
            panic!("closed {code} {reason} while Redis is stopped");
        }
    }
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(stopped.elapsed())).await;
    redis.signal("-CONT");
    for node in &nodes {
        node.wait_ready(Duration::from_secs(15)).await;
    }
    let mut last = 0;
    for n in 6..=10u64 {
        last = nodes[n as usize % 2].publish_ok(CH, json!({"n": n})).await;
    }
    // The publish that timed out may still have run when Redis woke: then it is delivered with
    // its own offset, once. Either way every client sees the same contiguous offsets, once each.
    for ws in [&mut a, &mut b] {
        let got = read_pubs(ws, CH, (last - 5) as usize).await;
        let offsets: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(offsets, (6..=last).collect::<Vec<_>>());
        let tail: Vec<Value> = got.iter().rev().take(5).rev().map(|g| g.1.clone()).collect();
        assert_eq!(tail, (6..=10u64).map(|n| json!({"n": n})).collect::<Vec<_>>());
        assert_quiet(ws, CH).await;
    }
}

#[tokio::test]
async fn the_gpu_channel_limit_holds_across_nodes() {
    let _one = serial().await;
    let Some(redis) = PrivateRedis::start() else { return };
    let cluster = Cluster::new(&redis).await;
    let nodes = [cluster.node(false).await, cluster.node(false).await];
    // The individual tier: ten gpu:* channels per user, wherever they are subscribed.
    let token = mint("gpus", Tier::Individual);
    let mut first = nodes[0].connect_with(&token).await.expect("first connection");
    let mut second = nodes[1].connect_with(&token).await.expect("second connection");
    for n in 0..6 {
        assert!(first.subscribe(&format!("gpu:m{n}")).await.get("subscribe").is_some());
    }
    for n in 6..10 {
        assert!(second.subscribe(&format!("gpu:m{n}")).await.get("subscribe").is_some());
    }
    assert_eq!(second.subscribe("gpu:m10").await["error"]["code"], 106);
    assert_eq!(first.subscribe("gpu:m10").await["error"]["code"], 106);
    // Held on the other node already: no extra cost.
    assert!(second.subscribe("gpu:m0").await.get("subscribe").is_some());
    // The first connection ends: its channels are freed for the user on the other node.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = second.subscribe("gpu:m10").await;
        if r.get("subscribe").is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed connection's channels were not freed: {r}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn connection_limits_and_token_revocations_hold_across_nodes() {
    let _one = serial().await;
    let Some(redis) = PrivateRedis::start() else { return };
    let cluster = Cluster::new(&redis).await;
    let nodes = [cluster.node(false).await, cluster.node(false).await];
    // The free tier allows 2 connections per user, wherever they are.
    let token = mint("lim", Tier::Free);
    let first = nodes[0].connect_with(&token).await.expect("first connection");
    let mut second = nodes[1].connect_with(&token).await.expect("second connection");
    assert_eq!(nodes[0].connect_with(&token).await.err(), Some(3504));
    assert_eq!(nodes[1].connect_with(&token).await.err(), Some(3504));
    // A connection that ends frees its place.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    let third = loop {
        match nodes[1].connect_with(&token).await {
            Ok(ws) => break ws,
            Err(code) => {
                assert_eq!(code, 3504);
                assert!(Instant::now() < deadline, "the closed connection's place was not freed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };

    // Revoking the token through one node closes its connections on every node.
    let revoked: Value = nodes[0]
        .http
        .post(nodes[0].url("/api/revoke_token"))
        .header("X-API-Key", API_KEY)
        .json(&json!({"uid": jti_of(&token), "expire_at": gpuscout_hub::clock::unix_now_s() + 600}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(revoked, json!({"result": {}}));
    assert_eq!(second.closed().await, 3500);
    let mut third = third;
    assert_eq!(third.closed().await, 3500);
    assert_eq!(nodes[0].connect_with(&token).await.err(), Some(3500));
    assert_eq!(nodes[1].connect_with(&token).await.err(), Some(3500));
    // Another token of the same user still works.
    assert!(nodes[0].connect_with(&mint("lim", Tier::Free)).await.is_ok());
}

#[tokio::test]
async fn an_advisor_answer_is_cancelled_from_another_node() {
    let _one = serial().await;
    let Some(redis) = PrivateRedis::start() else { return };
    let llm = llm_fake::LlmServer::start().await;
    // A slow answer: 200 tokens 100 ms apart (20 s), far longer than the test.
    llm.fake.push(llm_fake::Reply::Timestamps {
        tokens: 200,
        gap: Duration::from_millis(100),
    });
    let url: &'static str = Box::leak(llm.url.clone().into_boxed_str());
    let cluster = Cluster::on(
        redis.url(),
        &[
            ("GPUSCOUT__ADVISOR__PROVIDER", "openai"),
            ("GPUSCOUT__ADVISOR__OPENAI__BASE_URL", url),
        ],
    )
    .await;
    let nodes = [cluster.node(false).await, cluster.node(false).await];
    let mut asker = nodes[0].connect("cx").await;
    let r = asker
        .request(json!({"rpc": {"method": "advisor.ask", "data": {"text": "tokens"}}}))
        .await;
    let message_id = r["rpc"]["data"]["message_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_owned();
    // The answer streams from node 0.
    let mut deltas = 0;
    while deltas < 2 {
        let (_, data) = read_pubs(&mut asker, "advisor:#cx", 1).await.remove(0);
        if data["type"] == "delta" {
            deltas += 1;
        }
    }
    // The same user, connected to node 1, cancels it.
    let mut other = nodes[1].connect("cx").await;
    let r = other
        .request(json!({"rpc": {"method": "advisor.cancel", "data": {"message_id": message_id}}}))
        .await;
    assert_eq!(r["rpc"]["data"]["cancelled"], true, "{r}");
    let end = loop {
        let (_, data) = read_pubs(&mut asker, "advisor:#cx", 1).await.remove(0);
        if data["type"] != "delta" {
            break data;
        }
    };
    assert_eq!(end["type"], "done", "{end}");
    assert_eq!(end["stop_reason"], "cancelled", "{end}");
    // Node 0 dropped the upstream request.
    let deadline = Instant::now() + Duration::from_secs(5);
    while llm.fake.hung_up() == 0 {
        assert!(Instant::now() < deadline, "the provider's stream was not dropped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Once it has ended, a cancel from either node says there was nothing to cancel.
    let r = other
        .request(json!({"rpc": {"method": "advisor.cancel", "data": {"message_id": message_id}}}))
        .await;
    assert_eq!(r["rpc"]["data"]["cancelled"], false, "{r}");
    // Another user cannot cancel it through any node.
    let mut stranger = nodes[1].connect("cy").await;
    let r = stranger
        .request(json!({"rpc": {"method": "advisor.cancel", "data": {"message_id": message_id}}}))
        .await;
    assert_eq!(r["error"]["code"], 103, "{r}");
}

/// A Redis Cluster of three masters of the test's own (no replicas, no persistence).
struct PrivateRedisCluster {
    nodes: Vec<PrivateRedis>,
}

impl PrivateRedisCluster {
    fn start() -> Option<Self> {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let mut node = PrivateRedis::start()?;
            node.kill();
            nodes.push(node);
        }
        for node in &mut nodes {
            let conf = node.dir.path().join("nodes.conf");
            let conf = conf.to_str().expect("a UTF-8 temp path");
            node.spawn_with(&["--cluster-enabled", "yes", "--cluster-config-file", conf]);
        }
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stdout));
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ok = nodes.iter().all(|n| {
                Command::new("redis-cli")
                    .args(["-p", &n.port.to_string(), "cluster", "info"])
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
            });
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "the Redis Cluster did not become ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(Self { nodes })
    }

    fn url(&self) -> String {
        let mut url = format!("redis-cluster://127.0.0.1:{}", self.nodes[0].port);
        for (i, n) in self.nodes.iter().enumerate().skip(1) {
            url.push(if i == 1 { '?' } else { '&' });
            url.push_str(&format!("node=127.0.0.1:{}", n.port));
        }
        url
    }
}

#[tokio::test]
async fn sharded_pub_sub_on_a_redis_cluster_delivers_every_channel_in_order() {
    let _one = serial().await;
    let Some(redis) = PrivateRedisCluster::start() else {
        return;
    };
    let cluster = Cluster::on(redis.url(), &[("GPUSCOUT__BUS__REDIS_SHARDED", "true")]).await;
    let nodes = [cluster.node(true).await, cluster.node(true).await];
    // Channels whose keys hash to different slots (so to different masters).
    // (Slugs no real model has: the simulated market publishes on the real ones.)
    let channels = ["gpu:test-a", "gpu:test-b", "gpu:test-c", "gpu:test-d", "gpu:test-e"];
    let mut clients = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let mut ws = node.connect(&format!("s{i}")).await;
        for ch in channels {
            let r = ws.subscribe(ch).await;
            assert!(r.get("subscribe").is_some(), "{r}");
        }
        clients.push(ws);
    }
    for n in 1..=10u64 {
        for ch in channels {
            let offset = nodes[n as usize % 2].publish_ok(ch, json!({"n": n})).await;
            assert_eq!(offset, n);
        }
    }
    for ws in &mut clients {
        let mut got: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
        while got.values().map(Vec::len).sum::<usize>() < 50 {
            match ws.next_within(Duration::from_secs(10)).await {
                Some(Incoming::Json(v)) if v["push"].get("pub").is_some() => {
                    let ch = v["push"]["channel"].as_str().unwrap().to_owned();
                    assert_eq!(v["push"]["pub"]["offset"], v["push"]["pub"]["data"]["n"]);
                    got.entry(ch)
                        .or_default()
                        .push(v["push"]["pub"]["offset"].as_u64().unwrap());
                }
                Some(Incoming::Json(_)) => {}
                other => panic!("waiting for publications: {other:?}"),
            }
        }
        for ch in channels {
            assert_eq!(got[ch], (1..=10).collect::<Vec<u64>>(), "{ch}");
        }
    }
    // The leader's market reaches a follower's subscribers through the cluster too.
    let deadline = Instant::now() + Duration::from_secs(10);
    let follower = loop {
        let lead = leaders(&nodes.iter().collect::<Vec<_>>()).await;
        if lead.len() == 1 {
            break 1 - lead[0];
        }
        assert!(Instant::now() < deadline, "no leader on the cluster");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut ws = nodes[follower].connect("m").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = ws.subscribe("market:summary").await;
        if r["subscribe"]["data"]["items"]
            .as_object()
            .is_some_and(|m| m.len() > 50)
        {
            break;
        }
        assert!(Instant::now() < deadline, "no market snapshot on the follower: {r}");
        ws.request(json!({"unsubscribe": {"channel": "market:summary"}})).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    read_pubs(&mut ws, "market:summary", 1).await;
}

/// A node on Redis runs leadership as a critical task too: killing it, or any other, stops the
/// node with an error instead of leaving it serving without a lease or a market.
#[tokio::test]
async fn a_clustered_node_stops_when_any_critical_task_dies() {
    let Some(redis) = PrivateRedis::start() else { return };
    let url = redis.url();
    let killed = kill_each_critical_task(|s| {
        s.bus.redis_url = url.clone();
        s.bus.redis_prefix = format!("sup{}", free_port());
    })
    .await;
    assert!(killed.iter().any(|k| k == "leadership"), "{killed:?}");
    assert!(killed.iter().any(|k| k == "market-runner"), "{killed:?}");
    assert!(killed.iter().any(|k| k == "bus-delivery"), "{killed:?}");
    assert!(killed.iter().any(|k| k == "control-listener"), "{killed:?}");
}

/// A fake 500.farm both nodes poll (the leader does), whose RTX 4090 price the test moves.
struct Farm {
    server: fakes::FakeServer,
    offers: Vec<gpuscout_hub::market::Offer>,
}

impl Farm {
    async fn start() -> Self {
        let server = fakes::FakeServer::start().await;
        let offers = gpuscout_hub::ingest::simulated::SimulatedSource::new(21).offers(0);
        server.fake.set("/machines", fakes::machines_body(&offers));
        Self { server, offers }
    }

    fn price_4090(&mut self, usd: f64) {
        for o in self.offers.iter_mut().filter(|o| &*o.model == "rtx-4090") {
            o.price_per_gpu_hour_usd = usd;
        }
        self.server.fake.set("/machines", fakes::machines_body(&self.offers));
    }

    async fn cluster(&self, redis: &PrivateRedis) -> Cluster {
        let url = self.server.url.clone();
        Cluster::on(
            redis.url(),
            &[
                ("GPUSCOUT__INGEST__FARM500__ENABLED", "true"),
                ("GPUSCOUT__INGEST__FARM500__BASE_URL", url.as_str()),
                ("GPUSCOUT__INGEST__FARM500__POLL_INTERVAL_MS", "150"),
                ("GPUSCOUT__INGEST__FARM500__JITTER_RATIO", "0"),
                ("GPUSCOUT__ALERTS__RECONCILE_INTERVAL_MS", "600000"),
            ],
        )
        .await
    }
}

async fn rule_request(node: &Node, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    bearer_request(&node.http, method, &node.url(path), token, body).await
}

/// The alert pushes of a socket within `wait`.
async fn alerts_within(ws: &mut WsClient, wait: Duration) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match ws.next_within(left).await {
            Some(Incoming::Json(v)) if v["push"]["channel"].as_str().is_some_and(|c| c.starts_with("alerts:#")) => {
                out.push(v["push"]["pub"]["data"].clone());
            }
            Some(Incoming::Json(_)) => {}
            Some(Incoming::Close(c, r)) => panic!("closed {c} {r}"),
            None => return out,
        }
    }
}

/// Two nodes; returns them as (leader, follower) once one leads and has polled.
async fn leader_and_follower(cluster: &Cluster) -> (Node, Node) {
    let a = cluster.node(false).await;
    let b = cluster.node(false).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lead = leaders(&[&a, &b]).await;
        if lead.len() == 1 && polls(&[&a, &b]).await.iter().sum::<f64>() >= 1.0 {
            return if lead[0] == 0 { (a, b) } else { (b, a) };
        }
        assert!(Instant::now() < deadline, "no leader: {lead:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Create a price rule through `node`; it must be created.
async fn create_rule(node: &Node, token: &str, threshold: f64) -> Value {
    let (status, rule) = rule_request(node, "POST", "/api/v1/alerts/rules", token, Some(price_rule(threshold))).await;
    assert_eq!(status, 201, "{rule}");
    rule
}

fn price_rule(threshold: f64) -> Value {
    json!({"name": "cheap 4090", "kind": "price", "model": "rtx-4090", "stat": "median",
           "direction": "below", "threshold_usd": threshold, "cooldown_s": 60})
}

#[tokio::test]
async fn a_rule_created_or_deleted_on_a_follower_is_what_the_leader_evaluates() {
    let _one = serial().await;
    let Some(redis) = PrivateRedis::start() else { return };
    let mut farm = Farm::start().await;
    let cluster = farm.cluster(&redis).await;
    let (leader, follower) = leader_and_follower(&cluster).await;
    let token = mint("ruler", Tier::Professional);
    let mut ws = leader.connect_with(&token).await.unwrap();
    // Created through the follower: the leader fires it on the next crossing.
    let rule = create_rule(&follower, &token, 0.30).await;
    farm.price_4090(0.50);
    assert!(alerts_within(&mut ws, Duration::from_millis(800)).await.is_empty());
    farm.price_4090(0.20);
    let fired = alerts_within(&mut ws, Duration::from_secs(2)).await;
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0]["rule_id"], rule["id"]);

    // Deleted through the follower: it never fires again.
    let second = create_rule(&follower, &token, 0.40).await;
    let path = format!("/api/v1/alerts/rules/{}", second["id"].as_str().unwrap());
    // It learns the market stands below it (no alert: its first evaluation), then is deleted.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rule_request(&follower, "DELETE", &path, &token, None).await.0, 204);
    farm.price_4090(0.60);
    tokio::time::sleep(Duration::from_millis(500)).await;
    farm.price_4090(0.10);
    let fired = alerts_within(&mut ws, Duration::from_secs(2)).await;
    assert!(
        fired.iter().all(|a| a["rule_id"] != second["id"]),
        "the deleted rule fired: {fired:?}"
    );
}

#[tokio::test]
async fn a_leader_killed_between_two_crossings_loses_and_doubles_no_alert() {
    let _one = serial().await;
    let Some(redis) = PrivateRedis::start() else { return };
    let mut farm = Farm::start().await;
    let cluster = farm.cluster(&redis).await;
    let (mut leader, follower) = leader_and_follower(&cluster).await;
    let token = mint("failover", Tier::Professional);
    let first = create_rule(&follower, &token, 0.30).await;
    let second = create_rule(&follower, &token, 0.15).await;
    let mut ws = follower.connect_with(&token).await.unwrap();
    farm.price_4090(0.50);
    tokio::time::sleep(Duration::from_millis(800)).await;
    // The first crossing, evaluated by the leader.
    farm.price_4090(0.20);
    let fired = alerts_within(&mut ws, Duration::from_secs(2)).await;
    assert_eq!(fired.len(), 1, "{fired:?}");
    // Its crossing state is stored (through the write queue) before the leader dies.
    tokio::time::sleep(Duration::from_millis(500)).await;
    leader.kill();
    // The follower takes over; the market stays below the first rule (no second alert for
    // it) and crosses the second one.
    let deadline = Instant::now() + Duration::from_millis(LEASE_MS * 3);
    while leaders(&[&follower]).await.is_empty() {
        assert!(Instant::now() < deadline, "the follower never took over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    farm.price_4090(0.10);
    let fired = alerts_within(&mut ws, Duration::from_secs(3)).await;
    let ids: Vec<&Value> = fired.iter().map(|a| &a["rule_id"]).collect();
    assert_eq!(
        ids,
        [&second["id"]],
        "exactly one event for the second crossing: {fired:?}"
    );
    for (rule, want) in [(&first, 1), (&second, 1)] {
        let path = format!("/api/v1/alerts/events?rule={}", rule["id"].as_str().unwrap());
        let (_, events) = rule_request(&follower, "GET", &path, &token, None).await;
        assert_eq!(events["events"].as_array().unwrap().len(), want, "{events}");
    }
}
