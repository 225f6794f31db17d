//! One simulated Twilio call under load: the signed webhook (through the caller simulator's
//! [`answer`](voxrelay_sim::caller::answer)), then the media stream as Twilio runs it: 20 ms
//! frames at real-time pace, marks echoed when the audio before them has played, marks returned
//! at once on a `clear` (the simulated caller's own playback model,
//! [`voxrelay_sim::playback::Playback`]). Frames are stamped ([`crate::stamp`]); with the simulated upstream in
//! echo mode each comes back as model audio, and its round trip is timed.
//!
//! Every loop is bounded: the call streams for its duration, then sends `stop` and waits at most
//! [`CLOSE_GRACE`] for the proxy to close.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio_tungstenite::tungstenite::Message;

use voxrelay::audio::mulaw::FRAME_BYTES;
use voxrelay_sim::caller::{self, CallerConfig};
use voxrelay_sim::playback::Playback;

use crate::stamp;

/// How long a call waits for the proxy to close after `stop`.
pub const CLOSE_GRACE: Duration = Duration::from_secs(3);

/// Frames sent in the last this-much of a call are not expected back (they may still be in
/// flight when `stop` goes out).
const IN_FLIGHT_TAIL: Duration = Duration::from_millis(500);

/// Frame length.
const FRAME: Duration = Duration::from_millis(20);

/// What one call does.
#[derive(Debug, Clone)]
pub struct CallPlan {
    /// Index of the call in the run (stamped into its frames).
    pub index: u16,
    /// The webhook and stream parameters.
    pub caller: CallerConfig,
    /// How long the media stream runs before `stop`.
    pub duration: Duration,
    /// Wait between the webhook's answer and opening the media WebSocket (Twilio's gap).
    pub stream_connect_delay: Duration,
    /// When (after `start`) the caller talks over the model, if at all; the speech is
    /// [`CallerConfig::speech`].
    pub barge_in_at: Option<Duration>,
}

/// What one call measured.
#[derive(Debug, Clone, Default)]
pub struct CallResult {
    /// The webhook connected a stream and the WebSocket opened.
    pub streamed: bool,
    /// `start` sent → first greeting audio received, ms.
    pub greeting_ms: Option<f64>,
    /// Round trips of stamped frames, µs.
    pub round_trips_us: Vec<u64>,
    /// Stamped frames sent.
    pub stamped_sent: u64,
    /// Stamped frames that should have come back (sent after the echo began, not in the tail).
    pub expected: u64,
    /// Of those, the ones that came back.
    pub returned: u64,
    /// `clear` messages received.
    pub clears: u64,
    /// Marks echoed back to the proxy.
    pub marks_echoed: u64,
    /// Why the call failed, if it did.
    pub error: Option<String>,
}

#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(borrow)]
    event: &'a str,
    #[serde(borrow, default)]
    media: Option<MediaPart<'a>>,
    #[serde(default)]
    mark: Option<MarkPart>,
}

#[derive(Deserialize)]
struct MediaPart<'a> {
    #[serde(borrow)]
    payload: &'a str,
}

#[derive(Deserialize)]
struct MarkPart {
    name: String,
}

/// Runs one call to its end. Failures are reported in the result, never raised.
pub async fn run(plan: CallPlan, client: reqwest::Client) -> CallResult {
    let mut result = CallResult::default();
    if let Err(e) = drive(&plan, &client, &mut result).await {
        result.error = Some(e);
    }
    result
}

async fn drive(
    plan: &CallPlan,
    client: &reqwest::Client,
    result: &mut CallResult,
) -> Result<(), String> {
    let answered = caller::answer(&plan.caller, client)
        .await
        .map_err(|e| e.to_string())?;
    let Some((url, token)) = answered.stream else {
        return Err(format!(
            "webhook answered {} without a stream: {}",
            answered.status, answered.twiml
        ));
    };
    tokio::time::sleep(plan.stream_connect_delay).await;
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(16 * 1024);
    let (socket, _) =
        tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true)
            .await
            .map_err(|e| format!("media WebSocket {url}: {e}"))?;
    result.streamed = true;
    let (mut sink, mut incoming) = socket.split();

    let call_sid = &plan.caller.call_sid;
    let stream_sid = format!("MZ{}", call_sid.trim_start_matches("CA"));
    let account_sid = caller::account_sid();
    let custom = match &token {
        Some(t) => serde_json::json!({ "token": t }),
        None => serde_json::json!({}),
    };
    let start = serde_json::json!({
        "event": "start", "sequenceNumber": "1",
        "start": {
            "accountSid": account_sid, "streamSid": stream_sid, "callSid": call_sid,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": custom,
        },
        "streamSid": stream_sid,
    });
    let connected = r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#;
    let send = |text: String| Message::Text(text.into());
    sink.send(send(connected.to_string()))
        .await
        .map_err(|e| e.to_string())?;
    sink.send(send(start.to_string()))
        .await
        .map_err(|e| e.to_string())?;
    let t0 = Instant::now();

    let frames_total = (plan.duration.as_millis() / FRAME.as_millis()) as u32;
    let tail_from =
        frames_total.saturating_sub((IN_FLIGHT_TAIL.as_millis() / FRAME.as_millis()) as u32);
    let speech = &plan.caller.speech;
    let speech_frames = speech.len().div_ceil(FRAME_BYTES) as u32;
    let barge_frame = plan
        .barge_in_at
        .map(|at| (at.as_millis() / FRAME.as_millis()) as u32);
    // When each frame was sent (None: not stamped), and whether it came back.
    let mut sent_at: Vec<Option<Instant>> = Vec::with_capacity(frames_total as usize);
    let mut came_back: Vec<bool> = vec![false; frames_total as usize];
    let mut first_echo: Option<u32> = None;
    let mut playback = Playback::new();
    let mut seq: u64 = 1;
    let mut ticker = tokio::time::interval(FRAME);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut next = 0u32;
    let far = tokio::time::Instant::now() + Duration::from_secs(24 * 3600);
    let mut close_by: Option<tokio::time::Instant> = None;

    loop {
        let mark_due = playback
            .next_mark_due()
            .map(tokio::time::Instant::from_std)
            .unwrap_or(far);
        tokio::select! {
            _ = ticker.tick(), if close_by.is_none() => {
                seq += 1;
                if next >= frames_total {
                    let stop = format!(
                        r#"{{"event":"stop","sequenceNumber":"{seq}","streamSid":"{stream_sid}","stop":{{"accountSid":"{account_sid}","callSid":"{call_sid}"}}}}"#
                    );
                    let _ = sink.send(send(stop)).await;
                    close_by = Some(tokio::time::Instant::now() + CLOSE_GRACE);
                    continue;
                }
                let speaking = barge_frame
                    .is_some_and(|b| next >= b && next < b + speech_frames);
                let payload = if speaking {
                    let offset = ((next - barge_frame.unwrap_or(0)) as usize) * FRAME_BYTES;
                    let mut f = speech[offset..(offset + FRAME_BYTES).min(speech.len())].to_vec();
                    f.resize(FRAME_BYTES, voxrelay::audio::mulaw::SILENCE);
                    sent_at.push(None);
                    B64.encode(f)
                } else {
                    sent_at.push(Some(Instant::now()));
                    result.stamped_sent += 1;
                    B64.encode(stamp::frame(plan.index, next))
                };
                let media = format!(
                    r#"{{"event":"media","sequenceNumber":"{seq}","media":{{"track":"inbound","chunk":"{}","timestamp":"{}","payload":"{payload}"}},"streamSid":"{stream_sid}"}}"#,
                    next + 1,
                    u64::from(next) * 20
                );
                if sink.send(send(media)).await.is_err() {
                    return Err("the proxy closed the media stream early".into());
                }
                next += 1;
            }
            _ = tokio::time::sleep_until(mark_due), if playback.has_marks() => {
                for name in playback.due_marks(Instant::now()) {
                    seq += 1;
                    let mark = format!(
                        r#"{{"event":"mark","sequenceNumber":"{seq}","streamSid":"{stream_sid}","mark":{{"name":"{name}"}}}}"#
                    );
                    if sink.send(send(mark)).await.is_err() {
                        break;
                    }
                    result.marks_echoed += 1;
                }
            }
            _ = tokio::time::sleep_until(close_by.unwrap_or(far)), if close_by.is_some() => {
                let _ = sink.close().await;
                break;
            }
            message = incoming.next() => {
                let now = Instant::now();
                let text = match message {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue,
                };
                let Ok(event) = serde_json::from_str::<Incoming<'_>>(text.as_str()) else {
                    continue;
                };
                match event.event {
                    "media" => {
                        let Some(Ok(bytes)) = event.media.map(|m| B64.decode(m.payload)) else {
                            continue;
                        };
                        playback.push(&bytes, now);
                        match stamp::read(&bytes) {
                            Some((call, frame)) if call == plan.index => {
                                let i = frame as usize;
                                if let (Some(Some(at)), Some(back)) = (sent_at.get(i), came_back.get_mut(i))
                                    && !*back
                                {
                                    *back = true;
                                    first_echo.get_or_insert(frame);
                                    result.round_trips_us.push(now.saturating_duration_since(*at).as_micros() as u64);
                                }
                            }
                            Some(_) => {}
                            None => {
                                if result.greeting_ms.is_none() {
                                    result.greeting_ms = Some(now.saturating_duration_since(t0).as_secs_f64() * 1000.0);
                                }
                            }
                        }
                    }
                    "mark" => {
                        if let Some(mark) = event.mark {
                            playback.mark(mark.name);
                        }
                    }
                    "clear" => {
                        result.clears += 1;
                        for name in playback.clear(now).marks {
                            seq += 1;
                            let mark = format!(
                                r#"{{"event":"mark","sequenceNumber":"{seq}","streamSid":"{stream_sid}","mark":{{"name":"{name}"}}}}"#
                            );
                            let _ = sink.send(send(mark)).await;
                            result.marks_echoed += 1;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    if let Some(first) = first_echo {
        for frame in first..tail_from {
            let i = frame as usize;
            if matches!(sent_at.get(i), Some(Some(_))) {
                result.expected += 1;
                if came_back.get(i).copied().unwrap_or(false) {
                    result.returned += 1;
                }
            }
        }
    }
    Ok(())
}
