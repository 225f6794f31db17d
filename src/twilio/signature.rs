//! `X-Twilio-Signature` validation for voice webhooks and the Media Streams WebSocket handshake.
//!
//! Twilio signs every request it sends with HMAC-SHA1 keyed by the account's primary Auth Token.
//! The signed string is the full URL Twilio requested (scheme through query string, exactly as
//! configured) followed, for form-encoded POSTs, by each field name and value with no delimiter,
//! names in byte order. The digest is sent base64-encoded (standard alphabet, padded) in the
//! `X-Twilio-Signature` header.
//!
//! Sources:
//! - <https://www.twilio.com/docs/usage/security#validating-requests> (algorithm, port rules,
//!   trailing slash for WebSocket handshakes, `bodySHA256`)
//! - <https://www.twilio.com/docs/usage/webhooks/webhooks-security>
//! - `twilio/twilio-python` `twilio/request_validator.py` and `twilio/twilio-node`
//!   `src/webhooks/webhooks.ts` (repeated keys: unique names sorted, each name's unique values
//!   sorted; the validator tries the URL without its port and with the default port)
//! - project notes: `shared/protocol/twilio.md` §3
//!
//! Form fields must be kept exactly as received: every field (Twilio adds new ones without
//! notice), in arrival order, duplicates included, values percent-decoded but never trimmed.
//! [`parse_form`] does that.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

type HmacSha1 = Hmac<Sha1>;

/// Length in bytes of an HMAC-SHA1 digest, the decoded size of a valid `X-Twilio-Signature`.
const DIGEST_LEN: usize = 20;

/// Raw HMAC-SHA1 over `url` followed by the sorted, de-duplicated `params`.
fn digest(auth_token: &str, url: &str, params: &[(String, String)]) -> [u8; DIGEST_LEN] {
    // Each distinct name once, in byte order; for each name its distinct values, in byte order
    // (twilio-python and twilio-node both do this; Twilio's docs are silent on repeated keys).
    let mut fields: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (name, value) in params {
        fields
            .entry(name.as_str())
            .or_default()
            .insert(value.as_str());
    }
    // HMAC accepts keys of any length: `new_from_slice` cannot fail for it.
    let mut mac = HmacSha1::new_from_slice(auth_token.as_bytes())
        .expect("HMAC-SHA1 accepts keys of any length");
    mac.update(url.as_bytes());
    for (name, values) in fields {
        for value in values {
            mac.update(name.as_bytes());
            mac.update(value.as_bytes());
        }
    }
    mac.finalize().into_bytes().into()
}

/// Computes the `X-Twilio-Signature` Twilio would send for a request.
///
/// - `auth_token`: the account's primary Auth Token (the HMAC key, used as UTF-8 bytes).
/// - `url`: the full URL as Twilio requested it, query string included, used verbatim (no port or
///   credential normalisation; [`validate`] tries the variants).
/// - `params`: the decoded form fields in arrival order; duplicates allowed. Pass `&[]` for a
///   `GET` (its fields are already in the URL) or a JSON body.
///
/// Returns `base64(HMAC-SHA1(auth_token, url + for each distinct name in byte order: name + value
/// for each of its distinct values in byte order))`, standard alphabet with `=` padding (28
/// characters).
///
/// Source: <https://www.twilio.com/docs/usage/security#validating-requests>; repeated keys as in
/// `twilio/twilio-python` `twilio/request_validator.py`.
pub fn compute(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    STANDARD.encode(digest(auth_token, url, params))
}

/// Checks an `X-Twilio-Signature` header value for a form-encoded (or `GET`) request.
///
/// The signature is accepted when it matches the URL:
/// - as given;
/// - with its port removed (Twilio drops any port before signing voice webhooks over HTTPS);
/// - with the scheme's default port added when it has none (`:443` for `https`/`wss`, `:80` for
///   `http`/`ws`), as the official SDKs also accept;
///
/// and each of these again with any `user:pass@` credentials removed (Twilio drops them before
/// signing). Every candidate is compared in constant time and all candidates are always checked.
///
/// Returns `false` for an empty, non-base64 or wrong-length `signature`; never panics on input.
/// `params` are the decoded form fields in arrival order, duplicates included (see [`parse_form`]).
/// For a JSON body pass `&[]` here and check the body with [`validate_json_body`].
///
/// Sources: <https://www.twilio.com/docs/usage/security#validating-requests> (port and
/// credential rules), `twilio/twilio-python` `RequestValidator.validate` (tries the URL without
/// its port and with the default port).
pub fn validate(auth_token: &str, url: &str, params: &[(String, String)], signature: &str) -> bool {
    let Some(expected) = decode_signature(signature) else {
        return false;
    };
    let mut matched = Choice::from(0);
    for candidate in url_variants(url) {
        matched |= digest(auth_token, &candidate, params).ct_eq(&expected);
    }
    matched.into()
}

/// Checks the `bodySHA256` query parameter of `url` against the raw request `body`.
///
/// For `application/json` bodies Twilio appends `bodySHA256=<lowercase hex SHA-256 of the raw
/// body>` to the URL and signs the URL alone; a full check is
/// `validate(token, url, &[], sig) && validate_json_body(url, body)`.
///
/// Returns `false` when the URL has no query string, no `bodySHA256` parameter, more than one of
/// them, or a hash (hex, case-insensitive) that differs from the body's. Compared in constant time.
///
/// Source: <https://www.twilio.com/docs/usage/security#validating-requests> ("Validating
/// requests with a JSON body"); `twilio/twilio-python` `RequestValidator.compute_hash` (hex).
pub fn validate_json_body(url: &str, body: &[u8]) -> bool {
    let without_fragment = url.split('#').next().unwrap_or(url);
    let Some((_, query)) = without_fragment.split_once('?') else {
        return false;
    };
    let mut hashes = form_urlencoded::parse(query.as_bytes())
        .filter(|(name, _)| name == "bodySHA256")
        .map(|(_, value)| value.to_ascii_lowercase());
    let (Some(given), None) = (hashes.next(), hashes.next()) else {
        return false;
    };
    let actual = hex_lower(&Sha256::digest(body));
    given.as_bytes().ct_eq(actual.as_bytes()).into()
}

/// Checks the `X-Twilio-Signature` of a Media Streams WebSocket upgrade request.
///
/// - `wss_url`: the public `wss://` URL exactly as written in the TwiML `<Stream url>` (not the
///   `https://` or inner `http://` URL the server sees; rebuild it from configuration).
/// - `signature`: the header value from the upgrade `GET`.
///
/// Twilio signs that URL with no parameters. The URL is tried as given and with its trailing
/// `/` toggled (added when absent, removed when present), each with the port variants of
/// [`validate`]. Returns `false` for a malformed signature.
///
/// Sources: <https://www.twilio.com/docs/usage/security> ("For voice WSS handshake requests: …
/// try appending a trailing `/`"); `twilio/twilio-agent-connect-python`
/// `src/tac/server/signature_validation.py` ("Twilio signs the wss:// URL it connects to").
pub fn validate_websocket(auth_token: &str, wss_url: &str, signature: &str) -> bool {
    let (path_part, query) = match wss_url.find(['?', '#']) {
        Some(at) => wss_url.split_at(at),
        None => (wss_url, ""),
    };
    let toggled = match path_part.strip_suffix('/') {
        Some(stripped) => format!("{stripped}{query}"),
        None => format!("{path_part}/{query}"),
    };
    // Evaluate both so the time taken does not depend on which form matched.
    let as_given = validate(auth_token, wss_url, &[], signature);
    let with_slash_toggled = validate(auth_token, &toggled, &[], signature);
    as_given | with_slash_toggled
}

/// Decodes an `application/x-www-form-urlencoded` body into `(name, value)` pairs.
///
/// Keeps arrival order and duplicates, decodes `+` and `%XX` (invalid UTF-8 becomes U+FFFD),
/// and does not trim. This is the shape [`compute`] and [`validate`] expect.
///
/// Source: <https://url.spec.whatwg.org/#application/x-www-form-urlencoded> (via the
/// `form_urlencoded` crate).
pub fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// Decodes a header value to the 20 digest bytes, or `None` if it is not one.
fn decode_signature(signature: &str) -> Option<[u8; DIGEST_LEN]> {
    let bytes = STANDARD.decode(signature.as_bytes()).ok()?;
    bytes.try_into().ok()
}

fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0F)]));
    }
    out
}

/// A URL split around its authority: `scheme://[userinfo@]host[:port]rest`.
struct UrlParts<'a> {
    scheme: &'a str,
    userinfo: Option<&'a str>,
    host: &'a str,
    port: Option<&'a str>,
    rest: &'a str,
}

impl<'a> UrlParts<'a> {
    fn parse(url: &'a str) -> Option<Self> {
        let (scheme, after_scheme) = url.split_once("://")?;
        if scheme.is_empty()
            || !scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        {
            return None;
        }
        let authority_end = after_scheme
            .find(['/', '?', '#'])
            .unwrap_or(after_scheme.len());
        let (authority, rest) = after_scheme.split_at(authority_end);
        let (userinfo, host_port) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        // The port follows the last ':' unless that colon is inside an IPv6 literal `[...]`.
        let (host, port) = match host_port.rfind(':') {
            Some(colon) if !host_port[colon..].contains(']') => {
                let port = &host_port[colon + 1..];
                if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
                    (&host_port[..colon], Some(port))
                } else {
                    (host_port, None)
                }
            }
            _ => (host_port, None),
        };
        if host.is_empty() {
            return None;
        }
        Some(UrlParts {
            scheme,
            userinfo,
            host,
            port,
            rest,
        })
    }

    fn default_port(&self) -> Option<&'static str> {
        let scheme = self.scheme.to_ascii_lowercase();
        match scheme.as_str() {
            "https" | "wss" => Some("443"),
            "http" | "ws" => Some("80"),
            _ => None,
        }
    }

    fn build(&self, userinfo: Option<&str>, port: Option<&str>) -> String {
        let mut out =
            String::with_capacity(self.scheme.len() + self.host.len() + self.rest.len() + 32);
        out.push_str(self.scheme);
        out.push_str("://");
        if let Some(userinfo) = userinfo {
            out.push_str(userinfo);
            out.push('@');
        }
        out.push_str(self.host);
        if let Some(port) = port {
            out.push(':');
            out.push_str(port);
        }
        out.push_str(self.rest);
        out
    }
}

/// The distinct URLs a signature may have been computed over (see [`validate`]).
fn url_variants(url: &str) -> Vec<String> {
    let mut variants = vec![url.to_string()];
    let Some(parts) = UrlParts::parse(url) else {
        return variants;
    };
    let mut ports = vec![parts.port];
    if parts.port.is_some() {
        ports.push(None);
    } else if let Some(default) = parts.default_port() {
        ports.push(Some(default));
    }
    let mut userinfos = vec![parts.userinfo];
    if parts.userinfo.is_some() {
        userinfos.push(None);
    }
    for &userinfo in &userinfos {
        for &port in &ports {
            let candidate = parts.build(userinfo, port);
            if !variants.contains(&candidate) {
                variants.push(candidate);
            }
        }
    }
    variants
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn docs_worked_example() {
        // https://www.twilio.com/docs/usage/security#validating-requests
        let params = pairs(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675310"),
            ("Digits", "1234"),
            ("From", "+14158675310"),
            ("To", "+18005551212"),
        ]);
        assert_eq!(
            compute(
                "12345",
                "https://example.com/myapp.php?foo=1&bar=2",
                &params
            ),
            "L/OH5YylLD5NRKLltdqwSvS0BnU="
        );
    }

    #[test]
    fn url_variants_cover_ports_and_credentials() {
        let v = url_variants("https://u:p@h.example:8443/x?y=1");
        assert!(v.contains(&"https://u:p@h.example:8443/x?y=1".to_string()));
        assert!(v.contains(&"https://u:p@h.example/x?y=1".to_string()));
        assert!(v.contains(&"https://h.example:8443/x?y=1".to_string()));
        assert!(v.contains(&"https://h.example/x?y=1".to_string()));
        assert_eq!(v.len(), 4);

        let v = url_variants("ws://[::1]/m");
        assert_eq!(
            v,
            vec!["ws://[::1]/m".to_string(), "ws://[::1]:80/m".to_string()]
        );

        assert_eq!(url_variants("not a url"), vec!["not a url".to_string()]);
    }

    #[test]
    fn json_body_hash() {
        // twilio/twilio-python tests/unit/test_request_validator.py
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
        let body = br#"{"property": "value", "boolean": true}"#;
        assert!(validate_json_body(url, body));
        assert!(!validate_json_body(url, b"{}"));
        assert!(!validate_json_body("https://mycompany.com/myapp.php", body));
        assert!(validate("12345", url, &[], "a9nBmqA0ju/hNViExpshrM61xv4="));
    }

    #[test]
    fn parse_form_keeps_order_duplicates_and_spaces() {
        let form = parse_form(b"B=2&A=%20x+&B=1&Empty=");
        assert_eq!(
            form,
            pairs(&[("B", "2"), ("A", " x "), ("B", "1"), ("Empty", "")])
        );
    }
}
