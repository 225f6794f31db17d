//! What a call needs before its media stream starts: the business's prompts and the upstream
//! session configuration, built from (business, direction) alone, and the pre-warmed upstream.

use std::sync::Arc;

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use crate::call::Direction;
use crate::call::guards::GuardPolicy;
use crate::config::Config;
use crate::guard::leak;
use crate::guard::sanitizer::Sanitizer;
use crate::prompt::{BuiltPrompts, BusinessLayer, PromptError, PromptLibrary, count_tokens};
use crate::realtime::events::{ClientEvent, SessionConfig};
use crate::realtime::upstream::{self, UpstreamError, UpstreamSettings, UpstreamSocket};
use crate::store::Business;

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
    /// `control` or `variant` when the call is part of a running experiment.
    pub variant: Option<&'static str>,
}

/// Which business text a call uses.
#[derive(Debug, Clone, Default)]
pub struct PromptSource {
    /// The rendered body of a prompt version; `None` uses the business's own prompt text.
    pub body: Option<String>,
    /// The version's id.
    pub version_id: Option<String>,
    /// The experiment arm, if any.
    pub variant: Option<&'static str>,
}

impl CallSetup {
    /// Builds the prompts for `business` and `direction`. The outbound prompt falls back to the
    /// inbound one when the business has none. A fresh canary goes at the very end of FULL, so
    /// the layers before it stay byte-identical across calls (prefix caching). Under the `gate`
    /// policy the VAD is told not to start responses by itself.
    ///
    /// Errors: [`PromptError`] when the business's text cannot be used.
    pub fn build(
        library: &PromptLibrary,
        config: &Config,
        business: &Business,
        direction: Direction,
        sanitizer: Arc<Sanitizer>,
        source: PromptSource,
    ) -> Result<CallSetup, PromptError> {
        let text = match (&source.body, direction) {
            (Some(body), _) => body,
            (None, Direction::Outbound) if !business.outbound_ai_prompt.trim().is_empty() => {
                &business.outbound_ai_prompt
            }
            (None, _) => &business.ai_prompt,
        };
        let prompts = library.build(
            &BusinessLayer {
                id: &business.id,
                name: &business.name,
                language: &business.language,
                text,
                greeting: &business.greeting_instructions,
            },
            direction,
        )?;
        let canary = leak::new_canary();
        let mut prompts = prompts;
        prompts.full = format!("{}\n\n{}", prompts.full, leak::canary_instruction(&canary));
        prompts.full_tokens = count_tokens(&prompts.full);
        let prompts_full_for_leak = prompts.full.clone();
        let policy = GuardPolicy::parse(&business.guard_policy).unwrap_or_else(|| {
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
        Ok(CallSetup {
            business_id: business.id.clone(),
            direction,
            session: SessionConfig {
                instructions: prompts.compact.clone(),
                voice,
                turn_detection: Some(turn_detection),
                transcription_model,
                language,
            },
            prompts: Arc::new(prompts),
            confidential: without_business_layer(&prompts_full_for_leak),
            canary,
            policy,
            sanitizer,
            prompt_version_id: source.version_id,
            variant: source.variant,
        })
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
    fn the_confidential_text_leaves_out_the_business_layer() {
        let full = "rules\n\n⟦BUSINESS:b1⟧\nOpen at nine.\n⟦/BUSINESS:b1⟧\n\ninbound\n\ncode";
        assert_eq!(without_business_layer(full), "rules\n\n\n\ninbound\n\ncode");
        assert_eq!(without_business_layer("no markers"), "no markers");
    }
}
