//! Real WebSocket and SSE clients for the live tests.

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::{SinkExt, Stream, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::TestApp;

/// Longest a test waits for something the server should send. Waiting is for an event
/// that must come; this only bounds a failing test.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// Asks `probe` again every 20 ms until it answers `Ok`, for at most `patience`: for state
/// the server does not announce (a metric, a readiness check, a Redis subscription).
/// `Err` says what was seen instead, for the failure's message.
pub async fn eventually<T, F, Fut>(patience: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(seen) => assert!(
                tokio::time::Instant::now() < deadline,
                "not so within {patience:?}: {seen}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a WebSocket client received.
#[derive(Debug)]
pub enum Incoming {
    Json(Value),
    Closed(Option<u16>, String),
}

pub struct WsClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl TestApp {
    /// Opens a WebSocket with a bearer token.
    pub async fn ws(&self, token: &str) -> WsClient {
        self.try_ws("/v1/ws", Some(token))
            .await
            .expect("the WebSocket opens")
    }

    /// Opens a WebSocket at `path` (which may carry `?ticket=`), with or without a token.
    pub async fn try_ws(&self, path: &str, token: Option<&str>) -> Result<WsClient, WsError> {
        let mut request = format!("ws://{}{}", self.addr, path)
            .into_client_request()
            .unwrap();
        if let Some(token) = token {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        let (socket, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(WsClient { socket })
    }

    /// The seq of the first `kind` event on `topic` that `token` may see: a change's event
    /// is numbered by the relay a moment after the change's request returns.
    pub async fn seq_of(&self, token: &str, topic: &str, kind: &str) -> i64 {
        let mut ws = self.ws(token).await;
        let (replayed, _) = ws.subscribe(&[topic], Some(0)).await;
        if let Some(event) = replayed.iter().find(|e| e["type"] == kind) {
            return event["seq"].as_i64().unwrap();
        }
        loop {
            let event = ws.next_event().await;
            if event["type"] == kind {
                return event["seq"].as_i64().unwrap();
            }
        }
    }

    /// Opens an SSE stream of `topics` whose client reads nothing until told to, through a
    /// tiny receive buffer: a slow consumer. Its own connection, so the accept loop
    /// answers it and the hub writes to its socket.
    pub async fn slow_sse(&self, token: &str, topics: &str) -> RawSse {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(self.addr).await.unwrap();
        self.raw_sse(stream, token, &format!("topics={topics}"))
            .await
    }

    /// Opens an SSE stream (`query` its query string) on a connection that first served
    /// a `GET /livez`: hyper's connection, where the stream is a response body.
    pub async fn sse_after_a_request(&self, token: &str, query: &str) -> RawSse {
        let stream = self.connection_after_a_request().await;
        self.raw_sse(stream, token, query).await
    }

    /// Opens a WebSocket on a connection that first served a `GET /livez`: one hyper
    /// upgrades, not the accept loop.
    pub async fn ws_after_a_request(&self, token: &str) -> WsClient {
        let stream = self.connection_after_a_request().await;
        let mut request = format!("ws://{}/v1/ws", self.addr)
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (socket, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
            .await
            .expect("the WebSocket opens");
        WsClient { socket }
    }

    /// A connection on which a `GET /livez` was answered (and kept alive): hyper's.
    pub async fn connection_after_a_request(&self) -> TcpStream {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        let request = format!("GET /livez HTTP/1.1\r\nHost: {}\r\n\r\n", self.addr);
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        loop {
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .expect("a content-length")
                    .parse()
                    .unwrap();
                if raw.len() >= end + 4 + length {
                    assert_eq!(raw.len(), end + 4 + length, "nothing after the answer");
                    break;
                }
            }
            let mut buf = [0u8; 1024];
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the server closed the connection after /livez");
            raw.extend_from_slice(&buf[..n]);
        }
        stream
    }

    /// Sends `GET /v1/events?{query}` on `stream` and reads its head: the stream is then
    /// registered with the hub and misses nothing from there on.
    pub async fn raw_sse(&self, stream: TcpStream, token: &str, query: &str) -> RawSse {
        self.raw_sse_with(stream, token, query, "").await.1
    }

    /// [`TestApp::raw_sse`] with `extra_headers` (each line ending in CRLF) in the request;
    /// also returns the response head, lowercased.
    pub async fn raw_sse_with(
        &self,
        mut stream: TcpStream,
        token: &str,
        query: &str,
        extra_headers: &str,
    ) -> (String, RawSse) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let request = format!(
            "GET /v1/events?{query} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n{extra_headers}\r\n",
            self.addr
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut buf = [0u8; 1024];
            let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
                .await
                .expect("the head in time")
                .unwrap();
            assert!(n > 0, "the server closed before its head");
            raw.extend_from_slice(&buf[..n]);
        }
        let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        assert!(head.contains("\r\ndate: "), "{head}");
        let sse = RawSse {
            stream,
            raw: raw.split_off(end),
            body: String::new(),
            comments: Vec::new(),
            ended: false,
        };
        (head, sse)
    }

    /// Opens a WebSocket whose client reads nothing until told to, through a tiny receive
    /// buffer: a slow consumer.
    pub async fn slow_ws(&self, token: &str) -> WsClient {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(self.addr).await.unwrap();
        let mut request = format!("ws://{}/v1/ws", self.addr)
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (socket, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
        WsClient { socket }
    }

    /// Opens an SSE stream of `topics` with a bearer token, resuming after `last_event_id`.
    pub async fn sse(&self, token: &str, topics: &str, last_event_id: Option<i64>) -> SseClient {
        let mut request = self
            .client
            .get(self.url(&format!("/v1/events?topics={topics}")))
            .bearer_auth(token);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = request.send().await.expect("the stream opens");
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        SseClient {
            events: Box::pin(response.bytes_stream().eventsource()),
        }
    }
}

impl WsClient {
    pub async fn send(&mut self, message: Value) {
        self.socket
            .send(Message::Text(message.to_string().into()))
            .await
            .expect("the message is sent");
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.socket
            .send(message)
            .await
            .expect("the message is sent");
    }

    /// The next JSON message or the close, skipping pings.
    pub async fn recv(&mut self) -> Incoming {
        loop {
            let next = tokio::time::timeout(PATIENCE, self.socket.next())
                .await
                .expect("the server sent something in time");
            match next {
                Some(Ok(Message::Text(text))) => {
                    return Incoming::Json(serde_json::from_str(&text).expect("JSON text"));
                }
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame
                        .map(|f: CloseFrame| (Some(u16::from(f.code)), f.reason.to_string()))
                        .unwrap_or((None, String::new()));
                    return Incoming::Closed(code, reason);
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Incoming::Closed(None, e.to_string()),
                None => return Incoming::Closed(None, "the stream ended".into()),
            }
        }
    }

    /// The next JSON message; the connection must not close.
    pub async fn next_json(&mut self) -> Value {
        match self.recv().await {
            Incoming::Json(value) => value,
            Incoming::Closed(code, reason) => {
                panic!("closed ({code:?} {reason}) while a message was expected")
            }
        }
    }

    /// Waits for the close frame and returns its code, failing on any other message but
    /// events and pings.
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            match self.recv().await {
                Incoming::Closed(code, _) => return code,
                Incoming::Json(value) if value.get("seq").is_some() => continue,
                Incoming::Json(value) => panic!("expected the connection to close, got {value}"),
            }
        }
    }

    /// After the server's Close: answers it (tungstenite sends its answer on the read
    /// after the one that returned the Close) and reads until the server ends the
    /// connection, then closes the client's side.
    pub async fn answer_close(mut self) {
        loop {
            let next = tokio::time::timeout(PATIENCE, self.socket.next())
                .await
                .expect("the server ended the connection in time");
            if !matches!(next, Some(Ok(_))) {
                return;
            }
        }
    }

    /// Waits for the server's next WebSocket ping.
    pub async fn await_ping(&mut self) {
        loop {
            let next = tokio::time::timeout(PATIENCE, self.socket.next())
                .await
                .expect("a ping in time");
            match next {
                Some(Ok(Message::Ping(_))) => return,
                Some(Ok(_)) => continue,
                other => panic!("the connection ended while waiting for a ping: {other:?}"),
            }
        }
    }

    /// Reads every event until the server closes; the events and the close code.
    pub async fn drain_until_closed(&mut self) -> (Vec<Value>, Option<u16>) {
        let mut events = Vec::new();
        loop {
            match self.recv().await {
                Incoming::Json(value) if value.get("seq").is_some() => events.push(value),
                Incoming::Json(_) => continue,
                Incoming::Closed(code, _) => return (events, code),
            }
        }
    }

    /// Subscribes and returns the events replayed before `subscribed`, and its `seq`.
    pub async fn subscribe(&mut self, topics: &[&str], since: Option<i64>) -> (Vec<Value>, i64) {
        let mut message = json!({"type": "subscribe", "topics": topics});
        if let Some(since) = since {
            message["since"] = json!(since);
        }
        self.send(message).await;
        let mut replayed = Vec::new();
        loop {
            let value = self.next_json().await;
            match value["type"].as_str() {
                Some("subscribed") => return (replayed, value["seq"].as_i64().unwrap()),
                _ if value.get("seq").is_some() => replayed.push(value),
                _ => panic!("unexpected message while subscribing: {value}"),
            }
        }
    }

    /// The next event of type `kind`, skipping events of other types (a `product.created`
    /// the hub had not reached when the client subscribed, say).
    pub async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let event = self.next_event().await;
            if event["type"] == kind {
                return event;
            }
        }
    }

    /// The next event (a message with a seq), skipping nothing else silently.
    pub async fn next_event(&mut self) -> Value {
        let value = self.next_json().await;
        assert!(value.get("seq").is_some(), "expected an event, got {value}");
        value
    }
}

pub struct SseClient {
    events: std::pin::Pin<
        Box<
            dyn Stream<
                    Item = Result<
                        eventsource_stream::Event,
                        eventsource_stream::EventStreamError<reqwest::Error>,
                    >,
                > + Send,
        >,
    >,
}

/// An SSE stream read straight off its socket, its chunked body decoded here.
pub struct RawSse {
    stream: TcpStream,
    /// Bytes read and not yet decoded.
    raw: Vec<u8>,
    /// Decoded text not yet parsed into events.
    body: String,
    comments: Vec<String>,
    /// The body's last chunk came.
    ended: bool,
}

/// All a raw SSE client got from some point on.
#[derive(Debug)]
pub struct Drained {
    pub events: Vec<Sse>,
    /// The comments of the whole stream (heartbeats, the reason it ended).
    pub comments: Vec<String>,
    /// The body ended with the last chunk (`0\r\n\r\n`), not just a closed connection.
    pub ended_cleanly: bool,
}

impl RawSse {
    /// The next event, or `None` once the body or the connection ends.
    pub async fn next(&mut self) -> Option<Sse> {
        use tokio::io::AsyncReadExt;

        loop {
            while let Some(end) = self.body.find("\n\n") {
                let block: String = self.body.drain(..end + 2).collect();
                if let Some(event) = self.parse(&block) {
                    return Some(event);
                }
            }
            if self.ended {
                return None;
            }
            let mut buf = [0u8; 16 * 1024];
            let n = tokio::time::timeout(PATIENCE, self.stream.read(&mut buf))
                .await
                .expect("the server sent something in time")
                .unwrap();
            if n == 0 {
                return None;
            }
            self.raw.extend_from_slice(&buf[..n]);
            self.decode();
        }
    }

    /// Reads to the end of the body (its last chunk, or the connection's end).
    pub async fn drain(mut self) -> Drained {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        Drained {
            events,
            comments: self.comments,
            ended_cleanly: self.ended && self.raw.is_empty(),
        }
    }

    /// Moves every whole chunk of `raw` into `body`.
    fn decode(&mut self) {
        while !self.ended {
            let Some(line_end) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                return;
            };
            let size =
                usize::from_str_radix(std::str::from_utf8(&self.raw[..line_end]).unwrap(), 16)
                    .expect("a chunk size");
            let data = line_end + 2;
            if self.raw.len() < data + size + 2 {
                return;
            }
            assert_eq!(
                &self.raw[data + size..data + size + 2],
                b"\r\n",
                "a chunk ends with CRLF"
            );
            if size == 0 {
                self.ended = true;
            } else {
                self.body
                    .push_str(std::str::from_utf8(&self.raw[data..data + size]).unwrap());
            }
            self.raw.drain(..data + size + 2);
        }
    }

    /// An event block's event, if it has data; its comments are kept.
    fn parse(&mut self, block: &str) -> Option<Sse> {
        let (mut id, mut event, mut data) = (String::new(), String::new(), None);
        for line in block.lines() {
            if let Some(comment) = line.strip_prefix(": ") {
                self.comments.push(comment.to_owned());
            } else if let Some(v) = line.strip_prefix("id: ") {
                id = v.to_owned();
            } else if let Some(v) = line.strip_prefix("event: ") {
                event = v.to_owned();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = Some(serde_json::from_str(v).expect("JSON data"));
            }
        }
        data.map(|data| Sse { id, event, data })
    }
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct Sse {
    pub id: String,
    pub event: String,
    pub data: Value,
}

impl SseClient {
    /// The next event with data (comments and the retry hint are not events), or `None`
    /// when the stream ends.
    pub async fn next(&mut self) -> Option<Sse> {
        loop {
            let next = tokio::time::timeout(PATIENCE, self.events.next())
                .await
                .expect("the server sent something in time");
            match next? {
                Ok(event) if event.data.is_empty() => continue,
                Ok(event) => {
                    return Some(Sse {
                        id: event.id,
                        event: event.event,
                        data: serde_json::from_str(&event.data).expect("JSON data"),
                    });
                }
                Err(_) => return None,
            }
        }
    }
}

/// The `type` of each event.
pub fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The `seq` of each event.
pub fn seqs(events: &[Value]) -> Vec<i64> {
    events.iter().map(|e| e["seq"].as_i64().unwrap()).collect()
}
