//! Prompt versions and A/B experiments in the store, scenario by scenario, on SQLite and on
//! PostgreSQL.
//!
//! Each scenario is written once, as an async fn taking a freshly migrated [`Store`], and runs
//! from one `#[tokio::test]` per backend (modules `sqlite` and `postgres`). SQLite uses a private
//! in-memory database. PostgreSQL runs only when `VOXRELAY_TEST_POSTGRES_URL` is set
//! (e.g. `postgres://postgres@127.0.0.1:5432/test`); each test then gets its own schema, created
//! before and dropped after. Scenarios that need a second, raw connection to the same database
//! take a URL instead (modules `sqlite_file` and `postgres_url`); on SQLite that is a file in a
//! temporary directory.

// Test scenarios live in plain async functions shared by both backends, which clippy does not
// see as tests: unwrapping is as fine here as in any test.
#![allow(clippy::unwrap_used)]

use std::future::Future;

use sqlx::{AnyConnection, Connection};
use voxrelay::domain::Direction;
use voxrelay::store::{
    ExperimentStatus, NewBusiness, NewCall, NewPromptVersion, PromptStatus, PromptVersion, Store,
    StoreError,
};

mod common;
use common::{in_postgres_schema, on_postgres, on_sqlite};

// ---------------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------------

/// Runs `scenario` with the URL of a SQLite database file in a temporary directory.
async fn on_sqlite_file<F, Fut>(scenario: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("prompts.db").display()
    );
    scenario(url).await;
}

/// One `#[tokio::test]` per backend for each scenario, named after it.
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::on_sqlite(super::$scenario).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::on_postgres(stringify!($scenario), super::$scenario).await;
                }
            )*
        }
    };
}

/// Like `on_both_backends!` for scenarios that take a database URL: a SQLite file, and a
/// PostgreSQL schema of their own.
macro_rules! on_both_urls {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite_file {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    super::on_sqlite_file(super::$scenario).await;
                }
            )*
        }
        mod postgres_url {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    super::in_postgres_schema(stringify!($scenario), super::$scenario).await;
                }
            )*
        }
    };
}

on_both_backends!(
    draft_staging_production_and_rollback,
    concurrent_promotes_leave_exactly_one_production,
    versions_are_numbered_per_business_and_direction,
    concurrent_creates_get_distinct_numbers,
    a_version_round_trips_all_its_fields,
    a_version_for_an_unknown_business_is_not_found,
    an_invalid_version_is_rejected_naming_the_field,
    a_parent_version_must_be_of_the_same_business_and_direction,
    promote_and_rollback_refuse_bad_targets,
    experiments_run_one_at_a_time_per_business_and_direction,
    an_experiment_needs_a_percent_from_0_to_100,
    an_experiment_needs_versions_of_its_business_and_direction,
    a_call_records_its_prompt_version_and_variant,
);

on_both_urls!(
    the_database_refuses_a_second_production_or_running_row,
    concurrent_promotes_on_a_pooled_store_leave_exactly_one_production,
);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

async fn business(store: &Store, id: &str) {
    let mut new = NewBusiness::named(format!("Business {id}"));
    new.id = Some(id.to_string());
    store.add_business(&new).await.expect("add business");
}

fn draft(business_id: &str, direction: Direction, body: &str) -> NewPromptVersion {
    NewPromptVersion {
        business_id: business_id.to_string(),
        direction,
        body: body.to_string(),
        parent_version_id: None,
        compact_tokens: None,
        full_tokens: None,
        author: "ops@example.com".to_string(),
        note: String::new(),
    }
}

async fn create(
    store: &Store,
    business_id: &str,
    direction: Direction,
    body: &str,
) -> PromptVersion {
    store
        .create_prompt_version(&draft(business_id, direction, body))
        .await
        .expect("create prompt version")
}

async fn status_of(store: &Store, id: &str) -> PromptStatus {
    store
        .prompt_version(id)
        .await
        .unwrap()
        .expect("version exists")
        .status
}

/// Production rows of (business, direction), counted from the full listing.
async fn production_count(store: &Store, business_id: &str, direction: Direction) -> usize {
    store
        .prompt_versions(business_id, Some(direction))
        .await
        .unwrap()
        .iter()
        .filter(|v| v.status == PromptStatus::Production)
        .count()
}

/// Promotes `count` fresh drafts of (`biz`, inbound) to production all at once and checks that
/// every promote ended in Ok or Conflict and exactly one production row is left.
async fn promote_concurrently(store: &Store, count: usize) {
    business(store, "biz").await;
    let mut drafts = Vec::new();
    for n in 0..count {
        drafts.push(
            create(store, "biz", Direction::Inbound, &format!("draft {n}"))
                .await
                .id,
        );
    }
    // An existing production version too, so every promote also has to archive one.
    store
        .promote(&drafts[0], PromptStatus::Production)
        .await
        .unwrap();

    let tasks: Vec<_> = drafts
        .iter()
        .map(|id| {
            let store = store.clone();
            let id = id.clone();
            tokio::spawn(async move {
                (
                    id.clone(),
                    store.promote(&id, PromptStatus::Production).await,
                )
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        let (id, outcome) = task.await.expect("promote task");
        match outcome {
            Ok(version) => {
                assert_eq!(version.id, id);
                assert_eq!(version.status, PromptStatus::Production);
                winners.push(id);
            }
            Err(StoreError::Conflict(message)) => assert!(message.contains(&id), "{message}"),
            Err(other) => panic!("promote {id}: expected Ok or Conflict, got {other:?}"),
        }
    }
    assert!(!winners.is_empty(), "no promote succeeded");

    assert_eq!(production_count(store, "biz", Direction::Inbound).await, 1);
    let production = store
        .production_version("biz", Direction::Inbound)
        .await
        .unwrap()
        .expect("a production version");
    assert!(
        winners.contains(&production.id),
        "{production:?} is not a winner"
    );
    for id in &drafts {
        let status = status_of(store, id).await;
        if *id == production.id {
            assert_eq!(status, PromptStatus::Production);
        } else {
            // Every other version either never made it or was archived by a later winner.
            assert!(
                matches!(status, PromptStatus::Archived | PromptStatus::Draft),
                "{id} is {status}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

async fn draft_staging_production_and_rollback(store: Store) {
    business(&store, "biz").await;
    let first = create(&store, "biz", Direction::Inbound, "first").await;
    assert_eq!(first.status, PromptStatus::Draft);
    assert_eq!(
        store
            .production_version("biz", Direction::Inbound)
            .await
            .unwrap(),
        None
    );

    let staged = store
        .promote(&first.id, PromptStatus::Staging)
        .await
        .unwrap();
    assert_eq!(staged.status, PromptStatus::Staging);
    let live = store
        .promote(&first.id, PromptStatus::Production)
        .await
        .unwrap();
    assert_eq!(live.status, PromptStatus::Production);
    assert_eq!(
        store
            .production_version("biz", Direction::Inbound)
            .await
            .unwrap(),
        Some(live.clone())
    );
    // Promoting the production version again changes nothing.
    assert_eq!(
        store
            .promote(&first.id, PromptStatus::Production)
            .await
            .unwrap(),
        live
    );

    let second = create(&store, "biz", Direction::Inbound, "second").await;
    store
        .promote(&second.id, PromptStatus::Staging)
        .await
        .unwrap();
    let second_live = store
        .promote(&second.id, PromptStatus::Production)
        .await
        .unwrap();
    assert_eq!(second_live.status, PromptStatus::Production);
    assert_eq!(status_of(&store, &first.id).await, PromptStatus::Archived);
    assert_eq!(
        store
            .production_version("biz", Direction::Inbound)
            .await
            .unwrap()
            .map(|v| v.id),
        Some(second.id.clone())
    );

    let back = store
        .rollback("biz", Direction::Inbound, &first.id)
        .await
        .unwrap();
    assert_eq!(back.id, first.id);
    assert_eq!(back.status, PromptStatus::Production);
    assert_eq!(back.body, "first");
    assert_eq!(status_of(&store, &second.id).await, PromptStatus::Archived);
    assert_eq!(
        store
            .production_version("biz", Direction::Inbound)
            .await
            .unwrap()
            .map(|v| v.id),
        Some(first.id.clone())
    );
    assert_eq!(production_count(&store, "biz", Direction::Inbound).await, 1);
    // Rolling back to the production version is a no-op.
    assert_eq!(
        store
            .rollback("biz", Direction::Inbound, &first.id)
            .await
            .unwrap(),
        back
    );

    // An archived version can go back to staging.
    let restaged = store
        .promote(&second.id, PromptStatus::Staging)
        .await
        .unwrap();
    assert_eq!(restaged.status, PromptStatus::Staging);
    // The other direction is untouched throughout.
    assert_eq!(
        store
            .production_version("biz", Direction::Outbound)
            .await
            .unwrap(),
        None
    );
}

async fn concurrent_promotes_leave_exactly_one_production(store: Store) {
    promote_concurrently(&store, 8).await;
}

async fn versions_are_numbered_per_business_and_direction(store: Store) {
    business(&store, "a").await;
    business(&store, "b").await;
    let mut numbers = Vec::new();
    for (biz, direction) in [
        ("a", Direction::Inbound),
        ("a", Direction::Inbound),
        ("a", Direction::Outbound),
        ("b", Direction::Inbound),
        ("a", Direction::Inbound),
        ("a", Direction::Outbound),
        ("b", Direction::Inbound),
        ("b", Direction::Outbound),
    ] {
        numbers.push(create(&store, biz, direction, "body").await.version);
    }
    assert_eq!(numbers, [1, 2, 1, 1, 3, 2, 2, 1]);

    let listed: Vec<i64> = store
        .prompt_versions("a", Some(Direction::Inbound))
        .await
        .unwrap()
        .iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(listed, [3, 2, 1], "newest first");
    let both: Vec<(Direction, i64)> = store
        .prompt_versions("a", None)
        .await
        .unwrap()
        .iter()
        .map(|v| (v.direction, v.version))
        .collect();
    assert_eq!(
        both,
        [
            (Direction::Inbound, 3),
            (Direction::Inbound, 2),
            (Direction::Inbound, 1),
            (Direction::Outbound, 2),
            (Direction::Outbound, 1),
        ]
    );
    assert!(
        store
            .prompt_versions("nobody", None)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn concurrent_creates_get_distinct_numbers(store: Store) {
    business(&store, "biz").await;
    let tasks: Vec<_> = (0..6)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .create_prompt_version(&draft("biz", Direction::Outbound, &format!("body {n}")))
                    .await
            })
        })
        .collect();
    let mut numbers = Vec::new();
    for task in tasks {
        numbers.push(task.await.unwrap().expect("create").version);
    }
    numbers.sort_unstable();
    assert_eq!(numbers, [1, 2, 3, 4, 5, 6]);
}

async fn a_version_round_trips_all_its_fields(store: Store) {
    business(&store, "biz").await;
    let parent = create(&store, "biz", Direction::Outbound, "parent").await;
    let before = voxrelay::store::now_ms();
    let new = NewPromptVersion {
        business_id: "biz".to_string(),
        direction: Direction::Outbound,
        body: "You call to confirm {{ appointment }}.\nBe «brief».".to_string(),
        parent_version_id: Some(parent.id.clone()),
        compact_tokens: Some(412),
        full_tokens: Some(2_950),
        author: "ana@example.com".to_string(),
        note: "shorter opening".to_string(),
    };
    let created = store.create_prompt_version(&new).await.unwrap();
    assert!(created.id.starts_with("pv_"), "{}", created.id);
    assert_eq!(created.business_id, "biz");
    assert_eq!(created.direction, Direction::Outbound);
    assert_eq!(created.version, 2);
    assert_eq!(created.body, new.body);
    assert_eq!(created.status, PromptStatus::Draft);
    assert_eq!(created.parent_version_id, Some(parent.id.clone()));
    assert_eq!(created.compact_tokens, Some(412));
    assert_eq!(created.full_tokens, Some(2_950));
    assert_eq!(created.author, "ana@example.com");
    assert_eq!(created.note, "shorter opening");
    assert!(created.created_at_ms >= before);
    assert_eq!(
        store.prompt_version(&created.id).await.unwrap(),
        Some(created.clone())
    );
    assert_eq!(parent.parent_version_id, None);
    assert_eq!(parent.compact_tokens, None);
    assert_eq!(store.prompt_version("pv_missing").await.unwrap(), None);

    let json = serde_json::to_value(&created).unwrap();
    assert_eq!(json["status"], "draft");
    assert_eq!(json["direction"], "outbound");
}

async fn a_version_for_an_unknown_business_is_not_found(store: Store) {
    match store
        .create_prompt_version(&draft("ghost", Direction::Inbound, "body"))
        .await
    {
        Err(StoreError::NotFound(message)) => assert!(message.contains("ghost"), "{message}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

async fn an_invalid_version_is_rejected_naming_the_field(store: Store) {
    business(&store, "biz").await;
    let mut empty_body = draft("biz", Direction::Inbound, "  ");
    let mut no_author = draft("biz", Direction::Inbound, "body");
    no_author.author = String::new();
    let mut negative = draft("biz", Direction::Inbound, "body");
    negative.full_tokens = Some(-1);
    empty_body.note = "x".to_string();
    for (new, field) in [
        (empty_body, "body"),
        (no_author, "author"),
        (negative, "full_tokens"),
    ] {
        match store.create_prompt_version(&new).await {
            Err(StoreError::Invalid(message)) => assert!(message.contains(field), "{message}"),
            other => panic!("{field}: expected Invalid, got {other:?}"),
        }
    }
    assert!(store.prompt_versions("biz", None).await.unwrap().is_empty());
}

async fn a_parent_version_must_be_of_the_same_business_and_direction(store: Store) {
    business(&store, "a").await;
    business(&store, "b").await;
    let of_b = create(&store, "b", Direction::Inbound, "b").await;
    let outbound = create(&store, "a", Direction::Outbound, "a out").await;
    for parent in [of_b.id.as_str(), outbound.id.as_str(), "pv_missing"] {
        let mut new = draft("a", Direction::Inbound, "child");
        new.parent_version_id = Some(parent.to_string());
        match store.create_prompt_version(&new).await {
            Err(StoreError::Invalid(message)) => assert!(message.contains(parent), "{message}"),
            other => panic!("parent {parent}: expected Invalid, got {other:?}"),
        }
    }
}

async fn promote_and_rollback_refuse_bad_targets(store: Store) {
    business(&store, "a").await;
    business(&store, "b").await;
    let v1 = create(&store, "a", Direction::Inbound, "one").await;
    let v2 = create(&store, "a", Direction::Inbound, "two").await;
    let of_b = create(&store, "b", Direction::Inbound, "b").await;
    store
        .promote(&v1.id, PromptStatus::Production)
        .await
        .unwrap();

    for to in [PromptStatus::Draft, PromptStatus::Archived] {
        assert!(
            matches!(store.promote(&v2.id, to).await, Err(StoreError::Invalid(_))),
            "promote to {to}"
        );
    }
    assert!(matches!(
        store.promote("pv_missing", PromptStatus::Production).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.promote("pv_missing", PromptStatus::Staging).await,
        Err(StoreError::NotFound(_))
    ));
    match store.promote(&v1.id, PromptStatus::Staging).await {
        Err(StoreError::Conflict(message)) => assert!(message.contains("production"), "{message}"),
        other => panic!("production to staging: expected Conflict, got {other:?}"),
    }

    // v2 is a draft: rollback only goes back to archived versions.
    match store.rollback("a", Direction::Inbound, &v2.id).await {
        Err(StoreError::Conflict(message)) => assert!(message.contains("draft"), "{message}"),
        other => panic!("rollback to a draft: expected Conflict, got {other:?}"),
    }
    match store.rollback("a", Direction::Inbound, &of_b.id).await {
        Err(StoreError::Invalid(message)) => assert!(message.contains(&of_b.id), "{message}"),
        other => panic!("rollback to another business: expected Invalid, got {other:?}"),
    }
    assert!(matches!(
        store.rollback("a", Direction::Outbound, &v1.id).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.rollback("a", Direction::Inbound, "pv_missing").await,
        Err(StoreError::NotFound(_))
    ));
    // None of the refused operations touched the production version.
    assert_eq!(
        store
            .production_version("a", Direction::Inbound)
            .await
            .unwrap()
            .map(|v| v.id),
        Some(v1.id.clone())
    );
    assert_eq!(status_of(&store, &v2.id).await, PromptStatus::Draft);
}

async fn experiments_run_one_at_a_time_per_business_and_direction(store: Store) {
    business(&store, "biz").await;
    let control = create(&store, "biz", Direction::Inbound, "control").await;
    let variant = create(&store, "biz", Direction::Inbound, "variant").await;
    let before = voxrelay::store::now_ms();

    let first = store
        .create_experiment("biz", Direction::Inbound, &control.id, &variant.id, 50)
        .await
        .unwrap();
    assert!(first.id.starts_with("exp_"), "{}", first.id);
    assert_eq!(first.status, ExperimentStatus::Draft);
    assert_eq!(first.traffic_percent, 50);
    assert_eq!((first.started_at_ms, first.ended_at_ms), (None, None));
    assert_eq!(
        store.experiment(&first.id).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        store
            .running_experiment("biz", Direction::Inbound)
            .await
            .unwrap(),
        None
    );

    let second = store
        .create_experiment("biz", Direction::Inbound, &variant.id, &control.id, 10)
        .await
        .unwrap();

    let running = store.start_experiment(&first.id).await.unwrap();
    assert_eq!(running.status, ExperimentStatus::Running);
    assert!(running.started_at_ms.is_some_and(|t| t >= before));
    assert_eq!(
        store
            .running_experiment("biz", Direction::Inbound)
            .await
            .unwrap(),
        Some(running.clone())
    );
    // Starting it again is a no-op.
    assert_eq!(store.start_experiment(&first.id).await.unwrap(), running);

    match store.start_experiment(&second.id).await {
        Err(StoreError::Conflict(message)) => assert!(message.contains(&first.id), "{message}"),
        other => panic!("second running experiment: expected Conflict, got {other:?}"),
    }
    assert_eq!(
        store
            .experiment(&second.id)
            .await
            .unwrap()
            .map(|e| e.status),
        Some(ExperimentStatus::Draft)
    );

    let stopped = store.stop_experiment(&first.id).await.unwrap();
    assert_eq!(stopped.status, ExperimentStatus::Stopped);
    assert!(
        stopped
            .ended_at_ms
            .is_some_and(|end| end >= running.started_at_ms.unwrap_or(0))
    );
    assert_eq!(store.stop_experiment(&first.id).await.unwrap(), stopped);
    assert_eq!(
        store
            .running_experiment("biz", Direction::Inbound)
            .await
            .unwrap(),
        None
    );
    assert!(matches!(
        store.start_experiment(&first.id).await,
        Err(StoreError::Conflict(_))
    ));

    let now_running = store.start_experiment(&second.id).await.unwrap();
    assert_eq!(
        store
            .running_experiment("biz", Direction::Inbound)
            .await
            .unwrap(),
        Some(now_running)
    );

    assert!(matches!(
        store.start_experiment("exp_missing").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.stop_experiment("exp_missing").await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.experiment("exp_missing").await.unwrap(), None);

    let json = serde_json::to_value(&stopped).unwrap();
    assert_eq!(json["status"], "stopped");
}

async fn an_experiment_needs_a_percent_from_0_to_100(store: Store) {
    business(&store, "biz").await;
    let control = create(&store, "biz", Direction::Inbound, "control").await;
    let variant = create(&store, "biz", Direction::Inbound, "variant").await;
    for percent in [-1, 101, 1_000] {
        match store
            .create_experiment("biz", Direction::Inbound, &control.id, &variant.id, percent)
            .await
        {
            Err(StoreError::Invalid(message)) => {
                assert!(message.contains(&percent.to_string()), "{message}")
            }
            other => panic!("{percent}%: expected Invalid, got {other:?}"),
        }
    }
    for percent in [0, 100] {
        let experiment = store
            .create_experiment("biz", Direction::Inbound, &control.id, &variant.id, percent)
            .await
            .unwrap();
        assert_eq!(experiment.traffic_percent, percent);
    }
}

async fn an_experiment_needs_versions_of_its_business_and_direction(store: Store) {
    business(&store, "a").await;
    business(&store, "b").await;
    let a_in = create(&store, "a", Direction::Inbound, "a in").await;
    let a_in_2 = create(&store, "a", Direction::Inbound, "a in 2").await;
    let a_out = create(&store, "a", Direction::Outbound, "a out").await;
    let b_in = create(&store, "b", Direction::Inbound, "b in").await;

    for (control, variant, bad) in [
        (&a_in.id, &b_in.id, &b_in.id),
        (&b_in.id, &a_in.id, &b_in.id),
        (&a_in.id, &a_out.id, &a_out.id),
    ] {
        match store
            .create_experiment("a", Direction::Inbound, control, variant, 50)
            .await
        {
            Err(StoreError::Invalid(message)) => {
                assert!(message.contains(bad.as_str()), "{message}")
            }
            other => panic!("{control}/{variant}: expected Invalid, got {other:?}"),
        }
    }
    assert!(matches!(
        store
            .create_experiment("a", Direction::Inbound, &a_in.id, &a_in.id, 50)
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store
            .create_experiment("a", Direction::Inbound, &a_in.id, "pv_missing", 50)
            .await,
        Err(StoreError::NotFound(_))
    ));
    store
        .create_experiment("a", Direction::Inbound, &a_in.id, &a_in_2.id, 50)
        .await
        .unwrap();
}

async fn a_call_records_its_prompt_version_and_variant(store: Store) {
    business(&store, "biz").await;
    let version = create(&store, "biz", Direction::Outbound, "body").await;
    let call = NewCall {
        call_sid: "CA_prompt".to_string(),
        stream_sid: None,
        business_id: "biz".to_string(),
        direction: Direction::Outbound,
        from_number: "+14155550100".to_string(),
        to_number: "+442079460958".to_string(),
        started_at_ms: 1_767_225_600_000,
        instance_id: String::new(),
    };
    store.insert_call(&call).await.unwrap();
    assert_eq!(
        store.call_prompt("CA_prompt").await.unwrap(),
        Some((None, None))
    );

    store
        .set_call_prompt(
            "CA_prompt",
            Some(&version.id),
            Some(("exp_1", voxrelay::domain::Arm::Variant)),
        )
        .await
        .unwrap();
    assert_eq!(
        store.call_prompt("CA_prompt").await.unwrap(),
        Some((Some(version.id.clone()), Some("variant".to_string())))
    );
    // The rest of the call record is untouched.
    let record = store.call("CA_prompt").await.unwrap().expect("call");
    assert_eq!(record.business_id, "biz");
    assert_eq!(record.started_at_ms, call.started_at_ms);

    store
        .set_call_prompt("CA_prompt", Some(&version.id), None)
        .await
        .unwrap();
    assert_eq!(
        store.call_prompt("CA_prompt").await.unwrap(),
        Some((Some(version.id.clone()), None))
    );

    assert!(matches!(
        store
            .set_call_prompt("CA_missing", Some(&version.id), None)
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.set_call_prompt("CA_prompt", Some(""), None).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(store.call_prompt("CA_missing").await.unwrap(), None);
}

/// With the store's rules out of the way (raw SQL on a second connection), the database itself
/// refuses a second production version or a second running experiment for one (business,
/// direction), while allowing one per direction.
async fn the_database_refuses_a_second_production_or_running_row(url: String) {
    let store = Store::connect(&url).await.expect("open store");
    store.migrate().await.expect("migrate");
    business(&store, "biz").await;
    let v1 = create(&store, "biz", Direction::Inbound, "one").await;
    let v2 = create(&store, "biz", Direction::Inbound, "two").await;
    let out = create(&store, "biz", Direction::Outbound, "out").await;
    store
        .promote(&v1.id, PromptStatus::Production)
        .await
        .unwrap();
    let experiment = store
        .create_experiment("biz", Direction::Inbound, &v1.id, &v2.id, 50)
        .await
        .unwrap();
    store.start_experiment(&experiment.id).await.unwrap();

    let mut conn = AnyConnection::connect(&url).await.expect("raw connection");
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);

    let second = sqlx::query("UPDATE prompt_versions SET status = 'production' WHERE id = $1")
        .bind(&v2.id)
        .execute(&mut conn)
        .await;
    let error = second.expect_err("a second production row was accepted");
    assert!(
        error
            .as_database_error()
            .is_some_and(|e| e.is_unique_violation()),
        "{error}"
    );
    let inserted = sqlx::query(
        "INSERT INTO prompt_versions (id, business_id, direction, version, body, status, author, \
         created_at_ms) VALUES ('pv_raw', 'biz', 'inbound', 99, 'raw', 'production', 'sql', 1)",
    )
    .execute(&mut conn)
    .await;
    assert!(
        inserted.is_err(),
        "an inserted second production row was accepted"
    );
    // One production per direction is fine.
    sqlx::query("UPDATE prompt_versions SET status = 'production' WHERE id = $1")
        .bind(&out.id)
        .execute(&mut conn)
        .await
        .expect("production for the other direction");
    // Unknown statuses are refused too.
    assert!(
        sqlx::query("UPDATE prompt_versions SET status = 'live' WHERE id = $1")
            .bind(&v2.id)
            .execute(&mut conn)
            .await
            .is_err()
    );

    let running = sqlx::query(
        "INSERT INTO experiments (id, business_id, direction, control_version_id, \
         variant_version_id, traffic_percent, status, created_at_ms) \
         VALUES ('exp_raw', 'biz', 'inbound', $1, $2, 50, 'running', 1)",
    )
    .bind(&v1.id)
    .bind(&v2.id)
    .execute(&mut conn)
    .await;
    assert!(running.is_err(), "a second running experiment was accepted");
    let bad_percent = sqlx::query(
        "INSERT INTO experiments (id, business_id, direction, control_version_id, \
         variant_version_id, traffic_percent, status, created_at_ms) \
         VALUES ('exp_pct', 'biz', 'inbound', $1, $2, 101, 'draft', 1)",
    )
    .bind(&v1.id)
    .bind(&v2.id)
    .execute(&mut conn)
    .await;
    assert!(bad_percent.is_err(), "traffic_percent 101 was accepted");
    conn.close().await.unwrap();

    assert_eq!(
        store
            .production_version("biz", Direction::Inbound)
            .await
            .unwrap()
            .map(|v| v.id),
        Some(v1.id.clone())
    );
    store.close().await;
}

/// The concurrent promote scenario on a store with several pooled connections (a SQLite file
/// in WAL mode, or PostgreSQL), where the transactions really overlap.
async fn concurrent_promotes_on_a_pooled_store_leave_exactly_one_production(url: String) {
    let store = Store::connect(&url).await.expect("open store");
    store.migrate().await.expect("migrate");
    promote_concurrently(&store, 8).await;
    store.close().await;
}
