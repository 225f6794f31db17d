//! The simulated Twilio REST API: what the proxy asks of Twilio for a live call (a redirect to
//! new TwiML), answered the way Twilio answers, with every request kept for the test to read.
//!
//! - `POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json` with form `Twiml`: the
//!   request must carry HTTP Basic auth with the Account SID and the world's auth token (else
//!   401, Twilio's code 20003). When the call's media stream is open, the simulated caller is
//!   told (it ends its stream with `stop`, as Twilio does when a call leaves `<Connect>`) and the
//!   answer is the Call resource; when it is not, 400 with code 21220 ("Call is not
//!   in-progress. Cannot redirect."), as Twilio refuses it.
//! - Anything else: 404.
//!
//! The request schema itself is checked against Twilio's OpenAPI description by Prism: the
//! contract tests (`tests/twilio_rest.rs`) call it directly, and a mock started with
//! [`SimTwilioRest::start_validated`] sends every request to Prism first and answers Prism's
//! refusal (422, with the problems) instead of acting on a request outside Twilio's schema.
//! This mock is about timing and the call's state.
//! Sources: <https://www.twilio.com/docs/voice/api/call-resource#update-a-call-resource>,
//! <https://www.twilio.com/docs/api/errors/21220>, <https://www.twilio.com/docs/api/errors/20003>.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A redirect the proxy asked for.
#[derive(Debug, Clone)]
pub struct Redirect {
    /// The Account SID of the URL.
    pub account_sid: String,
    /// The CallSid of the URL (without `.json`).
    pub call_sid: String,
    /// The `Twiml` form field.
    pub twiml: String,
    /// Whether the Basic auth was the account's and the world's token.
    pub authorized: bool,
    /// Whether the call's media stream was open when the request came (Twilio took it).
    pub while_live: bool,
    /// What Prism answered when the mock validates requests: its HTTP status (`None`: not
    /// validated).
    pub prism_status: Option<u16>,
    /// When it came.
    pub at: Instant,
}

/// Calls whose media stream is open, by CallSid: each told once the TwiML it is redirected to.
#[derive(Clone, Default)]
pub struct LiveCalls {
    inner: Arc<Mutex<HashMap<String, oneshot::Sender<String>>>>,
}

impl std::fmt::Debug for LiveCalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiveCalls")
    }
}

impl LiveCalls {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, oneshot::Sender<String>>> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The call's stream opened: the returned receiver gets the TwiML of a redirect.
    pub fn open(&self, call_sid: &str) -> oneshot::Receiver<String> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(call_sid.to_string(), tx);
        rx
    }

    /// The call's stream ended.
    pub fn close(&self, call_sid: &str) {
        self.lock().remove(call_sid);
    }

    /// Redirects the call if its stream is open; whether it was.
    fn redirect(&self, call_sid: &str, twiml: String) -> bool {
        match self.lock().remove(call_sid) {
            Some(tx) => tx.send(twiml).is_ok(),
            None => false,
        }
    }
}

#[derive(Clone)]
struct Shared {
    auth_token: String,
    /// Prism's base URL and a client for it, when requests are validated.
    validator: Option<(reqwest::Client, String)>,
    live: LiveCalls,
    redirects: Arc<Mutex<Vec<Redirect>>>,
}

/// The running mock.
pub struct SimTwilioRest {
    addr: SocketAddr,
    shared: Shared,
    task: JoinHandle<()>,
}

impl SimTwilioRest {
    /// Starts the mock on a loopback port, checking Basic auth against `auth_token`.
    ///
    /// Errors: the port could not be bound.
    pub async fn start(auth_token: &str) -> std::io::Result<SimTwilioRest> {
        SimTwilioRest::start_validated(auth_token, None).await
    }

    /// Starts the mock with every request validated first by the Prism mock at `prism`
    /// (`http://127.0.0.1:PORT`, [`crate::prism::Prism`]); `None`: no validation.
    ///
    /// Errors: the port could not be bound.
    pub async fn start_validated(
        auth_token: &str,
        prism: Option<String>,
    ) -> std::io::Result<SimTwilioRest> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Shared {
            validator: prism.map(|url| (reqwest::Client::new(), url)),
            auth_token: auth_token.to_string(),
            live: LiveCalls::default(),
            redirects: Arc::default(),
        };
        let app = Router::new()
            .route(
                "/2010-04-01/Accounts/{account}/Calls/{call}",
                post(update_call),
            )
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(SimTwilioRest { addr, shared, task })
    }

    /// The base URL (`http://127.0.0.1:PORT`), for `fallback.twilio_api_url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The live calls, for the simulated callers to register their streams in.
    pub fn live_calls(&self) -> LiveCalls {
        self.shared.live.clone()
    }

    /// Every redirect asked for so far, in order.
    pub fn redirects(&self) -> Vec<Redirect> {
        self.shared
            .redirects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Stops the mock.
    pub fn shutdown(&self) {
        self.task.abort();
    }
}

fn twilio_error(status: StatusCode, code: u32, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({
            "code": code,
            "message": message,
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status.as_u16(),
        })),
    )
        .into_response()
}

/// Sends the request to Prism when the mock validates: `Err` with Prism's answer when it
/// refused it (outside Twilio's schema), else Prism's status (`None`: not validated).
async fn validate(
    shared: &Shared,
    path: &str,
    headers: &HeaderMap,
    body: &str,
) -> Result<Option<u16>, Response> {
    let Some((client, prism)) = &shared.validator else {
        return Ok(None);
    };
    let mut request = client
        .post(format!("{prism}{path}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_string());
    if let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        request = request.header("authorization", auth);
    }
    match request.send().await {
        Ok(answer) if answer.status().is_success() => Ok(Some(answer.status().as_u16())),
        Ok(answer) => {
            let status = answer.status().as_u16();
            let text = answer.text().await.unwrap_or_default();
            Err((
                StatusCode::from_u16(status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY),
                [("content-type", "application/json")],
                text,
            )
                .into_response())
        }
        Err(e) => Err(twilio_error(
            StatusCode::BAD_GATEWAY,
            0,
            &format!("the Prism validator did not answer: {e}"),
        )),
    }
}

async fn update_call(
    State(shared): State<Shared>,
    Path((account_sid, call)): Path<(String, String)>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let at = Instant::now();
    let Some(call_sid) = call.strip_suffix(".json").map(str::to_string) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let path = format!("/2010-04-01/Accounts/{account_sid}/Calls/{call}");
    let prism_status = match validate(&shared, &path, &headers, &body).await {
        Ok(status) => status,
        Err(refused) => {
            shared
                .redirects
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(Redirect {
                    account_sid,
                    call_sid,
                    twiml: String::new(),
                    authorized: false,
                    while_live: false,
                    prism_status: Some(refused.status().as_u16()),
                    at,
                });
            return refused;
        }
    };
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{account_sid}:{}", shared.auth_token))
    );
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == expected);
    let twiml = form_urlencoded::parse(body.as_bytes())
        .find(|(k, _)| k == "Twiml")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let while_live =
        authorized && !twiml.is_empty() && shared.live.redirect(&call_sid, twiml.clone());
    shared
        .redirects
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(Redirect {
            account_sid: account_sid.clone(),
            call_sid: call_sid.clone(),
            twiml: twiml.clone(),
            authorized,
            while_live,
            prism_status,
            at,
        });
    if !authorized {
        return twilio_error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
    }
    if twiml.is_empty() {
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21218,
            "Invalid application: no Twiml given",
        );
    }
    if !while_live {
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21220,
            "Call is not in-progress. Cannot redirect.",
        );
    }
    axum::Json(serde_json::json!({
        "sid": call_sid,
        "account_sid": account_sid,
        "status": "in-progress",
    }))
    .into_response()
}
