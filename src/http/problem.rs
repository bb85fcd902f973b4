//! [`ApiError`], the one error type of the HTTP layer, rendered as problem+json.
//!
//! Every error a client sees has a stable machine-readable `code`. Internal errors are
//! logged once, inside the request's span (which carries the request id), and reach the
//! client as an opaque 500. A service's error becomes one here, where each kind gets its
//! status.

use axum::extract::rejection::PathRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::{FieldError, problem_response};
use crate::service::ServiceError;

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

/// Database errors, classified once (`service::error`), where a handler reads the store
/// itself.
impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        ServiceError::from(err).into()
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

/// Where each kind of a service's failure gets its status.
impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        let problem = |status, code, detail: String, errors| ApiError::Problem {
            status,
            code,
            detail,
            errors,
            retry_after: None,
        };
        match err {
            ServiceError::Invalid(errors) => ApiError::validation(errors),
            ServiceError::Unprocessable { code, detail } => {
                problem(StatusCode::UNPROCESSABLE_ENTITY, code, detail, Vec::new())
            }
            ServiceError::NotFound { what } => ApiError::not_found(&what),
            ServiceError::BadToken { code, detail } => {
                problem(StatusCode::BAD_REQUEST, code, detail, Vec::new())
            }
            ServiceError::Unauthenticated { code, detail } => {
                problem(StatusCode::UNAUTHORIZED, code, detail, Vec::new())
            }
            ServiceError::Forbidden { code, detail } => {
                problem(StatusCode::FORBIDDEN, code, detail, Vec::new())
            }
            ServiceError::Conflict {
                code,
                detail,
                errors,
            } => problem(StatusCode::CONFLICT, code, detail, errors),
            ServiceError::Stale { code, detail } => {
                problem(StatusCode::PRECONDITION_FAILED, code, detail, Vec::new())
            }
            ServiceError::Unstorable { detail } => problem(
                StatusCode::BAD_REQUEST,
                "unstorable_value",
                detail,
                Vec::new(),
            ),
            ServiceError::Busy {
                code,
                detail,
                retry_after,
            } => ApiError::Problem {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code,
                detail,
                errors: Vec::new(),
                retry_after: Some(retry_after),
            },
            ServiceError::Internal(err) => ApiError::Internal(err),
        }
    }
}
