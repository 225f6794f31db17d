//! What the dashboard and the alerts read: live calls, and per business the figures of the
//! calls that ended in the last 5, 60 and 1,440 minutes.
//!
//! Each finished call is added to a bucket of its minute. Minute buckets are kept for an hour;
//! older ones are merged into quarter-hour buckets, kept for a day. So the 5- and 60-minute
//! windows are exact to the minute and the 1,440-minute window to the quarter hour. Latencies
//! go into hdrhistograms (µs, 1 µs to 60 s, 2 significant digits: about 10 KiB each), so
//! percentiles are within 1%. A business with calls in every minute holds about 3 MiB.
//!
//! The figures are this instance's own; several instances each report their share (Prometheus
//! and the Grafana dashboard sum them).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use hdrhistogram::Histogram;

use super::outcome::CallOutcome;

/// The windows the dashboard shows, minutes.
pub const WINDOWS_MINUTES: [i64; 3] = [5, 60, 1440];

/// Minute buckets kept before they are merged into quarter hours.
const MINUTE_BUCKETS: usize = 60;

/// Quarter-hour buckets kept (a day).
const QUARTER_BUCKETS: usize = 96;

/// Finished calls kept for "slowest recent calls".
const RECENT_CALLS: usize = 200;

/// Slowest calls listed.
const SLOWEST_LISTED: usize = 10;

/// Highest latency a histogram holds, µs (60 s); longer values are clamped to it.
const MAX_LATENCY_US: u64 = 60_000_000;

/// An empty latency histogram.
fn latency_histogram() -> Histogram<u32> {
    // Constant bounds that hdrhistogram accepts (1 ≤ low, 2·low ≤ high, 2 significant digits).
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 2).expect("constant histogram bounds are valid")
}

fn record_ms(histogram: &mut Histogram<u32>, ms: f64) {
    let us = (ms * 1000.0).round().clamp(1.0, MAX_LATENCY_US as f64) as u64;
    histogram.saturating_record(us);
}

/// One bucket of finished calls.
#[derive(Debug, Clone)]
struct Bucket {
    /// Epoch minute the bucket starts at.
    start_minute: i64,
    greeting: Histogram<u32>,
    turn: Histogram<u32>,
    calls: u64,
    calls_with_errors: u64,
    calls_failed: u64,
    frames: u64,
    frames_dropped: u64,
    model_turns: u64,
    echo_events: u64,
    scored: u64,
    blocked: u64,
}

impl Bucket {
    fn new(start_minute: i64) -> Bucket {
        Bucket {
            start_minute,
            greeting: latency_histogram(),
            turn: latency_histogram(),
            calls: 0,
            calls_with_errors: 0,
            calls_failed: 0,
            frames: 0,
            frames_dropped: 0,
            model_turns: 0,
            echo_events: 0,
            scored: 0,
            blocked: 0,
        }
    }

    fn add_call(&mut self, outcome: &CallOutcome) {
        if let Some(ms) = outcome.greeting_ms {
            record_ms(&mut self.greeting, ms);
        }
        for ms in &outcome.turn_latencies_ms {
            record_ms(&mut self.turn, *ms);
        }
        self.calls += 1;
        if outcome.with_errors {
            self.calls_with_errors += 1;
        }
        if outcome.end_reason.is_failure() {
            self.calls_failed += 1;
        }
        self.frames += outcome.frames;
        self.frames_dropped += outcome.frames_dropped;
        self.model_turns += outcome.model_turns;
        self.echo_events += outcome.echo_events;
        self.scored += outcome.scored;
        self.blocked += outcome.guard_blocks;
    }

    fn merge(&mut self, other: &Bucket) {
        let _ = self.greeting.add(&other.greeting);
        let _ = self.turn.add(&other.turn);
        self.calls += other.calls;
        self.calls_with_errors += other.calls_with_errors;
        self.calls_failed += other.calls_failed;
        self.frames += other.frames;
        self.frames_dropped += other.frames_dropped;
        self.model_turns += other.model_turns;
        self.echo_events += other.echo_events;
        self.scored += other.scored;
        self.blocked += other.blocked;
    }
}

/// One business's buckets, newest last.
#[derive(Debug, Default)]
struct BusinessBuckets {
    minutes: VecDeque<Bucket>,
    quarters: VecDeque<Bucket>,
}

impl BusinessBuckets {
    fn add(&mut self, minute: i64, outcome: &CallOutcome) {
        match self.minutes.back_mut() {
            Some(last) if last.start_minute == minute => last.add_call(outcome),
            _ => {
                let mut bucket = Bucket::new(minute);
                bucket.add_call(outcome);
                self.minutes.push_back(bucket);
            }
        }
        self.age(minute);
    }

    /// Moves minute buckets older than an hour into quarter hours, drops what is over a day old.
    fn age(&mut self, now_minute: i64) {
        while let Some(first) = self.minutes.front() {
            if first.start_minute > now_minute - MINUTE_BUCKETS as i64
                && self.minutes.len() <= MINUTE_BUCKETS
            {
                break;
            }
            let Some(old) = self.minutes.pop_front() else {
                break;
            };
            let quarter = old.start_minute - old.start_minute.rem_euclid(15);
            match self.quarters.back_mut() {
                Some(q) if q.start_minute == quarter => q.merge(&old),
                _ => {
                    let mut q = Bucket::new(quarter);
                    q.merge(&old);
                    self.quarters.push_back(q);
                }
            }
        }
        while self.quarters.len() > QUARTER_BUCKETS
            || self
                .quarters
                .front()
                .is_some_and(|q| q.start_minute <= now_minute - 1440)
        {
            self.quarters.pop_front();
        }
    }

    /// Every call of the last `minutes` minutes (to `now_minute` included).
    fn window(&self, now_minute: i64, minutes: i64) -> Bucket {
        let since = now_minute - minutes;
        let mut sum = Bucket::new(since + 1);
        for bucket in self.quarters.iter().chain(self.minutes.iter()) {
            if bucket.start_minute > since && bucket.start_minute <= now_minute {
                sum.merge(bucket);
            }
        }
        sum
    }
}

/// Latency percentiles, ms; `None` without samples.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Percentiles {
    /// Median.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Samples.
    pub count: u64,
}

impl Percentiles {
    fn of(h: &Histogram<u32>) -> Percentiles {
        // The middle of the value's bucket, not its top: within half a bucket (0.5%) either way.
        let at = |q: f64| {
            (!h.is_empty()).then(|| h.median_equivalent(h.value_at_quantile(q)) as f64 / 1000.0)
        };
        Percentiles {
            p50: at(0.5),
            p95: at(0.95),
            p99: at(0.99),
            count: h.len(),
        }
    }
}

/// The figures of one window.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct WindowFigures {
    /// Window length, minutes.
    pub minutes: i64,
    /// Calls that ended in the window.
    pub calls: u64,
    /// Greeting latency (stream start to first audio out).
    pub greeting_ms: Percentiles,
    /// Turn latency (end of caller speech to the answer's first audio out).
    pub turn_ms: Percentiles,
    /// Share of calls with an upstream error or an error end, 0–1.
    pub error_rate: f64,
    /// Share of media frames dropped, 0–1.
    pub drop_rate: f64,
    /// Frames dropped.
    pub frames_dropped: u64,
    /// Echo events per model turn, 0–1.
    pub echo_rate: f64,
    /// Guard blocks per scored caller transcript, 0–1.
    pub guard_block_rate: f64,
    /// Failed calls ([`EndReason::is_failure`](crate::domain::EndReason::is_failure)) per
    /// call, 0–1.
    pub failure_rate: f64,
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

impl WindowFigures {
    fn of(minutes: i64, b: &Bucket) -> WindowFigures {
        WindowFigures {
            minutes,
            calls: b.calls,
            greeting_ms: Percentiles::of(&b.greeting),
            turn_ms: Percentiles::of(&b.turn),
            error_rate: ratio(b.calls_with_errors, b.calls),
            drop_rate: ratio(b.frames_dropped, b.frames),
            frames_dropped: b.frames_dropped,
            echo_rate: ratio(b.echo_events, b.model_turns),
            guard_block_rate: ratio(b.blocked, b.scored),
            failure_rate: ratio(b.calls_failed, b.calls),
        }
    }
}

/// One business's windows.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct BusinessFigures {
    /// The business id.
    pub business_id: String,
    /// One entry per window of [`WINDOWS_MINUTES`].
    pub windows: Vec<WindowFigures>,
}

/// A call whose media stream is open.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct LiveCall {
    /// Twilio CallSid.
    pub call_sid: String,
    /// The business.
    pub business_id: String,
    /// `inbound` or `outbound`.
    pub direction: String,
    /// When the stream started, epoch ms.
    pub started_at_ms: i64,
}

/// A finished call, for the slowest-calls list.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct RecentCall {
    /// Twilio CallSid.
    pub call_sid: String,
    /// The business.
    pub business_id: String,
    /// When it ended, epoch ms.
    pub ended_at_ms: i64,
    /// Greeting latency, ms.
    pub greeting_ms: Option<f64>,
    /// Slowest turn latency, ms.
    pub turn_max_ms: Option<f64>,
    /// Why it ended.
    pub end_reason: crate::domain::EndReason,
}

impl RecentCall {
    /// What made the call slow: its slowest turn, or its greeting.
    fn worst_ms(&self) -> f64 {
        self.turn_max_ms
            .unwrap_or(0.0)
            .max(self.greeting_ms.unwrap_or(0.0))
    }
}

#[derive(Debug, Default)]
struct Inner {
    businesses: HashMap<String, BusinessBuckets>,
    live: HashMap<String, LiveCall>,
    recent: VecDeque<RecentCall>,
}

/// Live calls and windowed figures, shared by the instance's calls (one short lock per call
/// start and end) and read by `/api/v1/stats` and the alerts.
#[derive(Debug, Default)]
pub struct CallStats {
    inner: Mutex<Inner>,
}

impl CallStats {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A call's media stream opened.
    pub fn call_started(&self, call: LiveCall) {
        self.lock().live.insert(call.call_sid.clone(), call);
    }

    /// A call ended at `now_ms` (epoch ms): it leaves the live list and counts in its minute.
    pub fn call_ended(&self, outcome: &CallOutcome, now_ms: i64) {
        let minute = now_ms.div_euclid(60_000);
        let mut inner = self.lock();
        inner.live.remove(&outcome.call_sid);
        inner
            .businesses
            .entry(outcome.business_id.clone())
            .or_default()
            .add(minute, outcome);
        inner.recent.push_back(RecentCall {
            call_sid: outcome.call_sid.clone(),
            business_id: outcome.business_id.clone(),
            ended_at_ms: now_ms,
            greeting_ms: outcome.greeting_ms,
            turn_max_ms: outcome.turn_max_ms,
            end_reason: outcome.end_reason,
        });
        while inner.recent.len() > RECENT_CALLS {
            inner.recent.pop_front();
        }
    }

    /// Calls whose stream is open, oldest first.
    pub fn live_calls(&self) -> Vec<LiveCall> {
        let mut live: Vec<LiveCall> = self.lock().live.values().cloned().collect();
        live.sort_by(|a, b| (a.started_at_ms, &a.call_sid).cmp(&(b.started_at_ms, &b.call_sid)));
        live
    }

    /// Per business (sorted by id), the figures of each window of [`WINDOWS_MINUTES`] at
    /// `now_ms`.
    pub fn businesses(&self, now_ms: i64) -> Vec<BusinessFigures> {
        let minute = now_ms.div_euclid(60_000);
        let inner = self.lock();
        let mut out: Vec<BusinessFigures> = inner
            .businesses
            .iter()
            .map(|(id, buckets)| BusinessFigures {
                business_id: id.clone(),
                windows: WINDOWS_MINUTES
                    .iter()
                    .map(|&m| WindowFigures::of(m, &buckets.window(minute, m)))
                    .collect(),
            })
            .collect();
        out.sort_by(|a, b| a.business_id.cmp(&b.business_id));
        out
    }

    /// Every business's calls of the last `minutes` at `now_ms`, together.
    pub fn overall(&self, now_ms: i64, minutes: i64) -> WindowFigures {
        let minute = now_ms.div_euclid(60_000);
        let inner = self.lock();
        let mut sum = Bucket::new(minute - minutes + 1);
        for buckets in inner.businesses.values() {
            sum.merge(&buckets.window(minute, minutes));
        }
        WindowFigures::of(minutes, &sum)
    }

    /// The slowest of the last 200 finished calls (by slowest turn or greeting), slowest first.
    pub fn slowest_calls(&self) -> Vec<RecentCall> {
        let mut recent: Vec<RecentCall> = self.lock().recent.iter().cloned().collect();
        recent.sort_by(|a, b| b.worst_ms().total_cmp(&a.worst_ms()));
        recent.truncate(SLOWEST_LISTED);
        recent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Direction;
    use crate::telemetry::timeline::{CallCounters, CallReport, Timeline};

    fn outcome(sid: &str, business: &str, greeting: f64, turns: &[f64]) -> CallOutcome {
        CallOutcome::of(&report(sid, business, greeting, turns))
    }

    fn report(sid: &str, business: &str, greeting: f64, turns: &[f64]) -> CallReport {
        CallReport {
            call_sid: sid.into(),
            stream_sid: "MZ1".into(),
            business_id: business.into(),
            direction: Direction::Inbound,
            greeting_latency_ms: Some(greeting),
            turn_latencies_ms: turns.to_vec(),
            turn_heard_ms: Vec::new(),
            end_reason: crate::domain::EndReason::Stop,
            counters: CallCounters {
                frames_in: 100,
                frames_out: 50,
                ..CallCounters::default()
            },
            guards: Default::default(),
            echo: Default::default(),
            timeline: Timeline::new(std::time::Instant::now()),
        }
    }

    const MINUTE: i64 = 60_000;
    const T0: i64 = 1_796_000_000_000 - 1_796_000_000_000 % (60 * MINUTE);

    #[test]
    fn windows_hold_the_calls_of_their_minutes() {
        let stats = CallStats::default();
        // One call now, one 30 minutes ago, one 10 hours ago, one 2 days ago.
        for (n, ago_min, greeting) in [
            (1, 0, 300.0),
            (2, 30, 400.0),
            (3, 600, 500.0),
            (4, 2880, 900.0),
        ] {
            let at = T0 - ago_min * MINUTE;
            stats.call_ended(
                &outcome(&format!("CA{n}"), "dental", greeting, &[250.0]),
                at,
            );
        }
        let now = T0 + 10_000;
        let figures = stats.businesses(now);
        assert_eq!(figures.len(), 1);
        let calls: Vec<u64> = figures[0].windows.iter().map(|w| w.calls).collect();
        // The 2-day-old call was dropped on arrival; the window counts are 1, 2, 3.
        assert_eq!(calls, [1, 2, 3]);
        let five = &figures[0].windows[0];
        let p50 = five.greeting_ms.p50.expect("p50");
        assert!((p50 - 300.0).abs() <= 3.0, "{p50}");
        let day = &figures[0].windows[2];
        let p99 = day.greeting_ms.p99.expect("p99");
        assert!((p99 - 500.0).abs() <= 5.0, "{p99}");
        assert_eq!(day.turn_ms.count, 3);
        assert_eq!(five.drop_rate, 0.0);
    }

    #[test]
    fn live_calls_come_and_go_and_the_slowest_are_listed_first() {
        let stats = CallStats::default();
        for n in 0..3 {
            stats.call_started(LiveCall {
                call_sid: format!("CA{n}"),
                business_id: "dental".into(),
                direction: "inbound".into(),
                started_at_ms: T0 + n,
            });
        }
        assert_eq!(stats.live_calls().len(), 3);
        stats.call_ended(&outcome("CA1", "dental", 300.0, &[900.0]), T0);
        stats.call_ended(&outcome("CA2", "dental", 1200.0, &[200.0]), T0);
        let live: Vec<String> = stats.live_calls().into_iter().map(|c| c.call_sid).collect();
        assert_eq!(live, ["CA0"]);
        let slowest: Vec<String> = stats
            .slowest_calls()
            .into_iter()
            .map(|c| c.call_sid)
            .collect();
        assert_eq!(slowest, ["CA2", "CA1"]);
    }

    #[test]
    fn an_hour_of_minutes_is_merged_into_quarter_hours_without_losing_calls() {
        let stats = CallStats::default();
        for m in 0..180 {
            stats.call_ended(&outcome("CA", "dental", 300.0, &[]), T0 + m * MINUTE);
        }
        let now = T0 + 179 * MINUTE + 1;
        let figures = stats.businesses(now);
        let calls: Vec<u64> = figures[0].windows.iter().map(|w| w.calls).collect();
        assert_eq!(calls, [5, 60, 180]);
        assert_eq!(stats.overall(now, 1440).calls, 180);
    }
}
