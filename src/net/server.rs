//! The accept loop: every connection is served by hyper, except a connection that opens
//! with a live stream (`GET /v1/events` or `GET /v1/ws`), which is answered here and then
//! left without hyper.
//!
//! Why: a live connection lives for hours and spends that time idle. hyper keeps an 8 KiB
//! read buffer and an 8 KiB write buffer per HTTP/1 connection for its whole life, which is
//! most of the memory of an idle SSE stream (ARCHITECTURE.md, "Memory per live
//! connection"). So the loop reads the request head itself (with `httparse`, into a small
//! buffer); a live-stream request goes through the same axum router as every other request
//! (authentication, validation and errors are the handlers'), and its answer's head is
//! written here: a WebSocket's `101` or an event stream's `200`, after which the socket is
//! handed to the handler's task ([`DirectUpgrade`]), or anything else (an error) in full
//! with `Connection: close`. Every other connection, with the bytes already read,
//! goes to hyper's HTTP/1 server as before.
//!
//! Connections not yet authenticated are capped (`pending`), and both paths refuse the
//! same request heads: over 16 KiB, or more than 100 headers.

mod pending;

pub use pending::Limits;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, Response, StatusCode, Version, header};
use bytes::{Buf, Bytes, BytesMut};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio_io_timeout::TimeoutStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::net::tcp::{SharedTcp, bound_send_buffer};
use pending::{Admission, Pending, Slot};

/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest request head (start line included), here and in hyper.
const MAX_HEAD: usize = 16 * 1024;
/// The most headers a request may have: hyper's default.
const MAX_HEADERS: usize = 100;
/// The largest body of an answer written here (errors and small documents).
const MAX_PLAIN_BODY: usize = 1024 * 1024;
/// How long a connection answered in full (and closed) is read from for what the client
/// still sends.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Accept errors (out of file descriptors, say) come in floods: after one is logged, the
/// next line waits this long, and counts those in between.
const ACCEPT_ERROR_LOG_EVERY: Duration = Duration::from_secs(5);

/// The socket of a live-stream request read by the accept loop, and any bytes the client
/// sent after its request head.
pub type Upgraded = (TcpStream, BytesMut);

/// In the extensions of a live-stream request read by the accept loop: the socket arrives
/// here once a `101` or `200 text/event-stream` head is written. (Clone, as extensions must be; taken once.)
#[derive(Clone)]
pub struct DirectUpgrade(Arc<Mutex<Option<oneshot::Receiver<Upgraded>>>>);

impl DirectUpgrade {
    /// The socket to come; `None` if already taken.
    pub fn take(&self) -> Option<oneshot::Receiver<Upgraded>> {
        self.0.lock().take()
    }
}

/// Serves `router` on `listener` until `stop` is cancelled, then lets hyper's connections
/// finish their requests and waits (at most `grace`) for every connection task to end. A
/// write that waits `write_timeout` for a client that takes no bytes ends its connection.
/// A live stream's socket gets a send buffer of `live_send_buffer` bytes (see
/// [`bound_send_buffer`]), whether it is served here or by hyper.
/// Connections not yet authenticated are held to `limits`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    stop: CancellationToken,
    grace: Duration,
    write_timeout: Duration,
    live_send_buffer: Option<usize>,
    limits: Limits,
) -> io::Result<()> {
    let tasks = TaskTracker::new();
    let pending = Pending::new(limits);
    let mut errors = AcceptErrors::default();
    loop {
        let accepted = async {
            pending.room().await;
            listener.accept().await
        };
        let (stream, peer) = tokio::select! {
            accepted = accepted => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    errors.failed(&e);
                    // Out of file descriptors: an idle connection gives one back. Either
                    // way (or a connection reset before accept), wait a little, not spin.
                    if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                        pending.shed_one();
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        errors.succeeded();
        let _ = stream.set_nodelay(true);
        tasks.spawn(connection(
            stream,
            peer,
            pending.admit(peer.ip()),
            router.clone(),
            stop.clone(),
            write_timeout,
            live_send_buffer,
        ));
    }
    drop(listener);
    tasks.close();
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        tracing::warn!(
            open = tasks.len(),
            "connections still open after the grace period"
        );
    }
    Ok(())
}

/// The log of accept errors: the first at once, then at most one line per
/// [`ACCEPT_ERROR_LOG_EVERY`] with how many failed in between.
#[derive(Default)]
struct AcceptErrors {
    /// When a line was last written.
    logged_at: Option<tokio::time::Instant>,
    /// Failures since then.
    unlogged: u64,
}

impl AcceptErrors {
    fn failed(&mut self, error: &io::Error) {
        if self
            .logged_at
            .is_some_and(|at| at.elapsed() < ACCEPT_ERROR_LOG_EVERY)
        {
            self.unlogged += 1;
            return;
        }
        tracing::warn!(
            %error,
            more_since_last_line = self.unlogged,
            "accepting a connection failed"
        );
        self.logged_at = Some(tokio::time::Instant::now());
        self.unlogged = 0;
    }

    fn succeeded(&mut self) {
        if self.unlogged > 0
            && self
                .logged_at
                .is_none_or(|at| at.elapsed() >= ACCEPT_ERROR_LOG_EVERY)
        {
            tracing::warn!(
                failures = self.unlogged,
                "accepting connections failed meanwhile"
            );
            self.logged_at = Some(tokio::time::Instant::now());
            self.unlogged = 0;
        }
    }
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    admission: Admission,
    router: Router,
    stop: CancellationToken,
    write_timeout: Duration,
    live_send_buffer: Option<usize>,
) {
    let slot = match admission {
        Admission::Admitted(slot) => slot,
        Admission::Refused(slot) => {
            let mut busy = plain_problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_connections",
                "too many connections from this address are waiting; retry later",
            );
            busy.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from(slot.retry_after()),
            );
            tokio::select! {
                () = write_plain(&mut stream, busy, write_timeout) => {}
                () = slot.shed() => {}
            }
            return;
        }
    };
    let mut head = BytesMut::with_capacity(1024);
    // A client that has not sent its first request yet is let go at shutdown, or shed.
    let first = tokio::select! {
        read = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream, &mut head)) => match read {
            Ok(Ok(first)) => first,
            Ok(Err(_)) | Err(_) => return,
        },
        () = stop.cancelled() => return,
        () = slot.shed() => return,
    };
    slot.busy();
    // The answering is boxed, so that the task of a long-lived stream is sized for the
    // stream and not for the router's or hyper's futures.
    match first {
        Head::Malformed(why) => {
            let problem = plain_problem(
                StatusCode::BAD_REQUEST,
                "malformed_request",
                &format!("the request head is not valid HTTP/1.1: {why}"),
            );
            Box::pin(write_plain(&mut stream, problem, write_timeout)).await;
        }
        Head::TooLarge => {
            let problem = plain_problem(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request_head_too_large",
                &format!(
                    "a request head may have at most {} KiB and {MAX_HEADERS} headers",
                    MAX_HEAD / 1024
                ),
            );
            Box::pin(write_plain(&mut stream, problem, write_timeout)).await;
        }
        Head::Live(LiveHead { head_len, request }) => {
            // A copy, so that the head's buffer is freed now (usually it is empty).
            let leftover = BytesMut::from(&head[head_len..]);
            drop(head);
            bound_send_buffer(&stream, live_send_buffer);
            Box::pin(answer_live(
                stream,
                peer,
                router,
                request,
                leftover,
                write_timeout,
            ))
            .await;
        }
        Head::Other => {
            let socket = Arc::new(stream);
            let live = LiveSocket {
                socket: Arc::downgrade(&socket),
                send_buffer: live_send_buffer,
            };
            let io = Prefixed {
                read: head.freeze(),
                stream: SharedTcp(socket.clone()),
            };
            // hyper has no write timeout of its own: a client that stops reading a
            // response (or an event stream hyper serves) would hold its connection forever.
            let mut io = TimeoutStream::new(io);
            io.set_write_timeout(Some(write_timeout));
            Box::pin(serve_hyper(
                Box::pin(io),
                &socket,
                peer,
                router,
                stop,
                slot,
                live,
            ))
            .await
        }
    }
}

/// A problem answered by the accept loop itself, with a request id and the security
/// headers as every response has (no request reached the router to be given them).
fn plain_problem(status: StatusCode, code: &str, detail: &str) -> Response<Body> {
    let mut problem = crate::error::problem_response(status, code, detail, &[]);
    if let Ok(id) = header::HeaderValue::from_str(&uuid::Uuid::now_v7().to_string()) {
        problem.headers_mut().insert(crate::net::REQUEST_ID, id);
    }
    problem.headers_mut().extend(crate::net::SECURITY_HEADERS);
    problem
}

/// A request head parsed here: only a bodyless HTTP/1.1 GET of a live-stream path.
struct LiveHead {
    head_len: usize,
    request: Request<Body>,
}

/// A connection's first request head, as read here.
#[expect(
    clippy::large_enum_variant,
    reason = "read once per connection and consumed at once, as an Option<LiveHead> would be"
)]
enum Head {
    /// A live-stream request, served here.
    Live(LiveHead),
    /// Any other whole request head, which hyper reads from the start.
    Other,
    /// Not HTTP: answered here with a problem, where hyper would send a bare 400.
    Malformed(httparse::Error),
    /// Over [`MAX_HEAD`] or [`MAX_HEADERS`]: answered here, as hyper would refuse it, so
    /// that hyper never starts a new head timer on a head begun here.
    TooLarge,
}

/// Reads until a whole request head is in `buf`.
async fn read_head(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<Head> {
    loop {
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(1024);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(buf) {
            Ok(httparse::Status::Complete(head_len)) if head_len <= MAX_HEAD => {
                return Ok(live_request(&parsed).map_or(Head::Other, |request| {
                    Head::Live(LiveHead { head_len, request })
                }));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
            Ok(_) | Err(httparse::Error::TooManyHeaders) => return Ok(Head::TooLarge),
            Err(malformed) => return Ok(Head::Malformed(malformed)),
        }
    }
}

fn live_request(parsed: &httparse::Request) -> Option<Request<Body>> {
    let path = parsed.path?;
    if parsed.method != Some("GET") || parsed.version != Some(1) || !is_live_path(path) {
        return None;
    }
    let mut builder = Request::builder()
        .method("GET")
        .uri(path)
        .version(Version::HTTP_11);
    for h in parsed.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        // A body would need reading; leave such (odd) requests to hyper.
        if name == "transfer-encoding" || (name == "content-length" && h.value != b"0") {
            return None;
        }
        builder = builder.header(h.name, h.value);
    }
    builder.body(Body::empty()).ok()
}

/// Whether a request's target is a live stream's (`/v1/events`, `/v1/ws`, or the echo
/// route of conformance tests).
fn is_live_path(target: &str) -> bool {
    matches!(
        target.split('?').next(),
        Some("/v1/events" | "/v1/ws" | "/v1/ws/echo")
    )
}

/// The socket of a connection hyper serves, whose send buffer is bounded once it carries a
/// live stream (an event stream in a response body, or a WebSocket hyper upgrades).
struct LiveSocket {
    /// Weak: the connection's I/O owns the socket.
    socket: Weak<TcpStream>,
    send_buffer: Option<usize>,
}

/// Answers a live-stream request: writes the head, then hands the socket to the handler's
/// task (a WebSocket's or an event stream's), or writes an error in full.
async fn answer_live(
    mut stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    mut request: Request<Body>,
    leftover: BytesMut,
    write_timeout: Duration,
) {
    request.extensions_mut().insert(ConnectInfo(peer));
    let (upgrade_tx, upgrade_rx) = oneshot::channel();
    request
        .extensions_mut()
        .insert(DirectUpgrade(Arc::new(Mutex::new(Some(upgrade_rx)))));
    let Ok(response) = router.oneshot(request).await;
    let (parts, body) = response.into_parts();
    // The head is written from `parts`, which is dropped here.
    let (head, answer) = live_head(parts);
    match answer {
        Answer::Upgrade | Answer::EventStream => {
            // A handler that did not take the socket answered with nothing to go on with.
            if !upgrade_tx.is_closed() && write_within(&mut stream, &head, write_timeout).await {
                let _ = upgrade_tx.send((stream, leftover));
            }
        }
        Answer::Plain => write_body(&mut stream, head, body, write_timeout).await,
    }
}

/// Writes a whole response that ends the connection.
async fn write_plain(stream: &mut TcpStream, response: Response<Body>, write_timeout: Duration) {
    let (parts, body) = response.into_parts();
    let (head, _) = live_head(parts);
    write_body(stream, head, body, write_timeout).await;
}

/// Writes a plain answer's head (without its length), then its body, and closes.
async fn write_body(stream: &mut TcpStream, head: Vec<u8>, body: Body, write_timeout: Duration) {
    let body = axum::body::to_bytes(body, MAX_PLAIN_BODY)
        .await
        .unwrap_or_default();
    let mut out = head;
    put_header(
        &mut out,
        "content-length",
        body.len().to_string().as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    if write_within(stream, &out, write_timeout).await {
        // What the client still sends (a body, say) must not reset the answer away.
        crate::net::tcp::close_gracefully(stream, CLOSE_GRACE).await;
    }
}

/// Writes all of `bytes` unless the client takes none of them for `limit`; whether it did.
async fn write_within(stream: &mut TcpStream, bytes: &[u8], limit: Duration) -> bool {
    matches!(
        tokio::time::timeout(limit, stream.write_all(bytes)).await,
        Ok(Ok(()))
    )
}

/// How a live-stream request is answered.
enum Answer {
    /// `101`: the socket goes to the WebSocket handler.
    Upgrade,
    /// `200 text/event-stream`: the socket goes to the stream's task, which writes the
    /// body with chunked encoding.
    EventStream,
    /// Anything else (an error): written in full, then the connection is closed.
    Plain,
}

impl Answer {
    fn of(status: StatusCode, headers: &HeaderMap) -> Answer {
        if status == StatusCode::SWITCHING_PROTOCOLS {
            Answer::Upgrade
        } else if status == StatusCode::OK
            && headers
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
        {
            Answer::EventStream
        } else {
            Answer::Plain
        }
    }
}

/// The response head and how to go on. An event stream's head is complete (it ends with
/// the blank line); a plain answer's still needs its `content-length` and the blank line.
fn live_head(parts: axum::http::response::Parts) -> (Vec<u8>, Answer) {
    let answer = Answer::of(parts.status, &parts.headers);
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        parts
            .status
            .canonical_reason()
            .unwrap_or("Unknown")
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
    // As hyper does, and as HTTP asks of a server with a clock (RFC 9110, 6.6.1).
    let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT");
    put_header(&mut out, "date", date.to_string().as_bytes());
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        put_header(&mut out, name.as_str(), value.as_bytes());
    }
    match answer {
        Answer::EventStream => {
            put_header(&mut out, "transfer-encoding", b"chunked");
            out.extend_from_slice(b"\r\n");
        }
        Answer::Upgrade => out.extend_from_slice(b"\r\n"),
        Answer::Plain => put_header(&mut out, "connection", b"close"),
    }
    (out, answer)
}

fn put_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Serves a connection (`io`, over `socket`) with hyper until it ends, is shed (then
/// after its current response), the server stops, or the client of an event stream on it
/// goes away.
async fn serve_hyper(
    io: Pin<Box<TimeoutStream<Prefixed>>>,
    socket: &TcpStream,
    peer: SocketAddr,
    router: Router,
    stop: CancellationToken,
    slot: Slot,
    live: LiveSocket,
) {
    let shed = slot.shed();
    let slot = Arc::new(slot);
    let streaming = Arc::new(Notify::new());
    let stream_started = streaming.clone();
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        if is_live_path(request.uri().path())
            && let Some(socket) = live.socket.upgrade()
        {
            bound_send_buffer(&socket, live.send_buffer);
        }
        request.extensions_mut().insert(ConnectInfo(peer));
        let router = router.clone();
        let slot = slot.clone();
        let stream_started = stream_started.clone();
        async move {
            slot.busy();
            let asks_upgrade = asks_upgrade(request.headers());
            let Ok(mut response) = router.oneshot(request.map(Body::new)).await;
            let status = response.status();
            match Answer::of(status, response.headers()) {
                Answer::Upgrade => slot.leave(),
                Answer::EventStream => {
                    slot.leave();
                    stream_started.notify_one();
                }
                Answer::Plain => slot.idle(),
            }
            // After a refused upgrade a proxy that does not look for the 101 may already
            // be sending the other protocol's bytes, and after a 413 the client may still
            // be sending its body: neither is a next request.
            if (asks_upgrade && status != StatusCode::SWITCHING_PROTOCOLS)
                || status == StatusCode::PAYLOAD_TOO_LARGE
            {
                response.headers_mut().insert(
                    header::CONNECTION,
                    header::HeaderValue::from_static("close"),
                );
            }
            Ok::<Response<Body>, std::convert::Infallible>(response)
        }
    });
    let io = TokioIo::new(io);
    let mut http = hyper::server::conn::http1::Builder::new();
    // Buffers of MAX_HEAD, not hyper's ~400 KB: hyper takes body chunks while its buffer
    // has room, so an event stream it serves to a client that stopped reading would hold
    // that much on top of its queue. (A head is refused beyond it too, as one read here is.)
    http.timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        // hyper's buffers are capped too: it takes body chunks while its buffer has room.
        .max_buf_size(MAX_HEAD)
        // The accept loop's limit: both paths refuse the same heads.
        .max_header_size(MAX_HEAD)
        // A client that shuts down its side once its request is sent still gets the answer.
        .half_close(true);
    let conn = http.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "an HTTP connection failed");
            }
            return;
        }
        () = stop.cancelled() => conn.as_mut().graceful_shutdown(),
        () = shed => conn.as_mut().graceful_shutdown(),
        () = stream_client_left(socket, &streaming) => return,
    }
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "an HTTP connection failed while closing");
    }
}

/// Resolves when, once an event stream has started on the connection, its client closes
/// its side. hyper, serving with `half_close`, reads nothing while it writes a response,
/// so it would only find out when a write fails (a heartbeat or two later).
async fn stream_client_left(socket: &TcpStream, streaming: &Notify) {
    streaming.notified().await;
    let mut byte = [0u8; 1];
    if let Ok(1..) = socket.peek(&mut byte).await {
        // The client sent something (its next request): hyper reads it in time.
        std::future::pending::<()>().await;
    }
}

/// Whether a request asks to switch protocols (RFC 9110, 7.8).
fn asks_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        || headers.get_all(header::CONNECTION).iter().any(|value| {
            value.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}

/// The socket, with the bytes the accept loop already read in front.
struct Prefixed {
    read: Bytes,
    /// Shared: [`LiveSocket`] may bound its send buffer, and [`stream_client_left`] looks
    /// at it while hyper has it.
    stream: SharedTcp,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.read.has_remaining() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read[..n]);
            self.read.advance(n);
            if !self.read.has_remaining() {
                // Free the head's buffer now, not when the connection ends.
                self.read = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let socket = &self.stream.0;
        loop {
            std::task::ready!(socket.poll_write_ready(cx))?;
            match socket.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                written => return Poll::Ready(written),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
