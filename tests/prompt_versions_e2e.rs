//! Prompt versions in live calls: the production version (or an experiment's arm) is what a
//! call runs, a promote reaches the next call and never a call in progress, and every call
//! records its version and arm.

use std::time::Duration;

use voxrelay::call::Direction;
use voxrelay::prompt::experiment::{self, Arm};
use voxrelay::sim::caller::{self, CallerConfig};
use voxrelay::sim::demo::jfk_speech;
use voxrelay::sim::upstream::SimUpstreamConfig;
use voxrelay::sim::world::{World, WorldOptions};
use voxrelay::store::{NewPromptVersion, PromptStatus, Store};

const V1: &str = "VERSION-ONE: {{ business.name }} opens at eight.";
const V2: &str = "VERSION-TWO: {{ business.name }} opens at nine.";

async fn world() -> World {
    let world = World::start(WorldOptions {
        upstream: SimUpstreamConfig::default(),
        ..WorldOptions::default()
    })
    .await
    .expect("world starts");
    world
        .add_business(
            "dental",
            "Bright Smile Dental",
            "Legacy text.",
            "Hello.",
            "+15005550006",
        )
        .await
        .expect("business");
    world
}

async fn version(store: &Store, body: &str) -> String {
    store
        .create_prompt_version(&NewPromptVersion {
            business_id: "dental".into(),
            direction: Direction::Inbound,
            body: body.into(),
            parent_version_id: None,
            compact_tokens: None,
            full_tokens: None,
            author: "test".into(),
            note: String::new(),
        })
        .await
        .expect("version")
        .id
}

fn call(world: &World, n: u32, from: &str) -> CallerConfig {
    let mut c = world.caller(
        &format!("CA{n:032x}"),
        "+15005550006",
        jfk_speech(Some(2.0)).expect("speech"),
    );
    c.from = from.into();
    c.lead_silence_ms = 500;
    c.tail_silence_ms = 800;
    c
}

/// All instructions the upstream session `index` received.
fn instructions(world: &World, index: usize) -> String {
    world.upstream.sessions()[index]
        .events_of_type("session.update")
        .iter()
        .filter_map(|u| u["session"]["instructions"].as_str().map(str::to_string))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn a_call_in_progress_keeps_its_version_and_the_next_call_gets_the_promoted_one() {
    let mut world = world().await;
    let v1 = version(&world.store, V1).await;
    world
        .store
        .promote(&v1, PromptStatus::Production)
        .await
        .expect("v1 live");

    let first = tokio::spawn(caller::run(call(&world, 1, "+14155550101")));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while world.upstream.connections() == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let v2 = version(&world.store, V2).await;
    world
        .store
        .promote(&v2, PromptStatus::Production)
        .await
        .expect("v2 live");
    let (second, _) = world
        .call(call(&world, 2, "+14155550102"))
        .await
        .expect("second call");
    assert!(second.streamed);
    assert!(first.await.expect("task").expect("first call").streamed);

    let a = instructions(&world, 0);
    let b = instructions(&world, 1);
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

    world
        .report_for(&format!("CA{:032x}", 1), Duration::from_secs(10))
        .await;
    let recorded = |n: u32| {
        let store = world.store.clone();
        async move {
            store
                .call_prompt(&format!("CA{n:032x}"))
                .await
                .expect("store")
                .and_then(|(version, _)| version)
        }
    };
    assert_eq!(recorded(1).await, Some(v1));
    assert_eq!(recorded(2).await, Some(v2));
    world.stop().await;
}

#[tokio::test]
async fn an_experiment_gives_each_caller_their_arm_and_records_it() {
    let mut world = world().await;
    let control = version(&world.store, V1).await;
    let variant = version(&world.store, V2).await;
    world
        .store
        .promote(&control, PromptStatus::Production)
        .await
        .expect("control live");
    let exp = world
        .store
        .create_experiment("dental", Direction::Inbound, &control, &variant, 50)
        .await
        .expect("experiment");
    world.store.start_experiment(&exp.id).await.expect("start");

    // One caller of each arm.
    let callers: Vec<String> = (0..100).map(|n| format!("+1415555{n:04}")).collect();
    let on_control = callers
        .iter()
        .find(|c| experiment::assign(&exp.id, c, 50) == Arm::Control)
        .expect("a control caller");
    let on_variant = callers
        .iter()
        .find(|c| experiment::assign(&exp.id, c, 50) == Arm::Variant)
        .expect("a variant caller");
    for (n, from) in [(10, on_control), (11, on_variant)] {
        let (report, _) = world.call(call(&world, n, from)).await.expect("call");
        assert!(report.streamed);
    }
    assert!(instructions(&world, 0).contains("VERSION-ONE"));
    assert!(instructions(&world, 1).contains("VERSION-TWO"));
    let arm = |n: u32| {
        let store = world.store.clone();
        async move {
            store
                .call_prompt(&format!("CA{n:032x}"))
                .await
                .expect("store")
        }
    };
    assert_eq!(
        arm(10).await,
        Some((Some(control), Some("control".to_string())))
    );
    assert_eq!(
        arm(11).await,
        Some((Some(variant), Some("variant".to_string())))
    );
    world.stop().await;
}
