//! `GET /v1/ws`: the WebSocket endpoint and its JSON protocol (DESIGN.md).
//!
//! One task per connection owns the socket: it writes what the hub queued (all of it at
//! once, in one write), reads client messages, pings, and closes the connection when the
//! token expires, the user's sessions are revoked, the queue overflows or the server
//! shuts down, each with its close code. The framing is [`crate::net::wire`].

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use futures::FutureExt;
use futures::future::{BoxFuture, Either};

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::{Instant, sleep_until};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::tickets::StreamUser;
use crate::error::{ProblemDoc, problem_response};
use crate::events::Topic;
use crate::http::AppState;
use crate::http::extract::at_most_one;
use crate::http::problem::ApiError;
use crate::net::server::{DirectUpgrade, Upgraded};
use crate::net::tcp::SharedTcp;
use crate::net::wire::{Closing, Incoming, ReadError, Socket};
use crate::realtime::frames::PreparedEvent;
use crate::realtime::hub::{Refused, Registration};
use crate::realtime::mailbox::{Batch, Closed};
use crate::realtime::protocol::{ClientMessage, CloseCode, ErrorCode, ServerMessage};
use crate::realtime::replay::{self, Resume};
use crate::realtime::{Transport, parse_topics};
use crate::service::accounts::{CurrentUser, authenticate};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upgrade))
        // Undocumented: it exists only for the conformance suite.
        .route("/v1/ws/echo", axum::routing::get(super::echo::upgrade))
}

/// Opens a WebSocket for live events. Authenticate with `Authorization: Bearer` or
/// `?ticket=` (from POST /v1/stream-tickets). Then send
/// `{"type":"subscribe","topics":["orders"],"since":1041}`; see the README for the protocol.
#[utoipa::path(get, path = "/v1/ws", tag = "live", security(("bearer" = [])),
    params(("ticket" = Option<String>, Query, description = "A stream ticket, instead of a bearer token")),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket request", body = ProblemDoc),
        (status = 401, description = "No valid token or ticket", body = ProblemDoc),
        (status = 426, description = "A WebSocket version other than 13", body = ProblemDoc, headers(("sec-websocket-version" = String, description = "13"))),
        (status = 503, description = "The server is shutting down", body = ProblemDoc),
    ))]
async fn upgrade(
    State(state): State<AppState>,
    Handshake(accept): Handshake,
    StreamUser(user): StreamUser,
    mut request: Request,
) -> Result<Response, ApiError> {
    // Refused before the upgrade, so that a proxy passes the request to another instance
    // (nginx's `proxy_next_upstream http_503`) instead of the client being switched and
    // then closed with 1001 here again. One that opens during the race is closed so.
    if state.realtime.hub.is_closing() {
        return Err(super::shutting_down());
    }
    let (switching, socket) = take_connection(&state, &mut request, accept)?;
    let tasks = state.realtime.tasks.clone();
    // `then`, not one async block: the task holds either the upgrade or the connection,
    // never both, so an idle connection's task is no larger than its loop.
    crate::realtime::spawn_connection(
        &tasks,
        socket.then(move |socket| match socket {
            Some((socket, stream)) => Connection::open(state, user, socket, stream),
            None => Either::Right(Box::pin(async {}) as BoxFuture<'static, ()>),
        }),
    );
    Ok(switching)
}

/// A WebSocket once its `101` is written, with the TCP stream under it if the accept loop
/// handed it over (which the hub may then write to directly); `None` if the upgrade failed.
pub(super) type Opened = Option<(WebSocket, Option<Arc<TcpStream>>)>;

/// Takes the connection of a request whose handshake was checked: the `101` to answer
/// with, and the socket, which comes once that is written.
pub(super) fn take_connection(
    state: &AppState,
    request: &mut Request,
    accept: String,
) -> Result<(Response, impl Future<Output = Opened> + Send + 'static), ApiError> {
    let extensions = request.extensions_mut();
    let upgrade = match (
        extensions.remove::<DirectUpgrade>().and_then(|d| d.take()),
        extensions.remove::<OnUpgrade>(),
    ) {
        (Some(direct), _) => Upgrade::Direct(direct),
        (None, Some(hyper)) => Upgrade::Hyper(hyper),
        (None, None) => {
            return Err(ApiError::bad_request(
                "not_a_websocket",
                "this connection cannot be upgraded",
            ));
        }
    };
    let limit = state.realtime.config.max_message_bytes;
    let write_limit = state.realtime.config.write_timeout;
    let socket = async move {
        match upgrade {
            Upgrade::Direct(direct) => {
                let (stream, read) = direct.await.ok()?;
                // Onto the live runtime's reactor, where this task runs.
                let stream = tokio::net::TcpStream::from_std(stream.into_std().ok()?).ok()?;
                let stream = Arc::new(stream);
                let socket = Socket::with_read(
                    Box::new(SharedTcp(stream.clone())) as Box<dyn Io>,
                    limit,
                    read,
                )
                .write_limit(write_limit);
                Some((socket, Some(stream)))
            }
            Upgrade::Hyper(hyper) => match hyper.await {
                Ok(upgraded) => Some((
                    Socket::new(Box::new(TokioIo::new(upgraded)) as Box<dyn Io>, limit)
                        .write_limit(write_limit),
                    None,
                )),
                Err(e) => {
                    tracing::debug!(error = %e, "the WebSocket upgrade failed");
                    None
                }
            },
        }
    };
    let switching = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .expect("a valid response");
    Ok((switching, socket))
}

/// A checked opening handshake and the `Sec-WebSocket-Accept` to answer it with. An
/// extractor that runs before [`StreamUser`], so that a request that is not a WebSocket
/// does not spend its ticket.
struct Handshake(String);

impl<S: Sync> FromRequestParts<S> for Handshake {
    type Rejection = HandshakeError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, HandshakeError> {
        handshake(&parts.method, &parts.headers).map(Handshake)
    }
}

/// Why an opening handshake is refused.
#[derive(Debug)]
pub(super) enum HandshakeError {
    /// Not a WebSocket handshake (400).
    NotWebSocket(&'static str),
    /// A WebSocket of a version other than 13 (426, RFC 6455 4.2.2 and 4.4).
    Version,
}

impl IntoResponse for HandshakeError {
    fn into_response(self) -> Response {
        match self {
            HandshakeError::NotWebSocket(why) => {
                ApiError::bad_request("not_a_websocket", why).into_response()
            }
            HandshakeError::Version => {
                let mut response = problem_response(
                    StatusCode::UPGRADE_REQUIRED,
                    "unsupported_websocket_version",
                    "this server speaks WebSocket version 13: send `Sec-WebSocket-Version: 13`",
                    &[],
                );
                // The version it speaks (RFC 6455, 4.4), and the protocol to upgrade to,
                // which a 426 names (RFC 9110, 15.5.22), as a connection option (7.8).
                let headers = response.headers_mut();
                headers.insert(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static("13"),
                );
                headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                response
            }
        }
    }
}

/// Checks an opening handshake (RFC 6455, 4.2.1); the `Sec-WebSocket-Accept` to answer.
pub(super) fn handshake(method: &Method, headers: &HeaderMap) -> Result<String, HandshakeError> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value
                .to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if method != Method::GET {
        return Err(HandshakeError::NotWebSocket("a WebSocket opens with GET"));
    }
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return Err(HandshakeError::NotWebSocket(
            "expected `Connection: upgrade` and `Upgrade: websocket`",
        ));
    }
    if !matches!(at_most_one(headers, header::SEC_WEBSOCKET_VERSION), Ok(Some(v)) if v == "13") {
        return Err(HandshakeError::Version);
    }
    let Ok(Some(key)) = at_most_one(headers, header::SEC_WEBSOCKET_KEY) else {
        return Err(HandshakeError::NotWebSocket(
            "expected one `Sec-WebSocket-Key`",
        ));
    };
    // The nonce is 16 bytes, base64-encoded.
    if !base64::engine::general_purpose::STANDARD
        .decode(key.as_bytes())
        .is_ok_and(|nonce| nonce.len() == 16)
    {
        return Err(HandshakeError::NotWebSocket(
            "`Sec-WebSocket-Key` must be 16 bytes in base64",
        ));
    }
    Ok(crate::net::wire::accept_key(key.as_bytes()))
}

/// Where the socket comes from: the accept loop's own live path, or a hyper upgrade (a
/// WebSocket opened on a connection that served other requests first).
enum Upgrade {
    Direct(oneshot::Receiver<Upgraded>),
    Hyper(OnUpgrade),
}

/// The connection under the WebSocket, whichever way it came.
pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub(super) type WebSocket = Socket<Box<dyn Io>>;

/// The message of the error a binary message gets.
const NOT_TEXT: &str = "messages are JSON text frames";

struct Connection {
    state: AppState,
    user: CurrentUser,
    registration: Registration,
    socket: WebSocket,
    expires_at: Instant,
}

fn expiry(exp: i64) -> Instant {
    let left = exp - chrono::Utc::now().timestamp();
    Instant::now() + Duration::from_secs(left.max(0) as u64)
}

impl Connection {
    /// Registers the connection with the hub and returns its life, or the closing of a
    /// connection the hub refuses.
    fn open(
        state: AppState,
        user: CurrentUser,
        socket: WebSocket,
        stream: Option<Arc<TcpStream>>,
    ) -> Either<impl Future<Output = ()>, BoxFuture<'static, ()>> {
        let hub = &state.realtime.hub;
        let registration = match hub.connect(
            user.id,
            user.role.is_staff(),
            user.token_version,
            Transport::WebSocket,
        ) {
            Ok(registration) => registration,
            Err(Refused::TooMany) => {
                return Either::Right(Box::pin(
                    socket
                        .close(
                            CloseCode::TooManyConnections.value(),
                            "too many connections for this user",
                        )
                        .map(drop),
                ));
            }
            Err(Refused::ShuttingDown) => {
                return Either::Right(Box::pin(
                    socket
                        .close(CloseCode::GoingAway.value(), "server shutting down")
                        .map(drop),
                ));
            }
            Err(Refused::Revoked) => {
                return Either::Right(Box::pin(
                    socket
                        .close(CloseCode::Unauthorized.value(), "session revoked")
                        .map(drop),
                ));
            }
        };
        if let Some(stream) = stream {
            registration
                .mailbox()
                .write_directly_to(stream, Transport::WebSocket);
        }
        let expires_at = expiry(user.expires_at);
        let connection = Connection {
            state,
            user,
            registration,
            socket,
            expires_at,
        };
        Either::Left(connection.run())
    }
}

/// What woke a connection's task.
enum Woke {
    Queued(Result<Batch, Closed>),
    Message(Result<Incoming, ReadError>),
    Expired,
    Ping,
}

/// How a connection ended, for its close frame.
enum End {
    /// The server closes: this Close, then the client's.
    Close(CloseCode, &'static str),
    /// The client closed, with this status code.
    Closed(Option<u16>),
    /// The client sent what ends the connection (a broken frame, say).
    Failed(ReadError),
    /// The peer went away or stopped answering: nothing to say.
    Gone,
}

impl Connection {
    async fn run(mut self) {
        let config = &self.state.realtime.config;
        let idle_timeout = config.idle_timeout;
        let mut ping = tokio::time::interval(config.ping_interval);
        ping.tick().await;
        let mut last_heard = Instant::now();
        // One timer for the connection's life, moved by an in-band refresh: not a new one
        // per wakeup.
        let expiry = sleep_until(self.expires_at);
        tokio::pin!(expiry);
        let end = loop {
            if expiry.deadline() != self.expires_at {
                expiry.as_mut().reset(self.expires_at);
            }
            let mailbox = self.registration.mailbox().clone();
            // A ready branch is picked at random: neither a client that never stops sending
            // nor a steady stream of deliveries can hold off the other, a token's expiry or
            // a close (revocation, slow consumer, shutdown).
            let woke = tokio::select! {
                batch = mailbox.take() => Woke::Queued(batch),
                message = self.socket.recv() => Woke::Message(message),
                () = &mut expiry => Woke::Expired,
                _ = ping.tick() => Woke::Ping,
            };
            if !matches!(woke, Woke::Queued(_)) {
                // While the task waited, the hub may have been writing to the socket: take it
                // back, finishing any frame the hub began, before writing anything else.
                if Box::pin(self.claim()).await.is_err() {
                    break End::Gone;
                }
            }
            // Every action below is boxed: the task of an idle connection is then sized for
            // waiting, not for its largest action.
            match woke {
                Woke::Queued(Ok(batch)) => {
                    if Box::pin(self.write(&batch)).await.is_err() {
                        break End::Gone;
                    }
                }
                Woke::Queued(Err(Closed::SlowConsumer)) => {
                    break End::Close(
                        CloseCode::SlowConsumer,
                        "slow consumer: resume from your last seq",
                    );
                }
                Woke::Queued(Err(Closed::Revoked)) => {
                    break End::Close(CloseCode::Unauthorized, "session revoked");
                }
                Woke::Queued(Err(Closed::Shutdown)) => {
                    break End::Close(CloseCode::GoingAway, "server shutting down");
                }
                Woke::Message(message) => {
                    last_heard = Instant::now();
                    match message {
                        Ok(Incoming::Text(text)) => {
                            if let Some(end) = Box::pin(self.on_message(&text)).await {
                                break end;
                            }
                            // A long replay, say: the client's messages (pongs) wait unread
                            // meanwhile, so its silence is counted from now.
                            last_heard = Instant::now();
                        }
                        Ok(Incoming::Binary(_)) => {
                            if Box::pin(self.send_error(ErrorCode::BadMessage, NOT_TEXT))
                                .await
                                .is_err()
                            {
                                break End::Gone;
                            }
                        }
                        Ok(Incoming::Ping(payload)) => {
                            if Box::pin(self.socket.send_pong(&payload)).await.is_err() {
                                break End::Gone;
                            }
                        }
                        Ok(Incoming::Pong) => {}
                        Ok(Incoming::Close(code)) => break End::Closed(code),
                        Err(ReadError::Gone) => break End::Gone,
                        Err(error) => break End::Failed(error),
                    }
                }
                Woke::Expired => break End::Close(CloseCode::Unauthorized, "token expired"),
                Woke::Ping => {
                    if last_heard.elapsed() > idle_timeout {
                        break End::Gone;
                    }
                    if Box::pin(self.socket.send_ping()).await.is_err() {
                        break End::Gone;
                    }
                }
            }
        };
        if matches!(end, End::Gone) {
            return;
        }
        // Bounded: a client that stopped reading (a slow consumer, say) would otherwise
        // hold its task and socket for as long as it keeps its connection open.
        let close = Box::pin(async move {
            // The rest of a frame the hub began goes out before the close frame.
            if self.claim().await.is_err() {
                return;
            }
            match end {
                End::Close(code, reason) => {
                    if let Closing::Broken(error) = self.socket.close(code.value(), reason).await {
                        tracing::debug!(?error, "a client answered a close with a broken frame");
                    }
                }
                End::Closed(code) => self.socket.reply_close(code).await,
                End::Failed(error) => self.socket.fail(error).await,
                End::Gone => {}
            }
        });
        let _ = tokio::time::timeout(idle_timeout, close).await;
    }

    /// Takes the socket back from the hub and writes the rest of any frame it began.
    async fn claim(&mut self) -> std::io::Result<()> {
        match self.registration.mailbox().claim() {
            Some(rest) => self.socket.write(&rest).await,
            None => Ok(()),
        }
    }

    /// Writes a batch, in one write (the socket bounds how long it waits for the peer).
    async fn write(&mut self, batch: &Batch) -> std::io::Result<()> {
        let frames = batch.frames.iter().enumerate().map(|(i, f)| {
            let from = if i == 0 { batch.written } else { 0 };
            &f.ws_frame[from..]
        });
        self.socket.send_frames(frames).await?;
        crate::realtime::frames::record_delivery_lag(&batch.frames, "ws");
        metrics::counter!("tidings_deliveries_written_total", "transport" => "ws")
            .increment(batch.frames.len() as u64);
        Ok(())
    }

    async fn send(&mut self, message: ServerMessage<'_>) -> std::io::Result<()> {
        self.socket.send_text(message.to_json().as_bytes()).await
    }

    async fn send_error(&mut self, code: ErrorCode, message: &str) -> std::io::Result<()> {
        self.send(ServerMessage::Error { code, message }).await
    }

    /// Handles one client message; `Some` ends the connection.
    async fn on_message(&mut self, text: &str) -> Option<End> {
        let message = match serde_json::from_str::<ClientMessage>(text) {
            Ok(message) => message,
            Err(e) => {
                let code = match serde_json::from_str::<Value>(text) {
                    Err(_) => ErrorCode::BadMessage,
                    Ok(v)
                        if v.get("type")
                            .and_then(Value::as_str)
                            .is_some_and(|t| !ClientMessage::TYPES.contains(&t)) =>
                    {
                        ErrorCode::UnknownType
                    }
                    Ok(_) => ErrorCode::BadMessage,
                };
                return self
                    .send_error(code, &e.to_string())
                    .await
                    .err()
                    .map(|_| End::Gone);
            }
        };
        let sent = match message {
            ClientMessage::Ping => self.send(ServerMessage::Pong).await,
            ClientMessage::Ack { seq } => {
                if seq < 1 || seq > self.state.realtime.hub.last_seq() {
                    self.send_error(
                        ErrorCode::BadAck,
                        "an ack names the seq of an event this connection received",
                    )
                    .await
                } else {
                    // Only notifications are pushed: acks of a connection that receives none
                    // (inventory screens, thousands of them) would be writes for nothing.
                    if self.registration.topics().contains(&Topic::Notifications) {
                        self.state.realtime.presence.ack(self.user.id, seq);
                    }
                    Ok(())
                }
            }
            ClientMessage::Subscribe { topics, since } => self.subscribe(&topics, since).await,
            ClientMessage::Unsubscribe { topics } => {
                match parse_topics(topics.iter().map(String::as_str)) {
                    Ok(topics) => {
                        self.registration.unsubscribe(&topics);
                        let now = self.registration.topics();
                        self.send(ServerMessage::Unsubscribed {
                            topics: names(&topics),
                            subscribed: names(&now),
                        })
                        .await
                    }
                    Err(unknown) => self.send_error(ErrorCode::UnknownTopic, &unknown).await,
                }
            }
            ClientMessage::Auth { token } => {
                match authenticate(
                    &self.state.db,
                    &self.state.tokens,
                    &self.state.token_cache,
                    &token,
                )
                .await
                {
                    // What a connection receives follows from its role, fixed when it opened.
                    Ok(fresh) if fresh.id == self.user.id && fresh.role != self.user.role => {
                        return Some(End::Close(
                            CloseCode::Unauthorized,
                            "your role changed: reconnect with this token",
                        ));
                    }
                    Ok(fresh) if fresh.id == self.user.id => {
                        self.expires_at = expiry(fresh.expires_at);
                        self.registration.set_token_version(fresh.token_version);
                        self.user = fresh;
                        let expires_at = self.user.expires_at;
                        self.send(ServerMessage::Authenticated { expires_at }).await
                    }
                    Ok(_) => {
                        return Some(End::Close(
                            CloseCode::PolicyViolation,
                            "a connection cannot change its user",
                        ));
                    }
                    Err(_) => {
                        self.send_error(
                            ErrorCode::InvalidToken,
                            "the token is not valid; the connection keeps its current one",
                        )
                        .await
                    }
                }
            }
        };
        sent.err().map(|_| End::Gone)
    }

    /// Starts live delivery of topics, replaying what the client missed since `since`.
    async fn subscribe(&mut self, topics: &[String], since: Option<i64>) -> std::io::Result<()> {
        let topics = match parse_topics(topics.iter().map(String::as_str)) {
            Ok(topics) if !topics.is_empty() => topics,
            Ok(_) => {
                return self
                    .send_error(ErrorCode::BadMessage, "topics must name at least one topic")
                    .await;
            }
            Err(unknown) => return self.send_error(ErrorCode::UnknownTopic, &unknown).await,
        };
        if since.is_some_and(|s| s < 0) {
            return self
                .send_error(
                    ErrorCode::BadSince,
                    "since must be a seq you received (0 or more)",
                )
                .await;
        }
        let already = self.registration.topics();
        let new: Vec<Topic> = topics
            .iter()
            .copied()
            .filter(|t| !already.contains(t))
            .collect();
        let live_from = self.registration.subscribe(&new);
        if let Some(since) = since.filter(|_| !new.is_empty()) {
            match replay::plan(&self.state.db, since, live_from).await {
                Ok(Resume::Reset) => {
                    self.send(ServerMessage::Reset {
                        topics: names(&new),
                    })
                    .await?
                }
                Ok(Resume::From(since)) => {
                    if since > live_from {
                        for topic in &new {
                            self.registration.mailbox().skip_through(*topic, since);
                        }
                    }
                    // A socket that failed (mid-frame, perhaps) takes nothing more.
                    if let Err(e) = self.replay(&new, since, live_from).await? {
                        tracing::warn!(error = %e, "replay failed");
                        // Not subscribed, so that subscribing again replays again.
                        self.registration.unsubscribe(&new);
                        return self
                            .send_error(
                                ErrorCode::ReplayFailed,
                                "the missed events could not be read; resubscribe",
                            )
                            .await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "replay planning failed");
                    self.registration.unsubscribe(&new);
                    return self
                        .send_error(
                            ErrorCode::ReplayFailed,
                            "the missed events could not be read; resubscribe",
                        )
                        .await;
                }
            }
        }
        let subscribed = self.registration.topics();
        self.send(ServerMessage::Subscribed {
            topics: names(&subscribed),
            seq: live_from,
            acks: true,
        })
        .await
    }

    /// Sends the events of `topics` in `(since, upto]` this user may receive. The outer
    /// error is the socket's, the inner the database's.
    async fn replay(
        &mut self,
        topics: &[Topic],
        since: i64,
        upto: i64,
    ) -> std::io::Result<Result<(), sqlx::Error>> {
        let mut after = since;
        loop {
            let events = match replay::page(&self.state.db, &self.user, topics, after, upto).await {
                Ok(events) => events,
                Err(e) => return Ok(Err(e)),
            };
            let Some(last) = events.last() else {
                return Ok(Ok(()));
            };
            after = last.seq;
            let full = events.len() as i64 == replay::PAGE;
            let frames: Vec<_> = events.iter().map(PreparedEvent::encode).collect();
            self.socket
                .send_frames(frames.iter().map(|f| &f.ws_frame[..]))
                .await?;
            if !full {
                return Ok(Ok(()));
            }
        }
    }
}

fn names(topics: &[Topic]) -> Vec<&'static str> {
    topics.iter().map(|t| t.as_str()).collect()
}
