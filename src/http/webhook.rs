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

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::call::registry::PendingCall;
use crate::domain::Direction;
use crate::http::{AppError, AppState, SetupError};
use crate::prompt::resolve::ResolveError;
use crate::store::{self, Business};
use crate::twilio::{signature, token, twiml};

/// Spoken to callers of a number no business owns.
pub const UNKNOWN_NUMBER_SORRY: &str =
    "Sorry, this number is not in service. Please check the number and try again. Goodbye.";

/// Spoken when the call cannot be set up (a business's prompt is unusable).
pub const SETUP_FAILED_SORRY: &str =
    "Sorry, we cannot take your call right now. Please try again later. Goodbye.";

fn twiml_response(body: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, twiml::CONTENT_TYPE)],
        body,
    )
        .into_response()
}

fn field<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The voice webhook handler.
pub async fn voice(
    State(state): State<AppState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    let params = signature::parse_form(&body);
    let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let url = format!(
        "{}://{}{}",
        state.config.server.public_scheme, state.config.server.public_host, path_and_query
    );
    let provided = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if provided.is_empty()
        || !signature::validate(&state.secrets.twilio_auth_token, &url, &params, provided)
    {
        tracing::warn!(url = %url, "voice webhook rejected: bad or missing X-Twilio-Signature");
        return Err(AppError::BadSignature);
    }

    let call_sid = field(&params, "CallSid")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| AppError::BadRequest("CallSid is missing".into()))?
        .to_string();
    let from = field(&params, "From").unwrap_or("").to_string();
    let to = field(&params, "To").unwrap_or("").to_string();
    let twilio_direction = field(&params, "Direction").unwrap_or("inbound");
    let Some(direction) = Direction::from_twilio(twilio_direction) else {
        tracing::warn!(call_sid = %call_sid, direction = twilio_direction, "unsupported call direction");
        return Ok(twiml_response(twiml::say_and_hangup(SETUP_FAILED_SORRY)));
    };

    let business = match resolve_business(&state, direction, &to, uri.query()).await? {
        Some(b) => b,
        None => {
            tracing::warn!(call_sid = %call_sid, to = %to, from = %from, %direction,
                "no business for this call; answering with a sorry");
            return Ok(twiml_response(twiml::say_and_hangup(UNKNOWN_NUMBER_SORRY)));
        }
    };

    let caller = match direction {
        Direction::Inbound => from.as_str(),
        Direction::Outbound => to.as_str(),
    };
    let setup = match state.call_setup(&business, direction, caller).await {
        Ok(setup) => setup,
        Err(SetupError::Store(e) | SetupError::Resolve(ResolveError::Store(e))) => {
            return Err(e.into());
        }
        Err(e) => {
            tracing::error!(call_sid = %call_sid, business_id = %business.id, error = %e,
                "cannot set the call up");
            return Ok(twiml_response(twiml::say_and_hangup(SETUP_FAILED_SORRY)));
        }
    };
    tracing::info!(
        call_sid = %call_sid,
        business_id = %setup.business_id,
        direction = %direction,
        policy = ?setup.policy,
        prompt_version = setup.prompt_version_id.as_deref().unwrap_or("business"),
        variant = setup.variant().map_or("", crate::domain::Arm::as_str),
        compact_tokens = setup.prompts.compact_tokens,
        full_tokens = setup.prompts.full_tokens,
        "prompts built"
    );

    let expires_at_ms = store::now_ms() + state.config.timeouts.stream_token_ms as i64;
    let stream_token = token::sign(
        &state.secrets.signing_key,
        &token::CallToken {
            call_sid: call_sid.clone(),
            business_id: setup.business_id.clone(),
            direction,
            expires_at_ms,
            caller: setup.caller.clone(),
            prompt_version_id: setup.prompt_version_id.clone(),
            experiment: setup.experiment.clone(),
        },
    );

    // Pre-warm: dial upstream now, while Twilio is still connecting the stream.
    let settings = state.upstream.clone();
    let metrics = state.metrics.clone();
    let session = setup.session.clone();
    let early_greeting = state.config.upstream.early_greeting;
    let prewarm_sid = call_sid.clone();
    let greeting_requested_at = Arc::new(OnceLock::new());
    let greeted = greeting_requested_at.clone();
    let prewarm = tokio::spawn(async move {
        let started = Instant::now();
        let mut result = crate::http::dial(&settings, &session, &metrics).await;
        if early_greeting && let Ok(socket) = &mut result {
            // The greeting, asked for now: its audio waits in the socket for the stream.
            use futures_util::SinkExt as _;
            let greeting = crate::realtime::events::ClientEvent::ResponseCreate.to_json();
            match socket
                .send(tokio_tungstenite::tungstenite::Message::Text(
                    greeting.into(),
                ))
                .await
            {
                Ok(()) => {
                    let _ = greeted.set(Instant::now());
                }
                Err(e) => {
                    result = Err(crate::realtime::UpstreamError::Connect {
                        url: settings.url.clone(),
                        source: Box::new(e),
                    });
                }
            }
        }
        match &result {
            Ok(_) => tracing::debug!(call_sid = %prewarm_sid,
                connect_ms = started.elapsed().as_secs_f64() * 1000.0, "upstream pre-warmed"),
            Err(e) => {
                tracing::warn!(call_sid = %prewarm_sid, error = %e, "upstream pre-warm failed")
            }
        }
        result
    });
    state.registry.insert(
        call_sid,
        PendingCall {
            setup,
            from,
            to,
            prewarm,
            created: Instant::now(),
            greeting_requested_at,
        },
    );

    let stream_scheme = if state.config.server.public_scheme == "https" {
        "wss"
    } else {
        "ws"
    };
    let stream_url = format!(
        "{stream_scheme}://{}/twilio/media",
        state.config.server.public_host
    );
    Ok(twiml_response(twiml::connect_stream(
        &stream_url,
        &[("token", stream_token.as_str())],
    )))
}

/// Finds the call's business; `None` when nobody owns it (or the outbound parameters are not
/// ours).
async fn resolve_business(
    state: &AppState,
    direction: Direction,
    to: &str,
    query: Option<&str>,
) -> Result<Option<Business>, AppError> {
    match direction {
        Direction::Inbound => {
            let Ok(number) = store::normalize_e164(to) else {
                return Ok(None);
            };
            Ok(state.store.business_for_number(&number).await?)
        }
        Direction::Outbound => {
            let pairs: Vec<(String, String)> =
                form_urlencoded::parse(query.unwrap_or("").as_bytes())
                    .into_owned()
                    .collect();
            match token::verify_outbound(&state.secrets.signing_key, &pairs, store::now_ms()) {
                Ok(business_id) => Ok(state.store.business(&business_id).await?),
                Err(e) => {
                    tracing::warn!(error = %e, "outbound webhook without valid signed business parameters");
                    Ok(None)
                }
            }
        }
    }
}
