//! The network edge: the accept loop and its own HTTP/1.1 front end for live streams
//! ([`server`]), socket writes that never wait on a slow peer ([`tcp`]), and the WebSocket
//! framing ([`wire`]). It knows nothing of users or events.

pub mod server;
pub mod tcp;
pub mod wire;

use axum::http::{HeaderName, HeaderValue, header};

/// The header that carries a request's id: set (or kept) by the HTTP middleware, and
/// echoed by the front end on the problems it answers itself.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The security headers every response carries, and their values: set by the HTTP
/// middleware on each response that has not set its own (the dashboard and the API docs
/// set a page's policy), and by the front end on the problems it answers itself.
///
/// - `nosniff`: a browser renders a response only as its declared type, so a JSON body
///   that happens to look like HTML or script is never run as such.
/// - `no-referrer`: nothing here needs a `Referer`, and a URL may carry a stream ticket in
///   its query string; the dashboard's page sends none either.
/// - `DENY` and `frame-ancestors 'none'`: no response is meant to be framed (clickjacking).
/// - `default-src 'none'`: a JSON or problem body opened as a document loads and runs
///   nothing.
pub const SECURITY_HEADERS: [(HeaderName, HeaderValue); 4] = [
    (
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    ),
    (
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    ),
    (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    (
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    ),
];
