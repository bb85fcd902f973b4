//! Liveness and readiness probes.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};

use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
}

/// The process is up and serving HTTP.
async fn livez() -> axum::Json<Value> {
    axum::Json(json!({ "status": "ok" }))
}

/// The database answers and carries this build's schema; 503 otherwise.
async fn readyz(State(state): State<AppState>) -> (StatusCode, axum::Json<Value>) {
    let database = match state.db.migration_status().await {
        Ok(status) if status.is_current() => json!({
            "status": "up",
            "backend": state.db.backend(),
            "migration": status.applied,
        }),
        Ok(status) => json!({
            "status": "down",
            "backend": state.db.backend(),
            "reason": "not migrated to this version",
            "migration": status.applied,
            "expected_migration": status.expected,
        }),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check: the database did not answer");
            json!({ "status": "down", "backend": state.db.backend(), "reason": "unreachable" })
        }
    };
    let ready = database["status"] == "up";
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": { "database": database },
    });
    (code, axum::Json(body))
}
