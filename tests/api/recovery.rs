use gpuscout_hub::tier::Tier;
use serde_json::{Value, json};

use crate::helpers::*;

fn offsets(reply: &Value) -> Vec<u64> {
    reply["publications"]
        .as_array()
        .map(|a| a.iter().map(|p| p["offset"].as_u64().unwrap()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn reconnect_recovers_exactly_the_missed_publications() {
    let app = spawn_app().await;
    let (mut ws, _) = app.connect("8", Tier::Professional).await;
    let sub = ws.subscribe("gpu:a100").await;
    let epoch = sub["subscribe"]["epoch"].as_str().unwrap().to_owned();
    for n in 1..=3 {
        app.publish("gpu:a100", json!({"n": n})).await;
    }
    let mut last = 0;
    for _ in 0..3 {
        last = ws.push().await["pub"]["offset"].as_u64().unwrap();
    }
    assert_eq!(last, 3);
    drop(ws);
    for n in 4..=7 {
        app.publish("gpu:a100", json!({"n": n})).await;
    }
    let (mut ws, _) = app.connect("8", Tier::Professional).await;
    let r = ws
        .request(json!({"subscribe": {"channel": "gpu:a100", "recover": true, "offset": last, "epoch": epoch}}))
        .await;
    let s = &r["subscribe"];
    assert_eq!(s["was_recovering"], true, "{r}");
    assert_eq!(s["recovered"], true, "{r}");
    assert_eq!(offsets(s), vec![4, 5, 6, 7]);
    assert_eq!(s["publications"][0]["data"]["n"], 4);
    assert_eq!(s["offset"], 7);
    // And live publications continue from there, none repeated.
    app.publish("gpu:a100", json!({"n": 8})).await;
    assert_eq!(ws.push().await["pub"]["offset"], 8);
}

#[tokio::test]
async fn unrecoverable_positions_get_recovered_false_and_nothing() {
    let app = spawn_app_with(|s| s.bus.history_size = 5).await;
    for n in 1..=3 {
        app.publish("gpu:l40s", json!({"n": n})).await;
    }
    let (mut ws, _) = app.connect("8", Tier::Professional).await;
    // Another epoch: the stream restarted.
    let r = ws
        .request(json!({"subscribe": {"channel": "gpu:l40s", "recover": true, "offset": 1, "epoch": "stale"}}))
        .await;
    assert_eq!(r["subscribe"]["was_recovering"], true, "{r}");
    assert!(
        r["subscribe"].get("recovered").is_none(),
        "recovered: false is omitted: {r}"
    );
    assert!(offsets(&r["subscribe"]).is_empty());
    let epoch = r["subscribe"]["epoch"].as_str().unwrap().to_owned();
    ws.request(json!({"unsubscribe": {"channel": "gpu:l40s"}})).await;
    // Fell out of the history window: all or nothing, so nothing.
    for n in 4..=12 {
        app.publish("gpu:l40s", json!({"n": n})).await;
    }
    let r = ws
        .request(json!({"subscribe": {"channel": "gpu:l40s", "recover": true, "offset": 2, "epoch": epoch}}))
        .await;
    assert!(r["subscribe"].get("recovered").is_none(), "{r}");
    assert!(offsets(&r["subscribe"]).is_empty());
    assert_eq!(r["subscribe"]["offset"], 12);
}

#[tokio::test]
async fn server_side_subscriptions_recover_through_connect() {
    let app = spawn_app().await;
    let (mut ws, reply) = app.connect("42", Tier::Free).await;
    let epoch = reply["connect"]["subs"]["alerts:#42"]["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    app.publish("alerts:#42", json!({"alert": 1})).await;
    assert_eq!(ws.push().await["pub"]["offset"], 1);
    drop(ws);
    app.publish("alerts:#42", json!({"alert": 2})).await;
    app.publish("alerts:#42", json!({"alert": 3})).await;
    let mut ws = app.raw_ws().await;
    let r = ws
        .request(json!({"connect": {
            "token": app.token("42", Tier::Free),
            "subs": {"alerts:#42": {"recover": true, "offset": 1, "epoch": epoch}}
        }}))
        .await;
    let s = &r["connect"]["subs"]["alerts:#42"];
    assert_eq!(s["recovered"], true, "{r}");
    assert_eq!(offsets(s), vec![2, 3]);
    assert_eq!(s["publications"][1]["data"]["alert"], 3);
}

#[tokio::test]
async fn publications_racing_a_subscribe_are_neither_lost_nor_doubled() {
    let app = spawn_app().await;
    let publisher = {
        let http = app.http.clone();
        let url = app.url("/api/publish");
        tokio::spawn(async move {
            for n in 1..=300u64 {
                http.post(&url)
                    .header("X-API-Key", API_KEY)
                    .json(&json!({"channel": "gpu:race", "data": {"n": n}}))
                    .send()
                    .await
                    .unwrap();
            }
        })
    };
    let mut clients = Vec::new();
    for i in 0..10 {
        let (mut ws, _) = app.connect(&format!("r{i}"), Tier::Professional).await;
        let r = ws.subscribe("gpu:race").await;
        let start = r["subscribe"]["offset"].as_u64().unwrap_or(0);
        clients.push((ws, start));
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    publisher.await.unwrap();
    for (ws, start) in &mut clients {
        // Every offset after the subscribe position, exactly once, in order.
        for expected in *start + 1..=300 {
            assert_eq!(ws.push().await["pub"]["offset"], expected);
        }
    }
}
