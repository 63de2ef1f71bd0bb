use gpuscout_hub::auth::Claims;
use gpuscout_hub::tier::Tier;
use jsonwebtoken::{EncodingKey, Header};
use secrecy::ExposeSecret;
use serde_json::json;

use crate::helpers::*;

fn sign(app: &TestApp, claims: &Claims) -> String {
    let key = EncodingKey::from_secret(app.settings.auth.hmac_secret.expose_secret().as_bytes());
    jsonwebtoken::encode(&Header::default(), claims, &key).unwrap()
}

fn now() -> u64 {
    gpuscout_hub::clock::unix_now_s()
}

#[tokio::test]
async fn connect_reply_carries_client_ping_and_server_side_subscriptions() {
    let app = spawn_app().await;
    let (_ws, reply) = app.connect("42", Tier::Professional).await;
    let c = &reply["connect"];
    assert!(c["client"].as_str().is_some_and(|s| s.len() >= 32), "{reply}");
    assert!(c["version"].is_string());
    assert_eq!(c["ping"], 25);
    assert_eq!(c["pong"], true);
    assert_eq!(c["expires"], true);
    assert!(c["ttl"].as_u64().is_some_and(|t| t > 3500 && t <= 3600));
    for ch in ["alerts:#42", "advisor:#42"] {
        assert_eq!(c["subs"][ch]["recoverable"], true, "{reply}");
        assert!(c["subs"][ch]["epoch"].is_string());
    }
}

#[tokio::test]
async fn missing_token_is_unauthorized() {
    let app = spawn_app().await;
    let mut ws = app.raw_ws().await;
    let reply = ws.request(json!({"connect": {}})).await;
    assert_eq!(reply["error"]["code"], 101, "{reply}");
}

#[tokio::test]
async fn forged_token_closes_with_invalid_token() {
    let app = spawn_app().await;
    let mut token = app.token("42", Tier::Enterprise);
    // Change a character of the signature.
    let last = token.pop().unwrap();
    token.push(if last == 'A' { 'B' } else { 'A' });
    let mut ws = app.raw_ws().await;
    ws.send(json!({"connect": {"token": token}})).await;
    assert_eq!(ws.closed().await, 3500);

    // Signed with another secret.
    let claims = Claims {
        sub: "42".into(),
        tier: Tier::Enterprise,
        exp: now() + 600,
        iat: None,
        jti: None,
        scopes: None,
        iss: None,
        aud: None,
    };
    let other = jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(b"another-secret-another-secret-xx"),
    )
    .unwrap();
    let mut ws = app.raw_ws().await;
    ws.send(json!({"connect": {"token": other}})).await;
    assert_eq!(ws.closed().await, 3500);
}

#[tokio::test]
async fn expired_token_gets_token_expired() {
    let app = spawn_app().await;
    let claims = Claims {
        sub: "42".into(),
        tier: Tier::Free,
        exp: now() - 3600,
        iat: None,
        jti: None,
        scopes: None,
        iss: None,
        aud: None,
    };
    let mut ws = app.raw_ws().await;
    let reply = ws.request(json!({"connect": {"token": sign(&app, &claims)}})).await;
    assert_eq!(reply["error"]["code"], 109, "{reply}");
}

#[tokio::test]
async fn alg_none_is_refused() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let app = spawn_app().await;
    let header = b64.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let body = b64.encode(json!({"sub": "42", "tier": "enterprise", "exp": now() + 600}).to_string());
    for token in [format!("{header}.{body}."), format!("{header}.{body}")] {
        let mut ws = app.raw_ws().await;
        ws.send(json!({"connect": {"token": token}})).await;
        assert_eq!(ws.closed().await, 3500);
    }
}

#[tokio::test]
async fn refresh_extends_the_session_and_keeps_the_client_id() {
    let app = spawn_app().await;
    let (mut ws, reply) = app.connect("42", Tier::Individual).await;
    let client = reply["connect"]["client"].clone();
    let token = app.token("42", Tier::Individual);
    let r = ws.request(json!({"refresh": {"token": token}})).await;
    assert_eq!(r["refresh"]["client"], client, "{r}");
    assert_eq!(r["refresh"]["expires"], true);
    // A token of another user cannot take over the connection.
    let other = app.token("43", Tier::Individual);
    ws.send(json!({"refresh": {"token": other}})).await;
    assert_eq!(ws.closed().await, 3500);
}

#[tokio::test]
async fn connection_limit_per_user() {
    let app = spawn_app().await;
    let limit = app.settings.tier(Tier::Free).connections_per_user as usize;
    let mut held = Vec::new();
    for _ in 0..limit {
        held.push(app.connect("9", Tier::Free).await.0);
    }
    let mut extra = app.raw_ws().await;
    extra
        .send(json!({"connect": {"token": app.token("9", Tier::Free)}}))
        .await;
    assert_eq!(extra.closed().await, 3504);
    // Another user is not affected.
    app.connect("10", Tier::Free).await;
    // Closing one frees a slot.
    drop(held.pop());
    let mut ok = false;
    for _ in 0..50 {
        let mut ws = app.raw_ws().await;
        let r = ws.send(json!({"connect": {"token": app.token("9", Tier::Free)}})).await;
        if let Incoming::Json(v) = ws.next().await
            && v["id"] == r
            && v.get("connect").is_some()
        {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ok, "a freed slot can be used again");
}

#[tokio::test]
async fn a_token_inside_the_leeway_lives_through_the_leeway() {
    let app = spawn_app().await;
    // Expired 2 s ago, within the 5 s leeway: accepted, and not dropped at once.
    let claims = Claims {
        sub: "42".into(),
        tier: Tier::Free,
        exp: now() - 2,
        iat: None,
        jti: None,
        scopes: None,
        iss: None,
        aud: None,
    };
    let mut ws = app.raw_ws().await;
    let reply = ws.request(json!({"connect": {"token": sign(&app, &claims)}})).await;
    assert!(reply.get("connect").is_some(), "{reply}");
    assert!(
        ws.next_within(std::time::Duration::from_millis(1500)).await.is_none(),
        "still open"
    );
    // It does close when the leeway is over.
    assert_eq!(ws.closed().await, 3005);
}

#[tokio::test]
async fn a_revoked_token_closes_its_connections_and_cannot_connect_again() {
    let app = spawn_app().await;
    let token = app.token("rev", Tier::Individual);
    let other = app.token("rev", Tier::Individual);
    let mut ws = app.raw_ws().await;
    assert!(
        ws.request(json!({"connect": {"token": token}}))
            .await
            .get("connect")
            .is_some()
    );
    let mut kept = app.raw_ws().await;
    assert!(
        kept.request(json!({"connect": {"token": other}}))
            .await
            .get("connect")
            .is_some()
    );

    revoke(&app, &token).await;
    assert_eq!(ws.closed().await, 3500);
    // The same user's other token is untouched.
    assert!(kept.next_within(std::time::Duration::from_millis(300)).await.is_none());
    // Connecting again with the revoked token: refused.
    let mut again = app.raw_ws().await;
    again.send(json!({"connect": {"token": token}})).await;
    assert_eq!(again.closed().await, 3500);
    // A bad request names what is missing.
    let bad = app.api("revoke_token", json!({"expire_at": unix_now() + 60})).await;
    assert_eq!(bad["error"]["code"], 107, "{bad}");
}

/// Revoke `token` for an hour through the server API.
async fn revoke(app: &TestApp, token: &str) {
    let r = app
        .api(
            "revoke_token",
            json!({"uid": jti_of(token), "expire_at": unix_now() + 3600}),
        )
        .await;
    assert_eq!(r, json!({"result": {}}));
}

fn unix_now() -> u64 {
    gpuscout_hub::clock::unix_now_s()
}

/// A revoked token gets 401 on REST as on the socket, and stays revoked after the node restarts
/// on the same database.
async fn revocation_reaches_rest_and_survives_a_restart(database_url: String) {
    let url = database_url.clone();
    let mut app = spawn_app_with(move |s| s.database.url = secrecy::SecretString::from(url)).await;
    let token = app.token("rev", Tier::Professional);
    let other = app.token("rev", Tier::Professional);
    let rules = |app: &TestApp, token: &str| app.http.get(app.url("/api/v1/alerts/rules")).bearer_auth(token).send();
    assert_eq!(rules(&app, &token).await.unwrap().status(), 200);
    revoke(&app, &token).await;
    let refused = rules(&app, &token).await.unwrap();
    assert_eq!(refused.status(), 401);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["message"], "token revoked", "{body}");
    assert_eq!(rules(&app, &other).await.unwrap().status(), 200);
    app.stop().await.unwrap();

    let restarted = spawn_app_with(move |s| s.database.url = secrecy::SecretString::from(database_url)).await;
    assert_eq!(rules(&restarted, &token).await.unwrap().status(), 401);
    assert_eq!(rules(&restarted, &other).await.unwrap().status(), 200);
    let mut again = restarted.raw_ws().await;
    again.send(json!({"connect": {"token": token}})).await;
    assert_eq!(again.closed().await, 3500);
}

#[tokio::test]
async fn revocation_reaches_rest_and_survives_a_restart_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    revocation_reaches_rest_and_survives_a_restart(format!("sqlite://{}/hub.db", dir.path().display())).await;
}

#[tokio::test]
async fn revocation_reaches_rest_and_survives_a_restart_on_postgres() {
    let Some(url) = fresh_postgres_url().await else { return };
    revocation_reaches_rest_and_survives_a_restart(url).await;
}
