//! The composition root: [`Application`] builds the whole server from a [`Config`] (the
//! database, the accounts, the event pipeline on its threads and runtimes, the router with
//! its middleware) and runs it until it is told to stop.

pub mod seed;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use tokio_util::sync::CancellationToken;

use crate::api;
use crate::config::Config;
use crate::events::bus::Bus;
use crate::events::relay::{self, RelayConfig, RelayStats};
use crate::events::stream;
use crate::http::AppState;
use crate::http::middleware::{
    compression, cors, drop_unusable_request_id, panic_response, problem_for_bare_errors,
    request_span, require_host, security_headers,
};
use crate::net::REQUEST_ID;
use crate::push::apns::Apns;
use crate::push::fcm::Fcm;
use crate::push::vapid::VapidKey;
use crate::push::webpush::WebPush;
use crate::push::worker::{self, Providers, WorkerConfig, WorkerStats};
use crate::realtime::hub::{Hub, HubConfig};
use crate::realtime::presence::{self, Presence};
use crate::realtime::{Realtime, RealtimeConfig};
use crate::service::accounts::Accounts;
use crate::store::Db;

/// How often a hub reads the database for events while the bus is down (Redis
/// unreachable): live delivery then lags by at most this, for one indexed read per tick
/// per instance. A constant, not a setting: it only matters during an outage, and 100 ms
/// keeps delivery prompt at a negligible cost.
const DEGRADED_POLL: Duration = Duration::from_millis(100);

/// The `retry:` hint sent to EventSource clients: how long a browser waits before it
/// reconnects a dropped stream. Short enough that a restart or a move to another
/// instance goes almost unnoticed, long enough that a server starting up is not hammered
/// by every browser at once.
const SSE_RETRY: Duration = Duration::from_secs(2);

fn hub_config(config: &Config) -> HubConfig {
    HubConfig {
        mailbox_bytes: config.queue_bytes,
        max_connections_per_user: config.max_connections_per_user,
        degraded_poll: DEGRADED_POLL,
        // The relay's safety net, doubled: a hub reads what the relay may have missed
        // publishing (Redis dropping a message) without racing it.
        safety_poll: config.relay_poll * 2,
        shards: config.hub_shards(),
        // Lanes are a Redis bus's; in-process there is one hub and nothing to split.
        partitions: if config.redis_url.is_some() {
            config.bus_partitions
        } else {
            0
        },
        bus_channel: config.redis_channel.clone(),
        lane_linger: config.bus_lane_linger,
    }
}

/// Pushes in flight at once. Each is an HTTPS request to a push service that answers in
/// tens of milliseconds; 64 keep the worker busy without holding many connections to one
/// service.
const PUSH_CONCURRENCY: usize = 64;

/// The nice value of the delivery worker's thread: at 10 the OS gives a thread at 0 about
/// ten times its share of a busy core, so a burst of pushes (encryption, requests) takes
/// what the hub, the relay and requests leave.
const PUSH_NICE: i32 = 10;

fn worker_config(config: &Config) -> WorkerConfig {
    WorkerConfig {
        delay: config.push_delay,
        max_attempts: config.push_max_attempts,
        retry_base: config.push_retry_base,
        device_rate_per_minute: config.push_device_rate,
        concurrency: PUSH_CONCURRENCY,
        poll: config.relay_poll,
        standby_retry: relay::STANDBY_RETRY,
        presence_timeout: presence::HEARTBEAT * 3,
    }
}

fn realtime_config(config: &Config) -> RealtimeConfig {
    RealtimeConfig {
        ping_interval: config.ws_ping_interval,
        idle_timeout: config.ws_idle_timeout,
        write_timeout: config.write_timeout,
        max_message_bytes: config.ws_max_message,
        sse_heartbeat: config.sse_heartbeat,
        sse_retry: SSE_RETRY,
        drain_batch: config.drain_batch,
        drain_pause: config.drain_pause,
    }
}

/// The whole HTTP surface with its middleware: the API and the dashboard.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.body_limit;
    let timeout = state.config.request_timeout;
    let cors = cors(&state.config.cors_origins);
    crate::telemetry::prometheus();
    api::router()
        .merge(api::dashboard::router())
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
                .layer(security_headers())
                .layer(compression())
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

/// The admin listener's routes (`TIDINGS_ADMIN_LISTEN`), with what every answer needs: a
/// problem body for a bare error, a time limit. Not counted in the HTTP metrics: those
/// describe the public port's traffic.
pub fn admin_router(state: AppState) -> Router {
    let timeout = state.config.request_timeout;
    api::admin::router().with_state(state).layer(
        ServiceBuilder::new()
            .layer(CatchPanicLayer::custom(panic_response))
            .layer(axum::middleware::map_response(problem_for_bare_errors))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                timeout,
            )),
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
    /// The admin listener, when `TIDINGS_ADMIN_LISTEN` is set.
    admin_listener: Option<TcpListener>,
    state: AppState,
    /// Ends the relay, the bus subscription and (through them) the hub.
    background: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Where `tasks` run; stopped when the application is dropped.
    _pipeline: Pipeline,
    _hub_thread: Pipeline,
    _push_thread: Pipeline,
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
        Pipeline::start_niced(name, 0)
    }

    /// A pipeline whose thread runs at this nice value (Linux: per thread): above 0, the
    /// OS gives the other threads (the hub's fan-out among them) the core first.
    fn start_niced(name: &str, nice: i32) -> anyhow::Result<Pipeline> {
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
                if nice != 0 {
                    lower_priority(nice);
                }
                runtime.block_on(stopped.cancelled());
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .context("could not start the event pipeline's thread")?;
        Ok(Pipeline { handle, stop })
    }
}

/// Sets the calling thread's nice value; a failure (not Linux, or not allowed) only costs
/// the priority.
fn lower_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid has no preconditions; setpriority on our own thread id changes only
    // this thread's scheduling priority.
    let failed = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) != 0
    };
    #[cfg(not(target_os = "linux"))]
    let failed = true;
    if failed {
        tracing::debug!(nice, "could not lower a thread's priority");
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Application {
    /// Opens the database, applies migrations, loads the signing keys, starts the bus, the
    /// hub and the relay, and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let db = Db::connect(&config).await?;
        db.migrate().await?;
        let accounts = Accounts::new(db.clone(), &config)?;
        let vapid = Arc::new(VapidKey::load(&config)?);
        let mailer = crate::mail::Mailer::new(&config)?;
        // Read before anything starts: a missing file or a bad key stops the start.
        let fcm = Fcm::from_config(&config)?;
        let apns = Apns::from_config(&config)?;
        let background = CancellationToken::new();
        let pipeline = Pipeline::start("tidings-pipeline")?;
        let hub_thread = Pipeline::start("tidings-hub")?;
        // Pushes can wait a moment; live delivery should not wait for them.
        let push_thread = Pipeline::start_niced("tidings-push", PUSH_NICE)?;
        let bus = match &config.redis_url {
            // Built on the pipeline's thread, so that its subscription task runs there.
            Some(url) => {
                let (url, cluster, channel, partitions, stop) = (
                    url.clone(),
                    config.redis_cluster,
                    config.redis_channel.clone(),
                    config.bus_partitions,
                    background.clone(),
                );
                pipeline
                    .handle
                    .spawn(
                        async move { Bus::redis(&url, cluster, &channel, partitions, stop).await },
                    )
                    .await??
            }
            None => Bus::memory(),
        };
        // Live delivery starts at the stream's end; earlier events are replayed on resume.
        let hub = Hub::new(
            db.clone(),
            hub_config(&config),
            stream::last_seq(&db).await?,
            accounts.token_cache.clone(),
        );
        let relay_stats = Arc::new(RelayStats::default());
        let relay_config = RelayConfig {
            batch: relay::BATCH,
            poll: config.relay_poll,
            standby_retry: relay::STANDBY_RETRY,
            retention: config.event_retention,
            prune_every: relay::PRUNE_EVERY,
        };
        let shards = hub
            .start_shards()
            .context("could not start the hub's fan-out threads")?;
        let tasks: Vec<tokio::task::JoinHandle<()>> = vec![
            hub_thread.handle.spawn(hub.clone().run(
                bus.batches,
                bus.health.clone(),
                bus.channels.clone(),
                shards,
            )),
            pipeline.handle.spawn(relay::run(
                db.clone(),
                bus.publisher,
                relay_config,
                relay_stats.clone(),
                background.clone(),
            )),
        ];
        let presence = Presence::new();
        let mut tasks = tasks;
        tasks.push(
            pipeline.handle.spawn(presence.clone().run(
                hub.clone(),
                db.clone(),
                background.clone(),
            )),
        );
        let providers = Providers {
            webpush: Some(WebPush::new(
                vapid.clone(),
                config.push_allow_private_endpoints,
            )?),
            fcm,
            apns,
            mail: mailer.is_enabled().then(|| mailer.clone()),
        };
        let worker_stats = Arc::new(WorkerStats::default());
        tasks.push(push_thread.handle.spawn(worker::run(
            db.clone(),
            providers,
            worker_config(&config),
            hub.notifications_seen.clone(),
            worker_stats.clone(),
            background.clone(),
        )));
        let realtime = Realtime {
            hub,
            bus_health: bus.health,
            bus_kind: bus.kind,
            bus_faults: bus.faults.clone(),
            relay: relay_stats,
            presence,
            push: worker_stats,
            config: realtime_config(&config),
            tasks: tokio_util::task::TaskTracker::new(),
        };
        let listener = crate::net::listen(config.listen)
            .with_context(|| format!("could not listen on {}", config.listen))?;
        tracing::info!(
            address = %listener.local_addr()?,
            database = %config.database_url.redacted(),
            "tidings is listening"
        );
        let admin_listener = match config.admin_listen {
            Some(address) => {
                let admin = crate::net::listen(address).with_context(|| {
                    format!("could not listen on {address} (the admin listener)")
                })?;
                tracing::info!(
                    address = %admin.local_addr()?,
                    "the admin listener serves /metrics, /livez and /readyz"
                );
                Some(admin)
            }
            None if config.metrics_token.is_some() => {
                tracing::info!(
                    "/metrics is served on the public port to bearers of TIDINGS_METRICS_TOKEN"
                );
                None
            }
            None => {
                tracing::info!(
                    "/metrics is not served: set TIDINGS_ADMIN_LISTEN to serve it on a private \
                     address, or TIDINGS_METRICS_TOKEN to serve it on this port to bearers of \
                     that token"
                );
                None
            }
        };
        Ok(Application {
            listener,
            admin_listener,
            state: AppState::new(config, accounts, realtime, vapid, mailer),
            background,
            tasks,
            _pipeline: pipeline,
            _hub_thread: hub_thread,
            _push_thread: push_thread,
        })
    }

    /// The address actually bound (the port is chosen by the OS for `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The admin listener's address, if there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_listener
            .as_ref()
            .map(|admin| admin.local_addr().expect("a bound listener has an address"))
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
        // The admin listener serves through the drain (metrics show it) and stops with the
        // accept loop; a scrape in flight then finishes.
        let admin = self.admin_listener.map(|listener| {
            let serve = axum::serve(listener, admin_router(self.state.clone()))
                .with_graceful_shutdown(stop.clone().cancelled_owned());
            tokio::spawn(async move { serve.await })
        });
        crate::net::server::serve(
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
        if let Some(admin) = admin {
            match tokio::time::timeout(SHUTDOWN_GRACE, admin).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the admin listener failed"),
                Ok(Err(e)) => tracing::warn!(error = %e, "the admin listener's task failed"),
                Err(_) => {
                    tracing::warn!("the admin listener still had requests after the grace period")
                }
            }
        }
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
