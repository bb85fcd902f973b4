//! The middleware every request passes: request ids, the request's span, security headers,
//! response compression, CORS, the Host check, problem+json bodies for the router's own
//! errors, and panics answered as 500s.

use std::time::Duration;

use axum::body::Body;
use axum::extract::MatchedPath;
use axum::http::{
    Extensions, HeaderMap, HeaderName, Request, Response, StatusCode, Version, header,
};
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::set_header::response::SetMultipleResponseHeadersLayer;

use crate::error::problem_response;
use crate::http::extract::{Repeated, at_most_one};
use crate::http::position;
use crate::net::{REQUEST_ID, SECURITY_HEADERS};

/// How long a browser may cache a CORS preflight answer: it spares a preflight per
/// request, and a changed `TIDINGS_CORS_ORIGINS` still reaches browsers within 10 minutes
/// (Chromium caps it at 2 hours anyway).
const CORS_PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// CORS for the configured browser origins: the API's methods and headers, and the
/// response headers a browser app needs to read (ETags, Location, Retry-After, ids, the
/// stream position of a read).
pub fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use axum::http::{HeaderValue, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
            header::IF_NONE_MATCH,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("last-event-id"),
            REQUEST_ID,
        ])
        .expose_headers([
            header::ETAG,
            header::LOCATION,
            header::RETRY_AFTER,
            REQUEST_ID,
            HeaderName::from_static("idempotent-replayed"),
            HeaderName::from_static("tidings-acks"),
            position::HEADER,
        ])
        .max_age(CORS_PREFLIGHT_MAX_AGE)
}

/// The security headers (`net::SECURITY_HEADERS`, where each is explained) on every
/// response that has not set its own: the dashboard and the API docs set the policy of
/// their pages, which is kept.
pub fn security_headers<B>() -> SetMultipleResponseHeadersLayer<Response<B>> {
    SetMultipleResponseHeadersLayer::if_not_present(
        SECURITY_HEADERS.into_iter().map(Into::into).collect(),
    )
}

/// The smallest body compressed: below about a kilobyte the bytes saved hardly shorten a
/// response (it fits a TCP segment either way) and the encoder's work and headers are not
/// worth it.
const COMPRESS_FROM_BYTES: u64 = 1024;

/// gzip, Brotli or zstd, as the client's `Accept-Encoding` prefers, for bodies of
/// [`COMPRESS_FROM_BYTES`] and more (JSON, the API documents, the docs' and dashboard's
/// files), with `Vary: Accept-Encoding`. ETags are left as they are: they name the
/// resource's content, whichever coding carries it, and `If-Match` must keep matching the
/// tag a client read, compressed or not.
///
/// Never compressed:
/// - event streams: each event must reach the client as it is written, and on the direct
///   path (`net::server`) the stream's task writes the socket itself, past any encoder;
/// - `101 Switching Protocols`: what follows it is not HTTP;
/// - images (the docs' icons), already compressed.
pub fn compression() -> CompressionLayer<impl Predicate> {
    let not_an_upgrade = |status: StatusCode, _: Version, _: &HeaderMap, _: &Extensions| {
        status != StatusCode::SWITCHING_PROTOCOLS
    };
    let predicate = SizeAbove::new(COMPRESS_FROM_BYTES)
        .and(NotForContentType::SSE)
        .and(NotForContentType::IMAGES)
        .and(not_an_upgrade);
    CompressionLayer::new()
        .gzip(true)
        .br(true)
        .zstd(true)
        .compress_when(predicate)
}

/// A client's own `x-request-id` is kept (to follow a request across services) if it is
/// one short token; anything else (several, long, odd characters) is replaced by a fresh
/// one, as it would otherwise be copied into every log line and audit entry of the request.
pub async fn drop_unusable_request_id(mut request: Request<Body>) -> Request<Body> {
    let usable = match at_most_one(request.headers(), REQUEST_ID) {
        Ok(Some(id)) => {
            (1..=128).contains(&id.len())
                && id
                    .as_bytes()
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
        }
        Ok(None) => true,
        Err(Repeated) => false,
    };
    if !usable {
        request.headers_mut().remove(REQUEST_ID);
    }
    request
}

/// The span of one request: keyed by the matched route, never the raw URI, whose query
/// string may carry a stream ticket.
pub fn request_span(request: &Request<Body>) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!("request", method = %request.method(), route, request_id)
}

/// An HTTP/1.1 request must carry exactly one valid Host header (RFC 9112, section 3.2):
/// which host it was meant for is otherwise anyone's guess, a proxy's included.
pub async fn require_host(request: Request<Body>, next: axum::middleware::Next) -> Response<Body> {
    if request.version() == axum::http::Version::HTTP_11 {
        let valid = match at_most_one(request.headers(), header::HOST) {
            Ok(Some(host)) => {
                host.is_empty()
                    || host
                        .to_str()
                        .is_ok_and(|h| h.parse::<axum::http::uri::Authority>().is_ok())
            }
            Ok(None) | Err(Repeated) => false,
        };
        if !valid {
            return problem_response(
                StatusCode::BAD_REQUEST,
                "bad_host",
                "an HTTP/1.1 request needs exactly one valid Host header",
                &[],
            );
        }
    }
    next.run(request).await
}

/// Errors made by the router or middleware (404, 405, 408, 413) carry no body, or a plain
/// text one (tower-http's 413); give them the same problem+json body as ours.
pub async fn problem_for_bare_errors(response: Response<Body>) -> Response<Body> {
    let status = response.status();
    let bare = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_none_or(|v| v.as_bytes().starts_with(b"text/plain"));
    if !(status.is_client_error() || status.is_server_error()) || !bare {
        return response;
    }
    let (code, detail) = match status {
        StatusCode::NOT_FOUND => ("not_found", "no route matches this path"),
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method_not_allowed", "this route does not take that method")
        }
        StatusCode::REQUEST_TIMEOUT => ("request_timeout", "the request took too long to handle"),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the request body is too large"),
        _ => ("error", status.canonical_reason().unwrap_or("error")),
    };
    let mut problem = problem_response(status, code, detail, &[]);
    for (name, value) in response.headers() {
        if name == header::CONTENT_LENGTH {
            continue;
        }
        problem
            .headers_mut()
            .entry(name)
            .or_insert_with(|| value.clone());
    }
    problem
}

pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response<Body> {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(panic = %message, "a handler panicked");
    problem_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the server failed to handle the request; it has been logged",
        &[],
    )
}
