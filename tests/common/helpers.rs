//! `spawn_app()`: a fresh hub on a free port with its own SQLite file, and a raw WebSocket client
//! that speaks the protocol line by line so tests see exactly what the hub sends.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gpuscout_hub::auth::TokenVerifier;
use gpuscout_hub::config::Settings;
use gpuscout_hub::startup::Application;
use gpuscout_hub::tasks::Tasks;
use gpuscout_hub::tier::Tier;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

pub const API_KEY: &str = "test-api-key-0123456789";

pub struct TestApp {
    pub addr: std::net::SocketAddr,
    pub settings: Settings,
    pub shutdown: CancellationToken,
    pub handle: Option<JoinHandle<anyhow::Result<()>>>,
    /// The hub's background tasks (critical ones can be killed, for fault tests).
    pub tasks: Tasks,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(change: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = Settings::defaults();
    settings.server.listen = "127.0.0.1:0".into();
    settings.api.key = SecretString::from(API_KEY);
    // The tests feed channels through the server API as the market and the alerts would.
    settings.api.allow_market_channels = true;
    settings.api.allow_personal_channels = true;
    settings.database.url = SecretString::from(format!("sqlite://{}/hub.db", dir.path().display()));
    settings.ingest.simulated.enabled = false;
    change(&mut settings);
    let app = Application::build(settings.clone()).await.expect("hub builds");
    let addr = app.local_addr();
    let shutdown = app.shutdown_token();
    let tasks = app.tasks();
    let handle = tokio::spawn(app.run_until_stopped());
    TestApp {
        addr,
        settings,
        shutdown,
        handle: Some(handle),
        tasks,
        http: reqwest::Client::new(),
        _dir: dir,
    }
}

impl TestApp {
    pub fn token(&self, user: &str, tier: Tier) -> String {
        TokenVerifier::new(&self.settings.auth)
            .unwrap()
            .mint(user, tier, 3600)
            .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A socket that has not sent `connect` yet.
    pub async fn raw_ws(&self) -> WsClient {
        ws_at(self.addr).await
    }

    /// A connected client of `user` at `tier`; returns it and the connect reply.
    pub async fn connect(&self, user: &str, tier: Tier) -> (WsClient, Value) {
        let mut ws = self.raw_ws().await;
        let token = self.token(user, tier);
        let reply = ws.request(json!({"connect": {"token": token}})).await;
        assert!(reply.get("connect").is_some(), "connect failed: {reply}");
        (ws, reply)
    }

    pub async fn api(&self, method: &str, body: Value) -> Value {
        let resp = self
            .http
            .post(self.url(&format!("/api/{method}")))
            .header("X-API-Key", API_KEY)
            .json(&body)
            .send()
            .await
            .expect("server API reachable");
        assert_eq!(resp.status(), 200, "server API status");
        resp.json().await.expect("server API JSON")
    }

    pub async fn publish(&self, channel: &str, data: Value) -> u64 {
        let v = self.api("publish", json!({"channel": channel, "data": data})).await;
        v["result"]["offset"]
            .as_u64()
            .unwrap_or_else(|| panic!("publish failed: {v}"))
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.handle.take() {
            Some(h) => tokio::time::timeout(Duration::from_secs(10), h)
                .await
                .expect("hub stops in time")
                .expect("hub task"),
            None => Ok(()),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A REST request with a bearer token and an optional JSON body: its status and JSON body
/// (`null` when it has none).
pub async fn bearer_request(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = http.request(method.parse().unwrap(), url).bearer_auth(token);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let response = r.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The value of metric `name` in a `/metrics` text.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = match rest.strip_prefix('{') {
                Some(labelled) => labelled.split_once('}')?.1,
                None => rest.strip_prefix(' ')?,
            };
            value.trim().parse().ok()
        })
        .collect();
    // One unlabelled sample, or the sum of the labelled ones (every source's polls).
    (!values.is_empty()).then(|| values.iter().sum())
}

/// A socket to the hub at `addr` that has not sent `connect` yet.
pub async fn ws_at(addr: std::net::SocketAddr) -> WsClient {
    let (stream, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/connection/websocket"))
        .await
        .expect("websocket handshake");
    WsClient {
        stream,
        next_id: 1,
        buffered: VecDeque::new(),
        answer_pings: true,
    }
}

/// What a test reads from the socket.
#[derive(Debug)]
pub enum Incoming {
    Json(Value),
    Close(u16, String),
}

pub struct WsClient {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u32,
    buffered: VecDeque<Incoming>,
    /// Answer `{}` pings automatically (and hide them from the test).
    pub answer_pings: bool,
}

pub const WAIT: Duration = Duration::from_secs(5);

impl WsClient {
    pub async fn send_text(&mut self, text: &str) {
        self.stream.send(Message::text(text.to_owned())).await.expect("send");
    }

    /// Send a command, assigning it the next id; returns the id.
    pub async fn send(&mut self, mut command: Value) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        command["id"] = json!(id);
        self.send_text(&command.to_string()).await;
        id
    }

    /// Read the next message the hub sends (a JSON line or a close), within `WAIT`.
    pub async fn next(&mut self) -> Incoming {
        self.next_within(WAIT).await.expect("hub sent nothing in time")
    }

    pub async fn next_within(&mut self, wait: Duration) -> Option<Incoming> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(m) = self.buffered.pop_front() {
                return Some(m);
            }
            let msg = tokio::time::timeout_at(deadline, self.stream.next()).await.ok()?;
            match msg {
                Some(Ok(Message::Text(text))) => {
                    for line in text.as_str().split('\n').filter(|l| !l.is_empty()) {
                        let v: Value = serde_json::from_str(line).expect("hub sends JSON lines");
                        if self.answer_pings && v.as_object().is_some_and(|o| o.is_empty()) {
                            let _ = self.stream.send(Message::text("{}")).await;
                            continue;
                        }
                        self.buffered.push_back(Incoming::Json(v));
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((u16::from(CloseCode::Status), String::new()));
                    return Some(Incoming::Close(code, reason));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    return Some(Incoming::Close(0, "connection dropped".into()));
                }
            }
        }
    }

    pub async fn json(&mut self) -> Value {
        match self.next().await {
            Incoming::Json(v) => v,
            Incoming::Close(code, reason) => panic!("expected JSON, got close {code} {reason}"),
        }
    }

    /// Send a command and wait for its reply; pushes that arrive first are kept for later.
    pub async fn request(&mut self, command: Value) -> Value {
        let id = self.send(command).await;
        self.reply(id).await
    }

    pub async fn reply(&mut self, id: u32) -> Value {
        let mut kept = VecDeque::new();
        let reply = loop {
            match self.next().await {
                Incoming::Json(v) if v["id"] == json!(id) => break v,
                other @ Incoming::Close(..) => {
                    panic!("closed while waiting for reply {id}: {other:?}")
                }
                other => kept.push_back(other),
            }
        };
        kept.extend(self.buffered.drain(..));
        self.buffered = kept;
        reply
    }

    /// The next push (skipping nothing else: a reply here is a test failure).
    pub async fn push(&mut self) -> Value {
        let v = self.json().await;
        assert!(v.get("push").is_some(), "expected a push, got {v}");
        v["push"].clone()
    }

    /// Wait for the close frame, skipping any JSON before it; returns its code.
    pub async fn closed(&mut self) -> u16 {
        loop {
            match self.next().await {
                Incoming::Close(code, _) => return code,
                Incoming::Json(_) => {}
            }
        }
    }

    pub async fn subscribe(&mut self, channel: &str) -> Value {
        self.request(json!({"subscribe": {"channel": channel}})).await
    }
}

/// A fresh PostgreSQL database's URL, or `None` on a laptop without PostgreSQL (never under CI).
pub async fn fresh_postgres_url() -> Option<String> {
    use gpuscout_hub::config::DatabaseSettings;
    use gpuscout_hub::store::Store;
    let base =
        std::env::var("GPUSCOUT_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let admin = Store::connect(&DatabaseSettings {
        url: SecretString::from(format!("{base}/postgres")),
        max_connections: 1,
    })
    .await;
    let admin = match admin {
        Ok(a) => a,
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("skipping the PostgreSQL part: {e}");
            return None;
        }
        Err(e) => panic!("PostgreSQL is required under CI: {e}"),
    };
    let name = format!("gpuscout_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(admin.pool())
        .await
        .expect("create a test database");
    admin.close().await;
    Some(format!("{base}/{name}"))
}

/// The `jti` of a token the hub minted.
pub fn jti_of(token: &str) -> String {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let claims: Value = serde_json::from_slice(&bytes).unwrap();
    claims["jti"].as_str().expect("minted tokens carry a jti").to_owned()
}

/// For every critical task of a hub built with `change`: a fresh hub, ready, whose task is then
/// killed, must turn unready and stop with an error naming the task, within 10 s. Returns the
/// names of the tasks killed.
pub async fn kill_each_critical_task(change: impl Fn(&mut Settings)) -> Vec<String> {
    let names = {
        let app = spawn_app_with(&change).await;
        app.wait_ready().await;
        let mut names = app.tasks.critical();
        names.sort();
        names
    };
    assert!(!names.is_empty(), "a hub has critical tasks");
    for name in &names {
        let mut app = spawn_app_with(&change).await;
        app.wait_ready().await;
        assert!(app.tasks.kill(name), "{name} was running");
        let handle = app.handle.take().expect("running");
        let result = tokio::time::timeout(Duration::from_secs(10), handle)
            .await
            .unwrap_or_else(|_| panic!("the hub kept running after `{name}` died"))
            .expect("run_until_stopped did not panic");
        let error = result.expect_err("a hub whose critical task died stops with an error");
        assert!(error.to_string().contains(name.as_str()), "{error}");
        assert_eq!(app.tasks.dead(), vec![name.clone()], "readiness reports the dead task");
        assert!(
            TcpStream::connect(app.addr).await.is_err(),
            "the listener is closed after `{name}` died"
        );
    }
    names
}

impl TestApp {
    /// Wait until `/readyz` answers 200 (10 s at most).
    pub async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(r) = self.http.get(self.url("/readyz")).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "the hub never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
