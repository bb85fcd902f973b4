//! The network edge: the accept loop and its own HTTP/1.1 front end for live streams
//! ([`server`]), socket writes that never wait on a slow peer ([`tcp`]), and the WebSocket
//! framing ([`wire`]). It knows nothing of users or events.

pub mod server;
pub mod tcp;
pub mod wire;

use axum::http::HeaderName;

/// The header that carries a request's id: set (or kept) by the HTTP middleware, and
/// echoed by the front end on the problems it answers itself.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
