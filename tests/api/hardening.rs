//! Abuse and edge input at the HTTP edge: connection caps, slow headers, large bodies, numeric
//! extremes in query strings, and arbitrary input at every REST route.

use std::time::{Duration, Instant};

use gpuscout_hub::tier::Tier;
use proptest::prelude::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

#[tokio::test]
async fn beyond_max_connections_the_upgrade_is_answered_503() {
    let app = spawn_app_with(|s| s.server.max_connections = 2).await;
    let _a = app.connect("1", Tier::Free).await;
    let _b = app.connect("2", Tier::Free).await;
    let url = format!("ws://{}/connection/websocket", app.addr);
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(body["error"]["code"], "unavailable", "{body}");
        }
        other => panic!("expected 503, got {other:?}"),
    }
    // REST is not counted against it.
    assert_eq!(app.http.get(app.url("/healthz")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_client_sending_headers_slowly_is_dropped() {
    let app = spawn_app_with(|s| s.server.header_timeout_ms = 500).await;
    let mut tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let started = Instant::now();
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut dropped = false;
    for byte in request {
        if tcp.write_all(&[*byte]).await.is_err() {
            dropped = true;
            break;
        }
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(100), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                dropped = true;
                break;
            }
            // hyper may answer 408 before closing.
            Ok(Ok(_)) => {}
            Err(_) => {}
        }
    }
    assert!(dropped, "still connected after {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    // Others are served meanwhile and after.
    assert_eq!(app.http.get(app.url("/healthz")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413() {
    let app = spawn_app_with(|s| s.server.max_body_bytes = 64 * 1024).await;
    let token = app.token("b", Tier::Professional);
    let big = json!({"name": "x".repeat(100_000)}).to_string();
    for (path, auth) in [("/api/v1/alerts/rules", true), ("/api/publish", false)] {
        let mut request = app.http.post(app.url(path)).body(big.clone());
        request = if auth {
            request.bearer_auth(&token)
        } else {
            request.header("X-API-Key", API_KEY)
        };
        assert_eq!(request.send().await.unwrap().status(), 413, "{path}");
    }
}

#[tokio::test]
async fn numeric_extremes_in_query_strings_are_400_or_422_never_a_panic() {
    let app = spawn_app().await;
    let token = app.token("q", Tier::Professional);
    let extremes = [
        "/api/v1/market/history?model=rtx-4090&from=-9223372036854775808&to=9223372036854775807",
        "/api/v1/market/history?model=rtx-4090&to=-9223372036854775808",
        "/api/v1/market/history?model=rtx-4090&from=9223372036854775807",
        "/api/v1/market/history?model=rtx-4090&step=9223372036854775807",
        "/api/v1/market/history?model=rtx-4090&from=99999999999999999999",
        "/api/v1/market/history?model=rtx-4090&from=abc",
        "/api/v1/alerts/events?limit=-9223372036854775808",
        "/api/v1/alerts/events?before=-9223372036854775808&from=9223372036854775807&to=-1",
        "/api/v1/alerts/events?limit=1e99",
    ];
    for path in extremes {
        let r = app.http.get(app.url(path)).bearer_auth(&token).send().await.unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or_else(|e| panic!("{path}: not JSON: {e}"));
        assert!(matches!(status, 200 | 400 | 422), "{path}: {status} {body}");
        if status != 200 {
            assert!(body["error"]["message"].is_string(), "{path}: {body}");
        }
    }
    // The 90-day cap holds for any pair of bounds.
    let r = app
        .http
        .get(app.url("/api/v1/market/history?model=rtx-4090&from=-9223372036854775808&to=9223372036854775807"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
}

/// Every REST route with a valid token, and a path segment where the route has one.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v1/alerts/rules"),
    ("POST", "/api/v1/alerts/rules"),
    ("GET", "/api/v1/alerts/rules/r1"),
    ("PUT", "/api/v1/alerts/rules/r1"),
    ("DELETE", "/api/v1/alerts/rules/r1"),
    ("POST", "/api/v1/alerts/rules/r1/test"),
    ("GET", "/api/v1/alerts/events"),
    ("POST", "/api/v1/alerts/events/e1/ack"),
    ("GET", "/api/v1/market/snapshot"),
    ("GET", "/api/v1/market/history"),
    ("GET", "/api/v1/conversations"),
    ("GET", "/api/v1/conversations/c1/messages"),
    ("GET", "/api/v1/dev/token"),
    ("POST", "/api/publish"),
    ("POST", "/api/broadcast"),
    ("POST", "/api/history"),
    ("POST", "/api/info"),
    ("POST", "/api/revoke_token"),
];

fn query_string() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("model".to_owned()),
        Just("from".to_owned()),
        Just("to".to_owned()),
        Just("step".to_owned()),
        Just("limit".to_owned()),
        Just("before".to_owned()),
        Just("rule".to_owned()),
        Just("user".to_owned()),
        Just("tier".to_owned()),
        Just("ttl".to_owned()),
        "[a-z%&=]{0,6}",
    ];
    let value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| n.to_string()),
        Just("9".repeat(40)),
        "\\PC{0,12}".prop_map(|s| s.replace(['&', '#'], "")),
        Just("%ZZ".to_owned()),
    ];
    proptest::collection::vec((key, value), 0..4).prop_map(|pairs| {
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    })
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "\\PC{0,16}".prop_map(Value::from),
        Just(json!("rtx-4090")),
        Just(json!("price_below")),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("kind".to_owned()),
                    Just("model".to_owned()),
                    Just("threshold".to_owned()),
                    Just("name".to_owned()),
                    Just("channel".to_owned()),
                    Just("channels".to_owned()),
                    Just("data".to_owned()),
                    Just("uid".to_owned()),
                    Just("expire_at".to_owned()),
                    Just("limit".to_owned()),
                    Just("webhook_url".to_owned()),
                    "[a-z_]{1,8}",
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        json_value().prop_map(|v| v.to_string().into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..64),
    ]
}

#[test]
fn arbitrary_query_strings_and_bodies_at_every_rest_route_never_get_a_5xx() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let app = runtime.block_on(spawn_app());
    let token = app.token("fuzz", Tier::Enterprise);
    let config = ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let strategy = (0..ROUTES.len(), query_string(), body());
    runner
        .run(&strategy, |(route, query, body)| {
            let (method, path) = ROUTES[route];
            let url = format!("{}?{query}", app.url(path));
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let request = app
                .http
                .request(method, url)
                .bearer_auth(&token)
                .header("X-API-Key", API_KEY)
                .body(body);
            let response = runtime.block_on(request.send());
            let response = response.map_err(|e| TestCaseError::fail(format!("{path}: no answer: {e}")))?;
            let status = response.status();
            prop_assert!(!status.is_server_error(), "{path}?{query}: {status}");
            Ok(())
        })
        .unwrap();
    runtime.block_on(async {
        assert!(app.metrics().await.contains("gpuscout_connection_panics_total 0"));
    });
}

#[tokio::test]
async fn only_channels_of_models_the_market_knows_can_be_subscribed() {
    let app = spawn_app_with(|s| {
        s.api.allow_market_channels = false;
        s.ingest.simulated.enabled = true;
        s.ingest.simulated.poll_interval_ms = 100;
    })
    .await;
    let started = Instant::now();
    let token = app.token("namer", Tier::Enterprise);
    loop {
        let r = app
            .http
            .get(app.url("/api/v1/market/snapshot"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        if v["models"].as_array().is_some_and(|m| !m.is_empty()) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the simulated market never polled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut ws, _) = app.connect("namer", Tier::Enterprise).await;
    assert!(ws.subscribe("gpu:rtx-4090").await.get("error").is_none());
    for channel in ["gpu:made-up-1", "offers:made-up-2", "gpu:x"] {
        let reply = ws.subscribe(channel).await;
        assert_eq!(reply["error"]["code"], 102, "{channel}: {reply}");
    }
    assert!(ws.subscribe("offers:rtx-4090").await.get("error").is_none());
}
