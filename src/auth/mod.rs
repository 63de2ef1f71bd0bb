//! Authentication: connection JWTs (verified and, in development, minted) and the comparison of
//! server API keys. Never talks to sockets: callers turn its errors into protocol codes. What a
//! verified user may do is [`crate::tier`]'s business.

pub mod jwks;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use crate::channels::valid_user_id;
use crate::clock::unix_now_s;
use crate::config::{AuthSettings, JwtAlgorithm};
use crate::tier::Tier;

/// The longest a token may still have to live: an `exp` beyond it is refused (no deadline is
/// computed from an absurd one).
pub const MAX_LIFETIME_S: u64 = 10 * 365 * 24 * 3600;

/// Claims of a connection token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// User id; appears in personal channels (`alerts:#<sub>`).
    pub sub: String,
    pub tier: Tier,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// What an API key's token may do (`subscribe`, `market:read`, `alerts:read`,
    /// `alerts:write`, `advisor`); absent: a user's own token, which may do everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// One audience or a list of them (RFC 7519 allows both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<serde_json::Value>,
}

/// The scopes an API key may carry.
pub const SCOPES: [&str; 5] = ["subscribe", "market:read", "alerts:read", "alerts:write", "advisor"];

impl Claims {
    /// Whether this token may do what `scope` names (a user's own token may do everything).
    pub fn allows(&self, scope: &str) -> bool {
        self.scopes.as_ref().is_none_or(|s| s.iter().any(|x| x == scope))
    }

    /// Whether this token comes from an API key (it carries scopes).
    pub fn from_key(&self) -> bool {
        self.scopes.is_some()
    }
}

/// The key id of the tokens this hub mints (so that with a JWKS they are still told apart and
/// verified with the hub's own secret).
pub const OWN_KID: &str = "gpuscout-hub";

/// The `jti` every token exchanged for API key `key_id` carries: revoking it revokes them all.
pub fn key_jti(key_id: &str) -> String {
    format!("key-{key_id}")
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("tokens can only be minted with an HS256 secret")]
    CannotMint,
    /// A JWKS key id the hub does not have (yet: the set may have rotated).
    #[error("invalid token: unknown key id `{0}`")]
    UnknownKey(String),
}

/// Verifies (and, with an HS256 secret, mints) connection tokens.
pub struct TokenVerifier {
    decoding: DecodingKey,
    encoding: Option<EncodingKey>,
    validation: Validation,
    require_jti: bool,
    /// What minted tokens carry as `iss` and `aud` (the ones this hub requires).
    issuer: Option<String>,
    audience: Option<String>,
    /// With `auth.jwks_url`: the identity provider's keys, by key id.
    jwks: Option<jwks::Jwks>,
    /// Where the tier is: a claim name, or a JSON pointer into the claims (`/app_metadata/tier`).
    tier_claim: String,
}

impl TokenVerifier {
    pub fn new(settings: &AuthSettings) -> Result<Self, AuthError> {
        let require_jti = settings.require_jti.unwrap_or(false);
        let (decoding, encoding, algorithm) = match settings.algorithm {
            JwtAlgorithm::HS256 => {
                let secret = settings.hmac_secret.expose_secret().as_bytes();
                (
                    DecodingKey::from_secret(secret),
                    Some(EncodingKey::from_secret(secret)),
                    Algorithm::HS256,
                )
            }
            JwtAlgorithm::RS256 => (
                DecodingKey::from_rsa_pem(settings.public_key_pem.as_bytes())
                    .map_err(|e| AuthError::Invalid(format!("auth.public_key_pem: {e}")))?,
                None,
                Algorithm::RS256,
            ),
            JwtAlgorithm::EdDSA => (
                DecodingKey::from_ed_pem(settings.public_key_pem.as_bytes())
                    .map_err(|e| AuthError::Invalid(format!("auth.public_key_pem: {e}")))?,
                None,
                Algorithm::EdDSA,
            ),
        };
        // Exactly one algorithm is accepted: a token signed any other way (or `alg: none`) fails.
        let mut validation = Validation::new(algorithm);
        validation.leeway = settings.leeway_s;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if settings.issuer.is_empty() {
            validation.iss = None;
        } else {
            validation.set_issuer(&[&settings.issuer]);
            required.push("iss");
        }
        if settings.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&[&settings.audience]);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        Ok(Self {
            decoding,
            encoding,
            validation,
            require_jti,
            issuer: Some(settings.issuer.clone()).filter(|i| !i.is_empty()),
            audience: Some(settings.audience.clone()).filter(|a| !a.is_empty()),
            jwks: (!settings.jwks_url.is_empty()).then(|| {
                jwks::Jwks::new(
                    &settings.jwks_url,
                    std::time::Duration::from_secs(settings.jwks_min_refresh_s),
                )
            }),
            tier_claim: settings.tier_claim.clone(),
        })
    }

    /// Verify a token with the keys at hand (the configured key, or the JWKS keys fetched so
    /// far: a key id not among them is [`AuthError::UnknownKey`]).
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let jwks_key;
        let own = |kid: &Option<String>| kid.as_deref() == Some(OWN_KID) && self.encoding.is_some();
        let (key, validation) = match &self.jwks {
            // The hub's own tokens (exchanged for API keys) are verified with its own secret.
            Some(_) if jsonwebtoken::decode_header(token).is_ok_and(|h| own(&h.kid)) => {
                let mut validation = self.validation.clone();
                validation.algorithms = vec![Algorithm::HS256];
                jwks_key = self.decoding.clone();
                (&jwks_key, std::borrow::Cow::Owned(validation))
            }
            Some(jwks) => {
                let header = jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
                let kid = header
                    .kid
                    .ok_or_else(|| AuthError::Invalid("the token names no key id (kid)".into()))?;
                let (key, alg) = jwks.key(&kid).ok_or(AuthError::UnknownKey(kid))?;
                let mut validation = self.validation.clone();
                validation.algorithms = vec![alg];
                jwks_key = key;
                (&jwks_key, std::borrow::Cow::Owned(validation))
            }
            None => (&self.decoding, std::borrow::Cow::Borrowed(&self.validation)),
        };
        let data = jsonwebtoken::decode::<serde_json::Value>(token, key, &validation).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            _ => AuthError::Invalid(e.to_string()),
        })?;
        let claims = claims_from(data.claims, &self.tier_claim)?;
        if self.require_jti && claims.jti.as_deref().is_none_or(str::is_empty) {
            return Err(AuthError::Invalid("jti required (auth.require_jti)".into()));
        }
        if claims.exp > unix_now_s().saturating_add(MAX_LIFETIME_S) {
            return Err(AuthError::Invalid("exp is more than ten years away".into()));
        }
        if !valid_user_id(&claims.sub) {
            return Err(AuthError::Invalid(
                "sub must be 1-64 characters of [A-Za-z0-9_-]".into(),
            ));
        }
        Ok(claims)
    }

    /// [`Self::verify`], fetching the JWKS again first when the token names a key id the hub does
    /// not have (at most every `auth.jwks_min_refresh_s`).
    pub async fn verify_fresh(&self, token: &str) -> Result<Claims, AuthError> {
        match (self.verify(token), &self.jwks) {
            (Err(AuthError::UnknownKey(kid)), Some(jwks)) => {
                if let Err(e) = jwks.refresh().await {
                    tracing::warn!(error = %e, "refreshing the JWKS failed");
                }
                self.verify(token).map_err(|e| match e {
                    AuthError::UnknownKey(_) => AuthError::Invalid(format!("unknown key id `{kid}`")),
                    other => other,
                })
            }
            (result, _) => result,
        }
    }

    /// Fetch the JWKS now (at start), when one is configured.
    pub async fn load_jwks(&self) -> Result<(), String> {
        match &self.jwks {
            Some(jwks) => jwks.refresh().await.map(|_| ()),
            None => Ok(()),
        }
    }

    /// Mint a token for `user` at `tier`, valid for `ttl_s` seconds.
    pub fn mint(&self, user: &str, tier: Tier, ttl_s: u64) -> Result<String, AuthError> {
        let key = self.encoding.as_ref().ok_or(AuthError::CannotMint)?;
        if !valid_user_id(user) {
            return Err(AuthError::Invalid(
                "user must be 1-64 characters of [A-Za-z0-9_-]".into(),
            ));
        }
        let claims = self.own_claims(user, tier, ttl_s, uuid::Uuid::new_v4().to_string(), None);
        jsonwebtoken::encode(&own_header(), &claims, key).map_err(|e| AuthError::Invalid(e.to_string()))
    }

    /// The claims of a token this hub mints.
    fn own_claims(&self, user: &str, tier: Tier, ttl_s: u64, jti: String, scopes: Option<Vec<String>>) -> Claims {
        let now = unix_now_s();
        Claims {
            sub: user.to_owned(),
            tier,
            exp: now + ttl_s,
            iat: Some(now),
            jti: Some(jti),
            scopes,
            iss: self.issuer.clone(),
            aud: self.audience.clone().map(serde_json::Value::String),
        }
    }

    /// Whether this hub can mint tokens (an HS256 secret; with a public key it only verifies).
    pub fn can_mint(&self) -> bool {
        self.encoding.is_some()
    }

    /// Mint the token an API key is exchanged for: its owner and tier, its scopes, and the
    /// key's shared `jti` ([`key_jti`]), valid `ttl_s` seconds.
    pub fn mint_for_key(
        &self,
        user: &str,
        tier: Tier,
        key_id: &str,
        scopes: Vec<String>,
        ttl_s: u64,
    ) -> Result<(String, u64), AuthError> {
        let key = self.encoding.as_ref().ok_or(AuthError::CannotMint)?;
        let claims = self.own_claims(user, tier, ttl_s, key_jti(key_id), Some(scopes));
        let token = jsonwebtoken::encode(&own_header(), &claims, key).map_err(|e| AuthError::Invalid(e.to_string()))?;
        Ok((token, claims.exp))
    }
}

/// The header of the tokens this hub mints: HS256 with its own key id.
fn own_header() -> Header {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(OWN_KID.into());
    header
}

/// The claims of a verified token, the tier read where `tier_claim` says (a claim name, or a JSON
/// pointer such as `/app_metadata/tier`); a token without it is the free tier.
fn claims_from(mut value: serde_json::Value, tier_claim: &str) -> Result<Claims, AuthError> {
    let tier = if tier_claim.starts_with('/') {
        value.pointer(tier_claim).cloned()
    } else {
        value.get(tier_claim).cloned()
    };
    let tier = match tier {
        None | Some(serde_json::Value::Null) => Tier::Free,
        Some(serde_json::Value::String(t)) => t
            .parse()
            .map_err(|_| AuthError::Invalid(format!("unknown tier `{t}`")))?,
        Some(other) => return Err(AuthError::Invalid(format!("the tier claim is not a string: {other}"))),
    };
    if let Some(map) = value.as_object_mut() {
        map.insert("tier".into(), serde_json::Value::String(tier.as_str().into()));
    }
    serde_json::from_value(value).map_err(|e| AuthError::Invalid(e.to_string()))
}

/// Compare secrets in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn settings() -> Settings {
        Settings::defaults()
    }

    #[test]
    fn tokens_round_trip_and_reject_tampering() {
        let s = settings();
        let v = TokenVerifier::new(&s.auth).unwrap();
        let token = v.mint("42", Tier::Professional, 60).unwrap();
        let claims = v.verify(&token).unwrap();
        assert_eq!(claims.sub, "42");
        assert_eq!(claims.tier, Tier::Professional);
        let mut forged = token.clone();
        forged.pop();
        forged.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert!(matches!(v.verify(&forged), Err(AuthError::Invalid(_))));
    }
}

#[cfg(test)]
mod claim_checks {
    use super::*;
    use crate::config::Settings;
    use serde_json::{Value, json};

    fn sign(auth: &AuthSettings, claims: Value) -> String {
        let key = EncodingKey::from_secret(auth.hmac_secret.expose_secret().as_bytes());
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
    }

    fn claims(extra: Value) -> Value {
        let mut c = json!({"sub": "42", "tier": "free", "exp": unix_now_s() + 600, "jti": "j1"});
        c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        c
    }

    #[test]
    fn tokens_the_hub_mints_pass_its_own_issuer_and_audience_checks() {
        let mut auth = Settings::defaults().auth;
        auth.issuer = "https://id.example".into();
        auth.audience = "gpuscout".into();
        let v = TokenVerifier::new(&auth).unwrap();
        let own = v.mint("42", Tier::Free, 60).unwrap();
        assert_eq!(v.verify(&own).unwrap().iss.as_deref(), Some("https://id.example"));
        let (exchanged, _) = v
            .mint_for_key("42", Tier::Free, "k1", vec!["subscribe".into()], 60)
            .unwrap();
        let claims = v.verify(&exchanged).unwrap();
        assert_eq!(claims.jti.as_deref(), Some("key-k1"));
        assert!(claims.allows("subscribe") && !claims.allows("advisor") && claims.from_key());
    }

    #[test]
    fn a_token_not_yet_valid_is_refused() {
        let auth = Settings::defaults().auth;
        let v = TokenVerifier::new(&auth).unwrap();
        let later = sign(&auth, claims(json!({"nbf": unix_now_s() + 3600})));
        assert!(matches!(v.verify(&later), Err(AuthError::Invalid(_))));
        let now = sign(&auth, claims(json!({"nbf": unix_now_s() - 1})));
        v.verify(&now).unwrap();
    }

    #[test]
    fn issuer_and_audience_are_checked_when_set() {
        let mut auth = Settings::defaults().auth;
        auth.issuer = "https://id.example".into();
        auth.audience = "gpuscout".into();
        let v = TokenVerifier::new(&auth).unwrap();
        let good = sign(
            &auth,
            claims(json!({"iss": "https://id.example", "aud": ["other", "gpuscout"]})),
        );
        v.verify(&good).unwrap();
        for bad in [
            json!({"iss": "https://evil.example", "aud": "gpuscout"}),
            json!({"iss": "https://id.example", "aud": "other"}),
            json!({"aud": "gpuscout"}),
            json!({"iss": "https://id.example"}),
        ] {
            let token = sign(&auth, claims(bad.clone()));
            assert!(v.verify(&token).is_err(), "{bad}");
        }
        // Unset: not checked.
        let plain = Settings::defaults().auth;
        let token = sign(&plain, claims(json!({"iss": "anyone", "aud": "anything"})));
        TokenVerifier::new(&plain).unwrap().verify(&token).unwrap();
    }

    #[test]
    fn an_absurd_expiry_is_refused_not_overflowed() {
        let auth = Settings::defaults().auth;
        let v = TokenVerifier::new(&auth).unwrap();
        for exp in [json!(1e19), json!(u64::MAX), json!(unix_now_s() + MAX_LIFETIME_S + 10)] {
            let token = sign(&auth, claims(json!({ "exp": exp })));
            assert!(matches!(v.verify(&token), Err(AuthError::Invalid(_))), "{exp}");
        }
    }

    #[test]
    fn a_token_without_jti_is_refused_when_required() {
        let mut auth = Settings::defaults().auth;
        let mut no_jti = claims(json!({}));
        no_jti.as_object_mut().unwrap().remove("jti");
        let token = sign(&auth, no_jti);
        TokenVerifier::new(&auth).unwrap().verify(&token).unwrap();
        auth.require_jti = Some(true);
        let err = TokenVerifier::new(&auth).unwrap().verify(&token).unwrap_err();
        assert!(err.to_string().contains("jti"), "{err}");
    }
}
