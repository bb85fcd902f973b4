//! `GET /metrics` in the Prometheus text format, and the HTTP metrics middleware.
//!
//! Metrics tell whoever reads them how busy the server is and how it is deployed, so they
//! are not public by default: with `TIDINGS_ADMIN_LISTEN` they are served on that address
//! only (see [`crate::api::admin`]); without it, on the public port only to bearers of
//! `TIDINGS_METRICS_TOKEN`; with neither, not at all. Where they are served, a
//! `TIDINGS_METRICS_TOKEN` that is set is required.

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::AppState;
use crate::http::auth::bearer_token;
use crate::http::problem::ApiError;
use crate::realtime::Transport;
use crate::telemetry::prometheus;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// Metrics for Prometheus: live connections, events relayed and delivered, slow consumers,
/// queued bytes, relay and delivery lag, bus state, HTTP requests and latencies.
///
/// Served on this port only when the server has no admin listener
/// (`TIDINGS_ADMIN_LISTEN`) and has a metrics token (`TIDINGS_METRICS_TOKEN`), and then only
/// to a request with `Authorization: Bearer <that token>`; otherwise the path is not
/// there (404).
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain"),
        (status = 400, description = "More than one Authorization header", body = crate::error::ProblemDoc),
        (status = 401, description = "No `Authorization: Bearer` with the metrics token", body = crate::error::ProblemDoc),
        (status = 404, description = "Metrics are not served on this port", body = crate::error::ProblemDoc),
    ))]
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if state.config.admin_listen.is_some() || state.config.metrics_token.is_none() {
        // Bodiless, so that it gets the same problem as any path no route matches.
        return StatusCode::NOT_FOUND.into_response();
    }
    if let Err(refused) = authorize(&state, &headers) {
        return refused.into_response();
    }
    render(&state)
}

/// `GET /metrics` on the admin listener: open to whoever reaches that address, unless a
/// metrics token is set.
pub async fn admin_metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match authorize(&state, &headers) {
        Ok(()) => render(&state),
        Err(refused) => refused.into_response(),
    }
}

/// Passes a request that bears the metrics token, or any request when none is set.
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &state.config.metrics_token else {
        return Ok(());
    };
    let presented = bearer_token(
        headers,
        "metrics need an Authorization: Bearer header with the metrics token",
    )?;
    if token.matches(presented.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::unauthorized(
            "invalid_token",
            "this is not the metrics token",
        ))
    }
}

/// The Prometheus text of this instance.
fn render(state: &AppState) -> Response {
    let realtime = &state.realtime;
    let hub = &realtime.hub;
    let hashes = state.hasher.stats();
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
            "tidings_hub_lanes_followed",
            "Lanes of a partitioned bus (TIDINGS_BUS_PARTITIONS) this instance follows: all, staff, u:{k}; 0 on one channel.",
            hub.lanes_followed() as f64,
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
        (
            "tidings_push_worker_active",
            "1 on the instance that runs the delivery worker.",
            f64::from(u8::from(realtime.push.leader.load(Ordering::Acquire))),
        ),
        (
            "tidings_password_hashes_in_progress",
            "Password hashes and checks (argon2, 19 MiB each) running now.",
            hashes.in_progress.load(Ordering::Relaxed) as f64,
        ),
        (
            "tidings_password_hashes_in_progress_max",
            "The most password hashes that ran at once since the start.",
            hashes.in_progress_max.load(Ordering::Relaxed) as f64,
        ),
    ];
    for (name, help, value) in gauges {
        let _ = write!(
            text,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
        );
    }
    text.push_str(
        "# HELP tidings_connections Live connections on this instance, by transport.\n\
         # TYPE tidings_connections gauge\n",
    );
    for transport in Transport::ALL {
        let _ = writeln!(
            text,
            "tidings_connections{{transport=\"{}\"}} {}",
            transport.label(),
            hub.connections_by(transport)
        );
    }
    text.push_str(
        "# HELP tidings_hub_shard_connections Live connections held by each fan-out shard.\n\
         # TYPE tidings_hub_shard_connections gauge\n",
    );
    for (shard, connections) in hub.connections_per_shard().into_iter().enumerate() {
        let _ = writeln!(
            text,
            "tidings_hub_shard_connections{{shard=\"{shard}\"}} {connections}"
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
        (
            "tidings_hub_user_lane_events_total",
            "Events received on the user lanes of a partitioned bus (TIDINGS_BUS_PARTITIONS).",
            hub.stats.user_lane_events.load(Ordering::Relaxed),
        ),
        (
            "tidings_password_hashes_total",
            "Password hashes and checks done.",
            hashes.total.load(Ordering::Relaxed),
        ),
        (
            "tidings_password_hashes_refused_total",
            "Requests answered 503 for want of a turn to hash within TIDINGS_HASH_QUEUE_TIMEOUT.",
            hashes.refused.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, value) in counters {
        let _ = write!(
            text,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
        );
    }
    if let Some(process) = Process::read() {
        let _ = write!(
            text,
            "# HELP process_resident_memory_bytes Resident memory size in bytes.\n\
             # TYPE process_resident_memory_bytes gauge\n\
             process_resident_memory_bytes {}\n\
             # HELP process_cpu_seconds_total User and system CPU time spent in seconds.\n\
             # TYPE process_cpu_seconds_total counter\n\
             process_cpu_seconds_total {}\n",
            process.resident_bytes, process.cpu_seconds
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

/// The process's own figures, in the standard Prometheus names, so that a load tester (or
/// a dashboard) off the host sees memory and CPU. Linux only; elsewhere they are left out.
struct Process {
    resident_bytes: u64,
    cpu_seconds: f64,
}

impl Process {
    fn read() -> Option<Process> {
        // statm: sizes in pages (4 KiB on the platforms Tidings runs on); the second is
        // resident.
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        // stat: the command name may hold spaces, so count fields after its ')'; utime
        // and stime are the 14th and 15th fields, in USER_HZ ticks (100 on Linux).
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let mut after = stat.get(stat.rfind(')')? + 2..)?.split_whitespace();
        let utime: u64 = after.nth(11)?.parse().ok()?;
        let stime: u64 = after.next()?.parse().ok()?;
        Some(Process {
            resident_bytes: resident_pages * 4096,
            cpu_seconds: (utime + stime) as f64 / 100.0,
        })
    }
}

/// Counts requests and times them, keyed by the matched route (never the raw path) and
/// the method, if it is a standard one: every label set is kept for good, so a label
/// taken from what clients send would let them grow `/metrics` without end.
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("tidings_http_requests_total", "method" => method, "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("tidings_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The method as a label: one of HTTP's own (RFC 9110, 9.3, and PATCH), or `other`.
fn method_label(method: &Method) -> &'static str {
    static STANDARD: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    STANDARD
        .iter()
        .find(|standard| *standard == method)
        .map_or("other", Method::as_str)
}
