//! [`ServiceError`]: why an operation did not happen, in the operation's own terms. The
//! HTTP edge (`http::problem`) gives each kind its status; a service names none.

use crate::error::FieldError;

/// Why an operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Fields that break their rules.
    #[error("invalid fields: {0:?}")]
    Invalid(Vec<FieldError>),
    /// A request that cannot be taken as a whole, though each field is well formed (an
    /// idempotency key reused with another body).
    #[error("{code}: {detail}")]
    Unprocessable { code: &'static str, detail: String },
    /// Nothing by that id, or nothing the caller may see.
    #[error("{what} not found")]
    NotFound { what: String },
    /// The token of a link from an email that is unknown, used or expired (which of them
    /// is not said).
    #[error("{code}: {detail}")]
    BadToken { code: &'static str, detail: String },
    /// Credentials or a token that do not stand.
    #[error("{code}: {detail}")]
    Unauthenticated { code: &'static str, detail: String },
    /// The caller is known, and may not.
    #[error("{code}: {detail}")]
    Forbidden { code: &'static str, detail: String },
    /// The state of things forbids it now (a taken email, short stock, a status that
    /// cannot follow), with the fields at fault, if any.
    #[error("{code}: {detail}")]
    Conflict {
        code: &'static str,
        detail: String,
        errors: Vec<FieldError>,
    },
    /// The resource changed since the caller read the version it names.
    #[error("{code}: {detail}")]
    Stale { code: &'static str, detail: String },
    /// A value the database cannot hold (a NUL in text, a date out of its range).
    #[error("unstorable value: {detail}")]
    Unstorable { detail: String },
    /// Too much at once: try again after `retry_after` seconds.
    #[error("{code}: {detail}")]
    Busy {
        code: &'static str,
        detail: String,
        retry_after: u64,
    },
    /// Anything else: a failure of the server, not of the request.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type ServiceResult<T> = Result<T, ServiceError>;

impl ServiceError {
    pub fn validation(errors: Vec<FieldError>) -> Self {
        ServiceError::Invalid(errors)
    }

    pub fn not_found(what: &str) -> Self {
        ServiceError::NotFound { what: what.into() }
    }

    pub fn unauthorized(code: &'static str, detail: impl Into<String>) -> Self {
        ServiceError::Unauthenticated {
            code,
            detail: detail.into(),
        }
    }

    pub fn forbidden(code: &'static str, detail: impl Into<String>) -> Self {
        ServiceError::Forbidden {
            code,
            detail: detail.into(),
        }
    }

    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        ServiceError::Conflict {
            code,
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    /// The stable code a client sees; `internal` for a failure of the server.
    pub fn code(&self) -> &'static str {
        match self {
            ServiceError::Invalid(_) => "validation_failed",
            ServiceError::NotFound { .. } => "not_found",
            ServiceError::Unstorable { .. } => "unstorable_value",
            ServiceError::Unprocessable { code, .. }
            | ServiceError::BadToken { code, .. }
            | ServiceError::Unauthenticated { code, .. }
            | ServiceError::Forbidden { code, .. }
            | ServiceError::Conflict { code, .. }
            | ServiceError::Stale { code, .. }
            | ServiceError::Busy { code, .. } => code,
            ServiceError::Internal(_) => "internal",
        }
    }
}

/// Database errors are classified here and nowhere else.
impl From<sqlx::Error> for ServiceError {
    fn from(err: sqlx::Error) -> Self {
        if let sqlx::Error::RowNotFound = err {
            return ServiceError::not_found("resource");
        }
        if let Some(db) = err.as_database_error()
            && db.is_unique_violation()
            && let Some(conflict) = unique_violation(db.constraint(), db.message())
        {
            return conflict;
        }
        if let Some(db) = err.as_database_error()
            && let Some(code) = db.code()
            && UNSTORABLE_VALUES.contains(&code.as_ref())
        {
            // A value from the request that PostgreSQL cannot hold: a NUL in text or JSON,
            // a date before its calendar. The client's to fix, not a server failure.
            return ServiceError::Unstorable {
                detail: format!("a value in the request cannot be stored: {}", db.message()),
            };
        }
        ServiceError::Internal(err.into())
    }
}

/// PostgreSQL's SQLSTATEs for a value it refuses to hold: a NUL character in text
/// (22021), a `\u0000` in JSON (22P05), a timestamp out of its range (22008).
const UNSTORABLE_VALUES: [&str; 3] = ["22021", "22P05", "22008"];

/// Maps a unique constraint to the conflict it means. PostgreSQL names the constraint;
/// SQLite only names the columns in its message (`UNIQUE constraint failed: users.email`).
fn unique_violation(constraint: Option<&str>, message: &str) -> Option<ServiceError> {
    let which = constraint.unwrap_or_else(|| {
        message
            .strip_prefix("UNIQUE constraint failed: ")
            .unwrap_or(message)
    });
    match which {
        "users_email_key" | "users.email" => Some(ServiceError::conflict(
            "email_taken",
            "an account with this email already exists",
        )),
        "products_sku_key" | "products.sku" => Some(ServiceError::conflict(
            "sku_taken",
            "a product with this SKU already exists",
        )),
        _ => None,
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
            assert_eq!(err.code(), "email_taken");
        }
        assert!(unique_violation(Some("other"), "").is_none());
    }
}
