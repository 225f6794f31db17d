//! The signature on every tool request: `Voxrelay-Signature: t=<unix seconds>,v1=<hex>`, where
//! the hex is HMAC-SHA256, keyed with the tool's secret, of `"<t>.<body>"` (the timestamp, a
//! full stop, then the request body's exact bytes). The same scheme as Stripe's
//! `Stripe-Signature` (<https://docs.stripe.com/webhooks#verify-manually>): the timestamp is
//! signed with the body, so a receiver that rejects old timestamps also rejects replays.
//!
//! A receiver checks it by computing the same HMAC over the body as received and comparing in
//! constant time ([`verify`] does this; the README shows it in Python). Several `v1=` entries
//! may appear while a secret is being rotated; one match is enough.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The header's name.
pub const HEADER: &str = "Voxrelay-Signature";

/// How far a request's timestamp may be from the receiver's clock, by default, s.
pub const DEFAULT_TOLERANCE_S: i64 = 300;

type HmacSha256 = Hmac<Sha256>;

/// The lower-case hex HMAC-SHA256 of `"<timestamp>.<body>"` with `secret`.
pub fn digest(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let mut mac = match HmacSha256::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The header value for `body` sent at `timestamp` (unix seconds): `t=<timestamp>,v1=<hex>`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", digest(secret, timestamp, body))
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `t=` or no `v1=` in the header.
    #[error("the signature header has no t= or no v1= entry")]
    Malformed,
    /// The timestamp is further than the tolerance from now.
    #[error("the signature's timestamp is {0} s from now, beyond the tolerance")]
    Stale(i64),
    /// No `v1=` entry matches the body.
    #[error("no signature matches the body")]
    Mismatch,
}

/// Checks `header` (the `Voxrelay-Signature` value) against `body` with `secret`, at `now`
/// (unix seconds), allowing `tolerance_s` of clock difference.
///
/// Errors: [`SignatureError`].
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_s: i64,
) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", v)) => signatures.push(v),
            _ => {}
        }
    }
    let Some(timestamp) = timestamp else {
        return Err(SignatureError::Malformed);
    };
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let skew = now.saturating_sub(timestamp);
    if skew.abs() > tolerance_s {
        return Err(SignatureError::Stale(skew));
    }
    let expected = digest(secret, timestamp, body);
    if signatures
        .iter()
        .any(|s| bool::from(s.as_bytes().ct_eq(expected.as_bytes())))
    {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_and_any_change_breaks_it() {
        let body = br#"{"tool":"book","arguments":{"day":"Tuesday"}}"#;
        let header = sign(b"s3cret", 1_700_000_000, body);
        assert!(header.starts_with("t=1700000000,v1="));
        assert_eq!(verify(b"s3cret", &header, body, 1_700_000_010, 300), Ok(()));
        assert_eq!(
            verify(b"other", &header, body, 1_700_000_010, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"s3cret", &header, b"{}", 1_700_000_010, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"s3cret", &header, body, 1_700_001_000, 300),
            Err(SignatureError::Stale(1000))
        );
        assert_eq!(
            verify(b"s3cret", "v1=abc", body, 1_700_000_000, 300),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn the_digest_matches_python_hmac_over_timestamp_dot_body() {
        // python3: hmac.new(b"whsec_test", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
        assert_eq!(
            digest(b"whsec_test", 1_700_000_000, br#"{"a":1}"#),
            "38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
    }
}
