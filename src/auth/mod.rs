//! Accounts and tokens: passwords, access and refresh tokens, the `CurrentUser` extractor,
//! rate limits, and the `/v1/auth` routes.

mod extractor;
pub mod password;
pub mod ratelimit;
pub mod routes;
pub mod service;
pub mod tokens;

pub use extractor::{CurrentUser, authenticate};
