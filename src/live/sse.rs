//! `GET /v1/events?topics=…`: Server-Sent Events, usable by a plain browser EventSource.
//!
//! The stream starts with a `retry:` hint, replays what the client missed since
//! `Last-Event-ID` (the header, or `last_event_id` in the query, since EventSource sets the
//! header only on its own reconnects), then goes live. It sends a comment as heartbeat,
//! and ends when the token expires, the user's sessions are revoked, the queue overflows
//! or the server shuts down; the browser reconnects with `Last-Event-ID` and misses nothing.
//!
//! A stream opened on a fresh connection (nearly all) gets the socket from the accept
//! loop, and the hub writes live events to it as WebSockets' are, each event one HTTP
//! chunk, while the stream's task waits ([`crate::realtime::mailbox`]); on a connection hyper serves
//! the stream is a response body.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::body::Body;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures::future::Either;
use futures::{FutureExt, StreamExt};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::time::{Instant, Interval, sleep_until};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::tickets::StreamUser;
use crate::error::ProblemDoc;
use crate::events::Topic;
use crate::http::AppState;
use crate::http::extract::{Query, Repeated, at_most_one};
use crate::http::problem::{ApiError, ApiResult};
use crate::net::server::DirectUpgrade;
use crate::net::tcp::{Unwritten, peer_closed, write_all};
use crate::realtime::frames::{Frame, PreparedEvent, chunk_size_line};
use crate::realtime::hub::{Refused, Registration};
use crate::realtime::mailbox::{Batch, Closed, Mailbox};
use crate::realtime::protocol::ServerMessage;
use crate::realtime::replay::{self, Resume};
use crate::realtime::{Transport, parse_topics};
use crate::service::accounts::CurrentUser;

/// Says that this server takes acknowledgements of what a stream delivered.
pub const ACKS_HEADER: HeaderName = HeaderName::from_static("tidings-acks");

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(events))
}

/// The query of an event stream.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamParams {
    /// Comma-separated: orders, inventory, notifications.
    topics: String,
    /// Resume after this seq (as the Last-Event-ID header does).
    last_event_id: Option<String>,
    /// A stream ticket, instead of a bearer token.
    #[allow(dead_code)]
    ticket: Option<String>,
}

/// What a stream asks for: its topics and where to resume. An extractor that runs before
/// [`StreamUser`], so that a request refused for its parameters does not spend its ticket.
struct Asked {
    topics: Vec<Topic>,
    since: Option<i64>,
}

impl FromRequestParts<AppState> for Asked {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let Query(params) = Query::<StreamParams>::from_request_parts(parts, state).await?;
        let headers = &parts.headers;
        let names = params.topics.split(',').map(str::trim);
        let topics = parse_topics(names.filter(|n| !n.is_empty()))
            .map_err(|unknown| ApiError::bad_request("unknown_topic", unknown))?;
        if topics.is_empty() {
            return Err(ApiError::bad_request(
                "unknown_topic",
                "name at least one topic: ?topics=orders,inventory",
            ));
        }
        let bad = || {
            ApiError::bad_request(
                "bad_last_event_id",
                "Last-Event-ID must be a seq this server sent",
            )
        };
        let header = match at_most_one(headers, "last-event-id") {
            Ok(header) => header.map(|v| v.to_str().map_err(|_| bad())).transpose()?,
            Err(Repeated) => {
                return Err(ApiError::bad_request(
                    "ambiguous_last_event_id",
                    "send one Last-Event-ID header",
                ));
            }
        };
        // An empty header is no last id (an EventSource sends none then: WHATWG HTML,
        // "Server-sent events"), so the query's applies.
        let last_event_id = header
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .or(params.last_event_id.as_deref().map(str::trim))
            .filter(|id| !id.is_empty());
        let since = last_event_id
            .map(|id| id.parse::<i64>().ok().filter(|s| *s >= 0).ok_or_else(bad))
            .transpose()?;
        Ok(Asked { topics, since })
    }
}

/// Opens a `text/event-stream` of live events; resume with `Last-Event-ID`.
#[utoipa::path(get, path = "/v1/events", tag = "live", security(("bearer" = [])),
    params(StreamParams, ("last-event-id" = Option<String>, Header, description = "The last seq received")),
    responses(
        (status = 200, description = "The event stream", content_type = "text/event-stream"),
        (status = 400, description = "Missing or unknown topics, or a Last-Event-ID (one at most) that is not a seq", body = ProblemDoc),
        (status = 401, description = "No valid token or ticket", body = ProblemDoc),
        (status = 429, description = "Too many connections for this user", body = ProblemDoc),
        (status = 503, description = "The server is shutting down", body = ProblemDoc),
    ))]
async fn events(
    State(state): State<AppState>,
    Asked { topics, since }: Asked,
    StreamUser(user): StreamUser,
    direct: Option<Extension<DirectUpgrade>>,
) -> ApiResult<Response> {
    let hub = state.realtime.hub.clone();
    let registration = hub
        .connect(
            user.id,
            user.role.is_staff(),
            user.token_version,
            Transport::EventStream,
        )
        .map_err(|refused| match refused {
            Refused::TooMany => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_connections",
                "too many live connections for this user",
            ),
            Refused::ShuttingDown => super::shutting_down(),
            Refused::Revoked => {
                ApiError::unauthorized("session_revoked", "the session was revoked; log in again")
            }
        })?;
    let live_from = registration.subscribe(&topics);
    let resume = match since {
        Some(since) => Some(replay::plan(&state.db, since, live_from).await?),
        None => None,
    };
    let config = &state.realtime.config;
    let mut heartbeat = tokio::time::interval(config.sse_heartbeat);
    heartbeat.reset();
    let expires_at = Instant::now()
        + std::time::Duration::from_secs(
            (user.expires_at - chrono::Utc::now().timestamp()).max(0) as u64
        );
    let stream = Stream {
        state: state.clone(),
        user,
        topics,
        registration,
        phase: Phase::Start { resume, live_from },
        heartbeat,
        expires_at,
        retry_ms: config.sse_retry.as_millis() as u64,
    };
    let body = match direct.and_then(|direct| direct.take()) {
        // The accept loop writes the head and then hands this task the socket.
        Some(socket) => {
            // `then`, not one async block: the task holds the stream once, not once waiting
            // for the socket and again writing to it.
            crate::realtime::spawn_connection(
                &state.realtime.tasks,
                socket.then(move |upgraded| {
                    // Onto the live runtime's reactor, where this task runs.
                    match upgraded
                        .map(|(socket, _)| socket.into_std().and_then(TcpStream::from_std))
                    {
                        Ok(Ok(socket)) => Either::Left(stream.write_to(Arc::new(socket))),
                        _ => Either::Right(std::future::ready(())),
                    }
                }),
            );
            Body::empty()
        }
        // hyper's connection (one that served other requests first): through the body,
        // which counts as a live task until hyper drops it.
        None => {
            let tracked = state.realtime.tasks.token();
            Body::from_stream(stream.into_body().map(move |chunk| {
                let _tracked = &tracked;
                chunk
            }))
        }
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tells nginx not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    // This server takes acknowledgements (`POST /v1/events/ack`), as a WebSocket's
    // `subscribed` says with `"acks": true`.
    headers.insert(ACKS_HEADER, HeaderValue::from_static("true"));
    Ok(response)
}

enum Phase {
    Start {
        resume: Option<Resume>,
        live_from: i64,
    },
    Replaying {
        after: i64,
        upto: i64,
    },
    Live,
    Ended,
}

struct Stream {
    state: AppState,
    user: CurrentUser,
    topics: Vec<Topic>,
    registration: Registration,
    phase: Phase,
    heartbeat: Interval,
    expires_at: Instant,
    retry_ms: u64,
}

/// What a stream sends next.
enum Out {
    /// Text of the stream's own: the `retry:` hint, a replay page, a comment.
    Text(Bytes),
    /// Live events taken from the mailbox; the hub may have begun writing the first.
    Events(Batch),
}

impl Stream {
    /// The stream's output, to be polled with `next`: unlike [`Self::next`] itself, a
    /// poll of it can be dropped (for the client going away, say) without losing a step.
    fn outputs(self) -> impl futures::Stream<Item = Out> + Send {
        futures::stream::unfold(self, |mut stream| async move {
            let out = stream.next().await?;
            Some((out, stream))
        })
    }

    /// The stream as a response body, for a connection hyper serves: events are written
    /// by the body's task (the hub never has this socket, so none is begun).
    fn into_body(self) -> impl futures::Stream<Item = Result<Bytes, Infallible>> + Send {
        self.outputs().map(|out| {
            Ok(match out {
                Out::Text(text) => text,
                Out::Events(batch) => {
                    let mut chunk = BytesMut::new();
                    for frame in &batch.frames {
                        chunk.extend_from_slice(&frame.sse);
                    }
                    written(batch.frames.iter());
                    chunk.freeze()
                }
            })
        })
    }

    /// Serves the stream on a socket of its own, which the hub writes events to while
    /// this task waits: the body is chunked, each event one chunk.
    ///
    /// Not an `async fn`: its state would keep the stream twice, as the argument and as
    /// its outputs. The outputs are boxed, as a body is, so that the task holds them once.
    fn write_to(self, socket: Arc<TcpStream>) -> impl Future<Output = ()> + Send {
        let mailbox = self.registration.mailbox().clone();
        mailbox.write_directly_to(socket.clone(), Transport::EventStream);
        let limit = self.state.realtime.config.write_timeout;
        write_outputs(Box::pin(self.outputs()), socket, mailbox, limit)
    }

    /// What to send next; `None` ends the stream. Not cancel-safe: see [`Self::outputs`].
    async fn next(&mut self) -> Option<Out> {
        loop {
            match std::mem::replace(&mut self.phase, Phase::Live) {
                Phase::Ended => {
                    self.phase = Phase::Ended;
                    return None;
                }
                Phase::Start { resume, live_from } => {
                    let mut chunk = format!("retry: {}\n\n", self.retry_ms);
                    match resume {
                        None => {}
                        Some(Resume::Reset) => {
                            let topics = self.topics.iter().map(|t| t.as_str()).collect();
                            let data = ServerMessage::Reset { topics }.to_json();
                            // The id moves the browser's Last-Event-ID past the gap.
                            chunk.push_str(&format!(
                                "id: {live_from}\nevent: reset\ndata: {data}\n\n"
                            ));
                        }
                        Some(Resume::From(since)) if since > live_from => {
                            // The client was ahead of this hub: live events up to `since`
                            // were already sent.
                            let mailbox = self.registration.mailbox();
                            for topic in &self.topics {
                                mailbox.skip_through(*topic, since);
                            }
                        }
                        Some(Resume::From(since)) => {
                            self.phase = Phase::Replaying {
                                after: since,
                                upto: live_from,
                            }
                        }
                    }
                    return Some(Out::Text(Bytes::from(chunk)));
                }
                Phase::Replaying { after, upto } => {
                    // Boxed, so that an idle stream's state is not sized for the query.
                    let events = match Box::pin(replay::page(
                        &self.state.db,
                        &self.user,
                        &self.topics,
                        after,
                        upto,
                    ))
                    .await
                    {
                        Ok(events) => events,
                        Err(e) => {
                            tracing::warn!(error = %e, "SSE replay failed; ending the stream so the client resumes");
                            self.phase = Phase::Ended;
                            return None;
                        }
                    };
                    let Some(last) = events.last().map(|e| e.seq) else {
                        continue;
                    };
                    if events.len() as i64 == replay::PAGE {
                        self.phase = Phase::Replaying { after: last, upto };
                    }
                    let mut chunk = BytesMut::new();
                    for event in &events {
                        chunk.extend_from_slice(&PreparedEvent::encode(event).sse);
                    }
                    return Some(Out::Text(chunk.freeze()));
                }
                Phase::Live => {
                    let mailbox = self.registration.mailbox().clone();
                    tokio::select! {
                        taken = mailbox.take() => match taken {
                            Ok(batch) => {
                                if batch.frames.is_empty() {
                                    continue;
                                }
                                return Some(Out::Events(batch));
                            }
                            Err(reason) => {
                                self.phase = Phase::Ended;
                                let why = match reason {
                                    Closed::SlowConsumer => "slow consumer: reconnect with Last-Event-ID",
                                    Closed::Revoked => "session revoked",
                                    Closed::Shutdown => "server shutting down",
                                };
                                return Some(Out::Text(Bytes::from(format!(": {why}\n\n"))));
                            }
                        },
                        _ = self.heartbeat.tick() => return Some(Out::Text(Bytes::from_static(b": keep-alive\n\n"))),
                        () = sleep_until(self.expires_at) => {
                            self.phase = Phase::Ended;
                            return Some(Out::Text(Bytes::from_static(b": token expired\n\n")));
                        }
                    }
                }
            }
        }
    }
}

/// The loop of [`Stream::write_to`].
async fn write_outputs(
    mut outputs: Pin<Box<impl futures::Stream<Item = Out> + Send>>,
    socket: Arc<TcpStream>,
    mailbox: Arc<Mailbox>,
    limit: Duration,
) {
    loop {
        let next = tokio::select! {
            next = outputs.next() => next,
            gone = peer_closed(&socket) => if gone { return } else { continue },
        };
        let write = async {
            match next {
                Some(Out::Events(mut batch)) => {
                    let at = Unwritten {
                        index: 0,
                        offset: batch.written,
                    };
                    let frames = batch.frames.make_contiguous();
                    write_all(&socket, frames, |f| &f.sse_chunk, at).await?;
                    written(frames.iter());
                    Ok(true)
                }
                Some(Out::Text(text)) => {
                    // While the task waited, the hub may have been writing to the
                    // socket: take it back, finishing any event the hub began.
                    let rest = mailbox.claim().unwrap_or_default();
                    let size = Bytes::from(chunk_size_line(text.len()));
                    let chunks = [rest, size, text, Bytes::from_static(b"\r\n")];
                    write_all(&socket, &chunks, |c| c, Unwritten::default()).await?;
                    Ok(true)
                }
                None => {
                    let rest = mailbox.claim().unwrap_or_default();
                    let chunks = [rest, Bytes::from_static(b"0\r\n\r\n")];
                    write_all(&socket, &chunks, |c| c, Unwritten::default()).await?;
                    socket_shutdown(&socket);
                    Ok::<_, std::io::Error>(false)
                }
            }
        };
        // A client that stopped reading: the queue limit closes a slow consumer; this
        // frees a connection whose peer vanished or keeps its window shut.
        match tokio::time::timeout(limit, write).await {
            Ok(Ok(true)) => {}
            _ => return,
        }
    }
}

/// Counts live events written by a stream's task.
fn written<'a>(frames: impl ExactSizeIterator<Item = &'a Frame>) {
    metrics::counter!("tidings_deliveries_written_total", "transport" => "sse")
        .increment(frames.len() as u64);
    crate::realtime::frames::record_delivery_lag(frames, "sse");
}

/// Shuts down the writing side: the client sees the stream end.
fn socket_shutdown(socket: &TcpStream) {
    let _ = socket2::SockRef::from(socket).shutdown(std::net::Shutdown::Write);
}
