//! The human fallback: where a call goes when no model can take it, as its business says.
//!
//! A call falls back when every upstream's breaker is open at its webhook (the webhook answers
//! with [`twiml_for`] itself: no stream, no REST request), when no upstream session can be had
//! at its media stream's start, when a
//! mid-call reconnect fails within its budget (or none may be tried), and when an upstream
//! session opens but sends no greeting audio within `fallback.greeting_budget_ms`. It goes to
//! its business's own line (`businesses.fallback` holding an E.164 number, else the
//! configured `fallback.number`), with a short line first, or hears a spoken apology in the
//! business's language and is hung up on (`businesses.fallback = 'apology'`, or no number
//! anywhere).
//!
//! The call is redirected with Twilio's REST API (`Calls/{CallSid}` update with `Twiml`,
//! [`RestClient::redirect_call`]) *while its media stream is still open*: a `<Connect>` whose
//! stream closes goes on to the next verb of the webhook's TwiML, of which there is none, so
//! the call would end, and Twilio then refuses the update (error 21220, the call is not in
//! progress). Sources: <https://www.twilio.com/docs/voice/twiml/connect>,
//! <https://www.twilio.com/docs/voice/api/call-resource#update-a-call-resource>.
//!
//! Decisions: the fallback never turns a failed call into a good one (the call keeps its
//! failure end reason; the fallback is its timeline's `fallback` event and
//! `voxrelay_call_fallbacks_total`). Without a Twilio auth token, or when the call's `start`
//! carries no Account SID, nothing can be redirected: the call ends as it did before (Twilio
//! hangs up), and the fallback is counted as not delivered.

use std::time::Duration;

use crate::call::setup::CallSetup;
use crate::config::Config;
use crate::domain::{CallSid, EndReason, FallbackAction};
use crate::telemetry::metrics::{FallbackLabels, Metrics};
use crate::twilio::rest::{Auth, Credentials, RestClient, RestError};
use crate::twilio::twiml;

/// Where one call falls back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FallbackTarget {
    /// Put the caller through to this E.164 number (the business's own line).
    Dial(String),
    /// Apologise in the business's language and hang up.
    Apology,
}

/// The stored word for [`FallbackTarget::Apology`] in `businesses.fallback`.
pub const APOLOGY: &str = "apology";

impl FallbackTarget {
    /// The target for a business whose `businesses.fallback` is `stored` (`None`: the default,
    /// `"apology"`, or an E.164 number) when the configured default number is `default_number`
    /// (`""`: the apology). A stored value that is neither (written before it was checked)
    /// gives the apology, which never rings a wrong number.
    pub fn choose(stored: Option<&str>, default_number: &str) -> FallbackTarget {
        let number = match stored.map(str::trim) {
            None | Some("") => default_number.trim(),
            Some(APOLOGY) => return FallbackTarget::Apology,
            Some(number) => number,
        };
        match crate::store::normalize_e164(number) {
            Ok(number) => FallbackTarget::Dial(number),
            Err(_) => FallbackTarget::Apology,
        }
    }

    /// Its action, for the timeline and the metrics.
    pub fn action(&self) -> FallbackAction {
        match self {
            FallbackTarget::Dial(_) => FallbackAction::Dial,
            FallbackTarget::Apology => FallbackAction::Apology,
        }
    }
}

/// What the caller hears in one language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lines {
    /// The ISO 639-1 code the lines are for.
    pub code: &'static str,
    /// The `<Say language>` that reads them (a Twilio Say language).
    pub say_language: &'static str,
    /// Before a hang-up.
    pub apology: &'static str,
    /// Before the call is put through to the business's line.
    pub connecting: &'static str,
}

/// The languages shipped; the first is the default.
const LINES: [Lines; 4] = [
    Lines {
        code: "en",
        say_language: "en-US",
        apology: crate::call::service::SETUP_FAILED_SORRY,
        connecting: "Sorry, our assistant is unavailable. Connecting you to our team now.",
    },
    Lines {
        code: "es",
        say_language: "es-ES",
        apology: "Lo sentimos, no podemos atender su llamada en este momento. \
                  Por favor, inténtelo más tarde. Adiós.",
        connecting: "Lo sentimos, nuestro asistente no está disponible. \
                     Le pasamos ahora con nuestro equipo.",
    },
    Lines {
        code: "fr",
        say_language: "fr-FR",
        apology: "Désolés, nous ne pouvons pas prendre votre appel pour le moment. \
                  Veuillez rappeler plus tard. Au revoir.",
        connecting: "Désolés, notre assistant n'est pas disponible. \
                     Nous vous mettons en relation avec notre équipe.",
    },
    Lines {
        code: "de",
        say_language: "de-DE",
        apology: "Entschuldigung, wir können Ihren Anruf gerade nicht entgegennehmen. \
                  Bitte versuchen Sie es später noch einmal. Auf Wiederhören.",
        connecting: "Entschuldigung, unser Assistent ist gerade nicht erreichbar. \
                     Wir verbinden Sie jetzt mit unserem Team.",
    },
];

/// The lines for `language` (an ISO 639-1 code, any case; `None` or one not shipped gives
/// English).
pub fn lines_for(language: Option<&str>) -> &'static Lines {
    let wanted = language.unwrap_or("en");
    LINES
        .iter()
        .find(|l| l.code.eq_ignore_ascii_case(wanted))
        .unwrap_or(&LINES[0])
}

/// The TwiML a call is redirected to: the connecting line and a `<Dial>`, or the apology and a
/// `<Hangup/>`, in `language` (ISO 639-1).
pub fn twiml_for(target: &FallbackTarget, language: Option<&str>) -> String {
    let lines = lines_for(language);
    match target {
        FallbackTarget::Dial(number) => {
            twiml::say_in_and_dial(lines.connecting, lines.say_language, number)
        }
        FallbackTarget::Apology => twiml::say_in_and_hangup(lines.apology, lines.say_language),
    }
}

/// Whether a call that ended as `reason` goes to its fallback: its upstream session was lost
/// and not replaced, or never greeted. A hang-up, a Twilio fault, a drain or a refusal does not.
pub fn falls_back(reason: EndReason) -> bool {
    reason.is_upstream_loss()
        || matches!(
            reason,
            EndReason::UpstreamLost | EndReason::NoGreeting | EndReason::UpstreamUnavailable
        )
}

/// Counts a fallback of `action` in `voxrelay_call_fallbacks_total`, `delivered` or not.
pub fn count(metrics: &Metrics, action: FallbackAction, delivered: bool) {
    metrics
        .call_fallbacks
        .get_or_create(&FallbackLabels {
            action: action.as_str(),
            delivered: if delivered { "true" } else { "false" },
        })
        .inc();
}

/// Why a fallback could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum FallbackError {
    /// No Twilio auth token is configured (`TWILIO_AUTH_TOKEN`), so no call can be redirected.
    #[error("no Twilio auth token: the call cannot be redirected")]
    NoCredentials,
    /// Twilio's REST API failed or refused the redirect.
    #[error(transparent)]
    Rest(#[from] RestError),
}

/// Redirects calls to their fallback: the instance's REST client, if it has credentials.
#[derive(Debug, Clone)]
pub struct Fallbacks {
    rest: Option<RestClient>,
}

impl Fallbacks {
    /// From `[fallback]` and the Twilio REST credentials (an empty auth token: none, and no
    /// call is redirected). A client that cannot be built is logged, and the instance runs
    /// without fallbacks.
    pub fn new(config: &Config, credentials: &Credentials) -> Fallbacks {
        if matches!(&credentials.auth, Auth::AuthToken(token) if token.is_empty()) {
            return Fallbacks { rest: None };
        }
        crate::install_crypto_provider();
        let rest = RestClient::new(
            &config.fallback.twilio_api_url,
            credentials.clone(),
            Duration::from_millis(config.fallback.rest_timeout_ms),
        );
        match rest {
            Ok(rest) => Fallbacks { rest: Some(rest) },
            Err(e) => {
                tracing::error!(error = %e, "cannot build the Twilio REST client; calls will not fall back");
                Fallbacks { rest: None }
            }
        }
    }

    /// The REST client, when there are credentials (a transfer redirects calls with it too).
    pub fn rest(&self) -> Option<&RestClient> {
        self.rest.as_ref()
    }

    /// Fallbacks that are never delivered (no credentials).
    pub fn disabled() -> Fallbacks {
        Fallbacks { rest: None }
    }

    /// Sends the call `call_sid` (of account `account_sid`, from its stream's `start`) set up
    /// as `setup` to its fallback because it ended as `why`: logs the decision (CallSid,
    /// business, action, reason; never the number), counts it
    /// (`voxrelay_call_fallbacks_total`) and returns what was done and whether Twilio took it.
    /// Takes at most `fallback.rest_timeout_ms`. Never fails: a redirect that cannot be made
    /// is logged, and the call ends as it would have without one.
    pub async fn fall_back(
        &self,
        account_sid: &str,
        call_sid: &CallSid,
        setup: &CallSetup,
        why: EndReason,
        metrics: &Metrics,
    ) -> (FallbackAction, bool) {
        let action = setup.fallback.action();
        let result = self
            .deliver(
                account_sid,
                call_sid,
                &setup.fallback,
                setup.session.language.as_deref(),
            )
            .await;
        let delivered = match result {
            Ok(()) => {
                tracing::warn!(%call_sid, business_id = %setup.business_id, %action, end_reason = %why,
                    "no model can take the call: sent to the business's fallback");
                true
            }
            Err(e) => {
                tracing::error!(%call_sid, business_id = %setup.business_id, %action, end_reason = %why,
                    error = %e, "no model can take the call and its fallback could not be reached");
                false
            }
        };
        count(metrics, action, delivered);
        (action, delivered)
    }

    /// Redirects the live call `call_sid` of account `account_sid` to `target`, spoken in
    /// `language` (ISO 639-1). Takes at most `fallback.rest_timeout_ms`.
    ///
    /// Errors: [`FallbackError`]; the caller logs it (the call ends as it would have anyway).
    pub async fn deliver(
        &self,
        account_sid: &str,
        call_sid: &CallSid,
        target: &FallbackTarget,
        language: Option<&str>,
    ) -> Result<(), FallbackError> {
        let rest = self.rest.as_ref().ok_or(FallbackError::NoCredentials)?;
        rest.redirect_call(account_sid, call_sid, &twiml_for(target, language))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_business_number_beats_the_default_and_apology_beats_both() {
        let default = "+15550100";
        assert_eq!(
            FallbackTarget::choose(None, "+15005550006"),
            FallbackTarget::Dial("+15005550006".into())
        );
        assert_eq!(
            FallbackTarget::choose(Some("+442071838750"), "+15005550006"),
            FallbackTarget::Dial("+442071838750".into())
        );
        assert_eq!(
            FallbackTarget::choose(Some(APOLOGY), "+15005550006"),
            FallbackTarget::Apology
        );
        assert_eq!(FallbackTarget::choose(None, ""), FallbackTarget::Apology);
        assert_eq!(
            FallbackTarget::choose(Some(""), "+15005550006"),
            FallbackTarget::Dial("+15005550006".into())
        );
        // Not a number: never dialled.
        assert_eq!(
            FallbackTarget::choose(Some("front desk"), default),
            FallbackTarget::Apology
        );
    }

    #[test]
    fn the_twiml_speaks_the_business_language_and_dials_or_hangs_up() {
        let dial = twiml_for(&FallbackTarget::Dial("+15005550006".into()), Some("es"));
        assert!(dial.contains(r#"<Say language="es-ES">Lo sentimos, nuestro asistente"#));
        assert!(dial.ends_with("<Dial>+15005550006</Dial></Response>"));
        let apology = twiml_for(&FallbackTarget::Apology, Some("DE"));
        assert!(apology.contains(r#"<Say language="de-DE">Entschuldigung, wir können"#));
        assert!(apology.ends_with("<Hangup/></Response>"));
        let unknown = twiml_for(&FallbackTarget::Apology, Some("ja"));
        assert!(unknown.contains(crate::call::service::SETUP_FAILED_SORRY));
        for lines in LINES {
            assert!(!lines.apology.contains("  "), "{}", lines.code);
            assert!(!lines.connecting.contains("  "), "{}", lines.code);
        }
    }

    #[tokio::test]
    async fn without_credentials_nothing_is_sent() {
        let result = Fallbacks::disabled()
            .deliver(
                "AC00000000000000000000000000000000",
                &CallSid::parse("CA00000000000000000000000000000000").expect("a CallSid"),
                &FallbackTarget::Apology,
                None,
            )
            .await;
        assert!(matches!(result, Err(FallbackError::NoCredentials)));
    }
}
