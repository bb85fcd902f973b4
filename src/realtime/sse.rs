//! `GET /v1/events?topics=…`: Server-Sent Events, usable by a plain browser EventSource.
//!
//! The stream starts with a `retry:` hint, replays what the client missed since
//! `Last-Event-ID` (the header, or `last_event_id` in the query, since EventSource sets the
//! header only on its own reconnects), then goes live. It sends a comment as heartbeat,
//! and ends when the token expires, the user's sessions are revoked, the queue overflows
//! or the server shuts down; the browser reconnects with `Last-Event-ID` and misses nothing.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use tokio::time::{Instant, Interval, sleep_until};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::StreamUser;
use super::frames::PreparedEvent;
use super::hub::{Refused, Registration};
use super::mailbox::{Batch, Closed};
use super::replay::{self, Resume};
use crate::AppState;
use crate::api::extract::Query;
use crate::auth::CurrentUser;
use crate::error::{ApiError, ApiResult, ProblemDoc};
use crate::events::Topic;

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

/// Opens a `text/event-stream` of live events; resume with `Last-Event-ID`.
#[utoipa::path(get, path = "/v1/events", tag = "live", security(("bearer" = [])),
    params(StreamParams, ("last-event-id" = Option<String>, Header, description = "The last seq received")),
    responses(
        (status = 200, description = "The event stream", content_type = "text/event-stream"),
        (status = 400, description = "Unknown topic or bad Last-Event-ID", body = ProblemDoc),
        (status = 401, description = "No valid token or ticket", body = ProblemDoc),
        (status = 429, description = "Too many connections for this user", body = ProblemDoc),
    ))]
async fn events(
    State(state): State<AppState>,
    StreamUser(user): StreamUser,
    Query(params): Query<StreamParams>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let mut topics = Vec::new();
    for name in params
        .topics
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        let topic = Topic::subscribable(name).ok_or_else(|| {
            ApiError::bad_request(
                "unknown_topic",
                format!("unknown topic {name:?}; topics are orders, inventory, notifications"),
            )
        })?;
        if !topics.contains(&topic) {
            topics.push(topic);
        }
    }
    if topics.is_empty() {
        return Err(ApiError::bad_request(
            "unknown_topic",
            "name at least one topic: ?topics=orders,inventory",
        ));
    }
    let last_event_id = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("?").to_owned())
        .or(params.last_event_id);
    let since = match last_event_id.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(id) => Some(id.parse::<i64>().ok().filter(|s| *s >= 0).ok_or_else(|| {
            ApiError::bad_request(
                "bad_last_event_id",
                "Last-Event-ID must be a seq this server sent",
            )
        })?),
    };
    let hub = state.realtime.hub.clone();
    let registration = hub
        .connect(user.id, user.role.is_staff(), user.token_version)
        .map_err(|refused| match refused {
            Refused::TooMany => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_connections",
                "too many live connections for this user",
            ),
            Refused::ShuttingDown => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "this instance is shutting down",
            ),
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
        registration: Arc::new(registration),
        phase: Phase::Start { resume, live_from },
        heartbeat,
        expires_at,
        retry_ms: config.sse_retry.as_millis() as u64,
    };
    metrics::gauge!("tidings_connections", "transport" => "sse").increment(1.0);
    let body = futures::stream::unfold(stream, |mut stream| async move {
        let chunk = stream.next_chunk().await;
        if chunk.is_none() {
            metrics::gauge!("tidings_connections", "transport" => "sse").decrement(1.0);
        }
        chunk.map(|bytes| (Ok::<Bytes, Infallible>(bytes), stream))
    });
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tells nginx not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
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
    registration: Arc<Registration>,
    phase: Phase,
    heartbeat: Interval,
    expires_at: Instant,
    retry_ms: u64,
}

impl Stream {
    /// The next bytes of the response; `None` ends it.
    async fn next_chunk(&mut self) -> Option<Bytes> {
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
                            let names: Vec<&str> = self.topics.iter().map(|t| t.as_str()).collect();
                            let data = serde_json::json!({"type": "reset", "topics": names});
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
                    return Some(Bytes::from(chunk));
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
                    return Some(chunk.freeze());
                }
                Phase::Live => {
                    let mailbox = self.registration.mailbox().clone();
                    tokio::select! {
                        frames = mailbox.take() => match frames {
                            Ok(Batch { frames, .. }) => {
                                let mut chunk = BytesMut::new();
                                for frame in &frames {
                                    chunk.extend_from_slice(&frame.sse);
                                }
                                if chunk.is_empty() {
                                    continue;
                                }
                                metrics::counter!("tidings_deliveries_written_total", "transport" => "sse").increment(frames.len() as u64);
                                super::frames::record_delivery_lag(&frames, "sse");
                                return Some(chunk.freeze());
                            }
                            Err(reason) => {
                                self.phase = Phase::Ended;
                                let why = match reason {
                                    Closed::SlowConsumer => "slow consumer: reconnect with Last-Event-ID",
                                    Closed::Revoked => "session revoked",
                                    Closed::Shutdown => "server shutting down",
                                };
                                return Some(Bytes::from(format!(": {why}\n\n")));
                            }
                        },
                        _ = self.heartbeat.tick() => return Some(Bytes::from_static(b": keep-alive\n\n")),
                        () = sleep_until(self.expires_at) => {
                            self.phase = Phase::Ended;
                            return Some(Bytes::from_static(b": token expired\n\n"));
                        }
                    }
                }
            }
        }
    }
}
