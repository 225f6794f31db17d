//! Helpers shared by the test binaries: a migrated store per backend, and a throw-away
//! PostgreSQL schema per test.
//!
//! Each test binary includes this module and uses a part of it.
#![allow(dead_code)]

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};
use voxrelay::store::{Backend, Store};

pub mod api;
pub mod split;

/// Environment variable with the URL of a PostgreSQL database the tests may create schemas in.
pub const POSTGRES_URL_VAR: &str = "VOXRELAY_TEST_POSTGRES_URL";

/// Runs `scenario` on a migrated in-memory SQLite store.
pub async fn on_sqlite<F, Fut>(scenario: F)
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    let store = Store::connect("sqlite::memory:")
        .await
        .expect("open in-memory SQLite");
    assert_eq!(store.backend(), Backend::Sqlite);
    store.migrate().await.expect("migrate SQLite");
    scenario(store.clone()).await;
    store.close().await;
}

/// Runs `scenario` on a migrated PostgreSQL store in a schema of its own, then drops the schema
/// (also when the scenario panics). Skips, saying so, when `VOXRELAY_TEST_POSTGRES_URL` is unset.
pub async fn on_postgres<F, Fut>(test: &str, scenario: F)
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    in_postgres_schema(test, |url| async move {
        let store = Store::connect(&url).await.expect("open PostgreSQL store");
        assert_eq!(store.backend(), Backend::Postgres);
        store.migrate().await.expect("migrate PostgreSQL");
        scenario(store.clone()).await;
        store.close().await;
    })
    .await;
}

/// Runs `test_body` with the URL of a fresh, empty PostgreSQL schema, then drops the schema (also
/// when the body panics). Skips, saying so, when `VOXRELAY_TEST_POSTGRES_URL` is unset.
pub async fn in_postgres_schema<F, Fut>(test: &str, test_body: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let Ok(base_url) = std::env::var(POSTGRES_URL_VAR) else {
        // Written to the stderr handle, not with eprintln!, so the test harness does not
        // capture it: whoever runs the suite sees which tests did not run.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "skipped postgres::{test}: {POSTGRES_URL_VAR} is not set"
        );
        return;
    };
    let schema = format!("vr_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&base_url)
        .await
        .expect("connect to VOXRELAY_TEST_POSTGRES_URL");
    admin
        .execute(AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .await
        .expect("create test schema");

    let outcome = AssertUnwindSafe(test_body(with_search_path(&base_url, &schema)))
        .catch_unwind()
        .await;

    let dropped = admin
        .execute(AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .await;
    let _ = admin.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    dropped.expect("drop test schema");
}

/// `base_url` with every connection's `search_path` set to `schema` (libpq `options` parameter).
pub fn with_search_path(base_url: &str, schema: &str) -> String {
    let separator = if base_url.contains('?') { '&' } else { '?' };
    format!("{base_url}{separator}options=-c%20search_path%3D{schema}")
}

/// A proxy world whose simulated model takes `first_audio_ms` to its first audio, with the
/// business `dental` ("Bright Smile Dental") on +15005550006.
pub async fn dental_world(first_audio_ms: u64) -> voxrelay_sim::world::World {
    dental_world_configured(first_audio_ms, None).await
}

/// [`dental_world`] with `configure` applied to the proxy's configuration.
pub async fn dental_world_configured(
    first_audio_ms: u64,
    configure: Option<voxrelay_sim::world::Configure>,
) -> voxrelay_sim::world::World {
    use voxrelay_sim::upstream::SimUpstreamConfig;
    dental_world_from(voxrelay_sim::world::WorldOptions {
        upstream: SimUpstreamConfig {
            first_audio_delay_ms: first_audio_ms,
            ..SimUpstreamConfig::default()
        },
        configure,
        ..voxrelay_sim::world::WorldOptions::default()
    })
    .await
}

/// A world started with `options`, with the business `dental` ("Bright Smile Dental") on
/// +15005550006.
pub async fn dental_world_from(
    options: voxrelay_sim::world::WorldOptions,
) -> voxrelay_sim::world::World {
    let world = voxrelay_sim::world::World::start(options)
        .await
        .expect("world starts");
    world
        .add_business(
            "dental",
            "Bright Smile Dental",
            "We clean teeth.",
            "Hello.",
            "+15005550006",
        )
        .await
        .expect("business");
    world
}

/// A check that needs an outside tool (promtool, Chromium) cannot run because the tool is
/// missing (`why`). With `VOXRELAY_REQUIRE_TOOLS=1` (as `.ci/run` sets) that fails the test;
/// otherwise the check is skipped, and the terminal is told so.
pub fn tool_missing(tool: &str, check: &str, why: impl std::fmt::Display) {
    if std::env::var("VOXRELAY_REQUIRE_TOOLS").as_deref() == Ok("1") {
        panic!("{tool} is needed for {check} and VOXRELAY_REQUIRE_TOOLS=1: {why}");
    }
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "skipped {check}: {tool} is not installed ({why}); .ci/run installs it"
    );
}

/// Waits (at most `limit`) until `store` holds the ended record of `call_sid`.
pub async fn ended_within(
    store: &Store,
    call_sid: &str,
    limit: std::time::Duration,
) -> Option<voxrelay::store::CallRecord> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Ok(Some(call)) = store.call(call_sid).await
            && call.ended_at_ms.is_some()
        {
            return Some(call);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The proxy's `/metrics` text.
pub async fn metrics(world: &voxrelay_sim::world::World) -> String {
    reqwest::get(format!("http://{}/metrics", world.proxy_addr))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("body")
}
