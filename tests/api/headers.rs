//! Security headers on every response, and compression where it helps: JSON, the API
//! documents, the docs' and the dashboard's files; never an event stream or an upgrade.
//! (The test client does not decompress: what it reads is what the server sent.)

use futures::SinkExt;
use reqwest::header::HeaderMap;
use reqwest::{Response, StatusCode};
use serde_json::Value;
use tidings::domain::Role;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::backend_tests;
use crate::clients::PATIENCE;
use crate::helpers::{Backend, TestApp};

backend_tests!(
    a_json_response_carries_the_security_headers,
    error_responses_carry_the_security_headers_on_both_paths,
    the_docs_page_has_its_own_policy_and_the_documents_the_apis,
    the_dashboard_keeps_its_policy_and_gets_the_other_headers,
    a_large_json_list_is_compressed_as_the_client_asks,
    small_responses_and_clients_that_ask_for_nothing_are_not_compressed,
    compressed_files_keep_their_etags_and_304s,
    an_event_stream_is_never_compressed_on_either_path,
    a_websocket_opens_with_accept_encoding_on_either_path,
);

/// The API's policy: a JSON or problem body opened as a page loads nothing.
const API_POLICY: &str = "default-src 'none'; frame-ancestors 'none'";

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

/// The headers every response carries, whatever its policy.
fn assert_common_headers(headers: &HeaderMap) {
    assert_eq!(header(headers, "x-content-type-options"), Some("nosniff"));
    assert_eq!(header(headers, "referrer-policy"), Some("no-referrer"));
    assert_eq!(header(headers, "x-frame-options"), Some("DENY"));
    assert_eq!(
        headers.get_all("content-security-policy").iter().count(),
        1,
        "one policy: {headers:?}"
    );
}

fn assert_api_headers(headers: &HeaderMap) {
    assert_common_headers(headers);
    assert_eq!(header(headers, "content-security-policy"), Some(API_POLICY));
}

async fn get_with(app: &TestApp, path: &str, token: Option<&str>, encoding: &str) -> Response {
    let mut request = app
        .client
        .get(app.url(path))
        .header("accept-encoding", encoding);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn decode(encoding: &str, bytes: &[u8]) -> Vec<u8> {
    use async_compression::tokio::bufread::{BrotliDecoder, GzipDecoder, ZstdDecoder};
    let mut out = Vec::new();
    match encoding {
        "gzip" => GzipDecoder::new(bytes).read_to_end(&mut out).await,
        "br" => BrotliDecoder::new(bytes).read_to_end(&mut out).await,
        "zstd" => ZstdDecoder::new(bytes).read_to_end(&mut out).await,
        other => panic!("no decoder for {other}"),
    }
    .unwrap_or_else(|e| panic!("not valid {encoding}: {e}"));
    out
}

fn vary_names_accept_encoding(headers: &HeaderMap) -> bool {
    headers.get_all("vary").iter().any(|v| {
        v.to_str()
            .unwrap()
            .split(',')
            .any(|name| name.trim().eq_ignore_ascii_case("accept-encoding"))
    })
}

async fn a_json_response_carries_the_security_headers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ada = app.customer("ada@example.com").await;

    let response = app.get("/v1/me", Some(&ada.access_token)).await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_api_headers(response.headers());
}

async fn error_responses_carry_the_security_headers_on_both_paths(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    // A handler's problem, and the router's own (rendered as a problem by middleware).
    for (path, status) in [
        ("/v1/me", StatusCode::UNAUTHORIZED),
        ("/no/such/route", StatusCode::NOT_FOUND),
    ] {
        let response = app.get(path, None).await;
        assert_eq!(response.status(), status);
        assert_eq!(
            header(response.headers(), "content-type"),
            Some("application/problem+json")
        );
        assert_api_headers(response.headers());
    }

    // A refused live stream on a connection of its own, answered through the accept loop's
    // front end, and a head the front end refuses before any router sees it.
    for request in [
        "GET /v1/events?topics=orders HTTP/1.1\r\nHost: tidings\r\n\r\n".to_owned(),
        format!(
            "GET /livez HTTP/1.1\r\nHost: tidings\r\nX-Big: {}\r\n\r\n",
            "x".repeat(16 * 1024)
        ),
    ] {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        tokio::time::timeout(PATIENCE, stream.read_to_end(&mut raw))
            .await
            .expect("the answer in time")
            .unwrap();
        let answer = String::from_utf8_lossy(&raw).to_ascii_lowercase();
        let head = &answer[..answer.find("\r\n\r\n").expect("a whole head")];
        assert!(head.starts_with("http/1.1 4"), "{head}");
        for line in [
            "x-content-type-options: nosniff",
            "referrer-policy: no-referrer",
            "x-frame-options: deny",
            "content-security-policy: default-src 'none'; frame-ancestors 'none'",
        ] {
            assert!(head.contains(&format!("\r\n{line}\r\n")), "{line}: {head}");
        }
    }
}

async fn the_docs_page_has_its_own_policy_and_the_documents_the_apis(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let page = app.get("/docs/", None).await;
    assert_eq!(page.status(), StatusCode::OK);
    assert_common_headers(page.headers());
    let policy = header(page.headers(), "content-security-policy").unwrap();
    let directives: Vec<&str> = policy.split(';').map(str::trim).collect();
    // What Swagger UI needs: its own scripts and styles (no inline script), the icons its
    // stylesheet inlines, requests to this server; and nothing else.
    for wanted in [
        "default-src 'none'",
        "script-src 'self'",
        // The hash of the logo's `<style>`, the one inline style of the page.
        "style-src 'self' 'sha256-RL3ie0nH+Lzz2YNqQN83mnU0J1ot4QL7b99vMdIX99w='",
        "img-src 'self' data:",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(directives.contains(&wanted), "{wanted} missing: {policy}");
    }
    for loose in ["unsafe-inline", "unsafe-eval", "http:", "https:", "*"] {
        assert!(!policy.contains(loose), "{loose} in {policy}");
    }
    let html = page.text().await.unwrap().to_ascii_lowercase();
    assert!(
        !html.contains("<script>") && !html.contains("style="),
        "the page has inline script or style, which its policy refuses: {html}"
    );

    for document in ["/openapi.json", "/asyncapi.json"] {
        let response = app.get(document, None).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_api_headers(response.headers());
        let _: Value = response.json().await.expect("still JSON");
    }
}

async fn the_dashboard_keeps_its_policy_and_gets_the_other_headers(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    for path in ["/app/", "/app/app.js"] {
        let response = app.get(path, None).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_common_headers(response.headers());
        assert_eq!(
            header(response.headers(), "content-security-policy"),
            Some(tidings::api::dashboard::CONTENT_SECURITY_POLICY_VALUE),
        );
    }
}

async fn a_large_json_list_is_compressed_as_the_client_asks(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    for n in 0..12 {
        app.product(&staff.access_token, &format!("TEE-{n}"), 1999, 10)
            .await;
    }
    let plain = get_with(&app, "/v1/products", Some(&staff.access_token), "identity").await;
    assert_eq!(plain.status(), StatusCode::OK);
    assert_eq!(header(plain.headers(), "content-encoding"), None);
    let plain: Value = plain.json().await.unwrap();
    assert_eq!(plain["items"].as_array().unwrap().len(), 12);

    for encoding in ["gzip", "br", "zstd"] {
        let response = get_with(&app, "/v1/products", Some(&staff.access_token), encoding).await;

        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers().clone();
        assert_eq!(header(&headers, "content-encoding"), Some(encoding));
        assert!(vary_names_accept_encoding(&headers), "{headers:?}");
        assert_api_headers(&headers);
        let body = response.bytes().await.unwrap();
        let decoded = decode(encoding, &body).await;
        assert!(body.len() < decoded.len(), "{encoding} made it smaller");
        let json: Value = serde_json::from_slice(&decoded).unwrap();
        assert_eq!(json, plain, "{encoding} decodes to the same list");
    }

    // A client's preference among several is followed.
    let response = get_with(
        &app,
        "/v1/products",
        Some(&staff.access_token),
        "gzip;q=0.5, zstd",
    )
    .await;
    assert_eq!(header(response.headers(), "content-encoding"), Some("zstd"));

    // The API's documents, and the docs' own script, are compressed too.
    for path in [
        "/openapi.json",
        "/asyncapi.json",
        "/docs/swagger-ui-bundle.js",
    ] {
        let response = get_with(&app, path, None, "gzip").await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(
            header(response.headers(), "content-encoding"),
            Some("gzip"),
            "{path}"
        );
    }
}

async fn small_responses_and_clients_that_ask_for_nothing_are_not_compressed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ada = app.customer("ada@example.com").await;

    // Well under a kilobyte: not worth an encoder.
    let small = get_with(&app, "/v1/me", Some(&ada.access_token), "gzip").await;
    assert_eq!(small.status(), StatusCode::OK);
    assert_eq!(header(small.headers(), "content-encoding"), None);
    // No Accept-Encoding: nothing is compressed, however large.
    let large = app.get("/openapi.json", None).await;
    assert_eq!(header(large.headers(), "content-encoding"), None);
    let _: Value = large.json().await.expect("plain JSON");
}

async fn compressed_files_keep_their_etags_and_304s(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    // A dashboard file, compressed: the same ETag as plain, and revalidated alike.
    let plain = app.get("/app/app.css", None).await;
    let etag = header(plain.headers(), "etag").unwrap().to_owned();
    let gzipped = get_with(&app, "/app/app.css", None, "gzip").await;
    assert_eq!(header(gzipped.headers(), "content-encoding"), Some("gzip"));
    assert_eq!(header(gzipped.headers(), "etag"), Some(etag.as_str()));
    assert!(vary_names_accept_encoding(gzipped.headers()));
    let bytes = gzipped.bytes().await.unwrap();
    assert_eq!(
        decode("gzip", &bytes).await,
        plain.bytes().await.unwrap().to_vec()
    );
    let revalidated = app
        .client
        .get(app.url("/app/app.css"))
        .header("accept-encoding", "gzip")
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(revalidated.headers(), "content-encoding"), None);
    assert_eq!(header(revalidated.headers(), "etag"), Some(etag.as_str()));

    // A REST resource's ETag works the same for a client that accepts compression.
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let product = app.product(&staff.access_token, "TEE", 1999, 10).await;
    let path = format!("/v1/products/{}", product["id"].as_str().unwrap());
    let read = get_with(&app, &path, Some(&staff.access_token), "gzip, br, zstd").await;
    assert_eq!(read.status(), StatusCode::OK);
    let etag = header(read.headers(), "etag").unwrap().to_owned();
    let revalidated = app
        .client
        .get(app.url(&path))
        .bearer_auth(&staff.access_token)
        .header("accept-encoding", "gzip, br, zstd")
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(revalidated.headers(), "content-encoding"), None);
}

async fn an_event_stream_is_never_compressed_on_either_path(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let token = &staff.access_token;
    let accept = "Accept-Encoding: gzip, br, zstd\r\n";
    // Its own connection (the accept loop writes the head, the hub the socket), and one
    // that served a request first (hyper's, the stream a response body).
    let own = TcpStream::connect(app.addr).await.unwrap();
    let (own_head, mut own) = app
        .raw_sse_with(own, token, "topics=inventory", accept)
        .await;
    let reused = app.connection_after_a_request().await;
    let (reused_head, mut reused) = app
        .raw_sse_with(reused, token, "topics=inventory", accept)
        .await;

    for head in [&own_head, &reused_head] {
        assert!(head.contains("content-type: text/event-stream"), "{head}");
        assert!(!head.contains("content-encoding"), "{head}");
    }
    let tee = app.product(token, "TEE", 1999, 10).await;
    for stream in [&mut own, &mut reused] {
        let event = stream.next().await.expect("an event, in plain text");
        assert_eq!(event.event, "product.created");
        assert_eq!(event.data["data"]["id"], tee["id"]);
    }
}

async fn a_websocket_opens_with_accept_encoding_on_either_path(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ada = app.customer("ada@example.com").await;
    let fresh = TcpStream::connect(app.addr).await.unwrap();
    let reused = app.connection_after_a_request().await;

    for stream in [fresh, reused] {
        let mut request = format!("ws://{}/v1/ws", app.addr)
            .into_client_request()
            .unwrap();
        let headers = request.headers_mut();
        headers.insert(
            "authorization",
            format!("Bearer {}", ada.access_token).parse().unwrap(),
        );
        headers.insert("accept-encoding", "gzip, br, zstd".parse().unwrap());
        let (mut socket, answer) = tokio_tungstenite::client_async(request, stream)
            .await
            .expect("the WebSocket opens");
        assert_eq!(answer.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert!(answer.headers().get("content-encoding").is_none());

        socket
            .send(Message::text(r#"{"type":"ping"}"#))
            .await
            .unwrap();
        let pong = loop {
            match tokio::time::timeout(PATIENCE, futures::StreamExt::next(&mut socket))
                .await
                .expect("an answer in time")
                .expect("the socket stays open")
                .unwrap()
            {
                Message::Text(text) => break serde_json::from_str::<Value>(&text).unwrap(),
                _ => continue,
            }
        };
        assert_eq!(pong["type"], "pong");
    }
}
