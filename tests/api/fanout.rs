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

/// A message longer than `http::ws::FRAGMENT_BYTES` goes out as fragments no longer than that
/// (a text frame, then continuations, the last one final), joined by the client into the one
/// message: no connection's write buffer grows to the size of the largest message it sent.
#[tokio::test]
async fn a_large_message_is_written_in_bounded_fragments() {
    use gpuscout_hub::http::ws::FRAGMENT_BYTES;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = spawn_app().await;
    let mut tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let handshake = format!(
        "GET /connection/websocket HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        app.addr
    );
    tcp.write_all(handshake.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.unwrap());
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    let token = app.token("big", Tier::Professional);
    let commands = format!(
        "{}\n{}",
        json!({"id": 1, "connect": {"token": token}}),
        json!({"id": 2, "subscribe": {"channel": "gpu:rtx-4090"}})
    );
    tcp.write_all(&masked_text_frame(commands.as_bytes())).await.unwrap();
    // Both replies (small: one frame each), then the large publication.
    let mut replies = 0;
    while replies < 2 {
        let (_, _, payload) = read_frame(&mut tcp).await;
        replies += String::from_utf8(payload).unwrap().matches("\"id\":").count();
    }
    let blob = "x".repeat(100_000);
    app.publish("gpu:rtx-4090", json!({"blob": blob})).await;
    let (mut frames, mut message) = (Vec::new(), Vec::new());
    loop {
        let (fin, opcode, payload) = read_frame(&mut tcp).await;
        frames.push((opcode, payload.len()));
        message.extend_from_slice(&payload);
        if fin {
            break;
        }
    }
    assert!(frames.len() >= 100_000 / FRAGMENT_BYTES, "{frames:?}");
    assert!(frames.iter().all(|&(_, len)| len <= FRAGMENT_BYTES), "{frames:?}");
    assert_eq!(frames[0].0, 1, "a text frame first");
    assert!(
        frames[1..].iter().all(|&(opcode, _)| opcode == 0),
        "then continuations: {frames:?}"
    );
    let push: serde_json::Value = serde_json::from_slice(&message).unwrap();
    assert_eq!(
        push["push"]["pub"]["data"]["blob"].as_str().map(str::len),
        Some(100_000)
    );
}

/// A client's text frame (masked, as RFC 6455 requires of clients; the mask is zero).
fn masked_text_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x81];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(payload);
    frame
}

/// One frame from the server: whether it is final, its opcode and its payload.
async fn read_frame(tcp: &mut tokio::net::TcpStream) -> (bool, u8, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let read = async {
        let (b0, b1) = (tcp.read_u8().await?, tcp.read_u8().await?);
        assert_eq!(b1 & 0x80, 0, "server frames are not masked");
        let len = match b1 & 0x7F {
            126 => u64::from(tcp.read_u16().await?),
            127 => tcp.read_u64().await?,
            n => u64::from(n),
        };
        let mut payload = vec![0; usize::try_from(len).unwrap()];
        tcp.read_exact(&mut payload).await?;
        std::io::Result::Ok((b0 & 0x80 != 0, b0 & 0x0F, payload))
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("a frame in time")
        .expect("a frame")
}
