//! Web Push message encryption (RFC 8291 with the `aes128gcm` content coding of RFC 8188): what
//! only the subscribed browser can read, with a key agreed between a fresh sender key pair and
//! the browser's `p256dh` key, mixed with its `auth` secret.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes128Gcm, Nonce};
use hkdf::Hkdf;
use p256::PublicKey;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use sha2::Sha256;

/// The record size advertised in the header; one record carries the whole message.
const RECORD_SIZE: u32 = 4096;

/// Why a message cannot be encrypted for a subscription.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncryptError {
    #[error("the subscription's p256dh is not a P-256 public key")]
    BadPublicKey,
    #[error("the subscription's auth secret is not 16 bytes")]
    BadAuth,
    #[error("the message is too large for one push ({0} bytes)")]
    TooLarge(usize),
}

/// Encrypt `plaintext` for the browser key `ua_public` (65 bytes) and secret `auth` (16 bytes)
/// with a fresh sender key and salt.
pub fn encrypt(plaintext: &[u8], ua_public: &[u8], auth: &[u8]) -> Result<Vec<u8>, EncryptError> {
    let sender = super::vapid::random_secret_key();
    encrypt_with(plaintext, ua_public, auth, &rand::random::<[u8; 16]>(), &sender)
}

/// [`encrypt`] with the salt and sender key given (RFC 8291 Appendix A checks it).
pub fn encrypt_with(
    plaintext: &[u8],
    ua_public: &[u8],
    auth: &[u8],
    salt: &[u8; 16],
    sender: &p256::SecretKey,
) -> Result<Vec<u8>, EncryptError> {
    if auth.len() != 16 {
        return Err(EncryptError::BadAuth);
    }
    // One record: the plaintext, its 0x02 delimiter and the 16-byte tag within RECORD_SIZE.
    if plaintext.len() + 17 > RECORD_SIZE as usize {
        return Err(EncryptError::TooLarge(plaintext.len()));
    }
    let ua = PublicKey::from_sec1_bytes(ua_public).map_err(|_| EncryptError::BadPublicKey)?;
    let as_public = sender.public_key().to_encoded_point(false);
    let shared = p256::ecdh::diffie_hellman(sender.to_nonzero_scalar(), ua.as_affine());
    let (cek, nonce) = content_keys(shared.raw_secret_bytes(), auth, ua_public, as_public.as_bytes(), salt);

    let mut record = plaintext.to_vec();
    record.push(0x02); // the last (only) record
    let sealed = Aes128Gcm::new(&cek.into())
        .encrypt(&Nonce::from(nonce), record.as_slice())
        .expect("AES-GCM seals any record of this size");

    // Header: salt, record size, key id length and the sender's public key.
    let mut body = Vec::with_capacity(16 + 4 + 1 + 65 + sealed.len());
    body.extend_from_slice(salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(as_public.as_bytes().len() as u8);
    body.extend_from_slice(as_public.as_bytes());
    body.extend_from_slice(&sealed);
    Ok(body)
}

/// The content encryption key and nonce (RFC 8291 §3.3-3.4, RFC 8188 §2.2-2.3): from the ECDH
/// secret mixed with `auth` and both public keys, then with the salt.
fn content_keys(shared: &[u8], auth: &[u8], ua_public: &[u8], as_public: &[u8], salt: &[u8]) -> ([u8; 16], [u8; 12]) {
    // IKM = HKDF(auth, ecdh, "WebPush: info" 0x00 ua_public as_public, 32)
    let mut info = b"WebPush: info\0".to_vec();
    info.extend_from_slice(ua_public);
    info.extend_from_slice(as_public);
    let mut ikm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(auth), shared)
        .expand(&info, &mut ikm)
        .expect("32 bytes is a valid HKDF length");
    let prk = Hkdf::<Sha256>::new(Some(salt), &ikm);
    let (mut cek, mut nonce) = ([0u8; 16], [0u8; 12]);
    prk.expand(b"Content-Encoding: aes128gcm\0", &mut cek)
        .expect("16 bytes is a valid HKDF length");
    prk.expand(b"Content-Encoding: nonce\0", &mut nonce)
        .expect("12 bytes is a valid HKDF length");
    (cek, nonce)
}

/// Decrypt a one-record `aes128gcm` push message as the browser does, with its private key and
/// `auth` secret: what a receiving test or tool uses to read what the hub sent.
pub fn decrypt(body: &[u8], ua_secret: &p256::SecretKey, auth: &[u8]) -> Option<Vec<u8>> {
    let salt = body.get(..16)?;
    let key_len = usize::from(*body.get(20)?);
    let as_public = body.get(21..21 + key_len)?;
    let sealed = body.get(21 + key_len..)?;
    let sender = PublicKey::from_sec1_bytes(as_public).ok()?;
    let shared = p256::ecdh::diffie_hellman(ua_secret.to_nonzero_scalar(), sender.as_affine());
    let ua_public = ua_secret.public_key().to_encoded_point(false);
    let (cek, nonce) = content_keys(shared.raw_secret_bytes(), auth, ua_public.as_bytes(), as_public, salt);
    let mut record = Aes128Gcm::new(&cek.into()).decrypt(&Nonce::from(nonce), sealed).ok()?;
    // Padding (zeros) after the last record's 0x02 delimiter.
    while record.last() == Some(&0) {
        record.pop();
    }
    (record.pop() == Some(0x02)).then_some(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn b64(s: &str) -> Vec<u8> {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).unwrap()
    }

    #[test]
    fn the_rfc_8291_example_encrypts_byte_for_byte() {
        let sender = p256::SecretKey::from_slice(&b64("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw")).unwrap();
        let ua_public = b64("BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4");
        let auth = b64("BTBZMqHH6r4Tts7J_aSIgg");
        let salt: [u8; 16] = b64("DGv6ra1nlYgDCS1FRnbzlw").try_into().unwrap();
        let body = encrypt_with(
            b"When I grow up, I want to be a watermelon",
            &ua_public,
            &auth,
            &salt,
            &sender,
        )
        .unwrap();
        let expected = b64(
            "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN",
        );
        assert_eq!(body, expected);
        // The browser's side of the example reads it back.
        let ua_secret = p256::SecretKey::from_slice(&b64("q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94")).unwrap();
        assert_eq!(
            decrypt(&body, &ua_secret, &auth).unwrap(),
            b"When I grow up, I want to be a watermelon"
        );
        assert!(
            decrypt(&body, &ua_secret, &[0; 16]).is_none(),
            "another auth secret fails"
        );
    }

    #[test]
    fn bad_keys_and_oversized_messages_are_refused() {
        let (ua, _) = crate::alerts::vapid::new_key_pair();
        let ua = b64(&ua);
        assert_eq!(encrypt(b"x", &ua, &[0; 15]), Err(EncryptError::BadAuth));
        assert_eq!(encrypt(b"x", &[4; 65], &[0; 16]), Err(EncryptError::BadPublicKey));
        assert_eq!(encrypt(&[b'x'; 4090], &ua, &[0; 16]), Err(EncryptError::TooLarge(4090)));
        // Two encryptions of one message differ (fresh salt and sender key each time).
        assert_ne!(
            encrypt(b"x", &ua, &[0; 16]).unwrap(),
            encrypt(b"x", &ua, &[0; 16]).unwrap()
        );
    }
}
