//! The dashboard at `/app/`: its page, its modules and the SDK's, served from the binary
//! with their types, the policy that allows this origin only, and revalidation by ETag.
//! (What the page does is tested in a browser: tests/browser/.)

use std::collections::{BTreeSet, VecDeque};

use reqwest::{Response, StatusCode};

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, problem};

backend_tests!(
    the_dashboard_page_is_html_with_a_policy_that_allows_this_origin_only,
    every_file_the_page_loads_is_served_with_its_type_and_the_policy,
    the_sdk_is_served_below_the_dashboard,
    the_service_worker_is_served_in_the_page_s_scope,
    app_without_its_slash_redirects_to_the_page,
    the_root_sends_a_browser_to_the_dashboard,
    a_file_the_browser_holds_is_revalidated_with_a_304,
    an_unknown_file_below_app_is_a_404_problem,
);

const HTML: &str = "text/html; charset=utf-8";
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

fn header<'a>(response: &'a Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("{} has no {name}", response.url()))
        .to_str()
        .unwrap()
}

/// The policy every answer below `/app/` carries: everything from this origin alone, no
/// inline script, no framing.
fn assert_policy(response: &Response) {
    let policy = header(response, "content-security-policy");
    let directives: Vec<&str> = policy.split(';').map(str::trim).collect();
    for wanted in [
        "default-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ] {
        assert!(
            directives.contains(&wanted),
            "{}: {wanted} missing from {policy}",
            response.url()
        );
    }
    // Nothing widens it: no other source lists, no inline or eval, no other host.
    for directive in &directives {
        let name = directive.split_whitespace().next().unwrap_or_default();
        assert!(
            !name.ends_with("-src") || ["default-src", "object-src"].contains(&name),
            "{}: {directive} widens the policy",
            response.url()
        );
    }
    for loose in [
        "unsafe-inline",
        "unsafe-eval",
        "http:",
        "https:",
        "*",
        "data:",
    ] {
        assert!(!policy.contains(loose), "{loose} in {policy}");
    }
    assert_eq!(header(response, "x-content-type-options"), "nosniff");
}

async fn the_dashboard_page_is_html_with_a_policy_that_allows_this_origin_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let response = app.get("/app/", None).await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "content-type"), HTML);
    assert_policy(&response);
    let page = response.text().await.unwrap();
    assert!(page.starts_with("<!doctype html>"), "{page}");
    assert!(page.contains(r#"<script type="module" src="app.js">"#));
    assert!(
        !page.contains("<script>") && !page.contains("style="),
        "the policy forbids inline script and style"
    );
}

/// The page's links and scripts, and every module they import (the SDK's included),
/// followed from `/app/`: each is there, with its type and the policy.
async fn every_file_the_page_loads_is_served_with_its_type_and_the_policy(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let page = app.get("/app/", None).await.text().await.unwrap();
    let mut queue: VecDeque<String> = attribute_values(&page, "src")
        .into_iter()
        .chain(attribute_values(&page, "href"))
        .filter(|link| !link.starts_with('#'))
        .map(|link| resolve("/app/", &link))
        // A link back to the page itself (the email pages' way back) loads nothing new.
        .filter(|path| path != "/app/")
        .collect();
    let mut seen = BTreeSet::new();

    while let Some(path) = queue.pop_front() {
        if !seen.insert(path.clone()) {
            continue;
        }
        let response = app.get(&path, None).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_policy(&response);
        let content_type = header(&response, "content-type").to_owned();
        let expected = match path.rsplit_once('.').map(|(_, ext)| ext) {
            Some("js") => JAVASCRIPT,
            Some("css") => "text/css; charset=utf-8",
            Some("svg") => "image/svg+xml",
            _ => panic!("the page loads {path}, of a type this test does not know"),
        };
        assert_eq!(content_type, expected, "{path}");
        if content_type == JAVASCRIPT {
            let source = response.text().await.unwrap();
            for import in relative_imports(&source) {
                queue.push_back(resolve(&path, &import));
            }
        }
    }

    for needed in [
        "/app/app.js",
        "/app/app.css",
        "/app/sdk/index.js",
        "/app/board.js",
        "/app/push.js",
        "/app/account.js",
    ] {
        assert!(seen.contains(needed), "{needed} is not loaded: {seen:?}");
    }
}

async fn the_sdk_is_served_below_the_dashboard(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let response = app.get("/app/sdk/index.js", None).await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "content-type"), JAVASCRIPT);
    let source = response.text().await.unwrap();
    assert!(
        source.contains("export"),
        "the SDK's entry is an ES module: {source}"
    );
    assert_eq!(
        source,
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/clients/js/src/index.js"
        ))
        .unwrap(),
        "the SDK's own file, compiled in"
    );
}

/// The service worker the page registers: a script of this origin below `/app/`, so its
/// default scope is the page's and it needs no `Service-Worker-Allowed`; the page's policy
/// lets exactly one Trusted Types policy be made, the one `serviceWorker.register` takes.
async fn the_service_worker_is_served_in_the_page_s_scope(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let response = app.get("/app/sw.js", None).await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "content-type"), JAVASCRIPT);
    assert_policy(&response);
    let policy = header(&response, "content-security-policy").to_owned();
    let trusted: Vec<&str> = policy
        .split(';')
        .map(str::trim)
        .filter(|d| d.starts_with("trusted-types") || d.starts_with("require-trusted-types"))
        .collect();
    assert_eq!(
        trusted,
        [
            "require-trusted-types-for 'script'",
            "trusted-types tidings-service-worker"
        ]
    );
    let source = response.text().await.unwrap();
    assert!(source.contains("addEventListener(\"push\""), "{source}");
    let page = app.get("/app/push.js", None).await.text().await.unwrap();
    assert!(page.contains("\"tidings-service-worker\""));
    assert!(page.contains("const WORKER = \"sw.js\""));
}

/// `GET path` without following a redirect, to see the redirect itself.
async fn unfollowed(app: &TestApp, path: &str) -> Response {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(app.url(path))
        .send()
        .await
        .unwrap()
}

async fn app_without_its_slash_redirects_to_the_page(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = unfollowed(&app, "/app").await;

    assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(header(&response, "location"), "/app/");
}

/// Someone who opens the server's address in a browser, as the README's first command
/// prints it, lands on the dashboard instead of a 404.
async fn the_root_sends_a_browser_to_the_dashboard(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = unfollowed(&app, "/").await;

    assert_eq!(response.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(header(&response, "location"), "/app/");
    // Followed, it is the page.
    let page = app.get("/", None).await;
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(header(&page, "content-type"), HTML);
}

async fn a_file_the_browser_holds_is_revalidated_with_a_304(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for path in ["/app/", "/app/app.js", "/app/sdk/index.js"] {
        let first = app.get(path, None).await;
        assert_eq!(header(&first, "cache-control"), "no-cache", "{path}");
        let etag = header(&first, "etag").to_owned();
        assert!(
            etag.starts_with('"') && etag.ends_with('"') && etag.len() > 10,
            "a strong ETag: {etag}"
        );

        let again = app
            .client
            .get(app.url(path))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();

        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
        assert_eq!(header(&again, "etag"), etag);
        assert_policy(&again);
        assert!(again.bytes().await.unwrap().is_empty());

        let other = app
            .client
            .get(app.url(path))
            .header("if-none-match", "\"something-else\"")
            .send()
            .await
            .unwrap();
        assert_eq!(other.status(), StatusCode::OK, "{path}");
    }
    let page = app.get("/app/", None).await;
    let script = app.get("/app/app.js", None).await;
    assert_ne!(
        header(&page, "etag"),
        header(&script, "etag"),
        "each file has its own ETag"
    );
}

async fn an_unknown_file_below_app_is_a_404_problem(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for path in ["/app/nothing.js", "/app/sdk/nothing.js", "/app/sdk/"] {
        let response = app.get(path, None).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_policy(&response);
        assert_eq!(problem(response).await["code"], "not_found");
    }
}

/// The values of `name="…"` attributes in an HTML page.
fn attribute_values(html: &str, name: &str) -> Vec<String> {
    let marker = format!(" {name}=\"");
    html.split(&marker)
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect()
}

/// The relative specifiers of a module's static imports and re-exports (`from "./x.js"`,
/// `import "./x.js"`); bare ones (a Node-only `ws`) are left out.
fn relative_imports(source: &str) -> Vec<String> {
    let mut found = Vec::new();
    for marker in ["from \"", "from '", "import \"", "import '"] {
        for rest in source.split(marker).skip(1) {
            let quote = marker.chars().last().unwrap();
            if let Some(specifier) = rest.split(quote).next()
                && (specifier.starts_with("./") || specifier.starts_with("../"))
            {
                found.push(specifier.to_owned());
            }
        }
    }
    found
}

/// `link` as a path, relative to the file at `base` (a path ending in `/` is a folder).
fn resolve(base: &str, link: &str) -> String {
    let mut parts: Vec<&str> = base.split('/').collect();
    parts.pop();
    for part in link.split('/') {
        match part {
            "." => {}
            ".." => {
                parts.pop();
            }
            _ => parts.push(part),
        }
    }
    parts.join("/")
}
