//! API keys for third-party programs: created once-shown, exchanged for scoped connection tokens,
//! the scopes enforced on the socket and on REST, per-tier limits, and revocation that ends the
//! key's connections at once; on SQLite and PostgreSQL.

use std::time::Duration;

use axum::http::StatusCode;
use gpuscout_hub::tier::Tier;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::alerts::request;
use crate::helpers::*;

async fn exchange(app: &TestApp, key: &str) -> (StatusCode, Value) {
    request(app, "POST", "/api/v1/token", key, None).await
}

async fn keys_are_scoped_and_revocable(database_url: Option<String>) {
    let app = spawn_app_with(move |s| {
        s.ingest.simulated.enabled = true;
        s.ingest.simulated.poll_interval_ms = 200;
        if let Some(url) = database_url {
            s.database.url = SecretString::from(url);
        }
    })
    .await;
    let user = app.token("dev1", Tier::Individual);
    let body = json!({"name": "ticker", "scopes": ["subscribe", "market:read"]});
    let (status, created) = request(&app, "POST", "/api/v1/keys", &user, Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("gsk_") && key.len() == 47, "{key}");
    assert_eq!(created["prefix"], &key[..12]);
    let (_, listed) = request(&app, "GET", "/api/v1/keys", &user, None).await;
    assert_eq!(listed["keys"].as_array().unwrap().len(), 1);
    assert!(
        !listed.to_string().contains(&key[12..]),
        "the key is shown once: {listed}"
    );
    let (status, v) = request(
        &app,
        "POST",
        "/api/v1/keys",
        &user,
        Some(json!({"name": "x", "scopes": ["root"]})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");

    // The exchange: a short-lived token for the key's owner and tier, with its scopes.
    let (status, exchanged) = exchange(&app, &key).await;
    assert_eq!(status, StatusCode::OK, "{exchanged}");
    let token = exchanged["token"].as_str().unwrap().to_owned();
    let expires = exchanged["expires_at"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!((now + 890..=now + 910).contains(&expires), "{exchanged}");
    let (status, _) = exchange(&app, "gsk_not-a-key").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // On the socket: subscribes, but no personal channels its scopes lack, and no advisor.
    let mut ws = app.raw_ws().await;
    let connected = ws.request(json!({"connect": {"token": token}})).await;
    let subs = connected["connect"]["subs"].as_object().cloned().unwrap_or_default();
    assert!(subs.is_empty(), "{connected}");
    assert!(ws.subscribe("market:summary").await.get("subscribe").is_some());
    let asked = ws
        .request(json!({"rpc": {"method": "advisor.ask", "data": {"text": "hi"}}}))
        .await;
    assert_eq!(asked["error"]["code"], 103, "{asked}");

    // On REST, the key itself or its token: market reads yes, rules and the rest no.
    let (status, _) = request(&app, "GET", "/api/v1/market/snapshot", &key, None).await;
    assert_eq!(status, StatusCode::OK);
    let rule = json!({"name": "r", "kind": "price", "model": "rtx-4090", "direction": "below", "threshold_usd": 0.3});
    for credential in [&key, &token] {
        let (status, v) = request(&app, "POST", "/api/v1/alerts/rules", credential, Some(rule.clone())).await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("insufficient_scope")),
            "{v}"
        );
        let (status, _) = request(&app, "GET", "/api/v1/portfolio", credential, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = request(
            &app,
            "POST",
            "/api/v1/keys",
            credential,
            Some(json!({"name": "n", "scopes": ["subscribe"]})),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "a key makes no keys");
    }

    // Revoked: the connection closes at once, the key and its tokens are refused.
    let id = created["id"].as_str().unwrap();
    let (status, _) = request(&app, "DELETE", &format!("/api/v1/keys/{id}"), &user, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let closed = tokio::time::timeout(Duration::from_secs(1), ws.closed()).await;
    assert_eq!(closed.ok(), Some(3500), "the key's connection closes within a second");
    assert_eq!(exchange(&app, &key).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        request(&app, "GET", "/api/v1/market/snapshot", &key, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        request(&app, "GET", "/api/v1/market/snapshot", &token, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (_, listed) = request(&app, "GET", "/api/v1/keys", &user, None).await;
    assert_eq!(listed["keys"], json!([]));
}

#[tokio::test]
async fn keys_are_scoped_and_revocable_on_sqlite() {
    keys_are_scoped_and_revocable(None).await;
}

#[tokio::test]
async fn keys_are_scoped_and_revocable_on_postgres() {
    if let Some(url) = fresh_postgres_url().await {
        keys_are_scoped_and_revocable(Some(url)).await;
    }
}

#[tokio::test]
async fn keys_follow_tier_limits_and_full_scopes_reach_alerts_and_the_advisor() {
    let app = spawn_app().await;
    let free = app.token("dev2", Tier::Free);
    let all = json!({"name": "all", "scopes": ["subscribe", "market:read", "alerts:read", "alerts:write", "advisor"]});
    let (status, created) = request(&app, "POST", "/api/v1/keys", &free, Some(all.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, v) = request(&app, "POST", "/api/v1/keys", &free, Some(all)).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("limit_exceeded")),
        "{v}"
    );
    let key = created["key"].as_str().unwrap();
    let (_, exchanged) = exchange(&app, key).await;
    let mut ws = app.raw_ws().await;
    let connected = ws.request(json!({"connect": {"token": exchanged["token"]}})).await;
    let subs: Vec<&String> = connected["connect"]["subs"].as_object().unwrap().keys().collect();
    assert_eq!(subs, ["advisor:#dev2", "alerts:#dev2"], "{connected}");
    let (status, _) = request(&app, "GET", "/api/v1/alerts/rules", key, None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn rest_limits_per_user_and_per_address_answer_429_and_spare_others() {
    let app = spawn_app_with(|s| {
        s.tiers.get_mut(&Tier::Individual).unwrap().rest_per_minute = 5;
        s.server.rest_per_minute_per_ip = 3;
    })
    .await;
    let (a, b) = (
        app.token("burst", Tier::Individual),
        app.token("calm", Tier::Individual),
    );
    for _ in 0..5 {
        assert_eq!(
            request(&app, "GET", "/api/v1/alerts/rules", &a, None).await.0,
            StatusCode::OK
        );
    }
    let r = app
        .http
        .get(app.url("/api/v1/alerts/rules"))
        .bearer_auth(&a)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let h = r.headers().clone();
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=12).contains(&retry), "one request per 12 s comes back: {retry}");
    assert_eq!(h["ratelimit-limit"], "5");
    assert_eq!(h["ratelimit-remaining"], "0");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    // Another user is not slowed by the first one's burst.
    let started = std::time::Instant::now();
    assert_eq!(
        request(&app, "GET", "/api/v1/alerts/rules", &b, None).await.0,
        StatusCode::OK
    );
    assert!(started.elapsed() < Duration::from_millis(500));

    // The routes without a token, per address; health, metrics and the server API are not limited.
    for _ in 0..3 {
        assert_ne!(
            app.http
                .get(app.url("/api/v1/push/vapid-public-key"))
                .send()
                .await
                .unwrap()
                .status(),
            429
        );
    }
    let r = app
        .http
        .get(app.url("/api/v1/push/vapid-public-key"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    for _ in 0..10 {
        assert_eq!(app.http.get(app.url("/healthz")).send().await.unwrap().status(), 200);
        assert_eq!(app.http.get(app.url("/metrics")).send().await.unwrap().status(), 200);
    }
    for n in 0..10 {
        let published = app
            .api("publish", json!({"channel": "gpu:rtx-4090", "data": {"n": n}}))
            .await;
        assert!(published.get("result").is_some(), "{published}");
    }
}
