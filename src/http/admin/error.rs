//! The admin API's errors: one type, its status codes and JSON body decided in one place, and
//! the JSON body extractor whose rejections are those errors.

use axum::Json;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::ops;
use crate::store::StoreError;

/// An admin API error; the status code and the JSON body are decided here.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No valid bearer token.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// The token's role does not allow the request.
    #[error("this token's role may only read")]
    Forbidden,
    /// The request is malformed (body, query).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Something the request names does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A prompt body failed validation.
    #[error("the prompt is invalid: {}", problems.join("; "))]
    InvalidPrompt {
        /// Each problem's message.
        problems: Vec<String>,
        /// Each warning's message.
        warnings: Vec<String>,
    },
    /// A value the request gives was rejected (a guard rule the sanitizer would not compile).
    #[error("invalid: {0}")]
    Invalid(String),
    /// The store failed or refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Something on our side failed (logged; the client sees no detail).
    #[error("internal error: {0}")]
    Internal(String),
    /// A business rule refuses the request (422, naming the rule).
    #[error("refused: {0}")]
    Refused(String),
    /// A rate is spent (429).
    #[error("{0}")]
    RateLimited(String),
    /// Something the request needs is not configured (503).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Twilio refused or failed the request (502).
    #[error("Twilio: {0}")]
    Twilio(String),
}

impl From<ops::OpsError> for ApiError {
    fn from(e: ops::OpsError) -> Self {
        match e {
            ops::OpsError::NotFound(what) => ApiError::NotFound(what),
            ops::OpsError::InvalidPrompt { problems, warnings } => {
                ApiError::InvalidPrompt { problems, warnings }
            }
            ops::OpsError::Invalid(e) => ApiError::Invalid(e),
            ops::OpsError::Store(e) => ApiError::Store(e),
            ops::OpsError::Internal(e) => ApiError::Internal(e),
            ops::OpsError::Refused(e) => ApiError::Refused(e),
            ops::OpsError::RateLimited(e) => ApiError::RateLimited(e),
            ops::OpsError::Unavailable(e) => ApiError::Unavailable(e),
            ops::OpsError::Twilio(e) => ApiError::Twilio(e),
        }
    }
}

/// The JSON body of an error.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
    /// For a rejected prompt: each problem's message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// For a rejected prompt: each warning's message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) | ApiError::Store(StoreError::NotFound(_)) => {
                StatusCode::NOT_FOUND
            }
            ApiError::InvalidPrompt { .. }
            | ApiError::Invalid(_)
            | ApiError::Refused(_)
            | ApiError::Store(StoreError::Invalid(_)) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Twilio(_) => StatusCode::BAD_GATEWAY,
            ApiError::Store(StoreError::Conflict(_)) => StatusCode::CONFLICT,
            ApiError::Store(e) => {
                tracing::error!(error = %e, "database error in an admin API request");
                StatusCode::INTERNAL_SERVER_ERROR
            }
            ApiError::Internal(e) => {
                tracing::error!(error = %e, "internal error in an admin API request");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let error = if status == StatusCode::INTERNAL_SERVER_ERROR {
            "internal error".to_string()
        } else {
            self.to_string()
        };
        let (problems, warnings) = match self {
            ApiError::InvalidPrompt { problems, warnings } => (problems, warnings),
            _ => (Vec::new(), Vec::new()),
        };
        let mut response = (
            status,
            Json(ErrorBody {
                error,
                problems,
                warnings,
            }),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// A JSON request body whose rejection is an [`ApiError`] (JSON, 400).
pub struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Body(value)),
            Err(rejection) => Err(ApiError::BadRequest(rejection.body_text())),
        }
    }
}

/// Every error response of the admin API as JSON: a response with a 4xx or 5xx status that is
/// not JSON already (axum's own rejections of a malformed path or query, which are plain text)
/// gets the [`ErrorBody`] shape, its text as `error`. Applied to every admin route, so the
/// OpenAPI document's error responses hold for all of them.
pub(super) async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, REJECTION_TEXT_LIMIT)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let error = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        text
    };
    let mut json = (
        status,
        Json(ErrorBody {
            error,
            problems: Vec::new(),
            warnings: Vec::new(),
        }),
    )
        .into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            json.headers_mut().insert(name.clone(), value.clone());
        }
    }
    json
}

/// The most of a plain-text error body kept as the JSON `error`, bytes.
const REJECTION_TEXT_LIMIT: usize = 4 * 1024;

/// Adds the error responses every admin operation can give to each operation of the OpenAPI
/// document that does not list them already: 400 (a malformed path, query or body), 401 (no or
/// an unknown token), 403 (a viewer asking to change something) and 500 (the database
/// failed), each an [`ErrorBody`].
pub(super) struct CommonErrors;

impl utoipa::Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
        const COMMON: [(&str, &str); 4] = [
            ("400", "Malformed path, query or body"),
            ("401", "No bearer token, or an unknown one"),
            ("403", "The token's role may only read"),
            ("500", "The database failed"),
        ];
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                for (code, description) in COMMON {
                    operation
                        .responses
                        .responses
                        .entry(code.to_string())
                        .or_insert_with(|| {
                            RefOr::T(
                                ResponseBuilder::new()
                                    .description(description)
                                    .content(
                                        "application/json",
                                        ContentBuilder::new()
                                            .schema(Some(Ref::from_schema_name("ErrorBody")))
                                            .build(),
                                    )
                                    .build(),
                            )
                        });
                }
            }
        }
    }
}
