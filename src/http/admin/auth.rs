//! The admin API's bearer tokens: roles, the constant-time check, the OpenAPI security scheme.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::config::Role;
use crate::http::AppState;

/// The role of the bearer token in `headers`, comparing against every configured token in
/// constant time; `None` without a header or with an unknown token.
pub(super) fn role_of(headers: &HeaderMap, tokens: &[(String, Role)]) -> Option<Role> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, presented) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let presented = Sha256::digest(presented.trim().as_bytes());
    let mut found = None;
    for (token, role) in tokens {
        let expected = Sha256::digest(token.as_bytes());
        if bool::from(expected.ct_eq(&presented)) && found.is_none() {
            found = Some(*role);
        }
    }
    found
}

/// Lets a request through when its token's role allows its method: 401 without a valid token,
/// 403 for a viewer asking for anything but `GET` (or `HEAD`).
pub(super) async fn authorize(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    match role_of(request.headers(), &state.secrets.admin_tokens) {
        None => ApiError::Unauthorized.into_response(),
        Some(Role::Viewer) if !matches!(*request.method(), Method::GET | Method::HEAD) => {
            ApiError::Forbidden.into_response()
        }
        Some(_) => next.run(request).await,
    }
}

/// Adds the bearer-token security scheme.
pub(super) struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}
