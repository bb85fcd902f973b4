//! Accounts and tokens: passwords, access and refresh tokens, the `CurrentUser` extractor,
//! rate limits, and the `/v1/auth` routes.

mod extractor;
pub mod password;
pub mod ratelimit;
pub mod routes;
pub mod service;
pub mod tokens;

pub use extractor::{CurrentUser, authenticate};

use axum::http::{HeaderName, HeaderValue, header};

/// A response that carries a token: `Cache-Control: no-store`, so that no cache (the
/// browser's, a proxy's) keeps a copy.
pub type NoStore<T> = ([(HeaderName, HeaderValue); 1], T);

pub fn no_store<T>(body: T) -> NoStore<T> {
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        body,
    )
}
