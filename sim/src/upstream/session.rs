//! The session object: its defaults as `session.created` reports them, and `session.update`
//! patches checked the way the live server checks them (unknown parameters, wrong types,
//! audio formats) before they are merged.

use super::*;

/// The GA session object of `session.created`: the service defaults, with the simulator's VAD
/// defaults for silence and padding; `expires_at` is `lifetime_ms` ahead (default an hour).
pub(super) fn initial_session(
    number: usize,
    model: Option<&str>,
    vad: &VadConfig,
    lifetime_ms: Option<u64>,
) -> Value {
    let expires_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + lifetime_ms.map_or(3600, |ms| ms.div_ceil(1000));
    json!({
        "type": "realtime",
        "object": "realtime.session",
        "id": format!("sess_sim{number:03}"),
        "model": model.unwrap_or(DEFAULT_MODEL),
        "output_modalities": ["audio"],
        "instructions": "",
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": null,
        "truncation": "auto",
        "prompt": null,
        "include": null,
        "expires_at": expires_at,
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": null,
                "noise_reduction": null,
                "turn_detection": default_turn_detection(vad),
            },
            "output": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "voice": "marin",
                "speed": 1.0,
            },
        },
    })
}

pub(super) fn default_turn_detection(vad: &VadConfig) -> Value {
    json!({
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": vad.prefix_padding_ms,
        "silence_duration_ms": vad.silence_ms,
        "idle_timeout_ms": null,
        "create_response": true,
        "interrupt_response": true,
    })
}

/// Fills the defaults of a turn detection switched on (or switched type) by an update, so the
/// effective session shows every setting.
pub(super) fn normalise_turn_detection(session: &mut Value, vad: &VadConfig) {
    let Some(Value::Object(fields)) = session.pointer_mut("/audio/input/turn_detection") else {
        return;
    };
    let defaults = match fields.get("type").and_then(Value::as_str) {
        Some("semantic_vad") => json!({
            "eagerness": "auto", "create_response": true, "interrupt_response": true,
        }),
        _ => {
            let mut defaults = default_turn_detection(vad);
            if let Value::Object(d) = &mut defaults {
                d.remove("type");
            }
            defaults
        }
    };
    if let Value::Object(defaults) = defaults {
        for (key, value) in defaults {
            fields.entry(key).or_insert(value);
        }
    }
    fields
        .entry("type")
        .or_insert_with(|| Value::String("server_vad".into()));
}

/// Merges a `session.update` patch into the effective session: objects merge key by key, except
/// that an object whose `type` differs replaces the old one whole (a new audio format or turn
/// detection type carries none of the old one's fields); anything else replaces.
pub(super) fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(old), Value::Object(new)) if same_type(old, new) => {
            for (key, value) in new {
                match old.get_mut(key) {
                    Some(slot) => merge(slot, value),
                    None => {
                        old.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

pub(super) fn same_type(old: &Map<String, Value>, new: &Map<String, Value>) -> bool {
    match (old.get("type"), new.get("type")) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// A `session.update` the live server would refuse, with the error to send.
#[derive(Debug)]
pub(super) struct Problem {
    pub(super) code: &'static str,
    pub(super) message: String,
    pub(super) param: String,
}

impl Problem {
    fn unknown(param: String) -> Problem {
        Problem {
            code: "unknown_parameter",
            message: format!("Unknown parameter: '{param}'."),
            param,
        }
    }

    fn invalid(param: &str, message: String) -> Problem {
        Problem {
            code: "invalid_value",
            message,
            param: param.to_owned(),
        }
    }
}

pub(super) const SESSION_KEYS: &[&str] = &[
    "type",
    "model",
    "instructions",
    "output_modalities",
    "audio",
    "tools",
    "tool_choice",
    "max_output_tokens",
    "truncation",
    "tracing",
    "prompt",
    "include",
    "reasoning",
    "parallel_tool_calls",
];
pub(super) const AUDIO_KEYS: &[&str] = &["input", "output"];
pub(super) const INPUT_KEYS: &[&str] = &[
    "format",
    "noise_reduction",
    "transcription",
    "turn_detection",
];
pub(super) const OUTPUT_KEYS: &[&str] = &["format", "voice", "speed"];
pub(super) const FORMAT_KEYS: &[&str] = &["type", "rate"];
pub(super) const SERVER_VAD_KEYS: &[&str] = &[
    "type",
    "threshold",
    "prefix_padding_ms",
    "silence_duration_ms",
    "idle_timeout_ms",
    "create_response",
    "interrupt_response",
];
pub(super) const SEMANTIC_VAD_KEYS: &[&str] =
    &["type", "eagerness", "create_response", "interrupt_response"];

/// Checks a `session.update` patch the way the GA server does (§2.1, §4.4): `session.type` is
/// required and must be `realtime`, unknown parameters are refused (then nothing is applied),
/// audio formats and turn-detection types must be known, and the model cannot change.
pub(super) fn check_session_patch(patch: &Value, current: &Value) -> Result<(), Problem> {
    match patch.get("type").and_then(Value::as_str) {
        None => {
            return Err(Problem {
                code: "missing_required_parameter",
                message: "Missing required parameter: 'session.type'.".into(),
                param: "session.type".into(),
            });
        }
        Some("realtime") => {}
        Some(other) => {
            return Err(Problem::invalid(
                "session.type",
                format!(
                    "Invalid value: '{other}'. The simulated upstream supports only 'realtime'."
                ),
            ));
        }
    }
    check_keys(patch, "session", SESSION_KEYS)?;
    if let Some(model) = patch.get("model").and_then(Value::as_str)
        && current.get("model").and_then(Value::as_str) != Some(model)
    {
        return Err(Problem::invalid(
            "session.model",
            "The model of a session cannot be changed after it has started.".into(),
        ));
    }
    let Some(audio) = patch.get("audio") else {
        return Ok(());
    };
    check_keys(audio, "session.audio", AUDIO_KEYS)?;
    if let Some(input) = audio.get("input") {
        check_keys(input, "session.audio.input", INPUT_KEYS)?;
        check_format(input, "session.audio.input.format")?;
        if let Some(td) = input.get("turn_detection").filter(|td| !td.is_null()) {
            let param = "session.audio.input.turn_detection";
            match td.get("type").and_then(Value::as_str) {
                Some("server_vad") | None => check_keys(td, param, SERVER_VAD_KEYS)?,
                Some("semantic_vad") => check_keys(td, param, SEMANTIC_VAD_KEYS)?,
                Some(other) => {
                    return Err(Problem::invalid(
                        "session.audio.input.turn_detection.type",
                        format!(
                            "Invalid value: '{other}'. Supported values are: 'server_vad' and \
                             'semantic_vad'."
                        ),
                    ));
                }
            }
        }
    }
    if let Some(output) = audio.get("output") {
        check_keys(output, "session.audio.output", OUTPUT_KEYS)?;
        check_format(output, "session.audio.output.format")?;
    }
    Ok(())
}

/// Every key of `value` (when it is an object) must be in `allowed`.
pub(super) fn check_keys(value: &Value, prefix: &str, allowed: &[&str]) -> Result<(), Problem> {
    let Value::Object(fields) = value else {
        return Err(Problem::invalid(
            prefix,
            format!("Invalid type for '{prefix}': expected an object."),
        ));
    };
    match fields.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(unknown) => Err(Problem::unknown(format!("{prefix}.{unknown}"))),
        None => Ok(()),
    }
}

pub(super) fn check_format(direction: &Value, param: &str) -> Result<(), Problem> {
    let Some(format) = direction.get("format") else {
        return Ok(());
    };
    check_keys(format, param, FORMAT_KEYS)?;
    match format.get("type").and_then(Value::as_str) {
        Some("audio/pcmu" | "audio/pcma") => Ok(()),
        Some("audio/pcm") => match format.get("rate").and_then(Value::as_u64) {
            None | Some(24000) => Ok(()),
            Some(rate) => Err(Problem::invalid(
                &format!("{param}.rate"),
                format!("Invalid value: {rate}. audio/pcm supports only 24000 Hz."),
            )),
        },
        other => Err(Problem::invalid(
            &format!("{param}.type"),
            format!(
                "Invalid value: {}. Supported values are: 'audio/pcm', 'audio/pcmu' and \
                 'audio/pcma'.",
                other.map_or("none".to_owned(), |t| format!("'{t}'"))
            ),
        )),
    }
}

/// About one token per four characters.
pub(super) fn text_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

/// The text of an item's content parts (input_text, output_text, text) and of a function
/// output, for usage.
pub(super) fn item_text(item: &Value) -> String {
    let mut text = String::new();
    if let Some(parts) = item.get("content").and_then(Value::as_array) {
        for part in parts {
            if let Some(t) = part.get("text").and_then(Value::as_str) {
                text.push_str(t);
            }
        }
    }
    if let Some(output) = item.get("output").and_then(Value::as_str) {
        text.push_str(output);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_format_change_replaces_the_old_format_and_a_vad_change_merges() {
        let mut session = initial_session(1, None, &VadConfig::default(), None);
        let patch = json!({
            "type": "realtime",
            "instructions": "Be brief.",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcmu"},
                    "turn_detection": {"type": "server_vad", "silence_duration_ms": 800},
                },
                "output": {"format": {"type": "audio/pcmu"}},
            },
        });
        assert!(check_session_patch(&patch, &session).is_ok());
        merge(&mut session, &patch);
        assert_eq!(session["instructions"], "Be brief.");
        assert_eq!(
            session["audio"]["input"]["format"],
            json!({"type": "audio/pcmu"})
        );
        assert_eq!(session["audio"]["output"]["voice"], "marin");
        let td = &session["audio"]["input"]["turn_detection"];
        assert_eq!(td["silence_duration_ms"], 800);
        assert_eq!(td["prefix_padding_ms"], 300);
        assert_eq!(td["interrupt_response"], true);
    }

    #[test]
    fn expires_at_follows_the_session_lifetime() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let at = |lifetime| {
            initial_session(1, None, &VadConfig::default(), lifetime)["expires_at"]
                .as_u64()
                .unwrap_or(0)
        };
        assert!((now + 20..=now + 21).contains(&at(Some(19_500))));
        assert!((now + 3600..=now + 3601).contains(&at(None)));
    }

    #[test]
    fn beta_shaped_and_unknown_session_fields_are_refused() {
        let session = initial_session(1, None, &VadConfig::default(), None);
        for (patch, param) in [
            (
                json!({"type": "realtime", "temperature": 0.8}),
                "session.temperature",
            ),
            (
                json!({"type": "realtime", "input_audio_format": "g711_ulaw"}),
                "session.input_audio_format",
            ),
            (
                json!({"type": "realtime", "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_ms": 1}}}}),
                "session.audio.input.turn_detection.silence_ms",
            ),
            (json!({"instructions": "x"}), "session.type"),
        ] {
            match check_session_patch(&patch, &session) {
                Err(problem) => assert_eq!(problem.param, param),
                Ok(()) => panic!("accepted {patch}"),
            }
        }
    }

    #[test]
    fn turning_vad_back_on_fills_in_its_defaults() {
        let vad = VadConfig::default();
        let mut session = initial_session(1, None, &vad, None);
        merge(
            &mut session,
            &json!({"audio": {"input": {"turn_detection": null}}}),
        );
        assert!(session["audio"]["input"]["turn_detection"].is_null());
        merge(
            &mut session,
            &json!({"audio": {"input": {"turn_detection": {"type": "server_vad", "create_response": false}}}}),
        );
        normalise_turn_detection(&mut session, &vad);
        let td = &session["audio"]["input"]["turn_detection"];
        assert_eq!(td["create_response"], false);
        assert_eq!(td["silence_duration_ms"], 500);
        assert_eq!(td["interrupt_response"], true);
    }
}
