//! Sending an alert to a browser's push subscription (RFC 8030): the alert JSON encrypted for
//! that browser (RFC 8291, [`super::webpush`]) and the request signed with the hub's VAPID key
//! (RFC 8292): `Authorization: vapid t=<ES256 JWT>, k=<public key>`, the JWT's `aud` the push
//! service's origin, `sub` the operator's contact, `exp` twelve hours ahead.

use base64::Engine;
use p256::ecdsa::signature::Signer;
use secrecy::ExposeSecret;
use serde_json::json;

use super::webpush::{self, EncryptError};
use crate::config::PushSettings;
use crate::store::push::PushSubscription;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// How long a VAPID token is valid (RFC 8292 allows at most 24 hours).
const TOKEN_LIFETIME_S: i64 = 12 * 3600;

/// The hub's VAPID identity and push settings.
pub struct PushSender {
    key: p256::ecdsa::SigningKey,
    public_key: String,
    subject: String,
    ttl_s: u32,
}

/// Why a push was not sent (and will not be retried).
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{0}")]
    Encrypt(#[from] EncryptError),
    #[error("the push endpoint is not a URL")]
    BadEndpoint,
}

impl PushSender {
    /// The sender for these settings, `None` while push is off (the keys were checked at start).
    pub fn new(settings: &PushSettings) -> Option<Self> {
        if !settings.enabled() {
            return None;
        }
        let scalar = B64
            .decode(settings.vapid_private_key.expose_secret().trim_end_matches('='))
            .ok()?;
        Some(Self {
            key: p256::ecdsa::SigningKey::from_slice(&scalar).ok()?,
            public_key: settings.vapid_public_key.trim_end_matches('=').to_owned(),
            subject: settings.subject.clone(),
            ttl_s: settings.ttl_s,
        })
    }

    /// The VAPID JWT for the push service at `audience` (an origin such as
    /// `https://fcm.googleapis.com`).
    pub fn vapid_token(&self, audience: &str, now_s: i64) -> String {
        let header = B64.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = json!({"aud": audience, "exp": now_s + TOKEN_LIFETIME_S, "sub": self.subject});
        let signing_input = format!("{header}.{}", B64.encode(claims.to_string()));
        let signature: p256::ecdsa::Signature = self.key.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", B64.encode(signature.to_bytes()))
    }

    /// The push request for `payload` to `subscription`: encrypted, with `TTL`, `Urgency` and
    /// the VAPID `Authorization`.
    pub fn request(
        &self,
        client: &reqwest::Client,
        subscription: &PushSubscription,
        payload: &[u8],
        now_s: i64,
    ) -> Result<reqwest::RequestBuilder, PushError> {
        let endpoint = reqwest::Url::parse(&subscription.endpoint).map_err(|_| PushError::BadEndpoint)?;
        let p256dh = B64
            .decode(subscription.p256dh.trim_end_matches('='))
            .map_err(|_| EncryptError::BadPublicKey)?;
        let auth = B64
            .decode(subscription.auth.trim_end_matches('='))
            .map_err(|_| EncryptError::BadAuth)?;
        let body = webpush::encrypt(payload, &p256dh, &auth)?;
        let audience = endpoint.origin().ascii_serialization();
        let authorization = format!("vapid t={}, k={}", self.vapid_token(&audience, now_s), self.public_key);
        Ok(client
            .post(endpoint)
            .header("ttl", self.ttl_s.to_string())
            // An alert is about a price that may not last.
            .header("urgency", "high")
            .header("content-encoding", "aes128gcm")
            .header("content-type", "application/octet-stream")
            .header("authorization", authorization)
            .body(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Verifier;

    #[test]
    fn vapid_tokens_verify_with_the_public_key() {
        let (public, private) = crate::alerts::vapid::new_key_pair();
        let settings = PushSettings {
            vapid_public_key: public.clone(),
            vapid_private_key: private.into(),
            subject: "mailto:ops@example.com".into(),
            ..PushSettings::default()
        };
        let sender = PushSender::new(&settings).unwrap();
        let token = sender.vapid_token("https://push.example.net", 1_000);
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: serde_json::Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["aud"], "https://push.example.net");
        assert_eq!(claims["sub"], "mailto:ops@example.com");
        assert_eq!(claims["exp"], 1_000 + TOKEN_LIFETIME_S);
        let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&B64.decode(&public).unwrap()).unwrap();
        let signature = p256::ecdsa::Signature::from_slice(&B64.decode(parts[2]).unwrap()).unwrap();
        let input = format!("{}.{}", parts[0], parts[1]);
        key.verify(input.as_bytes(), &signature).unwrap();
        assert!(key.verify(b"something else", &signature).is_err());
    }
}
