//! What every HTTP handler shares: [`AppState`], the extractors (JSON and query bodies with
//! per-field errors, the caller, the client's address), conditional requests, the stream
//! position header, rate limits and the middleware stack.

pub mod auth;
pub mod etag;
pub mod extract;
pub mod middleware;
pub mod position;
pub mod problem;
pub mod ratelimit;
pub mod state;

pub use state::AppState;
