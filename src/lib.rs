//! Tidings: a real-time commerce backend.
//!
//! [`Application`] builds the whole server from a [`Config`]; `main` and the integration
//! tests both start it that way, on a listener of their choosing.

pub mod api;
pub mod auth;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod realtime;
pub mod seed;
pub mod server;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod web;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath};
use axum::http::{HeaderName, Request, Response, StatusCode, header};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use tokio_util::sync::CancellationToken;

use crate::api::extract::{Repeated, at_most_one};
use crate::auth::password::Hasher;
use crate::auth::ratelimit::AuthLimiter;
use crate::auth::tokens::TokenKeys;
pub use crate::config::Config;
use crate::error::problem_response;
use crate::events::bus::Bus;
use crate::events::relay::{self, RelayConfig, RelayStats};
use crate::realtime::hub::{Hub, HubConfig};
use crate::realtime::{Realtime, RealtimeConfig};
use crate::store::{Db, stream};

/// Everything a handler needs, cloned cheaply into each request.
#[derive(Clone)]
pub struct AppState {
    /// The database pool.
    pub db: Db,
    /// Signs and checks access tokens.
    pub tokens: Arc<TokenKeys>,
    /// Rate limits on every route that checks a password.
    pub limiter: Arc<AuthLimiter>,
    /// Runs argon2, a bounded number at a time.
    pub hasher: Arc<Hasher>,
    /// The validated settings.
    pub config: Arc<Config>,
    /// The live side: hub, bus health, relay.
    pub realtime: Realtime,
}

impl AppState {
    pub fn new(config: Config, db: Db, tokens: TokenKeys, realtime: Realtime) -> Self {
        Self {
            db,
            tokens: Arc::new(tokens),
            limiter: Arc::new(AuthLimiter::new(
                config.auth_rate_per_ip,
                config.auth_rate_per_email,
            )),
            hasher: Arc::new(Hasher::new(
                config.hash_concurrency,
                config.hash_queue_timeout,
            )),
            config: Arc::new(config),
            realtime,
        }
    }

    /// The state for a command-line task (seed, user create): no live side runs.
    pub fn offline(config: Config, db: Db, tokens: TokenKeys) -> Self {
        let hub = Hub::new(db.clone(), hub_config(&config), 0);
        let realtime = Realtime {
            hub,
            bus_health: Bus::memory().health,
            bus_kind: "none",
            relay: Arc::new(RelayStats::default()),
            config: realtime_config(&config),
            tasks: tokio_util::task::TaskTracker::new(),
        };
        Self::new(config, db, tokens, realtime)
    }
}

fn hub_config(config: &Config) -> HubConfig {
    HubConfig {
        mailbox_bytes: config.queue_bytes,
        max_connections_per_user: config.max_connections_per_user,
        degraded_poll: Duration::from_millis(100),
        // The relay's safety net, doubled: a hub reads what the relay may have missed
        // publishing (Redis dropping a message) without racing it.
        safety_poll: config.relay_poll * 2,
    }
}

fn realtime_config(config: &Config) -> RealtimeConfig {
    RealtimeConfig {
        ping_interval: config.ws_ping_interval,
        idle_timeout: config.ws_idle_timeout,
        write_timeout: config.write_timeout,
        max_message_bytes: config.ws_max_message,
        sse_heartbeat: config.sse_heartbeat,
        sse_retry: Duration::from_secs(2),
        drain_batch: config.drain_batch,
        drain_pause: config.drain_pause,
    }
}

pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole HTTP surface with its middleware: the API and the dashboard.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.body_limit;
    let timeout = state.config.request_timeout;
    let cors = cors(&state.config.cors_origins);
    crate::telemetry::prometheus();
    api::router()
        .merge(web::router())
        .layer(axum::middleware::from_fn(api::metrics::track))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .layer(axum::middleware::map_request(drop_unusable_request_id))
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_response(DefaultOnResponse::new().level(Level::INFO))
                        // A 500 is logged once, with its cause, where it is rendered.
                        .on_failure(()),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(cors)
                .layer(CatchPanicLayer::custom(panic_response))
                .layer(axum::middleware::map_response(problem_for_bare_errors))
                .layer(axum::middleware::from_fn(require_host))
                // Answers a Content-Length over the limit at once, before reading a byte of
                // the body (`DefaultBodyLimit` only stops a body as it is read).
                .layer(RequestBodyLimitLayer::new(body_limit))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    timeout,
                )),
        )
}

/// CORS for the configured browser origins: the API's methods and headers, and the
/// response headers a browser app needs to read (ETags, Location, Retry-After, ids, the
/// stream position of a read).
fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use axum::http::{HeaderValue, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
            header::IF_NONE_MATCH,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("last-event-id"),
            REQUEST_ID,
        ])
        .expose_headers([
            header::ETAG,
            header::LOCATION,
            header::RETRY_AFTER,
            REQUEST_ID,
            HeaderName::from_static("idempotent-replayed"),
            api::position::HEADER,
        ])
        .max_age(Duration::from_secs(600))
}

/// A client's own `x-request-id` is kept (to follow a request across services) if it is
/// one short token; anything else (several, long, odd characters) is replaced by a fresh
/// one, as it would otherwise be copied into every log line and audit entry of the request.
async fn drop_unusable_request_id(mut request: Request<Body>) -> Request<Body> {
    let usable = match at_most_one(request.headers(), REQUEST_ID) {
        Ok(Some(id)) => {
            (1..=128).contains(&id.len())
                && id
                    .as_bytes()
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
        }
        Ok(None) => true,
        Err(Repeated) => false,
    };
    if !usable {
        request.headers_mut().remove(REQUEST_ID);
    }
    request
}

/// The span of one request: keyed by the matched route, never the raw URI, whose query
/// string may carry a stream ticket.
fn request_span(request: &Request<Body>) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!("request", method = %request.method(), route, request_id)
}

/// An HTTP/1.1 request must carry exactly one valid Host header (RFC 9112, section 3.2):
/// which host it was meant for is otherwise anyone's guess, a proxy's included.
async fn require_host(request: Request<Body>, next: axum::middleware::Next) -> Response<Body> {
    if request.version() == axum::http::Version::HTTP_11 {
        let valid = match at_most_one(request.headers(), header::HOST) {
            Ok(Some(host)) => {
                host.is_empty()
                    || host
                        .to_str()
                        .is_ok_and(|h| h.parse::<axum::http::uri::Authority>().is_ok())
            }
            Ok(None) | Err(Repeated) => false,
        };
        if !valid {
            return problem_response(
                StatusCode::BAD_REQUEST,
                "bad_host",
                "an HTTP/1.1 request needs exactly one valid Host header",
                &[],
            );
        }
    }
    next.run(request).await
}

/// Errors made by the router or middleware (404, 405, 408, 413) carry no body, or a plain
/// text one (tower-http's 413); give them the same problem+json body as ours.
async fn problem_for_bare_errors(response: Response<Body>) -> Response<Body> {
    let status = response.status();
    let bare = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_none_or(|v| v.as_bytes().starts_with(b"text/plain"));
    if !(status.is_client_error() || status.is_server_error()) || !bare {
        return response;
    }
    let (code, detail) = match status {
        StatusCode::NOT_FOUND => ("not_found", "no route matches this path"),
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method_not_allowed", "this route does not take that method")
        }
        StatusCode::REQUEST_TIMEOUT => ("request_timeout", "the request took too long to handle"),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the request body is too large"),
        _ => ("error", status.canonical_reason().unwrap_or("error")),
    };
    let mut problem = problem_response(status, code, detail, &[]);
    for (name, value) in response.headers() {
        if name == header::CONTENT_LENGTH {
            continue;
        }
        problem
            .headers_mut()
            .entry(name)
            .or_insert_with(|| value.clone());
    }
    problem
}

fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response<Body> {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(panic = %message, "a handler panicked");
    problem_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the server failed to handle the request; it has been logged",
        &[],
    )
}

/// How long shutdown waits, once the drain has closed every live connection's mailbox, for
/// requests in flight to finish and for live connections to write their close and end.
///
/// Why 30 s: it is Kubernetes' default `terminationGracePeriodSeconds`, after which the
/// process is killed anyway; and a healthy connection closes in milliseconds, so only a
/// client that takes no bytes (each write is bounded by `write_timeout`, 60 s by default)
/// or does not answer a WebSocket Close (waited for 5 s) is waited for at all. What is
/// still open at the deadline ends by those limits, or with the process.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// A built server: connected, migrated, bound, its relay and hub running.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    /// Ends the relay, the bus subscription and (through them) the hub.
    background: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Where `tasks` run; stopped when the application is dropped.
    _pipeline: Pipeline,
    _hub_thread: Pipeline,
}

/// A part of the event pipeline on a thread and runtime of its own: the relay with the bus
/// subscription on one, the hub on another.
///
/// Why: the hub writes to (or wakes the task of) every receiving connection, and a runtime
/// runs one thing at a time. Sharing one, each of the relay's database round trips would
/// wait behind thousands of connection writes (measured: 27 ms of relay lag at 100,000
/// deliveries/s on one core). On threads of their own, the OS scheduler runs the relay as
/// soon as it is woken, even while the hub is in the middle of a fan-out.
struct Pipeline {
    handle: tokio::runtime::Handle,
    stop: CancellationToken,
}

impl Pipeline {
    fn start(name: &str) -> anyhow::Result<Pipeline> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("could not start the event pipeline's runtime")?;
        let handle = runtime.handle().clone();
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                runtime.block_on(stopped.cancelled());
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .context("could not start the event pipeline's thread")?;
        Ok(Pipeline { handle, stop })
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Application {
    /// Opens the database, applies migrations, loads the signing key, starts the bus, the
    /// hub and the relay, and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let db = Db::connect(&config).await?;
        db.migrate().await?;
        let tokens = TokenKeys::load(&config)?;
        let background = CancellationToken::new();
        let pipeline = Pipeline::start("tidings-pipeline")?;
        let hub_thread = Pipeline::start("tidings-hub")?;
        let bus = match &config.redis_url {
            // Built on the pipeline's thread, so that its subscription task runs there.
            Some(url) => {
                let (url, channel, stop) = (
                    url.clone(),
                    config.redis_channel.clone(),
                    background.clone(),
                );
                pipeline
                    .handle
                    .spawn(async move { Bus::redis(&url, &channel, stop).await })
                    .await??
            }
            None => Bus::memory(),
        };
        // Live delivery starts at the stream's end; earlier events are replayed on resume.
        let hub = Hub::new(
            db.clone(),
            hub_config(&config),
            stream::last_seq(&db).await?,
        );
        let relay_stats = Arc::new(RelayStats::default());
        let relay_config = RelayConfig {
            batch: 1000,
            poll: config.relay_poll,
            standby_retry: Duration::from_secs(1),
            retention: config.event_retention,
            prune_every: Duration::from_secs(60),
        };
        let tasks = vec![
            hub_thread
                .handle
                .spawn(hub.clone().run(bus.batches, bus.health.clone())),
            pipeline.handle.spawn(relay::run(
                db.clone(),
                bus.publisher,
                relay_config,
                relay_stats.clone(),
                background.clone(),
            )),
        ];
        let realtime = Realtime {
            hub,
            bus_health: bus.health,
            bus_kind: bus.kind,
            relay: relay_stats,
            config: realtime_config(&config),
            tasks: tokio_util::task::TaskTracker::new(),
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("could not listen on {}", config.listen))?;
        tracing::info!(
            address = %listener.local_addr()?,
            database = %config.database_url.redacted(),
            "tidings is listening"
        );
        Ok(Application {
            listener,
            state: AppState::new(config, db, tokens, realtime),
            background,
            tasks,
            _pipeline: pipeline,
            _hub_thread: hub_thread,
        })
    }

    /// The address actually bound (the port is chosen by the OS for `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves; then closes live connections in paced batches (so
    /// that clients reconnect elsewhere without a thundering herd), finishes in-flight
    /// requests, waits until every live connection has written its close (a WebSocket's
    /// 1001, an event stream's end) and ended, stops the relay and the hub, and closes the
    /// pool. Requests and live connections get [`SHUTDOWN_GRACE`] from the end of the
    /// drain; what is still open then is logged and left to its own time limits.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let app = router(self.state.clone());
        let realtime = self.state.realtime.clone();
        let live = realtime.tasks.clone();
        let write_timeout = realtime.config.write_timeout;
        let drain = async move {
            shutdown.await;
            tracing::info!(
                connections = realtime.hub.connections(),
                "draining live connections"
            );
            realtime
                .hub
                .drain(realtime.config.drain_batch, realtime.config.drain_pause)
                .await;
        };
        let stop = CancellationToken::new();
        let stopper = stop.clone();
        let (drained, deadline) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            drain.await;
            let _ = drained.send(tokio::time::Instant::now() + SHUTDOWN_GRACE);
            stopper.cancel();
        });
        server::serve(
            self.listener,
            app,
            stop,
            SHUTDOWN_GRACE,
            write_timeout,
            self.state.config.live_send_buffer,
            self.state.config.pending,
        )
        .await
        .context("the server failed")?;
        // Every mailbox is closed, so each live task writes its close and ends, and the hub
        // writes to none of their sockets any more. The accept loop's connections have
        // ended, so no task is added from now on (one that opened during the drain was
        // refused by the hub, and is waited for too).
        let deadline = deadline
            .await
            .unwrap_or_else(|_| tokio::time::Instant::now());
        live.close();
        if tokio::time::timeout_at(deadline, live.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = live.len(),
                "live connections still open after the grace period"
            );
        }
        self.background.cancel();
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        tracing::info!("stopped accepting; closing the database pool");
        tokio::time::timeout(Duration::from_secs(10), self.state.db.close())
            .await
            .ok();
        Ok(())
    }
}

/// A future that resolves on SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled, so a signal that comes early is not lost
/// (nor does it kill the process with the default action).
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    #[cfg(unix)]
    let mut interrupt =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
    async move {
        #[cfg(unix)]
        {
            let term = async {
                match terminate.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            let int = async {
                match interrupt.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = term => {},
                _ = int => {},
            }
        }
        #[cfg(not(unix))]
        tokio::signal::ctrl_c().await.ok();
        tracing::info!("shutdown signal received");
    }
}
