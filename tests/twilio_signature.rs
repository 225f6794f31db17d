//! `X-Twilio-Signature` validation against published vectors.
//!
//! The vectors are in `tests/fixtures/twilio/signature_vectors.json` (provenance in
//! `tests/fixtures/twilio/SOURCE.md`).

// Helper functions of these tests are not marked as tests, so clippy does not see them as
// such: unwrapping is as fine here as in any test.
#![allow(clippy::unwrap_used)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use voxrelay::twilio::signature::{
    compute, parse_form, validate, validate_json_body, validate_websocket,
};

struct Vector {
    name: String,
    auth_token: String,
    url: String,
    params: Vec<(String, String)>,
    expected: String,
}

fn vectors() -> Vec<Vector> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/twilio/signature_vectors.json"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let list = json["vectors"].as_array().unwrap();
    assert!(list.len() >= 10, "expected the full fixture set");
    list.iter()
        .map(|v| Vector {
            name: v["name"].as_str().unwrap().to_string(),
            auth_token: v["auth_token"].as_str().unwrap().to_string(),
            url: v["url"].as_str().unwrap().to_string(),
            params: v["params"]
                .as_array()
                .unwrap()
                .iter()
                .map(|pair| {
                    let pair = pair.as_array().unwrap();
                    assert_eq!(pair.len(), 2);
                    (
                        pair[0].as_str().unwrap().to_string(),
                        pair[1].as_str().unwrap().to_string(),
                    )
                })
                .collect(),
            expected: v["expected_signature"].as_str().unwrap().to_string(),
        })
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The F1 parameters shared by the twilio-python and twilio-node suites.
fn f1_params() -> Vec<(String, String)> {
    pairs(&[
        ("CallSid", "CA1234567890ABCDE"),
        ("Digits", "1234"),
        ("From", "+14158675309"),
        ("To", "+18005551212"),
        ("Caller", "+14158675309"),
    ])
}

/// `https` <-> `http`, `wss` -> `ws`.
fn swap_scheme(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("https://") {
        format!("http://{rest}")
    } else if let Some(rest) = url.strip_prefix("http://") {
        format!("https://{rest}")
    } else if let Some(rest) = url.strip_prefix("wss://") {
        format!("ws://{rest}")
    } else {
        panic!("unexpected scheme in {url}")
    }
}

fn flip_signature(signature: &str) -> String {
    let mut bytes = STANDARD.decode(signature).unwrap();
    bytes[0] ^= 0x01;
    STANDARD.encode(bytes)
}

#[test]
fn every_vector_computes_and_validates() {
    for v in vectors() {
        assert_eq!(
            compute(&v.auth_token, &v.url, &v.params),
            v.expected,
            "compute: {}",
            v.name
        );
        assert!(
            validate(&v.auth_token, &v.url, &v.params, &v.expected),
            "validate: {}",
            v.name
        );
    }
}

#[test]
fn default_port_is_optional_both_ways() {
    let mut checked_removed = 0;
    let mut checked_added = 0;
    for v in vectors() {
        if v.url.contains(":443/") || v.url.contains(":80/") {
            let without = v.url.replacen(":443/", "/", 1).replacen(":80/", "/", 1);
            assert!(
                validate(&v.auth_token, &without, &v.params, &v.expected),
                "{}: signed with the port, validated without",
                v.name
            );
            checked_removed += 1;
        } else if let Some(rest) = v.url.strip_prefix("https://") {
            let (host, path) = rest.split_at(rest.find('/').unwrap());
            if !host.contains(':') {
                let with = format!("https://{host}:443{path}");
                assert!(
                    validate(&v.auth_token, &with, &v.params, &v.expected),
                    "{}: signed without the port, validated with :443",
                    v.name
                );
                checked_added += 1;
            }
        }
    }
    assert!(checked_removed >= 2 && checked_added >= 4);
}

#[test]
fn non_default_port_on_https_is_dropped() {
    // twilio-python: an https URL with ":1234" validates against the port-less signature,
    // because Twilio drops the port of HTTPS voice webhooks before signing.
    assert!(validate(
        "12345",
        "https://mycompany.com:1234/myapp.php?foo=1&bar=2",
        &f1_params(),
        "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    ));
    // ...while an http URL keeps its port: the ":1234" signature is not the port-less one.
    assert!(!validate(
        "12345",
        "http://mycompany.com/myapp.php?foo=1&bar=2",
        &f1_params(),
        "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="
    ));
}

#[test]
fn credentials_in_url() {
    // twilio/twilio-node spec/validation.spec.js (token 12345, F1 params); recomputed with a
    // plain HMAC-SHA1. These signatures cover the URL including the credentials.
    let cases = [
        (
            "https://user:pass@mycompany.com/myapp.php?foo=1&bar=2",
            "CukzLTc1tT5dXEDIHm/tKBanW10=",
        ),
        (
            "https://user@mycompany.com/myapp.php?foo=1&bar=2",
            "2YRLlVAflCqxaNicjMpJcSTgzSs=",
        ),
        (
            "https://user:pass@mycompany.com:443/myapp.php?foo=1&bar=2",
            "ZQFR1PTIZXF2MXB8ZnKCvnnA+rI=",
        ),
    ];
    for (url, signature) in cases {
        assert!(validate("12345", url, &f1_params(), signature), "{url}");
    }
    // Port variant with credentials: signed with ":443", validated without.
    assert!(validate(
        "12345",
        "https://user:pass@mycompany.com/myapp.php?foo=1&bar=2",
        &f1_params(),
        "ZQFR1PTIZXF2MXB8ZnKCvnnA+rI="
    ));
    // Twilio itself drops credentials before signing: a configured URL with credentials
    // validates the credential-less signature.
    assert!(validate(
        "12345",
        "https://user:pass@mycompany.com/myapp.php?foo=1&bar=2",
        &f1_params(),
        "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    ));
}

#[test]
fn tampering_fails() {
    for v in vectors() {
        // One param value changed.
        if !v.params.is_empty() {
            let mut params = v.params.clone();
            params[0].1.push('0');
            assert!(
                !validate(&v.auth_token, &v.url, &params, &v.expected),
                "param value: {}",
                v.name
            );
            // A param removed.
            assert!(
                !validate(&v.auth_token, &v.url, &v.params[1..], &v.expected),
                "param removed: {}",
                v.name
            );
        }
        // A param added.
        let mut params = v.params.clone();
        params.push(("Extra".to_string(), "1".to_string()));
        assert!(
            !validate(&v.auth_token, &v.url, &params, &v.expected),
            "param added: {}",
            v.name
        );
        // The URL changed: host, path, scheme.
        for url in [
            v.url.replacen("com", "org", 1),
            format!("{}x", v.url),
            swap_scheme(&v.url),
        ] {
            assert!(
                !validate(&v.auth_token, &url, &v.params, &v.expected),
                "url {url}: {}",
                v.name
            );
        }
        // The signature changed, or the wrong token.
        assert!(
            !validate(
                &v.auth_token,
                &v.url,
                &v.params,
                &flip_signature(&v.expected)
            ),
            "signature: {}",
            v.name
        );
        assert!(
            !validate("54321", &v.url, &v.params, &v.expected),
            "token: {}",
            v.name
        );
    }
}

#[test]
fn malformed_signatures_are_false() {
    let v = &vectors()[0];
    for signature in [
        "",
        " ",
        "not base64!",
        "RSOYDt4T1cUTdK1PDd93/VVr8B8",   // missing padding
        "RSOYDt4T1cUTdK1PDd93_VVr8B8=",  // base64url alphabet
        " RSOYDt4T1cUTdK1PDd93/VVr8B8=", // surrounding space
        "RSOYDt4T1cUTdK1PDd93/VVr8B8=RSOY",
        "AAAA",                                         // valid base64, wrong length
        "qMztBq0IANMH/q0K9sCfKQJLylezvRdRzRS647SAVow=", // an HMAC-SHA256 signature
    ] {
        assert!(
            !validate(&v.auth_token, &v.url, &v.params, signature),
            "{signature:?}"
        );
    }
    assert!(!validate_websocket("12345", "wss://example.com/media", ""));
    assert!(!validate_websocket(
        "12345",
        "wss://example.com/media",
        "%%%"
    ));
}

#[test]
fn repeated_keys_and_order() {
    // Arrival order does not matter; duplicate values count once; values sort per key.
    let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
    let expected = "IK+Dwps556ElfBT0I3Rgjkr1wJU=";
    for params in [
        pairs(&[
            ("Digits", "1234"),
            ("Sid", "CA123"),
            ("Digits", "5678"),
            ("SidAccount", "AC123"),
        ]),
        pairs(&[
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Sid", "CA123"),
            ("Digits", "1234"),
            ("Digits", "5678"),
        ]),
    ] {
        assert_eq!(compute("12345", url, &params), expected);
    }
    // Keys sort by byte order: "Zeta" before "alpha".
    let a = compute("k", "https://x/", &pairs(&[("alpha", "1"), ("Zeta", "2")]));
    let b = compute("k", "https://x/Zeta2alpha1", &[]);
    assert_eq!(a, b);
}

#[test]
fn form_body_round_trip() {
    // The vector params, form-encoded as Twilio sends them, then parsed back.
    for v in vectors() {
        let mut serializer = form_urlencoded::Serializer::new(String::new());
        for (k, value) in &v.params {
            serializer.append_pair(k, value);
        }
        let body = serializer.finish();
        let parsed = parse_form(body.as_bytes());
        assert_eq!(parsed, v.params, "{}", v.name);
        assert!(validate(&v.auth_token, &v.url, &parsed, &v.expected));
    }
    // "+" in a phone number arrives as %2B; a literal "+" is a space and must not validate.
    let body = b"CallSid=CA1234567890ABCDE&Digits=1234&From=+14158675309&To=%2B18005551212&Caller=%2B14158675309";
    assert!(!validate(
        "12345",
        "https://mycompany.com/myapp.php?foo=1&bar=2",
        &parse_form(body),
        "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    ));
}

#[test]
fn json_body_hash() {
    // twilio-python and twilio-node suites (F1/F2), and the api-snippets body (F5).
    let url = "https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
    let body = br#"{"property": "value", "boolean": true}"#;
    assert!(validate("12345", url, &[], "a9nBmqA0ju/hNViExpshrM61xv4="));
    assert!(validate_json_body(url, body));
    assert!(!validate_json_body(
        url,
        br#"{"property": "value", "boolean": false}"#
    ));
    assert!(validate(
        "12345",
        "https://mycompany.com/myapp.php?bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620",
        &[],
        "y77kIzt2vzLz71DgmJGsen2scGs="
    ));
    assert!(validate_json_body(
        "https://example.com/myapp?bodySHA256=5ccde7145dfb8f56479710896586cb9d5911809d83afbe34627818790db0aec9",
        br#"{"CallSid":"CA1234567890ABCDE","Caller":"+12349013030"}"#
    ));
    // twilio-node: body "{}" signed over the URL with ":443" only.
    let empty_url = "https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256=44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
    assert!(validate(
        "12345",
        empty_url,
        &[],
        "Ldidvp12m26NI7eqEvxnEpkd9Hc="
    ));
    assert!(validate_json_body(empty_url, b"{}"));
    assert!(!validate_json_body(
        "https://mycompany.com/myapp.php?foo=1",
        b"{}"
    ));
}

#[test]
fn websocket_handshake_vectors() {
    // twilio.md §3.5, computed with the twilio 9.13.0 Python package.
    let without_slash = "7PR3qMkpDyEJtMrVOY/LDyNq8J8=";
    let with_slash = "T+WBXwUXC0/CyoZ1DA+p9ilZORs=";
    assert!(validate_websocket(
        "12345",
        "wss://example.com/media",
        without_slash
    ));
    assert!(validate_websocket(
        "12345",
        "wss://example.com/media/",
        with_slash
    ));
    // Either form of the trailing slash is tried.
    assert!(validate_websocket(
        "12345",
        "wss://example.com/media",
        with_slash
    ));
    assert!(validate_websocket(
        "12345",
        "wss://example.com/media/",
        without_slash
    ));
    // Default port tolerated.
    assert!(validate_websocket(
        "12345",
        "wss://example.com:443/media",
        without_slash
    ));
    // Wrong scheme, path, token or signature.
    assert!(!validate_websocket(
        "12345",
        "https://example.com/media",
        without_slash
    ));
    assert!(!validate_websocket(
        "12345",
        "wss://example.com/medi",
        without_slash
    ));
    assert!(!validate_websocket(
        "54321",
        "wss://example.com/media",
        without_slash
    ));
    assert!(!validate_websocket(
        "12345",
        "wss://example.com/media",
        &flip_signature(without_slash)
    ));
}
