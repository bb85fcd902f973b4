//! The REST API, one module per resource, merged into one router whose OpenAPI document
//! is generated from the handlers' own annotations.

pub mod audit;
pub mod etag;
pub mod extract;
pub mod health;
pub mod me;
pub mod metrics;
pub mod notifications;
pub mod orders;
pub mod pagination;
pub mod products;
pub mod users;

use axum::Router;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tidings",
        description = "A real-time commerce backend. Every error is application/problem+json \
                       (the Problem schema) with a stable `code`.",
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Accounts and tokens"),
        (name = "me", description = "The caller's own account"),
        (name = "users", description = "User administration (admin)"),
        (name = "products", description = "The catalog and its stock"),
        (name = "orders", description = "Orders"),
        (name = "notifications", description = "Notifications and their preferences"),
        (name = "admin", description = "The audit log (admin)"),
        (name = "live", description = "Live events over WebSocket and Server-Sent Events"),
        (name = "health", description = "Liveness and readiness"),
    ),
    components(schemas(crate::error::ProblemDoc, crate::error::FieldError))
)]
struct ApiDoc;

/// The `bearer` security scheme the handlers refer to.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An access token from /v1/auth/login or /v1/auth/refresh",
                    ))
                    .build(),
            ),
        );
    }
}

/// Every REST route, `/openapi.json`, and the API docs at `/docs`, served from the binary
/// (Swagger UI is vendored at build time, and its online validator is turned off, so the
/// page makes no request beyond this server).
pub fn router() -> Router<AppState> {
    let (router, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::router())
        .merge(crate::auth::routes::router())
        .merge(me::router())
        .merge(users::router())
        .merge(products::router())
        .merge(orders::router())
        .merge(notifications::router())
        .merge(audit::router())
        .merge(crate::realtime::auth::router())
        .merge(crate::realtime::ws::router())
        .merge(crate::realtime::sse::router())
        .merge(metrics::router())
        .split_for_parts();
    let docs = SwaggerUi::new("/docs")
        .url("/openapi.json", openapi)
        .config(
            Config::from("/openapi.json")
                .validator_url("none")
                .try_it_out_enabled(true),
        );
    router.merge(docs)
}
