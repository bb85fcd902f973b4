//! The dashboard at `/app/`: plain HTML, CSS and JavaScript modules (web/app/) and the SDK
//! they are built on (clients/js/src/, at `/app/sdk/`), compiled into the binary by
//! build.rs, so the server needs no Node, npm or files beside it to serve them.
//!
//! Every file is served with its type, a strong ETag of its bytes and `Cache-Control:
//! no-cache`: the browser keeps its copy and asks each time, and gets a bodiless 304 while
//! the copy is current. (Hashed names would spare that request, but the modules import one
//! another by name, the SDK's included, and renaming them would take a build step.) Every
//! answer carries a Content-Security-Policy that lets the page load from, and connect to,
//! this origin only.

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::Router;
use axum::extract::Path;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

/// A file compiled into the binary.
struct Asset {
    /// The URL path below `/app/`.
    path: &'static str,
    /// Its `Content-Type`, from its extension.
    content_type: &'static str,
    bytes: &'static [u8],
}

// `static ASSETS: &[Asset]`, written by build.rs.
include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// The page's policy: scripts, styles, images, workers and connections (fetch, WebSocket,
/// event streams) from this origin only, no inline script or style, no plugins, not framed,
/// and DOM sinks such as `innerHTML` closed to strings (Trusted Types), so text from the API
/// can only ever become text. The one Trusted Types policy the page may create,
/// `tidings-service-worker`, is what registering the service worker (web/app/sw.js) takes:
/// `serviceWorker.register` is such a sink too, and that policy passes `sw.js` alone.
pub const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'; object-src 'none'; \
     require-trusted-types-for 'script'; trusted-types tidings-service-worker";

/// An asset ready to serve: its bytes, type and ETag.
struct Served {
    content_type: HeaderValue,
    etag: HeaderValue,
    bytes: &'static [u8],
}

/// The assets by path, their ETags computed once, at the first request.
static SERVED: LazyLock<HashMap<&'static str, Served>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|asset| {
            let digest = Sha256::digest(asset.bytes);
            let etag = format!("\"{}\"", hex(&digest[..12]));
            let served = Served {
                content_type: HeaderValue::from_static(asset.content_type),
                etag: HeaderValue::from_str(&etag).expect("hex digits are a valid header value"),
                bytes: asset.bytes,
            };
            (asset.path, served)
        })
        .collect()
});

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `/app/` and everything below it; `/app` redirects to `/app/`, so that the page's
/// relative imports resolve below it. `/`, which serves nothing else, sends a browser to
/// the dashboard (a temporary redirect: the root may serve something of its own one day).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/app/") }))
        .route("/app", get(|| async { Redirect::permanent("/app/") }))
        .route("/app/", get(index))
        .route("/app/{*path}", get(file))
        // `route_layer`: on this router's routes alone, not on the fallback every router
        // merged with it shares (a 404 elsewhere is the API's, with the API's policy).
        .route_layer(axum::middleware::map_response(security_headers))
}

/// The dashboard's page.
async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

/// Any other file of the dashboard or the SDK.
async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers)
}

fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some(asset) = SERVED.get(path) else {
        // Rendered as problem+json by the router's middleware.
        return StatusCode::NOT_FOUND.into_response();
    };
    let cache = [
        (ETAG, asset.etag.clone()),
        (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    if holds(headers, &asset.etag) {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    (
        cache,
        [(CONTENT_TYPE, asset.content_type.clone())],
        asset.bytes,
    )
        .into_response()
}

/// Whether `If-None-Match` names this ETag (compared weakly, as RFC 9110 13.1.2 says) or is
/// `*`.
fn holds(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let ours = etag.to_str().expect("our ETags are ASCII");
    crate::http::etag::none_match(headers, |tag| tag.strip_prefix("W/").unwrap_or(tag) == ours)
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY_VALUE),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

#[cfg(test)]
mod tests {
    use axum::http::header::IF_NONE_MATCH;

    use super::*;

    #[test]
    fn if_none_match_is_compared_weakly_and_takes_a_list_or_a_star() {
        let etag = HeaderValue::from_static("\"abc\"");
        let asked = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(IF_NONE_MATCH, HeaderValue::from_static(value));
            holds(&headers, &etag)
        };
        assert!(asked("\"abc\""));
        assert!(asked("W/\"abc\""));
        assert!(asked("\"x\", \"abc\""));
        assert!(asked("*"));
        assert!(!asked("\"abd\""));
        assert!(!asked("abc"));
        assert!(!holds(&HeaderMap::new(), &etag));
    }

    #[test]
    fn the_dashboard_and_the_sdk_are_compiled_in() {
        assert!(SERVED.contains_key("index.html"));
        assert!(SERVED.contains_key("sdk/index.js"));
    }
}
