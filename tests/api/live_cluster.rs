//! Several instances on one PostgreSQL and one Redis: changes reach every instance, clients
//! move between instances, the relay fails over, Redis goes away and comes back, and
//! instances shut down gracefully.

use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tidings::config::DatabaseUrl;
use tidings::domain::Role;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::clients::seqs;
use crate::helpers::{Backend, TestApp};
use crate::{backend_tests, postgres_tests};

postgres_tests!(
    a_change_through_one_instance_reaches_subscribers_on_another,
    a_commit_on_any_instance_wakes_the_relay_without_its_poll,
    a_client_moving_to_another_instance_resumes_without_loss,
    a_killed_relay_is_replaced_without_losing_or_repeating_an_event,
    events_made_while_redis_is_down_still_arrive_in_order,
    a_foreign_batch_on_the_bus_does_not_stall_delivery,
);

backend_tests!(shutdown_closes_websockets_with_1001_and_ends_sse_streams);

fn id(v: &Value) -> &str {
    v["id"].as_str().unwrap()
}

fn deltas(events: &[Value]) -> Vec<i64> {
    events
        .iter()
        .filter(|e| e["type"] == "inventory.stock_changed")
        .map(|e| e["data"]["delta"].as_i64().unwrap())
        .collect()
}

async fn a_change_through_one_instance_reaches_subscribers_on_another(backend: Backend) {
    let a = TestApp::spawn(backend).await;
    let b = a.another_instance().await;
    let staff = a.user_with_role("staff@example.com", Role::Staff).await;
    let mut on_b = b.ws(&staff.access_token).await;
    on_b.subscribe(&["inventory"], None).await;

    let product = a.product(&staff.access_token, "TEE", 100, 5).await;

    let event = on_b.next_event().await;
    assert_eq!(
        (event["type"].as_str(), event["data"]["id"].as_str()),
        (Some("product.created"), product["id"].as_str())
    );
}

/// The relay is woken by the commits themselves: its own instance's directly, another's by
/// the `NOTIFY` that instance sends after committing. With the polls an hour apart, only
/// those wakes can deliver.
async fn a_commit_on_any_instance_wakes_the_relay_without_its_poll(backend: Backend) {
    let leader = TestApp::spawn_with(backend, |c| c.relay_poll = Duration::from_secs(3600)).await;
    relay_role_becomes(&leader, "active").await;
    let standby = leader.another_instance().await;
    relay_role_becomes(&standby, "standby").await;
    let staff = leader
        .user_with_role("staff@example.com", Role::Staff)
        .await;
    let mut ws = leader.ws(&staff.access_token).await;
    ws.subscribe(&["inventory"], None).await;

    for (round, app) in [&standby, &leader, &standby].into_iter().enumerate() {
        let product = app
            .product(&staff.access_token, &format!("SKU-{round}"), 100, 5)
            .await;
        let event = ws.next_event().await;
        assert_eq!(
            (event["type"].as_str(), event["data"]["id"].as_str()),
            (Some("product.created"), product["id"].as_str()),
            "round {round}"
        );
    }
}

/// Waits until `app` reports `role` for its relay.
async fn relay_role_becomes(app: &TestApp, role: &str) {
    crate::clients::eventually(crate::clients::PATIENCE, || async {
        let ready: Value = app.get("/readyz", None).await.json().await.unwrap();
        match &ready["checks"]["relay"]["role"] {
            seen if seen == role => Ok(()),
            seen => Err(format!("the relay's role stayed {seen}")),
        }
    })
    .await
}

async fn a_client_moving_to_another_instance_resumes_without_loss(backend: Backend) {
    let a = TestApp::spawn(backend).await;
    let b = a.another_instance().await;
    let staff = a.user_with_role("staff@example.com", Role::Staff).await;
    let tee = a.product(&staff.access_token, "TEE", 100, 1000).await;
    let mut on_a = a.ws(&staff.access_token).await;
    on_a.subscribe(&["inventory"], None).await;
    a.adjust_stock(&staff.access_token, id(&tee), 1).await;
    let mut last = on_a.next_event().await;
    while last["type"] != "inventory.stock_changed" {
        last = on_a.next_event().await;
    }
    drop(on_a);

    for delta in 2..=5 {
        a.adjust_stock(&staff.access_token, id(&tee), delta).await;
    }
    let mut on_b = b.ws(&staff.access_token).await;
    let (mut received, _) = on_b.subscribe(&["inventory"], last["seq"].as_i64()).await;
    b.adjust_stock(&staff.access_token, id(&tee), 6).await;
    while deltas(&received).last() != Some(&6) {
        received.push(on_b.next_event().await);
    }

    assert_eq!(deltas(&received), [2, 3, 4, 5, 6]);
    assert!(seqs(&received).windows(2).all(|w| w[0] < w[1]));
}

/// A `tidings serve` process on the same database and bus as `app`.
struct Process {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

async fn serve_like(app: &TestApp) -> Process {
    let dir = tempfile::tempdir().unwrap();
    let DatabaseUrl::Postgres(url) = &app.config.database_url else {
        panic!("PostgreSQL only")
    };
    let mut command = Command::new(env!("CARGO_BIN_EXE_tidings"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", url)
        .env("TIDINGS_JWT_SECRET", "test-secret-".repeat(4))
        .env("TIDINGS_REDIS_CHANNEL", &app.config.redis_channel)
        .env("TIDINGS_DATA_DIR", dir.path())
        .env("TIDINGS_LISTEN", "127.0.0.1:0")
        .env("TIDINGS_LOG_FORMAT", "json")
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(redis) = &app.config.redis_url {
        command.env("REDIS_URL", redis);
    }
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let address = loop {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("the server logs its address");
        if let Some(address) = serde_json::from_str::<Value>(&line)
            .ok()
            .and_then(|e| e["address"].as_str().map(str::to_owned))
        {
            break address;
        }
    };
    // Keep reading, so that a full pipe never blocks the server.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Process {
        child,
        base: format!("http://{address}"),
        _dir: dir,
    }
}

async fn a_killed_relay_is_replaced_without_losing_or_repeating_an_event(backend: Backend) {
    let mut first = TestApp::spawn(backend).await;
    let staff = first.user_with_role("staff@example.com", Role::Staff).await;
    let tee = first.product(&staff.access_token, "TEE", 100, 1000).await;
    // A second instance, as a separate process, takes over the relay when the first stops.
    let mut process = serve_like(&first).await;
    first.shut_down().await;
    let client = reqwest::Client::new();
    let adjust = |base: &str, delta: i64| {
        client
            .post(format!("{base}/v1/products/{}/stock-adjustments", id(&tee)))
            .bearer_auth(&staff.access_token)
            .json(&serde_json::json!({"delta": delta, "reason": "count"}))
            .send()
    };
    // With the first instance gone the process is the only candidate: an event delivered
    // now was relayed by it.
    let ws_url = format!("{}/v1/ws", process.base.replacen("http", "ws", 1));
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(ws_url)
            .unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", staff.access_token).parse().unwrap(),
    );
    let (mut on_process, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    use futures::{SinkExt, StreamExt};
    on_process
        .send(tokio_tungstenite::tungstenite::Message::text(
            r#"{"type":"subscribe","topics":["inventory"]}"#,
        ))
        .await
        .unwrap();
    let _subscribed = on_process.next().await;
    assert_eq!(
        adjust(&process.base, 1).await.unwrap().status(),
        StatusCode::OK
    );
    let relayed = tokio::time::timeout(crate::clients::PATIENCE, on_process.next())
        .await
        .expect("the process relays");
    assert!(relayed.is_some());
    let ready: Value = client
        .get(format!("{}/readyz", process.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ready["checks"]["relay"]["role"], "active",
        "the process relays"
    );
    // Now an instance that can only stand by while the process leads.
    let survivor = first.another_instance().await;
    let mut subscriber = survivor.ws(&staff.access_token).await;
    let (_, from) = subscriber.subscribe(&["inventory"], None).await;
    assert!(from >= 1);
    let mut received = Vec::new();

    // Killed, not stopped: its lock goes with its database session.
    process.child.kill().await.unwrap();
    for delta in 2..=21 {
        assert_eq!(
            survivor
                .adjust_stock(&staff.access_token, id(&tee), delta)
                .await
                .status(),
            StatusCode::OK
        );
    }
    while deltas(&received).last() != Some(&21) {
        received.push(subscriber.next_event().await);
    }

    assert_eq!(
        deltas(&received),
        (2..=21).collect::<Vec<i64>>(),
        "every event once, in order"
    );
    let all_seqs = seqs(&received);
    assert!(
        all_seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "contiguous: {all_seqs:?}"
    );
    let ready: Value = survivor.get("/readyz", None).await.json().await.unwrap();
    assert_eq!(
        ready["checks"]["relay"]["role"], "active",
        "the survivor took over"
    );
}

/// A Redis server of the test's own, which it can stop, start, freeze and thaw.
pub(crate) struct OwnRedis {
    port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    /// A Redis on a free port.
    pub(crate) async fn start() -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        OwnRedis::start_on(port).await
    }

    async fn start_on(port: u16) -> OwnRedis {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server runs");
        let url = format!("redis://127.0.0.1:{port}");
        let client = redis::Client::open(url.as_str()).unwrap();
        for _ in 0..100 {
            if client.get_multiplexed_async_connection().await.is_ok() {
                return OwnRedis {
                    port,
                    child: Some(child),
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not start on {port}");
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the process (SIGSTOP): its connections stay open and nothing answers, as
    /// with a Redis that hangs.
    pub(crate) fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen process go on (SIGCONT).
    pub(crate) fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().and_then(Child::id).expect("running");
        let status = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {pid}");
    }

    async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }
}

async fn events_made_while_redis_is_down_still_arrive_in_order(backend: Backend) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut redis = OwnRedis::start_on(port).await;
    let url = redis.url();
    let app = TestApp::spawn_with(backend, |c| {
        c.redis_url = Some(url);
        // No safety-net polls within the test: the hub must read the database because
        // it saw the bus go down, not because a poll came round.
        c.relay_poll = Duration::from_secs(3600);
    })
    .await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let tee = app.product(&staff.access_token, "TEE", 100, 1000).await;
    let mut ws = app.ws(&staff.access_token).await;
    ws.subscribe(&["inventory"], None).await;
    app.adjust_stock(&staff.access_token, id(&tee), 1).await;
    let mut received = vec![ws.next_event().await];

    redis.stop().await;
    for delta in 2..=6 {
        app.adjust_stock(&staff.access_token, id(&tee), delta).await;
    }
    while deltas(&received).last() != Some(&6) {
        received.push(ws.next_event().await);
    }
    let during: Value = app.get("/readyz", None).await.json().await.unwrap();
    let restarted = OwnRedis::start_on(port).await;
    for delta in 7..=9 {
        app.adjust_stock(&staff.access_token, id(&tee), delta).await;
    }
    while deltas(&received).last() != Some(&9) {
        received.push(ws.next_event().await);
    }

    assert_eq!(deltas(&received), (1..=9).collect::<Vec<i64>>());
    assert!(seqs(&received).windows(2).all(|w| w[0] < w[1]));
    assert_eq!(during["status"], "ready", "a degraded bus is not a failure");
    assert_eq!(during["checks"]["bus"]["kind"], "redis");
    drop(restarted);
}

async fn shutdown_closes_websockets_with_1001_and_ends_sse_streams(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let mut ws = app.ws(&staff.access_token).await;
    ws.subscribe(&["inventory"], None).await;
    let mut sse = app.sse(&staff.access_token, "inventory", None).await;

    let closing = tokio::spawn(async move { ws.close_code().await });
    app.shut_down().await;

    assert_eq!(closing.await.unwrap(), Some(1001));
    assert!(sse.next().await.is_none(), "the SSE stream ended");
}

async fn a_foreign_batch_on_the_bus_does_not_stall_delivery(backend: Backend) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let redis = OwnRedis::start_on(port).await;
    let url = redis.url();
    // On the one channel even under `TEST_BUS_PARTITIONS` (partitions.rs has the
    // partitioned bus's own test).
    let app = TestApp::spawn_with(backend, |c| {
        c.redis_url = Some(url.clone());
        c.bus_partitions = 0;
    })
    .await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let mut ws = app.ws(&staff.access_token).await;
    ws.subscribe(&["inventory"], None).await;

    // Seqs this database never had, as another deployment on the same channel would send.
    let foreign = serde_json::json!([{
        "seq": 999_999, "topic": "inventory", "type": "product.created",
        "audience": {"kind": "everyone"}, "at": "2026-11-22T00:00:00Z", "data": {"id": "elsewhere"}
    }]);
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let receivers: i64 = redis::cmd("PUBLISH")
        .arg(&app.config.redis_channel)
        .arg(foreign.to_string())
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(receivers, 1, "the instance is subscribed");
    let product = app.product(&staff.access_token, "TEE", 100, 5).await;

    let event = ws.next_event().await;
    assert_eq!(
        event["data"]["id"], product["id"],
        "the foreign event is dropped, real ones flow"
    );
    // And the hub is back to the bus, not reading the database in a loop for seqs that
    // will never come.
    let reads = || {
        app.state
            .realtime
            .hub
            .stats
            .catch_up_reads
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let before = reads();
    let second = app.product(&staff.access_token, "MUG", 100, 5).await;
    assert_eq!(ws.next_event().await["data"]["id"], second["id"]);
    assert!(
        reads() - before < 5,
        "{} database reads for one event",
        reads() - before
    );
    drop(redis);
}
