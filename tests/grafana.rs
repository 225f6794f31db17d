//! `config/grafana/voxrelay.json`: a Grafana dashboard over the Prometheus metrics. Every metric
//! its queries name must be one the proxy exposes (so a renamed metric cannot leave a panel
//! silently empty), and it has the panels the built-in dashboard has.

use std::collections::BTreeSet;

mod common;

use regex::Regex;
use serde_json::Value;
use voxrelay::telemetry::metrics::{
    AlertLabels, CallLabels, EndLabels, ErrorLabels, KindLabels, LegLabels, Metrics,
};

/// Every sample name the exposition holds once each family has a sample (a family with none
/// is left out of the exposition): counters as `_total`, histograms as `_bucket`, `_sum` and
/// `_count`, gauges as they are.
fn exposed_names() -> BTreeSet<String> {
    let m = Metrics::new();
    let call = CallLabels {
        business_id: "b".into(),
        direction: "inbound".into(),
    };
    let kind = KindLabels {
        business_id: "b".into(),
        kind: "k",
    };
    let leg = LegLabels { leg: "l" };
    for family in [
        &m.greeting,
        &m.greeting_from_webhook,
        &m.turn,
        &m.turn_heard,
        &m.barge_in_reaction,
    ] {
        family.get_or_create(&call).observe(0.3);
    }
    m.relay_overhead.get_or_create(&leg).observe(1e-5);
    m.calls
        .get_or_create(&EndLabels {
            business_id: "b".into(),
            direction: "inbound".into(),
            end_reason: "stop",
        })
        .inc();
    m.frames_relayed.get_or_create(&leg).inc();
    m.frames_dropped.get_or_create(&leg).inc();
    m.upstream_errors
        .get_or_create(&ErrorLabels { code: "other" })
        .inc();
    m.prompt_upgrades.get_or_create(&call).inc();
    m.model_turns.get_or_create(&call).inc();
    m.transcripts_scored.get_or_create(&call).inc();
    for family in [&m.guard_decisions, &m.echo_events, &m.tokens] {
        family.get_or_create(&kind).inc();
    }
    m.alerts.get_or_create(&AlertLabels { alert: "a" }).set(0);
    let text = m.encode_text();
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').expect("TYPE line");
        match kind {
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_string());
            }
        }
    }
    names
}

#[test]
fn every_query_names_an_exposed_metric_and_the_dashboard_panels_are_there() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/grafana/voxrelay.json"
    ))
    .expect("config/grafana/voxrelay.json");
    let dashboard: Value = serde_json::from_str(&text).expect("valid JSON");
    let exposed = exposed_names();
    let metric = Regex::new(r"voxrelay_[a-z0-9_]+").expect("regex");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut used = BTreeSet::new();
    let mut titles = Vec::new();
    for panel in panels {
        let title = panel["title"].as_str().expect("title");
        titles.push(title.to_string());
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no query");
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            for name in metric.find_iter(expr) {
                assert!(
                    exposed.contains(name.as_str()),
                    "{title}: {} is not exposed by /metrics (exposed: {exposed:?})",
                    name.as_str()
                );
                used.insert(name.as_str().to_string());
            }
        }
    }
    for wanted in [
        "Live calls",
        "Greeting latency",
        "Turn latency",
        "Frame drop rate",
        "Upstream errors",
        "Alerts",
    ] {
        assert!(
            titles.iter().any(|t| t.starts_with(wanted)),
            "no panel for {wanted}: {titles:?}"
        );
    }
    check_promql(panels);
    // The figures the issue names all have a panel.
    for name in [
        "voxrelay_greeting_latency_seconds_bucket",
        "voxrelay_turn_latency_seconds_bucket",
        "voxrelay_turn_heard_latency_seconds_bucket",
        "voxrelay_barge_in_reaction_seconds_bucket",
        "voxrelay_relay_overhead_seconds_bucket",
        "voxrelay_upstream_connect_seconds_bucket",
        "voxrelay_calls_total",
        "voxrelay_frames_dropped_total",
        "voxrelay_echo_events_total",
        "voxrelay_guard_decisions_total",
        "voxrelay_tokens_total",
        "voxrelay_alert",
    ] {
        assert!(used.contains(name), "no panel queries {name}");
    }
}

/// Every query parses as PromQL: written as recording rules (Grafana's variables replaced by
/// values) and checked with `promtool check rules`, when promtool is installed.
fn check_promql(panels: &[Value]) {
    let mut rules = String::from("groups:\n  - name: grafana_queries\n    rules:\n");
    let mut n = 0;
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .unwrap_or_default()
                .replace("$__rate_interval", "5m")
                .replace("$business", ".*");
            n += 1;
            rules.push_str(&format!(
                "      - record: grafana:query{n}\n        expr: '{}'\n",
                expr.replace('\'', "''")
            ));
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("queries.yml");
    std::fs::write(&path, rules).expect("write rules");
    match std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&path)
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "a Grafana query is not valid PromQL:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => common::tool_missing("promtool", "the PromQL check", e),
    }
}
