//! Malformed requests get a problem+json 4xx and leave the server healthy.

use reqwest::StatusCode;
use serde_json::json;

use crate::backend_tests;
use tidings::domain::Role;

use crate::helpers::{Backend, PASSWORD, TestApp, problem};

backend_tests!(
    a_malformed_json_body_is_a_400_problem,
    a_wrong_content_type_is_a_415_problem,
    a_body_missing_fields_is_a_422_problem,
    json_in_another_charset_is_a_415_problem,
    a_broadcast_with_bidi_overrides_or_invisible_characters_is_refused,
    an_oversized_body_is_a_413_problem,
    unknown_routes_and_methods_are_problems,
    every_response_carries_a_request_id,
    a_request_that_takes_too_long_is_a_408_problem,
    browsers_from_configured_origins_get_cors_headers,
    a_client_that_stops_reading_responses_is_dropped,
    an_http_1_1_request_without_one_valid_host_is_a_400_problem,
    a_request_head_that_is_not_http_is_a_400_problem,
);

/// Sends `head` (and nothing else) on a connection of its own and reads the answer's head
/// and body (by its Content-Length): its status line and the rest.
async fn raw_exchange(app: &TestApp, head: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let read = async {
        let mut answer = Vec::new();
        loop {
            let text = String::from_utf8_lossy(&answer).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|n| n.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    return text;
                }
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the server closed mid-answer: {text}");
            answer.extend_from_slice(&chunk[..n]);
        }
    };
    let answer = tokio::time::timeout(std::time::Duration::from_secs(15), read)
        .await
        .expect("the server answered");
    let (status, rest) = answer.split_once("\r\n").expect("a status line");
    (status.to_owned(), rest.to_owned())
}

async fn a_client_that_stops_reading_responses_is_dropped(backend: Backend) {
    use tokio::io::AsyncWriteExt;
    let app = TestApp::spawn_with(backend, |c| {
        c.write_timeout = std::time::Duration::from_secs(2)
    })
    .await;
    // Pipelined requests from a client that reads none of the answers, through a tiny
    // receive buffer: the answers fill the connection until the server's writes wait.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(app.addr).await.unwrap();
    let requests = "GET /livez HTTP/1.1\r\nHost: tidings\r\n\r\n".repeat(1000);

    // Once the write timeout has passed, the server drops the connection, which fails
    // the client's writes; without it, the connection would be held forever.
    let flood = async { while stream.write_all(requests.as_bytes()).await.is_ok() {} };
    tokio::time::timeout(std::time::Duration::from_secs(60), flood)
        .await
        .expect("the server dropped the connection that stopped reading");
    assert_eq!(app.get("/livez", None).await.status(), StatusCode::OK);
}

async fn an_http_1_1_request_without_one_valid_host_is_a_400_problem(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ada = app.customer("ada@example.com").await;
    let ws = format!(
        "GET /v1/ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {}\r\n",
        ada.access_token
    );
    let bad = [
        "GET /livez HTTP/1.1\r\nConnection: close\r\n\r\n".to_owned(),
        "GET /livez HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n".to_owned(),
        "GET /livez HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n".to_owned(),
        // A live stream's request, which the accept loop reads itself.
        format!("{ws}\r\n"),
    ];
    for head in &bad {
        let (status, rest) = raw_exchange(&app, head).await;
        assert_eq!(status, "HTTP/1.1 400 Bad Request", "{head}");
        assert!(
            rest.contains("application/problem+json") && rest.contains(r#""code":"bad_host""#),
            "{head}: {rest}"
        );
    }

    // One Host, empty (allowed) or not, or HTTP/1.0 without one: served.
    for head in [
        "GET /livez HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n".to_owned(),
        "GET /livez HTTP/1.1\r\nHost: localhost:8080\r\nConnection: close\r\n\r\n".to_owned(),
        "GET /livez HTTP/1.0\r\n\r\n".to_owned(),
    ] {
        let (status, _) = raw_exchange(&app, &head).await;
        assert!(status.ends_with("200 OK"), "{head}: {status}");
    }
    let (status, _) = raw_exchange(&app, &format!("{ws}Host: tidings\r\n\r\n")).await;
    assert_eq!(status, "HTTP/1.1 101 Switching Protocols");
}

async fn a_request_head_that_is_not_http_is_a_400_problem(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for head in [
        "GET /livez HTTP/1.1\r\nHost: tidings\r\nno colon here\r\n\r\n".to_owned(),
        "GET /livez HTTP/9.9\r\nHost: tidings\r\n\r\n".to_owned(),
        "HELLO THERE\r\n\r\n".to_owned(),
        "GET /v1/ws HTTP/1.1\r\nHost: tidings\r\nUpgrade\x01: websocket\r\n\r\n".to_owned(),
        // More than the connection holds, sent after the bad head: what the server does
        // not read must not reset the connection (and lose the answer) under the client.
        format!(
            "POST /livez HTTP/1.1\r\nHost: tidings\r\nno colon here\r\n\r\n{}",
            "x".repeat(16 << 20)
        ),
    ] {
        let (status, rest) = raw_exchange(&app, &head).await;
        let shown = &head[..head.len().min(80)];
        assert_eq!(status, "HTTP/1.1 400 Bad Request", "{shown:?}");
        assert!(
            rest.contains("application/problem+json")
                && rest.contains(r#""code":"malformed_request""#)
                && rest.contains("x-request-id: "),
            "{shown:?}: {rest}"
        );
    }
    assert_eq!(app.get("/livez", None).await.status(), StatusCode::OK);
}

async fn a_malformed_json_body_is_a_400_problem(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let response = app
        .client
        .post(app.url("/v1/auth/register"))
        .header("content-type", "application/json")
        .body(r#"{"email": "ada@example.com", "password": "#)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem(response).await["code"], "malformed_json");
    assert_eq!(app.get("/livez", None).await.status(), StatusCode::OK);
}

async fn a_wrong_content_type_is_a_415_problem(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let response = app
        .client
        .post(app.url("/v1/auth/login"))
        .header("content-type", "text/plain")
        .body(format!(
            r#"{{"email": "ada@example.com", "password": "{PASSWORD}"}}"#
        ))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(problem(response).await["code"], "unsupported_media_type");
}

/// The `errors` of a 422 `validation_failed` problem, as `(field, code)`.
pub(crate) async fn field_errors(response: reqwest::Response) -> Vec<(String, String)> {
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = problem(response).await;
    assert_eq!(body["code"], "validation_failed", "{body}");
    body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("a list of errors: {body}"))
        .iter()
        .map(|e| {
            assert!(e["message"].is_string(), "{e}");
            let message = e["message"].as_str().unwrap();
            assert!(!message.contains(" at line "), "no parser position: {e}");
            (
                e["field"].as_str().unwrap().to_owned(),
                e["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn a_body_missing_fields_is_a_422_problem(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.user_with_role("admin@example.com", Role::Admin).await;
    let token = Some(admin.access_token.as_str());
    let product = app.product(&admin.access_token, "A-1", 100, 5).await;
    let id = product["id"].as_str().unwrap();
    let pair = |field: &str, code: &str| vec![(field.to_owned(), code.to_owned())];

    let register = app
        .post(
            "/v1/auth/register",
            &json!({"email": "ada@example.com"}),
            None,
        )
        .await;
    assert_eq!(field_errors(register).await, pair("password", "required"));
    let adjustment = app
        .post(
            &format!("/v1/products/{id}/stock-adjustments"),
            &json!({"delta": 1}),
            token,
        )
        .await;
    assert_eq!(field_errors(adjustment).await, pair("reason", "required"));
    let line = app
        .post("/v1/orders", &json!({"items": [{"product_id": id}]}), token)
        .await;
    assert_eq!(
        field_errors(line).await,
        pair("items[0].quantity", "required")
    );

    // A wrong type, an unknown field, and a body that is no object name their field too.
    let typed = app
        .post(
            &format!("/v1/products/{id}/stock-adjustments"),
            &json!({"delta": "five", "reason": "count"}),
            token,
        )
        .await;
    assert_eq!(field_errors(typed).await, pair("delta", "invalid_type"));
    let patched = app
        .patch(
            &format!("/v1/products/{id}"),
            &json!({"name": null}),
            &admin.access_token,
        )
        .await;
    assert_eq!(field_errors(patched).await, pair("name", "invalid_type"));
    let unknown = app
        .post(
            "/v1/orders",
            &json!({"items": [{"product_id": id, "quantity": 1, "colour": "red"}]}),
            token,
        )
        .await;
    assert_eq!(
        field_errors(unknown).await,
        pair("items[0].colour", "unknown_field")
    );
    let listed = app.post("/v1/orders", &json!([]), token).await;
    assert_eq!(field_errors(listed).await, pair(".", "invalid_type"));
    assert_eq!(app.get("/livez", None).await.status(), StatusCode::OK);
}

async fn a_broadcast_with_bidi_overrides_or_invisible_characters_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.user_with_role("admin@example.com", Role::Admin).await;

    for (title, body, field) in [
        ("Sale\u{202E}", "Everything must go", "title"),
        ("Sale", "Every\u{200B}thing", "body"),
        ("Sale", "\u{FEFF}", "body"),
    ] {
        let response = app
            .post(
                "/v1/notifications/broadcast",
                &json!({"title": title, "body": body, "audience": "all"}),
                Some(&admin.access_token),
            )
            .await;
        assert_eq!(
            field_errors(response).await,
            vec![(field.to_owned(), "invisible_character".to_owned())]
        );
    }
}

async fn json_in_another_charset_is_a_415_problem(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let body = format!(r#"{{"email": "ada@example.com", "password": "{PASSWORD}"}}"#);

    for (content_type, expected) in [
        (
            "application/json; charset=utf-16",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "application/json; charset=latin1",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        ("application/json; charset=UTF-8", StatusCode::CREATED),
    ] {
        let response = app
            .client
            .post(app.url("/v1/auth/register"))
            .header("content-type", content_type)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected, "{content_type}");
        if expected == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            assert_eq!(problem(response).await["code"], "unsupported_media_type");
        }
    }
}

async fn an_oversized_body_is_a_413_problem(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.body_limit = 1024).await;
    let huge = "x".repeat(4096);

    let response = app.register("ada@example.com", &huge).await;

    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    problem(response).await;
    assert_eq!(
        app.register("ada@example.com", PASSWORD).await.status(),
        StatusCode::CREATED
    );
}

async fn unknown_routes_and_methods_are_problems(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let missing = app.get("/v1/nothing-here", None).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(problem(missing).await["code"], "not_found");

    let wrong_method = app
        .client
        .delete(app.url("/v1/auth/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(problem(wrong_method).await["code"], "method_not_allowed");
}

async fn every_response_carries_a_request_id(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let generated = app.get("/livez", None).await;
    let id = generated.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");

    let given = app
        .client
        .get(app.url("/v1/me"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(given.headers()["x-request-id"], "trace-me-42");

    // One that would flood the logs and the audit log is replaced by a fresh one.
    for unusable in ["x".repeat(129), "two words".to_owned(), String::new()] {
        let replaced = app
            .client
            .get(app.url("/livez"))
            .header("x-request-id", &unusable)
            .send()
            .await
            .unwrap();
        let id = replaced.headers()["x-request-id"].to_str().unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{unusable:?} -> {id}");
    }
}

async fn a_request_that_takes_too_long_is_a_408_problem(backend: Backend) {
    // Hashing a password takes milliseconds; this timeout cannot be met.
    let app = TestApp::spawn_with(backend, |c| {
        c.request_timeout = std::time::Duration::from_nanos(1)
    })
    .await;

    let response = app.register("ada@example.com", PASSWORD).await;

    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(problem(response).await["code"], "request_timeout");
}

async fn browsers_from_configured_origins_get_cors_headers(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.cors_origins = vec!["https://shop.example.com".into()]
    })
    .await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/v1/orders"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type, idempotency-key",
            )
            .send()
    };

    let allowed = preflight("https://shop.example.com").await.unwrap();
    let other = preflight("https://evil.example.com").await.unwrap();
    let read = app
        .client
        .get(app.url("/livez"))
        .header("origin", "https://shop.example.com")
        .send()
        .await
        .unwrap();

    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://shop.example.com"
    );
    let allowed_headers = allowed.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        allowed_headers.contains("idempotency-key") && allowed_headers.contains("authorization"),
        "{allowed_headers}"
    );
    assert!(other.headers().get("access-control-allow-origin").is_none());
    assert_eq!(
        read.headers()["access-control-allow-origin"],
        "https://shop.example.com"
    );
    assert!(
        read.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("etag")
    );
}
