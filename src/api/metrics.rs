//! `GET /metrics` in the Prometheus text format, and the HTTP metrics middleware.

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::telemetry::prometheus;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// Metrics for Prometheus: live connections, events relayed and delivered, slow consumers,
/// queued bytes, relay and delivery lag, bus state, HTTP requests and latencies.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
async fn metrics(State(state): State<AppState>) -> Response {
    let realtime = &state.realtime;
    let hub = &realtime.hub;
    let mut text = prometheus().render();
    let gauges = [
        (
            "tidings_hub_connections",
            "Live connections on this instance.",
            hub.connections() as f64,
        ),
        (
            "tidings_hub_queue_bytes",
            "Bytes queued for live connections.",
            hub.queued_bytes() as f64,
        ),
        (
            "tidings_hub_last_seq",
            "The last seq this instance delivered.",
            hub.last_seq() as f64,
        ),
        (
            "tidings_bus_up",
            "1 while the bus delivers; 0 while hubs read the database.",
            f64::from(u8::from(realtime.bus_health.is_up())),
        ),
        (
            "tidings_relay_active",
            "1 on the instance that relays.",
            f64::from(u8::from(realtime.relay.leader.load(Ordering::Acquire))),
        ),
    ];
    for (name, help, value) in gauges {
        let _ = write!(
            text,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
        );
    }
    let counters = [
        (
            "tidings_hub_deliveries_total",
            "Events queued to connections.",
            hub.stats.deliveries.load(Ordering::Relaxed),
        ),
        (
            "tidings_hub_events_total",
            "Events routed by this instance's hub.",
            hub.stats.events.load(Ordering::Relaxed),
        ),
        (
            "tidings_hub_slow_consumers_total",
            "Connections closed for overflowing their queue.",
            hub.stats.slow_consumers.load(Ordering::Relaxed),
        ),
        (
            "tidings_hub_catch_up_reads_total",
            "Reads of the database to fill gaps or while the bus is down.",
            hub.stats.catch_up_reads.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, value) in counters {
        let _ = write!(
            text,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
        );
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        text,
    )
        .into_response()
}

/// Counts requests and times them, keyed by the matched route (never the raw path).
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("tidings_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("tidings_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
