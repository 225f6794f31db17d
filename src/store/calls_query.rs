//! Listing recorded calls, for the admin API.

use super::{CALL_COLUMNS, CallRecord, Store, StoreError, call_from_row};

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
