//! Prompt versions and experiments in live calls, driven over the admin API against the running
//! router, on SQLite and, when `VOXRELAY_TEST_POSTGRES_URL` is set, on PostgreSQL (a schema of
//! its own per test). The production version (or an experiment's arm) is what a call runs, a
//! promote reaches the next call and never a call in progress, every call records its version,
//! experiment and arm with its summary, and an experiment's results come from those calls.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use voxrelay::domain::Arm;
use voxrelay::prompt::experiment;
use voxrelay::telemetry::stats;
use voxrelay_sim::caller::{self, CallerConfig};
use voxrelay_sim::demo::jfk_speech;
use voxrelay_sim::world::{World, WorldOptions};

mod common;
use common::api::Api;
use common::in_postgres_schema;

const V1: &str = "VERSION-ONE: {{ business.name }} opens at eight.";
const V2: &str = "VERSION-TWO: {{ business.name }} opens at nine.";
const NUMBER: &str = "+15005550006";

/// Creates the business the scenarios call, with its own (legacy) prompt text.
async fn dental(world: &World) {
    world
        .add_business(
            "dental",
            "Bright Smile Dental",
            "Legacy text.",
            "Hello.",
            NUMBER,
        )
        .await
        .expect("business");
}

/// A short call (2 s of jfk.wav) from `from`.
fn call(world: &World, n: u32, from: &str) -> CallerConfig {
    let mut c = world.caller(&sid(n), NUMBER, jfk_speech(Some(2.0)).expect("speech"));
    c.from = from.into();
    c.lead_silence_ms = 500;
    c.tail_silence_ms = 800;
    c
}

fn sid(n: u32) -> String {
    format!("CA{n:032x}")
}

/// All instructions the upstream session `index` of `world` received.
fn instructions(world: &World, index: usize) -> String {
    world.upstream.sessions()[index]
        .events_of_type("session.update")
        .iter()
        .filter_map(|u| u["session"]["instructions"].as_str().map(str::to_string))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Promotes a version over the API (validated there) and checks it took.
async fn promote(api: &Api, id: &str, to: &str) {
    let r = api
        .admin_post(&format!("/prompts/{id}/promote"), json!({"to": to}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

/// A call as the admin API shows it.
async fn call_detail(api: &Api, n: u32) -> Value {
    let r = api.admin_get(&format!("/calls/{}", sid(n))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json
}

/// Runs the calls at once and waits until the proxy has reported (and recorded) each.
async fn run_calls(world: &mut World, calls: Vec<CallerConfig>) {
    let mut pending: HashSet<String> = calls.iter().map(|c| c.call_sid.clone()).collect();
    let tasks: Vec<_> = calls
        .into_iter()
        .map(|c| tokio::spawn(caller::run(c)))
        .collect();
    for task in tasks {
        let report = task.await.expect("task").expect("call runs");
        assert!(report.streamed);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !pending.is_empty() {
        match tokio::time::timeout_at(deadline, world.reports.recv()).await {
            Ok(Some(report)) => {
                pending.remove(&report.call_sid);
            }
            _ => panic!("no proxy report for {pending:?}"),
        }
    }
}

// -------------------------------------------------------------------------------------------
// Scenarios

async fn a_call_in_progress_keeps_its_version_and_the_next_call_gets_the_promoted_one(
    api: Api,
    world: &mut World,
) {
    dental(world).await;
    let v1 = api.draft("dental", V1).await;
    promote(&api, &v1, "production").await;

    let first = tokio::spawn(caller::run(call(world, 1, "+14155550101")));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while world.upstream.connections() == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let v2 = api.draft("dental", V2).await;
    promote(&api, &v2, "production").await;
    let (second, _) = world
        .call(call(world, 2, "+14155550102"))
        .await
        .expect("second call");
    assert!(second.streamed);
    assert!(first.await.expect("task").expect("first call").streamed);
    world.report_for(&sid(1), Duration::from_secs(10)).await;

    let a = instructions(world, 0);
    let b = instructions(world, 1);
    assert!(
        a.contains("VERSION-ONE: Bright Smile Dental opens at eight."),
        "{a}"
    );
    assert!(
        !a.contains("VERSION-TWO"),
        "the call in progress kept its version"
    );
    assert!(b.contains("VERSION-TWO: Bright Smile Dental opens at nine."));
    assert!(!b.contains("Legacy text."));
    assert_eq!(call_detail(&api, 1).await["prompt_version_id"], v1.as_str());
    assert_eq!(call_detail(&api, 2).await["prompt_version_id"], v2.as_str());
}

async fn an_experiment_gives_each_caller_their_arm_and_records_it(api: Api, world: &mut World) {
    dental(world).await;
    let control = api.draft("dental", V1).await;
    let variant = api.draft("dental", V2).await;
    promote(&api, &control, "production").await;
    let exp = api
        .running_experiment("dental", &control, &variant, 50)
        .await;

    // One caller of each arm, as the API's assignment says.
    let mut by_arm = BTreeMap::new();
    for n in 0..100 {
        let caller = format!("+1415555{n:04}");
        let r = api
            .admin_get(&format!(
                "/experiments/{exp}/assignment?caller={}",
                caller.replace('+', "%2B")
            ))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let arm = r.json["arm"].as_str().expect("arm").to_string();
        by_arm.entry(arm).or_insert(caller);
    }
    for (n, arm) in [(10, "control"), (11, "variant")] {
        let (report, _) = world
            .call(call(world, n, &by_arm[arm]))
            .await
            .expect("call");
        assert!(report.streamed);
    }
    assert!(instructions(world, 0).contains("VERSION-ONE"));
    assert!(instructions(world, 1).contains("VERSION-TWO"));
    for (n, arm, version) in [(10, "control", &control), (11, "variant", &variant)] {
        let detail = call_detail(&api, n).await;
        assert_eq!(detail["prompt_version_id"], version.as_str(), "{detail}");
        assert_eq!(detail["variant"], arm, "{detail}");
        assert_eq!(detail["call"]["experiment_id"], exp.as_str(), "{detail}");
    }
}

async fn assignment_is_stable_and_splits_fifty_fifty_over_ten_thousand_callers(
    api: Api,
    world: &mut World,
) {
    dental(world).await;
    let control = api.draft("dental", V1).await;
    let variant = api.draft("dental", V2).await;
    let exp = api
        .running_experiment("dental", &control, &variant, 50)
        .await;
    let api = &api;
    let exp = exp.as_str();
    let ask = |n: u32| async move {
        let caller = format!("%2B1212{n:07}");
        let r = api
            .admin_get(&format!("/experiments/{exp}/assignment?caller={caller}"))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        (n, r.json["arm"].as_str().expect("arm").to_string())
    };
    let arms: BTreeMap<u32, String> = futures_util::stream::iter(0..10_000)
        .map(ask)
        .buffer_unordered(32)
        .collect()
        .await;
    let variant_count = arms.values().filter(|a| *a == "variant").count();
    assert!(
        (4_700..=5_300).contains(&variant_count),
        "{variant_count} of 10000 callers got the variant"
    );
    // Asked again, every caller gets the same arm, and it is the arm the webhook would pick.
    for n in (0..10_000).step_by(50) {
        let (_, again) = ask(n).await;
        assert_eq!(again, arms[&n], "caller {n}");
        let expected = match experiment::assign(exp, &format!("+1212{n:07}"), 50) {
            Arm::Control => "control",
            Arm::Variant => "variant",
        };
        assert_eq!(again, expected);
    }
    let r = api
        .admin_get("/experiments/exp_missing/assignment?caller=x")
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(world.upstream.connections(), 0, "asking places no call");
}

async fn experiment_results_report_each_arm_from_its_calls(api: Api, world: &mut World) {
    dental(world).await;
    let control = api.draft("dental", V1).await;
    let variant = api.draft("dental", V2).await;
    promote(&api, &control, "production").await;
    let exp = api
        .running_experiment("dental", &control, &variant, 50)
        .await;

    // Three callers of each arm, each calling once.
    let mut callers = Vec::new();
    let (mut on_control, mut on_variant) = (0, 0);
    for n in 0..200 {
        let caller = format!("+1303555{n:04}");
        let slot = match experiment::assign(&exp, &caller, 50) {
            Arm::Control => &mut on_control,
            Arm::Variant => &mut on_variant,
        };
        if *slot < 3 {
            *slot += 1;
            callers.push(caller);
        }
    }
    assert_eq!(callers.len(), 6);
    let calls: Vec<CallerConfig> = callers
        .iter()
        .zip(20..)
        .map(|(from, n)| call(world, n, from))
        .collect();
    run_calls(world, calls).await;

    let r = api.admin_get(&format!("/experiments/{exp}/results")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let results = r.json;
    assert_eq!(results["control"]["calls"], 3, "{results}");
    assert_eq!(results["variant"]["calls"], 3, "{results}");
    assert_eq!(results["control"]["version_id"], control.as_str());
    assert_eq!(results["confidence_level"], 0.95);

    // Each arm's figures are those of its calls, as the calls' own records give them.
    let mut greeting: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut turns: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for n in 20..26 {
        let detail = call_detail(&api, n).await;
        let arm = detail["variant"].as_str().expect("arm").to_string();
        let record = &detail["call"];
        assert_eq!(record["experiment_id"], exp.as_str());
        assert!(record["ended_at_ms"].is_i64(), "{record}");
        let summary = &record["summary"];
        assert!(
            summary["turns"].as_i64().is_some_and(|t| t >= 1),
            "{record}"
        );
        greeting
            .entry(arm.clone())
            .or_default()
            .push(record["greeting_latency_ms"].as_f64().expect("greeting"));
        turns
            .entry(arm)
            .or_default()
            .push(summary["turns"].as_f64().expect("turns"));
    }
    for arm in ["control", "variant"] {
        let p50 = stats::quantile_unsorted(&greeting[arm], 0.5).expect("p50");
        let p95 = stats::quantile_unsorted(&greeting[arm], 0.95).expect("p95");
        let mean_turns = stats::mean(&turns[arm]).expect("turns");
        // Compared with a tolerance: the figures cross a JSON boundary.
        let close = |field: &str, expected: f64| {
            let served = results[arm][field].as_f64().unwrap_or(f64::NAN);
            assert!(
                (served - expected).abs() < 1e-9,
                "{arm} {field}: served {served}, expected {expected}: {results}"
            );
        };
        close("greeting_p50_ms", p50);
        close("greeting_p95_ms", p95);
        close("turns_per_call", mean_turns);
        assert_eq!(results[arm]["guard_blocks_per_call"].as_f64(), Some(0.0));
    }
    let differences = results["differences"].as_array().expect("differences");
    assert_eq!(differences.len(), 5, "{results}");
    for d in differences {
        let figure = d["figure"].as_str().expect("figure");
        let interval = &d["interval"];
        let (low, high) = (
            interval["low"].as_f64().expect("low"),
            interval["high"].as_f64().expect("high"),
        );
        let difference = d["difference"].as_f64().expect("difference");
        assert!(low <= high, "{d}");
        if figure.starts_with("greeting") {
            assert_eq!(d["method"], "bootstrap_percentile");
        } else {
            assert_eq!(d["method"], "welch_t");
            assert!(low <= difference && difference <= high, "{d}");
        }
    }
    assert!(results["method"].as_str().unwrap_or("").contains("Welch"));
    let r = api.admin_get("/experiments/exp_missing/results").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

async fn a_rebuilt_stream_runs_the_version_and_arm_the_webhook_chose(api: Api, world: &mut World) {
    dental(world).await;
    let control = api.draft("dental", V1).await;
    let variant = api.draft("dental", V2).await;
    let exp = api
        .running_experiment("dental", &control, &variant, 50)
        .await;
    // A caller whose arm differs from the arm of an unknown (empty) caller: a rebuild that
    // did not know the caller would pick the other version.
    let blind = experiment::assign(&exp, "", 50);
    let caller = (0..200)
        .map(|n| format!("+1720555{n:04}"))
        .find(|c| experiment::assign(&exp, c, 50) != blind)
        .expect("a caller on the other arm");
    let (arm, marker) = match experiment::assign(&exp, &caller, 50) {
        Arm::Control => ("control", "VERSION-ONE"),
        Arm::Variant => ("variant", "VERSION-TWO"),
    };

    let second = World::start(WorldOptions {
        database_url: Some(world.config.database.url.clone()),
        ..WorldOptions::default()
    })
    .await
    .expect("second instance");
    let mut config = call(world, 30, &caller);
    config.stream_url_override = Some(format!("ws://{}/twilio/media", second.proxy_addr));
    let (heard, _) = world.call(config).await.expect("call runs");
    assert!(
        heard.first_audio_ms().is_some(),
        "the second instance served it"
    );
    assert_eq!(second.upstream.sessions().len(), 1);
    let text = instructions(&second, 0);
    assert!(text.contains(marker), "{text}");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let detail = loop {
        let detail = call_detail(&api, 30).await;
        if detail["call"]["ended_at_ms"].is_i64() || tokio::time::Instant::now() > deadline {
            break detail;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(detail["variant"], arm, "{detail}");
    assert_eq!(detail["call"]["experiment_id"], exp.as_str(), "{detail}");
    assert_eq!(detail["call"]["from_number"], caller.as_str(), "{detail}");
    second.stop().await;
}

// -------------------------------------------------------------------------------------------
// Backends

/// Starts a world on `database_url` (`None`: a SQLite file), runs `scenario`, then stops it.
async fn run_world<F>(database_url: Option<String>, scenario: F)
where
    F: AsyncFnOnce(Api, &mut World),
{
    let mut world = World::start(WorldOptions {
        database_url,
        ..WorldOptions::default()
    })
    .await
    .expect("world starts");
    let api = Api::new(&world);
    scenario(api, &mut world).await;
    world.stop().await;
}

/// One test per backend for each scenario, named after it.
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    super::run_world(None, super::$scenario).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    super::in_postgres_schema(stringify!($scenario), |url| {
                        super::run_world(Some(url), super::$scenario)
                    })
                    .await;
                }
            )*
        }
    };
}

on_both_backends!(
    a_call_in_progress_keeps_its_version_and_the_next_call_gets_the_promoted_one,
    an_experiment_gives_each_caller_their_arm_and_records_it,
    assignment_is_stable_and_splits_fifty_fifty_over_ten_thousand_callers,
    experiment_results_report_each_arm_from_its_calls,
    a_rebuilt_stream_runs_the_version_and_arm_the_webhook_chose,
);
