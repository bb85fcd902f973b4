//! ETags from resource versions: `If-None-Match` for 304s, `If-Match` for 412s.

use axum::http::header::{ETAG, IF_MATCH, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::{ApiError, ApiResult};

/// The strong ETag of a resource version.
pub fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("digits are a valid header value")
}

fn parse(tag: &str) -> Option<i64> {
    tag.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .ok()
}

/// A 200 with the resource and its ETag, or a bodiless 304 when the client holds it.
pub fn conditional<T: Serialize>(headers: &HeaderMap, version: i64, body: &T) -> Response {
    let fresh = headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim() == "*" || parse(tag) == Some(version));
    if fresh {
        return (StatusCode::NOT_MODIFIED, [(ETAG, etag(version))]).into_response();
    }
    tagged(StatusCode::OK, version, body)
}

/// A response with the resource and its ETag.
pub fn tagged<T: Serialize>(status: StatusCode, version: i64, body: &T) -> Response {
    (status, [(ETAG, etag(version))], axum::Json(body)).into_response()
}

/// The version `If-Match` asks for, if any. `*` asks only that the resource exists.
pub fn if_match(headers: &HeaderMap) -> ApiResult<Option<i64>> {
    let Some(value) = headers.get(IF_MATCH) else {
        return Ok(None);
    };
    let value = value.to_str().unwrap_or_default().trim();
    if value == "*" {
        return Ok(None);
    }
    // Only one version can be current, so a list can match at most its first parseable tag.
    match value.split(',').find_map(parse) {
        Some(version) => Ok(Some(version)),
        None => Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "version_mismatch",
            "If-Match holds no ETag this server issued",
        )),
    }
}
