//! Faults found under load: a client that stops reading holds no more than its queue and a
//! bounded kernel buffer, and a Redis that stops answering is noticed like one that went
//! away.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tidings::domain::Role;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::backend_tests;
use crate::clients::{PATIENCE, seqs};
use crate::helpers::{Backend, TestApp};
use crate::live_cluster::OwnRedis;

backend_tests!(
    a_websocket_that_stops_reading_is_closed_once_its_queue_and_send_buffer_are_full,
    a_websocket_upgraded_by_hyper_is_bounded_alike,
    an_event_stream_that_stops_reading_is_ended_once_its_queue_and_send_buffer_are_full,
    an_event_stream_on_a_reused_connection_is_bounded_alike,
    a_frozen_redis_is_noticed_and_events_come_from_the_database_until_it_answers,
);

/// The queue and send buffer of the slow-consumer tests: small, so that they fill fast.
const QUEUE_BYTES: usize = 64 * 1024;
const SEND_BUFFER: usize = 32 * 1024;

/// Updates a burst sends at most: past what an autotuned send buffer (4 MiB) and the queue
/// take, with events of 4 KB.
const MOST_UPDATES: usize = 2000;

fn id(v: &Value) -> &str {
    v["id"].as_str().unwrap()
}

/// An app with the small queue and send buffer, staff, and a product to update.
async fn app_with_small_buffers(backend: Backend) -> (TestApp, String, String) {
    let app = TestApp::spawn_with(backend, |c| {
        c.queue_bytes = QUEUE_BYTES;
        c.live_send_buffer = Some(SEND_BUFFER);
        // A slow consumer is one shard's business: the others go on.
        c.hub_shards = Some(3);
    })
    .await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let tee = app.product(&staff.access_token, "TEE", 100, 1000).await;
    let product = id(&tee).to_owned();
    (app, staff.access_token, product)
}

/// A client socket with a small receive buffer, so that it holds little of what the server
/// sends once it stops reading; its receive buffer's size as the kernel keeps it.
async fn small_client_socket(app: &TestApp) -> (TcpStream, usize) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(app.addr).await.unwrap();
    let receive_buffer = socket2::SockRef::from(&stream).recv_buffer_size().unwrap();
    (stream, receive_buffer)
}

/// The most a stalled client may have been sent: its queue, the server's send buffer
/// (doubled by Linux) and what its own receive buffer held.
fn bound(receive_buffer: usize) -> usize {
    QUEUE_BYTES + 2 * SEND_BUFFER + receive_buffer
}

/// Updates the product with 4 KB descriptions, 16 at a time, until the hub has closed a
/// slow consumer.
async fn burst_until_a_slow_consumer_is_closed(app: &TestApp, token: &str, product: &str) {
    let slow_consumers = || {
        app.state
            .realtime
            .hub
            .stats
            .slow_consumers
            .load(Ordering::Relaxed)
    };
    let path = format!("/v1/products/{product}");
    let mut sent = 0;
    while slow_consumers() == 0 {
        assert!(sent < MOST_UPDATES, "no slow consumer after {sent} updates");
        let updates = (sent..sent + 16).map(|i| {
            let body = json!({"description": format!("{i}{}", "d".repeat(4000))});
            let path = &path;
            async move { app.patch(path, &body, token).await.status() }
        });
        let statuses = futures::future::join_all(updates).await;
        assert!(statuses.iter().all(|s| *s == StatusCode::OK));
        sent += 16;
    }
}

/// A client's socket that counts the bytes read from it.
struct Counted {
    stream: TcpStream,
    read: Arc<AtomicUsize>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        self.read
            .fetch_add(buf.filled().len() - before, Ordering::Relaxed);
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Reads `GET /livez` on `stream` to the end of its answer, which leaves the connection
/// with hyper.
async fn after_a_request(app: &TestApp, stream: &mut TcpStream) {
    let request = format!("GET /livez HTTP/1.1\r\nHost: {}\r\n\r\n", app.addr);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let body = br#"{"status":"ok"}"#;
    while !raw.ends_with(body) {
        let mut buf = [0u8; 1024];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "the server closed the connection after /livez");
        raw.extend_from_slice(&buf[..n]);
    }
}

/// A subscribed staff WebSocket on `stream` stops reading during a burst: it is closed
/// with 4008, having been sent no more than its queue and the send buffers hold.
async fn a_stalled_websocket_is_bounded(
    app: &TestApp,
    token: &str,
    product: &str,
    stream: TcpStream,
    receive_buffer: usize,
) {
    let read = Arc::new(AtomicUsize::new(0));
    let counted = Counted {
        stream,
        read: read.clone(),
    };
    let mut request = format!("ws://{}/v1/ws", app.addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::client_async(request, counted)
        .await
        .unwrap();
    let subscribe = json!({"type": "subscribe", "topics": ["inventory"]});
    ws.send(Message::text(subscribe.to_string())).await.unwrap();
    loop {
        let message = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("subscribed in time");
        if let Some(Ok(Message::Text(text))) = message
            && text.contains(r#""subscribed""#)
        {
            break;
        }
    }
    let before = read.load(Ordering::Relaxed);

    burst_until_a_slow_consumer_is_closed(app, token, product).await;
    let close = loop {
        let message = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("the server sent something in time");
        match message {
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            other => panic!("the connection ended without a close frame: {other:?}"),
        }
    };

    let sent = read.load(Ordering::Relaxed) - before;
    assert_eq!(close, Some(4008));
    assert!(
        sent <= bound(receive_buffer),
        "sent {sent} bytes before closing, more than the queue, the send buffer and the \
         client's receive buffer hold ({})",
        bound(receive_buffer)
    );
}

async fn a_websocket_that_stops_reading_is_closed_once_its_queue_and_send_buffer_are_full(
    backend: Backend,
) {
    let (app, token, product) = app_with_small_buffers(backend).await;
    let (stream, receive_buffer) = small_client_socket(&app).await;
    a_stalled_websocket_is_bounded(&app, &token, &product, stream, receive_buffer).await;
}

async fn a_websocket_upgraded_by_hyper_is_bounded_alike(backend: Backend) {
    let (app, token, product) = app_with_small_buffers(backend).await;
    let (mut stream, receive_buffer) = small_client_socket(&app).await;
    after_a_request(&app, &mut stream).await;
    a_stalled_websocket_is_bounded(&app, &token, &product, stream, receive_buffer).await;
}

/// An event stream of `inventory` opened on `stream` and not read during a burst: it is
/// ended as a slow consumer, having been sent no more than its queue and the send buffers
/// hold.
async fn a_stalled_event_stream_is_bounded(
    app: &TestApp,
    token: &str,
    product: &str,
    mut stream: TcpStream,
    receive_buffer: usize,
) {
    let request = format!(
        "GET /v1/events?topics=inventory HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\r\n",
        app.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // The retry hint comes once the stream is registered with the hub.
    let mut raw = Vec::new();
    while !raw.windows(6).any(|w| w == b"retry:") {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .expect("the stream's start in time")
            .unwrap();
        assert!(n > 0, "the server closed before the stream started");
        raw.extend_from_slice(&buf[..n]);
    }
    let before = raw.len();

    burst_until_a_slow_consumer_is_closed(app, token, product).await;
    // To the body's last chunk (hyper keeps the connection open after it).
    while !raw.ends_with(b"\r\n0\r\n\r\n") {
        let mut buf = [0u8; 64 * 1024];
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .expect("the server sent something in time")
            .unwrap();
        assert!(n > 0, "the connection ended before the body did");
        raw.extend_from_slice(&buf[..n]);
    }

    let sent = raw.len() - before;
    let tail = String::from_utf8_lossy(&raw[raw.len().saturating_sub(200)..]).into_owned();
    assert!(
        tail.contains(": slow consumer: reconnect with Last-Event-ID"),
        "{tail}"
    );
    assert!(
        sent <= bound(receive_buffer),
        "sent {sent} bytes before ending, more than the queue, the send buffer and the \
         client's receive buffer hold ({})",
        bound(receive_buffer)
    );
}

async fn an_event_stream_that_stops_reading_is_ended_once_its_queue_and_send_buffer_are_full(
    backend: Backend,
) {
    let (app, token, product) = app_with_small_buffers(backend).await;
    let (stream, receive_buffer) = small_client_socket(&app).await;
    a_stalled_event_stream_is_bounded(&app, &token, &product, stream, receive_buffer).await;
}

async fn an_event_stream_on_a_reused_connection_is_bounded_alike(backend: Backend) {
    let (app, token, product) = app_with_small_buffers(backend).await;
    let (mut stream, receive_buffer) = small_client_socket(&app).await;
    after_a_request(&app, &mut stream).await;
    a_stalled_event_stream_is_bounded(&app, &token, &product, stream, receive_buffer).await;
}

fn deltas(events: &[Value]) -> Vec<i64> {
    events
        .iter()
        .filter(|e| e["type"] == "inventory.stock_changed")
        .map(|e| e["data"]["delta"].as_i64().unwrap())
        .collect()
}

/// Longest an event may take to arrive while Redis is frozen: within it only if the hub
/// noticed and read the database (its safety poll is an hour away in this test).
const FROZEN_PATIENCE: Duration = Duration::from_millis(1500);

async fn a_frozen_redis_is_noticed_and_events_come_from_the_database_until_it_answers(
    backend: Backend,
) {
    let redis = OwnRedis::start().await;
    let url = redis.url();
    let app = TestApp::spawn_with(backend, |c| {
        c.redis_url = Some(url);
        // No safety-net polls within the test: the hub must read the database because
        // it noticed the bus stalled, not because a poll came round.
        c.relay_poll = Duration::from_secs(3600);
    })
    .await;
    let health = app.state.realtime.bus_health.clone();
    tokio::time::timeout(PATIENCE, health.up())
        .await
        .expect("subscribed to Redis");
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let tee = app.product(&staff.access_token, "TEE", 100, 1000).await;
    let mut ws = app.ws(&staff.access_token).await;
    ws.subscribe(&["inventory"], None).await;
    app.adjust_stock(&staff.access_token, id(&tee), 1).await;
    let mut received = vec![ws.next_of("inventory.stock_changed").await];

    redis.freeze();
    // Each change arrives in time: the relay is not held by the frozen Redis either.
    for delta in 2..=5 {
        app.adjust_stock(&staff.access_token, id(&tee), delta).await;
        let event = tokio::time::timeout(FROZEN_PATIENCE, ws.next_event())
            .await
            .unwrap_or_else(|_| panic!("change {delta} did not arrive while Redis was frozen"));
        received.push(event);
    }
    let during: Value = app.get("/readyz", None).await.json().await.unwrap();
    redis.thaw();
    tokio::time::timeout(PATIENCE, health.up())
        .await
        .expect("the bus is back once Redis answers");
    let after: Value = app.get("/readyz", None).await.json().await.unwrap();
    for delta in 6..=8 {
        app.adjust_stock(&staff.access_token, id(&tee), delta).await;
    }
    while deltas(&received).last() != Some(&8) {
        received.push(ws.next_event().await);
    }

    assert_eq!(during["checks"]["bus"]["status"], "degraded");
    assert_eq!(during["status"], "ready", "a degraded bus is not a failure");
    assert_eq!(after["checks"]["bus"]["status"], "up");
    assert_eq!(deltas(&received), (1..=8).collect::<Vec<i64>>());
    assert!(
        seqs(&received).windows(2).all(|w| w[1] == w[0] + 1),
        "every event once, in order: {:?}",
        seqs(&received)
    );
}
