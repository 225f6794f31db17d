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
            | ApiError::Store(StoreError::Invalid(_)) => StatusCode::UNPROCESSABLE_ENTITY,
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
