//! Who is calling: the `CurrentUser` and `Actor` extractors, the one way a request is
//! authenticated, shared by REST, WebSocket and SSE; and `no_store` for responses that
//! carry a token.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::http::AppState;
use crate::http::extract::{Repeated, at_most_one};
use crate::http::problem::{ApiError, ApiResult};
use crate::net::REQUEST_ID;
use crate::service::Actor;
use crate::service::accounts::{CurrentUser, authenticate};

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let token = bearer_token(&parts.headers, "an Authorization: Bearer token is required")?;
        Ok(authenticate(&state.db, &state.tokens, &state.token_cache, token).await?)
    }
}

/// The token of the request's one `Authorization: Bearer` header: 400 for several
/// headers, 401 (`missing`, said as the detail) for none, 401 for another scheme.
pub fn bearer_token<'a>(headers: &'a HeaderMap, missing: &'static str) -> ApiResult<&'a str> {
    let header = at_most_one(headers, AUTHORIZATION)
        .map_err(|Repeated| {
            ApiError::bad_request("ambiguous_authorization", "send one Authorization header")
        })?
        .ok_or_else(|| ApiError::unauthorized("missing_token", missing))?;
    header
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
        })
}

impl FromRequestParts<AppState> for Actor {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let user = CurrentUser::from_request_parts(parts, state).await?;
        let request_id = parts
            .headers
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Actor { user, request_id })
    }
}

/// A response that carries a token: `Cache-Control: no-store`, so that no cache (the
/// browser's, a proxy's) keeps a copy.
pub type NoStore<T> = ([(HeaderName, HeaderValue); 1], T);

pub fn no_store<T>(body: T) -> NoStore<T> {
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        body,
    )
}
