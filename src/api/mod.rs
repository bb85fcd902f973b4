//! The REST API, one module per resource (accounts under `auth` and `me`), merged into one
//! router whose OpenAPI document is generated from the handlers' own annotations, with the
//! live endpoints' routes mounted beside them; and the dashboard, served from the binary.

pub mod admin;
pub mod asyncapi;
pub mod audit;
pub mod auth;
pub mod dashboard;
pub mod deliveries;
pub mod devices;
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
use axum::http::HeaderValue;
use axum::http::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::routing::get;
use tower_http::set_header::SetResponseHeaderLayer;
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
        .merge(devices::router())
        .merge(deliveries::router())
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
    // Served here rather than by `SwaggerUi::url`, so that the document gets the API's
    // policy and only the docs' own files get `DOCS_CONTENT_SECURITY_POLICY`.
    let openapi = openapi.to_json().expect("the OpenAPI document serializes");
    let docs = Router::from(
        SwaggerUi::new("/docs").config(
            Config::from("/openapi.json")
                .validator_url("none")
                .try_it_out_enabled(true),
        ),
    )
    .layer(SetResponseHeaderLayer::overriding(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(DOCS_CONTENT_SECURITY_POLICY),
    ));
    router
        .merge(docs)
        .route(
            "/openapi.json",
            get(move || std::future::ready(([(CONTENT_TYPE, "application/json")], openapi))),
        )
        .route("/asyncapi.json", get(asyncapi::serve))
}

/// The policy of the API docs' page (Swagger UI, served from the binary): its scripts,
/// styles and icons from this origin (it has no inline script), the icons its stylesheet
/// inlines as `data:` URLs, and requests (the document, "Try it out") to this origin only;
/// not framed. Narrower than the API's `default-src 'none'`, which would stop the page from
/// loading at all.
///
/// One inline style is allowed, by its hash rather than `'unsafe-inline'`: the `<style>` of
/// the Swagger logo in the page's top bar (`.logo_small_svg__cls-2{fill:#fff}…`). A newer
/// Swagger UI that changes it is caught by the browser test of this page
/// (`the_docs_render_every_operation_under_their_policy`), which fails on any refusal.
pub const DOCS_CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'sha256-RL3ie0nH+Lzz2YNqQN83mnU0J1ot4QL7b99vMdIX99w='; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";
