//! Liveness and readiness.

use reqwest::StatusCode;
use serde_json::Value;

use crate::backend_tests;
use crate::helpers::{Backend, METRICS_TOKEN, TestApp, problem};

backend_tests!(
    metrics_report_live_delivery_and_http_requests,
    the_admin_listener_serves_metrics_and_probes_and_the_public_port_no_metrics,
    a_metrics_token_is_required_wherever_metrics_are_served,
    without_an_admin_listener_or_a_token_metrics_are_not_served,
    livez_answers_while_the_process_runs,
    readyz_reports_a_migrated_database,
    a_schema_migrated_further_by_a_newer_version_keeps_this_one_ready_and_starting,
    readyz_is_503_once_the_database_is_gone
);

/// `GET path` at `addr`, with `token` as a bearer.
async fn get_at(
    app: &TestApp,
    addr: std::net::SocketAddr,
    path: &str,
    token: Option<&str>,
) -> reqwest::Response {
    let mut request = app.client.get(format!("http://{addr}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn the_admin_listener_serves_metrics_and_probes_and_the_public_port_no_metrics(
    backend: Backend,
) {
    let mut app = TestApp::spawn_with(backend, |config| {
        config.admin_listen = Some("127.0.0.1:0".parse().unwrap());
        config.metrics_token = None;
    })
    .await;
    let admin = app.admin.expect("an admin listener");
    assert_ne!(admin, app.addr);

    let response = get_at(&app, admin, "/metrics", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("tidings_hub_connections "),
        "Prometheus text"
    );
    for probe in ["/livez", "/readyz"] {
        assert_eq!(
            get_at(&app, admin, probe, None).await.status(),
            StatusCode::OK,
            "{probe}"
        );
    }
    let elsewhere = get_at(&app, admin, "/v1/products", None).await;
    assert_eq!(elsewhere.status(), StatusCode::NOT_FOUND);
    assert_eq!(problem(elsewhere).await["code"], "not_found");

    // On the public port the path is not there, as any path no route matches.
    let public = app.get("/metrics", None).await;
    assert_eq!(public.status(), StatusCode::NOT_FOUND);
    assert_eq!(problem(public).await["code"], "not_found");
    assert_eq!(app.get("/readyz", None).await.status(), StatusCode::OK);

    // The admin listener stops with the application.
    app.shut_down().await;
    assert!(tokio::net::TcpStream::connect(admin).await.is_err());
}

async fn a_metrics_token_is_required_wherever_metrics_are_served(backend: Backend) {
    // The test apps have a token and no admin listener: metrics on the public port.
    let app = TestApp::spawn(backend.clone()).await;
    let admin = TestApp::spawn_with(backend, |config| {
        config.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let admin_addr = admin.admin.expect("an admin listener");

    for (app, addr) in [(&app, app.addr), (&admin, admin_addr)] {
        let missing = get_at(app, addr, "/metrics", None).await;
        assert_eq!(missing.status(), StatusCode::UNAUTHORIZED, "{addr}");
        assert_eq!(missing.headers()["www-authenticate"], "Bearer");
        assert_eq!(problem(missing).await["code"], "missing_token");

        let wrong = get_at(app, addr, "/metrics", Some("test-metrics-token-0123456788")).await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "{addr}");
        assert_eq!(problem(wrong).await["code"], "invalid_token");

        let basic = app
            .client
            .get(format!("http://{addr}/metrics"))
            .basic_auth("prometheus", Some(METRICS_TOKEN))
            .send()
            .await
            .unwrap();
        assert_eq!(basic.status(), StatusCode::UNAUTHORIZED, "{addr}");

        let right = get_at(app, addr, "/metrics", Some(METRICS_TOKEN)).await;
        assert_eq!(right.status(), StatusCode::OK, "{addr}");
        assert!(
            right
                .text()
                .await
                .unwrap()
                .contains("tidings_hub_connections ")
        );
    }
    // With an admin listener, not on the public port even with the token.
    let public = admin.metrics().await;
    assert_eq!(public.status(), StatusCode::NOT_FOUND);
}

async fn without_an_admin_listener_or_a_token_metrics_are_not_served(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| config.metrics_token = None).await;
    assert_eq!(app.admin, None);

    for token in [None, Some(METRICS_TOKEN)] {
        let response = app.get("/metrics", token).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(problem(response).await["code"], "not_found");
    }
}

async fn livez_answers_while_the_process_runs(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let response = app.get("/livez", None).await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok");
}

async fn readyz_reports_a_migrated_database(backend: Backend) {
    let expected = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres(_) => "postgres",
    };
    let app = TestApp::spawn(backend).await;

    let response = app.get("/readyz", None).await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["database"]["status"], "up");
    assert_eq!(body["checks"]["database"]["backend"], expected);
    assert!(body["checks"]["database"]["migration"].as_i64().unwrap() >= 1);
}

/// A rolling upgrade: the first new instance has migrated the database further than this
/// build knows. This version stays ready (or a proxy that follows readiness would take every
/// old instance out at once), and one started now (a restart, a rollback) starts.
async fn a_schema_migrated_further_by_a_newer_version_keeps_this_one_ready_and_starting(
    backend: Backend,
) {
    use tidings::store::Db;
    let app = TestApp::spawn(backend).await;
    let ours: Value = app.get_json("/readyz", None).await;
    let ours = ours["checks"]["database"]["migration"].as_i64().unwrap();
    let newer = "insert into _sqlx_migrations (version, description, success, checksum, execution_time) \
                 values ($1, 'a newer version', $2, $3, 0)";
    let (version, checksum) = (ours + 1, vec![0u8; 48]);
    match &app.state.db {
        Db::Postgres(pool, _) => sqlx::query(newer)
            .bind(version)
            .bind(true)
            .bind(checksum)
            .execute(pool)
            .await
            .map(drop),
        Db::Sqlite(pool, _) => sqlx::query(newer)
            .bind(version)
            .bind(true)
            .bind(checksum)
            .execute(pool)
            .await
            .map(drop),
    }
    .expect("a newer version's migration recorded");

    let ready: Value = app.get_json("/readyz", None).await;
    assert_eq!(ready["checks"]["database"]["status"], "up", "{ready}");
    assert_eq!(ready["checks"]["database"]["migration"], version);
    // Another instance of this build starts on it (it migrates at start), and is ready.
    let again = app.another_instance().await;
    let ready: Value = again.get_json("/readyz", None).await;
    assert_eq!(ready["status"], "ready", "{ready}");
}

async fn readyz_is_503_once_the_database_is_gone(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // Closing the pool is what a lost database looks like from the app: no connection.
    // The pool is marked closed when `close` is first polled; awaiting it would wait for
    // the connections the relay and the bus hold for the life of the app (on PostgreSQL).
    let _ = futures::FutureExt::now_or_never(app.state.db.close());

    let response = app.get("/readyz", None).await;

    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["checks"]["database"]["status"], "down");
    assert_eq!(app.get("/livez", None).await.status(), StatusCode::OK);
}

async fn metrics_report_live_delivery_and_http_requests(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app
        .user_with_role("staff@example.com", tidings::domain::Role::Staff)
        .await;
    let mut ws = app.ws(&staff.access_token).await;
    ws.subscribe(&["inventory"], None).await;
    let mut sse = app.sse(&staff.access_token, "inventory", None).await;
    app.product(&staff.access_token, "TEE", 100, 5).await;
    ws.next_event().await;
    sse.next().await.unwrap();

    let response = app.metrics().await;

    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    // The hub counts deliveries just after it writes them.
    let text = metrics_once(&app, |text| {
        metric(text, "tidings_hub_deliveries_total") >= 2.0
    })
    .await;
    let value = |name: &str| metric(&text, name);
    assert_eq!(value("tidings_hub_connections"), 2.0);
    assert_eq!(value(r#"tidings_connections{transport="ws"}"#), 1.0);
    assert_eq!(value(r#"tidings_connections{transport="sse"}"#), 1.0);
    assert!(value("tidings_hub_last_seq") >= 1.0);
    assert_eq!(value("tidings_relay_active"), 1.0);
    assert_eq!(value("tidings_bus_up"), 1.0);
    // The process's own, as `tidings-loadtest --metrics-url` reads them.
    assert!(value("process_resident_memory_bytes") > 1_000_000.0);
    assert!(value("process_cpu_seconds_total") > 0.0);
    for name in [
        "tidings_http_requests_total{",
        "tidings_http_request_duration_seconds_bucket{",
        "tidings_events_relayed_total",
        "tidings_relay_batches_total",
        "tidings_relay_lag_seconds_bucket",
        "tidings_delivery_lag_seconds_bucket{",
        "tidings_hub_slow_consumers_total",
    ] {
        assert!(text.contains(name), "{name} is missing");
    }
    assert!(
        text.contains(r#"route="/v1/products""#),
        "requests are keyed by route"
    );

    // Clients that go away are counted out, whichever way they leave.
    drop((ws, sse));
    let gone = |text: &str| {
        [
            "tidings_hub_connections",
            r#"tidings_connections{transport="ws"}"#,
            r#"tidings_connections{transport="sse"}"#,
        ]
        .iter()
        .all(|name| metric(text, name) == 0.0)
    };
    metrics_once(&app, gone).await;
}

/// `/metrics` once `ready` holds of it. Nothing tells a client when the server has
/// counted what it did or seen a client go: ask again shortly, for at most `PATIENCE`.
async fn metrics_once(app: &TestApp, ready: impl Fn(&str) -> bool) -> String {
    crate::clients::eventually(crate::clients::PATIENCE, || async {
        let text = app.metrics().await.text().await.unwrap();
        if ready(&text) {
            Ok(text)
        } else {
            Err(format!("\n{text}"))
        }
    })
    .await
}

/// The value of the metric line `name` (with its labels, if any) in `text`.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} is missing"))
}
