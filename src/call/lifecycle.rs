//! How an instance stops on purpose, and how many calls it takes.
//!
//! **Drain.** SIGTERM or SIGINT starts a drain ([`Lifecycle::begin_drain`]): `/readyz` answers
//! 503 so a load balancer sends new calls elsewhere, the voice webhook answers 503 so Twilio
//! uses the number's fallback URL, and live calls (and calls whose webhook was answered before
//! the drain) go on. When they have all ended, or at `lifecycle.drain_deadline_s`, the server
//! stops; at the deadline each live call is first asked to say goodbye
//! ([`Lifecycle::close_calls`]) and ends as `shutdown`. The server's own loop runs this
//! ([`crate::http::serve`]).
//!
//! **Admission.** [`Admission::admit`] hands the webhook a [`Slot`] per call, held until the
//! call ends (in its pending entry, then by the running call): at most `limits.max_calls` at
//! once, at most the business's `max_concurrent_calls`, and at most `limits.max_pending` whose
//! stream has not started (each of those holds a pre-warmed, paid upstream session). A call
//! over a limit is refused with a busy signal.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::config::LimitsConfig;

/// The instance's drain state and its live calls.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    draining: Arc<AtomicBool>,
    closing: Arc<watch::Sender<bool>>,
    calls: TaskTracker,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle::new()
    }
}

impl Lifecycle {
    /// An instance that takes calls.
    pub fn new() -> Lifecycle {
        Lifecycle {
            draining: Arc::new(AtomicBool::new(false)),
            closing: Arc::new(watch::channel(false).0),
            calls: TaskTracker::new(),
        }
    }

    /// Starts the drain: from now on [`Lifecycle::is_draining`] is true.
    pub fn begin_drain(&self) {
        if !self.draining.swap(true, Ordering::SeqCst) {
            tracing::info!(
                live_calls = self.calls.len(),
                "drain started: new calls are refused (503), live calls go on"
            );
        }
    }

    /// Whether the instance is draining (refuses new calls, `/readyz` is 503).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Asks every live call to say goodbye and end (`shutdown`); calls that start after this
    /// are asked at once.
    pub fn close_calls(&self) {
        self.closing.send_replace(true);
    }

    /// What a call watches: it turns `true` when the call must say goodbye and end.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// The tracker of live calls: each call's task runs inside it, so the drain can wait for
    /// them (axum's graceful shutdown does not wait for upgraded WebSockets).
    pub fn calls(&self) -> &TaskTracker {
        &self.calls
    }

    /// Live calls (media streams running).
    pub fn live_calls(&self) -> usize {
        self.calls.len()
    }
}

/// Why a call was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OverLimit {
    /// `limits.max_calls` calls are already held.
    #[error("the instance holds its limit of calls (limits.max_calls)")]
    Instance,
    /// The business holds its `max_concurrent_calls`.
    #[error("the business holds its limit of calls (max_concurrent_calls)")]
    Business,
    /// `limits.max_pending` answered calls wait for their stream.
    #[error("too many answered calls wait for their media stream (limits.max_pending)")]
    Pending,
}

impl OverLimit {
    /// The limit's name, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            OverLimit::Instance => "instance",
            OverLimit::Business => "business",
            OverLimit::Pending => "pending",
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    pending: usize,
    by_business: HashMap<String, usize>,
}

/// The call limits and what holds them.
#[derive(Debug, Clone)]
pub struct Admission {
    limits: LimitsConfig,
    counts: Arc<Mutex<Counts>>,
}

impl Admission {
    /// Limits from `[limits]`.
    pub fn new(limits: LimitsConfig) -> Admission {
        Admission {
            limits,
            counts: Arc::new(Mutex::new(Counts::default())),
        }
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        // The counts stay consistent under a poisoned lock (each change is one statement).
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot for a new call of `business_id` (whose own limit is `business_max`), pending its
    /// stream; or the limit it would pass.
    pub fn admit(&self, business_id: &str, business_max: Option<usize>) -> Result<Slot, OverLimit> {
        let mut counts = self.counts();
        if counts.total >= self.limits.max_calls {
            return Err(OverLimit::Instance);
        }
        if counts.pending >= self.limits.max_pending {
            return Err(OverLimit::Pending);
        }
        let held = counts.by_business.get(business_id).copied().unwrap_or(0);
        if business_max.is_some_and(|max| held >= max) {
            return Err(OverLimit::Business);
        }
        counts.total += 1;
        counts.pending += 1;
        *counts
            .by_business
            .entry(business_id.to_owned())
            .or_default() += 1;
        Ok(Slot {
            admission: self.clone(),
            business_id: business_id.to_owned(),
            pending: true,
        })
    }

    /// A slot for a call whose webhook another instance answered (its stream came here): it is
    /// counted, never refused, since the caller is already on the line.
    pub fn adopt(&self, business_id: &str) -> Slot {
        let mut counts = self.counts();
        counts.total += 1;
        *counts
            .by_business
            .entry(business_id.to_owned())
            .or_default() += 1;
        Slot {
            admission: self.clone(),
            business_id: business_id.to_owned(),
            pending: false,
        }
    }

    /// Calls held: `(all, pending their stream)`.
    pub fn held(&self) -> (usize, usize) {
        let counts = self.counts();
        (counts.total, counts.pending)
    }
}

/// One admitted call's place; given back when dropped.
#[derive(Debug)]
pub struct Slot {
    admission: Admission,
    business_id: String,
    pending: bool,
}

impl Slot {
    /// The call's stream started: it no longer counts against `limits.max_pending`.
    pub fn streamed(&mut self) {
        if self.pending {
            self.pending = false;
            self.admission.counts().pending -= 1;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.admission.counts();
        counts.total = counts.total.saturating_sub(1);
        if self.pending {
            counts.pending = counts.pending.saturating_sub(1);
        }
        if let Some(held) = counts.by_business.get_mut(&self.business_id) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                counts.by_business.remove(&self.business_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_calls: usize, max_pending: usize) -> LimitsConfig {
        LimitsConfig {
            max_calls,
            max_pending,
            ..LimitsConfig::default()
        }
    }

    #[test]
    fn each_limit_refuses_and_a_dropped_slot_frees_its_place() {
        let admission = Admission::new(limits(3, 2));
        let mut a = admission.admit("dental", Some(2)).expect("first");
        let b = admission.admit("dental", Some(2)).expect("second");
        assert_eq!(
            admission.admit("dental", Some(2)).err(),
            Some(OverLimit::Pending)
        );
        a.streamed();
        assert_eq!(
            admission.admit("dental", Some(2)).err(),
            Some(OverLimit::Business)
        );
        let c = admission.admit("bakery", None).expect("another business");
        assert_eq!(admission.held(), (3, 2));
        assert_eq!(
            admission.admit("bakery", None).err(),
            Some(OverLimit::Instance)
        );
        drop(b);
        assert_eq!(admission.held(), (2, 1));
        let _d = admission.admit("dental", Some(2)).expect("room again");
        drop((a, c));
        assert_eq!(admission.held(), (1, 1));
    }

    #[test]
    fn an_adopted_call_is_counted_but_never_refused() {
        let admission = Admission::new(limits(1, 1));
        let _held = admission.admit("dental", None).expect("first");
        let adopted = admission.adopt("dental");
        assert_eq!(admission.held(), (2, 1));
        drop(adopted);
        assert_eq!(admission.held(), (1, 1));
    }
}
