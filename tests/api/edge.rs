//! The HTTP edge: what a client can do to the server with bytes alone (huge or endless
//! requests, idle sockets, half-closed or upgraded connections, invented methods) is
//! answered at once and costs the server nothing for good.

use std::collections::BTreeSet;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use tidings::domain::Role;
use tidings::net::server::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::backend_tests;
use crate::clients::PATIENCE;
use crate::helpers::{Backend, METRICS_TOKEN, TestApp, problem};

backend_tests!(
    a_content_length_over_the_limit_is_a_413_problem_at_once_and_ends_the_connection,
    a_chunked_body_over_the_limit_is_a_413_problem,
    request_heads_over_16_kib_or_100_headers_are_431_on_both_paths,
    a_client_that_half_closes_after_its_request_gets_the_whole_answer,
    an_event_stream_on_a_kept_alive_connection_ends_when_its_client_leaves,
    a_refused_upgrade_ends_a_kept_alive_connection,
    an_empty_last_event_id_header_leaves_the_query_to_apply,
    two_last_event_id_headers_are_a_400_problem,
    invented_methods_share_one_metrics_label,
    idle_sockets_over_the_per_ip_cap_cannot_lock_out_a_client,
    idle_sockets_over_the_global_cap_cannot_lock_out_a_client,
    a_newcomer_over_the_per_ip_cap_with_nothing_idle_is_a_503_problem,
    live_streams_do_not_count_as_pending_connections,
);

/// Far less than any timer of the server's (30 s for a head or a request): what is to
/// happen "at once" must happen within this.
const AT_ONCE: Duration = Duration::from_secs(5);

/// One response read off a raw connection.
struct Raw {
    /// The status line and headers, the names lowercased.
    head: String,
    body: String,
}

impl Raw {
    fn status(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or_default()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
    }
}

/// Reads one response (its body by Content-Length) within `limit`.
async fn read_response(stream: &mut TcpStream, limit: Duration) -> Raw {
    let read = async {
        let mut raw = Vec::new();
        loop {
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..end]).into_owned();
                let head = head
                    .lines()
                    .enumerate()
                    .map(|(i, line)| match line.split_once(':') {
                        Some((name, value)) if i > 0 => {
                            format!("{}: {}", name.to_ascii_lowercase(), value.trim())
                        }
                        _ => line.to_owned(),
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |n| n.parse().unwrap());
                if raw.len() >= end + 4 + length {
                    let body = String::from_utf8_lossy(&raw[end + 4..end + 4 + length]);
                    return Raw {
                        body: body.into_owned(),
                        head,
                    };
                }
            }
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).await.expect("the connection is open");
            assert!(n > 0, "the server closed the connection before answering");
            raw.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(limit, read)
        .await
        .expect("the server answered in time")
}

/// Whether the server ends the connection within [`AT_ONCE`] (reading, and dropping,
/// whatever it still sends).
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let until_closed = async {
        let mut buf = [0u8; 4096];
        while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
    };
    tokio::time::timeout(AT_ONCE, until_closed).await.is_ok()
}

/// A connection that has been answered one `GET /livez`: hyper's from then on.
async fn kept_alive(app: &TestApp) -> TcpStream {
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"GET /livez HTTP/1.1\r\nHost: tidings\r\n\r\n")
        .await
        .unwrap();
    let first = read_response(&mut stream, PATIENCE).await;
    assert_eq!(first.status(), "200", "{}", first.head);
    stream
}

async fn a_content_length_over_the_limit_is_a_413_problem_at_once_and_ends_the_connection(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();

    // A head that announces 100 MB, and no body: the server must not wait for it.
    stream
        .write_all(
            b"POST /v1/auth/register HTTP/1.1\r\nHost: tidings\r\n\
              Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n",
        )
        .await
        .unwrap();
    let answer = read_response(&mut stream, AT_ONCE).await;

    assert_eq!(answer.status(), "413", "{}", answer.head);
    assert_eq!(
        answer.header("content-type"),
        Some("application/problem+json")
    );
    assert!(
        answer.body.contains(r#""code":"payload_too_large""#),
        "{}",
        answer.body
    );
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(
        closed_by_server(&mut stream).await,
        "a client still to send its body does not keep the connection"
    );
    assert_eq!(app.get("/livez", None).await.status(), StatusCode::OK);
}

async fn a_chunked_body_over_the_limit_is_a_413_problem(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.body_limit = 1024).await;
    let chunks = (0..8).map(|_| Ok::<_, std::io::Error>(vec![b' '; 512]));

    let response = app
        .client
        .post(app.url("/v1/auth/register"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    problem(response).await;
}

async fn request_heads_over_16_kib_or_100_headers_are_431_on_both_paths(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let big = format!(
        "GET /livez HTTP/1.1\r\nHost: tidings\r\nX-Big: {}\r\n\r\n",
        "x".repeat(16 * 1024)
    );
    let headers = |n: usize| {
        let many: String = (0..n).map(|i| format!("X-{i}: {i}\r\n")).collect();
        format!("GET /livez HTTP/1.1\r\nHost: tidings\r\n{many}\r\n")
    };

    // A connection's first head, which the accept loop reads: refused at once with a
    // problem, never handed to hyper (whose own timer would start afresh).
    for head in [big.clone(), headers(100)] {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        let answer = read_response(&mut stream, AT_ONCE).await;
        assert_eq!(answer.status(), "431", "{}", answer.head);
        assert_eq!(
            answer.header("content-type"),
            Some("application/problem+json")
        );
        assert!(closed_by_server(&mut stream).await);
    }
    // Up to 100 headers in all are served.
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(headers(98).as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut stream, PATIENCE).await.status(), "200");

    // A later head on a kept-alive connection, which hyper reads, has the same limit.
    let mut stream = kept_alive(&app).await;
    stream.write_all(big.as_bytes()).await.unwrap();
    let answer = read_response(&mut stream, AT_ONCE).await;
    assert_eq!(answer.status(), "431", "{}", answer.head);
}

async fn a_client_that_half_closes_after_its_request_gets_the_whole_answer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for path in ["/livez", "/readyz", "/metrics"] {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: tidings\r\nAuthorization: Bearer {METRICS_TOKEN}\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();

        // Nothing more to send: the client shuts down its side, as `curl -T` or a
        // one-shot `nc` does.
        stream.shutdown().await.unwrap();

        let answer = read_response(&mut stream, AT_ONCE).await;
        assert_eq!(answer.status(), "200", "{path}: {}", answer.head);
        assert!(closed_by_server(&mut stream).await, "{path}");
    }
}

async fn an_event_stream_on_a_kept_alive_connection_ends_when_its_client_leaves(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ada = app.customer("ada@example.com").await;
    let hub = &app.state.realtime.hub;
    // hyper's connection, which serves with half_close: it reads nothing while it writes
    // the stream, so the server must look for the client's leaving itself.
    let stream = app
        .sse_after_a_request(&ada.access_token, "topics=orders")
        .await;
    assert_eq!(hub.connections(), 1);

    drop(stream);

    // Nothing tells a client when the server has seen it go: ask again shortly, for far
    // less than the heartbeat (15 s) whose failing write would also end the stream.
    let deadline = tokio::time::Instant::now() + AT_ONCE;
    while hub.connections() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream of a client that left is still counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_refused_upgrade_ends_a_kept_alive_connection(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let refused_upgrade = "GET /v1/ws HTTP/1.1\r\nHost: tidings\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\nAuthorization: Bearer not-a-token\r\n\r\n";

    // On hyper's connection (after a first request) and on a fresh one (the accept loop's).
    for mut stream in [
        kept_alive(&app).await,
        TcpStream::connect(app.addr).await.unwrap(),
    ] {
        stream.write_all(refused_upgrade.as_bytes()).await.unwrap();
        let answer = read_response(&mut stream, PATIENCE).await;
        assert_eq!(answer.status(), "401", "{}", answer.head);
        assert_eq!(answer.header("connection"), Some("close"));

        // What a proxy that did not look for the 101 sends next (the WebSocket's bytes,
        // or a smuggled request) is never read as a request.
        assert!(closed_by_server(&mut stream).await);
    }
}

/// The first event with data on an SSE response.
async fn first_event(response: reqwest::Response) -> eventsource_stream::Event {
    let mut events = response.bytes_stream().eventsource();
    loop {
        let event = tokio::time::timeout(PATIENCE, events.next())
            .await
            .expect("an event in time")
            .expect("the stream goes on")
            .expect("a well-formed event");
        if !event.data.is_empty() {
            return event;
        }
    }
}

async fn an_empty_last_event_id_header_leaves_the_query_to_apply(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let mut sse = app.sse(&staff.access_token, "inventory", None).await;
    let tee = app.product(&staff.access_token, "TEE", 100, 1000).await;
    let created = sse.next().await.expect("an event");
    assert_eq!(created.event, "product.created");
    drop(sse);
    let tee = tee["id"].as_str().unwrap();
    app.adjust_stock(&staff.access_token, tee, 1).await;

    let resumed = app
        .client
        .get(app.url(&format!(
            "/v1/events?topics=inventory&last_event_id={}",
            created.id
        )))
        .bearer_auth(&staff.access_token)
        .header("last-event-id", "")
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), StatusCode::OK);
    // A change after the stream opened: what comes first tells replay from live.
    app.adjust_stock(&staff.access_token, tee, 2).await;

    let first = first_event(resumed).await;
    let data: serde_json::Value = serde_json::from_str(&first.data).unwrap();
    assert_eq!(
        data["data"]["delta"], 1,
        "the change missed is replayed first: {data}"
    );
}

async fn two_last_event_id_headers_are_a_400_problem(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ada = app.customer("ada@example.com").await;

    let response = app
        .client
        .get(app.url("/v1/events?topics=orders"))
        .bearer_auth(&ada.access_token)
        .header("last-event-id", "1")
        .header("last-event-id", "2")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem(response).await["code"], "ambiguous_last_event_id");
}

async fn invented_methods_share_one_metrics_label(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    for n in 0..50 {
        let method = Method::from_bytes(format!("INVENTED{n}").as_bytes()).unwrap();
        for path in ["/livez", "/nowhere"] {
            let response = app
                .client
                .request(method.clone(), app.url(path))
                .send()
                .await
                .unwrap();
            assert!(response.status().is_client_error(), "{method} {path}");
        }
    }

    // The recorder is the process's, shared with tests running alongside: look at which
    // method labels exist, not at the size.
    let metrics = app.metrics().await.text().await.unwrap();
    let methods: BTreeSet<&str> = metrics
        .split("method=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    let standard = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE", "other",
    ];
    assert!(methods.contains("other"), "{methods:?}");
    assert!(
        methods.iter().all(|m| standard.contains(m)),
        "only standard methods are labels: {methods:?}"
    );
}

/// Sockets that connect and send nothing: each holds a slot until it is shed.
async fn idle_sockets(app: &TestApp, n: usize) -> Vec<TcpStream> {
    let mut sockets = Vec::new();
    for _ in 0..n {
        sockets.push(TcpStream::connect(app.addr).await.unwrap());
    }
    sockets
}

/// Whether the server has left a connection open so far, without waiting.
fn still_open(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 1];
    matches!(stream.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

async fn idle_sockets_over_the_per_ip_cap_cannot_lock_out_a_client(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.pending = Limits {
            total: 0,
            per_ip: 3,
            shed_after: Duration::ZERO,
        }
    })
    .await;
    // Connected in order, so accepted in order: the first is the oldest.
    let mut idle = idle_sockets(&app, 3).await;

    let response = tokio::time::timeout(PATIENCE, app.get("/livez", None))
        .await
        .expect("the client is served");

    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        closed_by_server(&mut idle[0]).await,
        "the oldest idle socket made room"
    );
    assert!(still_open(&idle[1]) && still_open(&idle[2]));
}

async fn idle_sockets_over_the_global_cap_cannot_lock_out_a_client(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.pending = Limits {
            total: 3,
            per_ip: 0,
            shed_after: Duration::ZERO,
        }
    })
    .await;
    let mut idle = idle_sockets(&app, 3).await;

    let response = tokio::time::timeout(PATIENCE, app.get("/livez", None))
        .await
        .expect("the client is served");

    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        closed_by_server(&mut idle[0]).await,
        "the oldest idle socket made room"
    );
    assert!(still_open(&idle[1]) && still_open(&idle[2]));
}

/// A login whose body is still to come, on a connection of its own: the server is busy
/// with it (its handler waits for the body) once it asks for the body with `100 Continue`.
async fn busy_login(app: &TestApp, body: &str) -> TcpStream {
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /v1/auth/login HTTP/1.1\r\nHost: tidings\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let go_on = read_response(&mut stream, PATIENCE).await;
    assert_eq!(go_on.status(), "100", "{}", go_on.head);
    stream
}

async fn a_newcomer_over_the_per_ip_cap_with_nothing_idle_is_a_503_problem(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.pending = Limits {
            total: 0,
            per_ip: 2,
            shed_after: Duration::ZERO,
        }
    })
    .await;
    let body = r#"{"email":"ada@example.com","password":"not the password"}"#;
    let mut busy = [busy_login(&app, body).await, busy_login(&app, body).await];

    let mut newcomer = TcpStream::connect(app.addr).await.unwrap();
    let refused = read_response(&mut newcomer, AT_ONCE).await;

    assert_eq!(refused.status(), "503", "{}", refused.head);
    assert_eq!(
        refused.header("content-type"),
        Some("application/problem+json")
    );
    assert!(refused.body.contains(r#""code":"too_many_connections""#));
    assert!(refused.header("retry-after").is_some(), "{}", refused.head);
    assert!(closed_by_server(&mut newcomer).await);
    // The busy ones are served, and then there is room again.
    for stream in &mut busy {
        stream.write_all(body.as_bytes()).await.unwrap();
        let answer = read_response(stream, PATIENCE).await;
        assert_eq!(answer.status(), "401", "{}", answer.head);
    }
    drop(busy);
    assert_eq!(app.get("/livez", None).await.status(), StatusCode::OK);
}

async fn live_streams_do_not_count_as_pending_connections(backend: Backend) {
    // Nothing may be shed: a live stream that counted would lock the next client out.
    let app = TestApp::spawn_with(backend, |c| {
        c.pending = Limits {
            total: 2,
            per_ip: 2,
            shed_after: Duration::from_secs(3600),
        }
    })
    .await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let token = &staff.access_token;

    // Twice the cap of live streams: WebSockets and an event stream on fresh connections
    // (the accept loop's), an event stream on a kept-alive one (hyper's).
    let open = async {
        let mut sockets = Vec::new();
        for _ in 0..3 {
            let mut ws = app.ws(token).await;
            ws.subscribe(&["inventory"], None).await;
            sockets.push(ws);
        }
        let sse = app.sse(token, "inventory", None).await;
        let hypers = app.sse_after_a_request(token, "topics=inventory").await;
        (sockets, sse, hypers)
    };
    let (mut sockets, mut sse, mut hypers) = tokio::time::timeout(PATIENCE, open)
        .await
        .expect("every stream opened");

    tokio::time::timeout(PATIENCE, app.product(token, "TEE", 100, 10))
        .await
        .expect("a client is served while the streams are live");

    for ws in &mut sockets {
        assert_eq!(ws.next_event().await["type"], "product.created");
    }
    assert_eq!(sse.next().await.unwrap().event, "product.created");
    assert_eq!(hypers.next().await.unwrap().event, "product.created");
}
