//! Liveness and readiness probes.

use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(livez))
        .routes(routes!(readyz))
}

/// The process is up and serving HTTP.
#[utoipa::path(get, path = "/livez", tag = "health",
    responses((status = 200, description = "Up", body = Object, example = json!({"status": "ok"}))))]
pub(super) async fn livez() -> axum::Json<Value> {
    axum::Json(json!({ "status": "ok" }))
}

/// The database answers and is migrated at least as far as this build (further: a newer
/// version rolling out beside it), and the instance is not shutting down (`"status":
/// "draining"`); 503 otherwise.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready, with each check", body = Object),
        (status = 503, description = "Not ready, with each check", body = Object),
    ))]
pub(super) async fn readyz(State(state): State<AppState>) -> (StatusCode, axum::Json<Value>) {
    let database = match state.db.migration_status().await {
        Ok(status) if status.is_ready() => json!({
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
    // Once SIGTERM has begun the drain, a load balancer or orchestrator should send no new
    // clients here: they would be refused with 503.
    let draining = state.realtime.hub.is_closing();
    let ready = database["status"] == "up" && !draining;
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let realtime = &state.realtime;
    // A degraded bus slows delivery (hubs read the database) but loses nothing: still ready.
    let bus = json!({
        "status": if realtime.bus_health.is_up() { "up" } else { "degraded" },
        "kind": realtime.bus_kind,
    });
    let relay = json!({
        "role": if realtime.relay.leader.load(std::sync::atomic::Ordering::Acquire) { "active" } else { "standby" },
        "last_delivered_seq": realtime.hub.last_seq(),
        "connections": realtime.hub.connections(),
    });
    let body = json!({
        "status": if draining { "draining" } else if ready { "ready" } else { "not_ready" },
        "checks": { "database": database, "bus": bus, "relay": relay },
    });
    (code, axum::Json(body))
}
