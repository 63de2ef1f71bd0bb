//! Secrets at rest: what users hand the hub to act for them (platform API keys) is stored sealed
//! with AES-256-GCM under `secrets.encryption_key`, never in the clear. A sealed value is
//! `v1.<key id>.<base64 nonce and ciphertext>`; the key id (the first 4 bytes of the key's
//! SHA-256, in hex) says which key sealed it, so values sealed under a key in
//! `secrets.previous_encryption_keys` still open after a rotation (and are sealed anew under the
//! current key when next written).

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use sha2::Digest;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The development key: public, so it protects nothing; used only in development on loopback.
pub const DEV_KEY: &str = "Z3B1c2NvdXQtZGV2ZWxvcG1lbnQta2V5LXB1YmxpYyE=";

/// Why a key or a sealed value was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("an encryption key is 32 bytes in base64")]
    BadKey,
    #[error("the value was sealed under a key the hub does not have (key id {0})")]
    UnknownKey(String),
    #[error("the sealed value is damaged or was not sealed by this hub")]
    Damaged,
}

/// Parse a key: 32 bytes in standard base64.
pub fn parse_key(b64: &str) -> Result<[u8; 32], SecretError> {
    B64.decode(b64.trim())
        .ok()
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .ok_or(SecretError::BadKey)
}

fn key_id(key: &[u8; 32]) -> String {
    hex::encode(&sha2::Sha256::digest(key)[..4])
}

/// Seals with the current key, opens with it or any previous one.
pub struct Sealer {
    current: (String, Aes256Gcm),
    previous: Vec<(String, Aes256Gcm)>,
}

impl Sealer {
    /// From the current key and the previous ones (base64).
    pub fn new(current: &str, previous: &[&str]) -> Result<Self, SecretError> {
        let cipher = |k: &[u8; 32]| (key_id(k), Aes256Gcm::new(k.into()));
        Ok(Self {
            current: cipher(&parse_key(current)?),
            previous: previous
                .iter()
                .map(|k| parse_key(k).map(|k| cipher(&k)))
                .collect::<Result<_, _>>()?,
        })
    }

    pub fn seal(&self, plaintext: &str) -> String {
        let (id, cipher) = &self.current;
        let nonce: [u8; 12] = rand::random();
        let sealed = cipher
            .encrypt(&Nonce::from(nonce), plaintext.as_bytes())
            .expect("AES-GCM seals any short value");
        let mut body = nonce.to_vec();
        body.extend_from_slice(&sealed);
        format!("v1.{id}.{}", B64.encode(body))
    }

    pub fn open(&self, sealed: &str) -> Result<String, SecretError> {
        let mut parts = sealed.splitn(3, '.');
        let (Some("v1"), Some(id), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(SecretError::Damaged);
        };
        let cipher = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|(k, _)| k == id)
            .map(|(_, c)| c)
            .ok_or_else(|| SecretError::UnknownKey(id.to_owned()))?;
        let body = B64.decode(body).map_err(|_| SecretError::Damaged)?;
        if body.len() < 12 + 16 {
            return Err(SecretError::Damaged);
        }
        let (nonce, sealed) = body.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| SecretError::Damaged)?;
        let plain = cipher
            .decrypt(&Nonce::from(nonce), sealed)
            .map_err(|_| SecretError::Damaged)?;
        String::from_utf8(plain).map_err(|_| SecretError::Damaged)
    }

    /// Whether `sealed` is under the current key (else it is worth sealing anew).
    pub fn is_current(&self, sealed: &str) -> bool {
        sealed.split('.').nth(1) == Some(self.current.0.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> String {
        B64.encode(rand::random::<[u8; 32]>())
    }

    #[test]
    fn sealed_values_open_and_hide_the_plaintext() {
        let k = key();
        let sealer = Sealer::new(&k, &[]).unwrap();
        let sealed = sealer.seal("vast-api-key-123");
        assert!(!sealed.contains("vast-api-key-123"));
        assert_ne!(sealed, sealer.seal("vast-api-key-123"), "a fresh nonce each time");
        assert_eq!(sealer.open(&sealed).unwrap(), "vast-api-key-123");
        assert!(sealer.is_current(&sealed));
        // A flipped byte is caught.
        let mut bytes = sealed.clone().into_bytes();
        let last = bytes.len() - 3;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            sealer.open(&String::from_utf8(bytes).unwrap()),
            Err(SecretError::Damaged)
        );
    }

    #[test]
    fn a_rotated_key_still_opens_what_it_sealed() {
        let (old, new) = (key(), key());
        let sealed = Sealer::new(&old, &[]).unwrap().seal("secret");
        let rotated = Sealer::new(&new, &[&old]).unwrap();
        assert_eq!(rotated.open(&sealed).unwrap(), "secret");
        assert!(!rotated.is_current(&sealed));
        let without = Sealer::new(&new, &[]).unwrap();
        assert!(matches!(without.open(&sealed), Err(SecretError::UnknownKey(_))));
        assert_eq!(Sealer::new("c2hvcnQ=", &[]).err(), Some(SecretError::BadKey));
        assert!(parse_key(DEV_KEY).is_ok());
    }
}
