//! One client connection: the task that owns its session, conversation items, VAD, and the
//! response being spoken; every client event (§2) is handled here and answered with the
//! server events (§3) the live API sends.

use super::*;

/// The socket and the server event counter, kept apart from the session state so both can be
/// borrowed at once.
pub(super) struct Outbox {
    ws: WebSocketStream<TcpStream>,
    /// Connection number, part of every `event_id`.
    connection: usize,
    next_event: u64,
    /// Rename GA event types to their beta names before sending.
    beta: bool,
    /// From then on no event is sent ([`Fault::Mute`]).
    muted_from: Option<Instant>,
}

impl Outbox {
    /// Sends one server event, adding a unique `event_id`.
    async fn send(&mut self, mut event: Value) -> Result<(), WsError> {
        if self.muted_from.is_some_and(|from| Instant::now() >= from) {
            return Ok(());
        }
        self.next_event += 1;
        if let Value::Object(fields) = &mut event {
            if self.beta
                && let Some(Value::String(kind)) = fields.get_mut("type")
                && let Some((_, beta)) = BETA_NAMES.iter().find(|(ga, _)| ga == kind)
            {
                *kind = (*beta).to_string();
            }
            fields.insert(
                "event_id".into(),
                Value::String(format!(
                    "event_sim{:03}{:07}",
                    self.connection, self.next_event
                )),
            );
        }
        self.ws.send(Message::text(event.to_string())).await
    }

    /// Sends an `error` event of type `invalid_request_error`.
    async fn error(
        &mut self,
        client_event_id: Option<&str>,
        code: &str,
        message: impl Into<String>,
        param: Option<&str>,
    ) -> Result<(), WsError> {
        self.send(json!({
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "code": code,
                "message": message.into(),
                "param": param,
                "event_id": client_event_id,
            }
        }))
        .await
    }
}

/// Who an item belongs to, for truncation and usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    User,
    Assistant,
    Other,
}

/// An item in the simulated conversation.
#[derive(Debug, Clone)]
pub(super) struct ItemRecord {
    role: Role,
    /// Assistant audio sent for this item so far, in bytes of mu-law.
    audio_bytes: usize,
    /// The item as last announced (no audio bytes).
    item: Value,
}

/// The response being spoken.
#[derive(Debug)]
pub(super) struct ActiveResponse {
    id: String,
    item_id: String,
    /// When the next step (the next delta, or the end) is due.
    next_at: Instant,
    /// When the first delta was (or will be) sent; real-time pacing counts from here.
    first_audio_at: Instant,
    /// Deltas sent.
    chunks_sent: u64,
    /// Bytes of the clip sent.
    sent_bytes: usize,
    /// Transcript pieces (words with their trailing space) already sent.
    words_sent: usize,
    /// Instructions in effect for this response (the session's, or the override).
    instructions: String,
    /// What this response says (the clip's transcript, or a scripted reply).
    transcript: String,
    metadata: Value,
    /// False for out-of-band responses (`conversation: "none"`), whose item is not added to the
    /// conversation.
    in_conversation: bool,
    /// The function call it ends with, if scripted.
    tool_call: Option<ScriptedToolCall>,
}

/// Turn-detection settings in effect, read from the session object.
#[derive(Debug, Clone, Copy)]
pub(super) struct TurnSettings {
    enabled: bool,
    silence_ms: u32,
    prefix_padding_ms: u32,
    create_response: bool,
    interrupt_response: bool,
}

/// Running totals behind the `usage` of each `response.done`.
#[derive(Debug, Default)]
pub(super) struct UsageHistory {
    /// Committed caller audio, in ms (1 input token per 100 ms).
    caller_audio_ms: u64,
    /// Text tokens of earlier items (created text items, earlier assistant transcripts).
    text_tokens: u64,
    /// Audio tokens of earlier assistant output (1 per 50 ms).
    assistant_audio_tokens: u64,
    /// Instructions and input tokens of the previous response, for `cached_tokens`.
    previous: Option<(String, u64)>,
}

/// The fields of an `input_audio_buffer.append` the simulator reads, borrowed.
#[derive(serde::Deserialize)]
pub(super) struct AppendEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(borrow, default)]
    audio: Option<&'a str>,
    #[serde(borrow, default)]
    event_id: Option<&'a str>,
}

pub(super) struct Connection {
    out: Outbox,
    shared: Arc<Shared>,
    /// Index of this connection's [`SessionLog`].
    index: usize,
    event_log: Option<File>,
    /// The effective GA session object, as sent in `session.updated`.
    session: Value,
    vad: EnergyVad,
    /// Caller audio in the input buffer since the last commit or clear, in bytes.
    buffer_bytes: u64,
    /// The item id announced by `speech_started`, used by the commit that ends the turn.
    speech_item_id: Option<String>,
    /// `audio_start_ms` of the turn in progress.
    speech_start_ms: u64,
    items: HashMap<String, ItemRecord>,
    /// Item ids in conversation order (for `previous_item_id`).
    order: Vec<String>,
    next_item: u64,
    next_response: u64,
    /// Caller turns committed (indexes the scripted transcripts).
    committed_turns: usize,
    /// Responses started on this connection (indexes the scripted replies).
    responses_started: usize,
    /// `response.create`s refused so far ([`SimUpstreamConfig::refused_responses`]).
    responses_refused: usize,
    /// `call_id`s of the function calls made on this connection (an output must name one).
    calls: std::collections::HashSet<String>,
    /// The business this connection's instructions have been, for the isolation check.
    isolation_seen: Option<usize>,
    /// The caller's last scripted transcript (for `{caller}` in replies).
    last_caller_transcript: String,
    /// Scripted transcription events waiting for their delay: (due, event).
    pending_transcriptions: std::collections::VecDeque<(Instant, Value)>,
    usage: UsageHistory,
    response: Option<ActiveResponse>,
    /// Echo mode: the first response is done, caller audio is now echoed.
    echoing: bool,
    /// Echo mode: the assistant item the echoed audio belongs to.
    echo_item: Option<String>,
}

impl Connection {
    /// This connection's scripted transcripts and replies: its entry of
    /// [`SimUpstreamConfig::later_scripts`], else the first connection's.
    fn script(&self) -> (&[String], &[String]) {
        let config = self.config();
        match self
            .index
            .checked_sub(1)
            .and_then(|n| config.later_scripts.get(n))
        {
            Some(script) => (&script.transcripts, &script.replies),
            None => (&config.transcripts, &config.replies),
        }
    }

    pub(super) fn new(
        ws: WebSocketStream<TcpStream>,
        shared: Arc<Shared>,
        index: usize,
        number: usize,
        model: Option<String>,
    ) -> Connection {
        let event_log = shared.config.event_log.as_ref().and_then(|path| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| {
                    tracing::warn!(path = %path.display(), error = %e, "cannot open the event log");
                })
                .ok()
        });
        let vad_config = shared.config.vad;
        let session = initial_session(
            number,
            model.as_deref(),
            &vad_config,
            shared.config.session_lifetime_ms,
        );
        Connection {
            out: Outbox {
                ws,
                connection: number,
                next_event: 0,
                beta: shared.config.dialect == Dialect::Beta,
                muted_from: None,
            },
            shared,
            index,
            event_log,
            session,
            vad: EnergyVad::new(vad_config),
            buffer_bytes: 0,
            speech_item_id: None,
            speech_start_ms: 0,
            items: HashMap::new(),
            order: Vec::new(),
            next_item: 0,
            next_response: 0,
            committed_turns: 0,
            responses_started: 0,
            responses_refused: 0,
            calls: Default::default(),
            isolation_seen: None,
            last_caller_transcript: String::new(),
            pending_transcriptions: std::collections::VecDeque::new(),
            usage: UsageHistory::default(),
            response: None,
            echoing: false,
            echo_item: None,
        }
    }

    fn config(&self) -> &SimUpstreamConfig {
        &self.shared.config
    }

    /// Runs the connection until the client closes it, the socket fails, or shutdown.
    pub(super) async fn run(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), WsError> {
        let faulty = self
            .config()
            .faulty_connections
            .is_none_or(|n| self.out.connection <= n);
        let mut fault = self.config().fault.filter(|_| faulty).map(|f| match f {
            Fault::Close(ms)
            | Fault::Reset(ms)
            | Fault::StopReading(ms)
            | Fault::Expire(ms)
            | Fault::Mute(ms) => (f, Instant::now() + Duration::from_millis(ms)),
        });
        // A mute is no event of its own: the outbox drops what comes after it.
        if let Some((Fault::Mute(_), at)) = fault {
            self.out.muted_from = Some(at);
            fault = None;
        }
        let session = self.session.clone();
        self.out
            .send(json!({"type": "session.created", "session": session}))
            .await?;
        // The session's own limit comes first when it is sooner than the fault.
        let fault = match (fault, self.config().session_lifetime_ms) {
            (Some((f, at)), Some(ms)) if at <= Instant::now() + Duration::from_millis(ms) => {
                Some((f, at))
            }
            (_, Some(ms)) => Some((
                Fault::Expire(ms),
                Instant::now() + Duration::from_millis(ms),
            )),
            (fault, None) => fault,
        };
        loop {
            let due = self.response.as_ref().map(|r| r.next_at);
            let transcription_due = self.pending_transcriptions.front().map(|(at, _)| *at);
            tokio::select! {
                _ = tokio::time::sleep_until(fault.map_or_else(Instant::now, |(_, at)| at)), if fault.is_some() => {
                    match fault.map(|(f, _)| f) {
                        Some(Fault::Close(_)) => {
                            let frame = CloseFrame {
                                code: CloseCode::Error,
                                reason: "simulated upstream fault".into(),
                            };
                            let _ = self.out.ws.send(Message::Close(Some(frame))).await;
                            return Ok(());
                        }
                        // Dropping the socket ends the TCP connection without a close frame.
                        Some(Fault::Reset(_)) => return Ok(()),
                        Some(Fault::Expire(_)) => {
                            self.out
                                .error(
                                    None,
                                    "session_expired",
                                    "Your session hit the maximum duration of 60 minutes.",
                                    None,
                                )
                                .await?;
                            let frame = CloseFrame {
                                code: CloseCode::Away,
                                reason: "Your session hit the maximum duration of 60 minutes."
                                    .into(),
                            };
                            let _ = self.out.ws.send(Message::Close(Some(frame))).await;
                            return Ok(());
                        }
                        _ => {
                            stopped(shutdown).await;
                            return Ok(());
                        }
                    }
                }
                _ = tokio::time::sleep_until(transcription_due.unwrap_or_else(Instant::now)), if transcription_due.is_some() => {
                    if let Some((_, event)) = self.pending_transcriptions.pop_front() {
                        self.out.send(event).await?;
                    }
                }
                _ = stopped(shutdown) => {
                    let frame = CloseFrame {
                        code: CloseCode::Away,
                        reason: "simulated upstream shutting down".into(),
                    };
                    let _ = self.out.ws.send(Message::Close(Some(frame))).await;
                    return Ok(());
                }
                frame = self.out.ws.next() => match frame {
                    None => return Ok(()),
                    Some(Err(e)) => return Err(e),
                    Some(Ok(Message::Text(text))) => self.on_text(text.as_str()).await?,
                    // Binary frames are not part of the protocol; pings are answered by the
                    // library; a close is answered on the next read, which then ends the stream.
                    Some(Ok(_)) => {}
                },
                _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    self.advance_response().await?;
                }
            }
        }
    }

    /// Answers a client that sent the retired `OpenAI-Beta` header as the live service does.
    pub(super) async fn refuse_beta(&mut self) -> Result<(), WsError> {
        self.out
            .error(
                None,
                "beta_api_shape_disabled",
                "The beta Realtime API shape is no longer available. Remove the \
                 'OpenAI-Beta: realtime=v1' header and use the GA interface.",
                None,
            )
            .await?;
        let frame = CloseFrame {
            code: CloseCode::from(4000),
            reason: "beta_api_shape_disabled".into(),
        };
        self.out.ws.send(Message::Close(Some(frame))).await?;
        // Let the close handshake finish, briefly.
        let drain = async { while let Some(Ok(_)) = self.out.ws.next().await {} };
        let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
        Ok(())
    }

    fn log(&self) -> MutexGuard<'_, Vec<SessionLog>> {
        self.shared.sessions()
    }

    fn write_event_log(&mut self, text: &str) {
        let Some(file) = self.event_log.as_mut() else {
            return;
        };
        // One line per event: a frame sent pretty-printed is written compact.
        let mut line = if text.contains('\n') {
            serde_json::from_str::<Value>(text)
                .map(|v| v.to_string())
                .unwrap_or_else(|_| text.replace('\n', " "))
        } else {
            text.to_owned()
        };
        line.push('\n');
        // A single write per line, so concurrent connections never interleave within a line.
        if let Err(e) = file.write_all(line.as_bytes()) {
            tracing::warn!(error = %e, "cannot write the event log; no longer logging");
            self.event_log = None;
        }
    }

    async fn on_text(&mut self, text: &str) -> Result<(), WsError> {
        self.write_event_log(text);
        // Caller audio is most of the traffic: read it without building a JSON tree.
        if text.contains(r#""type":"input_audio_buffer.append""#)
            && let Ok(append) = serde_json::from_str::<AppendEvent<'_>>(text)
            && append.kind == "input_audio_buffer.append"
        {
            return self.on_append(append.audio, append.event_id).await;
        }
        let event: Value = match serde_json::from_str(text) {
            Ok(event) => event,
            Err(e) => {
                if self.config().keep_logs {
                    self.log()[self.index].events.push(text.to_owned());
                }
                return self
                    .out
                    .error(
                        None,
                        "invalid_json",
                        format!("The event is not valid JSON: {e}"),
                        None,
                    )
                    .await;
            }
        };
        let event_type = event.get("type").and_then(Value::as_str).unwrap_or("");
        if event_type != "input_audio_buffer.append" && self.config().keep_logs {
            self.log()[self.index].events.push(text.to_owned());
        }
        let client_id = event
            .get("event_id")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let id = client_id.as_deref();
        match event_type {
            "session.update" => self.on_session_update(&event, id).await,
            "input_audio_buffer.append" => {
                self.on_append(event.get("audio").and_then(Value::as_str), id)
                    .await
            }
            "input_audio_buffer.commit" => self.on_commit(id).await,
            "input_audio_buffer.clear" => self.on_clear().await,
            "response.create" => self.on_response_create(&event, id).await,
            "response.cancel" => self.on_response_cancel(id).await,
            "conversation.item.create" => self.on_item_create(&event, id).await,
            "conversation.item.delete" => self.on_item_delete(&event, id).await,
            "conversation.item.retrieve" => self.on_item_retrieve(&event, id).await,
            "conversation.item.truncate" => self.on_truncate(&event, id).await,
            "" if !event.is_object() => {
                self.out
                    .error(id, "invalid_json", "An event must be a JSON object.", None)
                    .await
            }
            "" => self.missing(id, "type").await,
            other => {
                let supported = CLIENT_EVENT_TYPES
                    .iter()
                    .map(|t| format!("'{t}'"))
                    .collect::<Vec<_>>()
                    .join(", ");
                self.out
                    .error(
                        id,
                        "unknown_event",
                        format!("Invalid value: '{other}'. Supported values are: {supported}."),
                        Some("type"),
                    )
                    .await
            }
        }
    }

    // --- session -------------------------------------------------------------------------------

    async fn on_session_update(&mut self, event: &Value, id: Option<&str>) -> Result<(), WsError> {
        let Some(patch) = event.get("session").filter(|s| s.is_object()) else {
            return self.missing(id, "session").await;
        };
        if let Err(problem) = check_session_patch(patch, &self.session) {
            return self
                .out
                .error(id, problem.code, problem.message, Some(&problem.param))
                .await;
        }
        if let (Some(patterns), Some(instructions)) = (
            &self.shared.isolation_patterns,
            patch.get("instructions").and_then(Value::as_str),
        ) {
            let verdict = crate::isolation::check(patterns, instructions);
            self.isolation_seen = self.shared.isolation.record(self.isolation_seen, verdict);
        }
        merge(&mut self.session, patch);
        normalise_turn_detection(&mut self.session, &self.shared.config.vad);
        let turn = self.turn_settings();
        self.vad
            .set_turn_settings(turn.silence_ms, turn.prefix_padding_ms);
        if !turn.enabled {
            self.vad.reset();
            self.speech_item_id = None;
        }
        let session = self.session.clone();
        self.out
            .send(json!({"type": "session.updated", "session": session}))
            .await
    }

    fn turn_settings(&self) -> TurnSettings {
        let defaults = self.shared.config.vad;
        let td = &self.session["audio"]["input"]["turn_detection"];
        let number = |key: &str, default: u32| {
            td.get(key)
                .and_then(Value::as_u64)
                .map_or(default, |v| v.min(u64::from(u32::MAX)) as u32)
        };
        let flag = |key: &str| td.get(key).and_then(Value::as_bool).unwrap_or(true);
        TurnSettings {
            enabled: td.is_object(),
            silence_ms: number("silence_duration_ms", defaults.silence_ms),
            prefix_padding_ms: number("prefix_padding_ms", defaults.prefix_padding_ms),
            create_response: flag("create_response"),
            interrupt_response: flag("interrupt_response"),
        }
    }

    // --- input audio ---------------------------------------------------------------------------

    async fn on_append(
        &mut self,
        audio_text: Option<&str>,
        id: Option<&str>,
    ) -> Result<(), WsError> {
        let decoded = audio_text.map(|audio| BASE64.decode(audio));
        if self.config().keep_logs {
            let mut log = self.log();
            let entry = &mut log[self.index];
            entry.append_events += 1;
            if let Some(Ok(audio)) = &decoded {
                entry.appended_bytes += audio.len() as u64;
            }
        }
        let audio = match decoded {
            Some(Ok(audio)) => audio,
            Some(Err(e)) => {
                return self
                    .out
                    .error(
                        id,
                        "invalid_value",
                        format!("Invalid 'audio'. Expected base64-encoded audio bytes: {e}"),
                        Some("audio"),
                    )
                    .await;
            }
            None => {
                return self.missing(id, "audio").await;
            }
        };
        self.buffer_bytes += audio.len() as u64;
        if self.echoing
            && let Some(text) = audio_text
        {
            self.echo(text, audio.len()).await?;
        }
        let events = self.vad.push(&audio);
        let turn = self.turn_settings();
        if !turn.enabled {
            // Manual turns: the audio still counts towards the session's position, but no speech
            // is tracked, so turning VAD back on starts from quiet.
            self.vad.reset();
            return Ok(());
        }
        for vad_event in events {
            match vad_event {
                VadEvent::SpeechStarted { audio_start_ms } => {
                    self.on_speech_started(audio_start_ms, turn).await?;
                }
                VadEvent::SpeechStopped { audio_end_ms } => {
                    self.on_speech_stopped(audio_end_ms, turn).await?;
                }
            }
        }
        Ok(())
    }

    /// Echo mode: sends the appended audio (its base64 text, unchanged) back at once as model
    /// audio.
    async fn echo(&mut self, audio: &str, bytes: usize) -> Result<(), WsError> {
        let item_id = match &self.echo_item {
            Some(id) => id.clone(),
            None => {
                let id = self.new_item_id();
                let item = json!({"id": id, "object": "realtime.item", "type": "message",
                    "status": "in_progress", "role": "assistant", "content": []});
                self.add_item(id.clone(), Role::Assistant, item);
                self.echo_item = Some(id.clone());
                id
            }
        };
        if let Some(record) = self.items.get_mut(&item_id) {
            record.audio_bytes += bytes;
        }
        // Written directly rather than through a JSON value: this runs once per caller frame.
        // The ids and the base64 alphabet need no escaping.
        let kind = if self.out.beta {
            "response.audio.delta"
        } else {
            "response.output_audio.delta"
        };
        self.out.next_event += 1;
        let text = format!(
            r#"{{"type":"{kind}","event_id":"event_sim{:03}{:07}","response_id":"resp_echo","item_id":"{item_id}","output_index":0,"content_index":0,"delta":"{audio}"}}"#,
            self.out.connection, self.out.next_event
        );
        self.out.ws.send(Message::text(text)).await
    }

    async fn on_speech_started(
        &mut self,
        audio_start_ms: u64,
        turn: TurnSettings,
    ) -> Result<(), WsError> {
        let item_id = self.new_item_id();
        self.speech_item_id = Some(item_id.clone());
        self.speech_start_ms = audio_start_ms;
        self.out
            .send(json!({
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": audio_start_ms,
                "item_id": item_id,
            }))
            .await?;
        if self.response.is_some() && turn.interrupt_response {
            self.finish_response(Finish::Cancelled("turn_detected"))
                .await?;
        }
        Ok(())
    }

    async fn on_speech_stopped(
        &mut self,
        audio_end_ms: u64,
        turn: TurnSettings,
    ) -> Result<(), WsError> {
        let item_id = match self.speech_item_id.take() {
            Some(id) => id,
            None => self.new_item_id(),
        };
        self.out
            .send(json!({
                "type": "input_audio_buffer.speech_stopped",
                "audio_end_ms": audio_end_ms,
                "item_id": item_id,
            }))
            .await?;
        let turn_ms = audio_end_ms.saturating_sub(self.speech_start_ms);
        let transcription = self.commit(item_id, turn_ms).await?;
        // With interrupt_response off, a response may still be speaking; the live service then
        // does not start another one either.
        if turn.create_response && self.response.is_none() {
            self.start_response(None).await?;
        }
        // Transcription is asynchronous on the live service and usually lands after the
        // response it triggered has started.
        self.send_transcription(transcription).await
    }

    async fn on_commit(&mut self, id: Option<&str>) -> Result<(), WsError> {
        let buffered_ms = self.buffer_bytes as f64 / BYTES_PER_MS as f64;
        if buffered_ms < MIN_COMMIT_MS as f64 {
            return self
                .out
                .error(
                    id,
                    "input_audio_buffer_commit_empty",
                    format!(
                        "Error committing input audio buffer: buffer too small. Expected at \
                         least {MIN_COMMIT_MS}ms of audio, but buffer only has \
                         {buffered_ms:.2}ms of audio."
                    ),
                    None,
                )
                .await;
        }
        let item_id = match self.speech_item_id.take() {
            Some(id) => id,
            None => self.new_item_id(),
        };
        self.vad.reset();
        let transcription = self.commit(item_id, buffered_ms as u64).await?;
        self.send_transcription(transcription).await
    }

    async fn on_clear(&mut self) -> Result<(), WsError> {
        self.buffer_bytes = 0;
        self.speech_item_id = None;
        self.vad.reset();
        self.out
            .send(json!({"type": "input_audio_buffer.cleared"}))
            .await
    }

    /// Sends a scripted transcription returned by [`Connection::commit`], if any.
    async fn send_transcription(&mut self, transcription: Option<Value>) -> Result<(), WsError> {
        let Some(event) = transcription else {
            return Ok(());
        };
        let delay = self.config().transcription_delay_ms;
        if delay == 0 {
            return self.out.send(event).await;
        }
        self.pending_transcriptions
            .push_back((Instant::now() + Duration::from_millis(delay), event));
        Ok(())
    }

    /// Turns the input buffer into a user item: `committed`, `conversation.item.added` and
    /// `.done`. Returns the scripted transcription event for the caller to send when due.
    async fn commit(&mut self, item_id: String, audio_ms: u64) -> Result<Option<Value>, WsError> {
        self.buffer_bytes = 0;
        self.usage.caller_audio_ms += audio_ms;
        let previous = self.order.last().cloned();
        self.out
            .send(json!({
                "type": "input_audio_buffer.committed",
                "item_id": item_id,
                "previous_item_id": previous,
            }))
            .await?;
        let item = json!({
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": null}],
        });
        self.add_item(item_id.clone(), Role::User, item.clone());
        self.out
            .send(json!({"type": "conversation.item.added", "previous_item_id": previous, "item": item}))
            .await?;
        self.out
            .send(json!({"type": "conversation.item.done", "previous_item_id": previous, "item": item}))
            .await?;
        let turn = self.committed_turns;
        self.committed_turns += 1;
        if let Some(transcript) = self.script().0.get(turn).cloned() {
            if let Some(part) = self
                .items
                .get_mut(&item_id)
                .and_then(|record| record.item.pointer_mut("/content/0"))
                .and_then(Value::as_object_mut)
            {
                part.insert("transcript".into(), Value::String(transcript.clone()));
            }
            self.last_caller_transcript = transcript.clone();
            return Ok(Some(json!({
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item_id,
                "content_index": 0,
                "transcript": transcript,
                "usage": {"type": "duration", "seconds": audio_ms as f64 / 1000.0},
            })));
        }
        Ok(None)
    }

    // --- conversation items ------------------------------------------------------------------

    fn new_item_id(&mut self) -> String {
        self.next_item += 1;
        format!("item_{}", self.next_item)
    }

    fn add_item(&mut self, id: String, role: Role, item: Value) {
        self.order.push(id.clone());
        self.items.insert(
            id,
            ItemRecord {
                role,
                audio_bytes: 0,
                item,
            },
        );
    }

    async fn on_item_create(&mut self, event: &Value, id: Option<&str>) -> Result<(), WsError> {
        let Some(Value::Object(fields)) = event.get("item") else {
            return self.missing(id, "item").await;
        };
        let previous = match event.get("previous_item_id").and_then(Value::as_str) {
            Some("root") => None,
            Some(previous) if !self.items.contains_key(previous) => {
                return self
                    .out
                    .error(
                        id,
                        "item_not_found",
                        format!("Item with item_id '{previous}' not found."),
                        Some("previous_item_id"),
                    )
                    .await;
            }
            Some(previous) => Some(previous.to_owned()),
            None => self.order.last().cloned(),
        };
        let item_id = match fields.get("id").and_then(Value::as_str) {
            Some(given) if self.items.contains_key(given) => {
                return self
                    .out
                    .error(
                        id,
                        "invalid_value",
                        format!("Item with id '{given}' already exists."),
                        Some("item.id"),
                    )
                    .await;
            }
            Some(given) => given.to_owned(),
            None => self.new_item_id(),
        };
        if fields.get("type").and_then(Value::as_str) == Some("function_call_output") {
            let call_id = fields.get("call_id").and_then(Value::as_str).unwrap_or("");
            if !self.calls.contains(call_id) {
                // The live service refuses an output for a call it did not make.
                return self
                    .out
                    .error(
                        id,
                        "invalid_value",
                        format!("Tool call with call_id '{call_id}' not found in conversation."),
                        Some("item.call_id"),
                    )
                    .await;
            }
        }
        let mut item = fields.clone();
        item.insert("id".into(), Value::String(item_id.clone()));
        item.insert("object".into(), Value::String("realtime.item".into()));
        item.entry("status")
            .or_insert_with(|| Value::String("completed".into()));
        let item = Value::Object(item);
        let role = match item.get("role").and_then(Value::as_str) {
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            _ => Role::Other,
        };
        self.usage.text_tokens += text_tokens(&item_text(&item));
        self.add_item(item_id, role, item.clone());
        self.out
            .send(json!({"type": "conversation.item.added", "previous_item_id": previous, "item": item}))
            .await?;
        self.out
            .send(json!({"type": "conversation.item.done", "previous_item_id": previous, "item": item}))
            .await
    }

    async fn on_item_delete(&mut self, event: &Value, id: Option<&str>) -> Result<(), WsError> {
        let Some(item_id) = event.get("item_id").and_then(Value::as_str) else {
            return self.missing(id, "item_id").await;
        };
        if self.items.remove(item_id).is_none() {
            return self.item_not_found(id, item_id).await;
        }
        self.order.retain(|i| i != item_id);
        self.out
            .send(json!({"type": "conversation.item.deleted", "item_id": item_id}))
            .await
    }

    async fn on_item_retrieve(&mut self, event: &Value, id: Option<&str>) -> Result<(), WsError> {
        let Some(item_id) = event.get("item_id").and_then(Value::as_str) else {
            return self.missing(id, "item_id").await;
        };
        match self.items.get(item_id).map(|r| r.item.clone()) {
            Some(item) => {
                self.out
                    .send(json!({"type": "conversation.item.retrieved", "item": item}))
                    .await
            }
            None => self.item_not_found(id, item_id).await,
        }
    }

    async fn missing(&mut self, id: Option<&str>, param: &str) -> Result<(), WsError> {
        self.out
            .error(
                id,
                "missing_required_parameter",
                format!("Missing required parameter: '{param}'."),
                Some(param),
            )
            .await
    }

    async fn item_not_found(&mut self, id: Option<&str>, item_id: &str) -> Result<(), WsError> {
        self.out
            .error(
                id,
                "item_not_found",
                format!("Item with item_id '{item_id}' not found."),
                Some("item_id"),
            )
            .await
    }

    async fn on_truncate(&mut self, event: &Value, id: Option<&str>) -> Result<(), WsError> {
        let item_id = event.get("item_id").and_then(Value::as_str);
        let content_index = event.get("content_index").and_then(Value::as_u64);
        let audio_end_ms = event.get("audio_end_ms").and_then(Value::as_u64);
        let (Some(item_id), Some(content_index), Some(audio_end_ms)) =
            (item_id, content_index, audio_end_ms)
        else {
            let missing = if item_id.is_none() {
                "item_id"
            } else if content_index.is_none() {
                "content_index"
            } else {
                "audio_end_ms"
            };
            return self
                .out
                .error(
                    id,
                    "missing_required_parameter",
                    format!(
                        "Missing required parameter: '{missing}' (a non-negative integer for \
                         content_index and audio_end_ms)."
                    ),
                    Some(missing),
                )
                .await;
        };
        let Some(record) = self.items.get(item_id) else {
            return self.item_not_found(id, item_id).await;
        };
        if record.role != Role::Assistant || record.audio_bytes == 0 {
            return self
                .out
                .error(
                    id,
                    "unsupported_content_type",
                    "Only model output audio messages can be truncated",
                    Some("item_id"),
                )
                .await;
        }
        if content_index != 0 {
            return self
                .out
                .error(
                    id,
                    "invalid_value",
                    format!(
                        "Invalid 'content_index': {content_index}. The item has one content part."
                    ),
                    Some("content_index"),
                )
                .await;
        }
        let sent_ms = (record.audio_bytes / BYTES_PER_MS) as u64;
        if audio_end_ms > sent_ms {
            return self
                .out
                .error(
                    id,
                    "invalid_value",
                    format!(
                        "Audio content of {sent_ms}ms is already shorter than {audio_end_ms}ms"
                    ),
                    Some("audio_end_ms"),
                )
                .await;
        }
        // The live server drops the transcript of a truncated item (the content part may not
        // exist yet while the item is still being generated).
        if let Some(part) = self
            .items
            .get_mut(item_id)
            .and_then(|record| record.item.get_mut("content"))
            .and_then(|content| content.get_mut(0))
            .and_then(Value::as_object_mut)
        {
            part.insert("transcript".into(), Value::Null);
        }
        self.log()[self.index].truncations.push(Truncation {
            item_id: item_id.to_owned(),
            content_index,
            audio_end_ms,
        });
        self.out
            .send(json!({
                "type": "conversation.item.truncated",
                "item_id": item_id,
                "content_index": content_index,
                "audio_end_ms": audio_end_ms,
            }))
            .await
    }

    // --- responses -----------------------------------------------------------------------------

    async fn on_response_create(&mut self, event: &Value, id: Option<&str>) -> Result<(), WsError> {
        if let Some(active) = &self.response {
            let message = format!(
                "Conversation already has an active response in progress: {}. Wait until the \
                 response is finished before creating a new one.",
                active.id
            );
            return self
                .out
                .error(
                    id,
                    "conversation_already_has_active_response",
                    message,
                    None,
                )
                .await;
        }
        if self.responses_refused < self.config().refused_responses {
            self.responses_refused += 1;
            return self.refuse_response().await;
        }
        self.start_response(event.get("response")).await
    }

    /// A `response.create` refused for the rate limit, as the live service reports it: the
    /// response is created and fails at once (`status_details.error`), after a
    /// `rate_limits.updated` with the requests spent.
    async fn refuse_response(&mut self) -> Result<(), WsError> {
        self.next_response += 1;
        let id = format!("resp_{}", self.next_response);
        let base = json!({"object": "realtime.response", "id": id, "output": [], "usage": null});
        let mut created = base.clone();
        created["status"] = json!("in_progress");
        created["status_details"] = Value::Null;
        self.out
            .send(json!({"type": "response.created", "response": created}))
            .await?;
        self.out
            .send(json!({
                "type": "rate_limits.updated",
                "rate_limits": [
                    {"name": "requests", "limit": 5000, "remaining": 0, "reset_seconds": 0.2},
                    {"name": "tokens", "limit": 40000, "remaining": 36000, "reset_seconds": 6.0},
                ],
            }))
            .await?;
        let mut done = base;
        done["status"] = json!("failed");
        done["status_details"] = json!({
            "type": "failed",
            "error": {
                "type": "invalid_request_error",
                "code": "rate_limit_exceeded",
                "message": "Rate limit reached for requests. Please try again in 200ms.",
            },
        });
        self.out
            .send(json!({"type": "response.done", "response": done}))
            .await
    }

    async fn on_response_cancel(&mut self, id: Option<&str>) -> Result<(), WsError> {
        if self.response.is_none() {
            return self
                .out
                .error(
                    id,
                    "response_cancel_not_active",
                    "Cancellation failed: no active response found",
                    None,
                )
                .await;
        }
        self.finish_response(Finish::Cancelled("client_cancelled"))
            .await
    }

    /// `response.created` and the announcements of its item and content part; the audio follows
    /// from [`Connection::advance_response`].
    async fn start_response(&mut self, params: Option<&Value>) -> Result<(), WsError> {
        self.next_response += 1;
        let response_id = format!("resp_{}", self.next_response);
        let item_id = self.new_item_id();
        let params = params.filter(|p| p.is_object());
        let instructions = params
            .and_then(|p| p.get("instructions"))
            .and_then(Value::as_str)
            .or_else(|| self.session["instructions"].as_str())
            .unwrap_or("")
            .to_owned();
        let metadata = params
            .and_then(|p| p.get("metadata"))
            .cloned()
            .unwrap_or(Value::Null);
        let in_conversation = params
            .and_then(|p| p.get("conversation"))
            .and_then(Value::as_str)
            != Some("none");
        let transcript = match self.script().1.get(self.responses_started) {
            Some(reply) => reply
                .replace("{caller}", &self.last_caller_transcript)
                .replace("{instructions}", &instructions),
            None => self.config().clip.transcript.clone(),
        };
        let tool_call = self
            .config()
            .tool_calls
            .iter()
            .find(|c| {
                c.response == self.responses_started && c.connection.is_none_or(|n| n == self.index)
            })
            .cloned();
        self.responses_started += 1;
        let now = Instant::now();
        let first_audio_at = now + Duration::from_millis(self.config().first_audio_delay_ms);
        let active = ActiveResponse {
            id: response_id.clone(),
            item_id: item_id.clone(),
            next_at: first_audio_at,
            first_audio_at,
            chunks_sent: 0,
            sent_bytes: 0,
            words_sent: 0,
            instructions,
            transcript,
            metadata,
            in_conversation,
            tool_call,
        };
        let response =
            self.response_object(&active, "in_progress", Value::Null, vec![], Value::Null);
        self.out
            .send(json!({"type": "response.created", "response": response}))
            .await?;
        self.out
            .send(json!({
                "type": "rate_limits.updated",
                "rate_limits": [
                    {"name": "requests", "limit": 5000, "remaining": 4999, "reset_seconds": 0.012},
                    {"name": "tokens", "limit": 40000, "remaining": 36000, "reset_seconds": 6.0},
                ],
            }))
            .await?;
        let item = json!({
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        });
        self.out
            .send(json!({
                "type": "response.output_item.added",
                "response_id": response_id,
                "output_index": 0,
                "item": item,
            }))
            .await?;
        if in_conversation {
            let previous = self.order.last().cloned();
            self.add_item(item_id.clone(), Role::Assistant, item.clone());
            self.out
                .send(json!({"type": "conversation.item.added", "previous_item_id": previous, "item": item}))
                .await?;
        }
        self.out
            .send(json!({
                "type": "response.content_part.added",
                "response_id": response_id,
                "item_id": item_id,
                "output_index": 0,
                "content_index": 0,
                "part": {"type": "audio", "transcript": ""},
            }))
            .await?;
        self.response = Some(active);
        Ok(())
    }

    /// Sends the next audio delta (with the transcript due by then), or finishes the response
    /// when the clip is done.
    async fn advance_response(&mut self) -> Result<(), WsError> {
        let clip = self.shared.config.clip.clone();
        let chunk_ms = u64::from(self.shared.config.chunk_ms.max(1));
        let realtime = self.shared.config.realtime_pace;
        let chunk_bytes = chunk_ms as usize * BYTES_PER_MS;
        let total_chunks = clip.mulaw.len().div_ceil(chunk_bytes).max(1);
        let Some(active) = self.response.as_mut() else {
            return Ok(());
        };
        let full_transcript = active.transcript.clone();
        let words: Vec<&str> = full_transcript.split_inclusive(' ').collect();
        if active.sent_bytes < clip.mulaw.len() {
            let start = active.sent_bytes;
            let end = (start + chunk_bytes).min(clip.mulaw.len());
            active.sent_bytes = end;
            active.chunks_sent += 1;
            let words_due = (words.len() * active.chunks_sent as usize).div_ceil(total_chunks);
            let words_due = words_due.min(words.len());
            let text: String = words[active.words_sent..words_due].concat();
            active.words_sent = words_due;
            active.next_at = if realtime {
                active.first_audio_at + Duration::from_millis(chunk_ms * active.chunks_sent)
            } else {
                Instant::now()
            };
            let finished = end == clip.mulaw.len();
            let (response_id, item_id) = (active.id.clone(), active.item_id.clone());
            if let Some(record) = self.items.get_mut(&item_id) {
                record.audio_bytes = end;
            }
            self.out
                .send(json!({
                    "type": "response.output_audio.delta",
                    "response_id": response_id,
                    "item_id": item_id,
                    "output_index": 0,
                    "content_index": 0,
                    "delta": BASE64.encode(&clip.mulaw[start..end]),
                }))
                .await?;
            if !text.is_empty() {
                self.out
                    .send(json!({
                        "type": "response.output_audio_transcript.delta",
                        "response_id": response_id,
                        "item_id": item_id,
                        "output_index": 0,
                        "content_index": 0,
                        "delta": text,
                    }))
                    .await?;
            }
            if !finished {
                return Ok(());
            }
        }
        self.finish_response(Finish::Completed).await
    }

    /// Ends the active response: the `…done` events of its audio, transcript, part and item, then
    /// `response.done` with the status, and the usage.
    async fn finish_response(&mut self, finish: Finish) -> Result<(), WsError> {
        let Some(active) = self.response.take() else {
            return Ok(());
        };
        let words: Vec<&str> = active.transcript.split_inclusive(' ').collect();
        let (status, item_status, status_details) = match finish {
            Finish::Completed => ("completed", "completed", Value::Null),
            Finish::Cancelled(reason) => (
                "cancelled",
                "incomplete",
                json!({"type": "cancelled", "reason": reason}),
            ),
        };
        if matches!(finish, Finish::Completed) && active.words_sent < words.len() {
            // A clip with no audio: the whole transcript at once.
            self.out
                .send(json!({
                    "type": "response.output_audio_transcript.delta",
                    "response_id": active.id,
                    "item_id": active.item_id,
                    "output_index": 0,
                    "content_index": 0,
                    "delta": words[active.words_sent..].concat(),
                }))
                .await?;
        }
        let spoken_words = match finish {
            Finish::Completed => words.len(),
            Finish::Cancelled(_) => active.words_sent,
        };
        let transcript = words[..spoken_words].concat();
        let transcript = match finish {
            Finish::Completed => active.transcript.clone(),
            Finish::Cancelled(_) => transcript.trim_end().to_owned(),
        };
        let common = |kind: &str| {
            json!({
                "type": kind,
                "response_id": active.id,
                "item_id": active.item_id,
                "output_index": 0,
                "content_index": 0,
            })
        };
        self.out.send(common("response.output_audio.done")).await?;
        let mut event = common("response.output_audio_transcript.done");
        event["transcript"] = Value::String(transcript.clone());
        self.out.send(event).await?;
        let mut event = common("response.content_part.done");
        event["part"] = json!({"type": "audio", "transcript": transcript});
        self.out.send(event).await?;
        let item = json!({
            "id": active.item_id,
            "object": "realtime.item",
            "type": "message",
            "status": item_status,
            "role": "assistant",
            "content": [{"type": "output_audio", "transcript": transcript}],
        });
        self.out
            .send(json!({
                "type": "response.output_item.done",
                "response_id": active.id,
                "output_index": 0,
                "item": item,
            }))
            .await?;
        if active.in_conversation {
            let position = self.order.iter().position(|i| *i == active.item_id);
            let previous = position
                .and_then(|p| p.checked_sub(1))
                .and_then(|p| self.order.get(p).cloned());
            if let Some(record) = self.items.get_mut(&active.item_id) {
                record.item = item.clone();
            }
            self.out
                .send(json!({"type": "conversation.item.done", "previous_item_id": previous, "item": item}))
                .await?;
        }
        let mut output = vec![item];
        if let (Finish::Completed, Some(call)) = (finish, &active.tool_call) {
            output.push(self.call_function(&active, call).await?);
        }
        let usage = self.usage_for(&active, &transcript);
        let response = self.response_object(&active, status, status_details, output, usage);
        self.echoing = self.config().echo;
        self.out
            .send(json!({"type": "response.done", "response": response}))
            .await
    }

    /// The events of a function call at the end of `active` (output index 1): the item added,
    /// the arguments streamed and done, the item done, as the live service sends them.
    /// Returns the item, for `response.done`'s output.
    async fn call_function(
        &mut self,
        active: &ActiveResponse,
        call: &ScriptedToolCall,
    ) -> Result<Value, WsError> {
        let item_id = self.new_item_id();
        let call_id = format!(
            "call_sim{:03}{}",
            self.out.connection,
            item_id.trim_start_matches("item_")
        );
        self.calls.insert(call_id.clone());
        let item = |status: &str, arguments: &str| {
            json!({
                "id": item_id,
                "object": "realtime.item",
                "type": "function_call",
                "status": status,
                "name": call.name,
                "call_id": call_id,
                "arguments": arguments,
            })
        };
        self.out
            .send(
                json!({"type": "response.output_item.added", "response_id": active.id,
                "output_index": 1, "item": item("in_progress", "")}),
            )
            .await?;
        let previous = self.order.last().cloned();
        self.add_item(
            item_id.clone(),
            Role::Other,
            item("completed", &call.arguments),
        );
        self.out
            .send(
                json!({"type": "conversation.item.added", "previous_item_id": previous,
                "item": item("in_progress", "")}),
            )
            .await?;
        self.out
            .send(json!({"type": "response.function_call_arguments.delta", "response_id": active.id,
                "item_id": item_id, "output_index": 1, "call_id": call_id, "delta": call.arguments}))
            .await?;
        self.out
            .send(
                json!({"type": "response.function_call_arguments.done", "response_id": active.id,
                "item_id": item_id, "output_index": 1, "call_id": call_id, "name": call.name,
                "arguments": call.arguments}),
            )
            .await?;
        let done = item("completed", &call.arguments);
        self.out
            .send(
                json!({"type": "response.output_item.done", "response_id": active.id,
                "output_index": 1, "item": done}),
            )
            .await?;
        self.out
            .send(json!({"type": "conversation.item.done", "previous_item_id": previous, "item": done}))
            .await?;
        Ok(done)
    }

    /// Plausible token counts: input text ≈ instructions chars / 4 plus earlier text, input audio
    /// = caller ms / 100 plus earlier assistant audio, output audio = audio ms sent / 50, output
    /// text ≈ transcript chars / 4, cached = the previous response's input (in 64-token steps)
    /// when the instructions did not change.
    fn usage_for(&mut self, active: &ActiveResponse, transcript: &str) -> Value {
        let input_text = text_tokens(&active.instructions) + self.usage.text_tokens;
        let input_audio = self.usage.caller_audio_ms / 100 + self.usage.assistant_audio_tokens;
        let input = input_text + input_audio;
        let cached = match &self.usage.previous {
            Some((instructions, previous)) if *instructions == active.instructions => {
                (*previous).min(input) / 64 * 64
            }
            _ => 0,
        };
        let output_audio = (active.sent_bytes / BYTES_PER_MS) as u64 / 50;
        let output_text = text_tokens(transcript);
        let output = output_audio + output_text;
        if active.in_conversation {
            self.usage.text_tokens += output_text;
            self.usage.assistant_audio_tokens += output_audio;
        }
        self.usage.previous = Some((active.instructions.clone(), input));
        json!({
            "total_tokens": input + output,
            "input_tokens": input,
            "output_tokens": output,
            "input_token_details": {
                "text_tokens": input_text,
                "audio_tokens": input_audio,
                "image_tokens": 0,
                "cached_tokens": cached,
                "cached_tokens_details": {"text_tokens": cached.min(input_text), "audio_tokens": cached.saturating_sub(input_text), "image_tokens": 0},
            },
            "output_token_details": {"text_tokens": output_text, "audio_tokens": output_audio},
        })
    }

    fn response_object(
        &self,
        active: &ActiveResponse,
        status: &str,
        status_details: Value,
        output: Vec<Value>,
        usage: Value,
    ) -> Value {
        let audio_output = &self.session["audio"]["output"];
        json!({
            "object": "realtime.response",
            "id": active.id,
            "status": status,
            "status_details": status_details,
            "output": output,
            "conversation_id": if active.in_conversation { Value::String(format!("conv_sim{:03}", self.out.connection)) } else { Value::Null },
            "output_modalities": ["audio"],
            "max_output_tokens": self.session["max_output_tokens"].clone(),
            "audio": {"output": {"format": audio_output["format"].clone(), "voice": audio_output["voice"].clone()}},
            "usage": usage,
            "metadata": active.metadata,
        })
    }
}

/// How a response ends.
#[derive(Debug, Clone, Copy)]
pub(super) enum Finish {
    Completed,
    /// Cancelled, with the `status_details.reason` (`turn_detected` or `client_cancelled`).
    Cancelled(&'static str),
}
