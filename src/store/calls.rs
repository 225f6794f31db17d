//! The record of every call: its start, its end with the summary, reading one, listing the
//! most recent.

use super::*;

/// The most calls [`Store::list_calls`] returns at once.
const MAX_CALLS_LISTED: i64 = 500;

impl Store {
    /// The most recent calls (by start time, newest first, then CallSid), of one business or
    /// (`None`) of all, at most `limit` (clamped to 1 to 500).
    ///
    /// # Errors
    /// [`StoreError::Query`] if the database fails or a stored direction is not
    /// `inbound`/`outbound`.
    pub async fn list_calls(
        &self,
        business_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<CallRecord>, StoreError> {
        let limit = limit.clamp(1, MAX_CALLS_LISTED);
        let sql = format!(
            "SELECT {CALL_COLUMNS} FROM calls WHERE ($1 IS NULL OR business_id = $1) \
             ORDER BY started_at_ms DESC, call_sid LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(business_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(call_from_row)
            .collect::<Result<Vec<_>, _>>()?)
    }
}

impl Store {
    /// Records a call when its media stream starts; it stays open (no end) until
    /// [`Store::finish_call`].
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for an empty CallSid or business id or a negative start time;
    /// [`StoreError::Conflict`] if the CallSid is already recorded.
    pub async fn insert_call(&self, call: &NewCall) -> Result<(), StoreError> {
        check_new_call(call)?;
        insert_call_row(call, "")
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

    /// Records a call the webhook answered (its stream not started yet). A row for the CallSid
    /// already there (the stream's claim got there first, or Twilio retried the webhook) is
    /// kept as it is. Returns whether a row was written.
    ///
    /// # Errors
    /// As [`Store::insert_call`], without the conflict.
    pub async fn open_call(&self, call: &NewCall) -> Result<bool, StoreError> {
        check_new_call(call)?;
        let result = insert_call_row(call, " ON CONFLICT (call_sid) DO NOTHING")
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() == 1)
    }

    /// A media stream claims its call, once: the row is written (or the webhook's row is given
    /// the StreamSid and the instance) only if no stream has claimed the call before and it
    /// has not ended. One atomic statement, so two streams for one CallSid, on one instance or
    /// on two sharing the database, cannot both claim it. Returns whether this stream did.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for an empty CallSid, business id or StreamSid, or a negative
    /// start; [`StoreError::Query`] if the database fails.
    pub async fn claim_stream(&self, call: &NewCall) -> Result<bool, StoreError> {
        check_new_call(call)?;
        let stream_sid = call.stream_sid.as_deref().unwrap_or("");
        require_non_empty("stream_sid", stream_sid)?;
        let result = insert_call_row(
            call,
            " ON CONFLICT (call_sid) DO UPDATE SET stream_sid = excluded.stream_sid, \
             instance_id = excluded.instance_id \
             WHERE calls.stream_sid IS NULL AND calls.ended_at_ms IS NULL",
        )
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Closes the calls instance `instance_id` left open (it was killed, or its host died):
    /// each gets `ended_at_ms = now_ms` and the end reason `end_reason` (`crashed`). Calls of
    /// other instances are not touched. Returns how many were closed.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for an empty instance id; [`StoreError::Query`] if the database
    /// fails.
    pub async fn close_abandoned_calls(
        &self,
        instance_id: &str,
        now_ms: i64,
        end_reason: &str,
    ) -> Result<u64, StoreError> {
        require_non_empty("instance_id", instance_id)?;
        let result = sqlx::query(
            "UPDATE calls SET ended_at_ms = $2, end_reason = $3 \
             WHERE instance_id = $1 AND ended_at_ms IS NULL",
        )
        .bind(instance_id)
        .bind(now_ms)
        .bind(end_reason)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
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
}

/// Maps a row with the `calls` columns, in any order.
pub(super) fn call_from_row(row: &AnyRow) -> Result<CallRecord, sqlx::Error> {
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
        instance_id: row.try_get("instance_id")?,
    })
}

/// The summary columns of a `calls` row; `None` while the call has none (`turns` is NULL).
pub(super) fn summary_from_row(row: &AnyRow) -> Result<Option<CallSummary>, sqlx::Error> {
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

/// The checks every written call passes.
fn check_new_call(call: &NewCall) -> Result<(), StoreError> {
    require_non_empty("call_sid", &call.call_sid)?;
    require_non_empty("business_id", &call.business_id)?;
    require_non_negative("started_at_ms", call.started_at_ms)
}

/// The `INSERT` of a new call's row with its values bound, followed by `on_conflict` (a
/// constant clause, or empty).
fn insert_call_row<'q>(
    call: &'q NewCall,
    on_conflict: &'static str,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    let sql = format!(
        "INSERT INTO calls (call_sid, stream_sid, business_id, direction, from_number, \
         to_number, started_at_ms, instance_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)\
         {on_conflict}"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(call.call_sid.as_str())
        .bind(call.stream_sid.as_deref())
        .bind(call.business_id.as_str())
        .bind(call.direction.as_str())
        .bind(call.from_number.as_str())
        .bind(call.to_number.as_str())
        .bind(call.started_at_ms)
        .bind((!call.instance_id.is_empty()).then_some(call.instance_id.as_str()))
}

impl Store {
    /// Records what a status callback reported of call `status.call_sid`.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for an empty CallSid or a negative time or duration.
    pub async fn insert_call_status(&self, status: &CallStatusReport) -> Result<(), StoreError> {
        require_non_empty("call_sid", &status.call_sid)?;
        require_non_negative("at_ms", status.at_ms)?;
        if let Some(d) = status.duration_s {
            require_non_negative("duration_s", d)?;
        }
        sqlx::query(
            "INSERT INTO call_statuses (call_sid, at_ms, status, duration_s, answered_by) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&status.call_sid)
        .bind(status.at_ms)
        .bind(status.status.as_str())
        .bind(status.duration_s)
        .bind(&status.answered_by)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// What the status callbacks reported of a call, oldest first; empty for an unknown call.
    ///
    /// # Errors
    /// [`StoreError::Query`] if the database fails or a status is not one Twilio sends.
    pub async fn call_statuses(&self, call_sid: &str) -> Result<Vec<CallStatusReport>, StoreError> {
        let rows = sqlx::query(
            "SELECT call_sid, at_ms, status, duration_s, answered_by FROM call_statuses \
             WHERE call_sid = $1 ORDER BY at_ms",
        )
        .bind(call_sid)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|row| {
                Ok::<_, sqlx::Error>(CallStatusReport {
                    call_sid: row.try_get("call_sid")?,
                    at_ms: row.try_get("at_ms")?,
                    status: events::parsed(row, "status")?,
                    duration_s: row.try_get("duration_s")?,
                    answered_by: row.try_get("answered_by")?,
                })
            })
            .collect::<Result<_, _>>()?)
    }
}

impl Store {
    /// Records what a transfer's `<Dial action>` callback reported of call
    /// `transfer.call_sid`.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for an empty CallSid or target, or a negative time or duration.
    pub async fn insert_transfer(&self, transfer: &TransferReport) -> Result<(), StoreError> {
        require_non_empty("call_sid", &transfer.call_sid)?;
        require_non_empty("target", &transfer.target)?;
        require_non_negative("at_ms", transfer.at_ms)?;
        if let Some(d) = transfer.duration_s {
            require_non_negative("duration_s", d)?;
        }
        sqlx::query(
            "INSERT INTO call_transfers (call_sid, at_ms, target, outcome, duration_s) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&transfer.call_sid)
        .bind(transfer.at_ms)
        .bind(&transfer.target)
        .bind(transfer.outcome.as_str())
        .bind(transfer.duration_s)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The transfers of a call and how each ended, oldest first; empty for an unknown call.
    ///
    /// # Errors
    /// [`StoreError::Query`] if the database fails or an outcome is not one this store writes.
    pub async fn call_transfers(&self, call_sid: &str) -> Result<Vec<TransferReport>, StoreError> {
        let rows = sqlx::query(
            "SELECT call_sid, at_ms, target, outcome, duration_s FROM call_transfers \
             WHERE call_sid = $1 ORDER BY at_ms",
        )
        .bind(call_sid)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|row| {
                Ok::<_, sqlx::Error>(TransferReport {
                    call_sid: row.try_get("call_sid")?,
                    at_ms: row.try_get("at_ms")?,
                    target: row.try_get("target")?,
                    outcome: events::parsed(row, "outcome")?,
                    duration_s: row.try_get("duration_s")?,
                })
            })
            .collect::<Result<_, _>>()?)
    }
}
