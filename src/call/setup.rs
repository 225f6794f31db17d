//! What a call needs before its media stream starts: the business's prompts and the upstream
//! session configuration, built from (business, direction) alone, and the pre-warmed upstream.

use std::sync::Arc;

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use crate::call::fallback::FallbackTarget;
use crate::config::Config;
use crate::domain::Direction;
use crate::domain::GuardPolicy;
use crate::guard::leak;
use crate::guard::sanitizer::Sanitizer;
use crate::prompt::{BuiltPrompts, BusinessLayer, PromptError, PromptLibrary, count_tokens};
use crate::realtime::events::{ClientEvent, SessionConfig};
use crate::realtime::upstream::{self, UpstreamError, UpstreamSettings, UpstreamSocket};
use crate::store::Business;
use crate::tools::ToolSet;

/// Everything decided about a call before audio flows.
#[derive(Debug, Clone)]
pub struct CallSetup {
    /// The business served.
    pub business_id: String,
    /// Inbound or outbound.
    pub direction: Direction,
    /// FULL (with this call's canary appended) and COMPACT instructions with their token counts.
    pub prompts: Arc<BuiltPrompts>,
    /// The first `session.update` (COMPACT instructions, pcmu, voice, VAD, transcription).
    pub session: SessionConfig,
    /// This call's secret canary, which the FULL instructions tell the model never to say.
    pub canary: String,
    /// FULL without the business layer: the text the model must never recite. The business's
    /// own facts (hours, prices, address) are meant to be said, so they are left out.
    pub confidential: String,
    /// How the business wants injection attempts handled.
    pub policy: GuardPolicy,
    /// The business's sanitizer (the built-in rules plus its own).
    pub sanitizer: Arc<Sanitizer>,
    /// The prompt version the call runs (`None`: the business's own prompt text).
    pub prompt_version_id: Option<String>,
    /// The running experiment that chose the version, and the arm, when the call is part of
    /// one.
    pub experiment: Option<(String, crate::domain::Arm)>,
    /// The customer's number (`From` inbound, `To` outbound) the prompt was rendered for.
    pub caller: String,
    /// The business's longest call, seconds, when it sets one (else `limits.max_call_duration_s`).
    pub max_call_duration_s: Option<u64>,
    /// Where the call goes when no model can take it (the business's `fallback`, else
    /// `fallback.number`).
    pub fallback: FallbackTarget,
    /// The call's tools (also in [`SessionConfig::tools`]); none until
    /// [`CallSetup::with_tools`].
    pub tools: Arc<ToolSet>,
    /// An answering machine took this outbound call: the instructions of its one response,
    /// the voicemail ([`crate::outbound::voicemail_instructions`]); `None`: a conversation.
    pub voicemail: Option<String>,
}

/// Which prompt a call runs: the version and the experiment arm that chose it, if any.
#[derive(Debug, Clone, Default)]
pub struct PromptSource {
    /// The version's id; `None`: the business's own prompt text.
    pub version_id: Option<String>,
    /// The running experiment and arm that chose it.
    pub experiment: Option<(String, crate::domain::Arm)>,
    /// The customer's number the prompt is rendered for.
    pub caller: String,
}

impl CallSetup {
    /// Builds FULL and COMPACT for `business` and `direction` with `text` as the business layer
    /// (a rendered version body, or the business's own text, as
    /// [`crate::prompt::resolve`] chose), without the per-call canary: what
    /// the prompt cache ([`crate::call::cache::FingerprintCache`]) keeps.
    ///
    /// Errors: [`PromptError`] when the text cannot be used.
    pub fn build_prompts(
        library: &PromptLibrary,
        business: &Business,
        direction: Direction,
        text: &str,
    ) -> Result<BuiltPrompts, PromptError> {
        let built = library.build(
            &BusinessLayer {
                id: &business.id,
                name: &business.name,
                language: &business.language,
                text,
                greeting: &business.greeting_instructions,
            },
            direction,
        )?;
        // Versions are validated when stored and own texts when set; this holds for rows
        // written before either check, so no call runs an unbounded prompt.
        let cap = crate::prompt::validate::DEFAULT_HARD_CAP_TOKENS;
        if built.full_tokens > cap {
            return Err(PromptError::OverHardCap {
                business_id: business.id.clone(),
                direction,
                full_tokens: built.full_tokens,
                cap,
            });
        }
        Ok(built)
    }

    /// Builds the prompts for `business` and `direction` with `text` as the business layer and
    /// sets the call up with them; see [`CallSetup::with_prompts`].
    ///
    /// Errors: [`PromptError`] when the business's text cannot be used.
    pub fn build(
        library: &PromptLibrary,
        config: &Config,
        business: &Business,
        direction: Direction,
        text: &str,
        sanitizer: Arc<Sanitizer>,
        source: PromptSource,
    ) -> Result<CallSetup, PromptError> {
        let prompts = Self::build_prompts(library, business, direction, text)?;
        Ok(Self::with_prompts(
            config, business, direction, sanitizer, &prompts, source,
        ))
    }

    /// Sets a call up with `prompts` (as [`CallSetup::build_prompts`] made them, possibly from
    /// the cache). A fresh canary goes at the very end of FULL, so the layers before it stay
    /// byte-identical across calls (prefix caching). Under the `gate` policy the VAD is told not
    /// to start responses by itself.
    pub fn with_prompts(
        config: &Config,
        business: &Business,
        direction: Direction,
        sanitizer: Arc<Sanitizer>,
        prompts: &BuiltPrompts,
        source: PromptSource,
    ) -> CallSetup {
        let canary = leak::new_canary();
        let prompts = with_canary(prompts, &leak::canary_instruction(&canary));
        let prompts_full_for_leak = prompts.full.clone();
        let policy = business
            .guard_policy
            .parse::<GuardPolicy>()
            .unwrap_or_else(|_| {
                tracing::warn!(business_id = %business.id, policy = %business.guard_policy,
                "unknown guard policy; using monitor");
                GuardPolicy::Monitor
            });
        let mut turn_detection = config.turn_detection();
        if policy == GuardPolicy::Gate {
            turn_detection.create_response = false;
        }
        let voice = if business.voice.trim().is_empty() {
            config.audio.default_voice.clone()
        } else {
            business.voice.clone()
        };
        let transcription_model = Some(config.upstream.transcription_model.trim())
            .filter(|m| !m.is_empty())
            .map(str::to_string);
        // Transcription takes an ISO-639-1 code: keep the primary subtag of a BCP 47 tag.
        let language = business
            .language
            .split(['-', '_'])
            .next()
            .filter(|l| l.len() == 2)
            .map(str::to_ascii_lowercase);
        CallSetup {
            business_id: business.id.clone(),
            direction,
            session: SessionConfig {
                instructions: prompts.compact.clone(),
                voice,
                turn_detection: Some(turn_detection),
                transcription_model,
                language,
                tools: Arc::default(),
            },
            prompts: Arc::new(prompts),
            confidential: without_business_layer(&prompts_full_for_leak),
            canary,
            policy,
            sanitizer,
            prompt_version_id: source.version_id,
            experiment: source.experiment,
            caller: source.caller,
            max_call_duration_s: business
                .max_call_duration_s
                .and_then(|s| u64::try_from(s).ok())
                .filter(|s| *s > 0),
            fallback: FallbackTarget::choose(business.fallback.as_deref(), &config.fallback.number),
            tools: Arc::default(),
            voicemail: None,
        }
    }

    /// The setup for an answering machine: its one response says the voicemail
    /// (`instructions`), and the session has no turn detection, so nothing the machine plays
    /// or records interrupts it.
    pub fn for_voicemail(mut self, instructions: String) -> CallSetup {
        self.session.turn_detection = None;
        self.voicemail = Some(instructions);
        self
    }

    /// The setup with `tools`: they go into every `session.update` that configures a session
    /// (the first one, and those of reconnects and rollovers).
    pub fn with_tools(mut self, tools: Arc<ToolSet>) -> CallSetup {
        self.session.tools = tools.definitions();
        self.tools = tools;
        self
    }

    /// The experiment arm, if the call is part of an experiment.
    pub fn variant(&self) -> Option<crate::domain::Arm> {
        self.experiment.as_ref().map(|(_, arm)| *arm)
    }
}

/// `prompts` with `instruction` appended to FULL after a blank line.
///
/// FULL's token count is updated by recounting only its last line with the tail: o200k_base's
/// pre-tokenizer ends a piece at a newline unless the next line starts with `/` or white space,
/// so the pieces before FULL's last line do not change, and BPE never merges across pieces.
/// Otherwise the whole text is counted again. Either way the count is exact.
fn with_canary(prompts: &BuiltPrompts, instruction: &str) -> BuiltPrompts {
    let tail = format!("\n\n{instruction}");
    let full = format!("{}{tail}", prompts.full);
    let split = prompts.full.rfind('\n').map_or(0, |at| at + 1);
    let last_line = &prompts.full[split..];
    let full_tokens =
        if split == 0 || last_line.is_empty() || last_line.starts_with(['/', ' ', '\t']) {
            count_tokens(&full)
        } else {
            (prompts.full_tokens + count_tokens(&format!("{last_line}{tail}")))
                .saturating_sub(count_tokens(last_line))
        };
    BuiltPrompts {
        full,
        compact: prompts.compact.clone(),
        full_tokens,
        compact_tokens: prompts.compact_tokens,
    }
}

/// `full` with the text between the business markers (markers included) removed.
fn without_business_layer(full: &str) -> String {
    let start = full.find("⟦BUSINESS:");
    let end = full.find("⟦/BUSINESS:").and_then(|at| {
        full[at..]
            .find('⟧')
            .map(|close| at + close + '⟧'.len_utf8())
    });
    match (start, end) {
        (Some(start), Some(end)) if start < end => format!("{}{}", &full[..start], &full[end..]),
        _ => full.to_string(),
    }
}

/// Dials the upstream and sends the COMPACT `session.update`, so the session is ready when the
/// media stream arrives.
///
/// Errors: [`UpstreamError`] when the connection or the first write fails.
pub async fn open_upstream(
    settings: &UpstreamSettings,
    session: &SessionConfig,
) -> Result<UpstreamSocket, UpstreamError> {
    let mut socket = upstream::connect(settings).await?;
    let update = ClientEvent::SessionUpdate(session).to_json();
    socket
        .send(Message::Text(update.into()))
        .await
        .map_err(|e| UpstreamError::Connect {
            url: settings.url.clone(),
            source: Box::new(e),
        })?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_tokens_with_the_canary_add_up_to_a_count_of_the_whole_text() {
        let library = PromptLibrary::embedded(700).expect("library");
        let mut business = crate::store::Business {
            id: "dental".into(),
            name: "Bright Smile Dental".into(),
            language: "en".into(),
            voice: "marin".into(),
            ai_prompt: "We open at eight.\nParking is free.\n\n".into(),
            outbound_ai_prompt: String::new(),
            greeting_instructions: "Greet the caller.\n".into(),
            guard_policy: "monitor".into(),
            hours: String::new(),
            required_sections: Vec::new(),
            created_at_ms: 0,
            updated_at_ms: 0,
            max_concurrent_calls: None,
            max_call_duration_s: None,
            fallback: None,
            end_call_enabled: true,
            transfer_enabled: true,
            transfer_targets: Vec::new(),
            time_zone: "UTC".into(),
            calling_hours: "08:00-21:00".into(),
            outbound_per_minute: 10,
            voicemail_message: String::new(),
        };
        let texts = [
            "We open at eight.\nParking is free.\n\n",
            "Short.",
            "Ends in a list:\n- one\n- two\n",
        ];
        let greetings = [
            "Greet the caller.\n",
            "Say hello",
            "Say: /start",
            "Line one.\n  indented last line",
        ];
        for (text, greeting) in texts.into_iter().flat_map(|t| greetings.map(|g| (t, g))) {
            business.ai_prompt = text.into();
            business.greeting_instructions = greeting.into();
            for direction in [Direction::Inbound, Direction::Outbound] {
                let base = CallSetup::build_prompts(&library, &business, direction, text)
                    .expect("prompts");
                let canary = leak::new_canary();
                let built = with_canary(&base, &leak::canary_instruction(&canary));
                assert_eq!(
                    built.full_tokens,
                    count_tokens(&built.full),
                    "{text:?} {greeting:?}"
                );
                assert!(built.full.ends_with(&leak::canary_instruction(&canary)));
            }
        }
    }

    #[test]
    fn a_business_text_over_the_hard_cap_is_refused_at_call_setup() {
        let library = PromptLibrary::embedded(700).expect("library");
        let mut business = crate::store::NewBusiness::named("Big")
            .to_business()
            .expect("business");
        let fits = "We open at eight. ".repeat(20);
        assert!(CallSetup::build_prompts(&library, &business, Direction::Inbound, &fits).is_ok());
        let huge = "We open at eight and close at six on weekdays. ".repeat(800);
        business.ai_prompt = huge.clone();
        match CallSetup::build_prompts(&library, &business, Direction::Inbound, &huge) {
            Err(PromptError::OverHardCap {
                full_tokens, cap, ..
            }) => {
                assert_eq!(cap, crate::prompt::validate::DEFAULT_HARD_CAP_TOKENS);
                assert!(full_tokens > cap, "{full_tokens}");
            }
            other => panic!("expected OverHardCap, got {other:?}"),
        }
        let own = crate::ops::businesses::check_own_prompts(&library, &business)
            .expect_err("the same text is refused when it is set");
        assert!(
            own.to_string().contains("over the hard cap of 3500"),
            "{own}"
        );
        business.ai_prompt = fits;
        assert!(crate::ops::businesses::check_own_prompts(&library, &business).is_ok());
    }

    #[test]
    fn the_confidential_text_leaves_out_the_business_layer() {
        let full = "rules\n\n⟦BUSINESS:b1⟧\nOpen at nine.\n⟦/BUSINESS:b1⟧\n\ninbound\n\ncode";
        assert_eq!(without_business_layer(full), "rules\n\n\n\ninbound\n\ncode");
        assert_eq!(without_business_layer("no markers"), "no markers");
    }
}
