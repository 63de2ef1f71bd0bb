//! The store against SQLite and PostgreSQL, each test on a fresh database.

use gpuscout_hub::config::DatabaseSettings;
use gpuscout_hub::store::Store;
use secrecy::SecretString;

async fn sqlite() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/nested/dir/store.db", dir.path().display());
    let store = Store::connect(&DatabaseSettings {
        url: SecretString::from(url),
        max_connections: 2,
    })
    .await
    .expect("sqlite store");
    store.migrate().await.unwrap();
    (store, dir)
}

/// A fresh PostgreSQL database, or `None` on a laptop without one (never under CI).
async fn postgres() -> Option<Store> {
    let url = crate::helpers::fresh_postgres_url().await?;
    let store = Store::connect(&DatabaseSettings {
        url: SecretString::from(url),
        max_connections: 2,
    })
    .await
    .unwrap();
    store.migrate().await.unwrap();
    Some(store)
}

async fn users_round_trip(store: &Store) {
    store.upsert_user("42", "free", 1).await.unwrap();
    assert_eq!(store.user_tier("42").await.unwrap().as_deref(), Some("free"));
    store.upsert_user("42", "enterprise", 2).await.unwrap();
    assert_eq!(store.user_tier("42").await.unwrap().as_deref(), Some("enterprise"));
    assert_eq!(store.user_tier("43").await.unwrap(), None);
    // Migrations are idempotent.
    store.migrate().await.unwrap();
    store.ping().await.unwrap();
}

async fn market_history_round_trip(store: &Store) {
    let a = serde_json::json!({"gpus_total": 10, "gpus_rented": 4, "gpus_available": 6, "utilisation": 0.4,
        "price_available": {"gpus": 6, "median": 0.35, "p10": 0.3, "p90": 0.5}, "price_rented": {"gpus": 4},
        "price_all": {"gpus": 10, "median": 0.4, "p10": 0.3, "p90": 0.6}});
    let rows = vec![("rtx-4090".to_owned(), a.clone()), ("h100-sxm".to_owned(), a)];
    store.insert_market_snapshots(60_000, "farm500", &rows).await.unwrap();
    store.insert_market_snapshots(120_000, "farm500", &rows).await.unwrap();
    // The same minute again is ignored.
    store.insert_market_snapshots(120_000, "farm500", &rows).await.unwrap();
    let points = store.market_history("rtx-4090", 0, 200_000).await.unwrap();
    assert_eq!(points.len(), 2);
    assert_eq!(points[0].ts_ms, 60_000);
    assert_eq!(points[1].gpus_available, 6);
    assert_eq!(points[1].price_available_median, Some(0.35));
    assert_eq!(points[1].price_rented_median, None);
    let all = (
        points[1].price_all_median,
        points[1].price_all_p10,
        points[1].price_all_p90,
    );
    assert_eq!(all, (Some(0.4), Some(0.3), Some(0.6)));
    assert!(
        store
            .market_history("rtx-4090", 70_000, 80_000)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn advisor_round_trip(store: &Store) {
    use gpuscout_hub::store::advisor::{MessageRole, MessageStatus, NewMessage, Outcome, Usage};
    store
        .create_conversation("c1", "u1", "RTX 4090 pricing", 1_000)
        .await
        .unwrap();
    store
        .create_conversation("c2", "u2", "other user", 2_000)
        .await
        .unwrap();
    let question = |id: &'static str, text: &'static str| NewMessage {
        id,
        role: MessageRole::User,
        content: text,
        status: MessageStatus::Complete,
        provider: None,
        model: None,
    };
    let answer = |id: &'static str| NewMessage {
        id,
        role: MessageRole::Assistant,
        content: "",
        status: MessageStatus::Streaming,
        provider: Some("anthropic"),
        model: Some("claude-x"),
    };
    store
        .append_messages("c1", None, &[question("q1", "price?"), answer("a1")], 1_000)
        .await
        .unwrap();
    store
        .finish_message(
            "a1",
            &Outcome {
                status: MessageStatus::Complete,
                content: "median $0.38/h",
                input_tokens: 120,
                output_tokens: 9,
                stop_reason: Some("end_turn"),
                error: None,
            },
        )
        .await
        .unwrap();
    // Same millisecond: the order of insertion still holds.
    store
        .append_messages("c1", None, &[question("q2", "and now?"), answer("a2")], 3_000)
        .await
        .unwrap();
    let messages = store.messages("c1").await.unwrap();
    let ids: Vec<&str> = messages.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["q1", "a1", "q2", "a2"]);
    assert_eq!(messages[1].content, "median $0.38/h");
    assert_eq!(messages[1].input_tokens, Some(120));
    assert_eq!(messages[1].stop_reason.as_deref(), Some("end_turn"));
    assert_eq!(messages[0].provider, None);
    assert_eq!(messages[3].status, MessageStatus::Streaming);
    let recent = store.recent_messages("c1", 3).await.unwrap();
    let ids: Vec<&str> = recent.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["a1", "q2", "a2"], "the last three, oldest first");
    assert_eq!(store.message_owner("a2").await.unwrap().as_deref(), Some("u1"));
    assert_eq!(store.message_owner("nope").await.unwrap(), None);
    let list = store.conversations("u1", 10).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].updated_at_ms, 3_000);
    assert_eq!(store.conversation("c2").await.unwrap().unwrap().user_id, "u2");
    assert_eq!(store.fail_unfinished_messages().await.unwrap(), 1);
    assert_eq!(
        store.message("a2").await.unwrap().unwrap().status,
        MessageStatus::Failed
    );

    // Quotas: at most `limit` messages a day, tokens added up.
    assert_eq!(store.advisor_usage("u1", 20_000).await.unwrap(), Usage::default());
    assert!(store.take_advisor_message("u1", 20_000, 2).await.unwrap());
    assert!(store.take_advisor_message("u1", 20_000, 2).await.unwrap());
    assert!(!store.take_advisor_message("u1", 20_000, 2).await.unwrap());
    assert!(store.take_advisor_message("u1", 20_001, 2).await.unwrap(), "a new day");
    assert!(!store.take_advisor_message("u3", 20_000, 0).await.unwrap());
    store.add_advisor_tokens("u1", 20_000, 100, 20).await.unwrap();
    store.add_advisor_tokens("u1", 20_000, 50, 5).await.unwrap();
    store.add_advisor_tokens("u4", 20_000, 7, 1).await.unwrap();
    assert_eq!(
        store.advisor_usage("u1", 20_000).await.unwrap(),
        Usage {
            messages: 2,
            input_tokens: 150,
            output_tokens: 25
        }
    );
    store.return_advisor_message("u1", 20_000).await.unwrap();
    assert_eq!(store.advisor_usage("u1", 20_000).await.unwrap().messages, 1);
    assert_eq!(store.advisor_usage("u4", 20_000).await.unwrap().messages, 0);
}

/// Questions asked at the same time are all stored (SQLite has one writer at a time).
async fn concurrent_appends(store: &Store) {
    use gpuscout_hub::store::advisor::{MessageRole, MessageStatus, NewMessage};
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let conversation = format!("busy-{}", i % 4);
            let _ = store.create_conversation(&conversation, "u9", "t", 1).await;
            let (q, a) = (format!("cq{i}"), format!("ca{i}"));
            let message = |id, role| NewMessage {
                id,
                role,
                content: "x",
                status: MessageStatus::Complete,
                provider: None,
                model: None,
            };
            store
                .append_messages(
                    &conversation,
                    None,
                    &[message(&q, MessageRole::User), message(&a, MessageRole::Assistant)],
                    2,
                )
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().expect("every append succeeds");
    }
    for c in 0..4 {
        let messages = store.messages(&format!("busy-{c}")).await.unwrap();
        assert_eq!(messages.len(), 20);
        // Each question is followed by its answer.
        for pair in messages.chunks(2) {
            assert_eq!(pair[0].id[2..], pair[1].id[2..]);
        }
    }
}

/// Concurrent questions cannot take more than the limit.
async fn quota_is_atomic(store: &Store) {
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.take_advisor_message("busy", 1, 5).await.unwrap()
        }));
    }
    let mut taken = 0;
    for t in tasks {
        taken += t.await.unwrap() as u32;
    }
    assert_eq!(taken, 5);
}

/// A delivery is attempted once per read: a second claim of the same read (an attempt that ended
/// while the outbox was being read again) is refused, as is one after its attempt was recorded;
/// a delivered row is never folded into a digest.
async fn deliveries_are_claimed_once(store: &Store) {
    use gpuscout_hub::store::alerts::{Attempt, FiringRecord, OutboxItem};
    let payload = serde_json::json!({"message": "RTX 4090 below $0.30"});
    let firing = FiringRecord {
        rule_id: "r1",
        user_id: "u1",
        idempotency_key: "r1:1",
        payload: &payload,
        fired_at_ms: 1_000,
        crossings: 1,
    };
    let item = OutboxItem::new("webhook", "https://example.com/hook", "json", "whsec_x", None);
    store.record_firing(&firing, &[item]).await.unwrap().expect("recorded");
    let read = store.due_deliveries(2_000, 10).await.unwrap();
    assert_eq!(read.len(), 1);
    let d = &read[0];
    assert!(store.claim_delivery(d, 2_000, 302_000).await.unwrap());
    assert!(!store.claim_delivery(d, 2_000, 302_000).await.unwrap(), "claimed twice");
    assert!(store.due_deliveries(2_000, 10).await.unwrap().is_empty(), "leased");
    // The attempt is recorded: pending again, due at once.
    let attempt = |n, status| Attempt {
        delivery_id: &d.id,
        attempt: n,
        status_code: Some(503),
        error: None,
        at_ms: 2_100,
        status,
        next_attempt_at_ms: 2_100,
    };
    store.record_attempt(&attempt(1, "pending")).await.unwrap();
    assert!(!store.claim_delivery(d, 3_000, 303_000).await.unwrap(), "a stale read");
    let fresh = store.due_deliveries(3_000, 10).await.unwrap();
    assert_eq!(fresh[0].attempts, 1);
    assert!(store.claim_delivery(&fresh[0], 3_000, 303_000).await.unwrap());
    store.record_attempt(&attempt(2, "delivered")).await.unwrap();
    store.fold_into_digest(&d.id, 9_000).await.unwrap();
    let states = store.deliveries_of(&d.event_id).await.unwrap();
    let delivered = ("webhook".to_owned(), "json".to_owned(), "delivered".to_owned());
    assert_eq!(states, vec![delivered], "a delivered row is not folded into a digest");
    assert!(store.due_deliveries(i64::MAX, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn sqlite_store() {
    let (store, _dir) = sqlite().await;
    users_round_trip(&store).await;
    market_history_round_trip(&store).await;
    advisor_round_trip(&store).await;
    quota_is_atomic(&store).await;
    concurrent_appends(&store).await;
    deliveries_are_claimed_once(&store).await;
}

#[tokio::test]
async fn postgres_store() {
    if let Some(store) = postgres().await {
        users_round_trip(&store).await;
        market_history_round_trip(&store).await;
        advisor_round_trip(&store).await;
        quota_is_atomic(&store).await;
        concurrent_appends(&store).await;
        deliveries_are_claimed_once(&store).await;
    }
}
