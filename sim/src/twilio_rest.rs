//! The simulated Twilio REST API: what the proxy asks of Twilio for a live call (a redirect to
//! new TwiML), answered the way Twilio answers, with every request kept for the test to read.
//!
//! - `POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json` with form `Twiml`: the
//!   request must carry HTTP Basic auth with the Account SID and the world's auth token (else
//!   401, Twilio's code 20003). When the call's media stream is open, the simulated caller is
//!   told (it ends its stream with `stop`, as Twilio does when a call leaves `<Connect>`) and the
//!   answer is the Call resource; when it is not, 400 with code 21220 ("Call is not
//!   in-progress. Cannot redirect."), as Twilio refuses it.
//! - `POST /2010-04-01/Accounts/{AccountSid}/Calls.json` (place a call): answered 201 with a
//!   queued Call resource, then the call is simulated as Twilio would run it: signed status
//!   callbacks (the end, `completed` or `no-answer`, and `initiated`, `ringing`, `in-progress`
//!   when `StatusCallbackEvent` asks for them), answering
//!   machine detection over the callee's greeting when `MachineDetection` is asked for (an
//!   energy VAD: a first stretch of speech of 2,400 ms or more is a machine, whose greeting is
//!   waited out, as `DetectMessageEnd` does; a shorter one is a person), then the voice webhook
//!   (`Url`, signed, with `AnsweredBy`) and its media stream, with the callee as
//!   [`SimTwilioRest::answer_as`] says ([`Callee`]).
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

/// Who answers a number the proxy calls, and how.
#[derive(Debug, Clone)]
pub enum Callee {
    /// A person: says `greeting` (8 kHz mu-law) on answering, then listens for `listen_ms`
    /// before hanging up (`stop`), or until the proxy ends the call.
    Person {
        /// What they say on answering ("Hello?").
        greeting: Vec<u8>,
        /// How long they stay on the line, ms.
        listen_ms: u64,
    },
    /// An answering machine: plays `greeting` (its message and the beep), then records for
    /// `record_ms` (the proxy's audio is what it records) or until the proxy ends the call.
    Machine {
        /// The outgoing message and its beep, 8 kHz mu-law.
        greeting: Vec<u8>,
        /// How long it records, ms.
        record_ms: u64,
    },
    /// Nobody answers: the call ends `no-answer` after `ring_ms`.
    NoAnswer {
        /// How long it rings, ms.
        ring_ms: u64,
    },
}

/// A call the proxy placed, and what became of it.
#[derive(Debug, Clone)]
pub struct Placed {
    /// The form of the `Calls.json` request, in order.
    pub form: Vec<(String, String)>,
    /// The CallSid it was given.
    pub call_sid: String,
    /// What Prism answered when requests are validated (`None`: not validated).
    pub prism_status: Option<u16>,
    /// What answering machine detection reported (`AnsweredBy`), once answered.
    pub answered_by: Option<String>,
    /// The status callbacks sent, in order, with the proxy's HTTP status for each.
    pub statuses: Vec<(String, u16)>,
    /// The simulated call's own report (webhook, stream, what was heard), once it has ended.
    pub report: Option<crate::caller::CallerReport>,
    /// Set when the whole simulated call is over.
    pub done: bool,
}

#[derive(Clone)]
struct Shared {
    auth_token: String,
    /// Prism's base URL and a client for it, when requests are validated.
    validator: Option<(reqwest::Client, String)>,
    live: LiveCalls,
    redirects: Arc<Mutex<Vec<Redirect>>>,
    callees: Arc<Mutex<HashMap<String, Callee>>>,
    placed: Arc<Mutex<Vec<Placed>>>,
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
            callees: Arc::default(),
            placed: Arc::default(),
        };
        let app = Router::new()
            .route(
                "/2010-04-01/Accounts/{account}/Calls.json",
                post(create_call),
            )
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

    /// Calls to `number` (E.164) are answered as `callee` says; a number without one rings
    /// 1 s and is not answered.
    pub fn answer_as(&self, number: &str, callee: Callee) {
        lock(&self.shared.callees).insert(number.to_string(), callee);
    }

    /// Every call placed so far, in order, with what became of it so far.
    pub fn placed(&self) -> Vec<Placed> {
        lock(&self.shared.placed).clone()
    }

    /// Waits (at most `limit`) until the placed call `call_sid` is over, and returns it.
    pub async fn placed_call(&self, call_sid: &str, limit: std::time::Duration) -> Option<Placed> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let found = self
                .placed()
                .into_iter()
                .find(|p| p.call_sid == call_sid && p.done);
            if found.is_some() || tokio::time::Instant::now() >= deadline {
                return found;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
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

/// Whether the request carries HTTP Basic auth with `account_sid` and the world's auth token.
fn authorized(shared: &Shared, account_sid: &str, headers: &HeaderMap) -> bool {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{account_sid}:{}", shared.auth_token))
    );
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == expected)
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
    let send = || {
        let mut request = client
            .post(format!("{prism}{path}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_string());
        if let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
            request = request.header("authorization", auth);
        }
        request.send()
    };
    // A busy machine can make Prism (Node) drop a connection: a transport error is tried again,
    // an answer never is.
    let mut answer = send().await;
    for _ in 0..3 {
        if answer.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        answer = send().await;
    }
    match answer {
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
    let authorized = authorized(&shared, &account_sid, &headers);
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

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Twilio's answering machine detection thresholds, ms (`MachineDetectionSpeechThreshold` and
/// `MachineDetectionSpeechEndThreshold` defaults,
/// <https://www.twilio.com/docs/voice/answering-machine-detection#optional-api-tuning-parameters>).
const AMD_SPEECH_MS: u64 = 2400;
const AMD_SPEECH_END_MS: u32 = 1200;

/// What answering machine detection makes of a callee's `greeting` (8 kHz mu-law): the
/// `AnsweredBy` value, and how far into the greeting the answer is given, ms. A first stretch
/// of speech of [`AMD_SPEECH_MS`] or more is a machine, answered once its greeting has ended
/// (`machine_end_beep` when it ends in a short tone); a shorter one is a person, answered once
/// they have been quiet for [`AMD_SPEECH_END_MS`].
pub fn detect_answerer(greeting: &[u8]) -> (&'static str, u64) {
    let segments = speech_segments(greeting, AMD_SPEECH_END_MS);
    let greeting_ms = greeting.len() as u64 / 8;
    match segments.first() {
        Some((s, e)) if e - s >= AMD_SPEECH_MS => {
            // A beep: a short last sound after a short pause.
            let short = speech_segments(greeting, 200);
            let beep = short
                .last()
                .is_some_and(|(s, e)| short.len() > 1 && e - s <= 1200);
            (
                if beep {
                    "machine_end_beep"
                } else {
                    "machine_end_silence"
                },
                greeting_ms,
            )
        }
        Some((_, e)) => (
            "human",
            (e + u64::from(AMD_SPEECH_END_MS)).min(greeting_ms + 1200),
        ),
        None => ("unknown", greeting_ms),
    }
}

/// The stretches of speech in `audio` (8 kHz mu-law) as (start, end) ms, a stretch ending after
/// `silence_ms` of quiet.
fn speech_segments(audio: &[u8], silence_ms: u32) -> Vec<(u64, u64)> {
    let mut vad = crate::vad::EnergyVad::new(crate::vad::VadConfig {
        silence_ms,
        prefix_padding_ms: 0,
        ..crate::vad::VadConfig::default()
    });
    let mut padded = audio.to_vec();
    padded.extend(std::iter::repeat_n(
        voxrelay::audio::mulaw::SILENCE,
        (silence_ms as usize + 200) * 8,
    ));
    let mut segments = Vec::new();
    let mut start = None;
    for event in vad.push(&padded) {
        match event {
            crate::vad::VadEvent::SpeechStarted { audio_start_ms } => start = Some(audio_start_ms),
            crate::vad::VadEvent::SpeechStopped { audio_end_ms } => {
                if let Some(s) = start.take() {
                    segments.push((s, audio_end_ms));
                }
            }
        }
    }
    segments
}

/// POSTs a signed Twilio request (`params` as a form) to `url`; the proxy's HTTP status (0 when
/// it could not be sent).
async fn post_signed(auth_token: &str, url: &str, params: &[(String, String)]) -> u16 {
    match crate::caller::signed_post(&reqwest::Client::new(), auth_token, url, url, params)
        .send()
        .await
    {
        Ok(answer) => answer.status().as_u16(),
        Err(_) => 0,
    }
}

async fn create_call(
    State(shared): State<Shared>,
    Path(account_sid): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let path = format!("/2010-04-01/Accounts/{account_sid}/Calls.json");
    let prism_status = match validate(&shared, &path, &headers, &body).await {
        Ok(status) => status,
        Err(refused) => return refused,
    };
    if !authorized(&shared, &account_sid, &headers) {
        return twilio_error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
    }
    let form: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let field = |name: &str| form_field(&form, name);
    let (to, from, url) = (field("To"), field("From"), field("Url"));
    if to.is_empty() || from.is_empty() || url.is_empty() {
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21201,
            "To, From and Url are required",
        );
    }
    let call_sid = new_call_sid();
    lock(&shared.placed).push(Placed {
        form: form.clone(),
        call_sid: call_sid.clone(),
        prism_status,
        answered_by: None,
        statuses: Vec::new(),
        report: None,
        done: false,
    });
    tokio::spawn(run_placed(
        shared.clone(),
        account_sid.clone(),
        call_sid.clone(),
        form.clone(),
    ));
    (
        StatusCode::CREATED,
        axum::Json(serde_json::json!({
            "sid": call_sid,
            "account_sid": account_sid,
            "to": to,
            "from": from,
            "status": "queued",
            "direction": "outbound-api",
        })),
    )
        .into_response()
}

/// Runs a placed call as Twilio would: status callbacks, answering machine detection, the
/// webhook and its stream; recorded in [`Placed`].
async fn run_placed(
    shared: Shared,
    account_sid: String,
    call_sid: String,
    form: Vec<(String, String)>,
) {
    let field = |name: &str| form_field(&form, name);
    let (to, from, url) = (field("To"), field("From"), field("Url"));
    let status_url = field("StatusCallback");
    let amd = !field("MachineDetection").is_empty();
    let update = |f: &dyn Fn(&mut Placed)| {
        if let Some(p) = lock(&shared.placed)
            .iter_mut()
            .find(|p| p.call_sid == call_sid)
        {
            f(p);
        }
    };
    let status = |name: &'static str, extra: Vec<(String, String)>| {
        let shared = shared.clone();
        let mut params: Vec<(String, String)> = [
            ("AccountSid", account_sid.as_str()),
            ("ApiVersion", "2010-04-01"),
            ("CallSid", call_sid.as_str()),
            ("CallStatus", name),
            ("Direction", "outbound-api"),
            ("From", from.as_str()),
            ("To", to.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        params.extend(extra);
        let status_url = status_url.clone();
        async move {
            if status_url.is_empty() {
                return 0;
            }
            post_signed(&shared.auth_token, &status_url, &params).await
        }
    };
    let callee = lock(&shared.callees)
        .get(&to)
        .cloned()
        .unwrap_or(Callee::NoAnswer { ring_ms: 1000 });
    // Without StatusCallbackEvent, Twilio reports only the call's end.
    let events: Vec<String> = form
        .iter()
        .filter(|(k, _)| k == "StatusCallbackEvent")
        .map(|(_, v)| v.clone())
        .collect();
    let asked = |event: &str| events.iter().any(|e| e == event);
    let started = Instant::now();
    for name in ["initiated", "ringing"] {
        if asked(name) {
            let code = status(name, Vec::new()).await;
            update(&|p| p.statuses.push((name.to_string(), code)));
        }
    }
    let (greeting, tail_ms) = match callee {
        Callee::NoAnswer { ring_ms } => {
            tokio::time::sleep(std::time::Duration::from_millis(ring_ms)).await;
            let code = status("no-answer", Vec::new()).await;
            update(&|p| {
                p.statuses.push(("no-answer".into(), code));
                p.done = true;
            });
            return;
        }
        Callee::Person {
            greeting,
            listen_ms,
        } => (greeting, listen_ms),
        Callee::Machine {
            greeting,
            record_ms,
        } => (greeting, record_ms),
    };
    if asked("answered") {
        let code = status("in-progress", Vec::new()).await;
        update(&|p| p.statuses.push(("in-progress".into(), code)));
    }
    // Synchronous AMD: the webhook waits for the answer, which waits for the greeting.
    let (answered_by, after_ms) = if amd {
        detect_answerer(&greeting)
    } else {
        ("", 0)
    };
    tokio::time::sleep(std::time::Duration::from_millis(after_ms)).await;
    update(&|p| p.answered_by = Some(answered_by.to_string()).filter(|a| !a.is_empty()));
    let mut caller = crate::caller::CallerConfig::inbound(
        &url,
        &shared.auth_token,
        &call_sid,
        &from,
        &to,
        Vec::new(),
    );
    caller.direction = "outbound-api".into();
    caller.answered_by = Some(answered_by.to_string()).filter(|a| !a.is_empty());
    // What AMD did not wait for (a person's greeting past the answer) is heard on the stream.
    caller.speech = greeting[(after_ms as usize * 8).min(greeting.len())..].to_vec();
    caller.lead_silence_ms = 0;
    caller.tail_silence_ms = tail_ms;
    caller.live_calls = Some(shared.live.clone());
    let report = crate::caller::run(caller).await.ok();
    let duration = started.elapsed().as_secs().to_string();
    let code = status("completed", vec![("CallDuration".into(), duration)]).await;
    update(&|p| {
        p.statuses.push(("completed".into(), code));
        p.report = report.clone();
        p.done = true;
    });
}

/// The first value of form field `name` (`""` when absent).
fn form_field(form: &[(String, String)], name: &str) -> String {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// A fresh CallSid: `CA` and 32 hex digits, from the clock and a counter.
fn new_call_sid() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("CA{nanos:016x}{n:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answering_machine_detection_tells_a_machine_from_a_person() {
        let machine = crate::demo::mulaw_of(crate::demo::VOICEMAIL_GREETING_WAV).expect("wav");
        let (answered_by, at_ms) = detect_answerer(&machine);
        assert_eq!(answered_by, "machine_end_beep");
        assert_eq!(
            at_ms,
            machine.len() as u64 / 8,
            "answered when the greeting ends"
        );
        let person = crate::demo::mulaw_of(crate::demo::PERSON_HELLO_WAV).expect("wav");
        let (answered_by, at_ms) = detect_answerer(&person);
        assert_eq!(answered_by, "human");
        assert!(at_ms < 3500, "{at_ms}");
        assert_eq!(detect_answerer(&[]).0, "unknown");
    }
}
