//! The simulated Realtime upstream, driven over a real loopback WebSocket with tokio-tungstenite
//! as the client, the way the relay talks to it.

use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use voxrelay::audio::mulaw;
use voxrelay_sim::upstream::{Clip, SimUpstream, SimUpstreamConfig, Truncation};

type Result<T = ()> = anyhow::Result<T>;

/// Longest wait for any single server event.
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

const CLIP_TEXT: &str = "One two three four five six seven.";

// --- audio -----------------------------------------------------------------------------------

/// `ms` of a 440 Hz tone at about -12 dBFS: well above the VAD threshold.
fn loud(ms: usize) -> Vec<u8> {
    tone(ms, 440.0, 8000.0)
}

fn silence(ms: usize) -> Vec<u8> {
    vec![mulaw::SILENCE; ms * mulaw::BYTES_PER_MS]
}

fn tone(ms: usize, hz: f32, amplitude: f32) -> Vec<u8> {
    let samples: Vec<i16> = (0..ms * 8)
        .map(|i| ((i as f32 * hz * std::f32::consts::TAU / 8000.0).sin() * amplitude) as i16)
        .collect();
    mulaw::encode(&samples)
}

/// A short synthetic clip, so responses are quick.
fn test_clip(ms: usize) -> Clip {
    Clip::new(tone(ms, 300.0, 6000.0), CLIP_TEXT)
}

fn config(clip_ms: usize, realtime_pace: bool) -> SimUpstreamConfig {
    SimUpstreamConfig {
        realtime_pace,
        clip: test_clip(clip_ms),
        ..SimUpstreamConfig::default()
    }
}

async fn start(config: SimUpstreamConfig) -> Result<SimUpstream> {
    Ok(SimUpstream::start("127.0.0.1:0".parse()?, config).await?)
}

// --- client ----------------------------------------------------------------------------------

struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    /// Connects as the relay does (model in the query, bearer token) and reads `session.created`.
    async fn connect(sim: &SimUpstream) -> Result<(Client, Value)> {
        let mut request = format!("{}?model=gpt-realtime-2", sim.url()).into_client_request()?;
        request
            .headers_mut()
            .insert("Authorization", HeaderValue::from_static("Bearer sk-test"));
        let (ws, _) = tokio_tungstenite::connect_async(request).await?;
        let mut client = Client { ws };
        let created = client.next().await?;
        ensure!(
            created["type"] == "session.created",
            "first event: {created}"
        );
        Ok((client, created))
    }

    async fn send(&mut self, event: Value) -> Result {
        self.send_raw(&event.to_string()).await
    }

    async fn send_raw(&mut self, text: &str) -> Result {
        self.ws.send(Message::text(text.to_owned())).await?;
        Ok(())
    }

    /// Sends audio as Twilio delivers it: 20 ms (160-byte) appends.
    async fn append(&mut self, audio: &[u8]) -> Result {
        for frame in audio.chunks(mulaw::FRAME_BYTES) {
            self.send(json!({"type": "input_audio_buffer.append", "audio": BASE64.encode(frame)}))
                .await?;
        }
        Ok(())
    }

    /// The next server event (text frames only).
    async fn next(&mut self) -> Result<Value> {
        loop {
            let frame = tokio::time::timeout(EVENT_TIMEOUT, self.ws.next())
                .await
                .context("no server event within the timeout")?
                .ok_or_else(|| anyhow!("the server closed the connection"))??;
            if let Message::Text(text) = frame {
                return Ok(serde_json::from_str(text.as_str())?);
            }
        }
    }

    /// Every event up to and including the first of type `event_type`.
    async fn until(&mut self, event_type: &str) -> Result<Vec<Value>> {
        let mut events = Vec::new();
        loop {
            let event = self.next().await?;
            let done = event["type"] == event_type;
            events.push(event);
            if done {
                return Ok(events);
            }
        }
    }

    /// The events that arrive within `wait`.
    async fn for_a_while(&mut self, wait: Duration) -> Result<Vec<Value>> {
        let mut events = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(frame) = tokio::time::timeout_at(deadline, self.ws.next()).await {
            match frame {
                Some(Ok(Message::Text(text))) => events.push(serde_json::from_str(text.as_str())?),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => break,
            }
        }
        Ok(events)
    }
}

fn of_type<'a>(events: &'a [Value], event_type: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == event_type).collect()
}

fn position(events: &[Value], event_type: &str) -> Result<usize> {
    events
        .iter()
        .position(|e| e["type"] == event_type)
        .ok_or_else(|| anyhow!("no {event_type} in {events:?}"))
}

/// The audio of every `response.output_audio.delta`, concatenated.
fn audio_of(events: &[Value]) -> Result<Vec<u8>> {
    let mut audio = Vec::new();
    for delta in of_type(events, "response.output_audio.delta") {
        let text = delta["delta"].as_str().context("delta without audio")?;
        audio.extend(BASE64.decode(text)?);
    }
    Ok(audio)
}

async fn update_turn_detection(client: &mut Client, turn_detection: Value) -> Result {
    client
        .send(json!({
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"turn_detection": turn_detection}}},
        }))
        .await?;
    client.until("session.updated").await?;
    Ok(())
}

// --- tests -----------------------------------------------------------------------------------

#[tokio::test]
async fn session_update_is_answered_with_session_updated_carrying_the_instructions() -> Result {
    let sim = start(config(500, false)).await?;
    let (mut client, created) = Client::connect(&sim).await?;
    let session = &created["session"];
    assert_eq!(session["type"], "realtime");
    assert!(
        session["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("sess_"))
    );
    assert_eq!(session["model"], "gpt-realtime-2");
    assert_eq!(session["instructions"], "");
    assert_eq!(
        session["audio"]["input"]["format"],
        json!({"type": "audio/pcm", "rate": 24000})
    );
    assert_eq!(
        session["audio"]["input"]["turn_detection"]["type"],
        "server_vad"
    );

    client
        .send(json!({
            "type": "session.update",
            "event_id": "evt_1",
            "session": {
                "type": "realtime",
                "instructions": "You answer the phone for Bright Smile Dental.",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcmu"},
                        "turn_detection": {"type": "server_vad", "silence_duration_ms": 700},
                    },
                    "output": {"format": {"type": "audio/pcmu"}, "voice": "cedar"},
                },
            },
        }))
        .await?;
    let updated = client.next().await?;
    assert_eq!(updated["type"], "session.updated");
    assert_ne!(updated["event_id"], created["event_id"]);
    let session = &updated["session"];
    assert_eq!(
        session["instructions"],
        "You answer the phone for Bright Smile Dental."
    );
    assert_eq!(
        session["audio"]["input"]["format"],
        json!({"type": "audio/pcmu"})
    );
    assert_eq!(
        session["audio"]["output"]["format"],
        json!({"type": "audio/pcmu"})
    );
    assert_eq!(session["audio"]["output"]["voice"], "cedar");
    let td = &session["audio"]["input"]["turn_detection"];
    assert_eq!(td["silence_duration_ms"], 700);
    assert_eq!(td["prefix_padding_ms"], 300, "untouched settings are kept");
    assert_eq!(td["interrupt_response"], true);
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn caller_speech_then_silence_is_committed_and_answered_with_the_whole_clip() -> Result {
    let sim = start(config(1000, false)).await?;
    let (mut client, _) = Client::connect(&sim).await?;
    let mut audio = silence(500);
    audio.extend(loud(600));
    audio.extend(silence(600));
    client.append(&audio).await?;

    let turn = client.until("conversation.item.done").await?;
    let types: Vec<&str> = turn.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        types,
        [
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            "conversation.item.added",
            "conversation.item.done",
        ]
    );
    let item_id = turn[0]["item_id"].clone();
    assert_eq!(
        turn[0]["audio_start_ms"], 200,
        "500 ms of silence minus 300 ms padding"
    );
    assert_eq!(turn[1]["audio_end_ms"], 1100);
    assert_eq!(turn[1]["item_id"], item_id);
    assert_eq!(turn[2]["item_id"], item_id);
    assert_eq!(turn[2]["previous_item_id"], Value::Null);
    assert_eq!(turn[4]["item"]["role"], "user");
    assert_eq!(turn[4]["item"]["id"], item_id);

    let response = client.until("response.done").await?;
    let created = position(&response, "response.created")?;
    let item_added = position(&response, "response.output_item.added")?;
    let part_added = position(&response, "response.content_part.added")?;
    let first_delta = position(&response, "response.output_audio.delta")?;
    let audio_done = position(&response, "response.output_audio.done")?;
    assert!(created < item_added && item_added < part_added && part_added < first_delta);
    assert!(of_type(&response[audio_done..], "response.output_audio.delta").is_empty());
    assert_eq!(response[created]["response"]["status"], "in_progress");

    let clip = test_clip(1000);
    assert_eq!(
        audio_of(&response)?,
        *clip.mulaw,
        "the deltas add up to the clip"
    );
    assert_eq!(of_type(&response, "response.output_audio.delta").len(), 10);
    let transcript: String = of_type(&response, "response.output_audio_transcript.delta")
        .iter()
        .filter_map(|e| e["delta"].as_str())
        .collect();
    assert_eq!(transcript, CLIP_TEXT);
    let done = &response[response.len() - 1]["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"][0]["content"][0]["transcript"], CLIP_TEXT);
    assert_eq!(done["usage"]["output_token_details"]["audio_tokens"], 20);
    assert!(
        of_type(
            &response,
            "conversation.item.input_audio_transcription.completed"
        )
        .is_empty()
    );
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn cancelling_with_no_active_response_is_rejected_as_not_active() -> Result {
    let sim = start(config(500, false)).await?;
    let (mut client, _) = Client::connect(&sim).await?;
    client
        .send(json!({"type": "response.cancel", "event_id": "evt_cancel"}))
        .await?;
    let error = client.next().await?;
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert_eq!(error["error"]["code"], "response_cancel_not_active");
    assert_eq!(
        error["error"]["message"],
        "Cancellation failed: no active response found"
    );
    assert_eq!(error["error"]["event_id"], "evt_cancel");
    // The session goes on.
    client
        .send(json!({"type": "session.update", "session": {"type": "realtime"}}))
        .await?;
    assert_eq!(client.next().await?["type"], "session.updated");
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn caller_speaking_during_a_response_cancels_it_as_turn_detected() -> Result {
    let sim = start(config(3000, true)).await?;
    let (mut client, _) = Client::connect(&sim).await?;
    client.send(json!({"type": "response.create"})).await?;
    let mut events = client.until("response.output_audio.delta").await?;

    client.append(&loud(200)).await?;
    events.extend(client.until("response.done").await?);
    let started = position(&events, "input_audio_buffer.speech_started")?;
    let done_at = position(&events, "response.done")?;
    assert!(started < done_at, "speech_started comes first");
    let done = &events[done_at]["response"];
    assert_eq!(done["status"], "cancelled");
    assert_eq!(
        done["status_details"],
        json!({"type": "cancelled", "reason": "turn_detected"})
    );
    assert_eq!(done["output"][0]["status"], "incomplete");
    let heard = audio_of(&events)?.len();
    assert!(
        heard < test_clip(3000).mulaw.len(),
        "audio stopped early: {heard} bytes"
    );

    // No audio after the cancellation.
    let later = client.for_a_while(Duration::from_millis(250)).await?;
    assert!(
        of_type(&later, "response.output_audio.delta").is_empty(),
        "{later:?}"
    );
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn with_interrupt_response_off_caller_speech_does_not_cancel_the_response() -> Result {
    let sim = start(config(600, true)).await?;
    let (mut client, _) = Client::connect(&sim).await?;
    update_turn_detection(
        &mut client,
        json!({"type": "server_vad", "interrupt_response": false, "create_response": false}),
    )
    .await?;
    client.send(json!({"type": "response.create"})).await?;
    client.until("response.output_audio.delta").await?;
    client.append(&loud(200)).await?;
    let events = client.until("response.done").await?;
    assert!(!of_type(&events, "input_audio_buffer.speech_started").is_empty());
    assert_eq!(events[events.len() - 1]["response"]["status"], "completed");
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn truncating_beyond_the_audio_sent_is_rejected_and_within_it_is_accepted() -> Result {
    let sim = start(config(1000, false)).await?;
    let (mut client, _) = Client::connect(&sim).await?;
    client.send(json!({"type": "response.create"})).await?;
    let response = client.until("response.done").await?;
    let item_id = response[response.len() - 1]["response"]["output"][0]["id"]
        .as_str()
        .context("response without an item")?
        .to_owned();

    client
        .send(json!({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": 1500}))
        .await?;
    let error = client.next().await?;
    assert_eq!(error["error"]["code"], "invalid_value", "{error}");

    client
        .send(json!({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": 400}))
        .await?;
    let truncated = client.next().await?;
    assert_eq!(truncated["type"], "conversation.item.truncated");
    assert_eq!(truncated["item_id"], item_id.as_str());
    assert_eq!(truncated["content_index"], 0);
    assert_eq!(truncated["audio_end_ms"], 400);

    client
        .send(json!({"type": "conversation.item.truncate", "item_id": "item_404", "content_index": 0, "audio_end_ms": 10}))
        .await?;
    assert_eq!(client.next().await?["error"]["code"], "item_not_found");

    let sessions = sim.sessions();
    assert_eq!(
        sessions[0].truncations,
        [Truncation {
            item_id,
            content_index: 0,
            audio_end_ms: 400
        }]
    );
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn event_log_holds_every_client_event_exactly_as_sent() -> Result {
    let dir = tempfile::tempdir()?;
    let log_path = dir.path().join("events.jsonl");
    let sim = start(SimUpstreamConfig {
        event_log: Some(log_path.clone()),
        ..config(500, false)
    })
    .await?;
    let (mut client, _) = Client::connect(&sim).await?;
    let frame = BASE64.encode(silence(20));
    let sent = [
        r#"{"type":"session.update","session":{"type":"realtime","instructions":"Hi"}}"#.to_owned(),
        format!(r#"{{"type":"input_audio_buffer.append","audio":"{frame}"}}"#),
        format!(r#"{{"type":"input_audio_buffer.append","audio":"{frame}"}}"#),
        format!(r#"{{"type": "input_audio_buffer.append",  "audio": "{frame}"}}"#),
        r#"{"event_id": "e5", "type": "response.cancel"}"#.to_owned(),
        "this is not JSON".to_owned(),
    ];
    for text in &sent {
        client.send_raw(text).await?;
    }
    // The last frame's error means every frame before it has been handled.
    let events = client.until("error").await?;
    assert_eq!(
        events[events.len() - 1]["error"]["code"],
        "response_cancel_not_active"
    );
    let last = client.next().await?;
    assert_eq!(last["error"]["code"], "invalid_json");

    let logged = std::fs::read_to_string(&log_path)?;
    let lines: Vec<&str> = logged.lines().collect();
    assert_eq!(lines, sent.iter().map(String::as_str).collect::<Vec<_>>());

    let sessions = sim.sessions();
    assert_eq!(sessions[0].append_events, 3);
    assert_eq!(sessions[0].appended_bytes, 480);
    assert_eq!(
        sessions[0].events,
        [sent[0].clone(), sent[4].clone(), sent[5].clone()]
    );
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn realtime_pace_spreads_a_one_second_clip_over_about_a_second() -> Result {
    let sim = start(config(1000, true)).await?;
    let (mut client, _) = Client::connect(&sim).await?;
    client.send(json!({"type": "response.create"})).await?;
    client.until("response.created").await?;
    let created_at = Instant::now();
    let mut deltas = Vec::new();
    loop {
        let event = client.next().await?;
        if event["type"] == "response.output_audio.delta" {
            deltas.push(created_at.elapsed());
        }
        if event["type"] == "response.done" {
            break;
        }
    }
    assert_eq!(deltas.len(), 10, "100 ms per delta");
    let first = deltas[0];
    let last = deltas[deltas.len() - 1];
    assert!(
        first < Duration::from_millis(100),
        "first delta after {first:?}"
    );
    assert!(
        (Duration::from_millis(850)..Duration::from_millis(1300)).contains(&last),
        "last delta after {last:?}"
    );
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn fast_pace_sends_the_whole_clip_at_once_after_the_first_audio_delay() -> Result {
    let sim = start(SimUpstreamConfig {
        first_audio_delay_ms: 150,
        ..config(5000, false)
    })
    .await?;
    let (mut client, _) = Client::connect(&sim).await?;
    client.send(json!({"type": "response.create"})).await?;
    client.until("response.created").await?;
    let created_at = Instant::now();
    client.until("response.output_audio.delta").await?;
    let first = created_at.elapsed();
    let rest = client.until("response.done").await?;
    let all = created_at.elapsed();
    assert!(
        first >= Duration::from_millis(140),
        "first delta after {first:?}"
    );
    assert!(
        all < first + Duration::from_millis(500),
        "5 s of audio took {:?}",
        all - first
    );
    assert_eq!(of_type(&rest, "response.output_audio.delta").len(), 49);
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn connections_counts_websocket_handshakes_and_records_model_and_authorization() -> Result {
    let sim = start(config(500, false)).await?;
    assert_eq!(sim.connections(), 0);
    let (_first, _) = Client::connect(&sim).await?;
    let (_second, _) = Client::connect(&sim).await?;

    // Another path is refused with 404 and not counted.
    let wrong = sim.url().replace("/v1/realtime", "/v1/chat");
    match tokio_tungstenite::connect_async(wrong).await {
        Err(WsError::Http(response)) => assert_eq!(response.status().as_u16(), 404),
        other => bail!("expected HTTP 404, got {other:?}"),
    }
    // No model, no key.
    let (mut bare, _) = tokio_tungstenite::connect_async(sim.url()).await?;
    let created = tokio::time::timeout(EVENT_TIMEOUT, bare.next()).await?;
    assert!(matches!(created, Some(Ok(Message::Text(_)))));

    assert_eq!(sim.connections(), 3);
    let sessions = sim.sessions();
    assert_eq!(sessions.len(), 3);
    assert_eq!(sessions[0].model.as_deref(), Some("gpt-realtime-2"));
    assert!(sessions[0].authorization);
    assert_eq!(sessions[2].model, None);
    assert!(!sessions[2].authorization);
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn creating_a_response_while_one_is_active_is_rejected_naming_it() -> Result {
    let sim = start(config(2000, true)).await?;
    let (mut client, _) = Client::connect(&sim).await?;
    client.send(json!({"type": "response.create"})).await?;
    let created = client.until("response.created").await?;
    let response_id = created[created.len() - 1]["response"]["id"]
        .as_str()
        .context("response without an id")?
        .to_owned();
    client
        .send(json!({"type": "response.create", "event_id": "evt_again"}))
        .await?;
    let error = client.until("error").await?;
    let error = &error[error.len() - 1]["error"];
    assert_eq!(error["code"], "conversation_already_has_active_response");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.starts_with(&format!(
                "Conversation already has an active response in progress: {response_id}"
            ))),
        "{error}"
    );
    assert_eq!(error["event_id"], "evt_again");

    client.send(json!({"type": "response.cancel"})).await?;
    let events = client.until("response.done").await?;
    let done = &events[events.len() - 1]["response"];
    assert_eq!(done["id"], response_id.as_str());
    assert_eq!(done["status"], "cancelled");
    assert_eq!(done["status_details"]["reason"], "client_cancelled");
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn scripted_transcripts_follow_committed_turns_and_run_out() -> Result {
    let sim = start(SimUpstreamConfig {
        transcripts: vec!["I need to move my appointment.".into()],
        ..config(500, false)
    })
    .await?;
    let (mut client, _) = Client::connect(&sim).await?;
    update_turn_detection(
        &mut client,
        json!({"type": "server_vad", "create_response": false}),
    )
    .await?;
    let mut turn = loud(400);
    turn.extend(silence(600));

    client.append(&turn).await?;
    let first = client
        .until("conversation.item.input_audio_transcription.completed")
        .await?;
    let committed = &first[position(&first, "input_audio_buffer.committed")?];
    let transcription = &first[first.len() - 1];
    assert_eq!(transcription["item_id"], committed["item_id"]);
    assert_eq!(
        transcription["transcript"],
        "I need to move my appointment."
    );

    client.append(&turn).await?;
    client.send(json!({"type": "response.cancel"})).await?; // a marker: its error ends the wait
    let second = client.until("error").await?;
    let committed = of_type(&second, "input_audio_buffer.committed");
    assert_eq!(committed.len(), 1);
    assert_eq!(committed[0]["previous_item_id"], first[0]["item_id"]);
    assert!(
        of_type(
            &second,
            "conversation.item.input_audio_transcription.completed"
        )
        .is_empty()
    );
    assert!(
        of_type(&second, "response.created").is_empty(),
        "create_response is off"
    );
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn unknown_and_malformed_events_get_errors_and_the_session_goes_on() -> Result {
    let sim = start(config(500, false)).await?;
    let (mut client, _) = Client::connect(&sim).await?;
    client.send_raw("{not json").await?;
    assert_eq!(client.next().await?["error"]["code"], "invalid_json");

    client
        .send(json!({"type": "response.audio.delta", "event_id": "e2"}))
        .await?;
    let error = client.next().await?;
    assert_eq!(error["error"]["code"], "unknown_event");
    assert_eq!(error["error"]["event_id"], "e2");

    client.ws.send(Message::binary(vec![1u8, 2, 3])).await?; // ignored

    client
        .send(json!({"type": "input_audio_buffer.append", "audio": "@@not base64@@"}))
        .await?;
    let error = client.next().await?;
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert_eq!(error["error"]["code"], "invalid_value");

    client
        .send(json!({"type": "input_audio_buffer.commit"}))
        .await?;
    assert_eq!(
        client.next().await?["error"]["code"],
        "input_audio_buffer_commit_empty"
    );

    // A beta-shaped field is refused and nothing of that update is applied.
    client
        .send(json!({"type": "session.update", "session": {"type": "realtime", "instructions": "A", "temperature": 0.8}}))
        .await?;
    let error = client.next().await?;
    assert_eq!(error["error"]["code"], "unknown_parameter");
    assert_eq!(error["error"]["param"], "session.temperature");
    client
        .send(json!({"type": "session.update", "session": {"type": "realtime"}}))
        .await?;
    let updated = client.next().await?;
    assert_eq!(updated["type"], "session.updated");
    assert_eq!(updated["session"]["instructions"], "");
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn conversation_items_can_be_created_and_deleted() -> Result {
    let sim = start(config(500, false)).await?;
    let (mut client, _) = Client::connect(&sim).await?;
    client
        .send(json!({
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "The caller is Ana."}]},
        }))
        .await?;
    let added = client.next().await?;
    assert_eq!(added["type"], "conversation.item.added");
    let item_id = added["item"]["id"]
        .as_str()
        .context("item without id")?
        .to_owned();
    assert_eq!(added["item"]["content"][0]["text"], "The caller is Ana.");
    assert_eq!(client.next().await?["type"], "conversation.item.done");

    client
        .send(json!({"type": "conversation.item.delete", "item_id": item_id}))
        .await?;
    let deleted = client.next().await?;
    assert_eq!(deleted["type"], "conversation.item.deleted");
    assert_eq!(deleted["item_id"], item_id.as_str());
    client
        .send(json!({"type": "conversation.item.delete", "item_id": item_id}))
        .await?;
    assert_eq!(client.next().await?["error"]["code"], "item_not_found");
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn shutdown_closes_live_connections() -> Result {
    let sim = start(config(500, true)).await?;
    let (mut client, _) = Client::connect(&sim).await?;
    let url = sim.url();
    sim.shutdown().await;
    let frame = tokio::time::timeout(EVENT_TIMEOUT, client.ws.next()).await?;
    match frame {
        Some(Ok(Message::Close(Some(close)))) => assert_eq!(close.code, CloseCode::Away),
        None | Some(Err(_)) => {}
        Some(other) => bail!("expected a close, got {other:?}"),
    }
    assert!(tokio_tungstenite::connect_async(url).await.is_err());
    Ok(())
}

#[tokio::test]
async fn the_retired_beta_header_is_refused_with_close_code_4000() -> Result {
    let sim = start(config(500, false)).await?;
    let mut request = sim.url().into_client_request()?;
    request
        .headers_mut()
        .insert("OpenAI-Beta", HeaderValue::from_static("realtime=v1"));
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
    let mut error = None;
    let mut close = None;
    while let Some(frame) = tokio::time::timeout(EVENT_TIMEOUT, ws.next()).await? {
        match frame? {
            Message::Text(text) => error = Some(serde_json::from_str::<Value>(text.as_str())?),
            Message::Close(frame) => close = frame,
            _ => {}
        }
    }
    let error = error.context("no error event")?;
    assert_eq!(error["error"]["code"], "beta_api_shape_disabled");
    assert_eq!(close.map(|c| u16::from(c.code)), Some(4000));
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn connect_delay_holds_back_the_handshake() -> Result {
    let sim = start(SimUpstreamConfig {
        connect_delay_ms: 200,
        ..config(500, false)
    })
    .await?;
    let started = Instant::now();
    let (_client, _) = Client::connect(&sim).await?;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(190),
        "connected after {took:?}"
    );
    assert_eq!(sim.connections(), 1);
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn echo_mode_returns_each_appended_frame_once_the_first_response_is_done() -> Result {
    let sim = start(SimUpstreamConfig {
        echo: true,
        keep_logs: false,
        ..config(200, false)
    })
    .await?;
    let (mut client, _) = Client::connect(&sim).await?;
    // Before the greeting is done, caller audio is not echoed.
    client.append(&silence(40)).await?;
    client.send(json!({"type": "response.create"})).await?;
    let greeting = client.until("response.done").await?;
    assert!(
        of_type(&greeting, "response.output_audio.delta")
            .iter()
            .all(|d| d["response_id"] != "resp_echo"),
        "nothing echoed during the greeting"
    );
    // Then every frame comes back at once, text for text, as one assistant item's audio.
    let frames: Vec<String> = (0..5u8)
        .map(|n| {
            let mut frame = silence(20);
            frame[0] = 0x7F;
            frame[1] = n;
            BASE64.encode(frame)
        })
        .collect();
    for frame in &frames {
        client
            .send(json!({"type": "input_audio_buffer.append", "audio": frame}))
            .await?;
    }
    let events = client.for_a_while(Duration::from_millis(300)).await?;
    let echoed: Vec<&Value> = of_type(&events, "response.output_audio.delta");
    assert_eq!(echoed.len(), 5, "{events:?}");
    for (delta, frame) in echoed.iter().zip(&frames) {
        assert_eq!(delta["delta"], frame.as_str());
        assert_eq!(delta["response_id"], "resp_echo");
        assert_eq!(delta["item_id"], echoed[0]["item_id"]);
    }
    // The echoed audio can be truncated like any model audio.
    let item_id = echoed[0]["item_id"].as_str().context("item id")?.to_owned();
    client
        .send(json!({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": 60}))
        .await?;
    assert_eq!(client.next().await?["type"], "conversation.item.truncated");
    // With logs off, the per-event log stays empty.
    assert!(sim.sessions()[0].events.is_empty());
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn the_beta_dialect_speaks_the_beta_audio_event_names_and_accepts_the_beta_header() -> Result
{
    let sim = start(SimUpstreamConfig {
        dialect: voxrelay_sim::upstream::Dialect::Beta,
        ..config(200, false)
    })
    .await?;
    let mut request = format!("{}?model=gpt-realtime", sim.url()).into_client_request()?;
    request
        .headers_mut()
        .insert("OpenAI-Beta", HeaderValue::from_static("realtime=v1"));
    let (ws, _) = tokio_tungstenite::connect_async(request).await?;
    let mut client = Client { ws };
    assert_eq!(client.next().await?["type"], "session.created");
    client.send(json!({"type": "response.create"})).await?;
    let events = client.until("response.done").await?;
    assert!(
        !of_type(&events, "response.audio.delta").is_empty(),
        "{events:?}"
    );
    assert!(!of_type(&events, "response.audio_transcript.done").is_empty());
    assert!(of_type(&events, "response.output_audio.delta").is_empty());
    sim.shutdown().await;
    Ok(())
}
