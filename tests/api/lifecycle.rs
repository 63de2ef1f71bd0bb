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
