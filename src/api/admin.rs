//! The admin listener's routes (`TIDINGS_ADMIN_LISTEN`): what operators and their tools
//! read, on an address the public cannot reach. `/metrics` is served here instead of on the
//! public port; future operator endpoints belong here too.
//!
//! `/livez` and `/readyz` are here as well as on the public port: an orchestrator can then
//! probe the one port its network policy opens to it, and a load balancer keeps probing
//! the port it balances. They say nothing a client could not learn by connecting.

use axum::Router;
use axum::routing::get;

use super::{health, metrics};
use crate::http::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/metrics", get(metrics::admin_metrics))
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
}
