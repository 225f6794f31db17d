//! One finished call's outcome, computed once from its report: the figures the Prometheus
//! metrics, the windowed figures (dashboard, alerts, `/api/v1/stats`) and the stored summary
//! all read, so they cannot mean different things.
//!
//! Definitions (each used everywhere):
//! - *upstream errors* are the upstream `error` events that are not benign
//!   (`response_cancel_not_active`, `conversation_already_has_active_response`,
//!   `input_audio_buffer_commit_empty` are counted apart, as `benign_errors`);
//! - a call *with errors* had an upstream error or ended on a fault
//!   ([`EndReason::is_fault`]: a socket failed or stalled);
//! - *frames* are every audio frame either way, relayed or dropped; *dropped* are those a full
//!   leg queue refused.

use crate::domain::{Direction, EndReason};
use crate::store::CallSummary;
use crate::telemetry::stats::quantile_unsorted;
use crate::telemetry::timeline::CallReport;

/// What a finished call came to.
#[derive(Debug, Clone, PartialEq)]
pub struct CallOutcome {
    /// `CA…`.
    pub call_sid: String,
    /// The business served.
    pub business_id: String,
    /// Inbound or outbound.
    pub direction: Direction,
    /// Why it ended.
    pub end_reason: EndReason,
    /// Stream start to first model audio out, ms.
    pub greeting_ms: Option<f64>,
    /// Each answered turn's latency (end of caller speech to the answer's first audio out),
    /// ms, in order.
    pub turn_latencies_ms: Vec<f64>,
    /// Median of `turn_latencies_ms`.
    pub turn_p50_ms: Option<f64>,
    /// Slowest of `turn_latencies_ms`.
    pub turn_max_ms: Option<f64>,
    /// Caller turns (`speech_stopped`), answered or not.
    pub turns: u64,
    /// Barge-ins (Twilio `clear` sent).
    pub barge_ins: u64,
    /// Audio frames either way, relayed or dropped.
    pub frames: u64,
    /// Audio frames a full leg queue refused, either way.
    pub frames_dropped: u64,
    /// Upstream errors that are not benign.
    pub upstream_errors: u64,
    /// Benign upstream errors.
    pub benign_errors: u64,
    /// An upstream error, or an end on a fault.
    pub with_errors: bool,
    /// Tokens reported in `response.done` usage.
    pub total_tokens: u64,
    /// Model turns the echo monitor looked at.
    pub model_turns: u64,
    /// Parroting and self-echo events.
    pub echo_events: u64,
    /// Caller transcripts the sanitizer scored.
    pub scored: u64,
    /// Caller transcripts it scored block.
    pub guard_blocks: u64,
}

impl CallOutcome {
    /// The outcome of a call that ended without a session (refused at the webhook, no
    /// stream, no upstream): nothing but its end reason; it is "with errors" when that reason
    /// is a failure ([`EndReason::is_failure`]).
    pub fn unserved(
        call_sid: &str,
        business_id: &str,
        direction: Direction,
        end_reason: EndReason,
    ) -> CallOutcome {
        CallOutcome {
            call_sid: call_sid.to_owned(),
            business_id: business_id.to_owned(),
            direction,
            end_reason,
            greeting_ms: None,
            turn_latencies_ms: Vec::new(),
            turn_p50_ms: None,
            turn_max_ms: None,
            turns: 0,
            barge_ins: 0,
            frames: 0,
            frames_dropped: 0,
            upstream_errors: 0,
            benign_errors: 0,
            with_errors: end_reason.is_failure(),
            total_tokens: 0,
            model_turns: 0,
            echo_events: 0,
            scored: 0,
            guard_blocks: 0,
        }
    }

    /// The outcome of the call `report` describes.
    pub fn of(report: &CallReport) -> CallOutcome {
        let c = &report.counters;
        let upstream_errors = c.upstream_errors;
        CallOutcome {
            call_sid: report.call_sid.clone(),
            business_id: report.business_id.clone(),
            direction: report.direction,
            end_reason: report.end_reason,
            greeting_ms: report.greeting_latency_ms,
            turn_p50_ms: quantile_unsorted(&report.turn_latencies_ms, 0.5),
            turn_max_ms: report.turn_latencies_ms.iter().copied().reduce(f64::max),
            turn_latencies_ms: report.turn_latencies_ms.clone(),
            turns: c.turns,
            barge_ins: c.barge_ins,
            frames: c.frames_in + c.frames_out + c.dropped_in + c.dropped_out,
            frames_dropped: c.dropped_in + c.dropped_out,
            upstream_errors,
            benign_errors: c.benign_errors,
            with_errors: upstream_errors > 0 || report.end_reason.is_fault(),
            total_tokens: c.total_tokens,
            model_turns: report.echo.model_turns,
            echo_events: report.echo.echoes + report.echo.self_echoes,
            scored: report.guards.scored,
            guard_blocks: report.guards.blocked,
        }
    }

    /// The summary stored with the call's end (whole ms, counts).
    pub fn summary(&self) -> CallSummary {
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let ms = |v: f64| v.round().max(0.0) as i64;
        CallSummary {
            turns: count(self.turns),
            turn_p50_ms: self.turn_p50_ms.map(ms),
            turn_max_ms: self.turn_max_ms.map(ms),
            barge_ins: count(self.barge_ins),
            frames_dropped: count(self.frames_dropped),
            upstream_errors: count(self.upstream_errors),
            total_tokens: count(self.total_tokens),
            echo_events: count(self.echo_events),
            guard_blocks: count(self.guard_blocks),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::timeline::{CallCounters, Timeline};

    fn report(end_reason: EndReason, benign: u64, errors: u64) -> CallReport {
        CallReport {
            call_sid: "CA1".into(),
            stream_sid: "MZ1".into(),
            business_id: "dental".into(),
            direction: Direction::Inbound,
            greeting_latency_ms: Some(170.4),
            turn_latencies_ms: vec![301.0, 450.6, 299.0],
            turn_heard_ms: Vec::new(),
            end_reason,
            counters: CallCounters {
                frames_in: 100,
                frames_out: 40,
                dropped_out: 2,
                benign_errors: benign,
                upstream_errors: errors,
                turns: 4,
                ..CallCounters::default()
            },
            guards: Default::default(),
            echo: Default::default(),
            timeline: Timeline::new(std::time::Instant::now()),
        }
    }

    #[test]
    fn benign_upstream_errors_are_not_errors_anywhere() {
        let outcome = CallOutcome::of(&report(EndReason::Stop, 3, 0));
        assert!(!outcome.with_errors);
        assert_eq!(outcome.summary().upstream_errors, 0);
        assert_eq!(outcome.benign_errors, 3);
        let outcome = CallOutcome::of(&report(EndReason::Stop, 3, 1));
        assert!(outcome.with_errors);
        assert_eq!(outcome.summary().upstream_errors, 1);
    }

    #[test]
    fn a_call_that_ended_on_a_fault_is_a_call_with_errors() {
        for reason in EndReason::ALL {
            let outcome = CallOutcome::of(&report(*reason, 0, 0));
            assert_eq!(outcome.with_errors, reason.is_fault(), "{reason}");
        }
        assert!(CallOutcome::of(&report(EndReason::TwilioStalled, 0, 0)).with_errors);
        assert!(!CallOutcome::of(&report(EndReason::Stop, 0, 0)).with_errors);
    }

    #[test]
    fn the_summary_rounds_latencies_and_counts_frames_both_ways() {
        let outcome = CallOutcome::of(&report(EndReason::Stop, 0, 0));
        let summary = outcome.summary();
        assert_eq!(summary.turn_p50_ms, Some(301));
        assert_eq!(summary.turn_max_ms, Some(451));
        assert_eq!(summary.frames_dropped, 2);
        assert_eq!(outcome.frames, 142);
        assert_eq!(summary.turns, 4);
    }
}
