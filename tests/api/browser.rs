//! A real browser: a page on another origin opens a plain EventSource with a stream ticket;
//! the API docs render under their page's Content-Security-Policy.

use std::process::Stdio;

use axum::response::Html;
use serde_json::Value;
use tidings::domain::Role;
use tokio::process::Command;

use crate::browser_tests;
use crate::helpers::{Backend, TestApp};

browser_tests!(
    a_browser_eventsource_on_another_origin_receives_live_events_with_a_ticket,
    the_docs_render_every_operation_under_their_policy,
);

/// Debian's Chromium (without it when the tests were built, this test is ignored).
const CHROMIUM: &str = "/usr/bin/chromium";

const PAGE: &str = r#"<!doctype html>
<html><body><p id="out">waiting</p><script>
const API = "__API__", TOKEN = "__TOKEN__", PRODUCT = "__PRODUCT__";
const out = document.getElementById("out");
(async () => {
  try {
    const auth = { authorization: "Bearer " + TOKEN };
    const { ticket } = await (await fetch(API + "/v1/stream-tickets", { method: "POST", headers: auth })).json();
    const events = new EventSource(API + "/v1/events?topics=orders&ticket=" + encodeURIComponent(ticket));
    events.onopen = () => fetch(API + "/v1/orders", {
      method: "POST",
      headers: { ...auth, "content-type": "application/json" },
      body: JSON.stringify({ items: [{ product_id: PRODUCT, quantity: 1 }] }),
    });
    events.addEventListener("order.created", (e) => {
      const event = JSON.parse(e.data);
      out.textContent = "received " + JSON.stringify({ id: e.lastEventId, seq: event.seq, type: event.type, total: event.data.total_amount });
      events.close();
    });
    events.onerror = () => { out.textContent = "eventsource error"; };
  } catch (e) { out.textContent = "failed: " + e; }
})();
</script></body></html>"#;

async fn a_browser_eventsource_on_another_origin_receives_live_events_with_a_ticket(
    backend: Backend,
) {
    // The page's own server: another origin than the API's.
    let page_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let page_origin = format!("http://{}", page_listener.local_addr().unwrap());
    let app = TestApp::spawn_with(backend, |c| c.cors_origins = vec![page_origin.clone()]).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let product = app.product(&staff.access_token, "TEE", 1999, 10).await;
    let ada = app.customer("ada@example.com").await;
    let html = PAGE
        .replace("__API__", &format!("http://{}", app.addr))
        .replace("__TOKEN__", &ada.access_token)
        .replace("__PRODUCT__", product["id"].as_str().unwrap());
    let page =
        axum::Router::new().route("/", axum::routing::get(move || async move { Html(html) }));
    tokio::spawn(async move { axum::serve(page_listener, page).await });
    let profile = tempfile::tempdir().unwrap();

    let output = chromium(&profile, &format!("{page_origin}/")).await;

    let dom = String::from_utf8_lossy(&output.stdout);
    let received = dom
        .split("received ")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .unwrap_or_else(|| panic!("the page received no event: {dom}"));
    let event: Value = serde_json::from_str(&received.replace("&quot;", "\"")).unwrap();
    assert_eq!(event["type"], "order.created");
    assert_eq!(event["total"], 1999);
    assert_eq!(
        event["id"],
        event["seq"].to_string(),
        "the SSE id is the seq, for Last-Event-ID"
    );
}

/// Swagger UI in the browser, under the page policy the server sends with it: were a
/// script, style or request of the page refused, the operations would not all render, and
/// Chromium logs each refusal.
async fn the_docs_render_every_operation_under_their_policy(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let profile = tempfile::tempdir().unwrap();

    let output = chromium(&profile, &app.url("/docs/")).await;

    let dom = String::from_utf8_lossy(&output.stdout);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        !log.contains("Content Security Policy"),
        "the page broke its policy: {log}"
    );
    let document: Value = app.get("/openapi.json", None).await.json().await.unwrap();
    let operations: usize = document["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    assert_eq!(
        dom.matches(" data-path=\"").count(),
        operations,
        "every operation rendered: {dom}"
    );
}

/// Loads `url` in headless Chromium (its profile in `profile`), waits until the page is
/// idle (or 15 s of its virtual time passed), and returns the DOM (stdout) and the page's
/// console and policy messages (stderr).
async fn chromium(profile: &tempfile::TempDir, url: &str) -> std::process::Output {
    Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--virtual-time-budget=15000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("chromium runs")
}
