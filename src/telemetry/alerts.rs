//! Alerts on what callers experience, judged after every call (and by the server's sweeper, so
//! they clear when calls stop) over the calls that ended in the last few minutes (`[alerts]` in
//! the configuration):
//!
//! | alert | trips when |
//! |---|---|
//! | `echo_rate` | echo events per model turn > `echo_rate` (default 5%) |
//! | `p95_turn_latency` | p95 turn latency > `p95_turn_latency_ms` (default 500 ms) |
//! | `guard_block_rate` | guard blocks per scored transcript > `guard_block_rate` (default 3%) |
//! | `frame_drops` | dropped media frames > `frame_drops` (default 0) |
//! | `call_failure_rate` | failed calls per call > `call_failure_rate` (default 5%): refused at the webhook (busy, no prompt, database down), no stream, no upstream, or ended on a fault ([`EndReason::is_failure`](crate::domain::EndReason::is_failure)) |
//!
//! When an alert trips, a structured event is logged once (target `alert`, level WARN, with the
//! alert, its value, its threshold and the window), and the `voxrelay_alert{alert="…"}` gauge
//! reads 1 until it clears (logged at INFO).

use std::sync::Mutex;

use crate::config::AlertsConfig;
use crate::domain::Alert;

use super::metrics::{AlertLabels, Metrics};
use super::window::WindowFigures;

/// How many alerts there are ([`Alert::ALL`]).
const COUNT: usize = 5;

/// One alert's state.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct AlertStatus {
    /// Which alert.
    pub alert: Alert,
    /// Tripped now.
    pub active: bool,
    /// The figure over the window (a share 0–1, ms, or frames), `None` without data.
    pub value: Option<f64>,
    /// The configured threshold, same unit.
    pub threshold: f64,
    /// The window, minutes.
    pub window_minutes: u64,
}

/// The alerts of one instance.
#[derive(Debug)]
pub struct Alerts {
    config: AlertsConfig,
    /// Whether each alert of [`Alert::ALL`] was tripped at the last evaluation.
    active: Mutex<[bool; COUNT]>,
}

impl Alerts {
    /// Alerts with these thresholds, none tripped.
    pub fn new(config: AlertsConfig) -> Alerts {
        Alerts {
            config,
            active: Mutex::new([false; COUNT]),
        }
    }

    /// The window every alert looks at, minutes.
    pub fn window_minutes(&self) -> i64 {
        self.config.window_minutes as i64
    }

    /// Each alert's figure and threshold for `figures` (the window's calls).
    fn judge(&self, figures: &WindowFigures) -> [AlertStatus; COUNT] {
        let c = &self.config;
        let status = |alert: Alert, value: Option<f64>, threshold: f64| AlertStatus {
            alert,
            active: value.is_some_and(|v| v > threshold),
            value,
            threshold,
            window_minutes: c.window_minutes,
        };
        let any_calls = figures.calls > 0;
        [
            status(
                Alert::EchoRate,
                any_calls.then_some(figures.echo_rate),
                c.echo_rate,
            ),
            status(
                Alert::P95TurnLatency,
                figures.turn_ms.p95,
                c.p95_turn_latency_ms,
            ),
            status(
                Alert::GuardBlockRate,
                any_calls.then_some(figures.guard_block_rate),
                c.guard_block_rate,
            ),
            status(
                Alert::FrameDrops,
                any_calls.then_some(figures.frames_dropped as f64),
                c.frame_drops as f64,
            ),
            status(
                Alert::CallFailureRate,
                any_calls.then_some(figures.failure_rate),
                c.call_failure_rate,
            ),
        ]
    }

    /// Judges every alert on `figures`, logs each one that trips or clears, sets the gauges,
    /// and returns the states.
    pub fn evaluate(&self, figures: &WindowFigures, metrics: &Metrics) -> Vec<AlertStatus> {
        let statuses = self.judge(figures);
        let mut active = self
            .active
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (i, status) in statuses.iter().enumerate() {
            if status.active != active[i] {
                if status.active {
                    tracing::warn!(target: "alert", alert = %status.alert,
                        value = status.value.unwrap_or(0.0), threshold = status.threshold,
                        window_minutes = status.window_minutes, "alert tripped");
                } else {
                    tracing::info!(target: "alert", alert = %status.alert,
                        value = status.value.unwrap_or(0.0), threshold = status.threshold,
                        window_minutes = status.window_minutes, "alert cleared");
                }
                active[i] = status.active;
            }
            metrics
                .alerts
                .get_or_create(&AlertLabels {
                    alert: status.alert.as_str(),
                })
                .set(i64::from(status.active));
        }
        statuses.to_vec()
    }

    /// The states as of `figures`, without logging or touching the gauges.
    pub fn current(&self, figures: &WindowFigures) -> Vec<AlertStatus> {
        self.judge(figures).to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::window::Percentiles;

    fn figures(p95_turn: f64, echo_rate: f64, dropped: u64) -> WindowFigures {
        WindowFigures {
            minutes: 5,
            calls: 10,
            greeting_ms: Percentiles {
                p50: Some(300.0),
                p95: Some(310.0),
                p99: Some(320.0),
                count: 10,
            },
            turn_ms: Percentiles {
                p50: Some(300.0),
                p95: Some(p95_turn),
                p99: Some(p95_turn),
                count: 40,
            },
            error_rate: 0.0,
            drop_rate: 0.0,
            frames_dropped: dropped,
            echo_rate,
            guard_block_rate: 0.0,
            failure_rate: 0.0,
        }
    }

    fn gauge(metrics: &Metrics, alert: &'static str) -> i64 {
        metrics.alerts.get_or_create(&AlertLabels { alert }).get()
    }

    #[test]
    fn the_failure_rate_alert_trips_on_failed_calls_and_every_alert_is_judged() {
        let alerts = Alerts::new(AlertsConfig::default());
        let metrics = Metrics::new();
        let mut failing = figures(320.0, 0.0, 0);
        failing.failure_rate = 0.4;
        let statuses = alerts.evaluate(&failing, &metrics);
        let judged: Vec<Alert> = statuses.iter().map(|s| s.alert).collect();
        assert_eq!(judged, Alert::ALL);
        let active: Vec<Alert> = statuses
            .iter()
            .filter(|s| s.active)
            .map(|s| s.alert)
            .collect();
        assert_eq!(active, [Alert::CallFailureRate]);
        assert_eq!(gauge(&metrics, "call_failure_rate"), 1);
        failing.failure_rate = 0.05;
        alerts.evaluate(&failing, &metrics);
        assert_eq!(
            gauge(&metrics, "call_failure_rate"),
            0,
            "at the threshold is not above"
        );
    }

    #[test]
    fn an_alert_trips_above_its_threshold_and_clears_below_it() {
        let alerts = Alerts::new(AlertsConfig::default());
        let metrics = Metrics::new();
        let calm = alerts.evaluate(&figures(320.0, 0.01, 0), &metrics);
        assert!(calm.iter().all(|s| !s.active), "{calm:?}");
        assert_eq!(gauge(&metrics, "p95_turn_latency"), 0);

        let slow = alerts.evaluate(&figures(650.0, 0.08, 3), &metrics);
        let active: Vec<&str> = slow
            .iter()
            .filter(|s| s.active)
            .map(|s| s.alert.as_str())
            .collect();
        assert_eq!(active, ["echo_rate", "p95_turn_latency", "frame_drops"]);
        assert_eq!(gauge(&metrics, "p95_turn_latency"), 1);
        assert_eq!(gauge(&metrics, "guard_block_rate"), 0);
        assert!(
            metrics
                .encode()
                .contains("voxrelay_alert{alert=\"frame_drops\"} 1")
        );

        alerts.evaluate(&figures(480.0, 0.05, 0), &metrics);
        assert_eq!(gauge(&metrics, "p95_turn_latency"), 0);
        assert_eq!(
            gauge(&metrics, "echo_rate"),
            0,
            "exactly at the threshold is not above"
        );
    }

    #[test]
    fn no_calls_trip_nothing() {
        let alerts = Alerts::new(AlertsConfig::default());
        let mut empty = figures(0.0, 0.0, 0);
        empty.calls = 0;
        empty.turn_ms.p95 = None;
        assert!(
            alerts
                .current(&empty)
                .iter()
                .all(|s| !s.active && s.value.is_none())
        );
    }
}
