//! Tokens from an identity provider: verified with the keys its JWKS publishes (by `kid`), the
//! tier read through a JSON pointer, and a key rotation followed without a restart.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gpuscout_hub::tier::Tier;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::helpers::*;

// Two Ed25519 keys made for this test (openssl genpkey -algorithm ed25519), with their public
// halves in JWK form.
const K1_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEILmV+tqF3N5LOv0x69aOPV0G9DJSnmOdXbdW5coS+xFf\n-----END PRIVATE KEY-----\n";
const K1_X: &str = "aQMAFK69BEH1wUy3mkNXgSMUsjL2GQgRyWOkIO_cIpQ";
const K2_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIPhtkAsJghnVhsTD1PqVdhAXRLSM5MWXzjdijXoLrHqo\n-----END PRIVATE KEY-----\n";
const K2_X: &str = "HaKWFkcTTZfcnAqJ9bSE_4Nd_mkx5cO3lPX65cRS51Q";

fn jwk(kid: &str, x: &str) -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"})
}

/// A token as the provider signs it: its key id, the tier nested in `app_metadata`.
fn provider_token(kid: &str, pem: &str, user: &str, tier: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"sub": user, "exp": now + 600, "iss": "https://id.example", "jti": format!("j-{user}-{kid}"),
                        "app_metadata": {"tier": tier}});
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_pem(pem.as_bytes()).unwrap()).unwrap()
}

type Served = Arc<Mutex<(Value, usize)>>;

/// The provider's JWKS endpoint, counting fetches.
async fn jwks_server(keys: Vec<Value>) -> (String, Served) {
    let served: Served = Arc::new(Mutex::new((json!({"keys": keys}), 0)));
    let state = served.clone();
    let app = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || {
            let state = state.clone();
            async move {
                let mut s = state.lock().unwrap();
                s.1 += 1;
                axum::Json(s.0.clone())
            }
        }),
    );
    (
        format!("{}/.well-known/jwks.json", crate::common::serve(app).await),
        served,
    )
}

async fn connects(app: &TestApp, token: &str) -> Result<Value, u16> {
    let mut ws = app.raw_ws().await;
    ws.send(json!({"connect": {"token": token}})).await;
    match ws.next_within(Duration::from_secs(3)).await {
        Some(Incoming::Json(v)) if v.get("connect").is_some() => Ok(v),
        Some(Incoming::Close(code, _)) => Err(code),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn provider_tokens_are_verified_with_its_rotating_keys() {
    let (url, served) = jwks_server(vec![jwk("k1", K1_X)]).await;
    let app = spawn_app_with(move |s| {
        s.auth.jwks_url = url;
        s.auth.jwks_min_refresh_s = 1;
        s.auth.issuer = "https://id.example".into();
        s.auth.tier_claim = "/app_metadata/tier".into();
    })
    .await;
    assert_eq!(served.lock().unwrap().1, 1, "fetched at start");

    // A token of the published key: the tier comes from app_metadata (professional sees offers).
    let token = provider_token("k1", K1_PEM, "ada", "professional");
    connects(&app, &token).await.expect("k1 verifies");
    let mut ws = app.raw_ws().await;
    ws.request(json!({"connect": {"token": token}})).await;
    assert!(
        ws.subscribe("offers:rtx-4090").await.get("subscribe").is_some(),
        "professional tier"
    );
    let (status, _) = crate::alerts::request(&app, "GET", "/api/v1/alerts/rules", &token, None).await;
    assert_eq!(status, 200);

    // The provider signs with a key it has not published yet: refused.
    let rotated = provider_token("k2", K2_PEM, "ada", "individual");
    assert_eq!(connects(&app, &rotated).await.err(), Some(3500));
    // A key signed by k2 but naming k1: refused by the signature.
    let forged = provider_token("k1", K2_PEM, "eve", "enterprise");
    assert_eq!(connects(&app, &forged).await.err(), Some(3500));

    // It publishes the new key: after the minimum interval the hub fetches it on the unknown kid.
    served.lock().unwrap().0 = json!({"keys": [jwk("k1", K1_X), jwk("k2", K2_X)]});
    tokio::time::sleep(Duration::from_millis(1100)).await;
    connects(&app, &rotated)
        .await
        .expect("k2 verifies after the rotation, without a restart");

    // Made-up key ids cost one fetch per interval, not one each.
    let before = served.lock().unwrap().1;
    for n in 0..20 {
        let bogus = provider_token(&format!("x{n}"), K1_PEM, "mallory", "free");
        assert_eq!(connects(&app, &bogus).await.err(), Some(3500));
    }
    let fetched = served.lock().unwrap().1 - before;
    assert!(fetched <= 2, "{fetched} fetches for 20 unknown key ids");

    // The hub's own tokens (e.g. exchanged for API keys) still verify with its secret.
    connects(&app, &app.token("own", Tier::Free)).await.expect("own token");
}
