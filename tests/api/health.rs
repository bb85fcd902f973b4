//! Liveness and readiness.

use reqwest::StatusCode;
use serde_json::Value;

use crate::backend_tests;
use crate::helpers::{Backend, TestApp};

backend_tests!(
    metrics_report_live_delivery_and_http_requests,
    livez_answers_while_the_process_runs,
    readyz_reports_a_migrated_database,
    readyz_is_503_once_the_database_is_gone
);

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

async fn readyz_is_503_once_the_database_is_gone(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // Closing the pool is what a lost database looks like from the app: no connection.
    app.state.db.close().await;

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

    let response = app.get("/metrics", None).await;

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
    let deadline = tokio::time::Instant::now() + crate::clients::PATIENCE;
    loop {
        let text = app.get("/metrics", None).await.text().await.unwrap();
        if ready(&text) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not so in time:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The value of the metric line `name` (with its labels, if any) in `text`.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} is missing"))
}
