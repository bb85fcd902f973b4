//! Shutting down: `run_until_stopped` returns only once every live connection, on either
//! socket path, has been told so and has ended.

use std::time::Duration;

use reqwest::StatusCode;
use tidings::domain::Role;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::backend_tests;
use crate::helpers::{Backend, TestApp};

backend_tests!(
    shutdown_returns_only_after_every_live_connection_has_closed,
    a_draining_instance_is_not_ready_and_refuses_new_streams_before_answering_them
);

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

/// While it drains, an instance says it is not ready, and answers a new WebSocket or event
/// stream with a 503 problem before switching or streaming anything, which a proxy in
/// front (nginx's `proxy_next_upstream http_503`) passes to another instance. REST goes on.
async fn a_draining_instance_is_not_ready_and_refuses_new_streams_before_answering_them(
    backend: Backend,
) {
    // One connection per batch, and time between batches to look at the drain.
    let mut app = TestApp::spawn_with(backend, |c| {
        c.drain_batch = 1;
        c.drain_pause = Duration::from_secs(2);
    })
    .await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let token = staff.access_token.clone();
    let mut first = app.ws(&token).await;
    let mut second = app.ws(&token).await;
    first.subscribe(&["inventory"], None).await;
    second.subscribe(&["inventory"], None).await;
    let addr = app.addr;
    let ready: serde_json::Value = app.get_json("/readyz", None).await;
    assert_eq!(ready["status"], "ready");

    let shutting_down = tokio::spawn(async move {
        app.shut_down().await;
        app
    });
    // The first batch is closed (either connection: the hub drains in no set order): the
    // drain has begun, and the other waits its turn.
    let (first_closed, code) = tokio::select! {
        code = first.close_code() => (true, code),
        code = second.close_code() => (false, code),
    };
    assert_eq!(code, Some(1001), "Going Away");
    let (closed, mut open) = if first_closed {
        (first, second)
    } else {
        (second, first)
    };
    closed.answer_close().await;

    let client = reqwest::Client::new();
    let url = |path: &str| format!("http://{addr}{path}");
    let readyz = client.get(url("/readyz")).send().await.unwrap();
    assert_eq!(readyz.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = readyz.json().await.unwrap();
    assert_eq!(body["status"], "draining", "{body}");
    assert_eq!(body["checks"]["database"]["status"], "up", "{body}");

    let mut request = format!("ws://{addr}/v1/ws").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(WsError::Http(response)) => {
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            let body: serde_json::Value =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(body["code"], "shutting_down", "{body}");
        }
        Ok(_) => panic!("a WebSocket was switched during the drain"),
        Err(e) => panic!("expected a 503 answer, got {e}"),
    }
    let sse = client
        .get(url("/v1/events?topics=inventory"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(crate::helpers::problem(sse).await["code"], "shutting_down");
    let livez = client.get(url("/livez")).send().await.unwrap();
    assert_eq!(livez.status(), StatusCode::OK, "REST is still served");

    assert_eq!(open.close_code().await, Some(1001), "Going Away");
    open.answer_close().await;
    drop(shutting_down.await.expect("the shutdown"));
}
