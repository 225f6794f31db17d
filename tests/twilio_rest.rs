//! Contract tests of the Twilio REST client (`src/twilio/rest.rs`) against Stoplight Prism
//! serving Twilio's own OpenAPI description (`tests/fixtures/twilio/openapi/`, see its
//! SOURCE.md). Prism validates every request against the schema: a request that does not
//! match answers 422 with the problems listed.
//!
//! Prism is found at `VOXRELAY_PRISM` (the `prism` executable; `.ci/run` installs it with npm).
//! Without it the tests are skipped, saying so, unless `VOXRELAY_REQUIRE_TOOLS=1`.

use std::time::Duration;

use voxrelay::domain::CallSid;
use voxrelay::twilio::rest::{RestClient, RestError};
use voxrelay::twilio::twiml;
use voxrelay_sim::prism::Prism;

const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
const CALL: &str = "CA0123456789abcdef0123456789abcdef";

fn prism() -> Option<Prism> {
    Prism::start("Twilio REST contract test")
}

fn client(prism: &Prism, token: &str) -> RestClient {
    voxrelay::install_crypto_provider();
    RestClient::new(
        &prism.url,
        voxrelay::twilio::rest::Credentials::auth_token(token),
        Duration::from_secs(10),
    )
    .expect("client")
}

#[tokio::test]
async fn the_fallback_redirect_and_a_placed_call_pass_twilios_schema() {
    let Some(prism) = prism() else { return };
    let rest = client(&prism, "token");
    let call = CallSid::parse(CALL).unwrap();
    for doc in [
        twiml::say_in_and_dial("Connecting you now.", "en-US", "+15551234567"),
        twiml::say_in_and_hangup("Lo sentimos. Adiós.", "es-ES"),
    ] {
        let updated = rest.redirect_call(ACCOUNT, &call, &doc).await;
        let updated = updated.unwrap_or_else(|e| panic!("Prism refused the redirect: {e}"));
        assert!(updated.sid.starts_with("CA"), "{updated:?}");
    }
    let placed = rest
        .create_call(
            ACCOUNT,
            &[
                ("To", "+15551234567"),
                ("From", "+15557654321"),
                ("Url", "https://voice.example.com/twilio/voice"),
            ],
        )
        .await
        .unwrap_or_else(|e| panic!("Prism refused the call: {e}"));
    assert!(placed.sid.starts_with("CA"), "{placed:?}");
}

#[tokio::test]
async fn requests_outside_the_schema_are_refused_with_the_reason() {
    let Some(prism) = prism() else { return };
    let rest = client(&prism, "token");
    // `From` is required to place a call: the mock (and Twilio) refuse it.
    let err = rest
        .create_call(ACCOUNT, &[("To", "+15551234567")])
        .await
        .unwrap_err();
    match err {
        RestError::Rejected {
            status, message, ..
        } => {
            assert_eq!(status, 422);
            assert!(!message.is_empty());
        }
        other => panic!("expected a 422, got {other}"),
    }
}
