//! The live endpoints: `GET /v1/ws` (WebSocket) and `GET /v1/events` (Server-Sent Events),
//! the stream tickets a browser uses to open them, and the echo route the WebSocket
//! conformance suite talks to. Each connection is a task that drives the
//! [`crate::realtime`] engine: register with the hub, replay what was missed, then write
//! what the mailbox holds.

pub mod echo;
pub mod sse;
pub mod tickets;
pub mod ws;

/// The answer to a live stream asked for while this instance drains for shutdown: a 503
/// before anything is switched or streamed, so that a proxy in front retries another
/// instance.
fn shutting_down() -> crate::http::problem::ApiError {
    crate::http::problem::ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "shutting_down",
        "this instance is shutting down",
    )
}
