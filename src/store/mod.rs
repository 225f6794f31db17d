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

mod backend;
mod business_admin;
mod calls_query;
mod e164;
mod model;
mod prompts;

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
    Business, BusinessRule, BusinessUpdate, CallEnd, CallEvent, CallRecord, CallSummary,
    DEFAULT_GUARD_POLICY, DEFAULT_LANGUAGE, DEFAULT_VOICE, ExperimentCall, NewBusiness, NewCall,
    NewCallEvent,
};
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

/// The `businesses` columns, as every query selects them.
const BUSINESS_COLUMNS: &str = "id, name, language, voice, ai_prompt, outbound_ai_prompt, \
     greeting_instructions, guard_policy, hours, required_sections, created_at_ms, updated_at_ms";

/// The `calls` columns, as every query selects them.
pub(crate) const CALL_COLUMNS: &str = "call_sid, stream_sid, business_id, direction, \
     from_number, to_number, started_at_ms, ended_at_ms, greeting_latency_ms, end_reason, turns, \
     turn_p50_ms, turn_max_ms, barge_ins, frames_dropped, upstream_errors, total_tokens, \
     echo_events, guard_blocks, prompt_version_id, experiment_id, variant";

/// Separates names in the `businesses.required_sections` column.
const SECTION_SEPARATOR: char = '\n';

/// Longest id accepted for a business or a guard rule, in bytes.
const MAX_ID_LEN: usize = 64;

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
    /// and required sections, each call's experiment and summary) that are not applied yet.
    /// Idempotent: running it on an up-to-date database changes nothing. Progress is recorded in
    /// sqlx's `_sqlx_migrations` table; on PostgreSQL an advisory lock keeps concurrent runs
    /// apart.
    ///
    /// # Errors
    /// [`StoreError::Migrate`] if a migration fails, or if one applied earlier no longer matches
    /// the embedded text.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let (init, guards, prompts, summaries) = match self.backend {
            Backend::Sqlite => (SQLITE_INIT, SQLITE_GUARDS, SQLITE_PROMPTS, SQLITE_SUMMARIES),
            Backend::Postgres => (
                POSTGRES_INIT,
                POSTGRES_GUARDS,
                POSTGRES_PROMPTS,
                POSTGRES_SUMMARIES,
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
        let migrator = Migrator::with_migrations(vec![
            migration(1, "init", init),
            migration(2, "guards", guards),
            migration(3, "prompts", prompts),
            migration(4, "summaries", summaries),
        ]);
        migrator.run(&self.pool).await?;
        Ok(())
    }

    /// Creates a business and returns it as stored, with `created_at_ms = updated_at_ms = now`.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for an empty name, language or voice, a guard policy other than
    /// `monitor`, `gate` or `flag`, a required section that is empty or spans lines, or a
    /// malformed id (see [`NewBusiness::id`]); [`StoreError::Conflict`] if the id is taken.
    pub async fn add_business(&self, new: &NewBusiness) -> Result<Business, StoreError> {
        let id = match &new.id {
            Some(id) => {
                validate_business_id(id)?;
                id.clone()
            }
            None => generate_business_id(),
        };
        require_non_empty("business name", &new.name)?;
        require_non_empty("business language", &new.language)?;
        require_non_empty("business voice", &new.voice)?;
        let guard_policy = validate_guard_policy(&new.guard_policy)?;
        let required_sections = validate_sections(&new.required_sections)?;

        let now = now_ms();
        let business = Business {
            id,
            name: new.name.trim().to_string(),
            language: new.language.trim().to_string(),
            voice: new.voice.trim().to_string(),
            ai_prompt: new.ai_prompt.clone(),
            outbound_ai_prompt: new.outbound_ai_prompt.clone(),
            greeting_instructions: new.greeting_instructions.clone(),
            guard_policy: guard_policy.to_string(),
            hours: new.hours.trim().to_string(),
            required_sections,
            created_at_ms: now,
            updated_at_ms: now,
        };
        let sql = format!(
            "INSERT INTO businesses ({BUSINESS_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&business.id)
            .bind(&business.name)
            .bind(&business.language)
            .bind(&business.voice)
            .bind(&business.ai_prompt)
            .bind(&business.outbound_ai_prompt)
            .bind(&business.greeting_instructions)
            .bind(&business.guard_policy)
            .bind(&business.hours)
            .bind(join_sections(&business.required_sections))
            .bind(business.created_at_ms)
            .bind(business.updated_at_ms)
            .execute(&self.pool)
            .await
            .map_err(|e| match e.as_database_error().map(|d| d.kind()) {
                Some(ErrorKind::UniqueViolation) => {
                    StoreError::Conflict(format!("business id {:?} already exists", business.id))
                }
                _ => StoreError::Query(e),
            })?;
        Ok(business)
    }

    /// The business with this id, or `None`.
    ///
    /// # Errors
    /// [`StoreError::Query`] if the database fails.
    pub async fn business(&self, id: &str) -> Result<Option<Business>, StoreError> {
        let sql = format!("SELECT {BUSINESS_COLUMNS} FROM businesses WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(business_from_row).transpose()?)
    }

    /// Every business, oldest first (by `created_at_ms`, then id).
    ///
    /// # Errors
    /// [`StoreError::Query`] if the database fails.
    pub async fn list_businesses(&self) -> Result<Vec<Business>, StoreError> {
        let sql = format!("SELECT {BUSINESS_COLUMNS} FROM businesses ORDER BY created_at_ms, id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(business_from_row)
            .collect::<Result<_, _>>()?)
    }

    /// Routes the phone number `e164` to a business. The number is normalised first (see
    /// [`normalize_e164`]), so `"+1 (415) 555-0100"` is stored as `"+14155550100"`.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a malformed number; [`StoreError::NotFound`] if the business
    /// does not exist; [`StoreError::Conflict`] if the number already belongs to a business
    /// (this one or another).
    pub async fn add_number(&self, e164: &str, business_id: &str) -> Result<(), StoreError> {
        let number = normalize_e164(e164)?;
        sqlx::query("INSERT INTO phone_numbers (e164, business_id) VALUES ($1, $2)")
            .bind(&number)
            .bind(business_id)
            .execute(&self.pool)
            .await
            .map_err(|e| match e.as_database_error().map(|d| d.kind()) {
                Some(ErrorKind::UniqueViolation) => StoreError::Conflict(format!(
                    "phone number {number} is already assigned to a business"
                )),
                Some(ErrorKind::ForeignKeyViolation) => {
                    StoreError::NotFound(format!("business {business_id:?}"))
                }
                _ => StoreError::Query(e),
            })?;
        Ok(())
    }

    /// The business that owns the phone number `e164` (normalised first), or `None` if the
    /// number is not routed.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a malformed number; [`StoreError::Query`] if the database fails.
    pub async fn business_for_number(&self, e164: &str) -> Result<Option<Business>, StoreError> {
        let number = normalize_e164(e164)?;
        let sql = format!(
            "SELECT {BUSINESS_COLUMNS} FROM businesses \
             WHERE id = (SELECT business_id FROM phone_numbers WHERE e164 = $1)"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&number)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(business_from_row).transpose()?)
    }

    /// The E.164 numbers routed to a business, sorted; empty for an unknown business.
    ///
    /// # Errors
    /// [`StoreError::Query`] if the database fails.
    pub async fn numbers_for_business(&self, business_id: &str) -> Result<Vec<String>, StoreError> {
        let rows =
            sqlx::query("SELECT e164 FROM phone_numbers WHERE business_id = $1 ORDER BY e164")
                .bind(business_id)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .iter()
            .map(|row| row.try_get::<String, _>("e164"))
            .collect::<Result<_, _>>()?)
    }

    /// Records a call when its media stream starts; it stays open (no end) until
    /// [`Store::finish_call`].
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for an empty CallSid or business id or a negative start time;
    /// [`StoreError::Conflict`] if the CallSid is already recorded.
    pub async fn insert_call(&self, call: &NewCall) -> Result<(), StoreError> {
        require_non_empty("call_sid", &call.call_sid)?;
        require_non_empty("business_id", &call.business_id)?;
        require_non_negative("started_at_ms", call.started_at_ms)?;
        sqlx::query(
            "INSERT INTO calls (call_sid, stream_sid, business_id, direction, from_number, \
             to_number, started_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&call.call_sid)
        .bind(call.stream_sid.as_deref())
        .bind(&call.business_id)
        .bind(call.direction.as_str())
        .bind(&call.from_number)
        .bind(&call.to_number)
        .bind(call.started_at_ms)
        .execute(&self.pool)
        .await
        .map_err(|e| match e.as_database_error().map(|d| d.kind()) {
            Some(ErrorKind::UniqueViolation) => {
                StoreError::Conflict(format!("call {:?} is already recorded", call.call_sid))
            }
            _ => StoreError::Query(e),
        })?;
        Ok(())
    }

    /// Records how a call ended: its end time, greeting latency, end reason and summary.
    /// Finishing a call twice overwrites the first end.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a negative end time, latency or count (the message names
    /// the field); [`StoreError::NotFound`] if no call has this CallSid.
    pub async fn finish_call(&self, call_sid: &str, end: &CallEnd) -> Result<(), StoreError> {
        require_non_negative("ended_at_ms", end.ended_at_ms)?;
        let s = &end.summary;
        for (field, value) in [
            ("greeting_latency_ms", end.greeting_latency_ms),
            ("turn_p50_ms", s.turn_p50_ms),
            ("turn_max_ms", s.turn_max_ms),
            ("turns", Some(s.turns)),
            ("barge_ins", Some(s.barge_ins)),
            ("frames_dropped", Some(s.frames_dropped)),
            ("upstream_errors", Some(s.upstream_errors)),
            ("total_tokens", Some(s.total_tokens)),
            ("echo_events", Some(s.echo_events)),
            ("guard_blocks", Some(s.guard_blocks)),
        ] {
            if let Some(value) = value {
                require_non_negative(field, value)?;
            }
        }
        let result = sqlx::query(
            "UPDATE calls SET ended_at_ms = $2, greeting_latency_ms = $3, end_reason = $4, \
             turns = $5, turn_p50_ms = $6, turn_max_ms = $7, barge_ins = $8, \
             frames_dropped = $9, upstream_errors = $10, total_tokens = $11, echo_events = $12, \
             guard_blocks = $13 WHERE call_sid = $1",
        )
        .bind(call_sid)
        .bind(end.ended_at_ms)
        .bind(end.greeting_latency_ms)
        .bind(end.end_reason.as_deref())
        .bind(s.turns)
        .bind(s.turn_p50_ms)
        .bind(s.turn_max_ms)
        .bind(s.barge_ins)
        .bind(s.frames_dropped)
        .bind(s.upstream_errors)
        .bind(s.total_tokens)
        .bind(s.echo_events)
        .bind(s.guard_blocks)
        .execute(&self.pool)
        .await?;
        if result.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("call {call_sid:?}")));
        }
        Ok(())
    }

    /// The call with this CallSid, or `None`.
    ///
    /// # Errors
    /// [`StoreError::Query`] if the database fails or the stored direction is not
    /// `inbound`/`outbound`.
    pub async fn call(&self, call_sid: &str) -> Result<Option<CallRecord>, StoreError> {
        let sql = format!("SELECT {CALL_COLUMNS} FROM calls WHERE call_sid = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(call_sid)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(call_from_row).transpose()?)
    }

    /// Sets a business's guard policy (`"monitor"`, `"gate"` or `"flag"`, see
    /// [`Business::guard_policy`]) and its `updated_at_ms` to now. Calls already in progress keep
    /// the policy they started with.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for any other policy (the message quotes it);
    /// [`StoreError::NotFound`] if the business does not exist.
    pub async fn set_guard_policy(
        &self,
        business_id: &str,
        policy: &str,
    ) -> Result<(), StoreError> {
        let policy = validate_guard_policy(policy)?;
        let result = sqlx::query(
            "UPDATE businesses SET guard_policy = $2, updated_at_ms = $3 WHERE id = $1",
        )
        .bind(business_id)
        .bind(policy)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        if result.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("business {business_id:?}")));
        }
        Ok(())
    }

    /// Adds a sanitizer rule to a business, or replaces the business's rule with the same
    /// `rule_id` (all its fields).
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a malformed rule id (1 to 64 of `[A-Za-z0-9_.-]`), an empty
    /// category, a pattern that is empty or does not compile as a regular expression, or a weight
    /// that is negative or not finite; [`StoreError::NotFound`] if the business does not exist.
    pub async fn upsert_guard_rule(
        &self,
        business_id: &str,
        rule: &BusinessRule,
    ) -> Result<(), StoreError> {
        validate_rule(rule)?;
        sqlx::query(
            "INSERT INTO business_guard_rules \
             (business_id, rule_id, category, pattern, weight, enabled) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (business_id, rule_id) DO UPDATE SET \
             category = excluded.category, pattern = excluded.pattern, \
             weight = excluded.weight, enabled = excluded.enabled",
        )
        .bind(business_id)
        .bind(&rule.rule_id)
        .bind(&rule.category)
        .bind(&rule.pattern)
        .bind(rule.weight)
        .bind(i64::from(rule.enabled))
        .execute(&self.pool)
        .await
        .map_err(|e| match e.as_database_error().map(|d| d.kind()) {
            Some(ErrorKind::ForeignKeyViolation) => {
                StoreError::NotFound(format!("business {business_id:?}"))
            }
            _ => StoreError::Query(e),
        })?;
        Ok(())
    }

    /// A business's own sanitizer rules, enabled or not, sorted by rule id; empty for a business
    /// without any (or an unknown one).
    ///
    /// # Errors
    /// [`StoreError::Query`] if the database fails.
    pub async fn guard_rules(&self, business_id: &str) -> Result<Vec<BusinessRule>, StoreError> {
        let rows = sqlx::query(
            "SELECT rule_id, category, pattern, weight, enabled FROM business_guard_rules \
             WHERE business_id = $1 ORDER BY rule_id",
        )
        .bind(business_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(rule_from_row).collect::<Result<_, _>>()?)
    }

    /// Records a guard decision and returns its generated id (`"evt_"` + 32 hex digits).
    ///
    /// The detail is redacted first (card numbers, SSNs, e-mail addresses and phone numbers, see
    /// [`redact`](crate::guard::redact::redact)): the store never holds it unredacted. The call
    /// does not have to be recorded (no foreign key), so a guard can log before or without it.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for an empty CallSid, business id, kind or action, a negative time,
    /// a score that is not finite, or a rule id that is empty or contains a comma.
    pub async fn insert_event(&self, event: &NewCallEvent) -> Result<String, StoreError> {
        require_non_empty("call_sid", &event.call_sid)?;
        require_non_empty("business_id", &event.business_id)?;
        require_non_empty("event kind", &event.kind)?;
        require_non_empty("event action", &event.action)?;
        require_non_negative("at_ms", event.at_ms)?;
        if let Some(score) = event.score
            && !score.is_finite()
        {
            return Err(StoreError::Invalid(format!(
                "event score must be a finite number (got {score})"
            )));
        }
        for rule in &event.rules {
            if rule.trim().is_empty() || rule.contains(RULE_SEPARATOR) {
                return Err(StoreError::Invalid(format!(
                    "event rule id {rule:?} must not be empty or contain {RULE_SEPARATOR:?}"
                )));
            }
        }

        let id = format!("evt_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(
            "INSERT INTO call_events \
             (id, call_sid, business_id, at_ms, kind, score, rules, action, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&id)
        .bind(&event.call_sid)
        .bind(&event.business_id)
        .bind(event.at_ms)
        .bind(&event.kind)
        .bind(event.score)
        .bind(event.rules.join(RULE_SEPARATOR))
        .bind(&event.action)
        .bind(redact(&event.detail).as_ref())
        .execute(&self.pool)
        .await?;
        Ok(id)
    }

    /// The guard decisions recorded for a call, oldest first (by `at_ms`, then id); empty for an
    /// unknown call.
    ///
    /// # Errors
    /// [`StoreError::Query`] if the database fails.
    pub async fn call_events(&self, call_sid: &str) -> Result<Vec<CallEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, call_sid, business_id, at_ms, kind, score, rules, action, detail \
             FROM call_events WHERE call_sid = $1 ORDER BY at_ms, id",
        )
        .bind(call_sid)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(event_from_row).collect::<Result<_, _>>()?)
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

/// `"biz_"` followed by the first 12 hex digits of a random (v4) UUID.
fn generate_business_id() -> String {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    format!("biz_{}", &hex[..12])
}

/// Checks a caller-chosen business id: 1 to [`MAX_ID_LEN`] of `[A-Za-z0-9_.-]`.
fn validate_business_id(id: &str) -> Result<(), StoreError> {
    validate_id("business id", id)
}

/// Checks an id named `what`: 1 to [`MAX_ID_LEN`] of `[A-Za-z0-9_.-]`.
fn validate_id(what: &str, id: &str) -> Result<(), StoreError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "{what} {id:?}: expected 1 to {MAX_ID_LEN} ASCII letters, digits, '_', '-' or '.'"
        )))
    }
}

/// The policy's stored form, when it is one of [`GuardPolicy`]'s (exact, lower-case match).
fn validate_guard_policy(policy: &str) -> Result<&'static str, StoreError> {
    policy
        .parse::<GuardPolicy>()
        .map(GuardPolicy::as_str)
        .map_err(|e| StoreError::Invalid(e.to_string()))
}

/// The required section names, trimmed; each must be non-empty and on one line.
fn validate_sections(sections: &[String]) -> Result<Vec<String>, StoreError> {
    sections
        .iter()
        .map(|name| {
            let trimmed = name.trim();
            if trimmed.is_empty() || trimmed.contains(['\n', '\r']) {
                Err(StoreError::Invalid(format!(
                    "required section {name:?}: a name must be one non-empty line"
                )))
            } else {
                Ok(trimmed.to_string())
            }
        })
        .collect()
}

/// Checks a business rule before it is written; messages name the rule.
fn validate_rule(rule: &BusinessRule) -> Result<(), StoreError> {
    validate_id("guard rule id", &rule.rule_id)?;
    let id = &rule.rule_id;
    if rule.category.trim().is_empty() {
        return Err(StoreError::Invalid(format!(
            "guard rule {id:?}: category must not be empty"
        )));
    }
    if rule.pattern.trim().is_empty() {
        return Err(StoreError::Invalid(format!(
            "guard rule {id:?}: pattern must not be empty"
        )));
    }
    if let Err(e) = regex::Regex::new(&rule.pattern) {
        return Err(StoreError::Invalid(format!(
            "guard rule {id:?}: pattern {:?} is not a valid regular expression: {e}",
            rule.pattern
        )));
    }
    if !rule.weight.is_finite() || rule.weight < 0.0 {
        return Err(StoreError::Invalid(format!(
            "guard rule {id:?}: weight must be a finite number, not negative (got {})",
            rule.weight
        )));
    }
    Ok(())
}

/// The required sections as stored: one name a line.
fn join_sections(sections: &[String]) -> String {
    sections.join(&SECTION_SEPARATOR.to_string())
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

/// Maps a row with the `businesses` columns, in any order.
fn business_from_row(row: &AnyRow) -> Result<Business, sqlx::Error> {
    Ok(Business {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        language: row.try_get("language")?,
        voice: row.try_get("voice")?,
        ai_prompt: row.try_get("ai_prompt")?,
        outbound_ai_prompt: row.try_get("outbound_ai_prompt")?,
        greeting_instructions: row.try_get("greeting_instructions")?,
        guard_policy: row.try_get("guard_policy")?,
        hours: row.try_get("hours")?,
        required_sections: {
            let text: String = row.try_get("required_sections")?;
            text.split(SECTION_SEPARATOR)
                .filter(|name| !name.trim().is_empty())
                .map(str::to_string)
                .collect()
        },
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
    })
}

/// Maps a row with the `business_guard_rules` columns, in any order.
fn rule_from_row(row: &AnyRow) -> Result<BusinessRule, sqlx::Error> {
    let enabled: i64 = row.try_get("enabled")?;
    Ok(BusinessRule {
        rule_id: row.try_get("rule_id")?,
        category: row.try_get("category")?,
        pattern: row.try_get("pattern")?,
        weight: row.try_get("weight")?,
        enabled: enabled != 0,
    })
}

/// Maps a row with the `call_events` columns, in any order.
fn event_from_row(row: &AnyRow) -> Result<CallEvent, sqlx::Error> {
    let rules: String = row.try_get("rules")?;
    Ok(CallEvent {
        id: row.try_get("id")?,
        call_sid: row.try_get("call_sid")?,
        business_id: row.try_get("business_id")?,
        at_ms: row.try_get("at_ms")?,
        kind: row.try_get("kind")?,
        score: row.try_get("score")?,
        rules: if rules.is_empty() {
            Vec::new()
        } else {
            rules.split(RULE_SEPARATOR).map(str::to_string).collect()
        },
        action: row.try_get("action")?,
        detail: row.try_get("detail")?,
    })
}

/// Maps a row with the `calls` columns, in any order.
fn call_from_row(row: &AnyRow) -> Result<CallRecord, sqlx::Error> {
    let direction: String = row.try_get("direction")?;
    let direction: Direction = direction
        .parse()
        .map_err(|e: crate::domain::UnknownValue| sqlx::Error::ColumnDecode {
            index: "direction".to_string(),
            source: Box::new(e),
        })?;
    Ok(CallRecord {
        call_sid: row.try_get("call_sid")?,
        stream_sid: row.try_get("stream_sid")?,
        business_id: row.try_get("business_id")?,
        direction,
        from_number: row.try_get("from_number")?,
        to_number: row.try_get("to_number")?,
        started_at_ms: row.try_get("started_at_ms")?,
        ended_at_ms: row.try_get("ended_at_ms")?,
        greeting_latency_ms: row.try_get("greeting_latency_ms")?,
        end_reason: row.try_get("end_reason")?,
        summary: summary_from_row(row)?,
        prompt_version_id: row.try_get("prompt_version_id")?,
        experiment_id: row.try_get("experiment_id")?,
        variant: row.try_get("variant")?,
    })
}

/// The summary columns of a `calls` row; `None` while the call has none (`turns` is NULL).
fn summary_from_row(row: &AnyRow) -> Result<Option<CallSummary>, sqlx::Error> {
    let Some(turns) = row.try_get::<Option<i64>, _>("turns")? else {
        return Ok(None);
    };
    let count = |column: &str| -> Result<i64, sqlx::Error> {
        Ok(row.try_get::<Option<i64>, _>(column)?.unwrap_or(0))
    };
    Ok(Some(CallSummary {
        turns,
        turn_p50_ms: row.try_get("turn_p50_ms")?,
        turn_max_ms: row.try_get("turn_max_ms")?,
        barge_ins: count("barge_ins")?,
        frames_dropped: count("frames_dropped")?,
        upstream_errors: count("upstream_errors")?,
        total_tokens: count("total_tokens")?,
        echo_events: count("echo_events")?,
        guard_blocks: count("guard_blocks")?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

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
