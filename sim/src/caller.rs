//! A simulated Twilio: places a call through the proxy the way Twilio does.
//!
//! It signs and POSTs the voice webhook, reads the TwiML, opens the media WebSocket with the
//! token from `<Parameter name="token">`, sends `connected`, `start`, then 20 ms mu-law media
//! frames at real-time pace (silence, the caller's speech, silence), and `stop`.
//!
//! For the proxy's audio it behaves like Twilio's buffer: audio plays in order in real time;
//! a `mark` is echoed when the audio sent before it has played (at once if nothing is buffered);
//! `clear` drops the unplayed audio and echoes every pending mark at once
//! (<https://www.twilio.com/docs/voice/media-streams/websocket-messages>). What was actually
//! played is kept, so tests can compare the proxy's truncation with what "the caller" heard.

use crate::playback::{Cleared, Playback};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use voxrelay::audio::mulaw::{FRAME_BYTES, SILENCE};
use voxrelay::twilio::signature;

use crate::twilio_rest::LiveCalls;

/// How the simulated call is placed.
#[derive(Debug, Clone)]
pub struct CallerConfig {
    /// Where to POST the webhook (`http://127.0.0.1:PORT/twilio/voice`).
    pub webhook_url: String,
    /// The URL Twilio signs: the public URL the proxy is configured with
    /// (`{public_scheme}://{public_host}/twilio/voice`, plus any query).
    pub signed_url: String,
    /// Twilio auth token (the X-Twilio-Signature key).
    pub auth_token: String,
    /// `CA…`.
    pub call_sid: String,
    /// `E.164` caller.
    pub from: String,
    /// `E.164` called number.
    pub to: String,
    /// Twilio's `Direction` field: `inbound`, `outbound-api`, `outbound-dial`.
    pub direction: String,
    /// The caller's speech, 8 kHz mu-law.
    pub speech: Vec<u8>,
    /// Silence before the speech, ms.
    pub lead_silence_ms: u64,
    /// Silence after the speech, before `stop`, ms.
    pub tail_silence_ms: u64,
    /// Wait between the webhook's answer and opening the media WebSocket, ms (Twilio takes a
    /// moment; the pre-warmed upstream uses it).
    pub stream_connect_delay_ms: u64,
    /// Connect the media WebSocket here instead of the TwiML's URL (same path).
    pub stream_url_override: Option<String>,
    /// Send this instead of the TwiML's token (`Some("")` sends no token at all).
    pub token_override: Option<String>,
    /// Raw text frames to send right before the media frame with this index (for tests of
    /// malformed input).
    pub inject: Vec<(usize, String)>,
    /// Stop reading the proxy's messages from this many ms after `start`, for the second
    /// number of ms (a Twilio that stalls; it still sends its media frames meanwhile).
    pub stop_reading: Option<(u64, u64)>,
    /// SO_RCVBUF of the media WebSocket's socket, bytes (a small one makes a stall reach the
    /// proxy quickly); `None` leaves the kernel's own sizing.
    pub recv_buffer_bytes: Option<usize>,
    /// At the end of the media, close the WebSocket without sending `stop` (a connection that
    /// goes away rather than a hang-up).
    pub close_without_stop: bool,
    /// At the end of the media, send nothing more (no `stop`, no marks) and keep the socket
    /// open, still reading: a Twilio that died without its TCP connection closing.
    pub go_quiet: bool,
    /// The simulated Twilio REST API's live calls: the stream registers there while it is
    /// open, and a redirect of the call ends it as Twilio would (`stop`, then close, recorded
    /// as [`CallerEvent::Redirected`]). `None`: no REST API to redirect it.
    pub live_calls: Option<LiveCalls>,
    /// How the call's `<Dial action>` ends when it is redirected to one (a transfer): the
    /// simulated Twilio rings the number, then POSTs the signed outcome to the action URL and
    /// runs the TwiML it answers (a new media stream brings the caller back). `None`: a
    /// redirect ends the simulated call.
    pub dial: Option<DialAnswer>,
    /// `AnsweredBy` in the webhook (answering machine detection of a call the proxy placed).
    pub answered_by: Option<String>,
}

/// How the person a call is transferred to answers, and what the caller does if it comes
/// back.
#[derive(Debug, Clone)]
pub struct DialAnswer {
    /// Twilio's `DialCallStatus`: `completed` (answered), `busy`, `no-answer`, `failed`.
    pub status: String,
    /// How long it rings before that, ms.
    pub ring_ms: u64,
    /// `DialCallDuration`, seconds, for an answered dial.
    pub duration_s: Option<u64>,
    /// What the caller says on the stream that brings them back (8 kHz mu-law; may be empty).
    pub return_speech: Vec<u8>,
    /// Silence on that stream before the caller speaks, ms (the assistant speaks first).
    pub return_lead_ms: u64,
    /// How long the caller stays on that stream after speaking before `stop`, ms.
    pub return_listen_ms: u64,
}

/// What happened to a call redirected to `<Dial action>`.
#[derive(Debug, Clone, Default)]
pub struct TransferLeg {
    /// The TwiML the call was redirected to.
    pub dial_twiml: String,
    /// The `<Dial>`'s `action` URL.
    pub action_url: String,
    /// The `<Number>` dialled.
    pub number: String,
    /// The `callerId` shown to the person, if set.
    pub caller_id: Option<String>,
    /// The action callback's HTTP status.
    pub action_status: u16,
    /// What the action callback answered.
    pub action_twiml: String,
    /// The stream that brought the caller back, when the answer connected one.
    pub returned: Option<Box<CallerReport>>,
}

impl CallerConfig {
    /// An inbound call from `from` to `to` saying `speech`, its webhook posted to (and signed
    /// for) `webhook_url` with `auth_token`: 1 s of silence before and after the speech, the
    /// stream opened at once, and nothing else out of the ordinary.
    pub fn inbound(
        webhook_url: &str,
        auth_token: &str,
        call_sid: &str,
        from: &str,
        to: &str,
        speech: Vec<u8>,
    ) -> CallerConfig {
        CallerConfig {
            webhook_url: webhook_url.to_string(),
            signed_url: webhook_url.to_string(),
            auth_token: auth_token.to_string(),
            call_sid: call_sid.to_string(),
            from: from.to_string(),
            to: to.to_string(),
            direction: "inbound".into(),
            speech,
            lead_silence_ms: 1000,
            tail_silence_ms: 1000,
            stream_connect_delay_ms: 0,
            stream_url_override: None,
            token_override: None,
            inject: Vec::new(),
            stop_reading: None,
            recv_buffer_bytes: None,
            close_without_stop: false,
            go_quiet: false,
            live_calls: None,
            dial: None,
            answered_by: None,
        }
    }
}

/// Something the simulated Twilio saw, timed from the `start` it sent.
#[derive(Debug, Clone, PartialEq)]
pub enum CallerEvent {
    /// The first proxy audio arrived.
    FirstAudio,
    /// A stretch of proxy audio began to play (into an empty buffer, after a pause of more
    /// than 300 ms): Twilio's own record of when the caller began to hear an answer.
    PlaybackStarts,
    /// The caller's speech begins (after the lead silence).
    SpeechBegins,
    /// The caller's speech ends.
    SpeechEnds,
    /// The proxy sent `clear`.
    Clear {
        /// Ms of the current stretch of proxy audio that had played.
        heard_ms: u64,
        /// Ms of buffered audio dropped.
        dropped_ms: u64,
        /// Marks echoed at once because of it.
        marks_returned: usize,
    },
    /// `stop` sent.
    Stop,
    /// The caller went quiet (`go_quiet`): nothing more is sent.
    Quiet,
    /// The call was redirected through the REST API (the proxy's fallback): Twilio ended
    /// the stream (`stop`, then close) and runs this TwiML instead.
    Redirected {
        /// The TwiML the call now runs.
        twiml: String,
    },
    /// The proxy closed the WebSocket.
    Closed {
        /// Close code, if any.
        code: Option<u16>,
        /// Close reason.
        reason: String,
    },
}

/// What happened on the simulated call.
#[derive(Debug, Clone, Default)]
pub struct CallerReport {
    /// HTTP status of the webhook.
    pub webhook_status: u16,
    /// The webhook's body.
    pub twiml: String,
    /// Whether the TwiML connected a stream (and the stream opened).
    pub streamed: bool,
    /// Events with their time since `start`.
    pub events: Vec<(Duration, CallerEvent)>,
    /// The proxy audio that actually played, mu-law.
    pub heard: Vec<u8>,
    /// Media messages received.
    pub media_received: usize,
    /// Marks echoed back.
    pub marks_echoed: usize,
    /// Media frames sent.
    pub frames_sent: usize,
    /// Every message the proxy sent, as text, with its time (for tests).
    pub received: Vec<(Duration, String)>,
    /// The transfer, when the call was redirected to `<Dial action>` and
    /// [`CallerConfig::dial`] said how it ends.
    pub transfer: Option<Box<TransferLeg>>,
}

impl CallerReport {
    /// `start` to the first proxy audio, ms.
    pub fn first_audio_ms(&self) -> Option<f64> {
        self.events.iter().find_map(|(at, e)| {
            (*e == CallerEvent::FirstAudio).then_some(at.as_secs_f64() * 1000.0)
        })
    }

    /// The `clear` events.
    pub fn clears(&self) -> Vec<(Duration, u64)> {
        self.events
            .iter()
            .filter_map(|(at, e)| match e {
                CallerEvent::Clear { heard_ms, .. } => Some((*at, *heard_ms)),
                _ => None,
            })
            .collect()
    }
}

/// The simulated call failed before or while streaming.
#[derive(Debug, thiserror::Error)]
pub enum CallerError {
    /// The webhook request failed.
    #[error("webhook request to {url} failed: {source}")]
    Webhook {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// The media WebSocket failed to open.
    #[error("media stream connect to {url} failed: {source}")]
    Connect {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },
}

fn xml_unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Reads the stream URL and the `token` parameter from `<Connect><Stream>` TwiML.
pub fn parse_stream_twiml(twiml: &str) -> Option<(String, Option<String>)> {
    let url = regex::Regex::new(r#"<Stream[^>]*\surl="([^"]*)""#)
        .ok()?
        .captures(twiml)?
        .get(1)?
        .as_str()
        .to_string();
    let token = regex::Regex::new(r#"<Parameter\s+name="token"\s+value="([^"]*)""#)
        .ok()?
        .captures(twiml)
        .and_then(|c| c.get(1))
        .map(|m| xml_unescape(m.as_str()));
    Some((xml_unescape(&url), token))
}

/// A request as Twilio sends one: `params` as a form POSTed to `url`, signed
/// (X-Twilio-Signature) with `auth_token` over `signed_url` (the public URL the proxy knows
/// itself by; the same as `url` unless a test reaches the proxy another way).
pub fn signed_post(
    client: &reqwest::Client,
    auth_token: &str,
    signed_url: &str,
    url: &str,
    params: &[(String, String)],
) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header(
            "X-Twilio-Signature",
            signature::compute(auth_token, signed_url, params),
        )
        .form(params)
}

/// What the voice webhook answered.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The body (TwiML).
    pub twiml: String,
    /// The media stream to open, `None` when the TwiML connects none: its URL (or
    /// [`CallerConfig::stream_url_override`]) and the token to send in `start` (or
    /// [`CallerConfig::token_override`]).
    pub stream: Option<(String, Option<String>)>,
}

/// The `AccountSid` the simulated calls use.
pub fn account_sid() -> String {
    format!("AC{}", "0".repeat(32))
}

/// Does what Twilio does when a call arrives: POSTs the signed voice webhook form and reads
/// which media stream the TwiML connects.
///
/// Errors: [`CallerError::Webhook`] when the request fails.
pub async fn answer(
    config: &CallerConfig,
    client: &reqwest::Client,
) -> Result<Answer, CallerError> {
    let account_sid = account_sid();
    let params: Vec<(String, String)> = [
        ("AccountSid", account_sid.as_str()),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", config.call_sid.as_str()),
        ("CallStatus", "ringing"),
        ("Direction", config.direction.as_str()),
        ("From", config.from.as_str()),
        ("To", config.to.as_str()),
        ("Caller", config.from.as_str()),
        ("Called", config.to.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .chain(
        config
            .answered_by
            .iter()
            .map(|a| ("AnsweredBy".to_string(), a.clone())),
    )
    .collect();
    let response = signed_post(
        client,
        &config.auth_token,
        &config.signed_url,
        &config.webhook_url,
        &params,
    )
    .send()
    .await
    .map_err(|source| CallerError::Webhook {
        url: config.webhook_url.clone(),
        source,
    })?;
    let status = response.status().as_u16();
    let twiml = response
        .text()
        .await
        .map_err(|source| CallerError::Webhook {
            url: config.webhook_url.clone(),
            source,
        })?;
    let stream = parse_stream_twiml(&twiml).map(|(twiml_url, twiml_token)| {
        let url = config.stream_url_override.clone().unwrap_or(twiml_url);
        let token = match &config.token_override {
            Some(t) => Some(t.clone()).filter(|t| !t.is_empty()),
            None => twiml_token,
        };
        (url, token)
    });
    Ok(Answer {
        status,
        twiml,
        stream,
    })
}

/// Places the call: the webhook ([`answer`]), then the media stream, until the speech and the
/// tail silence have been sent and `stop` is answered (or 3 s pass).
///
/// Errors: [`CallerError`] when the webhook or the WebSocket connection fails.
pub async fn run(config: CallerConfig) -> Result<CallerReport, CallerError> {
    voxrelay::install_crypto_provider();
    let mut report = CallerReport::default();
    let account_sid = account_sid();
    let answered = answer(&config, &reqwest::Client::new()).await?;
    report.webhook_status = answered.status;
    report.twiml = answered.twiml;
    let Some((url, token)) = answered.stream else {
        return Ok(report);
    };
    tokio::time::sleep(Duration::from_millis(config.stream_connect_delay_ms)).await;
    stream_into(&config, &url, token, &account_sid, &mut report).await?;
    if let (Some(dial), Some(twiml)) = (&config.dial, redirected_to(&report)) {
        report.transfer = follow_dial(&config, dial, &twiml).await?.map(Box::new);
    }
    Ok(report)
}

/// The TwiML the call's stream was redirected to, if it was.
fn redirected_to(report: &CallerReport) -> Option<String> {
    report.events.iter().rev().find_map(|(_, e)| match e {
        CallerEvent::Redirected { twiml } => Some(twiml.clone()),
        _ => None,
    })
}

/// Reads `<Dial action="…" … callerId="…"><Number>…</Number></Dial>`: the action URL, the
/// number and the caller ID.
pub fn parse_dial_twiml(twiml: &str) -> Option<(String, String, Option<String>)> {
    let dial = regex::Regex::new(r#"<Dial([^>]*)>\s*<Number>([^<]*)</Number>"#)
        .ok()?
        .captures(twiml)?;
    let attributes = dial.get(1)?.as_str();
    let attribute = |name: &str| {
        regex::Regex::new(&format!(r#"\s{name}="([^"]*)""#))
            .ok()?
            .captures(attributes)
            .and_then(|c| c.get(1))
            .map(|m| xml_unescape(m.as_str()))
    };
    Some((
        attribute("action")?,
        xml_unescape(dial.get(2)?.as_str()),
        attribute("callerId"),
    ))
}

/// Does what Twilio does with a `<Dial action>`: rings for [`DialAnswer::ring_ms`], POSTs the
/// signed outcome to the action URL, and runs what it answers (a new media stream, with the
/// caller saying [`DialAnswer::return_speech`]). `None` when the TwiML dials nothing.
///
/// Errors: [`CallerError`] when the callback or the new stream fails.
async fn follow_dial(
    config: &CallerConfig,
    dial: &DialAnswer,
    twiml: &str,
) -> Result<Option<TransferLeg>, CallerError> {
    let Some((action_url, number, caller_id)) = parse_dial_twiml(twiml) else {
        return Ok(None);
    };
    tokio::time::sleep(Duration::from_millis(dial.ring_ms)).await;
    let account_sid = account_sid();
    let dial_sid = format!("CA{}", "d".repeat(32));
    let duration = dial.duration_s.map(|d| d.to_string()).unwrap_or_default();
    let mut params: Vec<(String, String)> = [
        ("AccountSid", account_sid.as_str()),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", config.call_sid.as_str()),
        ("CallStatus", "in-progress"),
        ("Direction", config.direction.as_str()),
        ("From", config.from.as_str()),
        ("To", config.to.as_str()),
        ("DialCallSid", dial_sid.as_str()),
        ("DialCallStatus", dial.status.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if !duration.is_empty() {
        params.push(("DialCallDuration".into(), duration));
    }
    let failed = |source| CallerError::Webhook {
        url: action_url.clone(),
        source,
    };
    let response = signed_post(
        &reqwest::Client::new(),
        &config.auth_token,
        &action_url,
        &action_url,
        &params,
    )
    .send()
    .await
    .map_err(failed)?;
    let action_status = response.status().as_u16();
    let action_twiml = response.text().await.map_err(failed)?;
    let mut leg = TransferLeg {
        dial_twiml: twiml.to_string(),
        action_url: action_url.clone(),
        number,
        caller_id,
        action_status,
        action_twiml: action_twiml.clone(),
        returned: None,
    };
    if let Some((url, token)) = parse_stream_twiml(&action_twiml) {
        let back = CallerConfig {
            speech: dial.return_speech.clone(),
            lead_silence_ms: dial.return_lead_ms,
            tail_silence_ms: dial.return_listen_ms,
            inject: Vec::new(),
            dial: None,
            ..config.clone()
        };
        let mut returned = CallerReport::default();
        stream_into(&back, &url, token, &account_sid, &mut returned).await?;
        leg.returned = Some(Box::new(returned));
    }
    Ok(Some(leg))
}

/// Only the media stream, to `url` with `token`, as [`run`] streams after its webhook: for a
/// stream Twilio would not open on its own (a replayed token, a second stream).
///
/// Errors: [`CallerError::Connect`] when the WebSocket connection fails.
pub async fn run_stream(
    config: CallerConfig,
    url: String,
    token: Option<String>,
) -> Result<CallerReport, CallerError> {
    voxrelay::install_crypto_provider();
    let mut report = CallerReport::default();
    stream_into(&config, &url, token, &account_sid(), &mut report).await?;
    Ok(report)
}

async fn stream_into(
    config: &CallerConfig,
    url: &str,
    token: Option<String>,
    account_sid: &str,
    report: &mut CallerReport,
) -> Result<(), CallerError> {
    let socket = connect(url, config.recv_buffer_bytes)
        .await
        .map_err(|source| CallerError::Connect {
            url: url.to_string(),
            source: Box::new(source),
        })?;
    report.streamed = true;
    stream(socket, config, token, account_sid, report).await;
    Ok(())
}

/// Opens the media WebSocket, with a receive buffer of `recv_buffer` bytes when given.
async fn connect(
    url: &str,
    recv_buffer: Option<usize>,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    tokio_tungstenite::tungstenite::Error,
> {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let Some(bytes) = recv_buffer else {
        let (socket, _) = tokio_tungstenite::connect_async_with_config(url, None, true).await?;
        return Ok(socket);
    };
    let authority = url
        .split_once("://")
        .map(|(_, rest)| rest.split('/').next().unwrap_or(rest))
        .unwrap_or(url);
    let addr = tokio::net::lookup_host(authority)
        .await
        .map_err(WsError::Io)?
        .next()
        .ok_or_else(|| WsError::Io(std::io::Error::other("no address for the stream URL")))?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(WsError::Io)?;
    socket
        .set_recv_buffer_size(bytes as u32)
        .map_err(WsError::Io)?;
    let tcp = socket.connect(addr).await.map_err(WsError::Io)?;
    tcp.set_nodelay(true).map_err(WsError::Io)?;
    let (socket, _) =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(tcp)).await?;
    Ok(socket)
}

async fn stream(
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    config: &CallerConfig,
    token: Option<String>,
    account_sid: &str,
    report: &mut CallerReport,
) {
    let (mut sink, mut incoming) = socket.split();
    let stream_sid = format!("MZ{}", &config.call_sid.trim_start_matches("CA"));
    let mut custom = serde_json::Map::new();
    if let Some(token) = token {
        custom.insert("token".into(), json!(token));
    }
    let mut seq: u64 = 1;
    let connected = json!({"event":"connected","protocol":"Call","version":"1.0.0"});
    let start = json!({
        "event": "start", "sequenceNumber": seq.to_string(),
        "start": {
            "accountSid": account_sid, "streamSid": stream_sid, "callSid": config.call_sid,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": custom,
        },
        "streamSid": stream_sid,
    });
    if sink
        .send(Message::Text(connected.to_string().into()))
        .await
        .is_err()
        || sink
            .send(Message::Text(start.to_string().into()))
            .await
            .is_err()
    {
        return;
    }
    let t0 = Instant::now();
    let since = |at: Instant| at.saturating_duration_since(t0);
    let mut redirect = config.live_calls.as_ref().map(|l| l.open(&config.call_sid));

    // The caller's side: lead silence, speech, tail silence, in 20 ms frames.
    let frame_ms = 20u64;
    let lead_frames = (config.lead_silence_ms / frame_ms) as usize;
    let speech_frames = config.speech.len().div_ceil(FRAME_BYTES);
    let tail_frames = (config.tail_silence_ms / frame_ms) as usize;
    let total_frames = lead_frames + speech_frames + tail_frames;
    let frame = |i: usize| -> Vec<u8> {
        if i < lead_frames || i >= lead_frames + speech_frames {
            return vec![SILENCE; FRAME_BYTES];
        }
        let offset = (i - lead_frames) * FRAME_BYTES;
        let mut f = config.speech[offset..(offset + FRAME_BYTES).min(config.speech.len())].to_vec();
        f.resize(FRAME_BYTES, SILENCE);
        f
    };

    let mut speaker = Playback::keeping_audio();
    let mut ticker = tokio::time::interval(Duration::from_millis(frame_ms));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut next_frame = 0usize;
    let mut stopped = false;
    let mut quiet = false;
    let mut stop_deadline: Option<tokio::time::Instant> = None;
    let far = tokio::time::Instant::now() + Duration::from_secs(3600);
    let reading_stops = config
        .stop_reading
        .map(|(after, _)| tokio::time::Instant::now() + Duration::from_millis(after));
    let reading_resumes = config
        .stop_reading
        .map(|(after, pause)| tokio::time::Instant::now() + Duration::from_millis(after + pause));
    let reading = || {
        let now = tokio::time::Instant::now();
        match (reading_stops, reading_resumes) {
            (Some(stops), Some(resumes)) => now < stops || now >= resumes,
            _ => true,
        }
    };

    loop {
        let mark_due = speaker
            .next_mark_due()
            .map(tokio::time::Instant::from_std)
            .unwrap_or(far);
        tokio::select! {
            _ = ticker.tick(), if !stopped => {
                let now = Instant::now();
                for (at, text) in &config.inject {
                    if *at == next_frame && sink.send(Message::Text(text.clone().into())).await.is_err() {
                        return;
                    }
                }
                if next_frame == lead_frames && speech_frames > 0 {
                    report.events.push((since(now), CallerEvent::SpeechBegins));
                }
                if next_frame == lead_frames + speech_frames && speech_frames > 0 {
                    report.events.push((since(now), CallerEvent::SpeechEnds));
                }
                if next_frame >= total_frames && config.close_without_stop {
                    let _ = sink.close().await;
                    report.events.push((since(now), CallerEvent::Closed { code: None, reason: "closed by the caller".into() }));
                    break;
                }
                if next_frame >= total_frames && config.go_quiet {
                    report.events.push((since(now), CallerEvent::Quiet));
                    stopped = true;
                    quiet = true;
                    continue;
                }
                if next_frame >= total_frames {
                    seq += 1;
                    let stop = json!({"event":"stop","sequenceNumber":seq.to_string(),"streamSid":stream_sid,
                        "stop":{"accountSid":account_sid,"callSid":config.call_sid}});
                    let _ = sink.send(Message::Text(stop.to_string().into())).await;
                    report.events.push((since(now), CallerEvent::Stop));
                    stopped = true;
                    stop_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(3));
                    continue;
                }
                seq += 1;
                let payload = B64.encode(frame(next_frame));
                let media = json!({"event":"media","sequenceNumber":seq.to_string(),
                    "media":{"track":"inbound","chunk":(next_frame + 1).to_string(),
                             "timestamp":(next_frame as u64 * frame_ms).to_string(),"payload":payload},
                    "streamSid":stream_sid});
                if sink.send(Message::Text(media.to_string().into())).await.is_err() {
                    return;
                }
                report.frames_sent += 1;
                next_frame += 1;
            }
            _ = tokio::time::sleep_until(mark_due), if !quiet => {
                for name in speaker.due_marks(Instant::now()) {
                    seq += 1;
                    let mark = json!({"event":"mark","sequenceNumber":seq.to_string(),"streamSid":stream_sid,"mark":{"name":name}});
                    if sink.send(Message::Text(mark.to_string().into())).await.is_err() {
                        return;
                    }
                    report.marks_echoed += 1;
                }
            }
            _ = tokio::time::sleep_until(stop_deadline.unwrap_or(far)), if stop_deadline.is_some() => {
                let _ = sink.close().await;
                break;
            }
            twiml = redirected(&mut redirect), if redirect.is_some() => {
                let Some(twiml) = twiml else {
                    redirect = None;
                    continue;
                };
                report.events.push((since(Instant::now()), CallerEvent::Redirected { twiml }));
                seq += 1;
                let stop = json!({"event":"stop","sequenceNumber":seq.to_string(),"streamSid":stream_sid,
                    "stop":{"accountSid":account_sid,"callSid":config.call_sid}});
                let _ = sink.send(Message::Text(stop.to_string().into())).await;
                let _ = sink.close().await;
                break;
            }
            // A stalled Twilio: wake when reading stops and when it resumes.
            _ = tokio::time::sleep_until(reading_stops.unwrap_or(far)), if reading() && reading_stops.is_some_and(|t| t > tokio::time::Instant::now()) => {}
            _ = tokio::time::sleep_until(reading_resumes.unwrap_or(far)), if !reading() => {}
            message = incoming.next(), if reading() => {
                let now = Instant::now();
                match message {
                    Some(Ok(Message::Text(text))) => {
                        report.received.push((since(now), text.to_string()));
                        let value: serde_json::Value = match serde_json::from_str(text.as_str()) {
                            Ok(v) => v,
                            Err(_) => continue,
                        };
                        match value["event"].as_str() {
                            Some("media") => {
                                let Some(payload) = value["media"]["payload"].as_str() else { continue };
                                let Ok(bytes) = B64.decode(payload) else { continue };
                                if report.media_received == 0 {
                                    report.events.push((since(now), CallerEvent::FirstAudio));
                                }
                                report.media_received += 1;
                                if speaker.push(&bytes, now) {
                                    report.events.push((since(now), CallerEvent::PlaybackStarts));
                                }
                            }
                            Some("mark") => {
                                let name = value["mark"]["name"].as_str().unwrap_or("").to_string();
                                speaker.mark(name);
                            }
                            Some("clear") => {
                                let Cleared { heard_ms, dropped_ms, marks } = speaker.clear(now);
                                let marks_returned = marks.len();
                                for name in marks.into_iter().filter(|_| !quiet) {
                                    seq += 1;
                                    let mark = json!({"event":"mark","sequenceNumber":seq.to_string(),"streamSid":stream_sid,"mark":{"name":name}});
                                    let _ = sink.send(Message::Text(mark.to_string().into())).await;
                                    report.marks_echoed += 1;
                                }
                                report.events.push((since(now), CallerEvent::Clear { heard_ms, dropped_ms, marks_returned }));
                            }
                            _ => {}
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        let (code, reason) = match frame {
                            Some(f) => (Some(u16::from(f.code)), f.reason.to_string()),
                            None => (None, String::new()),
                        };
                        report.events.push((since(now), CallerEvent::Closed { code, reason }));
                        break;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => {
                        report.events.push((since(now), CallerEvent::Closed { code: None, reason: "connection lost".into() }));
                        break;
                    }
                }
            }
        }
    }
    if let Some(live) = &config.live_calls {
        live.close(&config.call_sid);
    }
    report.heard = speaker.into_heard(Instant::now());
}

/// The TwiML of the call's redirect, when one comes; `None` when none can come any more.
async fn redirected(
    redirect: &mut Option<tokio::sync::oneshot::Receiver<String>>,
) -> Option<String> {
    match redirect {
        Some(rx) => rx.await.ok(),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dial_action_number_and_caller_id_are_read_from_twiml() {
        let twiml = voxrelay::twilio::twiml::dial_with_action(
            "+15005550006",
            "http://127.0.0.1:1/twilio/dial-status/i?target=front+desk&token=a.b",
            20,
            Some("+14155550100"),
        );
        assert_eq!(
            parse_dial_twiml(&twiml),
            Some((
                "http://127.0.0.1:1/twilio/dial-status/i?target=front+desk&token=a.b".to_string(),
                "+15005550006".to_string(),
                Some("+14155550100".to_string())
            ))
        );
        assert_eq!(
            parse_dial_twiml("<Response><Dial>+1</Dial></Response>"),
            None
        );
    }

    #[test]
    fn the_stream_url_and_token_are_read_from_twiml() {
        let twiml = r#"<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="wss://example.com/twilio/media"><Parameter name="token" value="a.b&amp;c" /></Stream></Connect></Response>"#;
        assert_eq!(
            parse_stream_twiml(twiml),
            Some((
                "wss://example.com/twilio/media".to_string(),
                Some("a.b&c".to_string())
            ))
        );
        assert_eq!(
            parse_stream_twiml("<Response><Say>Sorry</Say><Hangup/></Response>"),
            None
        );
    }
}
