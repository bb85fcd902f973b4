//! The REST API, one module per resource (accounts under `auth` and `me`), merged into one
//! router whose OpenAPI document is generated from the handlers' own annotations, with the
//! live endpoints' routes mounted beside them; and the dashboard, served from the binary.

pub mod admin;
pub mod asyncapi;
pub mod audit;
pub mod auth;
pub mod dashboard;
pub mod health;
pub mod me;
pub mod metrics;
pub mod notifications;
pub mod openapi;
pub mod orders;
pub mod pagination;
pub mod products;
pub mod users;

use axum::Router;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::http::AppState;
use openapi::ApiDoc;

/// Every REST route, `/openapi.json`, the API docs at `/docs`, served from the binary
/// (Swagger UI is vendored at build time, and its online validator is turned off, so the
/// page makes no request beyond this server), and `/asyncapi.json`, the live protocol.
pub fn router() -> Router<AppState> {
    let (router, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::router())
        .merge(auth::router())
        .merge(me::router())
        .merge(users::router())
        .merge(products::router())
        .merge(orders::router())
        .merge(notifications::router())
        .merge(audit::router())
        .merge(crate::live::tickets::router())
        .merge(crate::live::ws::router())
        .merge(crate::live::sse::router())
        .merge(metrics::router())
        .split_for_parts();
    openapi::complete(&mut openapi);
    let docs = SwaggerUi::new("/docs")
        .url("/openapi.json", openapi)
        .config(
            Config::from("/openapi.json")
                .validator_url("none")
                .try_it_out_enabled(true),
        );
    router
        .merge(docs)
        .route("/asyncapi.json", axum::routing::get(asyncapi::serve))
}
