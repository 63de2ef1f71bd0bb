//! The portfolio end to end: a fake Vast.ai host API replays the captured host payloads (machine
//! snapshots in sequence, the 301 on a missing slash, a 401 for a bad key, earnings with personal
//! fields, the create_asks answers), a fake 500.farm makes the market, and a client on
//! `portfolio:#<uid>` follows the snapshot and its checksummed deltas; on SQLite and PostgreSQL.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use gpuscout_hub::ingest::simulated::SimulatedSource;
use gpuscout_hub::market::Offer;
use gpuscout_hub::market::feed::{apply_delta, checksum_of};
use gpuscout_hub::tier::Tier;
use secrecy::SecretString;
use serde_json::{Map, Value, json};

use crate::alerts::request;
use crate::fakes::{FakeServer, machines_body};
use crate::helpers::*;

/// The captured answers in turn: a stopped rental (`x x`), then both GPUs on demand (`D D`, and
/// the RTX 5090 repriced).
const IDLE: &str = "machines.cli-raw.sartor.2026-05-27T0017Z.stopped-ondemand-resident-xx.json";
const RENTED: &str = "machines.cli-raw.sartor.2026-05-22T2017Z.reserved-R_and_ondemand-DD.json";

const GOOD_KEY: &str = "vast-key-3f9a0c5e7d1b";
const BAD_KEY: &str = "vast-key-revoked-0000";

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/vastai-host/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// What the fake host API serves and saw.
#[derive(Default)]
struct Host {
    machines: String,
    /// Requests per key to the machine list.
    polls: Vec<String>,
    /// Bodies of create_asks requests.
    asks: Vec<Value>,
    /// The machine list answers 500 this many times first (as Vast did: "Something went wrong on
    /// the server").
    fail_next: usize,
}

type Shared = Arc<Mutex<Host>>;

fn key_of(headers: &HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned()
}

async fn host_api(State(host): State<Shared>, uri: Uri, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let key = key_of(&headers);
    let path = uri.path().to_owned();
    // Vast answers a path without its slash with a redirect (the hub must not need it).
    if !path.ends_with('/') {
        return (StatusCode::MOVED_PERMANENTLY, [("location", format!("{path}/"))]).into_response();
    }
    if key != GOOD_KEY {
        host.lock().unwrap().polls.push(key);
        let body = json!({"success": false, "error": "auth_error", "msg": "Invalid user key"});
        return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    }
    match path.as_str() {
        "/api/v0/machines/" => {
            let mut h = host.lock().unwrap();
            h.polls.push(key);
            if h.fail_next > 0 {
                h.fail_next -= 1;
                let body =
                    json!({"success": false, "error": "server_error", "msg": "Something went wrong on the server"});
                return (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response();
            }
            ([("content-type", "application/json")], h.machines.clone()).into_response()
        }
        "/api/v0/users/me/machine-earnings/" => (
            [("content-type", "application/json")],
            fixture("earnings.trimmed.dcmon.json"),
        )
            .into_response(),
        "/api/v0/machines/create_asks/" => {
            let ask: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            host.lock().unwrap().asks.push(ask.clone());
            if ask["price_gpu"].as_f64().unwrap_or(0.0) > 10.0 {
                let refusal = fixture("list_machine.response-400.price_out_of_bounds.body.json");
                return (StatusCode::BAD_REQUEST, [("content-type", "application/json")], refusal).into_response();
            }
            axum::Json(json!({"success": true})).into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn start_host() -> (String, Shared) {
    let host: Shared = Arc::default();
    host.lock().unwrap().machines = fixture(IDLE);
    let app = axum::Router::new().fallback(host_api).with_state(host.clone());
    (crate::common::serve(app).await, host)
}

/// Verified RTX 5090 offers (1 GPU each) at known prices, some rented, beside a simulated market.
fn market_offers() -> Vec<Offer> {
    let mut offers = SimulatedSource::new(5).offers(0);
    let template = offers[0].clone();
    for (i, (price, rented)) in [
        (0.60, true),
        (0.70, true),
        (0.80, true),
        (0.90, false),
        (1.00, true),
        (1.10, false),
        (1.20, false),
        (1.30, false),
    ]
    .into_iter()
    .enumerate()
    {
        let mut o = template.clone();
        o.offer_id = format!("m{}", 900_000 + i).into();
        o.machine_id = Some(format!("{}", 900_000 + i).into());
        o.model = gpuscout_hub::market::intern("rtx-5090");
        o.model_name = gpuscout_hub::market::intern("RTX 5090");
        o.num_gpus = 1;
        o.gpus_rented = u32::from(rented);
        o.price_per_gpu_hour_usd = price;
        o.verified = true;
        offers.push(o);
    }
    offers.retain(|o| &*o.model != "rtx-5090" || o.machine_id.as_deref().is_some_and(|m| m.starts_with("900")));
    offers
}

/// The portfolio feed as a client keeps it: snapshot, then deltas checked against their checksums.
struct Book {
    items: Map<String, Value>,
    seq: u64,
}

impl Book {
    fn from_snapshot(data: &Value) -> Self {
        assert_eq!(data["type"], "snapshot", "{data}");
        let items = data["items"].as_object().cloned().unwrap_or_default();
        assert_eq!(checksum_of(&items) as u64, data["checksum"].as_u64().unwrap());
        Self {
            items,
            seq: data["seq"].as_u64().unwrap(),
        }
    }

    /// Apply deltas until `done` holds (within 10 s); every delta continues the last.
    async fn follow(&mut self, ws: &mut WsClient, channel: &str, done: impl Fn(&Map<String, Value>) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done(&self.items) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(Incoming::Json(m)) = ws.next_within(left).await else {
                panic!("no delta brought the expected state: {:?}", self.items);
            };
            if m["push"]["channel"] != channel {
                continue;
            }
            let delta = &m["push"]["pub"]["data"];
            if delta["seq"].as_u64().unwrap() <= self.seq {
                continue;
            }
            assert_eq!(delta["prev_seq"].as_u64().unwrap(), self.seq, "no gap");
            apply_delta(&mut self.items, &delta["changes"]);
            assert_eq!(checksum_of(&self.items) as u64, delta["checksum"].as_u64().unwrap());
            self.seq = delta["seq"].as_u64().unwrap();
        }
    }

    fn machine(&self, vast_id: &str) -> Option<&Value> {
        self.items.values().find(|m| m["machine_id"] == vast_id)
    }
}

async fn portfolio_app(database_url: Option<String>) -> (TestApp, Shared, FakeServer) {
    let farm = FakeServer::start().await;
    farm.fake.set("/machines", machines_body(&market_offers()));
    let (host_url, host) = start_host().await;
    let farm_url = farm.url.clone();
    let app = spawn_app_with(move |s| {
        s.ingest.farm500.enabled = true;
        s.ingest.farm500.base_url = farm_url;
        s.ingest.farm500.poll_interval_ms = 200;
        s.ingest.farm500.jitter_ratio = 0.0;
        s.ingest.vast_host.base_url = host_url;
        s.portfolio.poll_interval_ms = 1000;
        s.portfolio.jitter_ratio = 0.0;
        s.portfolio.requests_per_second = 50.0;
        if let Some(url) = database_url {
            s.database.url = SecretString::from(url);
        }
    })
    .await;
    (app, host, farm)
}

/// The percentile and suggestion computed here, apart from the hub's code, for the RTX 5090
/// market above: 1-GPU offers at 0.60 r, 0.70 r, 0.80 r, 0.90, 1.00 r, 1.10, 1.20, 1.30.
fn expected_position(renter_price: f64) -> f64 {
    let prices = [60, 70, 80, 90, 100, 110, 120, 130];
    let own = (renter_price * 100.0 + 1e-9).floor() as i64;
    let below = prices.iter().filter(|p| **p < own).count() as f64;
    let equal = prices.iter().filter(|p| **p == own).count() as f64;
    ((below + equal / 2.0) / 8.0 * 1000.0).round() / 10.0
}

async fn a_linked_account_is_priced_live(database_url: Option<String>) {
    let (app, host, _farm) = portfolio_app(database_url).await;
    let token = app.token("h1", Tier::Individual);
    let (mut ws, connected) = app.connect("h1", Tier::Individual).await;
    let channel = "portfolio:#h1";
    let mut book = Book::from_snapshot(&connected["connect"]["subs"][channel]["data"]);

    let link = json!({"platform": "vast", "api_key": GOOD_KEY, "label": "rig"});
    let (status, account) = request(&app, "POST", "/api/v1/portfolio/accounts", &token, Some(link)).await;
    assert_eq!(status, StatusCode::CREATED, "{account}");
    assert_eq!(account["status"], "waiting");
    assert!(!account.to_string().contains(GOOD_KEY), "the key is never shown back");

    // The first poll: both machines, placed in the market.
    book.follow(&mut ws, channel, |items| {
        items.len() == 2
            && items
                .values()
                .all(|m| !m["position"].is_null() || m["model"] != "rtx-5090")
    })
    .await;
    let reserved = book.machine("52271").unwrap().clone();
    assert_eq!(reserved["model"], "rtx-5090");
    assert_eq!(reserved["occupancy"], json!(["R"]), "{reserved}");
    assert_eq!(reserved["gpus_reserved"], 1);
    let listed = reserved["price_per_gpu_hour_usd"].as_f64().unwrap();
    let renter = reserved["position"]["renter_price_usd"].as_f64().unwrap();
    assert!((renter - listed * 1.3333).abs() < 1e-3, "{reserved}");
    assert_eq!(
        reserved["position"]["percentile"].as_f64().unwrap(),
        expected_position(renter),
        "{reserved}"
    );
    assert_eq!(reserved["position"]["gpus"], 8);
    // 80% target: at or below $0.80 all three cheapest are rented (3/3), $0.90 makes 3/4 < 0.8,
    // $1.00 4/5 = 0.8: the suggestion is $1.00 for renters, ÷ 1.3333 for the host.
    let suggestion = &reserved["suggestion"];
    assert_eq!(suggestion["renter_price_usd"].as_f64().unwrap(), 1.0, "{suggestion}");
    assert_eq!(
        suggestion["price_per_gpu_hour_usd"].as_f64().unwrap(),
        0.75,
        "{suggestion}"
    );
    assert_eq!(listed, 0.8);
    let pro = book.machine("124192").unwrap().clone();
    assert_eq!(
        (pro["gpus_on_demand"].as_u64(), pro["gpus_idle"].as_u64()),
        (Some(0), Some(2))
    );
    assert!(pro["idle_since_ms"].as_i64().is_some());

    // The next capture: both GPUs rented on demand, the RTX 5090 repriced; deltas say so.
    host.lock().unwrap().machines = fixture(RENTED);
    book.follow(&mut ws, channel, |items| {
        items
            .values()
            .any(|m| m["machine_id"] == "124192" && m["gpus_on_demand"] == 2)
            && items
                .values()
                .any(|m| m["machine_id"] == "52271" && m["price_per_gpu_hour_usd"] == 0.35)
    })
    .await;
    assert!(book.machine("124192").unwrap()["idle_since_ms"].is_null());

    // A rule on the machine: idle for a second (it learns first that the machine is rented).
    let idle_rule = json!({"name": "pro idle", "kind": "machine_idle", "machine": pro["id"], "hours": 0.0003});
    let (status, rule) = request(&app, "POST", "/api/v1/alerts/rules", &token, Some(idle_rule)).await;
    assert_eq!(status, StatusCode::CREATED, "{rule}");
    let foreign = json!({"name": "x", "kind": "machine_idle", "machine": "not-mine", "hours": 1});
    let (status, v) = request(&app, "POST", "/api/v1/alerts/rules", &token, Some(foreign)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    tokio::time::sleep(Duration::from_millis(600)).await;

    // The rental stops again: the GPUs are idle, and the rule fires once the second has passed.
    host.lock().unwrap().machines = fixture(IDLE);
    book.follow(&mut ws, channel, |items| {
        items
            .values()
            .any(|m| m["machine_id"] == "124192" && m["gpus_idle"] == 2)
    })
    .await;
    let alert = crate::alerts::next_alert(&mut ws, Duration::from_secs(8))
        .await
        .expect("machine_idle fires");
    assert_eq!(alert["pub"]["data"]["kind"], "machine_idle", "{alert}");
    assert_eq!(alert["pub"]["data"]["machine"], pro["id"]);
    assert!(
        alert["pub"]["data"]["message"]
            .as_str()
            .unwrap()
            .contains("RTX PRO 6000 WS ×2 (vast 124192)")
    );

    // REST answers the same state.
    let (status, rest) = request(&app, "GET", "/api/v1/portfolio", &token, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rest["totals"]["machines"], 2, "{rest}");
    let (_, accounts) = request(&app, "GET", "/api/v1/portfolio/accounts", &token, None).await;
    assert_eq!(accounts["accounts"][0]["status"], "ok", "{accounts}");
    assert!(accounts["accounts"][0]["last_success_ms"].as_i64().is_some());

    // The advisor answers a question about the user's machines from the portfolio.
    let (_, message_id) = crate::advisor::ask_ok(&mut ws, json!({"text": "How should I price my machines?"})).await;
    let answer = crate::advisor::answer_of(&mut ws, "h1", &message_id).await;
    assert!(
        answer.text.contains("Your machines, placed in the live market"),
        "{}",
        answer.text
    );
    assert!(
        answer.text.contains("RTX 5090 ×1 (vast 52271): listed at $0.80/h")
            && answer.text.contains("Suggested $0.75/h"),
        "{}",
        answer.text
    );

    apply_prices(&app, &token, &host, &book).await;
    // Another user can neither read nor change these machines.
    let other = app.token("h9", Tier::Professional);
    let id = book.machine("52271").unwrap()["id"].as_str().unwrap().to_owned();
    let price = json!({"price_per_gpu_hour_usd": 0.5, "confirm": true});
    let path = format!("/api/v1/portfolio/machines/{id}/price");
    let (status, _) = request(&app, "POST", &path, &other, Some(price)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, theirs) = request(&app, "GET", "/api/v1/portfolio", &other, None).await;
    assert_eq!(theirs["items"], json!({}), "{theirs}");
    stored_data_holds_no_secret(&app).await;
}

/// Nothing changes without `confirm: true`; a confirmed price is sent as documented; Vast's
/// refusal comes back in words; every attempt is recorded.
async fn apply_prices(app: &TestApp, token: &str, host: &Shared, book: &Book) {
    let id = book.machine("52271").unwrap()["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/portfolio/machines/{id}/price");
    let (status, v) = request(app, "POST", &path, token, Some(json!({"price_per_gpu_hour_usd": 0.75}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(host.lock().unwrap().asks.is_empty(), "nothing sent without confirm");
    let confirmed = json!({"price_per_gpu_hour_usd": 0.75, "confirm": true});
    let (status, v) = request(app, "POST", &path, token, Some(confirmed)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        host.lock().unwrap().asks,
        vec![json!({"machine": 52271, "price_gpu": 0.75})]
    );
    let too_high = json!({"price_per_gpu_hour_usd": 50.0, "confirm": true});
    let (status, v) = request(app, "POST", &path, token, Some(too_high)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["code"], "platform_refused");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("price_out_of_bounds"),
        "{v}"
    );
    let (_, changes) = request(app, "GET", "/api/v1/portfolio/changes", token, None).await;
    let results: Vec<&str> = changes["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["result"].as_str().unwrap())
        .collect();
    assert_eq!(results.len(), 2, "{changes}");
    assert_eq!(results[1], "applied");
}

/// The key is sealed and the earnings' personal fields dropped: neither is in the database.
async fn stored_data_holds_no_secret(app: &TestApp) {
    let store = gpuscout_hub::store::Store::connect(&app.settings.database)
        .await
        .unwrap();
    let rows: Vec<(String, Option<String>)> = sqlx::query_as("SELECT api_key_sealed, earnings FROM portfolio_accounts")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let (sealed, earnings) = &rows[0];
    assert!(sealed.starts_with("v1.") && !sealed.contains(GOOD_KEY), "{sealed}");
    let earnings = earnings.as_deref().expect("earnings were read");
    assert!(earnings.contains("total_gpu"), "{earnings}");
    assert!(
        !earnings.contains("test@example.com") && !earnings.contains("\"email\""),
        "{earnings}"
    );
}

#[tokio::test]
async fn a_linked_account_is_priced_live_on_sqlite() {
    a_linked_account_is_priced_live(None).await;
}

#[tokio::test]
async fn a_linked_account_is_priced_live_on_postgres() {
    if let Some(url) = fresh_postgres_url().await {
        a_linked_account_is_priced_live(Some(url)).await;
    }
}

#[tokio::test]
async fn a_bad_key_is_polled_once_and_the_account_says_why() {
    let (app, host, _farm) = portfolio_app(None).await;
    let token = app.token("h2", Tier::Professional);
    let link = json!({"platform": "vast", "api_key": BAD_KEY});
    let (status, account) = request(&app, "POST", "/api/v1/portfolio/accounts", &token, Some(link)).await;
    assert_eq!(status, StatusCode::CREATED, "{account}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let listed = loop {
        let (_, listed) = request(&app, "GET", "/api/v1/portfolio/accounts", &token, None).await;
        if listed["accounts"][0]["status"] == "unauthorized" {
            break listed;
        }
        assert!(tokio::time::Instant::now() < deadline, "{listed}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        listed["accounts"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("refused the API key"),
        "{listed}"
    );
    // Polls every second for a good key; none more for this one.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let polls = host.lock().unwrap().polls.iter().filter(|k| *k == BAD_KEY).count();
    assert_eq!(polls, 1, "an unauthorized account is not polled again");
}

#[tokio::test]
async fn portfolios_are_private_and_follow_tier_limits() {
    let (app, _host, _farm) = portfolio_app(None).await;
    let (alice, bob) = (app.token("alice", Tier::Individual), app.token("bob", Tier::Free));
    let link = json!({"platform": "vast", "api_key": GOOD_KEY});
    let (_, account) = request(&app, "POST", "/api/v1/portfolio/accounts", &alice, Some(link.clone())).await;
    let id = account["id"].as_str().unwrap().to_owned();
    // Individual: one linked account.
    let (status, v) = request(&app, "POST", "/api/v1/portfolio/accounts", &alice, Some(link.clone())).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("limit_exceeded")),
        "{v}"
    );
    // Free: no linked account, one machine by hand.
    let (status, _) = request(&app, "POST", "/api/v1/portfolio/accounts", &bob, Some(link)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let machine = json!({"platform": "runpod", "gpu_model": "RTX 5090", "num_gpus": 2, "price_per_gpu_hour_usd": 0.7,
                         "verified": true});
    let (status, created) = request(&app, "POST", "/api/v1/portfolio/machines", &bob, Some(machine.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, _) = request(&app, "POST", "/api/v1/portfolio/machines", &bob, Some(machine.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let bad = json!({"platform": "runpod", "gpu_model": "Voodoo 2", "num_gpus": 2, "price_per_gpu_hour_usd": 0.7});
    let (status, v) = request(&app, "POST", "/api/v1/portfolio/machines", &alice, Some(bad)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    // Bob sees and changes nothing of Alice's; Alice nothing of Bob's.
    let (status, _) = request(&app, "DELETE", &format!("/api/v1/portfolio/accounts/{id}"), &bob, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let mid = created["id"].as_str().unwrap();
    let path = format!("/api/v1/portfolio/machines/{mid}");
    let (status, _) = request(&app, "PUT", &path, &alice, Some(machine)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = request(&app, "DELETE", &path, &alice, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, accounts) = request(&app, "GET", "/api/v1/portfolio/accounts", &bob, None).await;
    assert_eq!(accounts["accounts"], json!([]));
    // Bob's own machine shows in his portfolio, placed in the market.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, p) = request(&app, "GET", "/api/v1/portfolio", &bob, None).await;
        if let Some(m) = p["items"].get(mid)
            && !m["position"].is_null()
        {
            assert_eq!(m["origin"], "manual");
            assert_eq!(
                m["position"]["percentile"].as_f64().unwrap(),
                expected_position(0.7 * 1.3333)
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{p}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = request(&app, "DELETE", &path, &bob, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn a_failing_host_api_makes_the_account_degraded_until_it_answers_again() {
    let (app, host, _farm) = portfolio_app(None).await;
    host.lock().unwrap().fail_next = 2;
    let token = app.token("h5", Tier::Individual);
    let link = json!({"platform": "vast", "api_key": GOOD_KEY});
    let (status, _) = request(&app, "POST", "/api/v1/portfolio/accounts", &token, Some(link)).await;
    assert_eq!(status, StatusCode::CREATED);
    let status_of = || async {
        let (_, v) = request(&app, "GET", "/api/v1/portfolio/accounts", &token, None).await;
        v["accounts"][0].clone()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let degraded = loop {
        let a = status_of().await;
        if a["status"] == "degraded" {
            break a;
        }
        assert!(tokio::time::Instant::now() < deadline, "{a}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        degraded["last_error"], "Vast.ai is unavailable (HTTP 500)",
        "{degraded}"
    );
    // Retried with backoff: once it answers, the account is ok and its machines appear.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let a = status_of().await;
        if a["status"] == "ok" {
            assert!(a["last_error"].is_null(), "{a}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{a}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    loop {
        let (_, p) = request(&app, "GET", "/api/v1/portfolio", &token, None).await;
        if p["totals"]["machines"] == 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{p}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(host.lock().unwrap().polls.iter().filter(|k| *k == GOOD_KEY).count() >= 3);
}
