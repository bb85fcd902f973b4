//! The OpenAPI document and the Swagger UI page, served from this server alone.

use reqwest::StatusCode;
use serde_json::Value;

use crate::backend_tests;
use crate::helpers::{Backend, TestApp};

backend_tests!(
    openapi_json_lists_every_route,
    openapi_json_declares_the_bearer_scheme_and_the_problem_schema,
    the_docs_page_is_served_as_html,
    the_docs_page_loads_nothing_from_another_host,
    the_docs_config_points_at_this_server_and_disables_the_validator,
);

/// Every operation of the API, as `(method, path)`.
const OPERATIONS: &[(&str, &str)] = &[
    ("get", "/livez"),
    ("get", "/readyz"),
    ("post", "/v1/auth/register"),
    ("post", "/v1/auth/login"),
    ("post", "/v1/auth/refresh"),
    ("post", "/v1/auth/logout"),
    ("post", "/v1/auth/logout-all"),
    ("get", "/v1/me"),
    ("post", "/v1/me/password"),
    ("get", "/v1/me/notification-preferences"),
    ("put", "/v1/me/notification-preferences"),
    ("get", "/v1/users"),
    ("patch", "/v1/users/{id}"),
    ("get", "/v1/products"),
    ("post", "/v1/products"),
    ("get", "/v1/products/{id}"),
    ("patch", "/v1/products/{id}"),
    ("delete", "/v1/products/{id}"),
    ("post", "/v1/products/{id}/restore"),
    ("post", "/v1/products/{id}/stock-adjustments"),
    ("get", "/v1/orders"),
    ("post", "/v1/orders"),
    ("get", "/v1/orders/{id}"),
    ("post", "/v1/orders/{id}/status"),
    ("post", "/v1/orders/{id}/cancel"),
    ("get", "/v1/notifications"),
    ("get", "/v1/notifications/unread-count"),
    ("post", "/v1/notifications/{id}/read"),
    ("post", "/v1/notifications/read-all"),
    ("delete", "/v1/notifications/{id}"),
    ("post", "/v1/notifications/broadcast"),
    ("get", "/v1/admin/audit"),
];

async fn openapi(app: &TestApp) -> Value {
    let response = app.get("/openapi.json", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    response.json().await.expect("the document is JSON")
}

/// The values of `attribute` in every `<tag …>` of `html` (quoted with " or ').
fn attribute_values(html: &str, tag: &str, attribute: &str) -> Vec<String> {
    let mut values = Vec::new();
    let lower = html.to_ascii_lowercase();
    for (start, _) in lower.match_indices(&format!("<{tag}")) {
        let end = start + lower[start..].find('>').expect("a closed tag");
        let element = &html[start..end];
        let element_lower = &lower[start..end];
        for quote in ['"', '\''] {
            let needle = format!(" {attribute}={quote}");
            if let Some(at) = element_lower.find(&needle) {
                let value_start = at + needle.len();
                let value_end = value_start + element[value_start..].find(quote).unwrap();
                values.push(element[value_start..value_end].to_owned());
            }
        }
    }
    values
}

/// The hosts (with ports) of every http:// or https:// URL in `text`.
fn url_hosts(text: &str) -> Vec<String> {
    let lower = text.to_ascii_lowercase();
    let mut hosts = Vec::new();
    for scheme in ["http://", "https://"] {
        for (at, _) in lower.match_indices(scheme) {
            let rest = &lower[at + scheme.len()..];
            let end = rest
                .find(|c: char| {
                    matches!(c, '/' | '"' | '\'' | '`' | ')' | '?' | '#') || c.is_whitespace()
                })
                .unwrap_or(rest.len());
            hosts.push(rest[..end].to_owned());
        }
    }
    hosts
}

/// The path on this server a reference of the page at `/docs/` resolves to; panics on a
/// reference to another host.
fn resolve(app: &TestApp, reference: &str) -> String {
    let lower = reference.to_ascii_lowercase();
    for scheme in ["http://", "https://", "//"] {
        if let Some(rest) = lower.strip_prefix(scheme) {
            let own = app.addr.to_string();
            assert!(
                rest.starts_with(&format!("{own}/")),
                "the page loads {reference} from another host"
            );
            return reference[scheme.len() + own.len()..].to_owned();
        }
    }
    if reference.starts_with('/') {
        reference.to_owned()
    } else {
        format!("/docs/{}", reference.trim_start_matches("./"))
    }
}

/// The stylesheets and scripts `/docs/` loads at start, as paths on this server, with
/// their bodies.
async fn docs_assets(app: &TestApp) -> Vec<(String, String)> {
    let html = app.get("/docs/", None).await.text().await.unwrap();
    let mut references = attribute_values(&html, "script", "src");
    references.extend(attribute_values(&html, "link", "href"));
    assert!(!references.is_empty(), "{html}");
    let mut assets = Vec::new();
    for reference in references {
        let path = resolve(app, &reference);
        let response = app.get(&path, None).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let body = String::from_utf8_lossy(&response.bytes().await.unwrap()).into_owned();
        assets.push((path, body));
    }
    assets
}

/// The scripts that configure Swagger UI (not its bundle, whose code names many URLs).
fn config_scripts(assets: &[(String, String)]) -> Vec<&(String, String)> {
    let scripts: Vec<&(String, String)> = assets
        .iter()
        .filter(|(path, _)| {
            path.ends_with(".js") && (path.contains("initializer") || path.contains("config"))
        })
        .collect();
    assert!(!scripts.is_empty(), "a configuration script: {assets:?}");
    scripts
}

async fn openapi_json_lists_every_route(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let document = openapi(&app).await;

    assert!(
        document["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        document["openapi"]
    );
    assert_eq!(document["info"]["title"], "Tidings");
    let paths = document["paths"].as_object().unwrap();
    for (method, path) in OPERATIONS {
        assert!(
            paths
                .get(*path)
                .and_then(|p| p.get(*method))
                .is_some_and(Value::is_object),
            "{method} {path} is documented"
        );
    }
    for path in [
        "/v1/orders/{id}/cancel",
        "/v1/products/{id}/stock-adjustments",
        "/v1/me/notification-preferences",
        "/v1/admin/audit",
    ] {
        assert!(paths.contains_key(path), "{path}");
    }
    // Every documented operation has responses and, on /v1 but for the open auth routes,
    // the bearer requirement.
    let open = [
        "/v1/auth/register",
        "/v1/auth/login",
        "/v1/auth/refresh",
        "/v1/auth/logout",
    ];
    for (method, path) in OPERATIONS {
        let operation = &paths[*path][*method];
        assert!(operation["responses"].is_object(), "{method} {path}");
        if path.starts_with("/v1/") && !open.contains(path) {
            let security = operation["security"].as_array();
            assert!(
                security.is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some())),
                "{method} {path} needs a bearer token: {operation}"
            );
        }
    }
}

async fn openapi_json_declares_the_bearer_scheme_and_the_problem_schema(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let document = openapi(&app).await;

    let bearer = &document["components"]["securitySchemes"]["bearer"];
    assert_eq!(bearer["type"], "http", "{bearer}");
    assert_eq!(
        bearer["scheme"].as_str().map(str::to_lowercase),
        Some("bearer".into())
    );
    assert_eq!(bearer["bearerFormat"], "JWT");
    let problem = &document["components"]["schemas"]["Problem"];
    assert!(problem.is_object(), "{}", document["components"]["schemas"]);
    for field in ["type", "title", "status", "detail", "code"] {
        assert!(
            problem["properties"][field].is_object(),
            "Problem has {field}: {problem}"
        );
    }
    let forbidden = &document["paths"]["/v1/admin/audit"]["get"]["responses"]["403"];
    let reference = forbidden["content"]
        .as_object()
        .and_then(|c| c.values().next())
        .and_then(|media| media["schema"]["$ref"].as_str())
        .unwrap_or_default();
    assert_eq!(reference, "#/components/schemas/Problem", "{forbidden}");
}

async fn the_docs_page_is_served_as_html(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let response = app.get("/docs/", None).await;

    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let html = response.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    // Without the slash it leads to the page too.
    let bare = app.get("/docs", None).await;
    assert_eq!(bare.status(), StatusCode::OK);
    assert_eq!(bare.url().path(), "/docs/");
}

async fn the_docs_page_loads_nothing_from_another_host(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let own = app.addr.to_string();

    let assets = docs_assets(&app).await;

    assert!(
        assets.iter().any(|(path, _)| path.ends_with(".js")),
        "{assets:?}"
    );
    assert!(
        assets.iter().any(|(path, _)| path.ends_with(".css")),
        "{assets:?}"
    );
    for (path, body) in config_scripts(&assets) {
        let foreign: Vec<String> = url_hosts(body)
            .into_iter()
            .filter(|host| *host != own)
            .collect();
        assert!(foreign.is_empty(), "{path} loads from {foreign:?}");
    }
    // A stylesheet pulls nothing in from elsewhere either (SVG namespaces in data: URLs
    // are names, not loads).
    for (path, body) in assets.iter().filter(|(path, _)| path.ends_with(".css")) {
        let lower = body.to_ascii_lowercase();
        for pattern in [
            "@import url(http",
            "@import \"http",
            "@import 'http",
            "url(http",
            "url(\"http",
            "url('http",
            "url(//",
            "url(\"//",
            "url('//",
        ] {
            assert!(!lower.contains(pattern), "{path} has {pattern}");
        }
    }
}

async fn the_docs_config_points_at_this_server_and_disables_the_validator(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let assets = docs_assets(&app).await;

    let config: String = config_scripts(&assets)
        .iter()
        .map(|(_, body)| body.split_whitespace().collect::<String>())
        .collect();
    assert!(
        config.contains(r#""validatorUrl":"none""#),
        "the validator is off: {config}"
    );
    assert!(
        !config.contains("validator.swagger.io"),
        "no online validator: {config}"
    );
    assert!(
        config.contains(r#""url":"/openapi.json""#),
        "the spec is this server's: {config}"
    );
    assert!(!config.contains("petstore"), "{config}");
}
