//! What a call needs before its media stream starts: the business's prompts and the upstream
//! session configuration, built from (business, direction) alone, and the pre-warmed upstream.

use std::sync::Arc;

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use crate::call::Direction;
use crate::config::Config;
use crate::prompt::{BuiltPrompts, BusinessLayer, PromptError, PromptLibrary};
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
    /// FULL and COMPACT instructions with their token counts.
    pub prompts: Arc<BuiltPrompts>,
    /// The first `session.update` (COMPACT instructions, pcmu, voice, VAD, transcription).
    pub session: SessionConfig,
}

impl CallSetup {
    /// Builds the prompts for `business` and `direction`. The outbound prompt falls back to the
    /// inbound one when the business has none.
    ///
    /// Errors: [`PromptError`] when the business's text cannot be used.
    pub fn build(
        library: &PromptLibrary,
        config: &Config,
        business: &Business,
        direction: Direction,
    ) -> Result<CallSetup, PromptError> {
        let text = match direction {
            Direction::Outbound if !business.outbound_ai_prompt.trim().is_empty() => {
                &business.outbound_ai_prompt
            }
            _ => &business.ai_prompt,
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
                turn_detection: Some(config.turn_detection()),
                transcription_model,
                language,
            },
            prompts: Arc::new(prompts),
        })
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
