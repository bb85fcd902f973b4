//! The WebSocket protocol's edges: bad input, limits, tokens that expire or are revoked,
//! slow consumers, tickets, resets.

use reqwest::StatusCode;
use serde_json::{Value, json};
use tidings::domain::Role;
use tokio_tungstenite::tungstenite::Message;

use crate::backend_tests;
use crate::helpers::{Backend, PASSWORD, TestApp, problem};

backend_tests!(
    malformed_messages_get_an_error_and_the_connection_goes_on,
    an_oversized_message_closes_with_1009,
    a_text_message_that_is_not_utf8_closes_with_1007,
    streams_need_a_valid_token_or_ticket_before_the_upgrade,
    a_stream_ticket_works_once,
    an_expired_token_closes_the_socket_with_4001,
    a_client_that_never_stops_sending_is_still_closed_at_expiry,
    an_in_band_token_refresh_keeps_the_socket_open,
    a_password_change_closes_the_users_sockets_at_once,
    too_many_connections_for_one_user_close_with_4029,
    a_peer_that_stops_reading_is_dropped_and_frees_its_place,
    a_slow_consumer_is_closed_with_4008_and_resumes_without_loss,
    a_slow_sse_consumer_is_ended_and_resumes_without_loss,
    a_resume_from_a_seq_the_database_never_had_gets_a_reset,
    pruning_removes_a_prefix_of_the_stream_and_a_resume_from_it_gets_a_reset,
    bad_sse_parameters_are_400_problems,
);

/// A WebSocket opened by hand on a TCP stream (with this receive buffer), after the
/// server's 101.
pub(crate) async fn raw_ws(
    app: &TestApp,
    token: &str,
    recv_buffer: Option<u32>,
) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    let mut stream = socket.connect(app.addr).await.unwrap();
    let request = format!(
        "GET /v1/ws HTTP/1.1\r\nHost: tidings\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1);
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

fn id(v: &Value) -> &str {
    v["id"].as_str().unwrap()
}

async fn error_code(ws: &mut crate::clients::WsClient, message: &str) -> String {
    ws.send_raw(Message::Text(message.to_owned().into())).await;
    let reply = ws.next_json().await;
    assert_eq!(reply["type"], "error", "{message} -> {reply}");
    assert!(reply["message"].is_string());
    reply["code"].as_str().unwrap().to_owned()
}

async fn malformed_messages_get_an_error_and_the_connection_goes_on(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ada = app.customer("ada@example.com").await;
    let mut ws = app.ws(&ada.access_token).await;

    assert_eq!(error_code(&mut ws, "{not json").await, "bad_message");
    assert_eq!(
        error_code(&mut ws, r#"{"type":"dance"}"#).await,
        "unknown_type"
    );
    assert_eq!(
        error_code(&mut ws, r#"{"topics":["orders"]}"#).await,
        "bad_message"
    );
    assert_eq!(
        error_code(&mut ws, r#"{"type":"subscribe","topics":["gossip"]}"#).await,
        "unknown_topic"
    );
    assert_eq!(
        error_code(&mut ws, r#"{"type":"subscribe","topics":[]}"#).await,
        "bad_message"
    );
    assert_eq!(
        error_code(
            &mut ws,
            r#"{"type":"subscribe","topics":["orders"],"since":-5}"#
        )
        .await,
        "bad_since"
    );
    assert_eq!(
        error_code(
            &mut ws,
            r#"{"type":"subscribe","topics":["orders"],"since":"yesterday"}"#
        )
        .await,
        "bad_message"
    );
    assert_eq!(
        error_code(&mut ws, r#"{"type":"auth","token":"forged"}"#).await,
        "invalid_token"
    );
    ws.send_raw(Message::Binary(vec![1, 2, 3].into())).await;
    assert_eq!(ws.next_json().await["code"], "bad_message");

    ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.next_json().await, json!({"type": "pong"}));
    assert_eq!(app.get("/livez", None).await.status(), StatusCode::OK);
}

async fn an_oversized_message_closes_with_1009(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ada = app.customer("ada@example.com").await;
    let mut ws = app.ws(&ada.access_token).await;

    ws.send(json!({"type": "subscribe", "topics": ["orders"], "padding": "x".repeat(10_000)}))
        .await;

    assert_eq!(ws.close_code().await, Some(1009));
    let mut again = app.ws(&ada.access_token).await;
    again.send(json!({"type": "ping"})).await;
    assert_eq!(again.next_json().await["type"], "pong");
}

async fn a_text_message_that_is_not_utf8_closes_with_1007(backend: Backend) {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let app = TestApp::spawn(backend).await;
    let ada = app.customer("ada@example.com").await;
    let mut ws = app.ws(&ada.access_token).await;

    let not_utf8 = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    ws.send_raw(Message::Frame(not_utf8)).await;

    assert_eq!(ws.close_code().await, Some(1007));
    let mut again = app.ws(&ada.access_token).await;
    again.send(json!({"type": "ping"})).await;
    assert_eq!(again.next_json().await["type"], "pong");
}

async fn streams_need_a_valid_token_or_ticket_before_the_upgrade(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    for path in [
        "/v1/ws",
        "/v1/ws?ticket=forged",
        "/v1/events?topics=orders",
        "/v1/events?topics=orders&ticket=forged",
    ] {
        let response = app
            .client
            .get(app.url(path))
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        problem(response).await;
    }
    let ada = app.customer("ada@example.com").await;
    let not_upgraded = app.get("/v1/ws", Some(&ada.access_token)).await;
    assert_eq!(not_upgraded.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem(not_upgraded).await["code"], "not_a_websocket");
    // The key must be a 16-byte nonce in base64, given once.
    for keys in [
        &["!!not base64"][..],
        &["c2hvcnQ="],
        &["dGhlIHNhbXBsZSBub25jZQ==", "AAAAAAAAAAAAAAAAAAAAAA=="],
    ] {
        let mut request = app
            .client
            .get(app.url("/v1/ws"))
            .bearer_auth(&ada.access_token)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13");
        for key in keys {
            request = request.header("sec-websocket-key", *key);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{keys:?}");
        assert_eq!(problem(response).await["code"], "not_a_websocket");
    }
    // Two Authorization headers are refused, not resolved by guessing.
    let twice = app
        .client
        .get(app.url("/v1/me"))
        .header("authorization", format!("Bearer {}", ada.access_token))
        .header("authorization", "Bearer another")
        .send()
        .await
        .unwrap();
    assert_eq!(twice.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem(twice).await["code"], "ambiguous_authorization");
}

async fn a_stream_ticket_works_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ada = app.customer("ada@example.com").await;
    let ticket = |app: &TestApp| {
        let token = ada.access_token.clone();
        let app_client = app.client.clone();
        let url = app.url("/v1/stream-tickets");
        async move {
            let response = app_client
                .post(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::CREATED);
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["expires_in"], 30);
            body["ticket"].as_str().unwrap().to_owned()
        }
    };

    let first = ticket(&app).await;
    // Requests refused for what they ask (a topic, a handshake) do not spend the ticket.
    let bad_topic = app
        .client
        .get(app.url(&format!("/v1/events?topics=bogus&ticket={first}")))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_topic.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem(bad_topic).await["code"], "unknown_topic");
    let not_upgraded = app
        .client
        .get(app.url(&format!("/v1/ws?ticket={first}")))
        .send()
        .await
        .unwrap();
    assert_eq!(not_upgraded.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem(not_upgraded).await["code"], "not_a_websocket");
    let mut ws = app
        .try_ws(&format!("/v1/ws?ticket={first}"), None)
        .await
        .expect("a ticket opens a socket");
    ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.next_json().await["type"], "pong");
    assert!(
        app.try_ws(&format!("/v1/ws?ticket={first}"), None)
            .await
            .is_err(),
        "a ticket works once"
    );

    let second = ticket(&app).await;
    let sse = app
        .client
        .get(app.url(&format!("/v1/events?topics=orders&ticket={second}")))
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), StatusCode::OK);
    let reused = app
        .client
        .get(app.url(&format!("/v1/events?topics=orders&ticket={second}")))
        .send()
        .await
        .unwrap();
    assert_eq!(reused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(problem(reused).await["code"], "invalid_ticket");
    let unauthenticated = app
        .client
        .post(app.url("/v1/stream-tickets"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
}

/// `exp` has whole seconds: a token of `ttl` seconds is valid for at least `ttl - 1`.
async fn an_expired_token_closes_the_socket_with_4001(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.access_token_ttl = std::time::Duration::from_secs(3)
    })
    .await;
    let ada = app.customer("ada@example.com").await;
    let mut ws = app.ws(&ada.access_token).await;
    ws.subscribe(&["orders"], None).await;

    let code = ws.close_code().await;

    assert_eq!(code, Some(4001));
}

async fn a_client_that_never_stops_sending_is_still_closed_at_expiry(backend: Backend) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn_with(backend, |c| {
        c.access_token_ttl = std::time::Duration::from_secs(3)
    })
    .await;
    let ada = app.customer("ada@example.com").await;
    let (mut reader, mut writer) = raw_ws(&app, &ada.access_token, None).await.into_split();
    // Masked pings (mask zero) without pause; the reader takes in the pongs.
    let pings: Vec<u8> = [0x89, 0x84, 0, 0, 0, 0, b'p', b'i', b'n', b'g']
        .iter()
        .copied()
        .cycle()
        .take(10 * 256)
        .collect();
    let flood = tokio::spawn(async move { while writer.write_all(&pings).await.is_ok() {} });

    let close = async {
        let mut buf = Vec::new();
        loop {
            // Server frames are unmasked: a header of 2, 4 or 10 bytes, then the payload.
            while buf.len() >= 2 {
                let (header, len) = match buf[1] & 0x7F {
                    126 if buf.len() >= 4 => (4, u16::from_be_bytes([buf[2], buf[3]]) as usize),
                    127 if buf.len() >= 10 => (
                        10,
                        u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
                    ),
                    126 | 127 => break,
                    n => (2, n as usize),
                };
                if buf.len() < header + len {
                    break;
                }
                if buf[0] & 0x0F == 0x8 {
                    return (len >= 2).then(|| u16::from_be_bytes([buf[header], buf[header + 1]]));
                }
                buf.drain(..header + len);
            }
            let mut chunk = [0u8; 4096];
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let code = tokio::time::timeout(std::time::Duration::from_secs(30), close)
        .await
        .expect("the connection closed while the client kept sending");
    flood.abort();

    assert_eq!(code, Some(4001));
}

async fn an_in_band_token_refresh_keeps_the_socket_open(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.access_token_ttl = std::time::Duration::from_secs(5);
        c.ws_ping_interval = std::time::Duration::from_secs(1);
    })
    .await;
    let ada = app.customer("ada@example.com").await;
    let first_exp = claims_exp(&ada.access_token);
    let mut ws = app.ws(&ada.access_token).await;
    ws.subscribe(&["orders"], None).await;
    // A server ping comes a second later: a token issued after it expires later too.
    ws.await_ping().await;
    let fresh = app.login_ok("ada@example.com").await;
    assert!(claims_exp(&fresh.access_token) > first_exp);

    ws.send(json!({"type": "auth", "token": fresh.access_token}))
        .await;
    let reply = ws.next_json().await;
    let code = ws.close_code().await;

    assert_eq!(reply["type"], "authenticated");
    assert_eq!(
        reply["expires_at"].as_i64(),
        Some(claims_exp(&fresh.access_token))
    );
    assert_eq!(code, Some(4001));
    assert!(
        chrono::Utc::now().timestamp() >= claims_exp(&fresh.access_token),
        "closed at the new expiry, not the first"
    );
}

/// The `exp` claim of a JWT.
fn claims_exp(token: &str) -> i64 {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice::<Value>(&json).unwrap()["exp"]
        .as_i64()
        .unwrap()
}

async fn a_password_change_closes_the_users_sockets_at_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ada = app.customer("ada@example.com").await;
    let grace = app.customer("grace@example.com").await;
    let mut phone = app.ws(&ada.access_token).await;
    let mut laptop = app.ws(&ada.access_token).await;
    let mut other = app.ws(&grace.access_token).await;
    for ws in [&mut phone, &mut laptop, &mut other] {
        ws.subscribe(&["orders"], None).await;
    }

    let response = app
        .post(
            "/v1/me/password",
            &json!({"current_password": PASSWORD, "new_password": "a brand new passphrase"}),
            Some(&ada.access_token),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    assert_eq!(phone.close_code().await, Some(4001));
    assert_eq!(laptop.close_code().await, Some(4001));
    other.send(json!({"type": "ping"})).await;
    assert_eq!(
        other.next_json().await["type"],
        "pong",
        "another user's socket stays open"
    );
}

async fn too_many_connections_for_one_user_close_with_4029(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.max_connections_per_user = 2).await;
    let ada = app.customer("ada@example.com").await;
    let mut first = app.ws(&ada.access_token).await;
    let mut second = app.ws(&ada.access_token).await;
    // A pong shows each is registered; otherwise the third could overtake the second.
    for socket in [&mut first, &mut second] {
        socket.send(json!({"type": "ping"})).await;
        socket.next_json().await;
    }

    let mut third = app.ws(&ada.access_token).await;

    assert_eq!(third.close_code().await, Some(4029));
    let sse = app
        .client
        .get(app.url("/v1/events?topics=orders"))
        .bearer_auth(&ada.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), StatusCode::TOO_MANY_REQUESTS);
    drop(first);
}

async fn a_peer_that_stops_reading_is_dropped_and_frees_its_place(backend: Backend) {
    use tokio::io::AsyncWriteExt;
    let app = TestApp::spawn_with(backend, |c| {
        c.max_connections_per_user = 1;
        c.write_timeout = std::time::Duration::from_secs(2);
    })
    .await;
    let ada = app.customer("ada@example.com").await;
    // A client that reads nothing after the handshake, through a tiny receive buffer, and
    // sends pings: the server's pongs fill the connection until its writes wait.
    let mut stream = raw_ws(&app, &ada.access_token, Some(4096)).await;
    // A masked ping with a 125-byte payload (mask zero, so the payload is as sent).
    let mut ping = vec![0x89, 0x80 | 125, 0, 0, 0, 0];
    ping.extend([b'p'; 125]);
    let pings: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 512)
        .collect();

    // The client writes until the server stops reading (its task waits to write a pong)
    // and then, once the write timeout has passed, drops the connection,
    // which fails the client's writes. Without the limit the task would wait forever.
    let flood = async {
        loop {
            if stream.write_all(&pings).await.is_err() {
                return;
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), flood)
        .await
        .expect("the server dropped the connection that stopped reading");

    // Its place is free: the user's one allowed connection opens and works.
    let mut next = app.ws(&ada.access_token).await;
    next.send(json!({"type": "ping"})).await;
    assert_eq!(next.next_json().await["type"], "pong");
}

async fn a_slow_consumer_is_closed_with_4008_and_resumes_without_loss(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.queue_bytes = 128 * 1024;
        // The slow reader reads nothing for as long as the test writes; on a busy machine
        // that can pass the default idle and write timeouts, after which it is (rightly)
        // dropped without a close frame.
        c.ws_idle_timeout = std::time::Duration::from_secs(600);
        c.write_timeout = std::time::Duration::from_secs(600);
    })
    .await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let tee = app
        .product(&staff.access_token, "TEE", 100, 1_000_000)
        .await;
    let mut slow = app.slow_ws(&staff.access_token).await;
    let mut fast = app.ws(&staff.access_token).await;
    slow.subscribe(&["inventory"], Some(0)).await;
    fast.subscribe(&["inventory"], None).await;
    let before = fast_seq(&mut fast, &app, &staff.access_token, id(&tee)).await;

    // The fast consumer reads as events come, as a healthy client does.
    let (progress, mut seen) = tokio::sync::watch::channel(0usize);
    let fast_reader = tokio::spawn(async move {
        let mut seqs = Vec::new();
        while seqs.len() < LARGE_UPDATES {
            let event = fast.next_event().await;
            if event["type"] == "product.updated" {
                seqs.push(event["seq"].as_i64().unwrap());
                let _ = progress.send(seqs.len());
            }
        }
        seqs
    });
    send_large_updates(&app, &staff.access_token, id(&tee), &mut seen).await;
    // It got every update, in order, while the slow one fell behind.
    let fast_seqs = fast_reader.await.expect("the fast consumer kept up");
    assert!(fast_seqs.windows(2).all(|w| w[0] < w[1]));

    let (received, closed) = slow.drain_until_closed().await;
    assert_eq!(closed, Some(4008));
    let last = received
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .max()
        .unwrap_or(before);
    let mut resumed = app.ws(&staff.access_token).await;
    let (replayed, _) = resumed.subscribe(&["inventory"], Some(last)).await;
    let mut slow_seqs: Vec<i64> = received
        .iter()
        .chain(&replayed)
        .filter(|e| e["type"] == "product.updated")
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    while slow_seqs.len() < LARGE_UPDATES {
        let event = resumed.next_event().await;
        if event["type"] == "product.updated" {
            slow_seqs.push(event["seq"].as_i64().unwrap());
        }
    }
    assert!(
        received.len() < LARGE_UPDATES,
        "the slow consumer was cut off before the end"
    );
    assert_eq!(
        slow_seqs, fast_seqs,
        "every update exactly once, in order, across the disconnect"
    );
}

async fn a_slow_sse_consumer_is_ended_and_resumes_without_loss(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.queue_bytes = 128 * 1024).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let tee = app
        .product(&staff.access_token, "TEE", 100, 1_000_000)
        .await;
    let from = app
        .seq_of(&staff.access_token, "inventory", "product.created")
        .await;
    let slow = app.slow_sse(&staff.access_token, "inventory").await;
    let mut fast = app.sse(&staff.access_token, "inventory", Some(from)).await;

    let (progress, mut seen) = tokio::sync::watch::channel(0usize);
    let fast_reader = tokio::spawn(async move {
        let mut seqs = Vec::new();
        while seqs.len() < LARGE_UPDATES {
            let event = fast.next().await.expect("the fast stream goes on");
            if event.event == "product.updated" {
                seqs.push(event.data["seq"].as_i64().unwrap());
                let _ = progress.send(seqs.len());
            }
        }
        seqs
    });
    send_large_updates(&app, &staff.access_token, id(&tee), &mut seen).await;
    let fast_seqs = fast_reader.await.expect("the fast consumer kept up");
    assert!(fast_seqs.windows(2).all(|w| w[0] < w[1]));

    // The slow one got a prefix, then the reason, then the end of the body.
    let drained = slow.drain().await;
    assert!(drained.ended_cleanly, "the chunked body ends properly");
    assert_eq!(
        drained.comments.last().map(String::as_str),
        Some("slow consumer: reconnect with Last-Event-ID")
    );
    let received: Vec<i64> = drained
        .events
        .iter()
        .filter(|e| e.event == "product.updated")
        .map(|e| e.data["seq"].as_i64().unwrap())
        .collect();
    assert!(
        received.len() < LARGE_UPDATES,
        "the slow consumer was cut off before the end"
    );
    assert_eq!(
        received[..],
        fast_seqs[..received.len()],
        "a prefix, in order"
    );
    for event in &drained.events {
        assert_eq!(event.id, event.data["seq"].to_string());
    }

    // Resumed from its last id, it gets exactly the rest.
    let last = drained
        .events
        .last()
        .map_or(from, |e| e.id.parse().unwrap());
    let mut resumed = app.sse(&staff.access_token, "inventory", Some(last)).await;
    let mut slow_seqs = received;
    while slow_seqs.len() < LARGE_UPDATES {
        let event = resumed.next().await.expect("the resumed stream goes on");
        if event.event == "product.updated" {
            slow_seqs.push(event.data["seq"].as_i64().unwrap());
        }
    }
    assert_eq!(
        slow_seqs, fast_seqs,
        "every update exactly once, in order, across the disconnect"
    );
}

/// Product updates a slow-consumer test sends, each event carrying a 4,000-byte
/// description: past what the kernel buffers (4 MiB here) and the 128 KiB queue hold.
const LARGE_UPDATES: usize = 1200;

/// Sends the large updates of `product`, 16 at a time, each batch once the fast consumer
/// has seen every update before it (`seen` counts them): so it is never more than a burst
/// behind however busy the machine is, and nothing waits for the slow one.
async fn send_large_updates(
    app: &TestApp,
    token: &str,
    product: &str,
    seen: &mut tokio::sync::watch::Receiver<usize>,
) {
    let description = "d".repeat(4000);
    let path = format!("/v1/products/{product}");
    let mut sent_so_far = 0;
    for chunk in (0..LARGE_UPDATES).collect::<Vec<_>>().chunks(16) {
        let sent = futures::future::join_all(chunk.iter().map(|i| {
            let body = json!({"description": format!("{i}{description}")});
            let path = &path;
            async move { app.patch(path, &body, token).await }
        }))
        .await;
        assert!(sent.iter().all(|r| r.status() == StatusCode::OK));
        sent_so_far += chunk.len();
        seen.wait_for(|n| *n >= sent_so_far)
            .await
            .expect("the fast consumer is reading");
    }
}

/// Makes one stock change and returns its seq as the fast consumer saw it.
async fn fast_seq(
    fast: &mut crate::clients::WsClient,
    app: &TestApp,
    token: &str,
    product: &str,
) -> i64 {
    app.adjust_stock(token, product, 1).await;
    loop {
        let event = fast.next_event().await;
        if event["type"] == "inventory.stock_changed" {
            return event["seq"].as_i64().unwrap();
        }
    }
}

/// The retention's prune (run by the relay, here called as it calls it) deletes the
/// oldest events up to the first one created at or after the cutoff; a resume from within
/// what it deleted gets a reset, one from after it is served whole.
async fn pruning_removes_a_prefix_of_the_stream_and_a_resume_from_it_gets_a_reset(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let mut ws = app.ws(&staff.access_token).await;
    let (_, start) = ws.subscribe(&["inventory"], None).await;
    for sku in ["TEE", "MUG", "CAP"] {
        app.product(&staff.access_token, sku, 100, 5).await;
    }
    // Received live: numbered by the relay.
    let live: Vec<i64> = [
        ws.next_event().await,
        ws.next_event().await,
        ws.next_event().await,
    ]
    .iter()
    .map(|e| e["seq"].as_i64().unwrap())
    .collect();
    let rows: Vec<_> = app
        .events_after(0)
        .await
        .into_iter()
        .filter(|e| e.seq.is_some_and(|seq| seq > start))
        .collect();
    assert_eq!(
        rows.iter().map(|e| e.seq.unwrap()).collect::<Vec<_>>(),
        live
    );
    assert!(
        rows[0].created_at < rows[1].created_at,
        "two requests apart, the events' times differ"
    );

    let pruned = tidings::events::stream::prune(&app.state.db, rows[1].created_at)
        .await
        .expect("the prune runs");

    let kept: Vec<i64> = app
        .events_after(0)
        .await
        .iter()
        .filter_map(|e| e.seq)
        .collect();
    assert_eq!(
        kept,
        live[1..],
        "everything up to the first event at or after the cutoff is gone, the rest kept"
    );
    assert_eq!(
        pruned, live[0] as u64,
        "every event through the last one before the cutoff (seqs run from 1) counted"
    );
    let mut from_pruned = app.ws(&staff.access_token).await;
    from_pruned
        .send(json!({"type": "subscribe", "topics": ["inventory"], "since": live[0] - 1}))
        .await;
    assert_eq!(
        from_pruned.next_json().await,
        json!({"type": "reset", "topics": ["inventory"]})
    );
    let mut from_kept = app.ws(&staff.access_token).await;
    let (replayed, _) = from_kept.subscribe(&["inventory"], Some(live[0])).await;
    assert_eq!(
        replayed
            .iter()
            .map(|e| e["seq"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        live[1..],
        "a resume from the last pruned seq is served whole"
    );
}

async fn a_resume_from_a_seq_the_database_never_had_gets_a_reset(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let mut ws = app.ws(&staff.access_token).await;

    ws.send(json!({"type": "subscribe", "topics": ["inventory"], "since": 1_000_000}))
        .await;
    let reset = ws.next_json().await;
    let subscribed = ws.next_json().await;
    let mut sse = app
        .sse(&staff.access_token, "inventory", Some(1_000_000))
        .await;
    let product = app.product(&staff.access_token, "TEE", 100, 5).await;
    let sse_reset = sse.next().await.unwrap();
    let live = ws.next_event().await;

    assert_eq!(reset, json!({"type": "reset", "topics": ["inventory"]}));
    assert_eq!(subscribed["type"], "subscribed");
    assert_eq!(sse_reset.event, "reset");
    assert_eq!(sse_reset.data["type"], "reset");
    assert_eq!(
        live["data"]["id"], product["id"],
        "after a reset the stream goes on live"
    );
}

async fn bad_sse_parameters_are_400_problems(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ada = app.customer("ada@example.com").await;

    for (path, code) in [
        ("/v1/events?topics=gossip", "unknown_topic"),
        ("/v1/events?topics=", "unknown_topic"),
        (
            "/v1/events?topics=orders&last_event_id=abc",
            "bad_last_event_id",
        ),
        (
            "/v1/events?topics=orders&last_event_id=-1",
            "bad_last_event_id",
        ),
    ] {
        let response = app.get(path, Some(&ada.access_token)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(problem(response).await["code"], code, "{path}");
    }
    let missing = app.get("/v1/events", Some(&ada.access_token)).await;
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    problem(missing).await;
}
