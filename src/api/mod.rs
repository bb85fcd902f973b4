//! The REST API, one module per resource, merged into one router.

pub mod extract;
pub mod health;
pub mod me;
pub mod pagination;
pub mod users;

use axum::Router;

use crate::AppState;

/// Every REST route.
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(health::router())
        .merge(crate::auth::routes::router())
        .merge(me::router())
        .merge(users::router())
}
