//! The one error type of the HTTP layer, rendered as `application/problem+json` (RFC 9457).
//!
//! Every error a client sees has a stable machine-readable `code`. Internal errors are
//! logged once, inside the request's span (which carries the request id), and reach the
//! client as an opaque 500.

use axum::extract::rejection::PathRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One failing field of a request body or query.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FieldError {
    /// The field's name as the client sent it.
    pub field: String,
    /// A stable code for the failure, e.g. `too_short`.
    pub code: &'static str,
    /// A sentence for people.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            code,
            message: message.into(),
        }
    }
}

/// An error as the HTTP layer answers it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A failure the client can act on.
    #[error("{code}: {detail}")]
    Problem {
        status: StatusCode,
        code: &'static str,
        detail: String,
        errors: Vec<FieldError>,
        retry_after: Option<u64>,
    },
    /// Anything else: logged, and answered with an opaque 500.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        ApiError::Problem {
            status,
            code,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub fn unauthorized(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail)
    }

    /// A 422 listing every failing field.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        ApiError::Problem {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "validation_failed",
            detail: "the request has invalid fields".into(),
            errors,
            retry_after: None,
        }
    }

    pub fn too_many_requests(retry_after_secs: u64) -> Self {
        ApiError::Problem {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "rate_limited",
            detail: format!("too many attempts; retry in {retry_after_secs} s"),
            errors: Vec::new(),
            retry_after: Some(retry_after_secs),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Problem { status, .. } => *status,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The body of every error response (RFC 9457), as documented in the OpenAPI spec.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Problem)]
pub struct ProblemDoc {
    /// `urn:tidings:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The HTTP status phrase.
    pub title: String,
    pub status: u16,
    /// A sentence for people.
    pub detail: String,
    /// Stable and machine-readable, e.g. `validation_failed`, `insufficient_stock`.
    pub code: String,
    /// For validation failures: each failing field.
    #[schema(nullable = false)]
    pub errors: Option<Vec<FieldError>>,
}

/// The body of an error response.
#[derive(Debug, Serialize)]
struct ProblemBody<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    code: &'a str,
    #[serde(skip_serializing_if = "<[FieldError]>::is_empty")]
    errors: &'a [FieldError],
}

/// Renders a problem; used for our own errors and for bodiless errors from middleware.
pub fn problem_response(
    status: StatusCode,
    code: &str,
    detail: &str,
    errors: &[FieldError],
) -> Response {
    let body = ProblemBody {
        kind: format!("urn:tidings:problem:{code}"),
        title: status.canonical_reason().unwrap_or("Error"),
        status: status.as_u16(),
        detail,
        code,
        errors,
    };
    let bytes = serde_json::to_vec(&body).expect("a problem body always serialises");
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))],
        bytes,
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Problem {
                status,
                code,
                detail,
                errors,
                retry_after,
            } => {
                let mut response = problem_response(status, code, &detail, &errors);
                if status == StatusCode::UNAUTHORIZED {
                    response
                        .headers_mut()
                        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                }
                if let Some(secs) = retry_after {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                }
                response
            }
            ApiError::Internal(err) => {
                // Logged here, once, inside the request span that carries the request id.
                tracing::error!(error = ?err, "internal error");
                problem_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the server failed to handle the request; it has been logged",
                    &[],
                )
            }
        }
    }
}

/// Database errors are classified here and nowhere else.
impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        if let sqlx::Error::RowNotFound = err {
            return ApiError::not_found("resource");
        }
        if let Some(db) = err.as_database_error()
            && db.is_unique_violation()
            && let Some(problem) = unique_violation(db.constraint(), db.message())
        {
            return problem;
        }
        if let Some(db) = err.as_database_error()
            && let Some(code) = db.code()
            && UNSTORABLE_VALUES.contains(&code.as_ref())
        {
            // A value from the request that PostgreSQL cannot hold: a NUL in text or JSON,
            // a date before its calendar. The client's to fix, not a server failure.
            return ApiError::bad_request(
                "unstorable_value",
                format!("a value in the request cannot be stored: {}", db.message()),
            );
        }
        ApiError::Internal(err.into())
    }
}

/// PostgreSQL's SQLSTATEs for a value it refuses to hold: a NUL character in text
/// (22021), a `\u0000` in JSON (22P05), a timestamp out of its range (22008).
const UNSTORABLE_VALUES: [&str; 3] = ["22021", "22P05", "22008"];

/// Maps a unique constraint to the conflict it means. PostgreSQL names the constraint;
/// SQLite only names the columns in its message (`UNIQUE constraint failed: users.email`).
fn unique_violation(constraint: Option<&str>, message: &str) -> Option<ApiError> {
    let which = constraint.unwrap_or_else(|| {
        message
            .strip_prefix("UNIQUE constraint failed: ")
            .unwrap_or(message)
    });
    match which {
        "users_email_key" | "users.email" => Some(ApiError::conflict(
            "email_taken",
            "an account with this email already exists",
        )),
        "products_sku_key" | "products.sku" => Some(ApiError::conflict(
            "sku_taken",
            "a product with this SKU already exists",
        )),
        _ => None,
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        match rejection {
            PathRejection::FailedToDeserializePathParams(e) => {
                ApiError::not_found(&format!("resource ({})", e.body_text()))
            }
            other => ApiError::bad_request("invalid_path", other.body_text()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_and_postgres_unique_emails_mean_the_same_conflict() {
        for (constraint, message) in [
            (Some("users_email_key"), "duplicate key value"),
            (None, "UNIQUE constraint failed: users.email"),
        ] {
            let err = unique_violation(constraint, message).unwrap();
            assert_eq!(err.status(), StatusCode::CONFLICT);
        }
        assert!(unique_violation(Some("other"), "").is_none());
    }
}
