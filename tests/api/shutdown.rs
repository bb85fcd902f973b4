//! Shutting down: `run_until_stopped` returns only once every live connection, on either
//! socket path, has been told so and has ended.

use tidings::domain::Role;
use tokio::net::TcpStream;

use crate::backend_tests;
use crate::helpers::{Backend, TestApp};

backend_tests!(shutdown_returns_only_after_every_live_connection_has_closed);

async fn shutdown_returns_only_after_every_live_connection_has_closed(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let token = &staff.access_token;
    // Both socket paths of each transport: a fresh connection the accept loop answers,
    // and one that served a request first, which hyper upgrades or streams a body on.
    let mut websockets = Vec::new();
    for _ in 0..3 {
        websockets.push(app.ws(token).await);
    }
    for _ in 0..2 {
        websockets.push(app.ws_after_a_request(token).await);
    }
    for ws in &mut websockets {
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
    assert_eq!(live.hub.connections(), websockets.len() + streams.len());

    let mut shutting_down = tokio::spawn(async move {
        app.shut_down().await;
        app
    });

    // tungstenite answers a Close on the read after the one that returned it: until the
    // clients read again, the server's side of each closing handshake is still open.
    for ws in &mut websockets {
        assert_eq!(ws.close_code().await, Some(1001), "Going Away");
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
    for ws in websockets {
        ws.answer_close().await;
    }
    let app = (&mut shutting_down).await.expect("the shutdown");

    assert!(
        live.tasks.is_empty(),
        "no live connection's task outlives shutdown"
    );
    assert_eq!(live.hub.connections(), 0);
    drop(app);
}
