//! Calls a business placed (`outbound_calls`): the per-business rate is counted over them, and
//! an instance that rebuilds a placed call reads its variables and Twilio's `AnsweredBy` here.
//!
//! The rate is kept by reserving first: a row is inserted (`pending:<uuid>`), then the rows of
//! the last window are counted, and a reservation over the limit is deleted again. Two instances
//! placing at once can both refuse, never both exceed.

use super::*;

/// A call to reserve a place for under its business's rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOutboundCall<'a> {
    /// The business placing it.
    pub business_id: &'a str,
    /// The number called, E.164.
    pub to_number: &'a str,
    /// Its variables.
    pub variables: &'a std::collections::BTreeMap<String, String>,
    /// Placed outside the calling hours by an admin's choice.
    pub forced: bool,
    /// When, epoch ms.
    pub placed_at_ms: i64,
}

/// A reservation under a business's outbound rate ([`Store::reserve_outbound`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The row's key until Twilio gives the call its CallSid.
    pub key: String,
}

impl Store {
    /// Reserves `call`, when fewer than `per_window` calls of its business were placed in the
    /// `window_ms` before it; `None` when the rate is spent.
    ///
    /// # Errors
    /// [`StoreError::Query`] if the database fails.
    pub async fn reserve_outbound(
        &self,
        call: &NewOutboundCall<'_>,
        window_ms: i64,
        per_window: i64,
    ) -> Result<Option<Reservation>, StoreError> {
        let NewOutboundCall {
            business_id,
            to_number,
            variables,
            forced,
            placed_at_ms: now_ms,
        } = *call;
        let key = format!("pending:{}", uuid::Uuid::new_v4().simple());
        let variables = serde_json::to_string(variables)
            .map_err(|e| StoreError::Invalid(format!("variables cannot be stored: {e}")))?;
        sqlx::query(
            "INSERT INTO outbound_calls \
             (call_sid, business_id, placed_at_ms, to_number, variables, forced) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&key)
        .bind(business_id)
        .bind(now_ms)
        .bind(to_number)
        .bind(&variables)
        .bind(i64::from(forced))
        .execute(&self.pool)
        .await?;
        let placed: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM outbound_calls WHERE business_id = $1 AND placed_at_ms > $2",
        )
        .bind(business_id)
        .bind(now_ms - window_ms)
        .fetch_one(&self.pool)
        .await?;
        if placed > per_window {
            self.cancel_outbound(&Reservation { key }).await?;
            return Ok(None);
        }
        Ok(Some(Reservation { key }))
    }

    /// The reserved call was placed: it is known by `call_sid` from now on.
    ///
    /// # Errors
    /// [`StoreError::Query`] if the database fails.
    pub async fn confirm_outbound(
        &self,
        reservation: &Reservation,
        call_sid: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE outbound_calls SET call_sid = $2 WHERE call_sid = $1")
            .bind(&reservation.key)
            .bind(call_sid)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The reserved call was not placed (Twilio refused it): it does not count.
    ///
    /// # Errors
    /// [`StoreError::Query`] if the database fails.
    pub async fn cancel_outbound(&self, reservation: &Reservation) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM outbound_calls WHERE call_sid = $1")
            .bind(&reservation.key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records Twilio's `AnsweredBy` on the placed call `call_sid` (nothing when it is not
    /// one).
    ///
    /// # Errors
    /// [`StoreError::Query`] if the database fails.
    pub async fn set_answered_by(
        &self,
        call_sid: &str,
        answered_by: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE outbound_calls SET answered_by = $2 WHERE call_sid = $1")
            .bind(call_sid)
            .bind(answered_by)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The placed call `call_sid`, or `None` when it is not one.
    ///
    /// # Errors
    /// [`StoreError::Query`] if the database fails.
    pub async fn outbound_call(&self, call_sid: &str) -> Result<Option<OutboundCall>, StoreError> {
        let row = sqlx::query(
            "SELECT call_sid, business_id, placed_at_ms, to_number, variables, forced, \
             answered_by FROM outbound_calls WHERE call_sid = $1",
        )
        .bind(call_sid)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let variables: String = row.try_get("variables")?;
        Ok(Some(OutboundCall {
            call_sid: row.try_get("call_sid")?,
            business_id: row.try_get("business_id")?,
            placed_at_ms: row.try_get("placed_at_ms")?,
            to_number: row.try_get("to_number")?,
            // Written by this store as JSON; a hand edit that is not reads as none.
            variables: serde_json::from_str(&variables).unwrap_or_default(),
            forced: row.try_get::<i64, _>("forced")? != 0,
            answered_by: row.try_get("answered_by")?,
        }))
    }
}
