//! voxrelay's own signed values: the call token and the signed outbound-webhook parameters.
//!
//! Both are HMAC-SHA256 with the `VOXRELAY_SIGNING_KEY` secret, encoded as base64url without
//! padding (RFC 4648 §5), and compared in constant time.
//!
//! - **Call token**: the voice webhook puts it in the TwiML as a `<Stream>` `<Parameter>`; Twilio
//!   hands it back in the Media Streams `start.customParameters`, so the WebSocket can trust the
//!   call it belongs to. Format: `PAYLOAD.SIG`, where `PAYLOAD` is base64url of a compact JSON
//!   object (so no field can smuggle a separator) and `SIG` is base64url of the HMAC over a
//!   domain label and the exact `PAYLOAD` text. A `<Parameter>` name plus value must stay under
//!   500 characters (<https://www.twilio.com/docs/voice/twiml/stream>); a token
//!   for a 34-character CallSid and a 36-character business id is about 200 characters, and
//!   one that also carries the caller, the prompt version and the experiment arm, with a
//!   64-character business id, stays under 420.
//! - **Outbound parameters**: the webhook URL of a call we place carries
//!   `business=ID&exp=MS&sig=SIG`, so the webhook can trust which business placed the call. The
//!   HMAC input is length-prefixed, under its own domain label, so a call token signature can
//!   never verify as an outbound signature or the reverse.
//!
//! Times are Unix epoch milliseconds (`i64`); a value is valid while `now_ms < expires_at_ms`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::domain::{BusinessId, CallSid, Direction};

type HmacSha256 = Hmac<Sha256>;

/// Domain label mixed into call token signatures.
const CALL_TOKEN_DOMAIN: &[u8] = b"voxrelay.call-token.v1\0";
/// Domain label mixed into outbound-parameter signatures.
const OUTBOUND_DOMAIN: &[u8] = b"voxrelay.outbound.v1\0";
/// Tokens longer than this are rejected before any decoding (they cannot come from [`sign`]
/// with realistic ids, and Twilio caps a `<Parameter>` at 500 characters anyway).
const MAX_TOKEN_LEN: usize = 4096;

/// Length in bytes of an HMAC-SHA256 tag.
const SIGNATURE_LEN: usize = 32;

const PARAM_BUSINESS: &str = "business";
const PARAM_EXPIRES: &str = "exp";
const PARAM_SIGNATURE: &str = "sig";
const PARAM_VARIABLES: &str = "vars";

/// What a call token vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallToken {
    /// Twilio's `CallSid` (`CA` + 32 hex characters).
    pub call_sid: CallSid,
    /// The business the call belongs to.
    pub business_id: BusinessId,
    /// Whether the customer called in or the business called out.
    pub direction: Direction,
    /// Expiry, Unix epoch milliseconds; the token is rejected once `now_ms >= expires_at_ms`.
    pub expires_at_ms: i64,
    /// The customer's number (`From` inbound, `To` outbound), as Twilio sent it; may be empty.
    /// An instance that rebuilds the call renders `call.caller` with it.
    pub caller: String,
    /// The prompt version the webhook chose, so an instance that rebuilds the call runs the
    /// same version even if a promote happened in between; `None`: the business's own text.
    pub prompt_version_id: Option<String>,
    /// The running experiment and arm that chose the version.
    pub experiment: Option<(String, crate::domain::Arm)>,
}

/// Why a token or a set of outbound parameters was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not in the expected shape: wrong separators, bad base64url, bad JSON, missing, repeated
    /// or non-numeric fields, or too long.
    #[error("malformed token: not a well-formed voxrelay signed value")]
    Malformed,
    /// Well-formed, but the HMAC does not match (tampered, or signed with another key).
    #[error("token signature does not match: tampered or signed with a different key")]
    BadSignature,
    /// Authentic, but its expiry time has passed.
    #[error("token has expired")]
    Expired,
}

/// The JSON payload of a call token (short keys keep the token small).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload<'a> {
    #[serde(rename = "c", borrow)]
    call_sid: std::borrow::Cow<'a, str>,
    #[serde(rename = "b", borrow)]
    business_id: std::borrow::Cow<'a, str>,
    #[serde(rename = "d")]
    direction: Direction,
    #[serde(rename = "e")]
    expires_at_ms: i64,
    #[serde(rename = "f", borrow, default, skip_serializing_if = "str::is_empty")]
    caller: std::borrow::Cow<'a, str>,
    #[serde(rename = "p", borrow, default, skip_serializing_if = "Option::is_none")]
    prompt_version_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "x", borrow, default, skip_serializing_if = "Option::is_none")]
    experiment_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "v", borrow, default, skip_serializing_if = "Option::is_none")]
    variant: Option<std::borrow::Cow<'a, str>>,
}

fn mac(key: &[u8], domain: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length: `new_from_slice` cannot fail for it.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC-SHA256 accepts keys of any length");
    mac.update(domain);
    mac
}

/// Signs a call token.
///
/// - `key`: the `VOXRELAY_SIGNING_KEY` secret bytes.
/// - `token`: the claims to vouch for.
///
/// Returns `PAYLOAD.SIG` (base64url without padding, so it is safe in URLs, XML attributes and
/// JSON); about `1.35 × (60 + call_sid.len() + business_id.len())` characters. Check it with
/// [`verify`].
///
/// The token verifies only when it fits [`verify`]'s 4096 characters: every token the webhook
/// signs does (ids of at most 64 characters, a caller of at most
/// [`MAX_PARTY_LEN`](crate::http::webhook::MAX_PARTY_LEN) bytes without control characters;
/// the `stream_token` fuzz target checks the round trip over exactly those).
pub fn sign(key: &[u8], token: &CallToken) -> String {
    let payload = Payload {
        call_sid: token.call_sid.as_str().into(),
        business_id: token.business_id.as_str().into(),
        direction: token.direction,
        expires_at_ms: token.expires_at_ms,
        caller: token.caller.as_str().into(),
        prompt_version_id: token.prompt_version_id.as_deref().map(Into::into),
        experiment_id: token.experiment.as_ref().map(|(id, _)| id.as_str().into()),
        variant: token
            .experiment
            .as_ref()
            .map(|(_, arm)| arm.as_str().into()),
    };
    // Serialising a struct of strings, an enum and an integer to a Vec cannot fail.
    let json = serde_json::to_vec(&payload).unwrap_or_default();
    let encoded = URL_SAFE_NO_PAD.encode(json);
    let mut mac = mac(key, CALL_TOKEN_DOMAIN);
    mac.update(encoded.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{encoded}.{signature}")
}

/// Verifies a call token made by [`sign`] and returns its claims.
///
/// - `key`: the `VOXRELAY_SIGNING_KEY` secret bytes.
/// - `token`: the text received (for example `start.customParameters.token`).
/// - `now_ms`: the current time, Unix epoch milliseconds.
///
/// The signature is checked (in constant time) before the payload is parsed, and the expiry
/// after it.
///
/// # Errors
/// - [`TokenError::Malformed`] if the text is not `PAYLOAD.SIG` in base64url with a 32-byte
///   `SIG`, is longer than 4096 characters, or the payload is not the expected JSON;
/// - [`TokenError::BadSignature`] if the HMAC does not match;
/// - [`TokenError::Expired`] if `now_ms >= expires_at_ms`.
pub fn verify(key: &[u8], token: &str, now_ms: i64) -> Result<CallToken, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let (encoded, signature) = token.split_once('.').ok_or(TokenError::Malformed)?;
    let signature = decode_signature(signature)?;
    if encoded.is_empty() {
        return Err(TokenError::Malformed);
    }
    let mut mac = mac(key, CALL_TOKEN_DOMAIN);
    mac.update(encoded.as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| TokenError::BadSignature)?;

    let json = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| TokenError::Malformed)?;
    let payload: Payload<'_> = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
    if now_ms >= payload.expires_at_ms {
        return Err(TokenError::Expired);
    }
    Ok(CallToken {
        call_sid: CallSid::parse(&payload.call_sid).map_err(|_| TokenError::Malformed)?,
        business_id: BusinessId::parse(&payload.business_id).map_err(|_| TokenError::Malformed)?,
        direction: payload.direction,
        expires_at_ms: payload.expires_at_ms,
        caller: payload.caller.into_owned(),
        prompt_version_id: payload.prompt_version_id.map(std::borrow::Cow::into_owned),
        experiment: match (payload.experiment_id, payload.variant) {
            (Some(id), Some(arm)) => Some((
                id.into_owned(),
                arm.parse().map_err(|_| TokenError::Malformed)?,
            )),
            (None, None) => None,
            _ => return Err(TokenError::Malformed),
        },
    })
}

/// HMAC over the outbound parameters: domain label, then each field length-prefixed (u64 big
/// endian) so no value can shift bytes into another.
/// The call's variables, when there are any, follow the same way (their compact JSON text).
fn outbound_mac(key: &[u8], business_id: &str, expires_at_ms: i64, vars: &str) -> HmacSha256 {
    let mut mac = mac(key, OUTBOUND_DOMAIN);
    let len = u64::try_from(business_id.len()).unwrap_or(u64::MAX);
    mac.update(&len.to_be_bytes());
    mac.update(business_id.as_bytes());
    mac.update(&expires_at_ms.to_be_bytes());
    if !vars.is_empty() {
        let len = u64::try_from(vars.len()).unwrap_or(u64::MAX);
        mac.update(&len.to_be_bytes());
        mac.update(vars.as_bytes());
    }
    mac
}

/// Signs the business id carried in an outbound call's webhook URL.
///
/// - `key`: the `VOXRELAY_SIGNING_KEY` secret bytes.
/// - `business_id`: any text; it is percent-encoded in the result.
/// - `expires_at_ms`: expiry, Unix epoch milliseconds (leave room for ringing: Twilio's dial
///   `Timeout` is up to 600 s, <https://www.twilio.com/docs/voice/api/call-resource>).
///
/// Returns an `application/x-www-form-urlencoded` query fragment
/// `business=ID&exp=MS&sig=SIG` (no leading `?` or `&`) to append to the webhook URL. Check the
/// parsed query with [`verify_outbound`].
pub fn sign_outbound(key: &[u8], business_id: &str, expires_at_ms: i64) -> String {
    sign_outbound_with(
        key,
        business_id,
        &std::collections::BTreeMap::new(),
        expires_at_ms,
    )
}

/// [`sign_outbound`] for a call placed with variables `vars` (`call.NAME` in the prompt): they
/// travel as `vars=JSON` (a compact JSON object of strings), covered by the signature. Check
/// with [`verify_outbound_with`].
pub fn sign_outbound_with(
    key: &[u8],
    business_id: &str,
    vars: &std::collections::BTreeMap<String, String>,
    expires_at_ms: i64,
) -> String {
    let vars = if vars.is_empty() {
        String::new()
    } else {
        // A map of strings always serialises.
        serde_json::to_string(vars).unwrap_or_default()
    };
    let signature = URL_SAFE_NO_PAD.encode(
        outbound_mac(key, business_id, expires_at_ms, &vars)
            .finalize()
            .into_bytes(),
    );
    let mut query = form_urlencoded::Serializer::new(String::new());
    query
        .append_pair(PARAM_BUSINESS, business_id)
        .append_pair(PARAM_EXPIRES, &expires_at_ms.to_string());
    if !vars.is_empty() {
        query.append_pair(PARAM_VARIABLES, &vars);
    }
    query.append_pair(PARAM_SIGNATURE, &signature).finish()
}

/// Verifies the parameters made by [`sign_outbound`] and returns the business id.
///
/// - `query_pairs`: the decoded query string pairs of the webhook request (other parameters
///   are ignored).
/// - `now_ms`: the current time, Unix epoch milliseconds.
///
/// # Errors
/// - [`TokenError::Malformed`] if `business`, `exp` or `sig` is missing or appears more than
///   once, `exp` is not an integer, or `sig` is not 32 bytes of base64url;
/// - [`TokenError::BadSignature`] if the HMAC does not match (checked in constant time);
/// - [`TokenError::Expired`] if `now_ms >= exp`.
pub fn verify_outbound(
    key: &[u8],
    query_pairs: &[(String, String)],
    now_ms: i64,
) -> Result<String, TokenError> {
    verify_outbound_with(key, query_pairs, now_ms).map(|(business_id, _)| business_id)
}

/// [`verify_outbound`] for parameters made by [`sign_outbound_with`]: the business id and the
/// call's variables (empty when there were none).
///
/// # Errors
/// As [`verify_outbound`]; [`TokenError::Malformed`] also when `vars` appears more than once
/// or is not a JSON object of strings.
pub fn verify_outbound_with(
    key: &[u8],
    query_pairs: &[(String, String)],
    now_ms: i64,
) -> Result<(String, std::collections::BTreeMap<String, String>), TokenError> {
    let business_id = single(query_pairs, PARAM_BUSINESS)?;
    let expires_at_ms: i64 = single(query_pairs, PARAM_EXPIRES)?
        .parse()
        .map_err(|_| TokenError::Malformed)?;
    let signature = decode_signature(single(query_pairs, PARAM_SIGNATURE)?)?;
    let vars = match single(query_pairs, PARAM_VARIABLES) {
        Ok(vars) => vars,
        Err(_) if !query_pairs.iter().any(|(k, _)| k == PARAM_VARIABLES) => "",
        Err(e) => return Err(e),
    };
    outbound_mac(key, business_id, expires_at_ms, vars)
        .verify_slice(&signature)
        .map_err(|_| TokenError::BadSignature)?;
    if now_ms >= expires_at_ms {
        return Err(TokenError::Expired);
    }
    let vars = if vars.is_empty() {
        std::collections::BTreeMap::new()
    } else {
        serde_json::from_str(vars).map_err(|_| TokenError::Malformed)?
    };
    Ok((business_id.to_string(), vars))
}

/// Decodes a base64url HMAC-SHA256 signature; anything but 32 bytes is malformed.
fn decode_signature(text: &str) -> Result<Vec<u8>, TokenError> {
    match URL_SAFE_NO_PAD.decode(text) {
        Ok(bytes) if bytes.len() == SIGNATURE_LEN => Ok(bytes),
        _ => Err(TokenError::Malformed),
    }
}

/// The value of a parameter that must appear exactly once.
fn single<'a>(pairs: &'a [(String, String)], name: &str) -> Result<&'a str, TokenError> {
    let mut values = pairs.iter().filter(|(k, _)| k == name).map(|(_, v)| v);
    match (values.next(), values.next()) {
        (Some(value), None) => Ok(value.as_str()),
        _ => Err(TokenError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"test signing key, 32 bytes long!";
    const NOW: i64 = 1_767_225_600_000;

    fn sample() -> CallToken {
        CallToken {
            call_sid: CallSid::parse("CA0123456789abcdef0123456789abcdef").unwrap(),
            business_id: BusinessId::parse("9b2f7c1e-4d3a-4c8b-9e6f-0a1b2c3d4e5f").unwrap(),
            direction: Direction::Inbound,
            expires_at_ms: NOW + 60_000,
            caller: String::new(),
            prompt_version_id: None,
            experiment: None,
        }
    }

    /// `payload`, whatever it is, correctly signed as a call token.
    fn signed_payload(payload: &[u8]) -> String {
        let encoded = URL_SAFE_NO_PAD.encode(payload);
        let mut mac = mac(KEY, CALL_TOKEN_DOMAIN);
        mac.update(encoded.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{encoded}.{signature}")
    }

    /// A token with every optional field set, at the longest ids voxrelay makes.
    fn longest() -> CallToken {
        CallToken {
            business_id: BusinessId::parse(&"b".repeat(64)).unwrap(),
            caller: "+123456789012345".to_string(),
            prompt_version_id: Some(format!("pv_{}", "a".repeat(32))),
            experiment: Some((
                format!("exp_{}", "e".repeat(32)),
                crate::domain::Arm::Control,
            )),
            ..sample()
        }
    }

    #[test]
    fn the_prompt_choice_and_caller_round_trip_and_fit_a_twilio_parameter() {
        let token = longest();
        let signed = sign(KEY, &token);
        // Twilio: a <Parameter> name plus value under 500 characters.
        assert!("token".len() + signed.len() < 500, "{} chars", signed.len());
        assert_eq!(verify(KEY, &signed, NOW), Ok(token));
    }

    #[test]
    fn an_experiment_without_its_arm_is_malformed() {
        let json = format!(
            r#"{{"c":"CA1","b":"biz","d":"inbound","e":{},"x":"exp_1"}}"#,
            NOW + 1
        );
        assert_eq!(
            verify(KEY, &signed_payload(json.as_bytes()), NOW),
            Err(TokenError::Malformed)
        );
    }

    fn parse_query(query: &str) -> Vec<(String, String)> {
        form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect()
    }

    #[test]
    fn round_trip() {
        let token = sample();
        let signed = sign(KEY, &token);
        assert!(signed.len() < 300, "token is {} chars", signed.len());
        assert!(
            signed
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        );
        assert_eq!(verify(KEY, &signed, NOW), Ok(token));

        let outbound = CallToken {
            direction: Direction::Outbound,
            ..sample()
        };
        assert_eq!(verify(KEY, &sign(KEY, &outbound), NOW), Ok(outbound));
    }

    #[test]
    fn tampered_payload_is_rejected() {
        let signed = sign(KEY, &sample());
        let (payload, signature) = signed.split_once('.').unwrap();
        let forged = CallToken {
            business_id: BusinessId::parse("another-business").unwrap(),
            ..sample()
        };
        let forged_payload = sign(KEY, &forged);
        let forged_payload = forged_payload.split_once('.').unwrap().0;
        assert_eq!(
            verify(KEY, &format!("{forged_payload}.{signature}"), NOW),
            Err(TokenError::BadSignature)
        );

        // Flip one character of the payload.
        let mut bytes = payload.as_bytes().to_vec();
        bytes[5] = if bytes[5] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(bytes).unwrap();
        assert_eq!(
            verify(KEY, &format!("{flipped}.{signature}"), NOW),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn wrong_key_is_rejected() {
        let signed = sign(b"another key", &sample());
        assert_eq!(verify(KEY, &signed, NOW), Err(TokenError::BadSignature));
    }

    #[test]
    fn expired_is_rejected() {
        let token = sample();
        let signed = sign(KEY, &token);
        assert_eq!(
            verify(KEY, &signed, token.expires_at_ms),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify(KEY, &signed, token.expires_at_ms - 1),
            Ok(token.clone())
        );
    }

    #[test]
    fn garbage_is_malformed() {
        for garbage in [
            "",
            ".",
            "no-dot-at-all",
            "a.b.c",
            "!!!.???",
            "eyJ9.@@@",
            "eyJ9.AAAA",
            &"A".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert_eq!(
                verify(KEY, garbage, NOW),
                Err(TokenError::Malformed),
                "{garbage:?}"
            );
        }
        // A correctly signed payload that is not the expected JSON is still malformed.
        assert_eq!(
            verify(KEY, &signed_payload(b"[1,2,3]"), NOW),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn separators_in_fields_round_trip() {
        let token = CallToken {
            call_sid: CallSid::parse("CA.-_1").unwrap(),
            business_id: BusinessId::parse("a.b-c_d.e").unwrap(),
            direction: Direction::Outbound,
            expires_at_ms: NOW + 1,
            caller: "+1 (415) \"&.".to_string(),
            ..sample()
        };
        assert_eq!(verify(KEY, &sign(KEY, &token), NOW), Ok(token.clone()));

        let odd = "a.b|c&d=e?f#g\"h'i%j k+l/m\u{e9}";
        let query = sign_outbound(KEY, odd, NOW + 1);
        assert_eq!(
            verify_outbound(KEY, &parse_query(&query), NOW),
            Ok(odd.to_string())
        );
    }

    #[test]
    fn outbound_round_trip_and_rejections() {
        let query = sign_outbound(KEY, "biz-42", NOW + 60_000);
        assert!(query.starts_with("business=biz-42&exp="));
        let mut pairs = parse_query(&format!("CallSid=CA1&{query}&From=%2B1555"));
        assert_eq!(verify_outbound(KEY, &pairs, NOW), Ok("biz-42".to_string()));

        assert_eq!(
            verify_outbound(KEY, &pairs, NOW + 60_000),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify_outbound(b"wrong key", &pairs, NOW),
            Err(TokenError::BadSignature)
        );

        // Changing the business or the expiry breaks the signature.
        let mut other_business = pairs.clone();
        for (k, v) in &mut other_business {
            if k == "business" {
                *v = "biz-43".to_string();
            }
        }
        assert_eq!(
            verify_outbound(KEY, &other_business, NOW),
            Err(TokenError::BadSignature)
        );
        let mut later = pairs.clone();
        for (k, v) in &mut later {
            if k == "exp" {
                *v = (NOW + 3_600_000).to_string();
            }
        }
        assert_eq!(
            verify_outbound(KEY, &later, NOW),
            Err(TokenError::BadSignature)
        );

        // A repeated parameter is ambiguous, so it is rejected.
        pairs.push(("business".to_string(), "biz-43".to_string()));
        assert_eq!(
            verify_outbound(KEY, &pairs, NOW),
            Err(TokenError::Malformed)
        );
        assert_eq!(verify_outbound(KEY, &[], NOW), Err(TokenError::Malformed));
        assert_eq!(
            verify_outbound(KEY, &parse_query("business=b&exp=soon&sig=AAAA"), NOW),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn outbound_variables_are_signed_with_the_business() {
        let vars: std::collections::BTreeMap<String, String> =
            [("appointment_time".to_string(), "Tuesday 10:00".to_string())].into();
        let query = sign_outbound_with(KEY, "biz-42", &vars, NOW + 60_000);
        let pairs = parse_query(&query);
        assert_eq!(
            verify_outbound_with(KEY, &pairs, NOW),
            Ok(("biz-42".to_string(), vars))
        );
        // Changed or dropped variables do not verify.
        let changed: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| {
                let v = if k == "vars" {
                    v.replace("10:00", "11:00")
                } else {
                    v.clone()
                };
                (k.clone(), v)
            })
            .collect();
        assert_eq!(
            verify_outbound_with(KEY, &changed, NOW),
            Err(TokenError::BadSignature)
        );
        let dropped: Vec<(String, String)> =
            pairs.iter().filter(|(k, _)| k != "vars").cloned().collect();
        assert_eq!(
            verify_outbound_with(KEY, &dropped, NOW),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn call_token_signature_is_not_an_outbound_signature() {
        // The same key signs both; the domain labels keep the two apart.
        let query = sign_outbound(KEY, "biz", NOW + 1);
        let pairs = parse_query(&query);
        let sig = single(&pairs, "sig").unwrap();
        let token = sign(
            KEY,
            &CallToken {
                call_sid: CallSid::parse("x").unwrap(),
                business_id: BusinessId::parse("biz").unwrap(),
                direction: Direction::Inbound,
                expires_at_ms: NOW + 1,
                ..sample()
            },
        );
        let payload = token.split_once('.').unwrap().0;
        assert_eq!(
            verify(KEY, &format!("{payload}.{sig}"), NOW),
            Err(TokenError::BadSignature)
        );
    }
}
