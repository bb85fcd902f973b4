//! `GET /v1/ws`: the WebSocket endpoint and its JSON protocol (DESIGN.md).
//!
//! One task per connection owns the socket: it writes what the hub queued (all of it at
//! once, flushed in one write), reads client messages, pings, and closes the connection
//! when the token expires, the user's sessions are revoked, the queue overflows or the
//! server shuts down, each with its close code.

use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures::SinkExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::{Instant, sleep_until};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::StreamUser;
use super::frames::PreparedEvent;
use super::hub::{Refused, Registration};
use super::mailbox::Closed;
use super::replay::{self, Resume};
use crate::AppState;
use crate::auth::{CurrentUser, authenticate};
use crate::error::{ApiError, ProblemDoc};
use crate::events::Topic;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(upgrade))
}

/// Close codes (DESIGN.md).
mod code {
    pub const GOING_AWAY: u16 = 1001;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const UNAUTHORIZED: u16 = 4001;
    pub const SLOW_CONSUMER: u16 = 4008;
    pub const TOO_MANY: u16 = 4029;
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
    ))]
async fn upgrade(
    State(state): State<AppState>,
    StreamUser(user): StreamUser,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let ws = ws.map_err(|e| ApiError::bad_request("not_a_websocket", e.body_text()))?;
    let limit = state.realtime.config.max_message_bytes;
    Ok(ws
        .max_message_size(limit)
        .max_frame_size(limit)
        // Client messages are small; a small read buffer keeps idle connections light.
        .read_buffer_size(2048)
        // Frames are fed into this buffer and written with one flush per batch. At 0,
        // tungstenite writes every frame eagerly: one system call per event.
        .write_buffer_size(16 * 1024)
        .on_upgrade(move |socket| serve(state, user, socket)))
}

/// What a client may send.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientMessage {
    Subscribe {
        topics: Vec<String>,
        #[serde(default)]
        since: Option<i64>,
    },
    Unsubscribe {
        topics: Vec<String>,
    },
    Auth {
        token: String,
    },
    Ping,
}

struct Connection {
    state: AppState,
    user: CurrentUser,
    registration: Registration,
    socket: WebSocket,
    /// Per subscribable topic: live events up to this seq were already sent (a client that
    /// resumed from a seq this instance's hub had not reached yet).
    skip_through: [i64; Topic::SUBSCRIBABLE.len()],
    expires_at: Instant,
}

fn slot(topic: Topic) -> usize {
    Topic::SUBSCRIBABLE
        .iter()
        .position(|t| *t == topic)
        .unwrap_or(0)
}

fn expiry(exp: i64) -> Instant {
    let left = exp - chrono::Utc::now().timestamp();
    Instant::now() + Duration::from_secs(left.max(0) as u64)
}

async fn close(mut socket: WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

async fn serve(state: AppState, user: CurrentUser, socket: WebSocket) {
    let hub = state.realtime.hub.clone();
    let registration = match hub.connect(user.id, user.role.is_staff(), user.token_version) {
        Ok(registration) => registration,
        Err(Refused::TooMany) => {
            return close(socket, code::TOO_MANY, "too many connections for this user").await;
        }
        Err(Refused::ShuttingDown) => {
            return close(socket, code::GOING_AWAY, "server shutting down").await;
        }
    };
    metrics::gauge!("tidings_connections", "transport" => "ws").increment(1.0);
    let expires_at = expiry(user.expires_at);
    let connection = Connection {
        state,
        user,
        registration,
        socket,
        skip_through: [0; 3],
        expires_at,
    };
    connection.run().await;
    metrics::gauge!("tidings_connections", "transport" => "ws").decrement(1.0);
}

/// How a connection ended, for its close frame.
enum End {
    Close(u16, &'static str),
    /// The peer went away or stopped answering: nothing to say.
    Gone,
}

impl Connection {
    async fn run(mut self) {
        let config = self.state.realtime.config.clone();
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
            tokio::select! {
                frames = mailbox.take() => match frames {
                    Ok(frames) => {
                        // A peer that takes no bytes for this long is gone; without the
                        // bound a stalled reader would hold this task forever.
                        match tokio::time::timeout(config.idle_timeout, self.write(&frames)).await {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) | Err(_) => break End::Gone,
                        }
                    }
                    Err(Closed::SlowConsumer) => break End::Close(code::SLOW_CONSUMER, "slow consumer: resume from your last seq"),
                    Err(Closed::Revoked) => break End::Close(code::UNAUTHORIZED, "session revoked"),
                    Err(Closed::Shutdown) => break End::Close(code::GOING_AWAY, "server shutting down"),
                },
                message = self.socket.recv() => {
                    last_heard = Instant::now();
                    match message {
                        Some(Ok(Message::Text(text))) => {
                            if let Some(end) = self.on_message(text.as_str()).await {
                                break end;
                            }
                        }
                        Some(Ok(Message::Binary(_))) => {
                            if self.send_error("bad_message", "messages are JSON text frames").await.is_err() {
                                break End::Gone;
                            }
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                        Some(Ok(Message::Close(_))) | None => break End::Gone,
                        Some(Err(e)) => {
                            // tungstenite's capacity error: "Space limit exceeded: Message too long".
                            let too_big = e.to_string().contains("too long");
                            break if too_big { End::Close(code::TOO_BIG, "message too big") } else { End::Gone };
                        }
                    }
                }
                () = &mut expiry => break End::Close(code::UNAUTHORIZED, "token expired"),
                _ = ping.tick() => {
                    if last_heard.elapsed() > config.idle_timeout {
                        break End::Gone;
                    }
                    if self.socket.send(Message::Ping(Default::default())).await.is_err() {
                        break End::Gone;
                    }
                }
            }
        };
        if let End::Close(code, reason) = end {
            close(self.socket, code, reason).await;
        }
    }

    /// Writes frames as one batch: fed to the sink, flushed once.
    async fn write(
        &mut self,
        frames: &std::collections::VecDeque<std::sync::Arc<PreparedEvent>>,
    ) -> Result<(), axum::Error> {
        let mut wrote = false;
        for frame in frames {
            if frame.seq <= self.skip_through[slot(frame.topic)] {
                continue;
            }
            self.socket.feed(Message::Text(frame.ws.clone())).await?;
            wrote = true;
        }
        if wrote {
            self.socket.flush().await?;
            super::frames::record_delivery_lag(frames, "ws");
            metrics::counter!("tidings_deliveries_written_total", "transport" => "ws")
                .increment(frames.len() as u64);
        }
        Ok(())
    }

    async fn send_json(&mut self, value: Value) -> Result<(), axum::Error> {
        self.socket
            .send(Message::Text(Utf8Bytes::from(value.to_string())))
            .await
    }

    async fn send_error(&mut self, code: &str, message: &str) -> Result<(), axum::Error> {
        self.send_json(json!({"type": "error", "code": code, "message": message}))
            .await
    }

    /// Handles one client message; `Some` ends the connection.
    async fn on_message(&mut self, text: &str) -> Option<End> {
        let message = match serde_json::from_str::<ClientMessage>(text) {
            Ok(message) => message,
            Err(e) => {
                let code = match serde_json::from_str::<Value>(text) {
                    Err(_) => "bad_message",
                    Ok(v)
                        if v.get("type").and_then(Value::as_str).is_some_and(|t| {
                            !["subscribe", "unsubscribe", "auth", "ping"].contains(&t)
                        }) =>
                    {
                        "unknown_type"
                    }
                    Ok(_) => "bad_message",
                };
                return self
                    .send_error(code, &e.to_string())
                    .await
                    .err()
                    .map(|_| End::Gone);
            }
        };
        let sent = match message {
            ClientMessage::Ping => self.send_json(json!({"type": "pong"})).await,
            ClientMessage::Subscribe { topics, since } => self.subscribe(&topics, since).await,
            ClientMessage::Unsubscribe { topics } => match parse_topics(&topics) {
                Ok(topics) => {
                    self.registration.unsubscribe(&topics);
                    let now = self.registration.topics();
                    self.send_json(json!({"type": "unsubscribed", "topics": names(&topics), "subscribed": names(&now)})).await
                }
                Err(unknown) => self.send_error("unknown_topic", &unknown).await,
            },
            ClientMessage::Auth { token } => match authenticate(&self.state, &token).await {
                Ok(fresh) if fresh.id == self.user.id => {
                    self.expires_at = expiry(fresh.expires_at);
                    self.registration.set_token_version(fresh.token_version);
                    self.user = fresh;
                    self.send_json(
                        json!({"type": "authenticated", "expires_at": self.user.expires_at}),
                    )
                    .await
                }
                Ok(_) => {
                    return Some(End::Close(
                        code::POLICY,
                        "a connection cannot change its user",
                    ));
                }
                Err(_) => {
                    self.send_error(
                        "invalid_token",
                        "the token is not valid; the connection keeps its current one",
                    )
                    .await
                }
            },
        };
        sent.err().map(|_| End::Gone)
    }

    /// Starts live delivery of topics, replaying what the client missed since `since`.
    async fn subscribe(
        &mut self,
        topics: &[String],
        since: Option<i64>,
    ) -> Result<(), axum::Error> {
        let topics = match parse_topics(topics) {
            Ok(topics) if !topics.is_empty() => topics,
            Ok(_) => {
                return self
                    .send_error("bad_message", "topics must name at least one topic")
                    .await;
            }
            Err(unknown) => return self.send_error("unknown_topic", &unknown).await,
        };
        if since.is_some_and(|s| s < 0) {
            return self
                .send_error("bad_since", "since must be a seq you received (0 or more)")
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
                    self.send_json(json!({"type": "reset", "topics": names(&new)}))
                        .await?
                }
                Ok(Resume::From(since)) => {
                    if since > live_from {
                        for topic in &new {
                            self.skip_through[slot(*topic)] = since;
                        }
                    }
                    if let Err(e) = self.replay(&new, since, live_from).await {
                        tracing::warn!(error = %e, "replay failed");
                        return self
                            .send_error(
                                "replay_failed",
                                "the missed events could not be read; resubscribe",
                            )
                            .await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "replay planning failed");
                    return self
                        .send_error(
                            "replay_failed",
                            "the missed events could not be read; resubscribe",
                        )
                        .await;
                }
            }
        }
        let subscribed = self.registration.topics();
        self.send_json(
            json!({"type": "subscribed", "topics": names(&subscribed), "seq": live_from}),
        )
        .await
    }

    async fn replay(&mut self, topics: &[Topic], since: i64, upto: i64) -> anyhow::Result<()> {
        let mut after = since;
        loop {
            let events = replay::page(&self.state.db, &self.user, topics, after, upto).await?;
            let Some(last) = events.last() else {
                return Ok(());
            };
            after = last.seq;
            let full = events.len() as i64 == replay::PAGE;
            for event in &events {
                self.socket
                    .feed(Message::Text(PreparedEvent::encode(event).ws.clone()))
                    .await?;
            }
            self.socket.flush().await?;
            if !full {
                return Ok(());
            }
        }
    }
}

fn parse_topics(names: &[String]) -> Result<Vec<Topic>, String> {
    let mut topics = Vec::new();
    for name in names {
        match Topic::subscribable(name) {
            Some(topic) if !topics.contains(&topic) => topics.push(topic),
            Some(_) => {}
            None => {
                return Err(format!(
                    "unknown topic {name:?}; topics are orders, inventory, notifications"
                ));
            }
        }
    }
    Ok(topics)
}

fn names(topics: &[Topic]) -> Vec<&'static str> {
    topics.iter().map(|t| t.as_str()).collect()
}
