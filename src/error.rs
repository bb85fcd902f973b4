//! Problem details (RFC 9457): the `application/problem+json` body every error a client
//! sees is rendered as, and the per-field errors it may list. Every layer may name a
//! failing field; the HTTP layer's `ApiError` (`http::problem`) and the front end's own
//! answers (`net::server`) render through [`problem_response`].

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
