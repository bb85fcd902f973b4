//! `Tidings-Position`: every read of products, orders and notifications says which point of
//! the event stream its body reflects, so that a client can load, then subscribe from
//! there, and end up with exactly what the database holds.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tidings::domain::Role;
use tokio::sync::watch;

use crate::backend_tests;
use crate::clients::{SseClient, WsClient};
use crate::helpers::{Backend, TestApp};

backend_tests!(
    every_read_answers_with_the_seq_of_the_last_change,
    the_document_declares_the_position_on_every_read_that_sends_it,
    browsers_on_another_origin_may_read_the_position,
    every_event_about_a_resource_carries_its_version,
    a_list_then_a_stream_from_its_position_equals_the_database_under_writes,
);

const HEADER: &str = "tidings-position";

fn id(v: &Value) -> &str {
    v["id"].as_str().unwrap()
}

/// The position a response carries; it must carry one.
fn position_of(response: &reqwest::Response) -> i64 {
    response
        .headers()
        .get(HEADER)
        .unwrap_or_else(|| panic!("{} has no {HEADER}", response.url()))
        .to_str()
        .unwrap()
        .parse()
        .expect("a decimal seq")
}

async fn openapi(app: &TestApp) -> Value {
    app.get_json("/openapi.json", None).await
}

/// The paths of the document's reads of products, orders and notifications.
fn positioned_reads(document: &Value) -> Vec<String> {
    document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(path, item)| {
            item.get("get").is_some()
                && ["/v1/products", "/v1/orders", "/v1/notifications"]
                    .iter()
                    .any(|r| *path == r || path.starts_with(&format!("{r}/")))
        })
        .map(|(path, _)| path.clone())
        .collect()
}

async fn every_read_answers_with_the_seq_of_the_last_change(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let ada = app.customer("ada@example.com").await;
    let tee = app.product(&staff.access_token, "TEE", 100, 1000).await;
    let order = app.place_order(&ada.access_token, &[(id(&tee), 1)]).await;
    app.set_status(&staff.access_token, id(&order), "paid")
        .await;
    // The last change writes one event; once a stream has it, the relay numbered it.
    let mut ws = app.ws(&staff.access_token).await;
    ws.subscribe(&["inventory"], Some(0)).await;
    app.adjust_stock(&staff.access_token, id(&tee), 7).await;
    let last = seq_of_stock_change(&mut ws, 7).await;

    let reads = positioned_reads(&openapi(&app).await);
    assert_eq!(reads.len(), 6, "{reads:?}");
    for path in &reads {
        let path = path
            .replace("/v1/products/{id}", &format!("/v1/products/{}", id(&tee)))
            .replace("/v1/orders/{id}", &format!("/v1/orders/{}", id(&order)));
        let response = app.get(&path, Some(&ada.access_token)).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(position_of(&response), last, "{path}");
    }
    // A 304 says the copy the client holds is current as of the position.
    for path in [
        format!("/v1/products/{}", id(&tee)),
        format!("/v1/orders/{}", id(&order)),
    ] {
        let etag = app.get(&path, Some(&ada.access_token)).await.headers()["etag"].clone();
        let response = app
            .client
            .get(app.url(&path))
            .bearer_auth(&ada.access_token)
            .header("if-none-match", etag)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "{path}");
        assert_eq!(position_of(&response), last, "{path}");
    }
    // It moves with the stream.
    app.adjust_stock(&staff.access_token, id(&tee), 8).await;
    let next = seq_of_stock_change(&mut ws, 8).await;
    assert!(next > last);
    let response = app.get("/v1/products", Some(&ada.access_token)).await;
    assert_eq!(position_of(&response), next);
    // Refused requests carry none.
    let refused = app
        .get("/v1/products?limit=0", Some(&ada.access_token))
        .await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.headers().get(HEADER).is_none());
}

/// The seq of the stock change by `delta`, as a stream delivers it.
async fn seq_of_stock_change(ws: &mut WsClient, delta: i64) -> i64 {
    loop {
        let event = ws.next_of("inventory.stock_changed").await;
        if event["data"]["delta"] == delta {
            return event["seq"].as_i64().unwrap();
        }
    }
}

async fn the_document_declares_the_position_on_every_read_that_sends_it(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let document = openapi(&app).await;

    let reads = positioned_reads(&document);
    let mut declared = Vec::new();
    for path in &reads {
        for (status, response) in document["paths"][path]["get"]["responses"]
            .as_object()
            .unwrap()
        {
            let header = &response["headers"][HEADER];
            if status == "200" || status == "304" {
                assert_eq!(header["schema"]["type"], "integer", "{path} {status}");
                assert_eq!(header["schema"]["minimum"], 0, "{path} {status}");
                declared.push(format!("{path} {status}"));
            } else {
                assert!(header.is_null(), "{path} {status} has no position");
            }
        }
    }
    assert_eq!(
        declared,
        [
            "/v1/notifications 200",
            "/v1/notifications/unread-count 200",
            "/v1/orders 200",
            "/v1/orders/{id} 200",
            "/v1/orders/{id} 304",
            "/v1/products 200",
            "/v1/products/{id} 200",
            "/v1/products/{id} 304",
        ]
    );
    // Other reads carry no position.
    let preferences = &document["paths"]["/v1/me/notification-preferences"]["get"];
    assert!(preferences["responses"]["200"]["headers"][HEADER].is_null());
}

async fn browsers_on_another_origin_may_read_the_position(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.cors_origins = vec!["https://shop.example.com".into()]
    })
    .await;
    let ada = app.customer("ada@example.com").await;

    let response = app
        .client
        .get(app.url("/v1/products"))
        .bearer_auth(&ada.access_token)
        .header("origin", "https://shop.example.com")
        .send()
        .await
        .unwrap();

    assert_eq!(position_of(&response), 0);
    let exposed = response.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(exposed.split(',').any(|h| h.trim() == HEADER), "{exposed}");
}

async fn every_event_about_a_resource_carries_its_version(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.user_with_role("admin@example.com", Role::Admin).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let ada = app.customer("ada@example.com").await;
    let ada_id = app.user_id(&ada.access_token).await.to_string();
    let before = app.last_event_id().await;

    // Every kind of change there is.
    let tee = app.product(&staff.access_token, "TEE", 100, 5).await;
    let tee_path = format!("/v1/products/{}", id(&tee));
    app.patch(&tee_path, &json!({"name": "Tee"}), &staff.access_token)
        .await;
    app.delete(&tee_path, &staff.access_token).await;
    app.restore_product(&staff.access_token, id(&tee)).await;
    // Threshold 2: 5 - 3 crosses it (inventory.low_stock).
    app.adjust_stock(&staff.access_token, id(&tee), -3).await;
    let kept = app.place_order(&ada.access_token, &[(id(&tee), 1)]).await;
    let cancelled = app.place_order(&ada.access_token, &[(id(&tee), 1)]).await;
    app.set_status(&staff.access_token, id(&kept), "paid").await;
    app.cancel_order(&ada.access_token, id(&cancelled)).await;
    for title in ["one", "two"] {
        app.broadcast(&admin.access_token, title, "b", json!([ada_id]))
            .await;
    }
    let notes = app
        .get_json("/v1/notifications", Some(&ada.access_token))
        .await;
    let notes: Vec<String> = notes["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| id(n).to_owned())
        .collect();
    assert_eq!(notes.len(), 4, "two order statuses, two broadcasts");
    let read = app.mark_read(&ada.access_token, &notes[0]).await;
    assert_eq!(read["version"], 2, "a read notification is at version 2");
    app.delete(
        &format!("/v1/notifications/{}", notes[1]),
        &ada.access_token,
    )
    .await;
    app.mark_all_read(&ada.access_token).await;

    let events = app.events_after(before).await;
    let mut kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(
        kinds,
        [
            "inventory.low_stock",
            "inventory.stock_changed",
            "notification.created",
            "notification.deleted",
            "notification.read",
            "order.cancelled",
            "order.created",
            "order.status_changed",
            "product.created",
            "product.deleted",
            "product.updated",
        ]
    );
    for event in &events {
        let data = &event.data.0;
        if event.kind == "notification.deleted" {
            // A removal applies at any version.
            assert_eq!(data, &json!({"id": notes[1]}));
            continue;
        }
        assert!(
            data["version"].as_i64().is_some_and(|v| v >= 1),
            "{} has no version: {data}",
            event.kind
        );
    }
    // Read-all names what it marked: not the one read before, nor the one deleted.
    let read_all = events
        .iter()
        .find(|e| e.kind == "notification.read" && e.data.0["all"] == true)
        .expect("a read-all event");
    let mut unread_then = vec![notes[2].clone(), notes[3].clone()];
    unread_then.sort();
    assert_eq!(read_all.data.0["ids"], json!(unread_then));
    assert_eq!(read_all.data.0["version"], 2);
    // The low-stock alert is of the same version as the stock change it comes with.
    let versions_of = |kind: &str| -> Vec<i64> {
        events
            .iter()
            .filter(|e| e.kind == kind && e.data.0["product_id"] == tee["id"])
            .map(|e| e.data.0["version"].as_i64().unwrap())
            .collect()
    };
    let low = versions_of("inventory.low_stock");
    assert_eq!(low.len(), 1);
    assert!(versions_of("inventory.stock_changed").contains(&low[0]));
}

// --- the race: lists read and streams opened while changes are committed -------------------

/// What a collection holds of a resource: its version and what events change.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    version: i64,
    /// Products: stock, name, deleted. Orders: status. Notifications: read.
    state: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Every product, deleted ones too (a staff reader): every product event is about one
    /// the list showed, or one created after it.
    Products,
    /// The reader's own orders.
    Orders,
    /// The reader's own notifications.
    Notifications,
}

impl Kind {
    fn list(self) -> &'static str {
        match self {
            Kind::Products => "/v1/products?include_deleted=true&limit=100",
            Kind::Orders => "/v1/orders?limit=100",
            Kind::Notifications => "/v1/notifications?limit=100",
        }
    }

    fn topic(self) -> &'static str {
        match self {
            Kind::Products => "inventory",
            Kind::Orders => "orders",
            Kind::Notifications => "notifications",
        }
    }

    /// A resource as a list shows it.
    fn held(self, resource: &Value) -> Held {
        let state = match self {
            Kind::Products => vec![
                resource["stock"].to_string(),
                resource["name"].to_string(),
                (!resource["deleted_at"].is_null()).to_string(),
            ],
            Kind::Orders => vec![resource["status"].to_string()],
            Kind::Notifications => vec![(!resource["read_at"].is_null()).to_string()],
        };
        Held {
            version: resource["version"].as_i64().expect("a version"),
            state,
        }
    }
}

/// The whole list, page by page, and the position of its first page: the earliest, so
/// that a stream from it misses nothing of any page.
async fn load(app: &TestApp, token: &str, kind: Kind) -> (i64, BTreeMap<String, Held>) {
    let mut position = None;
    let mut items = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("{}&cursor={c}", kind.list()),
            None => kind.list().to_owned(),
        };
        let response = app.get(&path, Some(token)).await;
        assert_eq!(response.status(), StatusCode::OK);
        let at = position_of(&response);
        assert!(position.is_none_or(|p| p <= at), "positions only grow");
        position.get_or_insert(at);
        let page: Value = response.json().await.unwrap();
        for resource in page["items"].as_array().unwrap() {
            items.insert(id(resource).to_owned(), kind.held(resource));
        }
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return (position.unwrap(), items),
        }
    }
}

/// A live stream over either transport.
enum Live {
    Ws(Box<WsClient>),
    Sse(SseClient),
}

impl Live {
    async fn open(app: &TestApp, token: &str, topic: &str, since: i64, ws: bool) -> Live {
        if ws {
            let mut client = app.ws(token).await;
            client
                .send(json!({"type": "subscribe", "topics": [topic], "since": since}))
                .await;
            Live::Ws(Box::new(client))
        } else {
            Live::Sse(app.sse(token, topic, Some(since)).await)
        }
    }

    /// The next event, in the same JSON on both transports.
    async fn next(&mut self) -> Value {
        match self {
            Live::Ws(client) => loop {
                let message = client.next_json().await;
                match message["type"].as_str() {
                    Some("subscribed") => continue,
                    _ if message.get("seq").is_some() => return message,
                    _ => panic!("unexpected: {message}"),
                }
            },
            Live::Sse(client) => {
                let event = client.next().await.expect("the stream goes on");
                assert_ne!(event.event, "reset", "a position is always resumable");
                event.data
            }
        }
    }
}

/// A client's copy of one list: loaded, then kept current from a stream opened at the
/// list's position.
struct Follower {
    kind: Kind,
    position: i64,
    items: BTreeMap<String, Held>,
    /// Events that were already in the list (their version not above what it held).
    repeats: usize,
    applied: usize,
    last_seq: i64,
}

impl Follower {
    /// Applies an event, failing at once on one that shows a change went missing: a
    /// version that skips one, or a change to an order or product it never saw.
    fn apply(&mut self, event: &Value) {
        let seq = event["seq"].as_i64().unwrap();
        assert!(
            seq > self.position,
            "only events after the position: {event}"
        );
        assert!(seq > self.last_seq, "in order: {event}");
        self.last_seq = seq;
        let data = &event["data"];
        let kind = event["type"].as_str().unwrap();
        match kind {
            "product.created" | "product.updated" | "order.created" | "notification.created" => {
                let fresh = self.kind.held(data);
                self.put(id(data), fresh, event);
            }
            "inventory.low_stock" => {
                // It comes after the stock change of the same version.
                let held = self.known(data["product_id"].as_str().unwrap(), event);
                assert!(data["version"].as_i64().unwrap() <= held.version, "{event}");
            }
            "product.deleted" | "inventory.stock_changed" => {
                let product = data["id"].as_str().or(data["product_id"].as_str()).unwrap();
                let mut next = self.known(product, event).clone();
                next.version = data["version"].as_i64().unwrap();
                if kind == "product.deleted" {
                    next.state[2] = "true".into();
                } else {
                    next.state[0] = data["stock"].to_string();
                }
                self.put(product, next, event);
            }
            "order.status_changed" | "order.cancelled" => {
                let order = data["order_id"].as_str().unwrap();
                let mut next = self.known(order, event).clone();
                next.version = data["version"].as_i64().unwrap();
                next.state[0] = data["status"].to_string();
                self.put(order, next, event);
            }
            "notification.read" => {
                for note in data["ids"].as_array().expect("read names its ids") {
                    let note = note.as_str().unwrap();
                    // Not held: deleted before the list was read, its read event numbered
                    // after (its deletion follows in the stream).
                    if let Some(held) = self.items.get(note) {
                        let mut next = held.clone();
                        next.version = data["version"].as_i64().unwrap();
                        next.state[0] = "true".into();
                        self.put(note, next, event);
                    }
                }
            }
            "notification.deleted" => {
                self.items.remove(id(data));
                self.applied += 1;
            }
            other => panic!("an event this test does not know: {other}"),
        }
    }

    fn known(&self, id: &str, event: &Value) -> &Held {
        self.items.get(id).unwrap_or_else(|| {
            panic!(
                "lost: a change to {id}, which the list from position {} did not have: {event}",
                self.position
            )
        })
    }

    /// Takes `next` unless the collection already holds its version: a repeat. A version
    /// more than one ahead means a change went missing.
    fn put(&mut self, id: &str, next: Held, event: &Value) {
        let held = self.items.get(id).map(|h| h.version);
        match held {
            Some(version) if next.version <= version => self.repeats += 1,
            Some(version) if next.version > version + 1 => panic!(
                "lost: {id} went from version {version} to {} (position {}): {event}",
                next.version, self.position
            ),
            _ => {
                self.items.insert(id.to_owned(), next);
                self.applied += 1;
            }
        }
    }
}

/// Whether `event` is the marker a follower waits for at the end.
fn is_marker(event: &Value, marker: &str) -> bool {
    let data = &event["data"];
    match event["type"].as_str() {
        Some("inventory.stock_changed") => data["reason"] == marker,
        Some("order.created") => data["id"] == marker,
        Some("notification.created") => data["title"] == marker,
        _ => false,
    }
}

/// Loads a list, opens a stream at its position, and follows it until the marker.
async fn follow(
    app: Arc<TestApp>,
    token: String,
    kind: Kind,
    ws: bool,
    markers: watch::Receiver<Option<[String; 3]>>,
) -> Follower {
    let (position, items) = load(&app, &token, kind).await;
    let live = Live::open(&app, &token, kind.topic(), position, ws).await;
    let mut follower = Follower {
        kind,
        position,
        items,
        repeats: 0,
        applied: 0,
        last_seq: position,
    };
    let slot = kind as usize;
    let mut live = live;
    let mut markers = markers;
    // The marker is known only once writing has stopped, perhaps after its event came:
    // events are kept until then.
    let mut pending: Vec<Value> = Vec::new();
    loop {
        tokio::select! {
            event = live.next() => {
                follower.apply(&event);
                pending.push(event);
            }
            changed = markers.changed() => changed.expect("the test holds the sender"),
        }
        if let Some(marker) = markers
            .borrow_and_update()
            .as_ref()
            .map(|m| m[slot].clone())
            && pending.drain(..).any(|e| is_marker(&e, &marker))
        {
            return follower;
        }
    }
}

/// Writers that keep changing everything a reader follows until `stop`: orders placed,
/// moved and cancelled; stock adjusted, products renamed, deleted and restored;
/// notifications broadcast, read, read all and deleted. Each step bumps `steps`.
struct Writers {
    stop: Arc<AtomicBool>,
    steps: watch::Sender<u64>,
}

impl Writers {
    fn step(&self) -> bool {
        self.steps.send_modify(|n| *n += 1);
        !self.stop.load(Ordering::Relaxed)
    }
}

async fn a_list_then_a_stream_from_its_position_equals_the_database_under_writes(backend: Backend) {
    let app = Arc::new(
        TestApp::spawn_with(backend, |c| {
            // Every follower keeps its stream to the end.
            c.max_connections_per_user = 100;
        })
        .await,
    );
    let admin = app.user_with_role("admin@example.com", Role::Admin).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let ada = app.customer("ada@example.com").await;
    let bob = app.customer("bob@example.com").await;
    let ada_id = app.user_id(&ada.access_token).await.to_string();
    let mut products = Vec::new();
    for sku in ["A", "B", "C", "D"] {
        let product = app.product(&staff.access_token, sku, 100, 1_000_000).await;
        products.push(id(&product).to_owned());
    }
    let products = Arc::new(products);

    let (steps, mut stepped) = watch::channel(0u64);
    let writers = Arc::new(Writers {
        stop: Arc::new(AtomicBool::new(false)),
        steps,
    });
    let mut tasks = Vec::new();
    // Ada and Bob place orders, and Ada cancels some of hers.
    for (who, token) in [
        ("ada", ada.access_token.clone()),
        ("bob", bob.access_token.clone()),
    ] {
        let (app, w, products) = (app.clone(), writers.clone(), products.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0usize;
            while w.step() {
                i += 1;
                let product = &products[i % products.len()];
                let placed = app.order(&token, &[(product, 1 + (i % 3) as i64)]).await;
                if placed.status() != StatusCode::CREATED {
                    // Deleted for a moment by the staff writer: 422.
                    assert_eq!(placed.status(), StatusCode::UNPROCESSABLE_ENTITY);
                    continue;
                }
                let order: Value = placed.json().await.unwrap();
                if who == "ada" && i.is_multiple_of(4) {
                    let cancelled = app
                        .post(
                            &format!("/v1/orders/{}/cancel", id(&order)),
                            &json!({}),
                            Some(&token),
                        )
                        .await;
                    // Staff may have shipped it already: 409.
                    assert!(matches!(
                        cancelled.status(),
                        StatusCode::OK | StatusCode::CONFLICT
                    ));
                }
            }
        }));
    }
    // Staff move open orders along (each move notifies the owner).
    {
        let (app, w, token) = (app.clone(), writers.clone(), staff.access_token.clone());
        tasks.push(tokio::spawn(async move {
            let steps = [
                ("pending", "paid"),
                ("paid", "shipped"),
                ("shipped", "delivered"),
            ];
            let mut i = 0usize;
            while w.step() {
                i += 1;
                let (from, to) = steps[i % steps.len()];
                let open = app
                    .get_json(&format!("/v1/orders?status={from}&limit=5"), Some(&token))
                    .await;
                if let Some(order) = open["items"].as_array().unwrap().first() {
                    // A cancel may win the race: 409.
                    let moved = app
                        .post(
                            &format!("/v1/orders/{}/status", id(order)),
                            &json!({"status": to}),
                            Some(&token),
                        )
                        .await;
                    assert!(matches!(
                        moved.status(),
                        StatusCode::OK | StatusCode::CONFLICT
                    ));
                }
            }
        }));
    }
    // Staff adjust stock, rename, delete and restore products.
    {
        let (app, w, token, products) = (
            app.clone(),
            writers.clone(),
            staff.access_token.clone(),
            products.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = 0usize;
            while w.step() {
                i += 1;
                let product = &products[i % products.len()];
                let path = format!("/v1/products/{product}");
                match i % 10 {
                    3 => {
                        let renamed = app
                            .patch(&path, &json!({"name": format!("Product {i}")}), &token)
                            .await;
                        assert_eq!(renamed.status(), StatusCode::OK);
                    }
                    7 => {
                        // Deleted for a moment (orders of it are refused meanwhile).
                        assert_eq!(
                            app.delete(&path, &token).await.status(),
                            StatusCode::NO_CONTENT
                        );
                        let restored = app
                            .post(&format!("{path}/restore"), &json!({}), Some(&token))
                            .await;
                        assert_eq!(restored.status(), StatusCode::OK);
                    }
                    9 => {
                        app.product(&token, &format!("NEW-{i}"), 100, 10).await;
                    }
                    _ => {
                        let delta = if i.is_multiple_of(2) { 5 } else { -4 };
                        app.post(
                            &format!("{path}/stock-adjustments"),
                            &json!({"delta": delta, "reason": "count"}),
                            Some(&token),
                        )
                        .await;
                    }
                }
            }
        }));
    }
    // The admin sends Ada notes; Ada reads one, reads all, or deletes one.
    {
        let (app, w, token, ada_id) = (
            app.clone(),
            writers.clone(),
            admin.access_token.clone(),
            ada_id.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = 0usize;
            while w.step() {
                i += 1;
                app.post(
                    "/v1/notifications/broadcast",
                    &json!({"title": format!("Note {i}"), "body": "b", "audience": [ada_id]}),
                    Some(&token),
                )
                .await;
            }
        }));
    }
    {
        let (app, w, token) = (app.clone(), writers.clone(), ada.access_token.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0usize;
            while w.step() {
                i += 1;
                if i.is_multiple_of(5) {
                    app.post("/v1/notifications/read-all", &json!({}), Some(&token))
                        .await;
                    continue;
                }
                let unread = app
                    .get_json("/v1/notifications?unread=true&limit=5", Some(&token))
                    .await;
                if let Some(note) = unread["items"].as_array().unwrap().last() {
                    if i.is_multiple_of(3) {
                        app.delete(&format!("/v1/notifications/{}", id(note)), &token)
                            .await;
                    } else {
                        app.post(
                            &format!("/v1/notifications/{}/read", id(note)),
                            &json!({}),
                            Some(&token),
                        )
                        .await;
                    }
                }
            }
        }));
    }

    // The reader: load a list, subscribe from its position, again and again while the
    // writers go on, each copy followed to the end. WebSocket and SSE in turn.
    let (markers_tx, markers) = watch::channel(None);
    let mut followers = Vec::new();
    let rounds = 24;
    for round in 0..rounds {
        // Some changes between one load and the next.
        let seen = *stepped.borrow_and_update();
        stepped.wait_for(|n| *n >= seen + 4).await.unwrap();
        let kind = [Kind::Products, Kind::Orders, Kind::Notifications][round % 3];
        let token = match kind {
            Kind::Products => staff.access_token.clone(),
            _ => ada.access_token.clone(),
        };
        let ws = (round / 3) % 2 == 0;
        followers.push(tokio::spawn(follow(
            app.clone(),
            token,
            kind,
            ws,
            markers.clone(),
        )));
    }
    writers.stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("a writer");
    }

    // Then one last change on each topic, which every follower waits for. Each marker is
    // the last change its list sees: the order (which takes stock) before the stock marker.
    let marker_order = app
        .place_order(&ada.access_token, &[(&products[1], 1)])
        .await;
    let marker_product = app
        .post(
            &format!("/v1/products/{}/stock-adjustments", products[0]),
            &json!({"delta": 1, "reason": "marker"}),
            Some(&staff.access_token),
        )
        .await;
    assert_eq!(marker_product.status(), StatusCode::OK);
    let marker_note = app
        .post(
            "/v1/notifications/broadcast",
            &json!({"title": "marker", "body": "b", "audience": [ada_id]}),
            Some(&admin.access_token),
        )
        .await;
    assert_eq!(marker_note.status(), StatusCode::CREATED);
    markers_tx
        .send(Some([
            "marker".to_owned(),
            id(&marker_order).to_owned(),
            "marker".to_owned(),
        ]))
        .unwrap();

    let mut truth = HashMap::new();
    for kind in [Kind::Products, Kind::Orders, Kind::Notifications] {
        let token = match kind {
            Kind::Products => &staff.access_token,
            _ => &ada.access_token,
        };
        truth.insert(kind as usize, load(&app, token, kind).await.1);
    }
    let (mut repeats, mut applied) = (0, 0);
    for (round, follower) in followers.into_iter().enumerate() {
        let follower = follower.await.expect("a follower");
        let expected = &truth[&(follower.kind as usize)];
        assert!(!expected.is_empty());
        assert_eq!(
            &follower.items, expected,
            "round {round} ({:?} from position {}) differs from the database",
            follower.kind, follower.position
        );
        repeats += follower.repeats;
        applied += follower.applied;
    }
    println!(
        "{rounds} lists followed to the end: {applied} events applied, {repeats} repeats skipped by version"
    );
}
