//! Signed requests: every request a paired kiosk makes carries its kiosk id, the time, and an
//! Ed25519 signature by its identity key over the method, the path, that time and the body's
//! SHA-256. The server checks it against the public key it stored at pairing, and refuses a
//! time further than [`MAX_CLOCK_SKEW_MS`] from its own, or one no later than the kiosk's last
//! request (a replay). A kiosk refused as out of order is told its last time in
//! [`LAST_TIME_HEADER`] and signs again after it.

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

pub const KIOSK_HEADER: &str = "x-selfvend-kiosk";
/// Milliseconds since the Unix epoch, as the kiosk's clock says.
pub const TIME_HEADER: &str = "x-selfvend-time";
/// In a refusal of a request as replayed: the time of the kiosk's last request.
pub const LAST_TIME_HEADER: &str = "x-selfvend-last-time";
/// The signature, 64 bytes in hex.
pub const SIGNATURE_HEADER: &str = "x-selfvend-signature";
/// How far a request's time may be from the server's.
pub const MAX_CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;

/// What a kiosk signs for one request.
pub fn signing_bytes(method: &str, path: &str, time_ms: i64, body: &[u8]) -> Vec<u8> {
    format!(
        "selfvend-fleet-v1\n{method}\n{path}\n{time_ms}\n{}\n",
        hex::encode(Sha256::digest(body))
    )
    .into_bytes()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("the signature is not 64 bytes of hex")]
    Malformed,
    #[error("the stored public key is not an Ed25519 key")]
    BadKey,
    #[error("the signature does not verify with this kiosk's key")]
    Wrong,
}

/// Checks `signature_hex` over a request with `public_key` (32 bytes).
pub fn verify(
    public_key: &[u8],
    signature_hex: &str,
    method: &str,
    path: &str,
    time_ms: i64,
    body: &[u8],
) -> Result<(), SignError> {
    let key: [u8; 32] = public_key.try_into().map_err(|_| SignError::BadKey)?;
    let key = VerifyingKey::from_bytes(&key).map_err(|_| SignError::BadKey)?;
    let bytes: [u8; 64] = hex::decode(signature_hex)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(SignError::Malformed)?;
    key.verify(
        &signing_bytes(method, path, time_ms, body),
        &Signature::from_bytes(&bytes),
    )
    .map_err(|_| SignError::Wrong)
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer, SigningKey};

    use super::*;

    #[test]
    fn a_signature_covers_the_method_path_time_and_body() {
        let key = SigningKey::generate(&mut rand_core::OsRng);
        let public = key.verifying_key().to_bytes();
        let sig = hex::encode(
            key.sign(&signing_bytes("POST", "/api/journal", 1000, b"{}"))
                .to_bytes(),
        );
        assert_eq!(
            verify(&public, &sig, "POST", "/api/journal", 1000, b"{}"),
            Ok(())
        );
        for (method, path, time, body) in [
            ("GET", "/api/journal", 1000, &b"{}"[..]),
            ("POST", "/api/heartbeat", 1000, b"{}"),
            ("POST", "/api/journal", 1001, b"{}"),
            ("POST", "/api/journal", 1000, b"{ }"),
        ] {
            assert_eq!(
                verify(&public, &sig, method, path, time, body),
                Err(SignError::Wrong)
            );
        }
        let other = SigningKey::generate(&mut rand_core::OsRng).verifying_key();
        assert_eq!(
            verify(other.as_bytes(), &sig, "POST", "/api/journal", 1000, b"{}"),
            Err(SignError::Wrong)
        );
        assert_eq!(
            verify(&public, "zz", "POST", "/api/journal", 1000, b"{}"),
            Err(SignError::Malformed)
        );
    }
}
