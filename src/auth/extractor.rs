//! `CurrentUser`: the one way a request is authenticated, shared by REST, WebSocket and SSE.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use uuid::Uuid;

use crate::AppState;
use crate::api::extract::{Repeated, at_most_one};
use crate::domain::Role;
use crate::error::{ApiError, ApiResult};
use crate::store::users;

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub id: Uuid,
    pub email: String,
    /// The role as stored now (a role change also bumps the token version).
    pub role: Role,
    /// The token version the request's token was issued under.
    pub token_version: i64,
    /// When the presented access token expires (seconds since the epoch).
    pub expires_at: i64,
}

impl CurrentUser {
    /// 403 unless the caller has at least `role`.
    pub fn require(&self, role: Role) -> ApiResult<()> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!("this needs the {role} role")))
        }
    }
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let header = at_most_one(&parts.headers, AUTHORIZATION)
            .map_err(|Repeated| {
                ApiError::bad_request("ambiguous_authorization", "send one Authorization header")
            })?
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "missing_token",
                    "an Authorization: Bearer token is required",
                )
            })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "invalid_token",
                    "the Authorization header must be `Bearer <token>`",
                )
            })?;
        authenticate(state, token).await
    }
}

/// Checks an access token and that it still stands: the user exists, is enabled, and has
/// not bumped their token version since it was issued.
pub async fn authenticate(state: &AppState, token: &str) -> ApiResult<CurrentUser> {
    let claims = state.tokens.verify(token)?;
    let revoked = || {
        ApiError::unauthorized(
            "token_revoked",
            "the access token has been revoked; log in again",
        )
    };
    let user = users::find(&state.db, claims.sub)
        .await?
        .ok_or_else(revoked)?;
    if user.disabled || user.token_version != claims.tv {
        return Err(revoked());
    }
    Ok(CurrentUser {
        id: user.id,
        email: user.email,
        role: user.role,
        token_version: user.token_version,
        expires_at: claims.exp,
    })
}
