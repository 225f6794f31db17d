//! Persistent state: businesses (with their guard settings), their phone numbers, a record of
//! every call, and the guard decisions made in each call.
//!
//! One set of repository functions runs on both SQLite (the embedded default,
//! `sqlite://voxrelay.db?mode=rwc`, or `sqlite::memory:` for tests) and PostgreSQL (`postgres://`
//! or `postgresql://` URLs) through sqlx's `Any` driver. Queries are checked at run time, use `$1`
//! placeholders (which both backends accept), and bind only text, integers and `f64`: ids are
//! `TEXT`, times are `BIGINT` milliseconds since the Unix epoch, scores and weights are
//! `DOUBLE PRECISION`, flags are `INTEGER` 0/1 (a `BOOLEAN` column cannot be read through `Any` on
//! SQLite). The schema lives in `migrations/sqlite/` and `migrations/postgres/`, embedded in the
//! binary; [`Store::migrate`] applies the set that matches the URL.
//!
//! SQLite connections enforce foreign keys; file databases use WAL with `synchronous = NORMAL`.
//!
//! Guard events are stored only redacted: [`Store::insert_event`] passes their detail through
//! [`redact`](crate::guard::redact::redact) before writing it.
//!
//! One file per table group: `businesses` (businesses and their numbers), `calls`, `events`,
//! `rules` (a business's guard rules), `prompts` (versions and experiments). This file connects,
//! migrates, and holds the errors and the checks they share.

mod backend;
mod businesses;
mod calls;
mod e164;
mod events;
mod model;
mod outbound;
mod prompts;
mod rules;
mod tools;

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::AnyPool;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::error::ErrorKind;
use sqlx::migrate::{MigrateError, Migration, MigrationType, Migrator};
use sqlx::{Row, SqlSafeStr};

use crate::domain::{Direction, GuardPolicy};
use crate::guard::redact::redact;

pub use backend::Backend;
pub use e164::normalize_e164;
pub use model::{
    Business, BusinessRule, BusinessTool, BusinessUpdate, CallEnd, CallEvent, CallRecord,
    CallStatusReport, CallSummary, DEFAULT_GUARD_POLICY, DEFAULT_LANGUAGE, DEFAULT_VOICE,
    ExperimentCall, NewBusiness, NewCall, NewCallEvent, NewToolCall, OutboundCall, ToolCallRecord,
    TransferReport, TransferTarget,
};
pub use outbound::{NewOutboundCall, Reservation};
pub use prompts::{
    Experiment, ExperimentStatus, NewPromptVersion, PromptStatus, PromptVersion,
    UnknownExperimentStatus, UnknownPromptStatus,
};

/// The SQLite schema, migration 1.
const SQLITE_INIT: &str = include_str!("../../migrations/sqlite/0001_init.sql");
/// The PostgreSQL schema, migration 1.
const POSTGRES_INIT: &str = include_str!("../../migrations/postgres/0001_init.sql");
/// SQLite migration 2: guard policy, call events, business guard rules.
const SQLITE_GUARDS: &str = include_str!("../../migrations/sqlite/0002_guards.sql");
/// PostgreSQL migration 2: guard policy, call events, business guard rules.
const POSTGRES_GUARDS: &str = include_str!("../../migrations/postgres/0002_guards.sql");
/// SQLite migration 3: prompt versions, experiments, the prompt a call ran.
const SQLITE_PROMPTS: &str = include_str!("../../migrations/sqlite/0003_prompts.sql");
/// PostgreSQL migration 3: prompt versions, experiments, the prompt a call ran.
const POSTGRES_PROMPTS: &str = include_str!("../../migrations/postgres/0003_prompts.sql");
/// SQLite migration 4: business hours and required sections, call experiment and summary.
const SQLITE_SUMMARIES: &str = include_str!("../../migrations/sqlite/0004_summaries.sql");
/// PostgreSQL migration 4: business hours and required sections, call experiment and summary.
const POSTGRES_SUMMARIES: &str = include_str!("../../migrations/postgres/0004_summaries.sql");
/// SQLite migration 5: the instance holding each call, business call limits.
const SQLITE_LIFECYCLE: &str = include_str!("../../migrations/sqlite/0005_lifecycle.sql");
/// PostgreSQL migration 5: the instance holding each call, business call limits.
const POSTGRES_LIFECYCLE: &str = include_str!("../../migrations/postgres/0005_lifecycle.sql");
/// SQLite migration 6: each business's fallback.
const SQLITE_FALLBACK: &str = include_str!("../../migrations/sqlite/0006_fallback.sql");
/// PostgreSQL migration 6: each business's fallback.
const POSTGRES_FALLBACK: &str = include_str!("../../migrations/postgres/0006_fallback.sql");
/// SQLite migration 7: business tools, built-in call control switches, tool calls.
const SQLITE_TOOLS: &str = include_str!("../../migrations/sqlite/0007_tools.sql");
/// PostgreSQL migration 7: business tools, built-in call control switches, tool calls.
const POSTGRES_TOOLS: &str = include_str!("../../migrations/postgres/0007_tools.sql");
/// SQLite migration 8: Twilio's status callbacks.
const SQLITE_CALL_STATUS: &str = include_str!("../../migrations/sqlite/0008_call_status.sql");
/// PostgreSQL migration 8: Twilio's status callbacks.
const POSTGRES_CALL_STATUS: &str = include_str!("../../migrations/postgres/0008_call_status.sql");
/// SQLite migration 10: outbound calls, calling hours, rate and voicemail per business.
const SQLITE_OUTBOUND: &str = include_str!("../../migrations/sqlite/0010_outbound.sql");
/// PostgreSQL migration 10: outbound calls, calling hours, rate and voicemail per business.
const POSTGRES_OUTBOUND: &str = include_str!("../../migrations/postgres/0010_outbound.sql");
/// SQLite migration 11: the verdict and stage of each guard decision.
const SQLITE_GUARD_DECISIONS: &str =
    include_str!("../../migrations/sqlite/0011_guard_decisions.sql");
/// PostgreSQL migration 11: the verdict and stage of each guard decision.
const POSTGRES_GUARD_DECISIONS: &str =
    include_str!("../../migrations/postgres/0011_guard_decisions.sql");
/// SQLite migration 9: transfer targets and transfer outcomes.
const SQLITE_TRANSFERS: &str = include_str!("../../migrations/sqlite/0009_transfers.sql");
/// PostgreSQL migration 9: transfer targets and transfer outcomes.
const POSTGRES_TRANSFERS: &str = include_str!("../../migrations/postgres/0009_transfers.sql");

/// A write of a business's row that failed: [`StoreError::NotFound`] naming the business when
/// its foreign key found none, else the query's error.
fn unless_business_missing(e: sqlx::Error, business_id: &str) -> StoreError {
    match e.as_database_error().map(|d| d.kind()) {
        Some(ErrorKind::ForeignKeyViolation) => {
            StoreError::NotFound(format!("business {business_id:?}"))
        }
        _ => StoreError::Query(e),
    }
}

/// The `businesses` columns, as every query selects them.
const BUSINESS_COLUMNS: &str = "id, name, language, voice, ai_prompt, outbound_ai_prompt, \
     greeting_instructions, guard_policy, hours, required_sections, created_at_ms, updated_at_ms, \
     max_concurrent_calls, max_call_duration_s, fallback, end_call_enabled, transfer_enabled, \
     transfer_targets, time_zone, calling_hours, outbound_per_minute, voicemail_message";

/// The `calls` columns, as every query selects them.
pub(crate) const CALL_COLUMNS: &str = "call_sid, stream_sid, business_id, direction, \
     from_number, to_number, started_at_ms, ended_at_ms, greeting_latency_ms, end_reason, turns, \
     turn_p50_ms, turn_max_ms, barge_ins, frames_dropped, upstream_errors, total_tokens, \
     echo_events, guard_blocks, prompt_version_id, experiment_id, variant, instance_id";

/// Separates names in the `businesses.required_sections` column.
const SECTION_SEPARATOR: char = '\n';

/// Separates rule ids in the `call_events.rules` column.
const RULE_SEPARATOR: &str = ",";

/// How long an operation waits for a free pooled connection before failing.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections in a SQLite file pool: one writer at a time anyway, a few concurrent readers.
const SQLITE_FILE_MAX_CONNECTIONS: u32 = 4;

/// Connections in a PostgreSQL pool.
const POSTGRES_MAX_CONNECTIONS: u32 = 10;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or opened. `url` has any password replaced by `***`.
    #[error("cannot connect to database {url}: {source}")]
    Connect {
        /// The database URL, password redacted.
        url: String,
        /// What the driver reported.
        source: sqlx::Error,
    },
    /// Applying the embedded migrations failed (including a previously applied migration whose
    /// text has since changed).
    #[error("database migration failed: {0}")]
    Migrate(#[from] MigrateError),
    /// A query failed for a reason other than those below (connection lost, bad stored data...).
    #[error("database query failed: {0}")]
    Query(#[from] sqlx::Error),
    /// An argument was rejected before reaching the database; the message names the field or
    /// value and the problem.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// Something the operation needs does not exist; the message names it.
    #[error("not found: {0}")]
    NotFound(String),
    /// The id, number or CallSid is already stored; the message names it.
    #[error("conflict: {0}")]
    Conflict(String),
}

impl StoreError {
    /// Whether the database could not be reached (a lost or refused connection, no pooled
    /// connection in time, a closed pool): trying again later may succeed. A refusal for what
    /// the database holds (a constraint, a missing row, a bad value) is not.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Connect { .. } => true,
            StoreError::Query(e) => matches!(
                e,
                sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
                    | sqlx::Error::Protocol(_)
            ),
            StoreError::Migrate(_)
            | StoreError::Invalid(_)
            | StoreError::NotFound(_)
            | StoreError::Conflict(_) => false,
        }
    }
}

/// Milliseconds since the Unix epoch (UTC), the unit of every time in the store.
///
/// A clock set before 1970 reads as 0.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

/// A pool of connections to the voxrelay database, SQLite or PostgreSQL.
///
/// Cheap to clone: clones share the pool.
#[derive(Debug, Clone)]
pub struct Store {
    /// One pool type for both backends, so every query is written once.
    pool: AnyPool,
    /// Kept because migrations differ per backend (and for logs).
    backend: Backend,
}

impl Store {
    /// Opens a pool for `url` and checks that one connection works. Does not migrate; call
    /// [`Store::migrate`] next.
    ///
    /// - `sqlite:` URLs: foreign keys on for every connection. A file database is switched to WAL
    ///   (unless opened `mode=ro`) with `synchronous = NORMAL`; add `?mode=rwc` to create the file
    ///   if missing. An in-memory database (`sqlite::memory:`, `mode=memory`) lives only as long
    ///   as its one connection, so that pool holds exactly one connection and never retires it.
    /// - `postgres://` / `postgresql://` URLs: any libpq-style parameters sqlx understands
    ///   (`sslmode`, `options=-c search_path=...`, ...).
    ///
    /// Installs sqlx's `Any` drivers on first use.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for any other scheme; [`StoreError::Connect`] (URL redacted) when
    /// the database cannot be reached, opened or configured.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        let backend = Backend::from_url(url)?;
        sqlx::any::install_default_drivers();
        let connect_error = |source| StoreError::Connect {
            url: backend::redact_url(url),
            source,
        };

        let options = AnyPoolOptions::new().acquire_timeout(ACQUIRE_TIMEOUT);
        let pool = match backend {
            Backend::Postgres => options
                .max_connections(POSTGRES_MAX_CONNECTIONS)
                .connect(url)
                .await
                .map_err(connect_error)?,
            Backend::Sqlite if is_sqlite_memory(url) => options
                .max_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .after_connect(|conn, _meta| {
                    Box::pin(async move {
                        sqlx::query("PRAGMA foreign_keys = ON")
                            .execute(&mut *conn)
                            .await?;
                        Ok(())
                    })
                })
                .connect(url)
                .await
                .map_err(connect_error)?,
            Backend::Sqlite => {
                let pool = options
                    .max_connections(SQLITE_FILE_MAX_CONNECTIONS)
                    .after_connect(|conn, _meta| {
                        Box::pin(async move {
                            sqlx::query("PRAGMA foreign_keys = ON")
                                .execute(&mut *conn)
                                .await?;
                            sqlx::query("PRAGMA synchronous = NORMAL")
                                .execute(&mut *conn)
                                .await?;
                            Ok(())
                        })
                    })
                    .connect(url)
                    .await
                    .map_err(connect_error)?;
                if !is_sqlite_read_only(url) {
                    // The journal mode is a property of the database file: setting it once is
                    // enough, and doing it before any other traffic avoids waiting on locks.
                    sqlx::query("PRAGMA journal_mode = WAL")
                        .execute(&pool)
                        .await
                        .map_err(connect_error)?;
                }
                pool
            }
        };
        Ok(Store { pool, backend })
    }

    /// Which database this store talks to.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies the embedded migrations for this backend (1 `init`: businesses, numbers, calls;
    /// 2 `guards`: guard policy, call events, business guard rules; 3 `prompts`: prompt versions,
    /// experiments, the prompt version and variant of each call; 4 `summaries`: business hours
    /// and required sections, each call's experiment and summary; 5 `lifecycle`: the instance
    /// holding each call, business call limits; 6 `fallback`: each business's fallback; 7 `tools`;
    /// 8 `call_status`; 9 `transfers`; 10 `outbound`; 11 `guard_decisions`: the verdict and stage
    /// of each guard decision) that are not applied yet.
    /// Idempotent: running it on an up-to-date database changes nothing. Progress is recorded in
    /// sqlx's `_sqlx_migrations` table; on PostgreSQL an advisory lock keeps concurrent runs
    /// apart.
    ///
    /// # Errors
    /// [`StoreError::Migrate`] if a migration fails, or if one applied earlier no longer matches
    /// the embedded text.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let (init, guards, prompts, summaries, lifecycle, fallback, tools, statuses, transfers) =
            match self.backend {
                Backend::Sqlite => (
                    SQLITE_INIT,
                    SQLITE_GUARDS,
                    SQLITE_PROMPTS,
                    SQLITE_SUMMARIES,
                    SQLITE_LIFECYCLE,
                    SQLITE_FALLBACK,
                    SQLITE_TOOLS,
                    SQLITE_CALL_STATUS,
                    SQLITE_TRANSFERS,
                ),
                Backend::Postgres => (
                    POSTGRES_INIT,
                    POSTGRES_GUARDS,
                    POSTGRES_PROMPTS,
                    POSTGRES_SUMMARIES,
                    POSTGRES_LIFECYCLE,
                    POSTGRES_FALLBACK,
                    POSTGRES_TOOLS,
                    POSTGRES_CALL_STATUS,
                    POSTGRES_TRANSFERS,
                ),
            };
        let migration = |version, description, sql: &'static str| {
            Migration::new(
                version,
                Cow::Borrowed(description),
                MigrationType::Simple,
                sql.into_sql_str(),
                false,
            )
        };
        let (outbound, guard_decisions) = match self.backend {
            Backend::Sqlite => (SQLITE_OUTBOUND, SQLITE_GUARD_DECISIONS),
            Backend::Postgres => (POSTGRES_OUTBOUND, POSTGRES_GUARD_DECISIONS),
        };
        let migrator = Migrator::with_migrations(vec![
            migration(1, "init", init),
            migration(2, "guards", guards),
            migration(3, "prompts", prompts),
            migration(4, "summaries", summaries),
            migration(5, "lifecycle", lifecycle),
            migration(6, "fallback", fallback),
            migration(7, "tools", tools),
            migration(8, "call_status", statuses),
            migration(9, "transfers", transfers),
            migration(10, "outbound", outbound),
            migration(11, "guard_decisions", guard_decisions),
        ]);
        migrator.run(&self.pool).await?;
        Ok(())
    }

    /// Closes every pooled connection, waiting for those in use to be returned. Later operations
    /// fail with [`StoreError::Query`]. An in-memory SQLite database is gone afterwards.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Whether a SQLite URL names an in-memory database.
fn is_sqlite_memory(url: &str) -> bool {
    url.contains(":memory:") || url_param_is(url, "mode", "memory")
}

/// Whether a SQLite URL opens the database read-only.
fn is_sqlite_read_only(url: &str) -> bool {
    url_param_is(url, "mode", "ro") || url_param_is(url, "immutable", "true")
}

/// Whether the URL's query has `key=value`.
fn url_param_is(url: &str, key: &str, value: &str) -> bool {
    url.split_once('?').is_some_and(|(_, query)| {
        query
            .split('&')
            .any(|pair| pair.split_once('=') == Some((key, value)))
    })
}

/// Checks an id named `what` by the one rule for ids ([`crate::domain::check_id`]).
fn validate_id(what: &'static str, id: &str) -> Result<(), StoreError> {
    crate::domain::check_id(what, id).map_err(|e| StoreError::Invalid(e.to_string()))
}

fn require_non_empty(field: &str, value: &str) -> Result<(), StoreError> {
    if value.trim().is_empty() {
        Err(StoreError::Invalid(format!("{field} must not be empty")))
    } else {
        Ok(())
    }
}

fn require_non_negative(field: &str, value: i64) -> Result<(), StoreError> {
    if value < 0 {
        Err(StoreError::Invalid(format!(
            "{field} must not be negative (got {value})"
        )))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::businesses::{generate_business_id, validate_business_id};
    use super::*;
    use crate::domain::MAX_ID_LEN;

    #[test]
    fn generated_business_ids_are_biz_and_12_hex_digits() {
        let id = generate_business_id();
        assert_eq!(id.len(), 16, "{id}");
        assert!(id.starts_with("biz_"), "{id}");
        assert!(id[4..].bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        assert_ne!(generate_business_id(), id);
    }

    #[test]
    fn business_ids_are_limited_to_url_safe_characters() {
        assert!(validate_business_id("acme-dental_2.eu").is_ok());
        assert!(validate_business_id(&"a".repeat(MAX_ID_LEN)).is_ok());
        for bad in [
            "",
            " ",
            "acme dental",
            "acme/dental",
            "é",
            &"a".repeat(MAX_ID_LEN + 1),
        ] {
            match validate_business_id(bad) {
                Err(StoreError::Invalid(message)) => {
                    assert!(message.contains("business id"), "{message}")
                }
                other => panic!("{bad:?}: expected Invalid, got {other:?}"),
            }
        }
    }

    #[test]
    fn sqlite_urls_are_classified_by_their_parameters() {
        assert!(is_sqlite_memory("sqlite::memory:"));
        assert!(is_sqlite_memory("sqlite://:memory:"));
        assert!(is_sqlite_memory("sqlite://shared?mode=memory&cache=shared"));
        assert!(!is_sqlite_memory("sqlite://voxrelay.db?mode=rwc"));
        assert!(is_sqlite_read_only("sqlite://voxrelay.db?mode=ro"));
        assert!(!is_sqlite_read_only("sqlite://voxrelay.db?mode=rwc"));
    }

    #[test]
    fn now_ms_is_epoch_milliseconds() {
        let now = now_ms();
        // 2020-01-01 and 2100-01-01 in epoch ms: catches seconds or microseconds by mistake.
        assert!(
            (1_577_836_800_000..4_102_444_800_000).contains(&now),
            "{now}"
        );
    }
}
