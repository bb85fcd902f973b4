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
pub mod seed;
pub mod service;
pub mod store;
pub mod telemetry;

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
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::auth::ratelimit::AuthLimiter;
use crate::auth::tokens::TokenKeys;
pub use crate::config::Config;
use crate::error::problem_response;
use crate::store::Db;

/// Everything a handler needs, cloned cheaply into each request.
#[derive(Clone)]
pub struct AppState {
    /// The database pool.
    pub db: Db,
    /// Signs and checks access tokens.
    pub tokens: Arc<TokenKeys>,
    /// Rate limits on login and registration.
    pub limiter: Arc<AuthLimiter>,
    /// The validated settings.
    pub config: Arc<Config>,
}

impl AppState {
    pub fn new(config: Config, db: Db, tokens: TokenKeys) -> Self {
        Self {
            db,
            tokens: Arc::new(tokens),
            limiter: Arc::new(AuthLimiter::new(
                config.auth_rate_per_ip,
                config.auth_rate_per_email,
            )),
            config: Arc::new(config),
        }
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole HTTP surface with its middleware.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.body_limit;
    let timeout = state.config.request_timeout;
    api::router()
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_response(DefaultOnResponse::new().level(Level::INFO))
                        // A 500 is logged once, with its cause, where it is rendered.
                        .on_failure(()),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(CatchPanicLayer::custom(panic_response))
                .layer(axum::middleware::map_response(problem_for_bare_errors))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    timeout,
                )),
        )
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

/// Errors made by the router or middleware (404, 405, 408, 413) carry no body; give them
/// the same problem+json body as ours.
async fn problem_for_bare_errors(response: Response<Body>) -> Response<Body> {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || response.headers().contains_key(header::CONTENT_TYPE)
    {
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

/// A built server: connected, migrated, bound, not yet serving.
pub struct Application {
    listener: TcpListener,
    state: AppState,
}

impl Application {
    /// Opens the database, applies migrations, loads the signing key and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let db = Db::connect(&config).await?;
        db.migrate().await?;
        let tokens = TokenKeys::load(&config)?;
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
            state: AppState::new(config, db, tokens),
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

    /// Serves until `shutdown` resolves, then finishes in-flight requests and closes the pool.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let app = router(self.state.clone());
        axum::serve(
            self.listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
        .context("the server failed")?;
        tracing::info!("stopped accepting; closing the database pool");
        tokio::time::timeout(Duration::from_secs(10), self.state.db.close())
            .await
            .ok();
        Ok(())
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        tokio::signal::ctrl_c().await.ok();
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received");
}
