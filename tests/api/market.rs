//! The market pipeline end to end: fake upstreams → sources → market → bus → WebSocket clients.

use std::collections::BTreeMap;
use std::time::Duration;

use gpuscout_hub::ingest::simulated::SimulatedSource;
use gpuscout_hub::market::feed::{apply_delta, checksum_of};
use gpuscout_hub::tier::Tier;
use secrecy::SecretString;
use serde_json::{Map, Value, json};

use crate::fakes::{Failure, FakeServer, machines_body};
use crate::helpers::*;

/// A client's view of one channel: the snapshot, then every delta applied, checksums verified.
struct ChannelView {
    channel: String,
    items: Map<String, Value>,
    seq: u64,
}

impl ChannelView {
    async fn subscribe(ws: &mut WsClient, channel: &str) -> Self {
        let r = ws.subscribe(channel).await;
        let data = &r["subscribe"]["data"];
        assert_eq!(data["type"], "snapshot", "{channel}: {r}");
        let items = data["items"].as_object().cloned().unwrap_or_default();
        assert_eq!(
            checksum_of(&items) as u64,
            data["checksum"].as_u64().unwrap(),
            "{channel} snapshot checksum"
        );
        Self {
            channel: channel.to_owned(),
            items,
            seq: data["seq"].as_u64().unwrap(),
        }
    }

    /// Apply one publication; returns false if it was already covered by the snapshot.
    fn apply(&mut self, push: &Value) -> bool {
        assert_eq!(push["channel"], self.channel.as_str());
        let delta = &push["pub"]["data"];
        let seq = delta["seq"].as_u64().unwrap();
        if seq <= self.seq {
            return false;
        }
        assert_eq!(delta["type"], "delta");
        assert_eq!(
            delta["prev_seq"].as_u64().unwrap(),
            self.seq,
            "{}: no gap",
            self.channel
        );
        apply_delta(&mut self.items, &delta["changes"]);
        assert_eq!(
            checksum_of(&self.items) as u64,
            delta["checksum"].as_u64().unwrap(),
            "{} checksum at seq {seq}",
            self.channel
        );
        self.seq = seq;
        true
    }
}

/// Run the independent reference on a `/machines` body.
fn reference(body: &str) -> BTreeMap<String, Value> {
    use std::io::Write;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/reference/gpu_stats.py");
    let mut child = std::process::Command::new("python3")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs the reference computation");
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Our aggregate of a model agrees with the reference leaf set.
fn assert_agrees(model: &str, ours: &Value, theirs: &Value) {
    let leaf = |side: &str| &theirs[side];
    assert_eq!(ours["gpus_total"], leaf("all")["count"], "{model} gpus_total");
    assert_eq!(ours["gpus_rented"], leaf("rented")["count"], "{model} gpus_rented");
    assert_eq!(
        ours["gpus_available"],
        leaf("available")["count"],
        "{model} gpus_available"
    );
    for (ours_side, their_side) in [
        ("price_rented", "rented"),
        ("price_available", "available"),
        ("price_all", "all"),
    ] {
        let o = &ours[ours_side];
        let t = leaf(their_side);
        for (ok, tk) in [
            ("median", "price_median"),
            ("p10", "price_10th_percentile"),
            ("p90", "price_90th_percentile"),
        ] {
            let a = o.get(ok).and_then(Value::as_f64);
            let b = t.get(tk).and_then(Value::as_f64);
            match (a, b) {
                (Some(a), Some(b)) => assert!((a - b).abs() < 1e-9, "{model} {ours_side}.{ok}: {a} vs {b}"),
                (a, b) => assert_eq!(a, b, "{model} {ours_side}.{ok}"),
            }
        }
    }
}

fn farm500(url: &str) -> impl FnOnce(&mut gpuscout_hub::config::Settings) {
    let url = url.to_owned();
    move |s| {
        // Only the real source is enabled: the simulated market stays off by itself.
        s.ingest.simulated.enabled = true;
        s.ingest.farm500.enabled = true;
        s.ingest.farm500.base_url = url;
        s.ingest.farm500.poll_interval_ms = 200;
        s.ingest.farm500.jitter_ratio = 0.0;
        s.ingest.farm500.timeout_ms = 500;
        s.ingest.farm500.max_retries = 0;
        s.ingest.farm500.backoff_initial_ms = 10;
        s.ingest.farm500.backoff_max_ms = 20;
        s.ingest.farm500.breaker_failures = 100;
        s.ingest.farm500.stale_after_ms = 60_000;
    }
}

/// Wait until the view holds `n` items, applying pushes.
async fn fill(ws: &mut WsClient, view: &mut ChannelView, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while view.items.len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} never reached {n} items",
            view.channel
        );
        let push = ws.push().await;
        view.apply(&push);
    }
}

// long: one story in order: the first poll, its snapshot and deltas, a change, then 304s.
#[tokio::test]
async fn farm500_aggregates_agree_with_an_independent_computation_and_follow_changes() {
    let upstream = FakeServer::start().await;
    let mut sim = SimulatedSource::new(11);
    let offers = sim.offers(0);
    let body = machines_body(&offers);
    upstream.fake.set("/machines", body.clone());
    let app = spawn_app_with(farm500(&upstream.url)).await;

    let (mut ws, _) = app.connect("1", Tier::Individual).await;
    let mut view = ChannelView::subscribe(&mut ws, "market:summary").await;
    fill(&mut ws, &mut view, 88).await;
    let expected = reference(&body);
    assert_eq!(expected.len(), 88);
    for (slug, ours) in &view.items {
        let name = ours["name"].as_str().unwrap();
        assert_agrees(slug, ours, &expected[name]);
        assert!(!ours.as_object().unwrap().contains_key("source"));
    }
    // Payloads say when 500.farm took their data: the body's `timestamp` to the millisecond
    // (machines_body writes 2026-11-28T00:00:00.123456789Z).
    let (mut late, _) = app.connect("2", Tier::Individual).await;
    let reply = late.subscribe("market:summary").await;
    let snapshot = &reply["subscribe"]["data"];
    assert_eq!(snapshot["source_ts"], 1_795_824_000_123_i64, "{reply}");

    // The market moves; within a poll or two the client's state agrees with the new responses.
    for _ in 0..30 {
        sim.step();
    }
    let body = machines_body(&sim.offers(0)).replace("00:00:00.123456789Z", "00:00:05.5Z");
    upstream.fake.set("/machines", body.clone());
    let expected = reference(&body);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let push = ws.push().await;
        assert_eq!(push["pub"]["data"]["source"], "farm500");
        if view.apply(&push) {
            // 2026-11-28T00:00:05.5Z, the new body's `timestamp`.
            assert_eq!(push["pub"]["data"]["source_ts"], 1_795_824_005_500_i64, "{push}");
        }
        let agrees = view.items.iter().all(|(_, ours)| {
            let t = &expected[ours["name"].as_str().unwrap()];
            ours["gpus_rented"] == t["rented"]["count"] && ours["gpus_total"] == t["all"]["count"]
        });
        if agrees {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "deltas never converged");
    }
    for (slug, ours) in &view.items {
        assert_agrees(slug, ours, &expected[ours["name"].as_str().unwrap()]);
    }

    // Nothing changes upstream: 304s, and nothing is published.
    tokio::time::sleep(Duration::from_millis(300)).await;
    while ws.next_within(Duration::from_millis(50)).await.is_some() {}
    assert!(
        ws.next_within(Duration::from_millis(700)).await.is_none(),
        "no change, no publication"
    );
    let seen = upstream.fake.seen();
    assert!(
        upstream.fake.count("/machines", 304) >= 2,
        "conditional GETs answered 304"
    );
    assert!(
        seen.iter().any(|s| s.headers.get("if-none-match").is_some()),
        "If-None-Match sent"
    );
    assert!(
        seen.iter().any(|s| s
            .headers
            .get("accept-encoding")
            .is_some_and(|v| v.to_str().unwrap().contains("gzip"))),
        "gzip accepted"
    );
}

#[tokio::test]
async fn a_failing_source_is_degraded_then_stale_and_recovers_while_its_data_stays() {
    let upstream = FakeServer::start().await;
    let offers = SimulatedSource::new(5).offers(0);
    upstream.fake.set("/machines", machines_body(&offers));
    let app = spawn_app_with(|s| {
        farm500(&upstream.url)(s);
        s.ingest.farm500.stale_after_ms = 1500;
    })
    .await;
    let (mut ws, _) = app.connect("1", Tier::Free).await;
    let mut status = ChannelView::subscribe(&mut ws, "sources:status").await;
    // First a good poll.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while status.items.get("farm500").is_none_or(|h| h["state"] != "ok") {
        assert!(tokio::time::Instant::now() < deadline);
        let p = ws.push().await;
        status.apply(&p);
    }
    assert_eq!(
        status.items["farm500"]["offers"].as_u64().unwrap() as usize,
        offers.len()
    );

    // Every kind of failure, in a row.
    upstream.fake.fail(
        "/machines",
        [
            Failure::Status(500),
            Failure::TooManyRequests { retry_after_s: 1 },
            Failure::Hang(Duration::from_secs(2)),
            Failure::Truncated,
            Failure::Invalid,
            Failure::Status(502),
            Failure::Status(503),
            Failure::Status(500),
            Failure::Status(500),
            Failure::Status(500),
        ],
    );
    let mut errors = Vec::new();
    let mut went_stale = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        assert!(tokio::time::Instant::now() < deadline, "errors seen: {errors:?}");
        let p = ws.push().await;
        if !status.apply(&p) {
            continue;
        }
        let h = &status.items["farm500"];
        if h["state"] == "degraded" {
            errors.push(h["last_error"].as_str().unwrap_or_default().to_owned());
            assert!(h["consecutive_failures"].as_u64().unwrap() >= 1);
        }
        went_stale |= h["stale"] == true;
        if h["state"] == "ok" && errors.len() >= 3 {
            break;
        }
    }
    let all = errors.join(" | ");
    assert!(all.contains("HTTP 500"), "{all}");
    assert!(all.contains("HTTP 429"), "{all}");
    assert!(all.contains("timed out"), "{all}");
    assert!(all.contains("invalid response"), "{all}");
    assert!(went_stale, "data older than stale_after_ms is flagged");
    assert_eq!(status.items["farm500"]["stale"], false, "fresh again after recovery");

    // The market data stayed throughout (the summary snapshot still has every model).
    let (mut ind, _) = app.connect("2", Tier::Individual).await;
    let summary = ChannelView::subscribe(&mut ind, "market:summary").await;
    assert_eq!(summary.items.len(), 88);
    // The hub itself is healthy.
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("gpuscout_source_up{source=\"farm500\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn offer_channels_follow_the_tiers_and_carry_offer_deltas() {
    let upstream = FakeServer::start().await;
    let mut sim = SimulatedSource::new(9);
    upstream.fake.set("/machines", machines_body(&sim.offers(0)));
    let app = spawn_app_with(farm500(&upstream.url)).await;

    let (mut individual, _) = app.connect("i", Tier::Individual).await;
    assert_eq!(individual.subscribe("offers:rtx-4090").await["error"]["code"], 103);
    assert!(individual.subscribe("gpu:rtx-4090").await.get("subscribe").is_some());

    let (mut pro, _) = app.connect("p", Tier::Professional).await;
    assert_eq!(pro.subscribe("offers:all").await["error"]["code"], 103);

    let (mut ent, _) = app.connect("e", Tier::Enterprise).await;
    let mut all = ChannelView::subscribe(&mut ent, "offers:all").await;
    let expected = sim.offers(0).len();
    fill(&mut ent, &mut all, expected).await;
    let one = all.items.values().next().unwrap();
    assert_eq!(one["source"], "farm500");
    assert_eq!(one["marketplace"], "vast");
    assert!(one["price_per_gpu_hour_usd"].as_f64().unwrap() > 0.0);

    let mut per_model = ChannelView::subscribe(&mut pro, "offers:rtx-4090").await;
    assert!(per_model.items.values().all(|o| o["model"] == "rtx-4090"));
    let n = per_model.items.len();
    assert!(n > 100);

    // A change upstream arrives as offer-level deltas, and the views stay exact.
    for _ in 0..50 {
        sim.step();
    }
    upstream.fake.set("/machines", machines_body(&sim.offers(0)));
    let push = ent.push().await;
    assert!(all.apply(&push) || all.apply(&ent.push().await));
    let changes = &push["pub"]["data"]["changes"];
    assert!(
        changes["changed"].as_object().is_some_and(|c| !c.is_empty())
            || changes["added"].as_object().is_some_and(|c| !c.is_empty())
    );
    // Deltas on offers:rtx-4090 only when that model changed; apply whatever came.
    while let Some(Incoming::Json(v)) = pro.next_within(Duration::from_millis(500)).await {
        if v["push"]["channel"] == "offers:rtx-4090" {
            per_model.apply(&v["push"]);
        }
    }
    assert!(per_model.items.values().all(|o| o["model"] == "rtx-4090"));
}

#[tokio::test]
async fn vast_search_and_500farm_offers_fallback_read_the_real_shapes() {
    let upstream = FakeServer::start().await;
    let vast_raw = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/vastai/search_offers.cli-raw.sample.json"
    ))
    .unwrap();
    let records: Value = serde_json::from_str(&vast_raw).unwrap();
    // The HTTP API wraps the records; the asks endpoint is served bare.
    upstream
        .fake
        .set("/api/v0/bundles/", json!({"offers": records}).to_string());
    upstream.fake.set("/api/v0/search/asks/", vast_raw.clone());
    let farm_offers = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/500farm/offers.sample.json"
    ))
    .unwrap();
    upstream.fake.set("/vastai-exporter/offers", farm_offers);

    for method in ["bundles", "asks"] {
        let url = upstream.url.clone();
        let app = spawn_app_with(|s| {
            farm500(&format!("{url}/vastai-exporter"))(s);
            s.ingest.vast.enabled = true;
            s.ingest.vast.base_url = url.clone();
            s.ingest.vast.method = method.parse().unwrap();
            s.ingest.vast.api_key = SecretString::from("test-key");
            s.ingest.vast.poll_interval_ms = 200;
        })
        .await;
        let (mut ws, _) = app.connect("e", Tier::Enterprise).await;
        let mut all = ChannelView::subscribe(&mut ws, "offers:all").await;
        // 500.farm: /machines is 404 here, so its two /offers records; Vast: five chunks of five
        // machines, one listed whole.
        fill(&mut ws, &mut all, 7).await;
        let keys: Vec<&String> = all.items.keys().collect();
        assert!(all.items.contains_key("vast:m34447"), "{keys:?}");
        assert!(all.items.contains_key("vast:m37228"), "{keys:?}");
        let whole = &all.items["vast:m34447"];
        assert_eq!(whole["model"], "a100-sxm4");
        assert_eq!(whole["source"], "vast", "the API's copy wins over 500.farm's");
        assert_eq!(whole["country"], "CA");
        assert_eq!(whole["verified"], true);
        let farm = &all.items["vast:m37228"];
        assert_eq!(farm["model"], "rtx-5090");
        assert_eq!(farm["gpus_rented"], 1, "a chunk that is not rentable is rented");
        assert_eq!(farm["verified"], false);
        // A chunk of a 8-GPU machine stands for the machine.
        assert_eq!(all.items["vast:m49289"]["num_gpus"], 8);
        let bearer = upstream
            .fake
            .seen()
            .iter()
            .any(|s| s.headers.get("authorization").is_some_and(|v| v == "Bearer test-key"));
        assert!(bearer, "the API key is sent as a bearer token");
        let methods: Vec<String> = upstream
            .fake
            .seen()
            .iter()
            .map(|s| format!("{} {}", s.method, s.path))
            .collect();
        let want = if method == "asks" {
            "PUT /api/v0/search/asks/"
        } else {
            "POST /api/v0/bundles/"
        };
        assert!(methods.iter().any(|m| m == want), "{methods:?}");
        assert!(upstream.fake.count("/vastai-exporter/machines", 404) >= 1);
    }
}

#[tokio::test]
async fn runpod_list_prices_appear_as_reference_offers() {
    let upstream = FakeServer::start().await;
    upstream.fake.set(
        "/graphql",
        json!({"data": {"gpuTypes": [
            {"id": "NVIDIA GeForce RTX 4090", "displayName": "RTX 4090", "memoryInGb": 24, "secureCloud": true,
             "communityCloud": true, "lowestPrice": {"minimumBidPrice": 0.34, "uninterruptablePrice": 0.69}},
            {"id": "NVIDIA H100 80GB HBM3", "displayName": "H100 SXM", "memoryInGb": 80, "secureCloud": true,
             "communityCloud": false, "lowestPrice": {"minimumBidPrice": null, "uninterruptablePrice": 2.99}}
        ]}})
        .to_string(),
    );
    let url = upstream.url.clone();
    let app = spawn_app_with(|s| {
        s.ingest.runpod.enabled = true;
        s.ingest.runpod.base_url = url;
        s.ingest.runpod.api_key = SecretString::from("rp-key");
        s.ingest.runpod.poll_interval_ms = 200;
    })
    .await;
    let (mut ws, _) = app.connect("e", Tier::Enterprise).await;
    let mut all = ChannelView::subscribe(&mut ws, "offers:all").await;
    fill(&mut ws, &mut all, 2).await;
    let rtx = &all.items["runpod:NVIDIA GeForce RTX 4090"];
    assert_eq!(rtx["model"], "rtx-4090");
    assert_eq!(rtx["price_per_gpu_hour_usd"], 0.69);
    assert_eq!(all.items["runpod:NVIDIA H100 80GB HBM3"]["model"], "h100-sxm");
}

#[tokio::test]
async fn snapshot_and_history_over_rest() {
    let upstream = FakeServer::start().await;
    upstream
        .fake
        .set("/machines", machines_body(&SimulatedSource::new(2).offers(0)));
    let app = spawn_app_with(|s| {
        farm500(&upstream.url)(s);
        s.ingest.summary_interval_s = 1;
    })
    .await;
    let token = app.token("7", Tier::Individual);
    let get = |path: &str| {
        app.http
            .get(app.url(path))
            .header("Authorization", format!("Bearer {token}"))
            .send()
    };
    // Wait for two minute-snapshots to be stored.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let h: Value = get("/api/v1/market/history?model=rtx-4090&step=3600")
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if h["points"].as_array().is_some_and(|p| !p.is_empty()) {
            tokio::time::sleep(Duration::from_millis(1200)).await;
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no minute snapshot stored");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let snap: Value = get("/api/v1/market/snapshot").await.unwrap().json().await.unwrap();
    assert_eq!(snap["source"], "farm500");
    assert_eq!(snap["models"].as_array().unwrap().len(), 88);
    assert_eq!(snap["sources"][0]["source"], "farm500");

    let r = get("/api/v1/market/history?model=rtx-4090&step=60").await.unwrap();
    assert_eq!(r.status(), 200);
    let h: Value = r.json().await.unwrap();
    let fine = h["points"].as_array().unwrap().len();
    assert!(
        (1..=2).contains(&fine),
        "snapshots a second apart share a 60 s step (or straddle two): {h}"
    );
    // A step wider than the range folds every stored minute into one point, the latest.
    let h: Value = get("/api/v1/market/history?model=rtx-4090&step=604800")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let points = h["points"].as_array().unwrap();
    assert_eq!(points.len(), 1, "{h}");
    assert!(points[0]["gpus_total"].as_i64().unwrap() > 4000);
    assert!(points[0]["price_available_median"].as_f64().unwrap() > 0.0);
    let now = gpuscout_hub::clock::unix_now_ms();
    let r = get(&format!(
        "/api/v1/market/history?model=rtx-4090&from={}&to={now}&step=60",
        now - 10 * 60_000
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 200);

    // Clear errors.
    let r = get("/api/v1/market/history").await.unwrap();
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("model"));
    assert_eq!(
        get("/api/v1/market/history?model=x&from=10&to=5")
            .await
            .unwrap()
            .status(),
        422
    );
    assert_eq!(
        get("/api/v1/market/history?model=x&step=1").await.unwrap().status(),
        422
    );
    let anonymous = app.http.get(app.url("/api/v1/market/snapshot")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);

    // The free tier gets the minute snapshot.
    let free = app.token("8", Tier::Free);
    let v: Value = app
        .http
        .get(app.url("/api/v1/market/snapshot"))
        .header("Authorization", format!("Bearer {free}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["channel"], "market:summary.1m");
    assert_eq!(v["items"].as_object().unwrap().len(), 88);
}
