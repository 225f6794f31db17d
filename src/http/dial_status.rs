//! `POST /twilio/dial-status/{instance}`: the `<Dial action>` callback of a transfer
//! (`transfer_call`), telling how the dial to the person ended. Signature-checked like the
//! voice webhook (403 and nothing recorded on failure); the outcome is recorded on the call,
//! and the answer is the TwiML the call runs next: `<Hangup/>` when the person answered, else
//! a new `<Connect><Stream>` that brings the caller back to the assistant
//! ([`crate::call::transfer`]). The `{instance}` segment names the instance holding the
//! call's conversation, for a load balancer to route on; any instance can answer.
//!
//! Source: <https://www.twilio.com/docs/voice/twiml/dial#action> (`DialCallStatus`,
//! `DialCallDuration`; the TwiML answered replaces the rest of the call's document).

use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::call::service::DialEnded;
use crate::call::transfer::ActionQuery;
use crate::domain::{CallSid, TransferOutcome};
use crate::http::webhook::{field, seconds, signed_form};
use crate::http::{AppError, AppState};
use crate::twilio::twiml;

/// The dial action handler.
pub async fn dial_status(
    State(state): State<AppState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    let params = signed_form(&state, &uri, &headers, &body, "dial action callback")?;
    let ended = read_dial(&params, uri.query().unwrap_or(""))?;
    let next = state.calls.transfer_ended(ended).await;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, twiml::CONTENT_TYPE)],
        next,
    )
        .into_response())
}

/// The dial's end a signed callback's fields (and its URL's `query`) describe.
///
/// Errors: [`AppError::BadRequest`] for a missing or malformed `CallSid`, an unknown
/// `DialCallStatus`, a `DialCallDuration` that is not a whole number of seconds, or an action
/// URL without its target or token.
pub fn read_dial(params: &[(String, String)], query: &str) -> Result<DialEnded, AppError> {
    let call_sid = CallSid::parse(field(params, "CallSid").unwrap_or(""))
        .map_err(|e| AppError::BadRequest(e.to_string()))?;
    let status = field(params, "DialCallStatus").unwrap_or("");
    let outcome = TransferOutcome::from_dial_status(status).ok_or_else(|| {
        AppError::BadRequest(
            "DialCallStatus is not one of completed, answered, busy, no-answer, failed, canceled"
                .into(),
        )
    })?;
    let duration_s = seconds(params, "DialCallDuration")?;
    let query = ActionQuery::parse(query).map_err(AppError::BadRequest)?;
    Ok(DialEnded {
        call_sid,
        query,
        outcome,
        duration_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_dial_end_is_read_and_bad_fields_are_named() {
        let sid = "CA0123456789abcdef0123456789abcdef";
        let ended = read_dial(
            &form(&[
                ("CallSid", sid),
                ("DialCallStatus", "no-answer"),
                ("DialCallDuration", "0"),
            ]),
            "target=front+desk&token=t",
        )
        .unwrap();
        assert_eq!(ended.outcome, TransferOutcome::NoAnswer);
        assert_eq!(ended.query.target, "front desk");
        assert_eq!(ended.duration_s, Some(0));
        let answered = read_dial(
            &form(&[("CallSid", sid), ("DialCallStatus", "completed")]),
            "target=x&token=t",
        )
        .unwrap();
        assert_eq!(answered.outcome, TransferOutcome::Answered);
        for (bad, query, named) in [
            (
                form(&[("CallSid", sid), ("DialCallStatus", "ringing")]),
                "target=x&token=t",
                "DialCallStatus",
            ),
            (
                form(&[("DialCallStatus", "busy")]),
                "target=x&token=t",
                "CallSid",
            ),
            (
                form(&[("CallSid", sid), ("DialCallStatus", "busy")]),
                "token=t",
                "target",
            ),
            (
                form(&[
                    ("CallSid", sid),
                    ("DialCallStatus", "busy"),
                    ("DialCallDuration", "soon"),
                ]),
                "target=x&token=t",
                "DialCallDuration",
            ),
        ] {
            let err = read_dial(&bad, query).err().map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|e| e.contains(named)),
                "{named}: {err:?}"
            );
        }
    }
}
