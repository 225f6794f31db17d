//! Prompt versions and A/B prompt experiments, and the prompt each call ran.
//!
//! A business's prompt body is versioned per (business, direction): versions are numbered 1, 2,
//! 3... and move `draft` -> `staging` -> `production` -> `archived`. The database holds at most
//! one `production` version and at most one `running` experiment per (business, direction), with
//! partial unique indexes (migration 3), so concurrent promotes or starts can never leave two
//! behind: the loser of a race sees a unique violation, which the store retries a few times and
//! otherwise reports as [`StoreError::Conflict`].

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use sqlx::Row;
use sqlx::any::AnyRow;
use sqlx::error::ErrorKind;

use super::{ExperimentCall, Store, StoreError, now_ms, require_non_empty, require_non_negative};
use crate::domain::Direction;

/// How many times an insert or a promote is tried when it loses a race (unique violation,
/// deadlock, serialization failure or a busy SQLite database) before giving up.
const MAX_ATTEMPTS: u32 = 5;

/// Pause before retry `n` (1-based) is `n` times this.
const RETRY_PAUSE: Duration = Duration::from_millis(5);

/// The `prompt_versions` columns, as every query selects or returns them.
const VERSION_COLUMNS: &str = "id, business_id, direction, version, body, status, \
     parent_version_id, compact_tokens, full_tokens, author, note, created_at_ms";

/// The `experiments` columns, as every query selects or returns them.
const EXPERIMENT_COLUMNS: &str = "id, business_id, direction, control_version_id, \
     variant_version_id, traffic_percent, status, started_at_ms, ended_at_ms, created_at_ms";

/// Where a prompt version is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptStatus {
    /// Just created; not used by calls.
    Draft,
    /// Being tried out; not used by live calls unless an experiment picks it.
    Staging,
    /// What calls of its (business, direction) use; at most one at a time.
    Production,
    /// A former production version; [`Store::rollback`] can make it production again.
    Archived,
}

impl PromptStatus {
    /// `"draft"`, `"staging"`, `"production"` or `"archived"`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            PromptStatus::Draft => "draft",
            PromptStatus::Staging => "staging",
            PromptStatus::Production => "production",
            PromptStatus::Archived => "archived",
        }
    }
}

impl fmt::Display for PromptStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text was not a prompt status.
#[derive(Debug, thiserror::Error)]
#[error("unknown prompt status {0:?}: expected draft, staging, production or archived")]
pub struct UnknownPromptStatus(pub String);

impl FromStr for PromptStatus {
    type Err = UnknownPromptStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "draft" => Ok(PromptStatus::Draft),
            "staging" => Ok(PromptStatus::Staging),
            "production" => Ok(PromptStatus::Production),
            "archived" => Ok(PromptStatus::Archived),
            other => Err(UnknownPromptStatus(other.to_string())),
        }
    }
}

/// One stored version of a business's prompt body for one direction.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PromptVersion {
    /// `"pv_"` followed by 32 hex digits.
    pub id: String,
    /// The business whose prompt this is.
    pub business_id: String,
    /// Which calls it is for.
    pub direction: Direction,
    /// 1, 2, 3... in order of creation, per (business, direction).
    pub version: i64,
    /// The business layer of the prompt (may hold template variables).
    pub body: String,
    /// Where the version is in its life cycle.
    pub status: PromptStatus,
    /// The version this one was edited from, if any (same business and direction).
    pub parent_version_id: Option<String>,
    /// Size of the built COMPACT prompt, in tokens, if measured.
    pub compact_tokens: Option<i64>,
    /// Size of the built FULL prompt, in tokens, if measured.
    pub full_tokens: Option<i64>,
    /// Who created it (operator name or token label).
    pub author: String,
    /// Free-form change note (may be empty).
    pub note: String,
    /// When it was created, epoch ms.
    pub created_at_ms: i64,
}

/// A prompt version to create with [`Store::create_prompt_version`]; the store assigns the id,
/// the version number, the status (`draft`) and the creation time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPromptVersion {
    /// An existing business.
    pub business_id: String,
    /// Which calls the version is for.
    pub direction: Direction,
    /// The prompt body; must not be empty or only whitespace.
    pub body: String,
    /// The version this one was edited from; must belong to the same business and direction.
    pub parent_version_id: Option<String>,
    /// Size of the built COMPACT prompt in tokens, if measured; not negative.
    pub compact_tokens: Option<i64>,
    /// Size of the built FULL prompt in tokens, if measured; not negative.
    pub full_tokens: Option<i64>,
    /// Who creates it; must not be empty.
    pub author: String,
    /// Free-form change note (may be empty).
    pub note: String,
}

/// Where an experiment is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExperimentStatus {
    /// Created, not splitting calls yet.
    Draft,
    /// Splitting calls; at most one per (business, direction).
    Running,
    /// Finished (or cancelled before it started); cannot run again.
    Stopped,
}

impl ExperimentStatus {
    /// `"draft"`, `"running"` or `"stopped"`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            ExperimentStatus::Draft => "draft",
            ExperimentStatus::Running => "running",
            ExperimentStatus::Stopped => "stopped",
        }
    }
}

impl fmt::Display for ExperimentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text was not an experiment status.
#[derive(Debug, thiserror::Error)]
#[error("unknown experiment status {0:?}: expected draft, running or stopped")]
pub struct UnknownExperimentStatus(pub String);

impl FromStr for ExperimentStatus {
    type Err = UnknownExperimentStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "draft" => Ok(ExperimentStatus::Draft),
            "running" => Ok(ExperimentStatus::Running),
            "stopped" => Ok(ExperimentStatus::Stopped),
            other => Err(UnknownExperimentStatus(other.to_string())),
        }
    }
}

/// An A/B experiment splitting the calls of one (business, direction) between two versions.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Experiment {
    /// `"exp_"` followed by 32 hex digits.
    pub id: String,
    /// The business whose calls are split.
    pub business_id: String,
    /// Which of its calls are split.
    pub direction: Direction,
    /// The version the rest of the calls get.
    pub control_version_id: String,
    /// The version `traffic_percent` of the calls get.
    pub variant_version_id: String,
    /// Share of calls that get the variant, 0 to 100 (percent).
    pub traffic_percent: i64,
    /// Where the experiment is in its life cycle.
    pub status: ExperimentStatus,
    /// When it started running, epoch ms.
    pub started_at_ms: Option<i64>,
    /// When it was stopped, epoch ms.
    pub ended_at_ms: Option<i64>,
    /// When it was created, epoch ms.
    pub created_at_ms: i64,
}

impl Store {
    /// Creates a `draft` version of a business's prompt for `direction`, numbered one more than
    /// the highest version of that (business, direction) (1 for the first). The number is
    /// computed and inserted in one statement; a concurrent create that takes the same number
    /// makes this one retry with the next.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for an empty body or author, a negative token count, or a parent
    /// version that does not exist or belongs to another business or direction;
    /// [`StoreError::NotFound`] if the business does not exist; [`StoreError::Conflict`] if
    /// every attempt lost a race.
    pub async fn create_prompt_version(
        &self,
        new: &NewPromptVersion,
    ) -> Result<PromptVersion, StoreError> {
        require_non_empty("prompt body", &new.body)?;
        require_non_empty("prompt author", &new.author)?;
        if let Some(tokens) = new.compact_tokens {
            require_non_negative("compact_tokens", tokens)?;
        }
        if let Some(tokens) = new.full_tokens {
            require_non_negative("full_tokens", tokens)?;
        }
        if self.business(&new.business_id).await?.is_none() {
            return Err(StoreError::NotFound(format!(
                "business {:?}",
                new.business_id
            )));
        }
        if let Some(parent_id) = &new.parent_version_id {
            match self.prompt_version(parent_id).await? {
                None => {
                    return Err(StoreError::Invalid(format!(
                        "parent prompt version {parent_id:?} does not exist"
                    )));
                }
                Some(parent)
                    if parent.business_id != new.business_id
                        || parent.direction != new.direction =>
                {
                    return Err(StoreError::Invalid(format!(
                        "parent prompt version {parent_id:?} belongs to business {:?} {}, not {:?} {}",
                        parent.business_id, parent.direction, new.business_id, new.direction
                    )));
                }
                Some(_) => {}
            }
        }

        let sql = format!(
            "INSERT INTO prompt_versions ({VERSION_COLUMNS}) \
             SELECT $1, $2, $3, COALESCE(MAX(version), 0) + 1, $4, 'draft', $5, $6, $7, $8, $9, \
             $10 FROM prompt_versions WHERE business_id = $2 AND direction = $3 \
             RETURNING {VERSION_COLUMNS}"
        );
        for attempt in 1..=MAX_ATTEMPTS {
            let result = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(new_id("pv"))
                .bind(&new.business_id)
                .bind(new.direction.as_str())
                .bind(&new.body)
                .bind(new.parent_version_id.as_deref())
                .bind(new.compact_tokens)
                .bind(new.full_tokens)
                .bind(&new.author)
                .bind(&new.note)
                .bind(now_ms())
                .fetch_one(&self.pool)
                .await;
            match result {
                Ok(row) => return Ok(version_from_row(&row)?),
                Err(e) if is_retryable(&e) && attempt < MAX_ATTEMPTS => {
                    tokio::time::sleep(RETRY_PAUSE * attempt).await;
                }
                Err(e) if is_retryable(&e) => break,
                Err(e) if kind(&e) == Some(ErrorKind::ForeignKeyViolation) => {
                    return Err(StoreError::NotFound(format!(
                        "business {:?}",
                        new.business_id
                    )));
                }
                Err(e) => return Err(StoreError::Query(e)),
            }
        }
        Err(StoreError::Conflict(format!(
            "could not number a new prompt version of business {:?} {} after {MAX_ATTEMPTS} \
             attempts (concurrent creates)",
            new.business_id, new.direction
        )))
    }

    /// The prompt version with this id, or `None`.
    ///
    /// # Errors
    /// [`StoreError::Query`] if the database fails or holds an unknown direction or status.
    pub async fn prompt_version(&self, id: &str) -> Result<Option<PromptVersion>, StoreError> {
        let sql = format!("SELECT {VERSION_COLUMNS} FROM prompt_versions WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(version_from_row).transpose()?)
    }

    /// A business's prompt versions, for one direction or (`None`) both, newest first (highest
    /// version number first; by direction, then number, when both). Empty for an unknown business.
    ///
    /// # Errors
    /// [`StoreError::Query`] if the database fails or holds an unknown direction or status.
    pub async fn prompt_versions(
        &self,
        business_id: &str,
        direction: Option<Direction>,
    ) -> Result<Vec<PromptVersion>, StoreError> {
        let rows = match direction {
            Some(direction) => {
                let sql = format!(
                    "SELECT {VERSION_COLUMNS} FROM prompt_versions \
                     WHERE business_id = $1 AND direction = $2 ORDER BY version DESC"
                );
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(business_id)
                    .bind(direction.as_str())
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                let sql = format!(
                    "SELECT {VERSION_COLUMNS} FROM prompt_versions \
                     WHERE business_id = $1 ORDER BY direction, version DESC"
                );
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(business_id)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        Ok(rows
            .iter()
            .map(version_from_row)
            .collect::<Result<_, _>>()?)
    }

    /// The production version of a business's prompt for `direction`, or `None` if none has
    /// been promoted (or the business is unknown).
    ///
    /// # Errors
    /// [`StoreError::Query`] if the database fails or holds an unknown direction or status.
    pub async fn production_version(
        &self,
        business_id: &str,
        direction: Direction,
    ) -> Result<Option<PromptVersion>, StoreError> {
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM prompt_versions \
             WHERE business_id = $1 AND direction = $2 AND status = 'production'"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(business_id)
            .bind(direction.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(version_from_row).transpose()?)
    }

    /// Moves a prompt version to `staging` or `production` and returns it as stored.
    ///
    /// - [`PromptStatus::Staging`]: from `draft` or `archived` (a version already in staging is
    ///   returned unchanged).
    /// - [`PromptStatus::Production`]: from any status. In one transaction the current
    ///   production version of the same (business, direction), if any, becomes `archived` and
    ///   this one becomes `production`. Promoting the production version changes nothing.
    ///   Concurrent promotes are safe: the database refuses a second production row, and the
    ///   refused one is retried (then it wins, archiving the other) a few times before failing.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] if `to` is `Draft` or `Archived`; [`StoreError::NotFound`] if no
    /// version has this id; [`StoreError::Conflict`] to staging from `production`, or to
    /// production when every attempt lost a race with concurrent promotes.
    pub async fn promote(&self, id: &str, to: PromptStatus) -> Result<PromptVersion, StoreError> {
        match to {
            PromptStatus::Production => match self.set_production(id, None).await? {
                Some(version) => Ok(version),
                None => Err(StoreError::NotFound(format!("prompt version {id:?}"))),
            },
            PromptStatus::Staging => {
                let sql = format!(
                    "UPDATE prompt_versions SET status = 'staging' \
                     WHERE id = $1 AND status IN ('draft', 'archived', 'staging') \
                     RETURNING {VERSION_COLUMNS}"
                );
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                if let Some(row) = row {
                    return Ok(version_from_row(&row)?);
                }
                match self.prompt_version(id).await? {
                    None => Err(StoreError::NotFound(format!("prompt version {id:?}"))),
                    Some(version) => Err(StoreError::Conflict(format!(
                        "prompt version {id:?} is {}; only a draft or archived version can move \
                         to staging",
                        version.status
                    ))),
                }
            }
            PromptStatus::Draft | PromptStatus::Archived => Err(StoreError::Invalid(format!(
                "cannot promote to {to}: expected staging or production"
            ))),
        }
    }

    /// Makes an earlier, `archived` version of a business's prompt for `direction` production
    /// again, archiving the current production version, in one transaction (the same rules as
    /// [`Store::promote`] to production). Rolling back to the production version itself
    /// returns it unchanged.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if no version has this id; [`StoreError::Invalid`] if it belongs
    /// to another business or direction; [`StoreError::Conflict`] if it is a draft or in
    /// staging (never production), or every attempt lost a race with concurrent promotes.
    pub async fn rollback(
        &self,
        business_id: &str,
        direction: Direction,
        to_version_id: &str,
    ) -> Result<PromptVersion, StoreError> {
        if let Some(version) = self
            .set_production(to_version_id, Some((business_id, direction)))
            .await?
        {
            return Ok(version);
        }
        match self.prompt_version(to_version_id).await? {
            None => Err(StoreError::NotFound(format!(
                "prompt version {to_version_id:?}"
            ))),
            Some(version)
                if version.business_id != business_id || version.direction != direction =>
            {
                Err(StoreError::Invalid(format!(
                    "prompt version {to_version_id:?} belongs to business {:?} {}, not {business_id:?} \
                     {direction}",
                    version.business_id, version.direction
                )))
            }
            Some(version) => Err(StoreError::Conflict(format!(
                "prompt version {to_version_id:?} is {}; rollback goes back to an archived version",
                version.status
            ))),
        }
    }

    /// Makes version `id` production, archiving the current one, in one transaction, retrying
    /// when a concurrent promote wins the race. With `scope`, only a version of that
    /// (business, direction) whose status is `archived` or `production` qualifies. `None` (and
    /// nothing changed) when no version qualifies.
    async fn set_production(
        &self,
        id: &str,
        scope: Option<(&str, Direction)>,
    ) -> Result<Option<PromptVersion>, StoreError> {
        let set_sql = match scope {
            None => format!(
                "UPDATE prompt_versions SET status = 'production' WHERE id = $1 \
                 RETURNING {VERSION_COLUMNS}"
            ),
            Some(_) => format!(
                "UPDATE prompt_versions SET status = 'production' \
                 WHERE id = $1 AND business_id = $2 AND direction = $3 \
                 AND status IN ('archived', 'production') RETURNING {VERSION_COLUMNS}"
            ),
        };
        for attempt in 1..=MAX_ATTEMPTS {
            match self.try_set_production(id, scope, &set_sql).await {
                Ok(version) => return Ok(version),
                Err(e) if is_retryable(&e) && attempt < MAX_ATTEMPTS => {
                    tokio::time::sleep(RETRY_PAUSE * attempt).await;
                }
                Err(e) if is_retryable(&e) => break,
                Err(e) => return Err(StoreError::Query(e)),
            }
        }
        Err(StoreError::Conflict(format!(
            "prompt version {id:?} could not become production after {MAX_ATTEMPTS} attempts \
             (concurrent promotes)"
        )))
    }

    /// One attempt of [`Store::set_production`]; rolled back unless it returns `Ok(Some(_))`.
    async fn try_set_production(
        &self,
        id: &str,
        scope: Option<(&str, Direction)>,
        set_sql: &str,
    ) -> Result<Option<PromptVersion>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        // Writing first takes SQLite's write lock at once, so a concurrent writer waits instead
        // of failing to upgrade a read transaction.
        sqlx::query(
            "UPDATE prompt_versions SET status = 'archived' \
             WHERE status = 'production' AND id <> $1 \
             AND business_id = (SELECT business_id FROM prompt_versions WHERE id = $1) \
             AND direction = (SELECT direction FROM prompt_versions WHERE id = $1)",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let query = sqlx::query(sqlx::AssertSqlSafe(set_sql)).bind(id);
        let query = match scope {
            Some((business_id, direction)) => query.bind(business_id).bind(direction.as_str()),
            None => query,
        };
        let Some(row) = query.fetch_optional(&mut *tx).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        let version = version_from_row(&row)?;
        tx.commit().await?;
        Ok(Some(version))
    }

    /// Creates a `draft` experiment that, once started, gives `traffic_percent` percent of the
    /// calls of (business, direction) the variant version and the rest the control version.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a percent outside 0 to 100, the same version as control and
    /// variant, or a version of another business or direction; [`StoreError::NotFound`] if a
    /// version does not exist.
    pub async fn create_experiment(
        &self,
        business_id: &str,
        direction: Direction,
        control_version_id: &str,
        variant_version_id: &str,
        traffic_percent: i64,
    ) -> Result<Experiment, StoreError> {
        if !(0..=100).contains(&traffic_percent) {
            return Err(StoreError::Invalid(format!(
                "traffic percent must be 0 to 100 (got {traffic_percent})"
            )));
        }
        if control_version_id == variant_version_id {
            return Err(StoreError::Invalid(format!(
                "control and variant are the same prompt version {control_version_id:?}"
            )));
        }
        for (role, version_id) in [
            ("control", control_version_id),
            ("variant", variant_version_id),
        ] {
            let Some(version) = self.prompt_version(version_id).await? else {
                return Err(StoreError::NotFound(format!(
                    "{role} prompt version {version_id:?}"
                )));
            };
            if version.business_id != business_id || version.direction != direction {
                return Err(StoreError::Invalid(format!(
                    "{role} prompt version {version_id:?} belongs to business {:?} {}, not \
                     {business_id:?} {direction}",
                    version.business_id, version.direction
                )));
            }
        }

        let experiment = Experiment {
            id: new_id("exp"),
            business_id: business_id.to_string(),
            direction,
            control_version_id: control_version_id.to_string(),
            variant_version_id: variant_version_id.to_string(),
            traffic_percent,
            status: ExperimentStatus::Draft,
            started_at_ms: None,
            ended_at_ms: None,
            created_at_ms: now_ms(),
        };
        let sql = format!(
            "INSERT INTO experiments ({EXPERIMENT_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&experiment.id)
            .bind(&experiment.business_id)
            .bind(experiment.direction.as_str())
            .bind(&experiment.control_version_id)
            .bind(&experiment.variant_version_id)
            .bind(experiment.traffic_percent)
            .bind(experiment.status.as_str())
            .bind(experiment.started_at_ms)
            .bind(experiment.ended_at_ms)
            .bind(experiment.created_at_ms)
            .execute(&self.pool)
            .await?;
        Ok(experiment)
    }

    /// Starts a `draft` experiment (`started_at_ms` = now) and returns it; a running one is
    /// returned unchanged.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if no experiment has this id; [`StoreError::Conflict`] if
    /// another experiment is running for the same (business, direction) (the database refuses
    /// two) or this one is stopped.
    pub async fn start_experiment(&self, id: &str) -> Result<Experiment, StoreError> {
        let sql = format!(
            "UPDATE experiments SET status = 'running', started_at_ms = $2 \
             WHERE id = $1 AND status = 'draft' RETURNING {EXPERIMENT_COLUMNS}"
        );
        let result = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(now_ms())
            .fetch_optional(&self.pool)
            .await;
        match result {
            Ok(Some(row)) => return Ok(experiment_from_row(&row)?),
            Ok(None) => {}
            Err(e) if kind(&e) == Some(ErrorKind::UniqueViolation) => {
                let running = match self.experiment(id).await? {
                    Some(experiment) => self
                        .running_experiment(&experiment.business_id, experiment.direction)
                        .await?
                        .map(|running| format!(" ({})", running.id))
                        .unwrap_or_default(),
                    None => String::new(),
                };
                return Err(StoreError::Conflict(format!(
                    "experiment {id:?} cannot start: another experiment{running} is running for \
                     the same business and direction"
                )));
            }
            Err(e) => return Err(StoreError::Query(e)),
        }
        match self.experiment(id).await? {
            None => Err(StoreError::NotFound(format!("experiment {id:?}"))),
            Some(experiment) if experiment.status == ExperimentStatus::Running => Ok(experiment),
            Some(_) => Err(StoreError::Conflict(format!(
                "experiment {id:?} is stopped and cannot run again"
            ))),
        }
    }

    /// Stops a draft or running experiment (`ended_at_ms` = now) and returns it; a stopped one
    /// is returned unchanged.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if no experiment has this id.
    pub async fn stop_experiment(&self, id: &str) -> Result<Experiment, StoreError> {
        let sql = format!(
            "UPDATE experiments SET status = 'stopped', ended_at_ms = $2 \
             WHERE id = $1 AND status IN ('draft', 'running') RETURNING {EXPERIMENT_COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(now_ms())
            .fetch_optional(&self.pool)
            .await?;
        if let Some(row) = row {
            return Ok(experiment_from_row(&row)?);
        }
        self.experiment(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("experiment {id:?}")))
    }

    /// The experiment with this id, or `None`.
    ///
    /// # Errors
    /// [`StoreError::Query`] if the database fails or holds an unknown direction or status.
    pub async fn experiment(&self, id: &str) -> Result<Option<Experiment>, StoreError> {
        let sql = format!("SELECT {EXPERIMENT_COLUMNS} FROM experiments WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(experiment_from_row).transpose()?)
    }

    /// The running experiment of a business for `direction`, or `None`.
    ///
    /// # Errors
    /// [`StoreError::Query`] if the database fails or holds an unknown direction or status.
    pub async fn running_experiment(
        &self,
        business_id: &str,
        direction: Direction,
    ) -> Result<Option<Experiment>, StoreError> {
        let sql = format!(
            "SELECT {EXPERIMENT_COLUMNS} FROM experiments \
             WHERE business_id = $1 AND direction = $2 AND status = 'running'"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(business_id)
            .bind(direction.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(experiment_from_row).transpose()?)
    }

    /// Records which prompt version a call runs, and, when a running experiment picked it, the
    /// experiment and the arm (`"control"` or `"variant"`); `None` outside experiments. Setting
    /// it again overwrites.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for an empty version id or experiment id;
    /// [`StoreError::NotFound`] if no call has this CallSid.
    pub async fn set_call_prompt(
        &self,
        call_sid: &str,
        prompt_version_id: Option<&str>,
        experiment: Option<(&str, crate::domain::Arm)>,
    ) -> Result<(), StoreError> {
        if let Some(id) = prompt_version_id {
            require_non_empty("prompt_version_id", id)?;
        }
        if let Some((experiment_id, _)) = experiment {
            require_non_empty("experiment_id", experiment_id)?;
        }
        let result = sqlx::query(
            "UPDATE calls SET prompt_version_id = $2, experiment_id = $3, variant = $4 \
             WHERE call_sid = $1",
        )
        .bind(call_sid)
        .bind(prompt_version_id)
        .bind(experiment.map(|(id, _)| id))
        .bind(experiment.map(|(_, arm)| arm.as_str()))
        .execute(&self.pool)
        .await?;
        if result.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("call {call_sid:?}")));
        }
        Ok(())
    }

    /// The prompt version id and variant recorded for a call by [`Store::set_call_prompt`]
    /// (each `None` if not set), or `None` if no call has this CallSid.
    ///
    /// # Errors
    /// [`StoreError::Query`] if the database fails.
    pub async fn call_prompt(
        &self,
        call_sid: &str,
    ) -> Result<Option<(Option<String>, Option<String>)>, StoreError> {
        let row = sqlx::query("SELECT prompt_version_id, variant FROM calls WHERE call_sid = $1")
            .bind(call_sid)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some((
            row.try_get("prompt_version_id")?,
            row.try_get("variant")?,
        )))
    }
}

impl Store {
    /// The finished calls (those with an end and a summary) that experiment `experiment_id`
    /// assigned, oldest first, for its results. Empty for an unknown experiment.
    ///
    /// # Errors
    /// [`StoreError::Query`] if the database fails.
    pub async fn experiment_calls(
        &self,
        experiment_id: &str,
    ) -> Result<Vec<ExperimentCall>, StoreError> {
        let rows = sqlx::query(
            "SELECT call_sid, variant, greeting_latency_ms, turns, echo_events, guard_blocks \
             FROM calls WHERE experiment_id = $1 AND ended_at_ms IS NOT NULL \
             AND turns IS NOT NULL AND variant IS NOT NULL ORDER BY started_at_ms, call_sid",
        )
        .bind(experiment_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let count = |column: &str| -> Result<i64, sqlx::Error> {
                    Ok(row.try_get::<Option<i64>, _>(column)?.unwrap_or(0))
                };
                Ok(ExperimentCall {
                    call_sid: row.try_get("call_sid")?,
                    variant: row.try_get("variant")?,
                    greeting_latency_ms: row.try_get("greeting_latency_ms")?,
                    turns: count("turns")?,
                    echo_events: count("echo_events")?,
                    guard_blocks: count("guard_blocks")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::Query)
    }
}

/// `prefix` + `"_"` + 32 hex digits of a random (v4) UUID.
fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// The database's classification of an error, if it came from the database.
fn kind(error: &sqlx::Error) -> Option<ErrorKind> {
    error.as_database_error().map(|e| e.kind())
}

/// Whether trying again may succeed: a unique violation (a concurrent writer took the number or
/// the production slot), a PostgreSQL serialization failure or deadlock, or a busy or locked
/// SQLite database.
fn is_retryable(error: &sqlx::Error) -> bool {
    let Some(db) = error.as_database_error() else {
        return false;
    };
    if db.kind() == ErrorKind::UniqueViolation {
        return true;
    }
    // 40001/40P01: PostgreSQL serialization failure/deadlock. 5, 6 and their extended codes:
    // SQLITE_BUSY and SQLITE_LOCKED.
    matches!(
        db.code().as_deref(),
        Some("40001" | "40P01" | "5" | "6" | "261" | "262" | "517")
    )
}

/// Reads a text column and parses it, reporting a bad value as a decode error of that column.
fn parse_column<T>(row: &AnyRow, column: &str) -> Result<T, sqlx::Error>
where
    T: FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let text: String = row.try_get(column)?;
    text.parse().map_err(|e: T::Err| sqlx::Error::ColumnDecode {
        index: column.to_string(),
        source: Box::new(e),
    })
}

/// Maps a row with the `prompt_versions` columns, in any order.
fn version_from_row(row: &AnyRow) -> Result<PromptVersion, sqlx::Error> {
    Ok(PromptVersion {
        id: row.try_get("id")?,
        business_id: row.try_get("business_id")?,
        direction: parse_column(row, "direction")?,
        version: row.try_get("version")?,
        body: row.try_get("body")?,
        status: parse_column(row, "status")?,
        parent_version_id: row.try_get("parent_version_id")?,
        compact_tokens: row.try_get("compact_tokens")?,
        full_tokens: row.try_get("full_tokens")?,
        author: row.try_get("author")?,
        note: row.try_get("note")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

/// Maps a row with the `experiments` columns, in any order.
fn experiment_from_row(row: &AnyRow) -> Result<Experiment, sqlx::Error> {
    Ok(Experiment {
        id: row.try_get("id")?,
        business_id: row.try_get("business_id")?,
        direction: parse_column(row, "direction")?,
        control_version_id: row.try_get("control_version_id")?,
        variant_version_id: row.try_get("variant_version_id")?,
        traffic_percent: row.try_get("traffic_percent")?,
        status: parse_column(row, "status")?,
        started_at_ms: row.try_get("started_at_ms")?,
        ended_at_ms: row.try_get("ended_at_ms")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_text_and_json() {
        for status in [
            PromptStatus::Draft,
            PromptStatus::Staging,
            PromptStatus::Production,
            PromptStatus::Archived,
        ] {
            assert_eq!(status.as_str().parse::<PromptStatus>().ok(), Some(status));
            assert_eq!(
                serde_json::to_string(&status).ok(),
                Some(format!("\"{status}\""))
            );
        }
        for status in [
            ExperimentStatus::Draft,
            ExperimentStatus::Running,
            ExperimentStatus::Stopped,
        ] {
            assert_eq!(
                status.as_str().parse::<ExperimentStatus>().ok(),
                Some(status)
            );
            assert_eq!(
                serde_json::to_string(&status).ok(),
                Some(format!("\"{status}\""))
            );
        }
        assert!("Production".parse::<PromptStatus>().is_err());
        assert!("paused".parse::<ExperimentStatus>().is_err());
    }

    #[test]
    fn generated_ids_carry_their_prefix_and_32_hex_digits() {
        let id = new_id("pv");
        assert_eq!(id.len(), 35, "{id}");
        assert!(id.starts_with("pv_"), "{id}");
        assert!(id[3..].bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    }
}
