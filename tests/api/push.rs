//! Web Push subscriptions: the browser's `PushSubscription` JSON stored per user, checked, listed
//! and deleted; on SQLite and PostgreSQL.

use base64::Engine;
use gpuscout_hub::tier::Tier;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::helpers::*;

async fn push_app(database_url: Option<String>) -> TestApp {
    let (public, private) = gpuscout_hub::alerts::vapid::new_key_pair();
    spawn_app_with(move |s| {
        s.push.vapid_public_key = public;
        s.push.vapid_private_key = private.into();
        s.push.subject = "mailto:ops@example.com".into();
        if let Some(url) = database_url {
            s.database.url = SecretString::from(url);
        }
    })
    .await
}

/// A subscription as a browser makes it: a real P-256 public key and a 16-byte secret.
fn browser_subscription(endpoint: &str) -> Value {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (public, _) = gpuscout_hub::alerts::vapid::new_key_pair();
    json!({"endpoint": endpoint, "expirationTime": null,
           "keys": {"p256dh": public, "auth": b64.encode(rand::random::<[u8; 16]>())}})
}

async fn call(app: &TestApp, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    bearer_request(&app.http, method, &app.url(path), token, body).await
}

async fn subscriptions_are_stored_per_user(database_url: Option<String>) {
    let app = push_app(database_url).await;
    let (alice, bob) = (app.token("alice", Tier::Free), app.token("bob", Tier::Free));
    let endpoint = "https://fcm.googleapis.com/fcm/send/abc123";
    let (status, created) = call(
        &app,
        "POST",
        "/api/v1/push/subscriptions",
        &alice,
        Some(browser_subscription(endpoint)),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["endpoint"], endpoint);
    assert!(
        created.get("p256dh").is_none() && created.get("auth").is_none(),
        "keys are not shown back"
    );
    // The same endpoint again (the browser subscribed anew): still one.
    let (status, again) = call(
        &app,
        "POST",
        "/api/v1/push/subscriptions",
        &alice,
        Some(browser_subscription(endpoint)),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(again["id"], created["id"]);
    let (_, listed) = call(&app, "GET", "/api/v1/push/subscriptions", &alice, None).await;
    assert_eq!(listed["subscriptions"].as_array().unwrap().len(), 1, "{listed}");
    let (_, theirs) = call(&app, "GET", "/api/v1/push/subscriptions", &bob, None).await;
    assert_eq!(theirs["subscriptions"], json!([]));
    let path = format!("/api/v1/push/subscriptions/{}", created["id"].as_str().unwrap());
    assert_eq!(call(&app, "DELETE", &path, &bob, None).await.0, 404, "not bob's");
    assert_eq!(call(&app, "DELETE", &path, &alice, None).await.0, 204);
    let (_, listed) = call(&app, "GET", "/api/v1/push/subscriptions", &alice, None).await;
    assert_eq!(listed["subscriptions"], json!([]));
}

#[tokio::test]
async fn subscriptions_are_stored_per_user_on_sqlite() {
    subscriptions_are_stored_per_user(None).await;
}

#[tokio::test]
async fn subscriptions_are_stored_per_user_on_postgres() {
    let Some(url) = fresh_postgres_url().await else { return };
    subscriptions_are_stored_per_user(Some(url)).await;
}

#[tokio::test]
async fn bad_subscriptions_get_clear_422s_and_push_off_is_404() {
    let app = push_app(None).await;
    let token = app.token("carol", Tier::Free);
    let good = browser_subscription("https://updates.push.services.mozilla.com/wpush/v2/x");
    let mut cases = Vec::new();
    for (field, value, says) in [
        ("endpoint", json!("http://push.example.com/x"), "https"),
        ("endpoint", json!("https://127.0.0.1/x"), "private"),
        ("p256dh", json!("AAAA"), "keys.p256dh"),
        ("auth", json!("not base64 !"), "keys.auth"),
    ] {
        let mut body = good.clone();
        if field == "endpoint" {
            body["endpoint"] = value;
        } else {
            body["keys"][field] = value;
        }
        cases.push((body, says));
    }
    cases.push((json!({"endpoint": "https://x.example/"}), "PushSubscription"));
    for (body, says) in cases {
        let (status, v) = call(&app, "POST", "/api/v1/push/subscriptions", &token, Some(body)).await;
        assert_eq!(status, 422, "{v}");
        assert!(v["error"]["message"].as_str().unwrap().contains(says), "{says}: {v}");
    }
    let off = spawn_app().await;
    let token = off.token("carol", Tier::Free);
    assert_eq!(
        call(&off, "POST", "/api/v1/push/subscriptions", &token, Some(good))
            .await
            .0,
        404
    );
}
