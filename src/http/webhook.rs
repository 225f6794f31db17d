//! `POST /twilio/voice`: Twilio asks what to do with a call.
//!
//! 1. Verify X-Twilio-Signature over the public URL and the form fields (403 and nothing else
//!    on failure).
//! 2. Resolve the business: inbound by the `To` number; outbound by the business id in a signed
//!    query parameter of the webhook URL. Unknown: a short spoken sorry and a hang-up.
//! 3. Build FULL and COMPACT prompts and log their token counts.
//! 4. Park the call in the registry and pre-warm the upstream with the COMPACT `session.update`.
//! 5. Answer with `<Connect><Stream>` carrying a signed, expiring token.
//!
//! Sources: <https://www.twilio.com/docs/voice/twiml>,
//! <https://www.twilio.com/docs/usage/security#validating-requests> (`shared/protocol/twilio.md`).

use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::call::service::{IncomingCall, Prepared, Refusal};
use crate::domain::CallSid;
use crate::http::{AppError, AppState};
use crate::twilio::{signature, twiml};

fn twiml_response(body: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, twiml::CONTENT_TYPE)],
        body,
    )
        .into_response()
}

/// The value of form field `name`, if present.
pub fn field<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The form fields of a request from Twilio to `uri`, once its X-Twilio-Signature checks out
/// over the public URL (`server.public_scheme`, `server.public_host`, the path and query) and
/// the fields. `what` names the endpoint in the warning.
///
/// Errors: [`AppError::BadSignature`] (403) for a missing or wrong signature.
pub fn signed_form(
    state: &AppState,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &[u8],
    what: &str,
) -> Result<Vec<(String, String)>, AppError> {
    let params = signature::parse_form(body);
    let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let url = state.config.public_url(path_and_query);
    let provided = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if provided.is_empty()
        || !signature::validate(&state.secrets.twilio_auth_token, &url, &params, provided)
    {
        tracing::warn!(url = %url, "{what} rejected: bad or missing X-Twilio-Signature");
        return Err(AppError::BadSignature);
    }
    Ok(params)
}

/// The voice webhook handler: checks the signature, reads the fields, and answers with what
/// [`CallService::prepare`](crate::call::service::CallService::prepare) decided.
pub async fn voice(
    State(state): State<AppState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    let params = signed_form(&state, &uri, &headers, &body, "voice webhook")?;
    let call = read_call(&params, uri.query())?;
    Ok(match state.calls.prepare(call).await {
        Prepared::Stream { url, token } => {
            twiml_response(twiml::connect_stream(&url, &[("token", token.as_str())]))
        }
        Prepared::Refused(Refusal::Busy) => twiml_response(twiml::reject_busy()),
        Prepared::Refused(refusal) => twiml_response(twiml::say_and_hangup(refusal.apology())),
        Prepared::Hangup => twiml_response(twiml::hangup()),
        // Twilio requests the number's fallback URL when the webhook answers 5xx.
        Prepared::Fallback { target, language } => twiml_response(
            crate::call::fallback::twiml_for(&target, language.as_deref()),
        ),
        Prepared::Draining => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            "draining: this instance takes no new calls",
        )
            .into_response(),
    })
}

/// The call a signed webhook's form fields describe (`query`: the webhook URL's query, which
/// carries an outbound call's signed business parameters). Pure, so it can be fuzzed.
///
/// Errors: [`AppError::BadRequest`] for a missing or malformed `CallSid`, or a `From`/`To`
/// that [`MAX_PARTY_LEN`] or its control characters rule out.
pub fn read_call(
    params: &[(String, String)],
    query: Option<&str>,
) -> Result<IncomingCall, AppError> {
    let call_sid = field(params, "CallSid")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| AppError::BadRequest("CallSid is missing".into()))?;
    let call_sid = CallSid::parse(call_sid).map_err(|e| AppError::BadRequest(e.to_string()))?;
    Ok(IncomingCall {
        call_sid,
        from: party(params, "From")?,
        to: party(params, "To")?,
        twilio_direction: field(params, "Direction").unwrap_or("inbound").to_string(),
        query: query.map(str::to_string),
        answered_by: field(params, "AnsweredBy")
            .filter(|a| !a.is_empty() && a.len() <= 32 && a.bytes().all(|b| b.is_ascii_graphic()))
            .map(str::to_string),
    })
}

/// Form field `name` as a whole number of seconds (`CallDuration`, `DialCallDuration`); `None`
/// when absent or empty.
///
/// Errors: [`AppError::BadRequest`] naming the field when it is not a non-negative integer.
pub fn seconds(params: &[(String, String)], name: &str) -> Result<Option<i64>, AppError> {
    match field(params, name).filter(|d| !d.is_empty()) {
        Some(d) => d
            .parse::<i64>()
            .ok()
            .filter(|d| *d >= 0)
            .map(Some)
            .ok_or_else(|| {
                AppError::BadRequest(format!("{name} is not a whole number of seconds"))
            }),
        None => Ok(None),
    }
}

/// The longest `From` or `To` accepted, bytes. E.164 numbers are at most 16 (`+` and 15
/// digits); SIP and client addresses are longer, and 256 leaves them room.
pub const MAX_PARTY_LEN: usize = 256;

/// A webhook's `From` or `To` (empty when absent): at most [`MAX_PARTY_LEN`] bytes, no control
/// characters, so it is safe to mask into a log line and to store.
///
/// Errors: [`AppError::BadRequest`] naming the field (never echoing its value).
fn party(params: &[(String, String)], name: &str) -> Result<String, AppError> {
    let value = field(params, name).unwrap_or("");
    if value.len() > MAX_PARTY_LEN || value.chars().any(char::is_control) {
        return Err(AppError::BadRequest(format!(
            "{name} is longer than {MAX_PARTY_LEN} bytes or has control characters"
        )));
    }
    Ok(value.to_string())
}
