//! The HTTP layers every answer goes through: request ids, compression (never on the WebSocket
//! upgrade), the security headers the dashboard is served with, CORS only for configured
//! origins, and the request deadline answered with the JSON error body.

use std::io::Read;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use gpuscout_hub::tier::Tier;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::alerts::request;
use crate::fakes::{Failure, FakeServer};
use crate::helpers::*;

fn raw_client() -> reqwest::Client {
    // No transparent decompression: the test sees the bytes on the wire.
    reqwest::Client::builder().no_gzip().build().unwrap()
}

#[tokio::test]
async fn every_answer_carries_a_request_id_the_client_may_choose() {
    let app = spawn_app().await;
    let http = raw_client();
    let resp = http.get(app.url("/healthz")).send().await.unwrap();
    let generated = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");
    let resp = http
        .get(app.url("/api/v1/alerts/rules"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(resp.headers()["x-request-id"], "trace-me-42");
}

#[tokio::test]
async fn json_and_static_files_are_compressed_but_not_the_websocket_upgrade() {
    let app = spawn_app_with(|s| s.ingest.simulated.enabled = true).await;
    let token = app.token("gz", Tier::Professional);
    let http = raw_client();
    // The simulated market's first poll may take a moment on a loaded machine.
    let started = Instant::now();
    let plain = loop {
        let r = http
            .get(app.url("/api/v1/market/snapshot"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert!(r.headers().get("content-encoding").is_none());
        let body: Value = r.json().await.unwrap();
        if body["models"].as_array().is_some_and(|m| !m.is_empty()) {
            break body;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no market in 20 s: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(plain["models"].as_array().is_some_and(|m| !m.is_empty()));
    let resp = http
        .get(app.url("/api/v1/market/snapshot"))
        .bearer_auth(&token)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let zipped = resp.bytes().await.unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&zipped[..])
        .read_to_string(&mut text)
        .unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert!(body["models"].as_array().is_some_and(|m| !m.is_empty()), "{body}");

    let resp = http
        .get(app.url("/app.js"))
        .header("accept-encoding", "br")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-encoding"], "br");

    // The upgrade: 101, no content-encoding, whatever the client says it accepts.
    let mut tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let upgrade = format!(
        "GET /connection/websocket HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAccept-Encoding: gzip, br\r\n\r\n",
        app.addr
    );
    tcp.write_all(upgrade.as_bytes()).await.unwrap();
    let mut head = vec![0u8; 1024];
    let n = tcp.read(&mut head).await.unwrap();
    let head = String::from_utf8_lossy(&head[..n]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(!head.contains("content-encoding"), "{head}");
}

#[tokio::test]
async fn a_plain_get_of_the_websocket_endpoint_is_told_what_is_missing() {
    let app = spawn_app().await;
    let resp = raw_client().get(app.url("/connection/websocket")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("Connection: Upgrade"), "{body}");
}

#[tokio::test]
async fn the_dashboard_is_served_with_a_strict_content_security_policy() {
    let app = spawn_app().await;
    let resp = raw_client().get(app.url("/")).send().await.unwrap();
    let h = resp.headers();
    let csp = h["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["x-frame-options"], "DENY");
}

async fn preflight(app: &TestApp, origin: &str) -> reqwest::Response {
    raw_client()
        .request(reqwest::Method::OPTIONS, app.url("/api/v1/alerts/rules"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn cors_answers_only_the_configured_origins() {
    let same_origin_only = spawn_app().await;
    let resp = preflight(&same_origin_only, "https://elsewhere.example").await;
    assert!(resp.headers().get("access-control-allow-origin").is_none());

    let app = spawn_app_with(|s| s.server.cors_origins = vec!["https://app.example".into()]).await;
    let resp = preflight(&app, "https://app.example").await;
    assert_eq!(resp.headers()["access-control-allow-origin"], "https://app.example");
    let methods = resp.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(methods.contains("POST"), "{methods}");
    let resp = preflight(&app, "https://evil.example").await;
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    let token = app.token("cors", Tier::Professional);
    let resp = raw_client()
        .get(app.url("/api/v1/alerts/rules"))
        .bearer_auth(&token)
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["access-control-allow-origin"], "https://app.example");
    let exposed = resp.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        exposed.contains("x-request-id") && exposed.contains("retry-after"),
        "{exposed}"
    );
}

#[tokio::test]
async fn a_request_past_its_deadline_is_answered_with_the_json_error() {
    let hook = FakeServer::start().await;
    hook.fake.fail("/slow", [Failure::Hang(Duration::from_secs(5))]);
    let app = spawn_app_with(|s| {
        s.server.request_timeout_ms = 500;
        s.alerts.webhook_allow_http = true;
        s.alerts.webhook_allow_private = true;
    })
    .await;
    let token = app.token("slow", Tier::Professional);
    let rule = json!({"name": "slow hook", "kind": "availability", "model": "rtx-4090", "below": 5,
                      "webhook": {"url": format!("{}/slow", hook.url)}});
    let (status, created) = request(&app, "POST", "/api/v1/alerts/rules", &token, Some(rule)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let path = format!("/api/v1/alerts/rules/{}/test", created["id"].as_str().unwrap());
    let started = Instant::now();
    let (status, body) = request(&app, "POST", &path, &token, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "timeout", "{body}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    // The node answers the next request as usual.
    let (status, _) = request(&app, "GET", "/api/v1/alerts/rules", &token, None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn dashboard_files_are_named_by_hash_cached_for_a_year_and_compressed_once() {
    use sha2::Digest;
    let app = spawn_app().await;
    let http = raw_client();
    let html = http.get(app.url("/")).send().await.unwrap();
    assert_eq!(
        html.headers()["cache-control"],
        "no-cache",
        "the page itself is revalidated"
    );
    let html = html.text().await.unwrap();
    for file in ["app.js", "style.css"] {
        let start = html
            .find(&format!("\"/{file}?v="))
            .unwrap_or_else(|| panic!("index.html names /{file} without its hash:\n{html}"));
        let url = html[start + 1..].split('"').next().unwrap().to_owned();
        let hash = url.rsplit("?v=").next().unwrap().to_owned();

        let pinned = http.get(app.url(&url)).send().await.unwrap();
        assert_eq!(pinned.status(), 200);
        assert_eq!(pinned.headers()["cache-control"], "public, max-age=31536000, immutable");
        assert!(pinned.headers().get("content-encoding").is_none());
        let plain = pinned.bytes().await.unwrap();
        // The hash in the URL is the content's: a changed file gets a new URL.
        assert_eq!(hex::encode(&sha2::Sha256::digest(&plain)[..16]), hash, "{url}");

        let stale = http.get(app.url(&format!("/{file}?v=0123"))).send().await.unwrap();
        assert_eq!(
            stale.headers()["cache-control"],
            "no-cache",
            "another hash is not pinned"
        );

        // Compressed forms decode to the same bytes, are the same bytes each time (compressed
        // once), and are representations of their own (ETag, Vary).
        let get = |coding: &'static str| http.get(app.url(&url)).header("accept-encoding", coding).send();
        // Compressed once, off the request path: until then the layer compresses as it goes.
        let started = Instant::now();
        let gz = loop {
            let gz = get("gzip").await.unwrap();
            if gz.headers()["etag"].to_str().unwrap().ends_with("-gzip\"") {
                break gz;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "never compressed ahead");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(gz.headers()["content-encoding"], "gzip");
        assert_eq!(gz.headers()["vary"], "accept-encoding");
        let gz_tag = gz.headers()["etag"].to_str().unwrap().to_owned();
        assert_eq!(gz_tag, format!("\"{hash}-gzip\""));
        let gz = gz.bytes().await.unwrap();
        let mut unzipped = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut unzipped)
            .unwrap();
        assert_eq!(unzipped, plain);
        assert_eq!(get("gzip").await.unwrap().bytes().await.unwrap(), gz);

        let br = get("gzip, br").await.unwrap();
        assert_eq!(br.headers()["content-encoding"], "br");
        let br = br.bytes().await.unwrap();
        let mut unbrotli = Vec::new();
        brotli::Decompressor::new(&br[..], 4096)
            .read_to_end(&mut unbrotli)
            .unwrap();
        assert_eq!(unbrotli, plain);
        assert!(
            br.len() < plain.len() / 2,
            "{file}: {} of {} bytes",
            br.len(),
            plain.len()
        );

        let again = http
            .get(app.url(&url))
            .header("accept-encoding", "gzip")
            .header("if-none-match", &gz_tag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304);
    }
}
