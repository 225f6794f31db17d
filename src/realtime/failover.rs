//! The ordered list of upstreams a call may use (for example OpenAI, then Azure OpenAI), each
//! behind a circuit breaker, so that a dead provider costs new calls no connect timeout.
//!
//! A breaker opens after `failures` consecutive failed dials of its upstream; while open, the
//! upstream is skipped. Once `cooldown` has passed, one dial probes it (half-open): success
//! closes the breaker, failure opens it for another cool-down. When every breaker is open, a
//! dial tries the upstream whose cool-down ends first anyway rather than none; a new call's
//! webhook instead sends the call to its business's fallback at once
//! ([`Upstreams::none_available`]).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::realtime::{UpstreamError, UpstreamSettings, UpstreamSocket};

/// An upstream session opened through the list, and which upstream answered.
#[derive(Debug)]
pub struct Dialed {
    /// The session's socket (its first `session.update` sent).
    pub socket: UpstreamSocket,
    /// The answering upstream's configured name.
    pub upstream: String,
    /// Its place in the list: 0 is the first; more means the dial failed over.
    pub position: usize,
}

impl Dialed {
    /// A session from the first upstream, for callers that dial one upstream directly.
    pub fn first(socket: UpstreamSocket, upstream: &str) -> Dialed {
        Dialed {
            socket,
            upstream: upstream.to_string(),
            position: 0,
        }
    }
}

/// One upstream's breaker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Breaker {
    /// Failed dials in a row.
    failures: u32,
    /// While set and in the future, the upstream is skipped.
    open_until: Option<Instant>,
    /// A half-open probe is in flight (other dials skip the upstream meanwhile).
    probing: bool,
}

/// An upstream and its breaker.
#[derive(Debug)]
pub struct Target {
    /// Its name in logs and metrics.
    pub name: String,
    /// How to dial it.
    pub settings: UpstreamSettings,
    breaker: Mutex<Breaker>,
}

/// The upstreams, in the order they are tried.
#[derive(Debug)]
pub struct Upstreams {
    targets: Vec<Target>,
    failures: u32,
    cooldown: Duration,
}

/// What [`Upstreams::plan`] says of one upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Dial it (its breaker is closed).
    Dial,
    /// Dial it as the probe of an open breaker whose cool-down is over.
    Probe,
    /// Skip it (its breaker is open).
    Skip,
}

impl Upstreams {
    /// `targets` in order (at least one); a breaker opens after `failures` (at least 1)
    /// consecutive failures and stays open for `cooldown`.
    pub fn new(
        targets: Vec<(String, UpstreamSettings)>,
        failures: u32,
        cooldown: Duration,
    ) -> Upstreams {
        Upstreams {
            targets: targets
                .into_iter()
                .map(|(name, settings)| Target {
                    name,
                    settings,
                    breaker: Mutex::new(Breaker::default()),
                })
                .collect(),
            failures: failures.max(1),
            cooldown,
        }
    }

    /// The upstreams in order.
    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// Upstream `i`'s breaker. `i` is always an index of [`Upstreams::targets`] (every caller
    /// takes it from [`Upstreams::plan`] or a range over the targets); nothing from outside
    /// the process chooses it.
    fn breaker(&self, i: usize) -> std::sync::MutexGuard<'_, Breaker> {
        // A panic elsewhere must not take the breakers with it.
        self.targets[i]
            .breaker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Whether upstream `i` may be dialled at `now`; a probe is claimed (only one at a time).
    pub fn admit(&self, i: usize, now: Instant) -> Admit {
        let mut b = self.breaker(i);
        match b.open_until {
            None => Admit::Dial,
            Some(until) if now >= until && !b.probing => {
                b.probing = true;
                Admit::Probe
            }
            Some(_) => Admit::Skip,
        }
    }

    /// Upstream `i` answered: its breaker closes.
    pub fn succeeded(&self, i: usize) {
        *self.breaker(i) = Breaker::default();
    }

    /// Upstream `i` failed at `now`. Returns true when its breaker (re)opened.
    pub fn failed(&self, i: usize, now: Instant) -> bool {
        let mut b = self.breaker(i);
        b.failures = b.failures.saturating_add(1);
        let reopen = b.probing || b.failures >= self.failures;
        b.probing = false;
        if reopen {
            b.open_until = Some(now + self.cooldown);
        }
        reopen
    }

    /// Whether upstream `i`'s breaker is open (skipping it) at `now`.
    pub fn is_open(&self, i: usize, now: Instant) -> bool {
        self.breaker(i).open_until.is_some_and(|until| now < until)
    }

    /// Whether no upstream can be had at `now`: every breaker is open and none is due for its
    /// probe. A call then goes straight to its fallback instead of waiting out a connect
    /// timeout; once a cool-down ends, the next call probes again.
    pub fn none_available(&self, now: Instant) -> bool {
        !self.targets.is_empty() && (0..self.targets.len()).all(|i| self.is_open(i, now))
    }

    /// The order to dial in at `now`: every upstream its breaker admits, in order; when it
    /// admits none, the one whose cool-down ends first, so a call is never refused untried.
    pub fn plan(&self, now: Instant) -> Vec<usize> {
        let admitted: Vec<usize> = (0..self.targets.len())
            .filter(|&i| self.admit(i, now) != Admit::Skip)
            .collect();
        if !admitted.is_empty() {
            return admitted;
        }
        (0..self.targets.len())
            .min_by_key(|&i| self.breaker(i).open_until)
            .into_iter()
            .collect()
    }
}

/// Every upstream tried failed; the last error, for the log.
pub fn none_answered(last: Option<UpstreamError>) -> UpstreamError {
    last.unwrap_or(UpstreamError::Request {
        url: "(no upstream configured)".into(),
        reason: "the upstream list is empty".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::realtime::Provider;

    fn settings(url: &str) -> UpstreamSettings {
        UpstreamSettings {
            url: url.into(),
            model: "m".into(),
            provider: Provider::Openai,
            api_key: None,
            connect_timeout_ms: 100,
            send_buffer_bytes: 0,
        }
    }

    fn two(failures: u32) -> Upstreams {
        Upstreams::new(
            vec![
                ("a".into(), settings("ws://a")),
                ("b".into(), settings("ws://b")),
            ],
            failures,
            Duration::from_secs(30),
        )
    }

    #[test]
    fn a_breaker_opens_after_consecutive_failures_and_the_next_is_tried_first() {
        let u = two(2);
        let t0 = Instant::now();
        assert_eq!(u.plan(t0), vec![0, 1]);
        assert!(!u.failed(0, t0));
        assert_eq!(u.plan(t0), vec![0, 1], "one failure is not enough");
        assert!(u.failed(0, t0));
        assert!(u.is_open(0, t0));
        assert_eq!(u.plan(t0 + Duration::from_secs(1)), vec![1]);
        u.succeeded(1);
        assert_eq!(u.plan(t0 + Duration::from_secs(2)), vec![1]);
    }

    #[test]
    fn after_the_cooldown_one_probe_goes_and_its_result_decides() {
        let u = two(1);
        let t0 = Instant::now();
        u.failed(0, t0);
        let later = t0 + Duration::from_secs(31);
        assert_eq!(u.admit(0, later), Admit::Probe);
        assert_eq!(u.admit(0, later), Admit::Skip, "one probe at a time");
        assert!(u.failed(0, later), "a failed probe reopens at once");
        assert!(u.is_open(0, later + Duration::from_secs(1)));
        let much_later = later + Duration::from_secs(31);
        assert_eq!(u.admit(0, much_later), Admit::Probe);
        u.succeeded(0);
        assert_eq!(u.admit(0, much_later), Admit::Dial);
        assert!(!u.is_open(0, much_later));
    }

    #[test]
    fn with_every_breaker_open_the_soonest_to_close_is_tried() {
        let u = two(1);
        let t0 = Instant::now();
        u.failed(1, t0);
        u.failed(0, t0 + Duration::from_secs(1));
        assert_eq!(u.plan(t0 + Duration::from_secs(2)), vec![1]);
    }

    #[test]
    fn none_is_available_only_while_every_breaker_is_open_and_none_is_due_for_a_probe() {
        let ups = two(1);
        let t0 = Instant::now();
        assert!(!ups.none_available(t0));
        ups.failed(0, t0);
        assert!(!ups.none_available(t0), "b is still closed");
        ups.failed(1, t0);
        assert!(ups.none_available(t0 + Duration::from_secs(1)));
        // A cool-down over: the next call probes.
        assert!(!ups.none_available(t0 + Duration::from_secs(31)));
    }
}
