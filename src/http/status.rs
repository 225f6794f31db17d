//! `POST /twilio/status`: Twilio's status callback (the `StatusCallback` URL of a call the
//! proxy places, and of any number configured with it). Signature-checked like the voice
//! webhook (403 and nothing recorded on failure); each report (`CallStatus`, `CallDuration`,
//! `AnsweredBy`) is recorded on the call through the call record writer, so a database outage
//! loses none, and answered 204.
//!
//! Source: <https://www.twilio.com/docs/voice/api/call-resource#statuscallback> (the fields
//! and the status values).

use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode};

use crate::call::records::Record;
use crate::domain::{CallSid, CallStatus};
use crate::http::webhook::{field, seconds, signed_form};
use crate::http::{AppError, AppState};
use crate::store::CallStatusReport;

/// The status callback handler.
pub async fn status(
    State(state): State<AppState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, AppError> {
    let params = signed_form(&state, &uri, &headers, &body, "status callback")?;
    let report = read_status(&params, crate::store::now_ms())?;
    tracing::info!(call_sid = %report.call_sid, status = %report.status,
        duration_s = report.duration_s.unwrap_or(-1),
        answered_by = report.answered_by.as_deref().unwrap_or(""), "status callback");
    state.calls.records().write(Record::Status(report));
    Ok(StatusCode::NO_CONTENT)
}

/// The report a signed status callback's fields describe, received at `at_ms`.
///
/// Errors: [`AppError::BadRequest`] for a missing or malformed `CallSid`, an unknown
/// `CallStatus`, or a `CallDuration` that is not a whole number of seconds.
pub fn read_status(params: &[(String, String)], at_ms: i64) -> Result<CallStatusReport, AppError> {
    let call_sid = field(params, "CallSid").unwrap_or("");
    let call_sid = CallSid::parse(call_sid).map_err(|e| AppError::BadRequest(e.to_string()))?;
    let status = field(params, "CallStatus")
        .unwrap_or("")
        .parse::<CallStatus>()
        .map_err(|e| AppError::BadRequest(e.to_string()))?;
    let duration_s = seconds(params, "CallDuration")?;
    let answered_by = field(params, "AnsweredBy")
        .filter(|a| !a.is_empty() && a.len() <= 32 && a.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string);
    Ok(CallStatusReport {
        call_sid: call_sid.to_string(),
        at_ms,
        status,
        duration_s,
        answered_by,
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
    fn a_report_is_read_and_bad_fields_are_named() {
        let sid = "CA0123456789abcdef0123456789abcdef";
        let report = read_status(
            &form(&[
                ("CallSid", sid),
                ("CallStatus", "completed"),
                ("CallDuration", "42"),
            ]),
            7,
        )
        .unwrap();
        assert_eq!(report.status, CallStatus::Completed);
        assert_eq!(report.duration_s, Some(42));
        let ringing =
            read_status(&form(&[("CallSid", sid), ("CallStatus", "no-answer")]), 7).unwrap();
        assert_eq!(ringing.status, CallStatus::NoAnswer);
        assert_eq!(ringing.duration_s, None);
        for (bad, named) in [
            (
                form(&[("CallSid", sid), ("CallStatus", "exploded")]),
                "call status",
            ),
            (form(&[("CallStatus", "completed")]), "CallSid"),
            (
                form(&[
                    ("CallSid", sid),
                    ("CallStatus", "completed"),
                    ("CallDuration", "-1"),
                ]),
                "CallDuration",
            ),
        ] {
            let err = read_status(&bad, 0).unwrap_err().to_string();
            assert!(err.contains(named), "{named}: {err}");
        }
    }
}
