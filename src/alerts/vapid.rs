//! VAPID (RFC 8292) keys for Web Push: a new key pair in the form browsers and Web Push
//! libraries use (unpadded base64url of the uncompressed public point and of the private scalar).

use base64::Engine;

/// A new random P-256 private key.
pub fn random_secret_key() -> p256::SecretKey {
    loop {
        // Any 32 bytes below the curve order make a key (all but a 2^-128 share).
        if let Ok(key) = p256::SecretKey::from_slice(&rand::random::<[u8; 32]>()) {
            return key;
        }
    }
}

/// A new VAPID key pair: `(public, private)`, unpadded base64url.
pub fn new_key_pair() -> (String, String) {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let secret = random_secret_key();
    let public = p256::EncodedPoint::from(secret.public_key());
    (b64.encode(public.as_bytes()), b64.encode(secret.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PushSettings;

    #[test]
    fn a_new_pair_is_what_the_settings_accept() {
        let (public, private) = new_key_pair();
        assert_eq!(public.len(), 87, "65 bytes in unpadded base64url");
        assert_eq!(private.len(), 43, "32 bytes in unpadded base64url");
        let mut push = PushSettings {
            vapid_public_key: public,
            vapid_private_key: private.into(),
            subject: "mailto:ops@example.com".into(),
            ..Default::default()
        };
        push.validate().unwrap();
        // Another pair's public key does not match.
        push.vapid_public_key = new_key_pair().0;
        let err = push.validate().unwrap_err().to_string();
        assert!(err.contains("push.vapid_public_key"), "{err}");
        // Neither key: push is off, and valid.
        PushSettings::default().validate().unwrap();
    }
}
