//! Shutting down: `run_until_stopped` returns only once every live connection, on either
//! socket path, has been told so and has ended.

use tidings::domain::Role;
use tokio::net::TcpStream;

use crate::backend_tests;
use crate::helpers::{Backend, TestApp};

backend_tests!(shutdown_returns_only_after_every_live_connection_has_closed);

/// Some WebSocket clients answer the server's Close at once; others say nothing until the
/// shutdown has returned, which it may do only once the server has given up waiting for
/// them (the closing handshake's 5 s), so that no connection's task is left when it does.
async fn shutdown_returns_only_after_every_live_connection_has_closed(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let token = &staff.access_token;
    // Both socket paths of each transport: a fresh connection the accept loop answers,
    // and one that served a request first, which hyper upgrades or streams a body on.
    let mut answering = vec![
        app.ws(token).await,
        app.ws(token).await,
        app.ws_after_a_request(token).await,
    ];
    let mut silent = vec![app.ws(token).await, app.ws_after_a_request(token).await];
    for ws in answering.iter_mut().chain(&mut silent) {
        ws.subscribe(&["inventory"], None).await;
    }
    let mut streams = Vec::new();
    for _ in 0..3 {
        let fresh = TcpStream::connect(app.addr).await.unwrap();
        streams.push(app.raw_sse(fresh, token, "topics=inventory").await);
    }
    for _ in 0..2 {
        streams.push(app.sse_after_a_request(token, "topics=inventory").await);
    }
    let live = app.state.realtime.clone();
    assert_eq!(live.hub.connections(), 10);

    let mut shutting_down = tokio::spawn(async move {
        app.shut_down().await;
        app
    });

    for mut ws in answering {
        assert_eq!(ws.close_code().await, Some(1001), "Going Away");
        ws.answer_close().await;
    }
    for stream in streams {
        let drained = stream.drain().await;
        assert!(drained.ended_cleanly, "the body ended with its last chunk");
        assert_eq!(drained.comments.last().unwrap(), "server shutting down");
    }
    assert!(
        !shutting_down.is_finished(),
        "shutdown returned while WebSocket clients had not answered their Close"
    );
    let app = (&mut shutting_down).await.expect("the shutdown");

    assert!(
        live.tasks.is_empty(),
        "{} live connection tasks outlived the shutdown",
        live.tasks.len()
    );
    assert_eq!(live.hub.connections(), 0);
    // Their Close was written before the shutdown returned.
    for ws in &mut silent {
        assert_eq!(ws.close_code().await, Some(1001), "Going Away");
    }
    drop(app);
}
