//! A business's tools (`business_tools`) and the tool calls its calls made (`tool_calls`).

use super::*;
use crate::domain::ToolKind;
use crate::store::model::{BusinessTool, NewToolCall, ToolCallRecord};

/// The `business_tools` columns, as every query selects them.
const TOOL_COLUMNS: &str = "name, kind, description, parameters, endpoint, timeout_ms, \
     secret_env, allowed_tools, updated_at_ms";

impl Store {
    /// Adds a tool to business `business_id`, or replaces its tool of the same name (all
    /// fields); `updated_at_ms` is set to now. The fields are checked by
    /// [`crate::ops::tools::set`]; the store checks only what the schema needs.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if the business does not exist; [`StoreError::Query`].
    pub async fn upsert_tool(
        &self,
        business_id: &str,
        tool: &BusinessTool,
    ) -> Result<BusinessTool, StoreError> {
        let mut tool = tool.clone();
        tool.updated_at_ms = now_ms();
        sqlx::query(
            "INSERT INTO business_tools \
             (business_id, name, kind, description, parameters, endpoint, timeout_ms, \
              secret_env, allowed_tools, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (business_id, name) DO UPDATE SET \
             kind = excluded.kind, description = excluded.description, \
             parameters = excluded.parameters, endpoint = excluded.endpoint, \
             timeout_ms = excluded.timeout_ms, secret_env = excluded.secret_env, \
             allowed_tools = excluded.allowed_tools, updated_at_ms = excluded.updated_at_ms",
        )
        .bind(business_id)
        .bind(&tool.name)
        .bind(tool.kind.as_str())
        .bind(&tool.description)
        .bind(tool.parameters.to_string())
        .bind(&tool.endpoint)
        .bind(tool.timeout_ms)
        .bind(&tool.secret_env)
        .bind(tool.allowed_tools.join(","))
        .bind(tool.updated_at_ms)
        .execute(&self.pool)
        .await
        .map_err(|e| unless_business_missing(e, business_id))?;
        Ok(tool)
    }

    /// Business `business_id`'s tools, sorted by name; empty for an unknown business.
    ///
    /// # Errors
    /// [`StoreError::Query`] if the database fails or a row cannot be read (a `parameters`
    /// that is not JSON).
    pub async fn tools(&self, business_id: &str) -> Result<Vec<BusinessTool>, StoreError> {
        let sql = format!(
            "SELECT {TOOL_COLUMNS} FROM business_tools WHERE business_id = $1 ORDER BY name"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(business_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(tool_from_row).collect::<Result<_, _>>()?)
    }

    /// Removes business `business_id`'s tool `name`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when the business has no such tool.
    pub async fn delete_tool(&self, business_id: &str, name: &str) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM business_tools WHERE business_id = $1 AND name = $2")
            .bind(business_id)
            .bind(name)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "tool {name:?} of business {business_id:?}"
            )));
        }
        Ok(())
    }

    /// Records a tool call and returns its generated id (`"tool_"` + 32 hex digits). The
    /// arguments are redacted first ([`redact`]): the store never holds them in clear.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for an empty CallSid, business id or tool name, a negative time
    /// or a latency that is not finite.
    pub async fn insert_tool_call(&self, call: &NewToolCall) -> Result<String, StoreError> {
        require_non_empty("call_sid", &call.call_sid)?;
        require_non_empty("business_id", &call.business_id)?;
        require_non_empty("tool", &call.tool)?;
        require_non_negative("at_ms", call.at_ms)?;
        if !call.latency_ms.is_finite() {
            return Err(StoreError::Invalid(format!(
                "tool call latency must be a finite number (got {})",
                call.latency_ms
            )));
        }
        let id = format!("tool_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(
            "INSERT INTO tool_calls \
             (id, call_sid, business_id, at_ms, tool, status, latency_ms, held_ms, arguments) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&id)
        .bind(&call.call_sid)
        .bind(&call.business_id)
        .bind(call.at_ms)
        .bind(&call.tool)
        .bind(call.status.as_str())
        .bind(call.latency_ms)
        .bind(i64::try_from(call.held_ms).unwrap_or(i64::MAX))
        .bind(redact(&call.arguments).as_ref())
        .execute(&self.pool)
        .await?;
        Ok(id)
    }

    /// The tool calls recorded for a call, oldest first; empty for an unknown call.
    ///
    /// # Errors
    /// [`StoreError::Query`] if the database fails.
    pub async fn tool_calls(&self, call_sid: &str) -> Result<Vec<ToolCallRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, call_sid, business_id, at_ms, tool, status, latency_ms, held_ms, \
             arguments FROM tool_calls WHERE call_sid = $1 ORDER BY at_ms, id",
        )
        .bind(call_sid)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|row| {
                Ok::<_, sqlx::Error>(ToolCallRecord {
                    id: row.try_get("id")?,
                    call_sid: row.try_get("call_sid")?,
                    business_id: row.try_get("business_id")?,
                    at_ms: row.try_get("at_ms")?,
                    tool: row.try_get("tool")?,
                    status: events::parsed(row, "status")?,
                    latency_ms: row.try_get("latency_ms")?,
                    held_ms: row.try_get("held_ms")?,
                    arguments: row.try_get("arguments")?,
                })
            })
            .collect::<Result<_, _>>()?)
    }
}

/// Maps a row with the `business_tools` columns.
fn tool_from_row(row: &AnyRow) -> Result<BusinessTool, sqlx::Error> {
    let parameters: String = row.try_get("parameters")?;
    let allowed: String = row.try_get("allowed_tools")?;
    let kind: ToolKind = events::parsed(row, "kind")?;
    Ok(BusinessTool {
        name: row.try_get("name")?,
        kind,
        description: row.try_get("description")?,
        parameters: serde_json::from_str(&parameters).map_err(|e| sqlx::Error::ColumnDecode {
            index: "parameters".into(),
            source: Box::new(e),
        })?,
        endpoint: row.try_get("endpoint")?,
        timeout_ms: row.try_get("timeout_ms")?,
        secret_env: row.try_get("secret_env")?,
        allowed_tools: allowed
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
        updated_at_ms: row.try_get("updated_at_ms")?,
    })
}
