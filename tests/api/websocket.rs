//! RFC 6455's edges over a real socket: the handshake's version, the closing handshake,
//! broken lengths, UTF-8 checked as it arrives, and the echo route the conformance suite
//! (`.ci/autobahn/`) uses.

use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use crate::backend_tests;
use crate::clients::PATIENCE;
use crate::helpers::{Backend, TestApp, problem};
use crate::live_protocol::raw_ws;

backend_tests!(
    a_websocket_version_other_than_13_gets_426_naming_13,
    the_server_answers_a_close_with_the_clients_status_code,
    broken_lengths_close_with_1002,
    a_text_frame_is_refused_at_its_first_bad_byte_before_the_rest_comes,
    a_flood_of_empty_continuation_frames_closes_with_1009,
    the_echo_route_is_absent_unless_turned_on,
    the_echo_route_echoes_through_both_upgrade_paths_without_the_hub,
);

/// A WebSocket handshake's headers but the version, which is `version` (none if `None`).
fn upgrade_request(version: Option<&str>, path: &str, host: &str, token: &str) -> String {
    let version = version.map_or(String::new(), |v| format!("Sec-WebSocket-Version: {v}\r\n"));
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{version}Authorization: Bearer {token}\r\n\r\n"
    )
}

/// Reads one response (head and `content-length` body) off `stream`: its head in lower
/// case, and its body.
async fn read_response(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut raw = Vec::new();
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |l| l.parse().unwrap());
            if raw.len() >= end + 4 + length {
                return (head, raw[end + 4..end + 4 + length].to_vec());
            }
        }
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(n > 0, "the server closed before its answer");
        raw.extend_from_slice(&buf[..n]);
    }
}

/// A connection that served a `GET /livez` first: a WebSocket opened on it goes through
/// hyper's upgrade, not the accept loop's own.
async fn after_a_request(app: &TestApp) -> TcpStream {
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let request = format!("GET /livez HTTP/1.1\r\nHost: {}\r\n\r\n", app.addr);
    stream.write_all(request.as_bytes()).await.unwrap();
    let (head, _) = read_response(&mut stream).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    stream
}

/// The status code and reason of the server's Close, skipping the frames before it.
async fn close_of(stream: &mut TcpStream) -> (u16, String) {
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
                let payload = &buf[header..header + len];
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                return (code, String::from_utf8(payload[2..].to_vec()).unwrap());
            }
            buf.drain(..header + len);
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut chunk))
            .await
            .expect("a close in time")
            .unwrap();
        assert!(n > 0, "the connection ended without a close frame");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A masked client frame's header (mask zero, so the payload goes as it is).
fn header(first: u8, len: usize) -> Vec<u8> {
    let mut header = vec![first];
    match len {
        0..=125 => header.push(0x80 | len as u8),
        126..=0xFFFF => {
            header.push(0x80 | 126);
            header.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            header.push(0x80 | 127);
            header.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    header.extend_from_slice(&[0; 4]);
    header
}

async fn a_websocket_version_other_than_13_gets_426_naming_13(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ada = app.customer("ada@example.com").await;

    for version in [None, Some("8"), Some("14"), Some("13, 8")] {
        let mut request = app
            .client
            .get(app.url("/v1/ws"))
            .bearer_auth(&ada.access_token)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
        if let Some(version) = version {
            request = request.header("sec-websocket-version", version);
        }
        let response = request.send().await.unwrap();

        assert_eq!(
            response.status(),
            StatusCode::UPGRADE_REQUIRED,
            "{version:?}"
        );
        assert_eq!(response.headers()["sec-websocket-version"], "13");
        assert_eq!(response.headers()["upgrade"], "websocket");
        let body = problem(response).await;
        assert_eq!(body["code"], "unsupported_websocket_version");
        assert_eq!(body["status"], 426);
    }
    // On a connection hyper serves, the same.
    let mut stream = after_a_request(&app).await;
    let request = upgrade_request(Some("8"), "/v1/ws", "tidings", &ada.access_token);
    stream.write_all(request.as_bytes()).await.unwrap();
    let (head, body) = read_response(&mut stream).await;
    assert!(head.starts_with("http/1.1 426"), "{head}");
    assert!(head.contains("\r\nsec-websocket-version: 13"), "{head}");
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["code"], "unsupported_websocket_version");
    // Other faults of a handshake stay 400s; a right one opens.
    let no_key = app
        .client
        .get(app.url("/v1/ws"))
        .bearer_auth(&ada.access_token)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .send()
        .await
        .unwrap();
    assert_eq!(no_key.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem(no_key).await["code"], "not_a_websocket");
    let mut ws = app.ws(&ada.access_token).await;
    ws.send(serde_json::json!({"type": "ping"})).await;
    assert_eq!(ws.next_json().await["type"], "pong");
}

async fn the_server_answers_a_close_with_the_clients_status_code(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ada = app.customer("ada@example.com").await;

    for sent in [Some(4000), Some(1001), None] {
        let request = format!("ws://{}/v1/ws", app.addr)
            .into_client_request()
            .map(|mut request| {
                request.headers_mut().insert(
                    "authorization",
                    format!("Bearer {}", ada.access_token).parse().unwrap(),
                );
                request
            })
            .unwrap();
        let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let frame = sent.map(|code: u16| CloseFrame {
            code: code.into(),
            reason: "done here".into(),
        });

        socket.send(Message::Close(frame)).await.unwrap();
        let reply = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("a reply in time");

        let Some(Ok(Message::Close(reply))) = reply else {
            panic!("expected the server's Close, got {reply:?}");
        };
        assert_eq!(reply.map(|f| u16::from(f.code)), sent, "the code echoed");
        let after = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("the end in time");
        assert!(
            !matches!(after, Some(Ok(_))),
            "nothing after the Close: {after:?}"
        );
    }
}

async fn broken_lengths_close_with_1002(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ada = app.customer("ada@example.com").await;

    let mut five_in_16_bits = vec![0x81, 0x80 | 126, 0, 5, 0, 0, 0, 0];
    five_in_16_bits.extend_from_slice(b"hello");
    let mut top_bit_set = vec![0x82, 0x80 | 127];
    top_bit_set.extend_from_slice(&(1u64 << 63 | 5).to_be_bytes());
    top_bit_set.extend_from_slice(&[0; 4]);
    for (frame, reason) in [
        (five_in_16_bits, "a length not in its shortest form"),
        (top_bit_set, "a 64-bit length with its top bit set"),
    ] {
        let mut stream = raw_ws(&app, &ada.access_token, None).await;

        stream.write_all(&frame).await.unwrap();

        assert_eq!(close_of(&mut stream).await, (1002, reason.to_owned()));
    }
    let mut again = app.ws(&ada.access_token).await;
    again.send(serde_json::json!({"type": "ping"})).await;
    assert_eq!(again.next_json().await["type"], "pong");
}

async fn a_text_frame_is_refused_at_its_first_bad_byte_before_the_rest_comes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ada = app.customer("ada@example.com").await;
    let mut stream = raw_ws(&app, &ada.access_token, None).await;

    // A 40-byte text frame, of which only the start comes: valid UTF-8, then 0xF4 0x90
    // (above U+10FFFF). The rest is never sent.
    let mut start = header(0x81, 40);
    start.extend_from_slice(b"{\"type\":\"p\xf4\x90");
    stream.write_all(&start).await.unwrap();

    assert_eq!(
        close_of(&mut stream).await,
        (1007, "a text message that is not UTF-8".to_owned())
    );
}

async fn a_flood_of_empty_continuation_frames_closes_with_1009(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ada = app.customer("ada@example.com").await;
    let mut stream = raw_ws(&app, &ada.access_token, None).await;
    let (mut reader, mut writer) = stream.split();

    // A message begun and never ended: empty continuations without end, far more than
    // the 64 frames a message of the default 4096-byte limit may have.
    let mut flood = header(0x01, 0);
    flood.extend(std::iter::repeat_n(header(0x00, 0), 2000).flatten());
    let send = async {
        // The server stops reading at its limit; its close ends the writes.
        let _ = writer.write_all(&flood).await;
    };
    let (_, closed) = tokio::join!(send, async {
        let mut stream_half = Vec::new();
        let mut chunk = [0u8; 256];
        loop {
            let n = tokio::time::timeout(PATIENCE, reader.read(&mut chunk))
                .await
                .expect("a close in time")
                .unwrap();
            assert!(n > 0, "the connection ended without a close frame");
            stream_half.extend_from_slice(&chunk[..n]);
            if stream_half.len() >= 4 {
                return stream_half;
            }
        }
    });

    assert_eq!(closed[0], 0x88, "a close frame: {closed:?}");
    assert_eq!(u16::from_be_bytes([closed[2], closed[3]]), 1009);
}

async fn the_echo_route_is_absent_unless_turned_on(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    for upgrade in [true, false] {
        let mut request = app.client.get(app.url("/v1/ws/echo"));
        if upgrade {
            request = request
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-version", "13")
                .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
        }
        let response = request.send().await.unwrap();

        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(problem(response).await["code"], "not_found");
    }
    let mut stream = after_a_request(&app).await;
    let request = upgrade_request(Some("13"), "/v1/ws/echo", "tidings", "none");
    stream.write_all(request.as_bytes()).await.unwrap();
    let (head, _) = read_response(&mut stream).await;
    assert!(head.starts_with("http/1.1 404"), "{head}");
}

async fn the_echo_route_echoes_through_both_upgrade_paths_without_the_hub(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.ws_echo = true;
        c.ws_max_message = 1 << 20;
    })
    .await;
    let request = || {
        format!("ws://{}/v1/ws/echo", app.addr)
            .into_client_request()
            .unwrap()
    };
    let fresh = TcpStream::connect(app.addr).await.unwrap();
    let direct = tokio_tungstenite::client_async(request(), fresh).await;
    let through_hyper = tokio_tungstenite::client_async(request(), after_a_request(&app).await);
    let large = "ünïcødé ".repeat(50_000);

    for mut socket in [direct.unwrap().0, through_hyper.await.unwrap().0] {
        let sent = [
            Message::Text("hello".into()),
            Message::Binary(vec![0, 1, 2, 255].into()),
            Message::Text(large.clone().into()),
            Message::Ping(b"are you there".to_vec().into()),
        ];
        for message in sent {
            socket.send(message.clone()).await.unwrap();
            let reply = tokio::time::timeout(PATIENCE, socket.next())
                .await
                .expect("an echo in time")
                .unwrap()
                .unwrap();
            let expected = match message {
                Message::Ping(payload) => Message::Pong(payload),
                other => other,
            };
            assert!(reply == expected, "echoed as sent");
        }
        assert_eq!(
            app.state.realtime.hub.connections(),
            0,
            "an echo socket is not registered with the hub"
        );
        socket
            .send(Message::Close(Some(CloseFrame {
                code: 1000.into(),
                reason: "".into(),
            })))
            .await
            .unwrap();
        let reply = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("a reply in time");
        assert!(
            matches!(&reply, Some(Ok(Message::Close(Some(f)))) if u16::from(f.code) == 1000),
            "{reply:?}"
        );
    }
}
