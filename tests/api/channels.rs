use gpuscout_hub::tier::Tier;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn free_tier_gets_the_minute_summary_only() {
    let app = spawn_app().await;
    let (mut ws, _) = app.connect("1", Tier::Free).await;
    let denied = ws.subscribe("market:summary").await;
    assert_eq!(denied["error"]["code"], 103, "{denied}");
    let ok = ws.subscribe("market:summary.1m").await;
    assert!(ok.get("subscribe").is_some(), "{ok}");
    assert_eq!(ok["subscribe"]["recoverable"], true);
    assert_eq!(ok["subscribe"]["positioned"], true);
    assert!(ok["subscribe"]["epoch"].is_string());
    assert_eq!(ws.subscribe("sources:status").await["subscribe"]["recoverable"], true);
    assert_eq!(ws.subscribe("gpu:rtx-4090").await["error"]["code"], 103);
}

#[tokio::test]
async fn tiers_follow_the_channel_table() {
    let app = spawn_app().await;
    let cases = [
        (Tier::Individual, "market:summary", None),
        (Tier::Individual, "gpu:rtx-4090", None),
        (Tier::Individual, "offers:rtx-4090", Some(103)),
        (Tier::Professional, "offers:rtx-4090", None),
        (Tier::Professional, "offers:all", Some(103)),
        (Tier::Enterprise, "offers:all", None),
        (Tier::Enterprise, "nowhere:at-all", Some(102)),
        (Tier::Enterprise, "gpu:Not A Slug", Some(102)),
    ];
    for (i, (tier, channel, error)) in cases.into_iter().enumerate() {
        let (mut ws, _) = app.connect(&format!("u{i}"), tier).await;
        let r = ws.subscribe(channel).await;
        match error {
            None => assert!(r.get("subscribe").is_some(), "{tier} {channel}: {r}"),
            Some(code) => assert_eq!(r["error"]["code"], code, "{tier} {channel}: {r}"),
        }
    }
}

#[tokio::test]
async fn personal_channels_belong_to_their_user() {
    let app = spawn_app().await;
    let (mut ws, _) = app.connect("7", Tier::Enterprise).await;
    assert_eq!(ws.subscribe("alerts:#42").await["error"]["code"], 103);
    assert_eq!(ws.subscribe("advisor:#42").await["error"]["code"], 103);
    // Its own are server-side subscriptions already.
    assert_eq!(ws.subscribe("alerts:#7").await["error"]["code"], 105);

    // A publication to user 42's alerts reaches 42 and nobody else.
    let (mut owner, _) = app.connect("42", Tier::Free).await;
    app.publish("alerts:#42", json!({"alert": "price"})).await;
    let push = owner.push().await;
    assert_eq!(push["channel"], "alerts:#42");
    assert_eq!(push["pub"]["data"]["alert"], "price");
    assert!(ws.next_within(std::time::Duration::from_millis(300)).await.is_none());
}

#[tokio::test]
async fn channel_limits_come_from_the_tier() {
    let app = spawn_app_with(|s| {
        let t = s.tiers.get_mut(&Tier::Individual).unwrap();
        t.max_gpu_channels = 2;
        t.channels_per_connection = 6;
    })
    .await;
    let (mut ws, _) = app.connect("5", Tier::Individual).await;
    assert!(ws.subscribe("gpu:a").await.get("subscribe").is_some());
    assert!(ws.subscribe("gpu:b").await.get("subscribe").is_some());
    assert_eq!(ws.subscribe("gpu:c").await["error"]["code"], 106);
    // Three personal (alerts, advisor, portfolio) + two gpu + one more = six.
    assert!(ws.subscribe("market:summary").await.get("subscribe").is_some());
    assert_eq!(ws.subscribe("sources:status").await["error"]["code"], 106);
    // Unsubscribing frees a slot.
    let r = ws.request(json!({"unsubscribe": {"channel": "gpu:a"}})).await;
    assert!(r.get("unsubscribe").is_some(), "{r}");
    assert!(ws.subscribe("sources:status").await.get("subscribe").is_some());
}

#[tokio::test]
async fn the_gpu_channel_limit_holds_across_a_users_connections() {
    let app = spawn_app_with(|s| s.tiers.get_mut(&Tier::Individual).unwrap().max_gpu_channels = 3).await;
    let (mut a, _) = app.connect("7", Tier::Individual).await;
    let (mut b, _) = app.connect("7", Tier::Individual).await;
    assert!(a.subscribe("gpu:a").await.get("subscribe").is_some());
    assert!(a.subscribe("gpu:b").await.get("subscribe").is_some());
    assert!(b.subscribe("gpu:c").await.get("subscribe").is_some());
    // A fourth distinct one, on either connection: refused.
    assert_eq!(b.subscribe("gpu:d").await["error"]["code"], 106);
    assert_eq!(a.subscribe("gpu:d").await["error"]["code"], 106);
    // One the user already holds costs nothing more.
    assert!(b.subscribe("gpu:a").await.get("subscribe").is_some());
    // Another user is not affected.
    let (mut other, _) = app.connect("8", Tier::Individual).await;
    assert!(other.subscribe("gpu:d").await.get("subscribe").is_some());
    // A channel is freed when no connection of the user holds it any more.
    let r = a.request(json!({"unsubscribe": {"channel": "gpu:a"}})).await;
    assert!(r.get("unsubscribe").is_some(), "{r}");
    assert_eq!(a.subscribe("gpu:d").await["error"]["code"], 106, "b still holds gpu:a");
    drop(b);
    let started = std::time::Instant::now();
    loop {
        let r = a.subscribe("gpu:d").await;
        if r.get("subscribe").is_some() {
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{r}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn snapshot_then_deltas_reproduce_the_hubs_checksums() {
    use gpuscout_hub::market::feed::{apply_delta, checksum_of};
    let app = spawn_app_with(|s| {
        s.ingest.simulated.enabled = true;
        s.ingest.simulated.poll_interval_ms = 100;
        s.ingest.simulated.seed = 3;
    })
    .await;
    let (mut ws, _) = app.connect("1", Tier::Individual).await;
    let r = ws.subscribe("market:summary").await;
    let data = &r["subscribe"]["data"];
    assert_eq!(data["type"], "snapshot", "{r}");
    assert_eq!(data["channel"], "market:summary");
    let mut items = data["items"].as_object().cloned().unwrap_or_default();
    assert_eq!(checksum_of(&items) as u64, data["checksum"].as_u64().unwrap());
    let mut seq = data["seq"].as_u64().unwrap();
    // Deltas flow, labelled, each continuing the last and checksummed.
    let mut applied = 0;
    while applied < 5 {
        let push = ws.push().await;
        assert_eq!(push["channel"], "market:summary");
        let delta = &push["pub"]["data"];
        assert_eq!(delta["source"], "simulated");
        assert_eq!(delta["type"], "delta");
        if delta["seq"].as_u64().unwrap() <= seq {
            continue; // already in the snapshot
        }
        assert_eq!(delta["prev_seq"].as_u64().unwrap(), seq, "no gap");
        apply_delta(&mut items, &delta["changes"]);
        assert_eq!(
            checksum_of(&items) as u64,
            delta["checksum"].as_u64().unwrap(),
            "checksum after seq {seq}"
        );
        seq = delta["seq"].as_u64().unwrap();
        applied += 1;
    }
    assert_eq!(items.len(), 88, "the 88 seed models");
    let rtx = &items["rtx-4090"];
    assert!(rtx["gpus_total"].as_u64().unwrap() > 4000);
    assert!(rtx["price_available"]["median"].as_f64().unwrap() > 0.0);
}
