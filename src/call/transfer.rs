//! Transfers to a person: the built-in `transfer_call` carried through Twilio.
//!
//! 1. The model says a handoff line and calls `transfer_call` with one of the business's
//!    transfer targets ([`crate::tools::builtin`]); the call waits until Twilio has
//!    acknowledged the line's last mark ([`crate::call::state::CallState::transfer`]).
//! 2. [`Transfers::put_through`] redirects the live call, *while its media stream is still
//!    open* (as the human fallback does), to `<Dial action=…>` the target's number, showing
//!    the caller's own number for an inbound call ([`twiml::dial_with_action`]). The stream gets
//!    `stop`; the session ends as [`crate::domain::EndReason::Transferred`] and parks the
//!    conversation here ([`Transfers::park`]).
//! 3. Twilio POSTs the dial's outcome to the action URL (`/twilio/dial-status/{instance}`,
//!    signed like every webhook; its query carries the target's name and a signed call token,
//!    which Twilio's signature covers too). The outcome is recorded (`call_transfers`). When
//!    the person answered, the answer is `<Hangup/>` (the caller's call ends when that call
//!    does). Otherwise the caller comes back to the assistant on a new `<Connect><Stream>`:
//!    its session replays the parked conversation and a system item naming the outcome
//!    ([`return_note`]), and the model speaks first: it tells the caller and offers to take a
//!    message.
//!
//! Decisions: the parked conversation lives in this instance's memory for
//! [`PARK_LIMIT`]; the action URL and the return stream's URL name this instance, so a load
//! balancer routes both back to it (as it does the first stream). An instance without the
//! conversation (a restart, another instance) still brings the caller back, with the outcome
//! but no history. The dial rings for [`DIAL_TIMEOUT_S`] seconds.
//!
//! Sources: <https://www.twilio.com/docs/voice/twiml/dial> (`action`, `DialCallStatus`,
//! `callerId`), <https://www.twilio.com/docs/voice/api/call-resource#update-a-call-resource>.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::call::conversation::Conversation;
use crate::call::setup::CallSetup;
use crate::config::Config;
use crate::domain::{BusinessId, CallSid, Direction, TransferOutcome};
use crate::store::TransferTarget;
use crate::twilio::rest::{RestClient, RestError};
use crate::twilio::token::{self, CallToken};
use crate::twilio::twiml;

/// How long the target's phone rings before the dial ends as `no-answer`, seconds (Twilio's
/// `<Dial timeout>`; its own default is 30, which is long for a caller who was promised a
/// person).
pub const DIAL_TIMEOUT_S: u32 = 20;

/// How long a transferred call's conversation is kept for its return: the ring time plus a
/// margin for Twilio's callback. A person who answered may talk for longer; then nothing
/// comes back.
pub const PARK_LIMIT: Duration = Duration::from_secs(DIAL_TIMEOUT_S as u64 + 40);

/// How long the action URL's call token is valid, ms: the ring time, the callback's own
/// delay, and a margin. (An answered dial's callback comes after the whole conversation with
/// the person; it needs no token to be recorded, see [`ActionQuery`].)
const ACTION_TOKEN_MS: i64 = (DIAL_TIMEOUT_S as i64 + 120) * 1000;

/// Why a transfer could not be started.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// No Twilio REST credentials are configured, so no call can be redirected.
    #[error("no Twilio REST credentials: the call cannot be redirected")]
    NoCredentials,
    /// The business id cannot travel in a token (a hand edit of the database).
    #[error("the business id cannot travel in a call token: {0}")]
    BadBusinessId(String),
    /// Twilio's REST API failed or refused the redirect.
    #[error(transparent)]
    Rest(#[from] RestError),
}

/// A caller back from a transfer nobody answered: what their new session starts from.
#[derive(Debug)]
pub struct Resume {
    /// The conversation before the transfer (empty when it was not parked here).
    pub conversation: Conversation,
    /// The transfer target's name.
    pub target: String,
    /// How the dial ended.
    pub outcome: TransferOutcome,
}

impl Resume {
    /// The system item the new session gets after the replayed conversation.
    pub fn note(&self) -> String {
        return_note(&self.target, self.outcome)
    }
}

/// What the model is told when the caller comes back from a transfer to `target` that ended
/// as `outcome`: what happened, and what to do (say so, offer to take a message).
pub fn return_note(target: &str, outcome: TransferOutcome) -> String {
    let what = match outcome {
        TransferOutcome::Busy => "the line was busy",
        TransferOutcome::NoAnswer => "nobody answered",
        TransferOutcome::Failed => "the call could not be connected",
        TransferOutcome::Canceled => "the call was cancelled before anyone answered",
        TransferOutcome::Answered => "the call ended",
    };
    format!(
        "The caller was put through to {target}, but {what}. The caller is back on the line with \
         you now. Tell them so in one short sentence, apologise, and offer to take a message \
         (their name, number and what it is about) for {target} to call back."
    )
}

/// What a dial's action URL carries (its query, covered by Twilio's signature).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionQuery {
    /// The transfer target's name.
    pub target: String,
    /// The signed call token: who the call is, to bring it back.
    pub token: String,
}

impl ActionQuery {
    /// Reads `target` and `token` from a query string.
    ///
    /// Errors: a message naming the missing parameter.
    pub fn parse(query: &str) -> Result<ActionQuery, String> {
        let mut target = None;
        let mut token = None;
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "target" => target = Some(value.into_owned()),
                "token" => token = Some(value.into_owned()),
                _ => {}
            }
        }
        Ok(ActionQuery {
            target: target
                .filter(|t| !t.is_empty())
                .ok_or("the action URL has no target")?,
            token: token
                .filter(|t| !t.is_empty())
                .ok_or("the action URL has no token")?,
        })
    }
}

/// A conversation waiting for its call's return.
#[derive(Debug)]
struct Parked {
    conversation: Conversation,
    at: Instant,
}

/// Puts calls through to their transfer targets and keeps their conversations for a return.
/// Cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct Transfers {
    /// The Twilio REST client; `None`: no credentials, and every transfer fails (the model is
    /// told, and the call goes on).
    rest: Option<RestClient>,
    /// `{scheme}://{public_host}/twilio/dial-status/{instance}`.
    action_base: String,
    signing_key: Arc<Vec<u8>>,
    parked: Arc<Mutex<HashMap<String, Parked>>>,
}

impl Transfers {
    /// Transfers for this instance (`server.public_scheme`, `server.public_host`,
    /// `instance_id`), signing their call tokens with `signing_key`; no REST client until
    /// [`Transfers::with_rest`].
    pub fn new(config: &Config, instance_id: &str, signing_key: &[u8]) -> Transfers {
        Transfers {
            rest: None,
            action_base: config.public_url(&format!("/twilio/dial-status/{instance_id}")),
            signing_key: Arc::new(signing_key.to_vec()),
            parked: Arc::default(),
        }
    }

    /// The same, redirecting calls with `rest`.
    pub fn with_rest(self, rest: Option<RestClient>) -> Transfers {
        Transfers { rest, ..self }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Parked>> {
        self.parked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The action URL for a transfer of the call `setup` describes to `target`, valid for
    /// [`ACTION_TOKEN_MS`] from `now_ms`.
    ///
    /// Errors: [`TransferError::BadBusinessId`].
    pub fn action_url(
        &self,
        call_sid: &CallSid,
        setup: &CallSetup,
        target: &str,
        now_ms: i64,
    ) -> Result<String, TransferError> {
        let business_id = BusinessId::parse(&setup.business_id)
            .map_err(|e| TransferError::BadBusinessId(e.to_string()))?;
        let token = token::sign(
            &self.signing_key,
            &CallToken {
                call_sid: call_sid.clone(),
                business_id,
                direction: setup.direction,
                expires_at_ms: now_ms + ACTION_TOKEN_MS,
                caller: setup.caller.clone(),
                prompt_version_id: setup.prompt_version_id.clone(),
                experiment: setup.experiment.clone(),
            },
        );
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("target", target)
            .append_pair("token", &token)
            .finish();
        Ok(format!("{}?{query}", self.action_base))
    }

    /// Redirects the live call `call_sid` (of account `account_sid`, from its stream's
    /// `start`) set up as `setup` to `<Dial>` `target`, with the action URL that brings it
    /// back. The caller's number is the caller ID of an inbound call's dial. Takes at most
    /// `fallback.rest_timeout_ms`.
    ///
    /// Errors: [`TransferError`]; the call goes on with the model.
    pub async fn put_through(
        &self,
        account_sid: &str,
        call_sid: &CallSid,
        setup: &CallSetup,
        target: &TransferTarget,
    ) -> Result<(), TransferError> {
        let rest = self.rest.as_ref().ok_or(TransferError::NoCredentials)?;
        let action = self.action_url(call_sid, setup, &target.name, crate::store::now_ms())?;
        let caller_id = match setup.direction {
            Direction::Inbound => crate::store::normalize_e164(&setup.caller).ok(),
            // An outbound call's dial shows the business's number, the call's own caller ID.
            Direction::Outbound => None,
        };
        let twiml = twiml::dial_with_action(
            &target.number,
            &action,
            DIAL_TIMEOUT_S,
            caller_id.as_deref(),
        );
        rest.redirect_call(account_sid, call_sid, &twiml).await?;
        Ok(())
    }

    /// Keeps `conversation` for the return of `call_sid` (for [`PARK_LIMIT`]); conversations
    /// parked longer ago are dropped now.
    pub fn park(&self, call_sid: &CallSid, conversation: Conversation) {
        let now = Instant::now();
        let mut parked = self.lock();
        parked.retain(|_, p| now.saturating_duration_since(p.at) < PARK_LIMIT);
        parked.insert(
            call_sid.to_string(),
            Parked {
                conversation,
                at: now,
            },
        );
    }

    /// The conversation parked for `call_sid`, once (`None`: not parked here, or too old).
    pub fn take(&self, call_sid: &str) -> Option<Conversation> {
        let parked = self.lock().remove(call_sid)?;
        (parked.at.elapsed() < PARK_LIMIT).then_some(parked.conversation)
    }

    /// Conversations parked now.
    pub fn parked(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_action_query_round_trips_and_names_what_is_missing() {
        let q = ActionQuery::parse("target=front+desk&token=a.b%2Bc").unwrap();
        assert_eq!(q.target, "front desk");
        assert_eq!(q.token, "a.b+c");
        assert!(
            ActionQuery::parse("token=x")
                .unwrap_err()
                .contains("target")
        );
        assert!(
            ActionQuery::parse("target=x&token=")
                .unwrap_err()
                .contains("token")
        );
    }

    #[test]
    fn the_return_note_names_the_target_and_what_happened() {
        let note = return_note("front desk", TransferOutcome::NoAnswer);
        assert!(note.contains("front desk") && note.contains("nobody answered"));
        assert!(note.contains("take a message"));
        assert!(return_note("x", TransferOutcome::Busy).contains("busy"));
    }

    #[test]
    fn a_parked_conversation_is_taken_once() {
        let config = crate::config::Config::from_toml(
            crate::config::DEFAULT_TOML,
            crate::config::DEFAULT_PATH,
            |_| None,
        )
        .unwrap();
        let transfers = Transfers::new(&config, "i1", b"key");
        let sid = CallSid::parse("CA00000000000000000000000000000001").unwrap();
        let mut conversation = Conversation::new();
        conversation.caller_said("I need a person");
        transfers.park(&sid, conversation);
        assert_eq!(transfers.parked(), 1);
        assert!(transfers.take(sid.as_str()).is_some());
        assert!(transfers.take(sid.as_str()).is_none());
    }
}
