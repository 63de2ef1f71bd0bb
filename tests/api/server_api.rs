use gpuscout_hub::tier::Tier;
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn the_api_key_is_required() {
    let app = spawn_app().await;
    let url = app.url("/api/publish");
    let body = json!({"channel": "market:summary", "data": {}});
    let none = app.http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(none.status(), 401);
    let v: Value = none.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unauthorized");
    let wrong = app
        .http
        .post(&url)
        .header("X-API-Key", "nope")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let alt = app
        .http
        .post(&url)
        .header("Authorization", format!("apikey {API_KEY}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(alt.status(), 200);
}

#[tokio::test]
async fn the_api_is_off_without_a_key() {
    let app = spawn_app_with(|s| s.api.key = secrecy::SecretString::from("")).await;
    let r = app
        .http
        .post(app.url("/api/publish"))
        .header("X-API-Key", "")
        .json(&json!({"channel": "market:summary", "data": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn publish_broadcast_history_and_info() {
    let app = spawn_app().await;
    let (_ws, _) = app.connect("1", Tier::Free).await;
    let v = app.api("publish", json!({"channel": "gpu:x", "data": {"a": 1}})).await;
    assert_eq!(v["result"]["offset"], 1);
    let epoch = v["result"]["epoch"].as_str().unwrap().to_owned();
    assert!(!epoch.is_empty());

    let v = app.api("publish", json!({"channel": "nope", "data": {}})).await;
    assert_eq!(v["error"]["code"], 102, "{v}");

    let v = app
        .api(
            "broadcast",
            json!({"channels": ["gpu:x", "gpu:y", "bad"], "data": {"b": 2}}),
        )
        .await;
    let responses = v["result"]["responses"].as_array().unwrap();
    assert_eq!(responses[0]["result"]["offset"], 2);
    assert_eq!(responses[1]["result"]["offset"], 1);
    assert_eq!(responses[2]["error"]["code"], 102);

    let v = app.api("history", json!({"channel": "gpu:x", "limit": -1})).await;
    let pubs = v["result"]["publications"].as_array().unwrap();
    assert_eq!(pubs.len(), 2);
    assert_eq!(pubs[0]["data"]["a"], 1);
    assert_eq!(v["result"]["offset"], 2);
    assert_eq!(v["result"]["epoch"], epoch);
    let v = app
        .api(
            "history",
            json!({"channel": "gpu:x", "limit": 10, "since": {"offset": 1, "epoch": epoch}}),
        )
        .await;
    assert_eq!(v["result"]["publications"][0]["offset"], 2);
    let v = app
        .api("history", json!({"channel": "gpu:x", "limit": 1, "reverse": true}))
        .await;
    assert_eq!(v["result"]["publications"][0]["data"]["b"], 2);
    let v = app.api("history", json!({"channel": "gpu:x"})).await;
    assert!(
        v["result"]
            .get("publications")
            .is_none_or(|p| p.as_array().unwrap().is_empty())
    );

    let v = app.api("info", json!({})).await;
    let node = &v["result"]["nodes"][0];
    assert_eq!(node["num_clients"], 1, "{v}");
    assert_eq!(node["num_users"], 1);
    assert!(node["uid"].is_string());

    let bad = app
        .http
        .post(app.url("/api/publish"))
        .header("X-API-Key", API_KEY)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let v: Value = bad.json().await.unwrap();
    assert_eq!(v["error"]["code"], 107);
}

#[tokio::test]
async fn health_readiness_metrics_and_unknown_routes() {
    let app = spawn_app().await;
    let r = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["checks"]["database"], "ok");
    let (_ws, _) = app.connect("1", Tier::Free).await;
    let text = app.metrics().await;
    for name in [
        "gpuscout_connections 1",
        "gpuscout_subscriptions 3",
        "gpuscout_publications_total",
        "gpuscout_deliveries_total",
        "gpuscout_queue_drops_total",
        "gpuscout_slow_disconnects_total",
        "gpuscout_command_duration_seconds_count{command=\"connect\"} 1",
    ] {
        assert!(text.contains(name), "missing {name}:\n{text}");
    }
    let r = app.http.get(app.url("/no/such/route")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "not_found");
}

#[tokio::test]
async fn dev_token_only_in_dev_mode() {
    let app = spawn_app().await;
    let v: Value = app
        .http
        .get(app.url("/api/v1/dev/token?user=77&tier=individual"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = v["token"].as_str().unwrap();
    let mut ws = app.raw_ws().await;
    let r = ws.request(json!({"connect": {"token": token}})).await;
    assert!(r["connect"]["subs"].get("alerts:#77").is_some(), "{r}");

    let off = spawn_app_with(|s| s.auth.dev_mode = false).await;
    let r = off.http.get(off.url("/api/v1/dev/token")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn the_dashboard_and_the_sdk_are_served() {
    let app = spawn_app().await;
    let r = app.http.get(app.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(r.text().await.unwrap().contains("GPUScout"));
    let r = app.http.get(app.url("/sdk/index.js")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    // Validators: a second request with the ETag gets 304 and no body; a stale one the file.
    let r = app.http.get(app.url("/app.js")).send().await.unwrap();
    let tag = r.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(r.headers()["cache-control"], "no-cache");
    let r = app
        .http
        .get(app.url("/app.js"))
        .header("if-none-match", &tag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()["etag"], tag.as_str());
    assert!(r.bytes().await.unwrap().is_empty());
    let r = app
        .http
        .get(app.url("/sdk/index.js"))
        .header("if-none-match", &tag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "another file's tag is not this file's");
    // The service worker, at the root (its scope is the whole dashboard).
    let r = app.http.get(app.url("/sw.js")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // The dashboard's browser tests (and anything npm installed for them) are not in the binary.
    for path in [
        "/sdk/nope.js",
        "/nope.html",
        "/api/v1/nope",
        "/sdk/../Cargo.toml",
        "/%2e%2e/Cargo.toml",
        "/test/dashboard.test.mjs",
        "/test/run-tests.sh",
        "/test/package.json",
    ] {
        let r = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
}

#[tokio::test]
async fn the_api_key_is_not_a_master_key_for_market_and_personal_channels() {
    let app = spawn_app_with(|s| {
        s.api.allow_market_channels = false;
        s.api.allow_personal_channels = false;
    })
    .await;
    for channel in [
        "market:summary",
        "market:summary.1m",
        "gpu:rtx-4090",
        "offers:all",
        "offers:rtx-4090",
        "sources:status",
    ] {
        let v = app
            .api("publish", json!({"channel": channel, "data": {"fake": true}}))
            .await;
        assert_eq!(v["error"]["code"], 103, "{channel}: {v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains("api.allow_market_channels"), "{message}");
    }
    for channel in ["alerts:#42", "advisor:#42"] {
        let v = app.api("publish", json!({"channel": channel, "data": {}})).await;
        assert_eq!(v["error"]["code"], 103, "{channel}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("api.allow_personal_channels")
        );
    }
    let v = app
        .api(
            "broadcast",
            json!({"channels": ["gpu:rtx-4090", "alerts:#42"], "data": {}}),
        )
        .await;
    let codes: Vec<&Value> = v["result"]["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["error"]["code"])
        .collect();
    assert_eq!(codes, [&json!(103), &json!(103)], "{v}");
    // Unknown names are still 102, and reading history is not publishing.
    assert_eq!(
        app.api("publish", json!({"channel": "nope", "data": {}})).await["error"]["code"],
        102
    );
    assert!(
        app.api("history", json!({"channel": "gpu:rtx-4090"}))
            .await
            .get("result")
            .is_some()
    );
}

#[tokio::test]
async fn every_method_refuses_a_body_that_is_not_json() {
    let app = spawn_app().await;
    for method in ["publish", "broadcast", "history", "info"] {
        let r = app
            .http
            .post(app.url(&format!("/api/{method}")))
            .header("X-API-Key", API_KEY)
            .body("notjson")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{method}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], 107, "{method}: {v}");
    }
    // `cent` sends `{}` to info; an empty body is fine too.
    for body in ["{}", ""] {
        let r = app
            .http
            .post(app.url("/api/info"))
            .header("X-API-Key", API_KEY)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{body:?}");
    }
}
