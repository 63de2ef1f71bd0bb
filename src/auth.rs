//! Authentication: connection JWTs (verified and, in development, minted) and the comparison of
//! server API keys. Never talks to sockets: callers turn its errors into protocol codes. What a
//! verified user may do is [`crate::tier`]'s business.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use crate::channels::valid_user_id;
use crate::clock::unix_now_s;
use crate::config::{AuthSettings, JwtAlgorithm};
use crate::tier::Tier;

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
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("tokens can only be minted with an HS256 secret")]
    CannotMint,
}

/// Verifies (and, with an HS256 secret, mints) connection tokens.
pub struct TokenVerifier {
    decoding: DecodingKey,
    encoding: Option<EncodingKey>,
    validation: Validation,
}

impl TokenVerifier {
    pub fn new(settings: &AuthSettings) -> Result<Self, AuthError> {
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
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_aud = false;
        Ok(Self {
            decoding,
            encoding,
            validation,
        })
    }

    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid(e.to_string()),
            })?;
        let claims = data.claims;
        if !valid_user_id(&claims.sub) {
            return Err(AuthError::Invalid(
                "sub must be 1-64 characters of [A-Za-z0-9_-]".into(),
            ));
        }
        Ok(claims)
    }

    /// Mint a token for `user` at `tier`, valid for `ttl_s` seconds.
    pub fn mint(&self, user: &str, tier: Tier, ttl_s: u64) -> Result<String, AuthError> {
        let key = self.encoding.as_ref().ok_or(AuthError::CannotMint)?;
        if !valid_user_id(user) {
            return Err(AuthError::Invalid(
                "user must be 1-64 characters of [A-Za-z0-9_-]".into(),
            ));
        }
        let now = unix_now_s();
        let claims = Claims {
            sub: user.to_owned(),
            tier,
            exp: now + ttl_s,
            iat: Some(now),
            jti: Some(uuid::Uuid::new_v4().to_string()),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key)
            .map_err(|e| AuthError::Invalid(e.to_string()))
    }
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
