//! `GET /v1/ws/echo`: a WebSocket that sends every message back, for conformance tests
//! only (the Autobahn|Testsuite run of `.ci/autobahn/`), whose cases need a peer that
//! echoes. It exists only when `TIDINGS_WS_ECHO` is on. It takes no token and never
//! reaches the hub, but opens the way `/v1/ws` does (the accept loop's own path or
//! hyper's) and speaks through the same [`crate::net::wire::Socket`], so what the suite checks
//! is the framing `/v1/ws` uses.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::FutureExt;

use super::ws::{WebSocket, handshake, take_connection};
use crate::http::AppState;
use crate::net::wire::{Incoming, ReadError};

/// Upgrades to an echoing WebSocket, when echo mode is on; otherwise the route is not
/// there (404).
pub async fn upgrade(State(state): State<AppState>, mut request: Request) -> Response {
    if !state.config.ws_echo {
        // Bodiless, so that it gets the same problem as any path no route matches.
        return StatusCode::NOT_FOUND.into_response();
    }
    let accept = match handshake(request.method(), request.headers()) {
        Ok(accept) => accept,
        Err(refused) => return refused.into_response(),
    };
    let (switching, socket) = match take_connection(&state, &mut request, accept) {
        Ok(taken) => taken,
        Err(e) => return e.into_response(),
    };
    let idle = state.realtime.config.idle_timeout;
    crate::realtime::spawn_connection(
        &state.realtime.tasks,
        socket.then(move |socket| async move {
            if let Some((socket, _)) = socket {
                echo(socket, idle).await;
            }
        }),
    );
    switching
}

/// Sends back each text and binary message, answers pings, and closes as the client asks
/// or as its errors call for; a client silent for `idle` is let go.
async fn echo(mut socket: WebSocket, idle: Duration) {
    loop {
        let Ok(message) = tokio::time::timeout(idle, socket.recv()).await else {
            return;
        };
        let sent = match message {
            Ok(Incoming::Text(text)) => socket.send_text(text.as_bytes()).await,
            Ok(Incoming::Binary(bytes)) => socket.send_binary(&bytes).await,
            Ok(Incoming::Ping(payload)) => socket.send_pong(&payload).await,
            Ok(Incoming::Pong) => Ok(()),
            Ok(Incoming::Close(code)) => return socket.reply_close(code).await,
            Err(ReadError::Gone) => return,
            Err(error) => return socket.fail(error).await,
        };
        if sent.is_err() {
            return;
        }
    }
}
