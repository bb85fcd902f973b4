//! The network edge: the accept loop and its own HTTP/1.1 front end for live streams
//! ([`server`]), socket writes that never wait on a slow peer ([`tcp`]), and the WebSocket
//! framing ([`wire`]). It knows nothing of users or events.

pub mod server;
pub mod tcp;
pub mod wire;

use std::net::SocketAddr;

use axum::http::{HeaderName, HeaderValue, header};
use tokio::net::{TcpListener, TcpSocket};

/// The accept queue asked of the kernel, which caps it at `net.core.somaxconn` (4096 by
/// default since Linux 5.4). tokio's `TcpListener::bind` asks for 1024 and Rust's standard
/// library for 128: too few for the reconnections that follow an instance's drain, when
/// thousands of clients arrive within a second.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Listens on `address` with an accept queue of [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, as
/// tokio's `bind` sets, so a restarted server gets its port back at once).
pub fn listen(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

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
