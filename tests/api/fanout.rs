use futures_util::StreamExt;
use gpuscout_hub::tier::Tier;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn every_subscriber_gets_every_publication_in_order() {
    let app = spawn_app().await;
    let mut clients = Vec::new();
    for i in 0..40 {
        let (mut ws, _) = app.connect(&format!("s{i}"), Tier::Professional).await;
        assert!(ws.subscribe("gpu:rtx-4090").await.get("subscribe").is_some());
        clients.push(ws);
    }
    let (mut other, _) = app.connect("other", Tier::Professional).await;
    other.subscribe("gpu:rtx-3090").await;
    for n in 1..=25u64 {
        assert_eq!(app.publish("gpu:rtx-4090", json!({"n": n, "text": "a\nb"})).await, n);
    }
    for ws in &mut clients {
        for n in 1..=25u64 {
            let push = ws.push().await;
            assert_eq!(push["channel"], "gpu:rtx-4090");
            assert_eq!(push["pub"]["offset"], n);
            assert_eq!(push["pub"]["data"]["n"], n);
            assert_eq!(push["pub"]["data"]["text"], "a\nb");
        }
    }
    assert!(
        other.next_within(std::time::Duration::from_millis(200)).await.is_none(),
        "no cross-channel leak"
    );
    let metrics = app.metrics().await;
    assert!(metrics.contains("gpuscout_deliveries_total 1000"), "{metrics}");
    // One bus subscription per channel: the two gpu channels and each user's three personal ones.
    let expected = format!("gpuscout_bus_subscriptions {}", 2 + 3 * 41);
    assert!(metrics.contains(&expected), "{expected}:\n{metrics}");
}

#[tokio::test]
async fn connect_and_subscribes_in_one_frame_are_handled_in_order() {
    let app = spawn_app().await;
    let mut ws = app.raw_ws().await;
    let token = app.token("3", Tier::Professional);
    let frame = [
        json!({"id": 1, "connect": {"token": token}}),
        json!({"id": 2, "subscribe": {"channel": "gpu:rtx-4090"}}),
        json!({"id": 3, "subscribe": {"channel": "market:summary"}}),
        json!({"id": 4, "rpc": {"method": "session.info"}}),
    ]
    .iter()
    .map(|v| v.to_string())
    .collect::<Vec<_>>()
    .join("\n");
    ws.send_text(&frame).await;
    for id in 1..=4 {
        let v = ws.json().await;
        assert_eq!(v["id"], id, "replies in command order: {v}");
        assert!(v.get("error").is_none(), "{v}");
    }
}

#[tokio::test]
async fn a_slow_consumer_is_cut_off_without_hurting_others() {
    let app = spawn_app_with(|s| {
        s.server.outbox_max_bytes = 256 * 1024;
        s.server.max_write_buffer_bytes = 128 * 1024;
        s.server.write_buffer_bytes = 16 * 1024;
    })
    .await;
    let (mut slow, _) = app.connect("slow", Tier::Professional).await;
    slow.subscribe("gpu:h100").await;
    let (mut fast, _) = app.connect("fast", Tier::Professional).await;
    fast.subscribe("gpu:h100").await;
    let blob = "x".repeat(60_000);
    let reader = tokio::spawn(async move {
        let mut got = 0u64;
        while got < 400 {
            let push = fast.push().await;
            got += 1;
            assert_eq!(push["pub"]["offset"], got);
        }
        got
    });
    for _ in 0..400 {
        app.publish("gpu:h100", json!({"blob": blob})).await;
    }
    assert_eq!(reader.await.unwrap(), 400, "the fast client got everything");
    // The slow one, reading only now, finds its connection closed with 3008.
    assert_eq!(slow.closed().await, 3008);
    let metrics = app.metrics().await;
    assert!(metrics.contains("gpuscout_slow_disconnects_total 1"), "{metrics}");
}

/// The text frames a subscriber of `gpu:rtx-4090` receives while five publications are made
/// 30 ms apart, as the number of publications in each frame.
async fn frames_of_five_spaced_publications(write_delay_ms: u64) -> Vec<usize> {
    let app = spawn_app_with(|s| s.server.write_delay_ms = write_delay_ms).await;
    let (mut ws, _) = app.connect("gatherer", Tier::Professional).await;
    ws.subscribe("gpu:rtx-4090").await;
    for n in 1..=5u64 {
        app.publish("gpu:rtx-4090", json!({"n": n})).await;
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
    let mut frames = Vec::new();
    let mut seen = 0;
    while seen < 5 {
        let next = tokio::time::timeout(WAIT, ws.stream.next())
            .await
            .expect("frames in time");
        let Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) = next else {
            panic!("expected a text frame, got {next:?}")
        };
        let pubs = text.as_str().split('\n').filter(|l| l.starts_with("{\"push\"")).count();
        seen += pubs;
        if pubs > 0 {
            frames.push(pubs);
        }
    }
    frames
}

#[tokio::test]
async fn write_delay_gathers_publications_into_one_frame() {
    // Written at once by default: each publication its own frame.
    assert_eq!(frames_of_five_spaced_publications(0).await, vec![1; 5]);
    // The writer waits 500 ms after the first: all five (published within ~150 ms) share it.
    assert_eq!(frames_of_five_spaced_publications(500).await, vec![5]);
}
