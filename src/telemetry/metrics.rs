//! Prometheus metrics of one instance (prometheus-client), served at `GET /metrics` in the
//! OpenMetrics text format.
//!
//! Latencies are histograms in seconds. Caller-facing ones (greeting, turn, upstream timings)
//! use [`VOICE_BUCKETS`], 1 ms to 10 s; what the proxy does in microseconds (the relay overhead
//! of one media frame, the barge-in reaction) uses [`RELAY_BUCKETS`], 5 µs to 100 ms. Labels are bounded: a business id (the tenants an
//! operator configured), the direction, a leg of the relay, an end reason or error code from a
//! fixed set. No CallSid, number or transcript ever becomes a label.
//!
//! Most figures are recorded once per call, from its [`CallReport`], when it ends; the relay
//! overhead is recorded by the socket writers as each media frame is written, and the live-call
//! gauge as calls start and end.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::outcome::CallOutcome;
use super::timeline::{CallReport, TimelineEvent};
use crate::domain::{EchoKind, GuardDecision, RelayLeg, TokenKind};

/// Bucket bounds for what a caller notices, seconds: 1 ms to 10 s.
pub const VOICE_BUCKETS: [f64; 16] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0,
];

/// Bucket bounds for the time a media frame spends inside the proxy, seconds: 5 µs to 100 ms.
pub const RELAY_BUCKETS: [f64; 14] = [
    0.000_005, 0.000_01, 0.000_02, 0.000_05, 0.000_1, 0.000_2, 0.000_5, 0.001, 0.002, 0.005, 0.01,
    0.02, 0.05, 0.1,
];

/// Upstream error codes counted by name; any other code counts as `other`. From the Realtime
/// API's error events (`shared/protocol/openai-realtime.md`).
pub const KNOWN_ERROR_CODES: [&str; 6] = [
    "response_cancel_not_active",
    "conversation_already_has_active_response",
    "input_audio_buffer_commit_empty",
    "invalid_request_error",
    "rate_limit_exceeded",
    "server_error",
];

/// A business and direction.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// The business id.
    pub business_id: String,
    /// `inbound` or `outbound`.
    pub direction: String,
}

/// A finished call: business, direction and why it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndLabels {
    /// The business id.
    pub business_id: String,
    /// `inbound` or `outbound`.
    pub direction: String,
    /// [`crate::domain::EndReason::as_str`].
    pub end_reason: &'static str,
}

/// One leg of the relay.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LegLabels {
    /// [`RelayLeg::as_str`]: `twilio_to_upstream` (caller audio) or `upstream_to_twilio`
    /// (model audio).
    pub leg: &'static str,
}

/// An upstream error code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// One of [`KNOWN_ERROR_CODES`] or `other`.
    pub code: &'static str,
}

/// A business and a kind of event.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// The business id.
    pub business_id: String,
    /// What happened: the `as_str` of the metric's vocabulary type ([`GuardDecision`],
    /// [`EchoKind`], [`TokenKind`]).
    pub kind: &'static str,
}

/// A business.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BusinessLabels {
    /// The business id.
    pub business_id: String,
}

/// Why a connection was shed at the connection cap ([`crate::domain::ConnectionShed`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionShedLabels {
    /// `idle_evicted` or `over_cap`.
    pub why: &'static str,
}

/// An upstream rate limit by name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RateLimitLabels {
    /// `requests`, `tokens` or `other` ([`crate::realtime::events::RateLimitName`]).
    pub name: &'static str,
}

/// What became of a lost upstream session.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconnectLabels {
    /// [`crate::domain::ReconnectOutcome::as_str`]: `lost`, `restored`, `failed` or
    /// `rollover`.
    pub outcome: &'static str,
}

/// One upstream of the failover list, by its configured name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    /// The upstream's name (`openai`, `azure`, or its `name` in `[[upstream.fallback]]`).
    pub upstream: String,
}

/// A call's fallback and whether Twilio took the redirect.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FallbackLabels {
    /// [`crate::domain::FallbackAction::as_str`]: `dial` or `apology`.
    pub action: &'static str,
    /// `true` when Twilio accepted the redirect; `false` when it could not be sent or was
    /// refused (the call then ended as it would have without a fallback).
    pub delivered: &'static str,
}

/// How a transfer's dial ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransferLabels {
    /// [`crate::domain::TransferOutcome::as_str`]: `answered`, `busy`, `no-answer`, `failed`
    /// or `canceled`.
    pub outcome: &'static str,
}

/// A tool and how its call ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToolLabels {
    /// The tool's name (a business's tool names are few and chosen by its operators).
    pub tool: String,
    /// [`crate::domain::ToolStatus::as_str`].
    pub status: &'static str,
}

/// An MCP server event.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct McpLabels {
    /// [`crate::domain::McpEvent::as_str`].
    pub event: &'static str,
}

/// An alert by name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    /// The alert, e.g. `p95_turn_latency`.
    pub alert: &'static str,
}

fn voice_histogram() -> Histogram {
    Histogram::new(VOICE_BUCKETS)
}

fn relay_histogram() -> Histogram {
    Histogram::new(RELAY_BUCKETS)
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric of the instance and the registry that exposes them.
pub struct Metrics {
    registry: Registry,
    /// Stream `start` → first model audio frame sent to Twilio.
    pub greeting: HistogramFamily<CallLabels>,
    /// Voice webhook → first model audio frame sent to Twilio.
    pub greeting_from_webhook: HistogramFamily<CallLabels>,
    /// `speech_stopped` → the answer's first audio frame sent to Twilio.
    pub turn: HistogramFamily<CallLabels>,
    /// `speech_stopped` → the moment the answer began to play at Twilio: what the caller hears.
    /// Twilio echoes a mark once the audio before it has played
    /// (<https://www.twilio.com/docs/voice/media-streams/websocket-messages#mark-message>), so
    /// the answer began to play at the acknowledgement of the first mark past its first audio,
    /// less the audio queued between the answer's first byte and that mark (8 bytes of mu-law
    /// per ms). See [`crate::call::state::CallState::on_mark`].
    pub turn_heard: HistogramFamily<CallLabels>,
    /// `speech_started` received → Twilio `clear` written.
    pub barge_in_reaction: HistogramFamily<CallLabels>,
    /// A media frame's time inside the proxy: read from one socket → written to the other.
    pub relay_overhead: HistogramFamily<LegLabels>,
    /// TCP + TLS + WebSocket handshake with the upstream.
    pub upstream_connect: Histogram,
    /// `response.create` sent → the response's first audio delta received.
    pub upstream_first_audio: Histogram,
    /// The FULL `session.update` sent → `session.updated` received.
    pub session_update: Histogram,
    /// Finished calls.
    pub calls: Family<EndLabels, Counter>,
    /// Media frames relayed.
    pub frames_relayed: Family<LegLabels, Counter>,
    /// Media frames dropped because a writer queue was full.
    pub frames_dropped: Family<LegLabels, Counter>,
    /// Upstream `error` events by code.
    pub upstream_errors: Family<ErrorLabels, Counter>,
    /// COMPACT → FULL `session.update`s sent.
    pub prompt_upgrades: Family<CallLabels, Counter>,
    /// Guard decisions: `injection_flagged`, `injection_blocked`, `leak`.
    pub guard_decisions: Family<KindLabels, Counter>,
    /// Echo events: `parroting`, `self_echo`.
    pub echo_events: Family<KindLabels, Counter>,
    /// Model turns (output transcripts), the denominator of the echo rate.
    pub model_turns: Family<CallLabels, Counter>,
    /// Caller transcripts the sanitizer scored.
    pub transcripts_scored: Family<CallLabels, Counter>,
    /// Tokens from `response.done` usage: `total` and `cached`.
    pub tokens: Family<KindLabels, Counter>,
    /// Calls whose media stream is open now.
    pub live_calls: Gauge,
    /// Upstream sessions that could not be opened for a call (its pre-warm failed and its
    /// retry too, or the pre-warm timed out).
    pub upstream_connect_failures: Counter,
    /// Stored business guard rules left out of a compiled sanitizer because they do not compile.
    pub guard_rules_skipped: Family<BusinessLabels, Counter>,
    /// 1 while an alert is tripped, else 0.
    pub alerts: Family<AlertLabels, Gauge>,
    /// Connections closed at the connection cap (`server.max_connections`), by why.
    pub http_connections_shed: Family<ConnectionShedLabels, Counter>,
    /// What the upstream's last `rate_limits.updated` left of each limit (requests or
    /// tokens in its window), as seen by the call that read it last.
    pub upstream_rate_limit_remaining: Family<RateLimitLabels, Gauge>,
    /// Lost upstream sessions mid-call, by what became of them.
    pub upstream_reconnects: Family<ReconnectLabels, Counter>,
    /// A lost upstream session → the new one restored (conversation replayed, held caller
    /// audio on its way), seconds.
    pub upstream_reconnect: Histogram,
    /// Dials answered by an upstream other than the first in the list, by the one that
    /// answered.
    pub upstream_failovers: Family<UpstreamLabels, Counter>,
    /// 1 while an upstream's circuit breaker is open (new dials skip it), else 0.
    pub upstream_breaker_open: Family<UpstreamLabels, Gauge>,
    /// Calls sent to their business's fallback (no model could take them), by action and
    /// whether Twilio took the redirect.
    pub call_fallbacks: Family<FallbackLabels, Counter>,
    /// The model's tool call to its output sent, by tool and status.
    pub tool_calls: HistogramFamily<ToolLabels>,
    /// Transfers (`transfer_call`) whose dial ended, by outcome.
    pub call_transfers: Family<TransferLabels, Counter>,
    /// MCP server events the upstream reported, by event.
    pub mcp_events: Family<McpLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Counts a transfer whose dial ended as `outcome` (`voxrelay_call_transfers_total`).
    pub fn count_transfer(&self, outcome: crate::domain::TransferOutcome) {
        self.call_transfers
            .get_or_create(&TransferLabels {
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// Every metric, registered under the `voxrelay` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("voxrelay");
        let m = Metrics {
            greeting: Family::new_with_constructor(voice_histogram),
            greeting_from_webhook: Family::new_with_constructor(voice_histogram),
            turn: Family::new_with_constructor(voice_histogram),
            turn_heard: Family::new_with_constructor(voice_histogram),
            barge_in_reaction: Family::new_with_constructor(relay_histogram),
            relay_overhead: Family::new_with_constructor(relay_histogram),
            upstream_connect: voice_histogram(),
            upstream_first_audio: voice_histogram(),
            session_update: voice_histogram(),
            calls: Family::default(),
            frames_relayed: Family::default(),
            frames_dropped: Family::default(),
            upstream_errors: Family::default(),
            prompt_upgrades: Family::default(),
            guard_decisions: Family::default(),
            echo_events: Family::default(),
            model_turns: Family::default(),
            transcripts_scored: Family::default(),
            tokens: Family::default(),
            live_calls: Gauge::default(),
            upstream_connect_failures: Counter::default(),
            guard_rules_skipped: Family::default(),
            alerts: Family::default(),
            http_connections_shed: Family::default(),
            upstream_rate_limit_remaining: Family::default(),
            call_fallbacks: Family::default(),
            call_transfers: Family::default(),
            tool_calls: Family::new_with_constructor(voice_histogram),
            mcp_events: Family::default(),
            upstream_reconnects: Family::default(),
            upstream_reconnect: voice_histogram(),
            upstream_failovers: Family::default(),
            upstream_breaker_open: Family::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "greeting_latency_seconds",
            "Stream start to the first model audio frame sent to Twilio",
            m.greeting.clone(),
        );
        r.register(
            "greeting_from_webhook_seconds",
            "Voice webhook to the first model audio frame sent to Twilio",
            m.greeting_from_webhook.clone(),
        );
        r.register(
            "turn_latency_seconds",
            "End of caller speech (speech_stopped) to the answer's first audio frame sent to Twilio",
            m.turn.clone(),
        );
        r.register(
            "turn_heard_latency_seconds",
            "End of caller speech to the moment the caller began to hear the answer: Twilio's acknowledgement of the first mark past the answer's first audio, less the audio queued between the two",
            m.turn_heard.clone(),
        );
        r.register(
            "barge_in_reaction_seconds",
            "speech_started received to Twilio clear written",
            m.barge_in_reaction.clone(),
        );
        r.register(
            "relay_overhead_seconds",
            "Time a media frame spends inside the proxy, read to written",
            m.relay_overhead.clone(),
        );
        r.register(
            "upstream_connect_seconds",
            "Upstream TCP, TLS and WebSocket handshake",
            m.upstream_connect.clone(),
        );
        r.register(
            "upstream_first_audio_seconds",
            "response.create sent to the response's first audio delta",
            m.upstream_first_audio.clone(),
        );
        r.register(
            "session_update_seconds",
            "FULL session.update sent to session.updated received",
            m.session_update.clone(),
        );
        r.register("calls", "Finished calls", m.calls.clone());
        r.register(
            "frames_relayed",
            "Media frames relayed",
            m.frames_relayed.clone(),
        );
        r.register(
            "frames_dropped",
            "Media frames dropped because a socket writer's queue was full",
            m.frames_dropped.clone(),
        );
        r.register(
            "upstream_errors",
            "Upstream error events by code",
            m.upstream_errors.clone(),
        );
        r.register(
            "prompt_upgrades",
            "COMPACT to FULL session.update messages sent",
            m.prompt_upgrades.clone(),
        );
        r.register(
            "guard_decisions",
            "Guard decisions by kind",
            m.guard_decisions.clone(),
        );
        r.register(
            "echo_events",
            "Echo events by kind (parroting, self_echo)",
            m.echo_events.clone(),
        );
        r.register(
            "model_turns",
            "Model output transcripts (the echo rate's denominator)",
            m.model_turns.clone(),
        );
        r.register(
            "transcripts_scored",
            "Caller transcripts scored by the sanitizer",
            m.transcripts_scored.clone(),
        );
        r.register(
            "tokens",
            "Tokens reported in response.done usage",
            m.tokens.clone(),
        );
        r.register(
            "upstream_connect_failures",
            "Calls whose upstream session could not be opened (the pre-warm and its retry failed, or the pre-warm timed out)",
            m.upstream_connect_failures.clone(),
        );
        r.register(
            "guard_rules_skipped",
            "Stored business guard rules left out of a business's sanitizer because they do not compile, counted each time the business's rules are compiled",
            m.guard_rules_skipped.clone(),
        );
        r.register(
            "live_calls",
            "Calls whose media stream is open",
            m.live_calls.clone(),
        );
        r.register("alert", "1 while the alert is tripped", m.alerts.clone());
        r.register(
            "http_connections_shed",
            "Connections closed at the connection cap: an idle one evicted to make room, or a new one when every connection was busy",
            m.http_connections_shed.clone(),
        );
        r.register(
            "upstream_rate_limit_remaining",
            "What the upstream's last rate_limits.updated left of each limit (requests or tokens in its window)",
            m.upstream_rate_limit_remaining.clone(),
        );
        r.register(
            "upstream_reconnects",
            "Upstream sessions lost mid-call, by outcome (lost, restored, failed), and sessions rolled over before their expiry (rollover)",
            m.upstream_reconnects.clone(),
        );
        r.register(
            "upstream_reconnect_seconds",
            "A lost upstream session to the new one restored with the conversation replayed",
            m.upstream_reconnect.clone(),
        );
        r.register(
            "upstream_failovers",
            "Upstream dials answered by an upstream other than the first in the list, by the one that answered",
            m.upstream_failovers.clone(),
        );
        r.register(
            "upstream_breaker_open",
            "1 while an upstream's circuit breaker is open and new dials skip it",
            m.upstream_breaker_open.clone(),
        );
        r.register(
            "call_fallbacks",
            "Calls no model could take, sent to their business's fallback (dial or apology), by whether Twilio took the redirect",
            m.call_fallbacks.clone(),
        );
        r.register(
            "call_transfers",
            "Transfers to a person (transfer_call) whose dial ended, by outcome (answered, busy, no-answer, failed, canceled)",
            m.call_transfers.clone(),
        );
        r.register(
            "tool_call_seconds",
            "The model's tool call (response.function_call_arguments.done) to its function_call_output sent upstream, by tool and status",
            m.tool_calls.clone(),
        );
        r.register(
            "mcp_events",
            "Remote MCP tool events the upstream reported (it calls the MCP servers itself), by event; only the two failed events are faults",
            m.mcp_events.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The same metrics in the Prometheus text format 0.0.4, for scrapers and tools that do not
    /// ask for OpenMetrics (`promtool check metrics` among them). The two formats differ here
    /// only in a counter's metadata, which names the family `x` in OpenMetrics and the sample
    /// `x_total` in the text format, and in the closing `# EOF`.
    pub fn encode_text(&self) -> String {
        openmetrics_to_text(&self.encode())
    }

    /// The relay-overhead histogram of `leg` (see [`LegLabels`]), to keep for a call instead
    /// of looking it up per frame; it records into the same series.
    pub fn relay_leg(&self, leg: RelayLeg) -> Histogram {
        self.relay_overhead
            .get_or_create(&LegLabels { leg: leg.as_str() })
            .clone()
    }

    /// Counts a call that ended without a session (refused, no stream, no upstream) in
    /// `voxrelay_calls_total` with its end reason.
    pub fn record_unserved(&self, outcome: &CallOutcome) {
        self.calls
            .get_or_create(&EndLabels {
                business_id: outcome.business_id.clone(),
                direction: outcome.direction.as_str().to_string(),
                end_reason: outcome.end_reason.as_str(),
            })
            .inc();
    }

    /// Records a finished call's figures: latencies and upstream error codes from its
    /// timeline, frame counts per leg from its counters, the rest from its `outcome`.
    /// `since_webhook` is how long before the stream start the webhook ran, when known.
    pub fn record_call(
        &self,
        report: &CallReport,
        outcome: &CallOutcome,
        since_webhook: Option<Duration>,
    ) {
        let call = CallLabels {
            business_id: report.business_id.clone(),
            direction: report.direction.as_str().to_string(),
        };
        let kind = |kind| KindLabels {
            business_id: report.business_id.clone(),
            kind,
        };
        if let Some(ms) = outcome.greeting_ms {
            self.greeting.get_or_create(&call).observe(ms / 1000.0);
            if let Some(before) = since_webhook {
                self.greeting_from_webhook
                    .get_or_create(&call)
                    .observe(before.as_secs_f64() + ms / 1000.0);
            }
        }
        let turn = self.turn.get_or_create(&call);
        for ms in &outcome.turn_latencies_ms {
            turn.observe(ms / 1000.0);
        }
        drop(turn);
        let heard = self.turn_heard.get_or_create(&call);
        for ms in &report.turn_heard_ms {
            heard.observe(ms / 1000.0);
        }
        drop(heard);
        let barge = self.barge_in_reaction.get_or_create(&call);
        let mut upgrades = 0;
        for (_, event) in report.timeline.entries() {
            match event {
                TimelineEvent::BargeIn { reaction_us, .. } => {
                    barge.observe(*reaction_us as f64 / 1e6);
                }
                TimelineEvent::Upgraded { .. } => upgrades += 1,
                TimelineEvent::UpstreamError { code, .. } => {
                    let code = KNOWN_ERROR_CODES
                        .into_iter()
                        .find(|known| known == code)
                        .unwrap_or("other");
                    self.upstream_errors
                        .get_or_create(&ErrorLabels { code })
                        .inc();
                }
                _ => {}
            }
        }
        drop(barge);
        self.calls
            .get_or_create(&EndLabels {
                business_id: call.business_id.clone(),
                direction: call.direction.clone(),
                end_reason: outcome.end_reason.as_str(),
            })
            .inc();
        let c = &report.counters;
        let leg = |leg: RelayLeg| LegLabels { leg: leg.as_str() };
        self.frames_relayed
            .get_or_create(&leg(RelayLeg::TwilioToUpstream))
            .inc_by(c.frames_in);
        self.frames_relayed
            .get_or_create(&leg(RelayLeg::UpstreamToTwilio))
            .inc_by(c.frames_out);
        self.frames_dropped
            .get_or_create(&leg(RelayLeg::TwilioToUpstream))
            .inc_by(c.dropped_in);
        self.frames_dropped
            .get_or_create(&leg(RelayLeg::UpstreamToTwilio))
            .inc_by(c.dropped_out);
        if upgrades > 0 {
            self.prompt_upgrades.get_or_create(&call).inc_by(upgrades);
        }
        let g = &report.guards;
        for (decision, n) in [
            (GuardDecision::InjectionFlagged, g.flagged),
            (GuardDecision::InjectionBlocked, g.blocked),
            (GuardDecision::Leak, g.leaks),
        ] {
            if n > 0 {
                self.guard_decisions
                    .get_or_create(&kind(decision.as_str()))
                    .inc_by(n);
            }
        }
        for (echo, n) in [
            (EchoKind::Parroting, report.echo.echoes),
            (EchoKind::SelfEcho, report.echo.self_echoes),
        ] {
            if n > 0 {
                self.echo_events
                    .get_or_create(&kind(echo.as_str()))
                    .inc_by(n);
            }
        }
        self.model_turns
            .get_or_create(&call)
            .inc_by(report.echo.model_turns);
        self.transcripts_scored
            .get_or_create(&call)
            .inc_by(g.scored);
        self.tokens
            .get_or_create(&kind(TokenKind::Total.as_str()))
            .inc_by(c.total_tokens);
        self.tokens
            .get_or_create(&kind(TokenKind::Cached.as_str()))
            .inc_by(c.cached_tokens);
    }
}

/// Rewrites an OpenMetrics exposition of counters, gauges and histograms as the Prometheus text
/// format 0.0.4: counter families are renamed to their `_total` samples in `# HELP` and
/// `# TYPE`, `# UNIT` and `# EOF` lines are dropped, everything else is kept as it is.
fn openmetrics_to_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|prefix| line.strip_prefix(prefix).map(|rest| (prefix, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) && !name.ends_with("_total") {
                    out.push_str(&format!("{prefix}{name}_total {tail}"));
                } else {
                    out.push_str(line);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_names_counters_by_their_samples() {
        let metrics = Metrics::new();
        metrics.live_calls.inc();
        metrics
            .frames_relayed
            .get_or_create(&LegLabels {
                leg: RelayLeg::TwilioToUpstream.as_str(),
            })
            .inc_by(3);
        let open = metrics.encode();
        assert!(
            open.contains("# TYPE voxrelay_frames_relayed counter"),
            "{open}"
        );
        assert!(open.trim_end().ends_with("# EOF"));
        let text = metrics.encode_text();
        assert!(
            text.contains("# TYPE voxrelay_frames_relayed_total counter"),
            "{text}"
        );
        assert!(text.contains("# HELP voxrelay_frames_relayed_total Media frames relayed"));
        assert!(text.contains("voxrelay_frames_relayed_total{leg=\"twilio_to_upstream\"} 3"));
        assert!(text.contains("# TYPE voxrelay_live_calls gauge"));
        assert!(!text.contains("# EOF"));
    }
}
