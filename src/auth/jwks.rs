//! Keys from an identity provider's JWKS (`auth.jwks_url`): fetched at start and again when a
//! token names a key id the hub does not have, at most every `auth.jwks_min_refresh_s`, so a
//! provider that rotates its keys is followed without a restart, and a flood of tokens with
//! made-up key ids costs one fetch per interval.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};

/// One verification key: the key and the algorithm it verifies.
pub type VerifyingKey = (DecodingKey, Algorithm);

pub struct Jwks {
    url: String,
    client: reqwest::Client,
    min_refresh: Duration,
    keys: std::sync::RwLock<HashMap<String, VerifyingKey>>,
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
}

/// The algorithm a key verifies: the one it names, else the usual one for its type.
fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    if let Some(alg) = jwk.common.key_algorithm {
        return alg.to_string().parse().ok();
    }
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::OctetKeyPair(_) => Some(Algorithm::EdDSA),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Some(Algorithm::ES256),
            EllipticCurve::P384 => Some(Algorithm::ES384),
            _ => None,
        },
        // A shared secret is never published: refused (as are kinds added later).
        _ => None,
    }
}

/// The usable keys of a set, by key id (keys without an id, or of a kind the hub does not
/// verify, are left out).
pub fn parse(set: &JwkSet) -> HashMap<String, VerifyingKey> {
    set.keys
        .iter()
        .filter_map(|jwk| {
            let kid = jwk.common.key_id.clone()?;
            let alg = algorithm_of(jwk)?;
            let key = DecodingKey::from_jwk(jwk).ok()?;
            Some((kid, (key, alg)))
        })
        .collect()
}

impl Jwks {
    pub fn new(url: &str, min_refresh: Duration) -> Self {
        Self {
            url: url.to_owned(),
            client: crate::upstream::http_client(),
            min_refresh,
            keys: std::sync::RwLock::default(),
            last_fetch: tokio::sync::Mutex::new(None),
        }
    }

    pub fn key(&self, kid: &str) -> Option<VerifyingKey> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).get(kid).cloned()
    }

    /// Fetch the set again unless it was fetched within the minimum interval; whether it was.
    pub async fn refresh(&self) -> Result<bool, String> {
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|t| t.elapsed() < self.min_refresh) {
            return Ok(false);
        }
        *last = Some(Instant::now());
        let set: JwkSet = self
            .client
            .get(&self.url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("fetching the JWKS failed: {e}"))?
            .json()
            .await
            .map_err(|e| format!("the JWKS is not a key set: {e}"))?;
        let keys = parse(&set);
        tracing::info!(keys = keys.len(), "JWKS fetched");
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
        Ok(true)
    }
}
