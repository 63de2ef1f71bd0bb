//! Alerts end to end: a fake 500.farm moves the market, rules fire over real sockets, webhooks
//! reach a local receiver. The main scenario runs on SQLite and on PostgreSQL.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use gpuscout_hub::config::Settings;
use gpuscout_hub::ingest::simulated::SimulatedSource;
use gpuscout_hub::market::Offer;
use gpuscout_hub::tier::Tier;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::fakes::{FakeServer, machines_body};
use crate::helpers::*;

pub(crate) struct Market {
    upstream: FakeServer,
    offers: Vec<Offer>,
}

impl Market {
    pub(crate) async fn start() -> Self {
        let upstream = FakeServer::start().await;
        let offers = SimulatedSource::new(21).offers(0);
        upstream.fake.set("/machines", machines_body(&offers));
        Self { upstream, offers }
    }

    /// Price every RTX 4090 at `usd` per GPU-hour.
    pub(crate) fn price_4090(&mut self, usd: f64) {
        for o in self.offers.iter_mut().filter(|o| &*o.model == "rtx-4090") {
            o.price_per_gpu_hour_usd = usd;
        }
        self.upstream.fake.set("/machines", machines_body(&self.offers));
    }

    pub(crate) fn settings(&self) -> impl FnOnce(&mut Settings) + use<> {
        let url = self.upstream.url.clone();
        move |s| {
            s.ingest.farm500.enabled = true;
            s.ingest.farm500.base_url = url;
            s.ingest.farm500.poll_interval_ms = 150;
            s.ingest.farm500.jitter_ratio = 0.0;
            s.alerts.outbox_poll_ms = 50;
            // The receivers here are local.
            s.alerts.webhook_allow_http = true;
            s.alerts.webhook_allow_private = true;
            s.alerts.webhook_backoff_initial_ms = 50;
            s.alerts.webhook_backoff_max_ms = 100;
        }
    }
}

pub(crate) async fn request(
    app: &TestApp,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut r = app
        .http
        .request(method.parse().unwrap(), app.url(path))
        .header("Authorization", format!("Bearer {token}"));
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Wait until the hub's market has RTX 4090 data; returns its median available price.
pub(crate) async fn median_4090(app: &TestApp, _caller: &str) -> f64 {
    // The real-time snapshot (the free tier would get the minute one).
    let token = app.token("observer", Tier::Individual);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v) = request(app, "GET", "/api/v1/market/snapshot", &token, None).await;
        if let Some(m) = v["models"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["model"] == "rtx-4090"))
            .and_then(|m| m["price_available"]["median"].as_f64())
        {
            return m;
        }
        assert!(tokio::time::Instant::now() < deadline, "no market data");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The alert events of one rule (`GET /api/v1/alerts/events?rule=`), which must answer 200.
async fn events_of(app: &TestApp, token: &str, rule_id: &str) -> Value {
    let path = format!("/api/v1/alerts/events?rule={rule_id}");
    let (status, events) = request(app, "GET", &path, token, None).await;
    assert_eq!(status, StatusCode::OK, "{events}");
    events
}

pub(crate) fn price_rule(threshold: f64) -> Value {
    json!({"name": "cheap 4090", "kind": "price", "model": "rtx-4090", "stat": "median",
           "direction": "below", "threshold_usd": threshold, "cooldown_s": 3600})
}

/// The next alert push on the socket, within `wait`.
pub(crate) async fn next_alert(ws: &mut WsClient, wait: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match ws.next_within(left).await? {
            Incoming::Json(v) if v["push"]["channel"].as_str().is_some_and(|c| c.starts_with("alerts:#")) => {
                return Some(v["push"].clone());
            }
            Incoming::Json(_) => {}
            Incoming::Close(c, r) => panic!("closed {c} {r}"),
        }
    }
}

/// A hub polling `market`, on the database at `database_url` (default: its own SQLite file).
async fn app_on(market: &Market, database_url: Option<String>) -> TestApp {
    let change = market.settings();
    spawn_app_with(move |s| {
        change(s);
        if let Some(url) = database_url {
            s.database.url = SecretString::from(url);
        }
    })
    .await
}

async fn fires_exactly_once_on_the_crossing(database_url: Option<String>) {
    let mut market = Market::start().await;
    let app = app_on(&market, database_url).await;
    let token = app.token("42", Tier::Individual);
    let median = median_4090(&app, &token).await;
    let threshold = median - 0.05;
    let (status, rule) = request(
        &app,
        "POST",
        "/api/v1/alerts/rules",
        &token,
        Some(price_rule(threshold)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{rule}");
    let rule_id = rule["id"].as_str().unwrap().to_owned();
    assert_eq!(rule["kind"], "price");

    let (mut ws, _) = app.connect("42", Tier::Individual).await;
    // Let the rule see the market where it stands (above the threshold: no alert).
    assert!(next_alert(&mut ws, Duration::from_millis(600)).await.is_none());
    market.price_4090(threshold - 0.1);
    let alert = next_alert(&mut ws, Duration::from_secs(3))
        .await
        .expect("the crossing fires");
    assert_eq!(alert["channel"], "alerts:#42");
    let data = &alert["pub"]["data"];
    assert_eq!(data["rule_id"], rule_id.as_str());
    assert_eq!(data["kind"], "price");
    assert!(data["message"].as_str().unwrap().contains("RTX 4090"), "{data}");
    // Still below on later polls: no second alert.
    assert!(
        next_alert(&mut ws, Duration::from_millis(1000)).await.is_none(),
        "fires once"
    );
    let events = events_of(&app, &token, &rule_id).await;
    assert_eq!(events["events"].as_array().unwrap().len(), 1, "{events}");
    let event_id = events["events"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(data["id"], event_id.as_str());
    let (status, _) = request(
        &app,
        "POST",
        &format!("/api/v1/alerts/events/{event_id}/ack"),
        &token,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, events) = request(&app, "GET", "/api/v1/alerts/events", &token, None).await;
    assert!(events["events"][0]["acknowledged_at_ms"].as_i64().is_some());
}

#[tokio::test]
async fn a_rule_fires_exactly_once_on_sqlite() {
    fires_exactly_once_on_the_crossing(None).await;
}

#[tokio::test]
async fn a_rule_fires_exactly_once_on_postgres() {
    if let Some(url) = fresh_postgres_url().await {
        fires_exactly_once_on_the_crossing(Some(url)).await;
    }
}

#[tokio::test]
async fn an_offline_user_gets_the_alert_on_reconnect_and_in_the_history() {
    let mut market = Market::start().await;
    let app = spawn_app_with(market.settings()).await;
    let token = app.token("7", Tier::Free);
    let median = median_4090(&app, &token).await;
    let (status, _) = request(
        &app,
        "POST",
        "/api/v1/alerts/rules",
        &token,
        Some(price_rule(median - 0.05)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (mut ws, reply) = app.connect("7", Tier::Free).await;
    let epoch = reply["connect"]["subs"]["alerts:#7"]["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    let offset = reply["connect"]["subs"]["alerts:#7"]["offset"].as_u64().unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(ws.stream.close(None).await);
    drop(ws);
    market.price_4090(median - 0.2);
    // Offline while it fires.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, events) = request(&app, "GET", "/api/v1/alerts/events", &token, None).await;
        if !events["events"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the alert is recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut ws = app.raw_ws().await;
    let r = ws
        .request(json!({"connect": {"token": token, "subs": {"alerts:#7": {"recover": true, "offset": offset, "epoch": epoch}}}}))
        .await;
    let sub = &r["connect"]["subs"]["alerts:#7"];
    assert_eq!(sub["recovered"], true, "{r}");
    let pubs = sub["publications"].as_array().unwrap();
    assert_eq!(pubs.len(), 1, "{r}");
    assert_eq!(pubs[0]["data"]["kind"], "price");
}

/// What the receiver saw: headers, body, and the status it answered.
type Seen = Arc<Mutex<Vec<(axum::http::HeaderMap, Vec<u8>, u16)>>>;

/// A local webhook receiver answering with `statuses` in turn (then 200), recording bodies.
async fn receiver(statuses: Vec<u16>) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let queue = Arc::new(Mutex::new(statuses));
    let record = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let record = record.clone();
            let queue = queue.clone();
            async move {
                let status = {
                    let mut q = queue.lock().unwrap();
                    if q.is_empty() { 200 } else { q.remove(0) }
                };
                record.lock().unwrap().push((headers, body.to_vec(), status));
                StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let url = format!("{}/hook", crate::common::serve(app).await);
    (url, seen)
}

fn verify(secret: &str, headers: &axum::http::HeaderMap, body: &[u8]) -> bool {
    use hmac::{KeyInit, Mac};
    let ts = headers["x-gpuscout-timestamp"].to_str().unwrap();
    let sig = headers["x-gpuscout-signature"].to_str().unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{ts}.").as_bytes());
    mac.update(body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    expected == sig
}

#[tokio::test]
async fn webhooks_are_signed_and_retried_until_one_delivery_succeeds() {
    let mut market = Market::start().await;
    let app = spawn_app_with(market.settings()).await;
    let (url, seen) = receiver(vec![500, 503]).await;
    let token = app.token("9", Tier::Professional);
    let median = median_4090(&app, &token).await;
    let mut rule = price_rule(median - 0.05);
    rule["webhook"] = json!({"url": url, "format": "discord"});
    let (status, created) = request(&app, "POST", "/api/v1/alerts/rules", &token, Some(rule)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["webhook_secret"].as_str().unwrap().to_owned();
    // The secret is shown once.
    let (_, listed) = request(&app, "GET", "/api/v1/alerts/rules", &token, None).await;
    assert!(listed["rules"][0].get("webhook_secret").is_none());
    tokio::time::sleep(Duration::from_millis(500)).await;
    market.price_4090(median - 0.2);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    while seen.lock().unwrap().iter().filter(|s| s.2 == 200).count() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the webhook was never delivered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.iter().map(|s| s.2).collect::<Vec<_>>(),
        vec![500, 503, 200],
        "two failures, one success"
    );
    for (headers, body, _) in &seen {
        assert!(verify(&secret, headers, body), "a valid signature");
        let v: Value = serde_json::from_slice(body).unwrap();
        assert!(v["content"].as_str().unwrap().contains("RTX 4090"));
        assert_eq!(v["embeds"][0]["title"], "cheap 4090");
    }
    assert!(!verify("wrong-secret", &seen[0].0, &seen[0].1));
}

#[tokio::test]
async fn rules_belong_to_their_user_and_follow_tier_limits() {
    let market = Market::start().await;
    let app = spawn_app_with(market.settings()).await;
    let a = app.token("alice", Tier::Free);
    let b = app.token("bob", Tier::Free);
    median_4090(&app, &a).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let mut r = price_rule(0.1);
        r["name"] = json!(format!("rule {i}"));
        let (status, v) = request(&app, "POST", "/api/v1/alerts/rules", &a, Some(r)).await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    // The free tier's fourth rule is refused, clearly.
    let (status, v) = request(&app, "POST", "/api/v1/alerts/rules", &a, Some(price_rule(0.1))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(v["error"]["code"], "limit_exceeded", "{v}");
    // No webhooks on the free tier.
    let mut hook = price_rule(0.1);
    hook["webhook"] = json!({"url": "http://127.0.0.1:9/x"});
    let (status, _) = request(&app, "POST", "/api/v1/alerts/rules", &b, Some(hook)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Bob can neither read, change, test nor delete Alice's rules, nor see her alerts.
    for (method, path) in [
        ("GET", format!("/api/v1/alerts/rules/{}", ids[0])),
        ("PUT", format!("/api/v1/alerts/rules/{}", ids[0])),
        ("DELETE", format!("/api/v1/alerts/rules/{}", ids[0])),
        ("POST", format!("/api/v1/alerts/rules/{}/test", ids[0])),
    ] {
        let (status, _) = request(&app, method, &path, &b, Some(price_rule(0.2))).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
    }
    let (_, list) = request(&app, "GET", "/api/v1/alerts/rules", &b, None).await;
    assert!(list["rules"].as_array().unwrap().is_empty());
    let (mut bob_ws, _) = app.connect("bob", Tier::Enterprise).await;
    assert_eq!(bob_ws.subscribe("alerts:#alice").await["error"]["code"], 103);

    // Alice can.
    let (status, got) = request(&app, "GET", &format!("/api/v1/alerts/rules/{}", ids[0]), &a, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["name"], "rule 0");
    let mut changed = price_rule(0.2);
    changed["name"] = json!("renamed");
    let (status, got) = request(
        &app,
        "PUT",
        &format!("/api/v1/alerts/rules/{}", ids[0]),
        &a,
        Some(changed),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["name"], "renamed");
    assert_eq!(got["threshold_usd"], 0.2);
    // A test delivery reaches her socket.
    let (mut alice_ws, _) = app.connect("alice", Tier::Free).await;
    let (status, _) = request(&app, "POST", &format!("/api/v1/alerts/rules/{}/test", ids[1]), &a, None).await;
    assert_eq!(status, StatusCode::OK);
    let push = next_alert(&mut alice_ws, Duration::from_secs(2)).await.unwrap();
    assert_eq!(push["pub"]["data"]["test"], true);
    let (status, _) = request(&app, "DELETE", &format!("/api/v1/alerts/rules/{}", ids[2]), &a, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, list) = request(&app, "GET", "/api/v1/alerts/rules", &a, None).await;
    assert_eq!(list["rules"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn invalid_rules_get_clear_422s() {
    let market = Market::start().await;
    let app = spawn_app_with(market.settings()).await;
    let t = app.token("x", Tier::Enterprise);
    median_4090(&app, &t).await;
    let cases = [
        (
            json!({"kind": "price", "model": "rtx-4090", "direction": "below", "threshold_usd": 0.3}),
            "name",
        ),
        (
            json!({"name": "n", "kind": "price", "model": "rtx-9999", "direction": "below", "threshold_usd": 0.3}),
            "unknown model",
        ),
        (
            json!({"name": "n", "kind": "price", "model": "rtx-4090", "direction": "below", "threshold_usd": -1}),
            "threshold_usd",
        ),
        (
            json!({"name": "n", "kind": "utilisation", "model": "rtx-4090", "direction": "above", "threshold": 1.0}),
            "never",
        ),
        (
            json!({"name": "n", "kind": "utilisation", "model": "rtx-4090", "direction": "above", "threshold": 1.5}),
            "from 0 to 1",
        ),
        (
            json!({"name": "n", "kind": "availability", "model": "rtx-4090", "below": 0}),
            "below",
        ),
        (
            json!({"name": "n", "kind": "teleport", "model": "rtx-4090"}),
            "condition",
        ),
        (
            json!({"name": "n", "kind": "price", "model": "rtx-4090", "direction": "sideways", "threshold_usd": 0.3}),
            "condition",
        ),
        (
            json!({"name": "n", "kind": "source_degraded", "source": "nowhere", "minutes": 5}),
            "unknown source",
        ),
        (
            json!({"name": "n", "kind": "undercut", "machine_id": "123", "percent": 150}),
            "percent",
        ),
        (
            json!({"name": "n", "kind": "price", "model": "rtx-4090", "direction": "below", "threshold_usd": 0.3, "cooldown_s": 1}),
            "cooldown_s",
        ),
    ];
    for (body, needle) in cases {
        let (status, v) = request(&app, "POST", "/api/v1/alerts/rules", &t, Some(body.clone())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
        assert_eq!(v["error"]["code"], "invalid_rule");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{body}: {message}");
    }
    let (status, _) = request(&app, "GET", "/api/v1/alerts/rules", "not-a-token", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// The market loop does not wait for the database: with PostgreSQL stopped mid-stream the market
/// keeps publishing on time, `/readyz` says the database is down, and every alert that fired
/// meanwhile is stored exactly once (and pushed) when it is back.
#[tokio::test]
async fn a_database_outage_does_not_freeze_the_market_and_loses_no_alert() {
    use crate::common::postgres::PrivatePostgres;
    let Some(mut pg) = PrivatePostgres::start() else { return };
    let mut market = Market::start().await;
    let change = market.settings();
    let url = pg.url();
    let app = spawn_app_with(move |s| {
        change(s);
        s.database.url = SecretString::from(url);
    })
    .await;
    let token = app.token("43", Tier::Individual);
    let median = median_4090(&app, &token).await;
    let mut rule_ids = Vec::new();
    let cents = |usd: f64| (usd * 100.0).round() / 100.0;
    let (first, second) = (cents(median * 0.7), cents(median * 0.4));
    for (name, threshold) in [("first", cents(median * 0.85)), ("second", cents(median * 0.55))] {
        let mut body = price_rule(threshold);
        body["name"] = json!(name);
        let (status, rule) = request(&app, "POST", "/api/v1/alerts/rules", &token, Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{rule}");
        rule_ids.push(rule["id"].as_str().unwrap().to_owned());
    }
    let (mut ws, _) = app.connect("43", Tier::Individual).await;
    ws.subscribe("gpu:rtx-4090").await;
    // The rules learn where the market stands.
    tokio::time::sleep(Duration::from_millis(600)).await;

    pg.stop();
    let down = std::time::Instant::now();
    // Two crossings while the database is away, each a price the market must publish on time.
    for (price, rule) in [(first, 0), (second, 1)] {
        market.price_4090(price);
        let moved = std::time::Instant::now();
        loop {
            let push = ws.json().await;
            let data = &push["push"]["pub"]["data"];
            if push["push"]["channel"] == "gpu:rtx-4090" && has_median(data, price) {
                break;
            }
            assert!(
                moved.elapsed() < Duration::from_secs(3),
                "the market stalled (rule {rule})"
            );
        }
        assert!(
            moved.elapsed() < Duration::from_secs(2),
            "published {:?} after the change",
            moved.elapsed()
        );
        eprintln!(
            "database down: the price change published {:?} after it was served",
            moved.elapsed()
        );
    }
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["database"], "down", "{body}");
    // Nothing could be stored: no alert yet.
    assert!(next_alert(&mut ws, Duration::from_millis(300)).await.is_none());
    let outage = Duration::from_secs(30).saturating_sub(down.elapsed());
    tokio::time::sleep(outage).await;

    pg.restart();
    let back = std::time::Instant::now();
    let mut fired = Vec::new();
    while fired.len() < 2 {
        let alert = next_alert(&mut ws, Duration::from_secs(20))
            .await
            .expect("the alerts arrive once the database is back");
        fired.push(alert["pub"]["data"]["rule_id"].as_str().unwrap().to_owned());
    }
    eprintln!(
        "database back: both alerts delivered {:?} after the restart",
        back.elapsed()
    );
    fired.sort();
    let mut expected = rule_ids.clone();
    expected.sort();
    assert_eq!(fired, expected);
    assert!(
        next_alert(&mut ws, Duration::from_secs(1)).await.is_none(),
        "each alert once"
    );
    for rule_id in &rule_ids {
        let events = events_of(&app, &token, rule_id).await;
        assert_eq!(events["events"].as_array().unwrap().len(), 1, "{events}");
    }
    assert_eq!(app.http.get(app.url("/readyz")).send().await.unwrap().status(), 200);
}

/// Whether some `price_available.median` in `v` is `price`.
fn has_median(v: &Value, price: f64) -> bool {
    match v {
        Value::Object(map) => {
            let here = map
                .get("price_available")
                .and_then(|p| p["median"].as_f64())
                .is_some_and(|m| (m - price).abs() < 1e-6);
            here || map.values().any(|c| has_median(c, price))
        }
        Value::Array(items) => items.iter().any(|c| has_median(c, price)),
        _ => false,
    }
}

/// A webhook added by `PUT` keeps its secret in the database: after a restart the webhook still
/// posts, signed with the secret the `PUT` answered.
async fn a_webhook_added_by_put_survives_a_restart(database_url: String) {
    let market = Market::start().await;
    let (change, url) = (market.settings(), database_url.clone());
    let mut app = spawn_app_with(move |s| {
        change(s);
        s.database.url = SecretString::from(url);
    })
    .await;
    let token = app.token("put", Tier::Professional);
    median_4090(&app, &token).await;
    let (status, rule) = request(&app, "POST", "/api/v1/alerts/rules", &token, Some(price_rule(0.01))).await;
    assert_eq!(status, StatusCode::CREATED, "{rule}");
    let rule_id = rule["id"].as_str().unwrap().to_owned();
    let (hook, seen) = receiver(vec![]).await;
    let mut body = price_rule(0.01);
    body["webhook"] = json!({"url": hook});
    let path = format!("/api/v1/alerts/rules/{rule_id}");
    let (status, updated) = request(&app, "PUT", &path, &token, Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    let secret = updated["webhook_secret"]
        .as_str()
        .expect("a new webhook's secret is shown")
        .to_owned();
    app.stop().await.unwrap();

    let change = market.settings();
    let restarted = spawn_app_with(move |s| {
        change(s);
        s.database.url = SecretString::from(database_url);
    })
    .await;
    let (status, tested) = request(&restarted, "POST", &format!("{path}/test"), &token, None).await;
    assert_eq!(status, StatusCode::OK, "{tested}");
    assert_eq!(tested["webhook"]["status"], 200, "{tested}");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert!(
        verify(&secret, &seen[0].0, &seen[0].1),
        "signed with the secret PUT answered"
    );
}

#[tokio::test]
async fn a_webhook_added_by_put_survives_a_restart_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    a_webhook_added_by_put_survives_a_restart(format!("sqlite://{}/hub.db", dir.path().display())).await;
}

#[tokio::test]
async fn a_webhook_added_by_put_survives_a_restart_on_postgres() {
    let Some(url) = fresh_postgres_url().await else { return };
    a_webhook_added_by_put_survives_a_restart(url).await;
}

/// Creations racing for the last rule of a tier: exactly the limit is created.
async fn the_rule_limit_cannot_be_raced_past(database_url: Option<String>) {
    let market = Market::start().await;
    let app = app_on(&market, database_url).await;
    let token = app.token("racer", Tier::Free);
    median_4090(&app, &token).await;
    let creations = (0..12).map(|i| {
        let (app, token) = (&app, &token);
        async move {
            let mut body = price_rule(0.1);
            body["name"] = json!(format!("race {i}"));
            request(app, "POST", "/api/v1/alerts/rules", token, Some(body)).await.0
        }
    });
    let statuses = futures_util::future::join_all(creations).await;
    let created = statuses.iter().filter(|s| **s == StatusCode::CREATED).count();
    assert_eq!(created, 3, "the free tier's three rules, no more: {statuses:?}");
    let (_, rules) = request(&app, "GET", "/api/v1/alerts/rules", &token, None).await;
    assert_eq!(rules["rules"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn the_rule_limit_cannot_be_raced_past_on_sqlite() {
    the_rule_limit_cannot_be_raced_past(None).await;
}

#[tokio::test]
async fn the_rule_limit_cannot_be_raced_past_on_postgres() {
    let Some(url) = fresh_postgres_url().await else { return };
    the_rule_limit_cannot_be_raced_past(Some(url)).await;
}

/// Webhooks cannot be pointed at the hub's own network: a private address is refused when the
/// rule is made, a name that resolves to one is not connected to, and redirects are not followed.
#[tokio::test]
async fn webhooks_cannot_reach_private_addresses_or_follow_redirects() {
    let market = Market::start().await;
    let change = market.settings();
    let app = spawn_app_with(move |s| {
        change(s);
        s.alerts.webhook_allow_private = false;
    })
    .await;
    let token = app.token("guard", Tier::Professional);
    median_4090(&app, &token).await;
    let (hook, seen) = receiver(vec![]).await;
    let port = hook.rsplit(':').next().unwrap().trim_end_matches("/hook").to_owned();
    let mut body = price_rule(0.01);
    body["webhook"] = json!({"url": hook});
    let (status, v) = request(&app, "POST", "/api/v1/alerts/rules", &token, Some(body.clone())).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("private"), "{v}");
    // A name is accepted, but what it resolves to is checked when sending.
    body["webhook"] = json!({"url": format!("http://localhost:{port}/hook")});
    let (status, rule) = request(&app, "POST", "/api/v1/alerts/rules", &token, Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{rule}");
    let path = format!("/api/v1/alerts/rules/{}/test", rule["id"].as_str().unwrap());
    let (_, tested) = request(&app, "POST", &path, &token, None).await;
    assert_eq!(tested["webhook"], json!({"result": "could not connect"}), "{tested}");
    assert!(seen.lock().unwrap().is_empty(), "the local receiver was reached");

    // Self-hosted (private addresses allowed): a redirect is reported, not followed.
    let (target, followed) = receiver(vec![]).await;
    let redirecting = crate::common::serve(axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let target = target.clone();
            async move { (StatusCode::FOUND, [(axum::http::header::LOCATION, target)]) }
        }),
    ))
    .await;
    let change = market.settings();
    let open = spawn_app_with(move |s| change(s)).await;
    median_4090(&open, &token).await;
    let mut body = price_rule(0.01);
    body["webhook"] = json!({"url": format!("{redirecting}/hook")});
    let (status, rule) = request(&open, "POST", "/api/v1/alerts/rules", &token, Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{rule}");
    let path = format!("/api/v1/alerts/rules/{}/test", rule["id"].as_str().unwrap());
    let (_, tested) = request(&open, "POST", &path, &token, None).await;
    assert_eq!(
        tested["webhook"]["result"], "refused by the receiver (status 302)",
        "{tested}"
    );
    assert!(followed.lock().unwrap().is_empty(), "the redirect was followed");
}

/// One receiver that never answers holds only its own deliveries: a hundred others, fired by
/// the same crossing, all arrive within two seconds.
#[tokio::test]
async fn a_receiver_that_never_answers_delays_no_other() {
    let mut market = Market::start().await;
    let change = market.settings();
    let app = spawn_app_with(move |s| {
        change(s);
        s.alerts.webhook_timeout_ms = 10_000;
    })
    .await;
    // The tarpit: accepts connections and never answers.
    let tarpit = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tarpit_url = format!("http://{}/hook", tarpit.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = tarpit.accept().await {
            held.push(socket);
        }
    });
    let token = app.token("many", Tier::Enterprise);
    let median = median_4090(&app, &token).await;
    let threshold = median - 0.05;
    // The tarpit's rules first, so a delivery loop taking them in order would meet it first.
    for i in 0..8 {
        let mut body = price_rule(threshold);
        body["name"] = json!(format!("tarpit {i}"));
        body["webhook"] = json!({"url": tarpit_url});
        let (status, v) = request(&app, "POST", "/api/v1/alerts/rules", &token, Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
    }
    let mut receivers = Vec::new();
    for i in 0..100 {
        let (url, seen) = receiver(vec![]).await;
        let mut body = price_rule(threshold);
        body["name"] = json!(format!("good {i}"));
        body["webhook"] = json!({"url": url});
        let (status, v) = request(&app, "POST", "/api/v1/alerts/rules", &token, Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        receivers.push(seen);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    market.price_4090(median - 0.2);
    let crossed = tokio::time::Instant::now();
    loop {
        let arrived = receivers.iter().filter(|seen| !seen.lock().unwrap().is_empty()).count();
        if arrived == receivers.len() {
            break;
        }
        // Half the tarpit's 10 s timeout: a delivery queued behind it would take longer.
        assert!(
            crossed.elapsed() < Duration::from_secs(5),
            "{arrived} of 100 good deliveries within {:?}",
            crossed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "100 good deliveries arrived {:?} after the crossing was served",
        crossed.elapsed()
    );
}

/// A user whose tokens now carry a tier without webhooks gets no more webhook posts; the alert
/// itself still reaches their socket and history.
#[tokio::test]
async fn webhooks_stop_when_the_users_tier_no_longer_allows_them() {
    let mut market = Market::start().await;
    let app = spawn_app_with(market.settings()).await;
    let (hook, seen) = receiver(vec![]).await;
    let pro = app.token("down", Tier::Professional);
    let median = median_4090(&app, &pro).await;
    let mut body = price_rule(median - 0.05);
    body["webhook"] = json!({"url": hook});
    let (status, rule) = request(&app, "POST", "/api/v1/alerts/rules", &pro, Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{rule}");
    // The user's tokens are now free-tier ones (no webhooks).
    let free = app.token("down", Tier::Free);
    let (status, _) = request(&app, "GET", "/api/v1/alerts/rules", &free, None).await;
    assert_eq!(status, StatusCode::OK);
    let (mut ws, _) = app.connect("down", Tier::Free).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    market.price_4090(median - 0.2);
    let alert = next_alert(&mut ws, Duration::from_secs(3))
        .await
        .expect("the alert still fires");
    assert_eq!(alert["pub"]["data"]["rule_id"], rule["id"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        seen.lock().unwrap().is_empty(),
        "the webhook posted for a tier without webhooks"
    );
    assert_eq!(
        events_of(&app, &free, rule["id"].as_str().unwrap()).await["events"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}
