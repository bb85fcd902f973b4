//! Liveness and readiness.

use reqwest::StatusCode;
use serde_json::Value;

use crate::backend_tests;
use crate::helpers::{Backend, TestApp};

backend_tests!(
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
