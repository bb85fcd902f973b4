//! The OpenAPI document and the Swagger UI page, served from this server alone.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{Backend, TestApp};

backend_tests!(
    openapi_json_lists_every_route,
    openapi_json_declares_the_bearer_scheme_and_the_problem_schema,
    the_docs_page_is_served_as_html,
    the_docs_page_loads_nothing_from_another_host,
    the_docs_config_points_at_this_server_and_disables_the_validator,
    every_error_response_is_documented_as_a_problem,
    every_operation_documents_the_statuses_its_shape_brings,
    role_guarded_and_rate_limited_operations_document_their_refusals,
    the_document_states_the_limits_the_server_enforces,
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
    ("post", "/v1/auth/password-reset"),
    ("post", "/v1/auth/password-reset/confirm"),
    ("post", "/v1/auth/verify-email/request"),
    ("post", "/v1/auth/verify-email"),
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
        "/v1/auth/password-reset",
        "/v1/auth/password-reset/confirm",
        "/v1/auth/verify-email",
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

/// Every operation of the document, as `(method, path, operation)`.
fn operations(document: &Value) -> Vec<(String, String, Value)> {
    let mut all = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if ["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                all.push((method.clone(), path.clone(), operation.clone()));
            }
        }
    }
    assert!(all.len() >= OPERATIONS.len());
    all
}

async fn every_error_response_is_documented_as_a_problem(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let document = openapi(&app).await;

    for (method, path, operation) in operations(&document) {
        for (status, response) in operation["responses"].as_object().unwrap() {
            // Readiness answers its checks, as JSON, whether ready or not.
            if status.as_str() < "400" || (path == "/readyz" && status == "503") {
                continue;
            }
            let content = response["content"].as_object();
            let media: Vec<&String> = content.map(|c| c.keys().collect()).unwrap_or_default();
            assert_eq!(
                media,
                ["application/problem+json"],
                "{method} {path} {status}: {response}"
            );
            assert_eq!(
                response["content"]["application/problem+json"]["schema"]["$ref"],
                "#/components/schemas/Problem",
                "{method} {path} {status}"
            );
        }
    }
}

async fn every_operation_documents_the_statuses_its_shape_brings(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let document = openapi(&app).await;

    for (method, path, operation) in operations(&document) {
        let responses = &operation["responses"];
        let documents = |status: &str| responses.get(status).is_some();
        if operation["security"]
            .as_array()
            .is_some_and(|s| !s.is_empty())
        {
            assert!(documents("401"), "{method} {path} documents 401");
            assert_eq!(
                responses["401"]["headers"]["www-authenticate"]["schema"]["enum"][0], "Bearer",
                "{method} {path}"
            );
        }
        if operation.get("requestBody").is_some() {
            for status in ["400", "413", "415", "422"] {
                assert!(documents(status), "{method} {path} documents {status}");
            }
        }
        let parameters = operation["parameters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if parameters.iter().any(|p| p["in"] == "query") {
            assert!(documents("400"), "{method} {path} documents 400");
        }
        if let Some(limit) = parameters.iter().find(|p| p["name"] == "limit") {
            assert_eq!(
                (&limit["schema"]["minimum"], &limit["schema"]["maximum"]),
                (&json!(1), &json!(100)),
                "{method} {path}"
            );
            assert!(documents("422"), "{method} {path} documents 422");
        }
        // Nothing is documented that the server has no way to answer: a `default`
        // response would let any status pass.
        assert!(!documents("default"), "{method} {path}");
    }
}

async fn role_guarded_and_rate_limited_operations_document_their_refusals(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let document = openapi(&app).await;

    let responses = |method: &str, path: &str| document["paths"][path][method]["responses"].clone();
    for (method, path) in [
        ("get", "/v1/users"),
        ("patch", "/v1/users/{id}"),
        ("get", "/v1/products"),
        ("post", "/v1/products"),
        ("patch", "/v1/products/{id}"),
        ("delete", "/v1/products/{id}"),
        ("post", "/v1/products/{id}/restore"),
        ("post", "/v1/products/{id}/stock-adjustments"),
        ("post", "/v1/orders/{id}/status"),
        ("post", "/v1/notifications/broadcast"),
        ("get", "/v1/admin/audit"),
    ] {
        assert!(
            responses(method, path).get("403").is_some(),
            "{method} {path} documents 403"
        );
    }
    for (method, path) in [
        ("post", "/v1/auth/register"),
        ("post", "/v1/auth/login"),
        ("post", "/v1/me/password"),
        ("post", "/v1/auth/password-reset/confirm"),
    ] {
        for status in ["429", "503"] {
            let response = &responses(method, path)[status];
            assert!(
                response["headers"]["retry-after"].is_object(),
                "{method} {path} documents {status} with Retry-After: {response}"
            );
        }
    }
}

async fn the_document_states_the_limits_the_server_enforces(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let document = openapi(&app).await;

    let schemas = &document["components"]["schemas"];
    let item = &schemas["NewItem"]["properties"]["quantity"];
    assert_eq!(
        (&item["minimum"], &item["maximum"]),
        (&json!(1), &json!(10_000))
    );
    let items = &schemas["NewOrder"]["properties"]["items"];
    assert_eq!(
        (&items["minItems"], &items["maxItems"]),
        (&json!(1), &json!(100))
    );
    assert_eq!(
        schemas["NextStatus"]["enum"],
        json!(["paid", "shipped", "delivered"])
    );
    let product = &schemas["CreateProduct"]["properties"];
    let currencies = product["currency"]["enum"].as_array().unwrap();
    assert!(currencies.contains(&json!("EUR")) && currencies.contains(&json!("JPY")));
    for not_tender in ["XXX", "XTS", "XAU", "XDR", "BOV", "CHE", "USN", "HRK"] {
        assert!(!currencies.contains(&json!(not_tender)), "{not_tender}");
    }
    assert_eq!(product["sku"]["pattern"], "^[A-Za-z0-9._-]{1,64}$");
    assert_eq!(product["name"]["maxLength"], 200);
    let name = product["name"]["pattern"].as_str().unwrap();
    for refused in [
        "\\u202A-\\u202E",
        "\\u200B-\\u200F",
        "\\uFEFF",
        "\\u0000-\\u0008",
    ] {
        assert!(name.contains(refused), "{refused} in {name}");
    }
    let delta = &schemas["StockAdjustment"]["properties"]["delta"]["anyOf"];
    assert_eq!(
        (&delta[0]["minimum"], &delta[1]["maximum"]),
        (&json!(-1_000_000_000), &json!(1_000_000_000))
    );
    let account = &schemas["NewAccount"]["properties"];
    assert_eq!(account["email"]["maxLength"], 254);
    assert!(account["email"]["pattern"].as_str().unwrap().contains('@'));
    assert_eq!(
        (
            &account["password"]["minLength"],
            &account["password"]["maxLength"]
        ),
        (&json!(8), &json!(128))
    );
    let update = &schemas["UserUpdate"];
    assert_eq!(update["minProperties"], 1);
    assert_eq!(
        update["properties"]["role"]["$ref"],
        "#/components/schemas/Role"
    );
}
