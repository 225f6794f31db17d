//! Calls between the webhook and the media stream, keyed by CallSid.
//!
//! The webhook builds the call's prompts, starts dialling the upstream (pre-warm) and parks the
//! result here; the media stream claims it by CallSid. An entry that nobody claims within the
//! configured time is dropped and its upstream closed, so a call that never connects costs no
//! more than the time-to-live.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::task::JoinHandle;

use crate::call::lifecycle::Slot;
use crate::call::setup::CallSetup;
use crate::domain::{CallSid, Direction};
use crate::realtime::failover::Dialed;
use crate::realtime::upstream::UpstreamError;

/// The pre-warm task: resolves to an upstream socket with the COMPACT session sent.
pub type Prewarm = JoinHandle<Result<Dialed, UpstreamError>>;

/// A call the webhook accepted, waiting for its media stream.
#[derive(Debug)]
pub struct PendingCall {
    /// Prompts and session configuration.
    pub setup: CallSetup,
    /// Caller, as Twilio sent it.
    pub from: String,
    /// Called number, as Twilio sent it.
    pub to: String,
    /// The upstream being dialled.
    pub prewarm: Prewarm,
    /// When the webhook answered.
    pub created: Instant,
    /// When the pre-warm sent the greeting's `response.create` (set once it has).
    pub greeting_requested_at: Arc<OnceLock<Instant>>,
    /// The call's place under the call limits, held until the call ends (`None`: not
    /// counted).
    pub slot: Option<Slot>,
    /// The caller is back from a transfer nobody answered: the new stream resumes the
    /// conversation (`None`: a new call).
    pub resume: Option<crate::call::transfer::Resume>,
}

/// A pending call dropped because no stream claimed it in time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    /// The call.
    pub call_sid: CallSid,
    /// Its business.
    pub business_id: String,
    /// Its direction.
    pub direction: Direction,
}

/// The shared map of pending calls (the only shared map besides read-only caches).
#[derive(Debug)]
pub struct Registry {
    calls: DashMap<CallSid, PendingCall>,
    ttl: Duration,
}

impl Registry {
    /// Entries live `ttl` unless claimed.
    pub fn new(ttl: Duration) -> Registry {
        Registry {
            calls: DashMap::new(),
            ttl,
        }
    }

    /// Parks `call` under `call_sid`. A retried webhook for the same CallSid replaces the older
    /// entry, whose upstream is closed.
    pub fn insert(&self, call_sid: CallSid, call: PendingCall) {
        if let Some(old) = self.calls.insert(call_sid, call) {
            discard(old);
        }
    }

    /// Takes the entry for `call_sid`, if this instance has it and it has not expired.
    pub fn claim(&self, call_sid: &str) -> Option<PendingCall> {
        let (_, call) = self.calls.remove(call_sid)?;
        if call.created.elapsed() > self.ttl {
            discard(call);
            return None;
        }
        Some(call)
    }

    /// Drops entries older than the time-to-live and closes their upstreams. Returns them.
    pub fn sweep(&self, now: Instant) -> Vec<Expired> {
        let expired: Vec<CallSid> = self
            .calls
            .iter()
            .filter(|e| now.saturating_duration_since(e.created) > self.ttl)
            .map(|e| e.key().clone())
            .collect();
        let mut dropped = Vec::new();
        for call_sid in expired {
            if let Some((_, call)) = self.calls.remove(&call_sid) {
                tracing::warn!(call_sid = %call_sid, business_id = %call.setup.business_id,
                    "pending call never claimed by a media stream; closing its upstream");
                dropped.push(Expired {
                    business_id: call.setup.business_id.clone(),
                    direction: call.setup.direction,
                    call_sid,
                });
                discard(call);
            }
        }
        dropped
    }

    /// Pending calls.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// True when no call is pending.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }
}

/// Stops a pending call's pre-warm and closes its upstream if it was open.
fn discard(call: PendingCall) {
    call.prewarm.abort();
    let prewarm = call.prewarm;
    if tokio::runtime::Handle::try_current().is_ok() {
        tokio::spawn(async move {
            if let Ok(Ok(mut dialed)) = prewarm.await {
                let _ = dialed.socket.close(None).await;
            }
        });
    }
}
