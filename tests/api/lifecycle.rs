use gpuscout_hub::tier::Tier;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn shutdown_closes_sessions_with_3001_and_returns() {
    let mut app = spawn_app().await;
    let mut clients = Vec::new();
    for i in 0..5 {
        let (mut ws, _) = app.connect(&format!("{i}"), Tier::Individual).await;
        ws.subscribe("market:summary").await;
        clients.push(ws);
    }
    let stopped = app.stop();
    let (result, codes) = tokio::join!(stopped, async {
        let mut codes = Vec::new();
        for ws in &mut clients {
            codes.push(ws.closed().await);
        }
        codes
    });
    result.expect("run_until_stopped returns Ok");
    assert_eq!(codes, vec![3001; 5]);
    // The listener is gone.
    assert!(tokio::net::TcpStream::connect(app.addr).await.is_err());
}

#[tokio::test]
async fn one_client_misbehaving_does_not_disturb_another() {
    let app = spawn_app().await;
    let (mut good, _) = app.connect("good", Tier::Professional).await;
    good.subscribe("gpu:rtx-4090").await;
    for garbage in [
        "\u{0}\u{1}",
        "[]",
        "{\"id\":1,\"connect\":{\"token\":5}}",
        "{\"id\":-1}",
    ] {
        let mut bad = app.raw_ws().await;
        bad.send_text(garbage).await;
        assert_eq!(bad.closed().await, 3501, "{garbage:?}");
    }
    app.publish("gpu:rtx-4090", json!({"ok": true})).await;
    assert_eq!(good.push().await["pub"]["data"]["ok"], true);
}

/// The real binary, as an operator starts it, with the laptop defaults on a reachable address.
fn start_binary(env: &[(&str, &str)]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_gpuscout"));
    cmd.current_dir(dir.path()).env_remove("GPUSCOUT__ENVIRONMENT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A refusal is immediate; a hub that started would run until killed.
    for _ in 0..100 {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    child.wait_with_output().unwrap()
}

#[test]
fn laptop_settings_on_a_reachable_address_refuse_to_start_with_exit_2() {
    let out = start_binary(&[("GPUSCOUT__SERVER__LISTEN", "0.0.0.0:0")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("auth.dev_mode") && stderr.contains("server.listen"),
        "{stderr}"
    );

    let out = start_binary(&[
        ("GPUSCOUT__SERVER__LISTEN", "0.0.0.0:0"),
        ("GPUSCOUT__AUTH__DEV_MODE", "false"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("auth.hmac_secret") && stderr.contains("server.listen"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_client_close_is_answered_with_its_own_code() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    let app = spawn_app().await;
    for connected in [false, true] {
        let mut ws = if connected {
            app.connect("5", Tier::Free).await.0
        } else {
            app.raw_ws().await
        };
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        };
        ws.stream.send(Message::Close(Some(frame))).await.unwrap();
        // The hub's answer: a close frame echoing 1000 (a dropped TCP connection reads as an
        // error here, and as 1006 in a browser).
        let answer = tokio::time::timeout(WAIT, async {
            loop {
                match ws.stream.next().await {
                    Some(Ok(Message::Close(frame))) => return Ok(frame.map(|f| u16::from(f.code))),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(e.to_string()),
                    None => return Err("ended without a close frame".to_owned()),
                }
            }
        })
        .await
        .expect("the hub answers in time");
        assert_eq!(answer, Ok(Some(1000)), "connected: {connected}");
    }
}

/// A metric's value from the `/metrics` text.
async fn metric(app: &TestApp, name: &str) -> f64 {
    metric_value(&app.metrics().await, name).unwrap_or_else(|| panic!("{name} not in /metrics"))
}

#[tokio::test]
async fn a_peer_that_stops_reading_is_closed_within_the_write_timeout() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let app = spawn_app_with(|s| s.server.write_timeout_ms = 500).await;
    let mut reader = app.connect("reader", Tier::Enterprise).await.0;
    reader.subscribe("gpu:rtx-4090").await;

    // The stuck peer: a tiny receive window, subscribed, then never reading again.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(app.addr).await.unwrap();
    let url = format!("ws://{}/connection/websocket", app.addr);
    let (mut stuck, _) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
    let token = app.token("stuck", Tier::Enterprise);
    let connect = json!({"id": 1, "connect": {"token": token}}).to_string();
    stuck.send(Message::text(connect)).await.unwrap();
    stuck.next().await.unwrap().unwrap();
    let subscribe = json!({"id": 2, "subscribe": {"channel": "gpu:rtx-4090"}}).to_string();
    stuck.send(Message::text(subscribe)).await.unwrap();
    stuck.next().await.unwrap().unwrap();
    assert_eq!(metric(&app, "gpuscout_connections").await, 2.0);

    // ~16 MB: far more than the socket buffers of both ends hold.
    let filler = "x".repeat(60_000);
    for n in 0..270 {
        app.publish("gpu:rtx-4090", json!({"n": n, "filler": filler})).await;
        // The reader keeps up.
        assert_eq!(reader.push().await["pub"]["data"]["n"], n);
    }
    let started = std::time::Instant::now();
    while metric(&app, "gpuscout_connections").await > 1.0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "the stuck peer was never closed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    eprintln!("stuck peer closed {:?} after the last publication", started.elapsed());
    assert!(metric(&app, "gpuscout_write_timeouts_total").await >= 1.0);
    // Its session and per-user state are gone; the reader is still served.
    app.publish("gpu:rtx-4090", json!({"n": "after"})).await;
    assert_eq!(reader.push().await["pub"]["data"]["n"], "after");
    drop(stuck);
}

#[test]
fn vapid_keys_prints_a_pair_the_hub_accepts() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gpuscout"))
        .arg("vapid-keys")
        .env_remove("GPUSCOUT__ENVIRONMENT")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} in {text}"))
            .to_owned()
    };
    let mut push = gpuscout_hub::config::PushSettings {
        vapid_public_key: value("GPUSCOUT__PUSH__VAPID_PUBLIC_KEY"),
        vapid_private_key: value("GPUSCOUT__PUSH__VAPID_PRIVATE_KEY").into(),
        subject: "mailto:ops@example.com".into(),
        ..Default::default()
    };
    push.validate().unwrap();
    push.subject = String::new();
    assert!(push.validate().unwrap_err().to_string().contains("push.subject"));
}

#[tokio::test]
async fn the_vapid_public_key_is_served_when_push_is_on() {
    let off = spawn_app().await;
    let r = off
        .http
        .get(off.url("/api/v1/push/vapid-public-key"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let (public, private) = gpuscout_hub::alerts::vapid::new_key_pair();
    let key = public.clone();
    let on = spawn_app_with(move |s| {
        s.push.vapid_public_key = key;
        s.push.vapid_private_key = private.into();
        s.push.subject = "mailto:ops@example.com".into();
    })
    .await;
    let r = on
        .http
        .get(on.url("/api/v1/push/vapid-public-key"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["public_key"], public.as_str());
}

/// The listen backlog takes a reconnect burst (the kernel caps it at `net.core.somaxconn`); the
/// standard 128 drops SYNs when a drained node's clients arrive at once.
#[tokio::test]
async fn the_listener_queues_a_reconnect_burst() {
    let mut app = spawn_app().await;
    let port = app.addr.port();
    let out = std::process::Command::new("ss")
        .args(["-Hltn", &format!("sport = :{port}")])
        .output();
    let Ok(out) = out else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "ss (iproute2) is required under CI"
        );
        return;
    };
    // State, Recv-Q, Send-Q (the backlog of a listening socket), local, peer.
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    let backlog: u32 = line
        .split_whitespace()
        .nth(2)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no listening socket on {port}: {line:?}"));
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(4096);
    assert_eq!(backlog, somaxconn.min(4096), "{line}");
    app.stop().await.expect("stops");
}
