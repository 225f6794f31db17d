//! How each arm of a prompt experiment did, and whether the difference is real.
//!
//! Computed from the finished calls the experiment assigned (`calls.experiment_id`, with the
//! summary each call stored when it ended). Per arm: calls, greeting latency p50 and p95, and
//! per call the caller turns, echo events and guard blocks.
//!
//! For each figure the difference is variant minus control, with a 95% confidence interval:
//!
//! - **per-call means** (turns, echo events, guard blocks): Welch's t-interval (two groups of
//!   unequal size and variance; Welch–Satterthwaite degrees of freedom);
//! - **greeting p50 and p95**: a percentile bootstrap, 2,000 resamples of each arm, seeded from
//!   the experiment id so the same calls always give the same interval.
//!
//! `significant` says the interval leaves out 0. An interval needs at least 2 calls in each arm
//! (with a greeting, for the greeting figures); with fewer it is `null` and `note` says why.
//! Intervals from a handful of calls are honest but wide; no correction is made for looking at
//! several figures at once, or for looking again as calls come in.

use sha2::{Digest, Sha256};

use crate::store::{Experiment, ExperimentCall};
use crate::telemetry::stats::{
    Interval, bootstrap_quantile_interval, mean, quantile_unsorted, welch_interval,
};

/// Confidence level of every interval.
pub const CONFIDENCE_LEVEL: f64 = 0.95;

/// Bootstrap resamples per greeting figure.
pub const BOOTSTRAP_RESAMPLES: usize = 2000;

/// Calls an arm needs before an interval is given.
pub const MIN_CALLS_FOR_INTERVAL: usize = 2;

/// What the results say about the test used; served with them.
pub const METHOD: &str = "95% confidence intervals of variant minus control: Welch's t-interval \
    for per-call means, percentile bootstrap (2000 resamples, seeded by the experiment id) for \
    greeting latency quantiles; significant when the interval excludes 0";

/// The figures of one arm.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct ArmResult {
    /// `"control"` or `"variant"`.
    pub arm: String,
    /// The prompt version the arm runs.
    pub version_id: String,
    /// Finished calls assigned to the arm.
    pub calls: usize,
    /// Median greeting latency, ms, over calls whose model spoke.
    pub greeting_p50_ms: Option<f64>,
    /// 95th percentile greeting latency, ms.
    pub greeting_p95_ms: Option<f64>,
    /// Mean caller turns per call.
    pub turns_per_call: Option<f64>,
    /// Mean echo events per call (parroting and self-echo).
    pub echo_events_per_call: Option<f64>,
    /// Mean guard blocks per call.
    pub guard_blocks_per_call: Option<f64>,
}

/// The difference in one figure, variant minus control.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Difference {
    /// Which figure: `greeting_p50_ms`, `greeting_p95_ms`, `turns_per_call`,
    /// `echo_events_per_call` or `guard_blocks_per_call`.
    pub figure: &'static str,
    /// Variant minus control; `None` when an arm has no value.
    pub difference: Option<f64>,
    /// The 95% confidence interval of the difference; `None` with too few calls.
    pub interval: Option<Interval>,
    /// `welch_t` or `bootstrap_percentile`.
    pub method: &'static str,
    /// The interval leaves out 0.
    pub significant: bool,
    /// Why there is no interval, when there is none.
    pub note: Option<String>,
}

/// An experiment's results.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct ExperimentResults {
    /// The experiment id.
    pub experiment_id: String,
    /// `draft`, `running` or `stopped`.
    pub status: String,
    /// Share of calls sent to the variant, percent.
    pub traffic_percent: i64,
    /// Confidence level of the intervals (0.95).
    pub confidence_level: f64,
    /// The tests used.
    pub method: &'static str,
    /// The control arm.
    pub control: ArmResult,
    /// The variant arm.
    pub variant: ArmResult,
    /// One entry per figure.
    pub differences: Vec<Difference>,
}

/// The values of one arm, one per call.
struct Samples {
    greeting_ms: Vec<f64>,
    turns: Vec<f64>,
    echo_events: Vec<f64>,
    guard_blocks: Vec<f64>,
}

impl Samples {
    fn of(calls: &[ExperimentCall], arm: &str) -> Samples {
        let calls: Vec<&ExperimentCall> = calls.iter().filter(|c| c.variant == arm).collect();
        let per_call = |f: fn(&ExperimentCall) -> i64| calls.iter().map(|c| f(c) as f64).collect();
        Samples {
            greeting_ms: calls
                .iter()
                .filter_map(|c| c.greeting_latency_ms.map(|ms| ms as f64))
                .collect(),
            turns: per_call(|c| c.turns),
            echo_events: per_call(|c| c.echo_events),
            guard_blocks: per_call(|c| c.guard_blocks),
        }
    }

    fn result(&self, arm: &str, version_id: &str) -> ArmResult {
        ArmResult {
            arm: arm.to_string(),
            version_id: version_id.to_string(),
            calls: self.turns.len(),
            greeting_p50_ms: quantile_unsorted(&self.greeting_ms, 0.5),
            greeting_p95_ms: quantile_unsorted(&self.greeting_ms, 0.95),
            turns_per_call: mean(&self.turns),
            echo_events_per_call: mean(&self.echo_events),
            guard_blocks_per_call: mean(&self.guard_blocks),
        }
    }
}

/// The seed of an experiment's bootstrap: the first 8 bytes of SHA-256 of its id.
fn seed(experiment_id: &str) -> u64 {
    let digest = Sha256::digest(experiment_id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// One figure's difference, with `interval` computed only when both arms have enough values.
fn difference(
    figure: &'static str,
    method: &'static str,
    control: (&[f64], Option<f64>),
    variant: (&[f64], Option<f64>),
    interval: impl FnOnce(&[f64], &[f64]) -> Option<Interval>,
) -> Difference {
    let enough =
        control.0.len() >= MIN_CALLS_FOR_INTERVAL && variant.0.len() >= MIN_CALLS_FOR_INTERVAL;
    let interval = if enough {
        interval(control.0, variant.0)
    } else {
        None
    };
    Difference {
        figure,
        difference: variant.1.zip(control.1).map(|(v, c)| v - c),
        significant: interval.is_some_and(|i| i.excludes_zero()),
        note: interval.is_none().then(|| {
            format!(
                "needs at least {MIN_CALLS_FOR_INTERVAL} calls with a value in each arm \
                 (control {}, variant {})",
                control.0.len(),
                variant.0.len()
            )
        }),
        interval,
        method,
    }
}

/// The results of `experiment` from its finished calls (any order; calls of other experiments
/// or arms are ignored).
pub fn results(experiment: &Experiment, calls: &[ExperimentCall]) -> ExperimentResults {
    let control = Samples::of(calls, "control");
    let variant = Samples::of(calls, "variant");
    let control_result = control.result("control", &experiment.control_version_id);
    let variant_result = variant.result("variant", &experiment.variant_version_id);
    let seed = seed(&experiment.id);
    let greeting = |figure, q, c: Option<f64>, v: Option<f64>| {
        difference(
            figure,
            "bootstrap_percentile",
            (&control.greeting_ms, c),
            (&variant.greeting_ms, v),
            |a, b| {
                bootstrap_quantile_interval(a, b, q, CONFIDENCE_LEVEL, BOOTSTRAP_RESAMPLES, seed)
            },
        )
    };
    let per_call = |figure, a: &[f64], b: &[f64], c, v| {
        difference(figure, "welch_t", (a, c), (b, v), |a, b| {
            welch_interval(a, b, CONFIDENCE_LEVEL)
        })
    };
    let differences = vec![
        greeting(
            "greeting_p50_ms",
            0.5,
            control_result.greeting_p50_ms,
            variant_result.greeting_p50_ms,
        ),
        greeting(
            "greeting_p95_ms",
            0.95,
            control_result.greeting_p95_ms,
            variant_result.greeting_p95_ms,
        ),
        per_call(
            "turns_per_call",
            &control.turns,
            &variant.turns,
            control_result.turns_per_call,
            variant_result.turns_per_call,
        ),
        per_call(
            "echo_events_per_call",
            &control.echo_events,
            &variant.echo_events,
            control_result.echo_events_per_call,
            variant_result.echo_events_per_call,
        ),
        per_call(
            "guard_blocks_per_call",
            &control.guard_blocks,
            &variant.guard_blocks,
            control_result.guard_blocks_per_call,
            variant_result.guard_blocks_per_call,
        ),
    ];
    ExperimentResults {
        experiment_id: experiment.id.clone(),
        status: experiment.status.as_str().to_string(),
        traffic_percent: experiment.traffic_percent,
        confidence_level: CONFIDENCE_LEVEL,
        method: METHOD,
        control: control_result,
        variant: variant_result,
        differences,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Direction;
    use crate::store::ExperimentStatus;

    fn experiment() -> Experiment {
        Experiment {
            id: "exp_test".into(),
            business_id: "dental".into(),
            direction: Direction::Inbound,
            control_version_id: "pv_a".into(),
            variant_version_id: "pv_b".into(),
            traffic_percent: 50,
            status: ExperimentStatus::Running,
            started_at_ms: Some(1),
            ended_at_ms: None,
            created_at_ms: 0,
        }
    }

    fn call(n: usize, arm: &str, greeting: i64, turns: i64, blocks: i64) -> ExperimentCall {
        ExperimentCall {
            call_sid: format!("CA{n}"),
            variant: arm.into(),
            greeting_latency_ms: Some(greeting),
            turns,
            echo_events: 0,
            guard_blocks: blocks,
        }
    }

    fn figure<'a>(results: &'a ExperimentResults, name: &str) -> &'a Difference {
        results
            .differences
            .iter()
            .find(|d| d.figure == name)
            .expect("figure")
    }

    #[test]
    fn a_slower_variant_shows_a_significant_greeting_difference() {
        let mut calls = Vec::new();
        for n in 0..60 {
            calls.push(call(n, "control", 300 + (n as i64 % 7), 4, 0));
            calls.push(call(100 + n, "variant", 360 + (n as i64 % 7), 4, 0));
        }
        let r = results(&experiment(), &calls);
        assert_eq!((r.control.calls, r.variant.calls), (60, 60));
        assert_eq!(r.control.version_id, "pv_a");
        let p50 = figure(&r, "greeting_p50_ms");
        assert_eq!(p50.difference, Some(60.0));
        assert!(p50.significant, "{p50:?}");
        let interval = p50.interval.expect("interval");
        assert!(
            interval.low <= 60.0 && 60.0 <= interval.high,
            "{interval:?}"
        );
        // Turns are the same in both arms: a zero-width interval at 0, not significant.
        let turns = figure(&r, "turns_per_call");
        assert_eq!(turns.difference, Some(0.0));
        assert!(!turns.significant, "{turns:?}");
        assert_eq!(turns.method, "welch_t");
        // Reproducible.
        assert_eq!(results(&experiment(), &calls), r);
    }

    #[test]
    fn guard_blocks_per_call_compare_with_welch() {
        let mut calls = Vec::new();
        for n in 0..40 {
            calls.push(call(n, "control", 300, 3, i64::from(n % 10 == 0)));
            calls.push(call(100 + n, "variant", 300, 3, i64::from(n % 2 == 0)));
        }
        let r = results(&experiment(), &calls);
        assert_eq!(r.control.guard_blocks_per_call, Some(0.1));
        assert_eq!(r.variant.guard_blocks_per_call, Some(0.5));
        let blocks = figure(&r, "guard_blocks_per_call");
        assert!(blocks.significant, "{blocks:?}");
        assert!((blocks.difference.unwrap() - 0.4).abs() < 1e-12);
    }

    #[test]
    fn too_few_calls_give_no_interval_and_say_why() {
        let calls = vec![call(1, "control", 300, 2, 0), call(2, "variant", 310, 2, 0)];
        let r = results(&experiment(), &calls);
        for d in &r.differences {
            assert_eq!(d.interval, None, "{d:?}");
            assert!(!d.significant);
            assert!(
                d.note.as_deref().is_some_and(|n| n.contains("at least 2")),
                "{d:?}"
            );
        }
        assert_eq!(figure(&r, "greeting_p50_ms").difference, Some(10.0));
        let empty = results(&experiment(), &[]);
        assert_eq!(empty.control.calls, 0);
        assert_eq!(empty.control.greeting_p50_ms, None);
        assert_eq!(figure(&empty, "turns_per_call").difference, None);
    }
}
