use gpuscout_hub::tier::Tier;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn malformed_json_closes_with_bad_request() {
    let app = spawn_app().await;
    let (mut ws, _) = app.connect("1", Tier::Free).await;
    ws.send_text("{\"id\":2,\"subscribe\":").await;
    assert_eq!(ws.closed().await, 3501);
    // Before connect too; and a command other than connect first.
    let mut ws = app.raw_ws().await;
    ws.send_text("not json").await;
    assert_eq!(ws.closed().await, 3501);
    let mut ws = app.raw_ws().await;
    ws.send(json!({"subscribe": {"channel": "market:summary.1m"}})).await;
    assert_eq!(ws.closed().await, 3501);
}

#[tokio::test]
async fn binary_frames_are_refused() {
    use futures_util::SinkExt;
    let app = spawn_app().await;
    let (mut ws, _) = app.connect("1", Tier::Free).await;
    ws.stream
        .send(tokio_tungstenite::tungstenite::Message::binary(vec![1u8, 2, 3]))
        .await
        .unwrap();
    assert_eq!(ws.closed().await, 3501);
}

#[tokio::test]
async fn frame_over_the_limit_closes_with_1009() {
    let app = spawn_app_with(|s| s.server.max_message_bytes = 4096).await;
    let (mut ws, _) = app.connect("1", Tier::Free).await;
    let big = json!({"id": 9, "rpc": {"method": "session.info", "data": {"pad": "x".repeat(10_000)}}});
    ws.send_text(&big.to_string()).await;
    assert_eq!(ws.closed().await, 1009);
}

#[tokio::test]
async fn unknown_rpc_method_is_104_and_known_one_answers() {
    let app = spawn_app().await;
    let (mut ws, reply) = app.connect("12", Tier::Individual).await;
    let r = ws
        .request(json!({"rpc": {"method": "no.such.method", "data": {}}}))
        .await;
    assert_eq!(r["error"]["code"], 104, "{r}");
    let r = ws.request(json!({"rpc": {"method": "session.info"}})).await;
    assert_eq!(r["rpc"]["data"]["user"], "12", "{r}");
    assert_eq!(r["rpc"]["data"]["tier"], "individual");
    assert_eq!(r["rpc"]["data"]["client"], reply["connect"]["client"]);
}

#[tokio::test]
async fn client_publish_is_denied_and_unsupported_commands_say_so() {
    let app = spawn_app().await;
    let (mut ws, _) = app.connect("1", Tier::Enterprise).await;
    let r = ws
        .request(json!({"publish": {"channel": "market:summary", "data": {"x": 1}}}))
        .await;
    assert_eq!(r["error"]["code"], 103, "{r}");
    let r = ws.request(json!({"presence": {"channel": "market:summary"}})).await;
    assert_eq!(r["error"]["code"], 108, "{r}");
    let r = ws
        .request(json!({"subscribe": {"channel": "market:summary", "type": 1}}))
        .await;
    assert_eq!(r["error"]["code"], 107, "{r}");
    let r = ws.request(json!({"subscribe": {"channel": ""}})).await;
    assert_eq!(r["error"]["code"], 107, "{r}");
}

#[tokio::test]
async fn a_command_flood_gets_too_many_requests() {
    let app = spawn_app().await;
    let (mut ws, _) = app.connect("1", Tier::Free).await;
    let burst = app.settings.tier(Tier::Free).command_burst as usize;
    let frame = (1..=burst * 3)
        .map(|i| json!({"id": 100 + i, "rpc": {"method": "session.info"}}).to_string())
        .collect::<Vec<_>>()
        .join("\n");
    ws.send_text(&frame).await;
    let (mut ok, mut limited) = (0, 0);
    for _ in 0..burst * 3 {
        let v = ws.json().await;
        if v.get("rpc").is_some() {
            ok += 1;
        } else {
            assert_eq!(v["error"]["code"], 111, "{v}");
            assert_eq!(v["error"]["temporary"], true);
            limited += 1;
        }
    }
    assert!(ok >= burst && ok < burst * 2, "ok {ok}");
    assert!(limited > 0);
    // Another user's connection is unaffected.
    let (mut other, _) = app.connect("2", Tier::Free).await;
    assert!(
        other
            .request(json!({"rpc": {"method": "session.info"}}))
            .await
            .get("rpc")
            .is_some()
    );
}

#[tokio::test]
async fn server_pings_and_closes_a_client_that_never_answers() {
    let app = spawn_app_with(|s| {
        s.server.ping_interval_s = 1;
        s.server.pong_timeout_s = 1;
    })
    .await;
    let (mut polite, reply) = app.connect("1", Tier::Free).await;
    assert_eq!(reply["connect"]["ping"], 1);
    let (mut silent, _) = app.connect("2", Tier::Free).await;
    silent.answer_pings = false;
    // Reading is what answers the pings, so the polite client reads meanwhile; nothing but pings
    // arrives for it.
    let (polite_saw, ()) = tokio::join!(polite.next_within(std::time::Duration::from_millis(3500)), async {
        let first = silent.json().await;
        assert_eq!(first, json!({}), "a ping is an empty object");
        assert_eq!(silent.closed().await, 3012);
    });
    assert!(polite_saw.is_none(), "{polite_saw:?}");
    assert!(
        polite
            .request(json!({"rpc": {"method": "session.info"}}))
            .await
            .get("rpc")
            .is_some()
    );
}

#[tokio::test]
async fn a_client_that_never_connects_is_closed() {
    let app = spawn_app_with(|s| s.server.connect_timeout_s = 1).await;
    let mut ws = app.raw_ws().await;
    assert_eq!(ws.closed().await, 3000);
}
