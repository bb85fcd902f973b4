//! Notifications: order status changes, low stock, admin broadcasts, reading, deleting and
//! muting them.

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use tidings::domain::Role;

use crate::backend_tests;
use crate::helpers::{Backend, PASSWORD, TestApp, json_body, problem};

backend_tests!(
    a_status_change_notifies_the_order_owner_only,
    a_stock_adjustment_to_the_threshold_notifies_every_staff_member_and_no_customer,
    an_order_that_takes_stock_to_the_threshold_notifies_staff_only,
    a_second_decrement_below_the_threshold_does_not_notify_again,
    concurrent_decrements_notify_once_when_they_cross,
    notifications_are_listed_newest_first_in_pages,
    the_unread_filter_and_count_see_only_unread_notifications,
    marking_a_notification_read_sets_read_at_once,
    another_users_notification_cannot_be_read_or_deleted,
    read_all_marks_every_unread_notification_of_the_caller_only,
    a_deleted_notification_is_gone,
    notifications_need_a_token,
    preferences_start_empty_and_are_replaced_by_put,
    a_muted_broadcast_skips_that_user,
    a_staff_member_who_muted_low_stock_is_not_notified,
    an_unknown_notification_kind_is_a_422_problem,
    only_an_admin_may_broadcast,
    a_broadcast_to_all_reaches_every_enabled_user,
    a_broadcast_to_staff_reaches_staff_and_admins_only,
    a_broadcast_to_a_list_reaches_exactly_those_users,
    a_broadcast_to_an_unknown_user_or_audience_is_a_422_problem,
    a_broadcast_reaches_thirty_registered_users,
);

/// Every notification of the caller, newest first.
async fn notifications(app: &TestApp, token: &str) -> Vec<Value> {
    let page = page(app, token, "?limit=100").await;
    assert!(page["next"].is_null(), "fewer than 100 in these tests");
    page["items"].as_array().unwrap().clone()
}

/// One page of `GET /v1/notifications{query}`.
async fn page(app: &TestApp, token: &str, query: &str) -> Value {
    app.get_json(&format!("/v1/notifications{query}"), Some(token))
        .await
}

fn of_kind<'a>(items: &'a [Value], kind: &str) -> Vec<&'a Value> {
    items.iter().filter(|n| n["kind"] == kind).collect()
}

fn titles(items: &[Value]) -> Vec<&str> {
    items.iter().map(|n| n["title"].as_str().unwrap()).collect()
}

async fn unread_count(app: &TestApp, token: &str) -> i64 {
    let body = app
        .get_json("/v1/notifications/unread-count", Some(token))
        .await;
    body["unread"].as_i64().unwrap()
}

async fn broadcast(app: &TestApp, token: &str, title: &str, audience: Value) -> Response {
    app.post(
        "/v1/notifications/broadcast",
        &json!({"title": title, "body": format!("About {title}."), "audience": audience}),
        Some(token),
    )
    .await
}

/// Broadcasts as an admin, expecting 201, and returns the recipient count.
async fn broadcast_ok(app: &TestApp, admin: &str, title: &str, audience: Value) -> u64 {
    let body = json_body(
        broadcast(app, admin, title, audience).await,
        StatusCode::CREATED,
    )
    .await;
    body["recipients"].as_u64().unwrap()
}

async fn adjust_stock(app: &TestApp, staff: &str, product_id: &str, delta: i64) {
    let response = app
        .post(
            &format!("/v1/products/{product_id}/stock-adjustments"),
            &json!({"delta": delta, "reason": "stock count"}),
            Some(staff),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

async fn set_muted(app: &TestApp, token: &str, muted: Value) -> Response {
    app.put(
        "/v1/me/notification-preferences",
        &json!({"muted": muted}),
        token,
    )
    .await
}

/// The muted kinds of a preferences body, sorted (the order is not part of the contract).
fn muted_kinds(preferences: &Value) -> Vec<String> {
    let mut kinds: Vec<String> = preferences["muted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    kinds.sort();
    kinds
}

async fn a_status_change_notifies_the_order_owner_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let ada = app.customer("ada@example.com").await;
    let grace = app.customer("grace@example.com").await;
    let product = app.product(&staff.access_token, "TEA-1", 450, 50).await;
    let product_id = product["id"].as_str().unwrap();
    let order = app.place_order(&ada.access_token, &[(product_id, 1)]).await;
    let order_id = order["id"].as_str().unwrap();
    let last_event = app.last_event_id().await;

    app.set_status(&staff.access_token, order_id, "paid").await;

    let mine = notifications(&app, &ada.access_token).await;
    assert_eq!(mine.len(), 1, "{mine:?}");
    let notification = &mine[0];
    assert_eq!(notification["kind"], "order_status");
    assert_eq!(
        notification["user_id"],
        app.user_id(&ada.access_token).await.to_string()
    );
    assert_eq!(notification["data"]["order_id"], order_id);
    assert_eq!(notification["data"]["status"], "paid");
    assert_eq!(notification["data"]["previous_status"], "pending");
    assert!(notification["title"].as_str().unwrap().contains("paid"));
    assert!(notification["read_at"].is_null());
    assert!(notification["created_at"].is_string());
    assert!(notifications(&app, &grace.access_token).await.is_empty());
    let staff_items = notifications(&app, &staff.access_token).await;
    assert!(of_kind(&staff_items, "order_status").is_empty());
    // Committed with its event, addressed to the owner alone.
    let created: Vec<_> = app
        .events_after(last_event)
        .await
        .into_iter()
        .filter(|e| e.kind == "notification.created")
        .collect();
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(created[0].topic, "notifications");
    assert_eq!(created[0].audience, "user");
    assert_eq!(
        created[0].user_id,
        Some(app.user_id(&ada.access_token).await)
    );
    assert_eq!(created[0].data.0["id"], notification["id"]);
}

async fn a_stock_adjustment_to_the_threshold_notifies_every_staff_member_and_no_customer(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let other_staff = app.user_with_role("staff2@example.com", Role::Staff).await;
    let admin = app.user_with_role("admin@example.com", Role::Admin).await;
    let ada = app.customer("ada@example.com").await;
    let product = app.product(&staff.access_token, "TEA-1", 450, 5).await;
    let product_id = product["id"].as_str().unwrap();

    let last_event = app.last_event_id().await;

    // 5 → 2: to the threshold (2) counts as low.
    adjust_stock(&app, &staff.access_token, product_id, -3).await;

    for token in [
        &staff.access_token,
        &other_staff.access_token,
        &admin.access_token,
    ] {
        let items = notifications(&app, token).await;
        let low = of_kind(&items, "low_stock");
        assert_eq!(low.len(), 1, "{items:?}");
        assert_eq!(low[0]["data"]["product_id"], product_id);
        assert_eq!(low[0]["data"]["sku"], "TEA-1");
        assert_eq!(low[0]["data"]["stock"], 2);
        assert_eq!(low[0]["data"]["low_stock_threshold"], 2);
        assert_eq!(low[0]["user_id"], app.user_id(token).await.to_string());
    }
    assert!(notifications(&app, &ada.access_token).await.is_empty());
    let events = app.events_after(last_event).await;
    let low_stock: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "inventory.low_stock")
        .collect();
    assert_eq!(low_stock.len(), 1, "{events:?}");
    assert_eq!(low_stock[0].audience, "staff");
    let mut notified: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "notification.created")
        .map(|e| (e.audience.as_str(), e.user_id.unwrap()))
        .collect();
    notified.sort();
    let mut staff_ids = vec![
        ("user", app.user_id(&staff.access_token).await),
        ("user", app.user_id(&other_staff.access_token).await),
        ("user", app.user_id(&admin.access_token).await),
    ];
    staff_ids.sort();
    assert_eq!(
        notified, staff_ids,
        "one event per staff member, to them alone"
    );
}

async fn an_order_that_takes_stock_to_the_threshold_notifies_staff_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let admin = app.user_with_role("admin@example.com", Role::Admin).await;
    let ada = app.customer("ada@example.com").await;
    let grace = app.customer("grace@example.com").await;
    let product = app.product(&staff.access_token, "TEA-1", 450, 4).await;
    let product_id = product["id"].as_str().unwrap();

    // 4 → 1: below the threshold in one step.
    app.place_order(&ada.access_token, &[(product_id, 3)]).await;

    for token in [&staff.access_token, &admin.access_token] {
        let items = notifications(&app, token).await;
        let low = of_kind(&items, "low_stock");
        assert_eq!(low.len(), 1, "{items:?}");
        assert_eq!(low[0]["data"]["product_id"], product_id);
        assert_eq!(low[0]["data"]["stock"], 1);
    }
    for token in [&ada.access_token, &grace.access_token] {
        assert!(notifications(&app, token).await.is_empty());
    }
}

async fn a_second_decrement_below_the_threshold_does_not_notify_again(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let ada = app.customer("ada@example.com").await;
    let product = app.product(&staff.access_token, "TEA-1", 450, 4).await;
    let product_id = product["id"].as_str().unwrap();
    adjust_stock(&app, &staff.access_token, product_id, -2).await; // 4 → 2: crosses

    adjust_stock(&app, &staff.access_token, product_id, -1).await; // 2 → 1
    app.place_order(&ada.access_token, &[(product_id, 1)]).await; // 1 → 0

    let items = notifications(&app, &staff.access_token).await;
    assert_eq!(of_kind(&items, "low_stock").len(), 1, "{items:?}");
    // Restocked above the threshold, it notifies again when it next falls to it.
    adjust_stock(&app, &staff.access_token, product_id, 10).await; // 0 → 10
    adjust_stock(&app, &staff.access_token, product_id, -8).await; // 10 → 2
    let items = notifications(&app, &staff.access_token).await;
    let low = of_kind(&items, "low_stock");
    assert_eq!(low.len(), 2, "{items:?}");
    assert_eq!(low[0]["data"]["stock"], 2, "newest first");
    assert_eq!(low[1]["data"]["stock"], 2);
}

async fn concurrent_decrements_notify_once_when_they_cross(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let admin = app.user_with_role("admin@example.com", Role::Admin).await;
    let product = app.product(&staff.access_token, "TEA-1", 450, 6).await;
    let url = app.url(&format!(
        "/v1/products/{}/stock-adjustments",
        product["id"].as_str().unwrap()
    ));

    // Six sales at once: 6 → 0, crossing the threshold (2) exactly once.
    let mut sales = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let request = app
            .client
            .post(&url)
            .bearer_auth(&staff.access_token)
            .json(&json!({"delta": -1, "reason": "sale"}));
        sales.spawn(request.send());
    }
    let responses = sales.join_all().await;

    for response in responses {
        assert_eq!(response.unwrap().status(), StatusCode::OK);
    }
    for token in [&staff.access_token, &admin.access_token] {
        let items = notifications(&app, token).await;
        let low = of_kind(&items, "low_stock");
        assert_eq!(low.len(), 1, "{items:?}");
        assert_eq!(low[0]["data"]["stock"], 2);
    }
}

async fn notifications_are_listed_newest_first_in_pages(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.user_with_role("admin@example.com", Role::Admin).await;
    let ada = app.customer("ada@example.com").await;
    let ada_id = app.user_id(&ada.access_token).await;
    for i in 1..=5 {
        broadcast_ok(
            &app,
            &admin.access_token,
            &format!("Message {i}"),
            json!([ada_id]),
        )
        .await;
    }

    let first = page(&app, &ada.access_token, "?limit=2").await;
    let cursor = first["next"].as_str().expect("a second page").to_owned();
    let second = page(
        &app,
        &ada.access_token,
        &format!("?limit=2&cursor={cursor}"),
    )
    .await;
    let cursor = second["next"].as_str().expect("a third page").to_owned();
    let third = page(
        &app,
        &ada.access_token,
        &format!("?limit=2&cursor={cursor}"),
    )
    .await;

    assert_eq!(
        titles(first["items"].as_array().unwrap()),
        ["Message 5", "Message 4"]
    );
    assert_eq!(
        titles(second["items"].as_array().unwrap()),
        ["Message 3", "Message 2"]
    );
    assert_eq!(titles(third["items"].as_array().unwrap()), ["Message 1"]);
    assert!(third["next"].is_null());
    for query in ["?limit=0", "?limit=101", "?cursor=garbage"] {
        let response = app
            .get(
                &format!("/v1/notifications{query}"),
                Some(&ada.access_token),
            )
            .await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{query}"
        );
        assert_eq!(problem(response).await["code"], "validation_failed");
    }
}

async fn the_unread_filter_and_count_see_only_unread_notifications(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.user_with_role("admin@example.com", Role::Admin).await;
    let ada = app.customer("ada@example.com").await;
    let ada_id = app.user_id(&ada.access_token).await;
    for i in 1..=3 {
        broadcast_ok(
            &app,
            &admin.access_token,
            &format!("Message {i}"),
            json!([ada_id]),
        )
        .await;
    }
    assert_eq!(unread_count(&app, &ada.access_token).await, 3);
    let all = notifications(&app, &ada.access_token).await;
    let middle = all[1]["id"].as_str().unwrap();
    app.mark_read(&ada.access_token, middle).await;

    let unread = page(&app, &ada.access_token, "?unread=true").await;
    let count = unread_count(&app, &ada.access_token).await;

    assert_eq!(
        titles(unread["items"].as_array().unwrap()),
        ["Message 3", "Message 1"]
    );
    assert_eq!(count, 2);
    assert_eq!(notifications(&app, &ada.access_token).await.len(), 3);
    let explicit = page(&app, &ada.access_token, "?unread=false").await;
    assert_eq!(explicit["items"].as_array().unwrap().len(), 3);
    // The filter pages like the full list.
    let first = page(&app, &ada.access_token, "?unread=true&limit=1").await;
    let cursor = first["next"].as_str().unwrap().to_owned();
    let second = page(
        &app,
        &ada.access_token,
        &format!("?unread=true&limit=1&cursor={cursor}"),
    )
    .await;
    assert_eq!(titles(second["items"].as_array().unwrap()), ["Message 1"]);
    assert!(second["next"].is_null());
}

async fn marking_a_notification_read_sets_read_at_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.user_with_role("admin@example.com", Role::Admin).await;
    let ada = app.customer("ada@example.com").await;
    let ada_id = app.user_id(&ada.access_token).await;
    broadcast_ok(&app, &admin.access_token, "Hello", json!([ada_id])).await;
    let id = notifications(&app, &ada.access_token).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let read = app.mark_read(&ada.access_token, &id).await;

    assert_eq!(read["id"], id.as_str());
    assert!(read["read_at"].is_string(), "{read}");
    assert_eq!(unread_count(&app, &ada.access_token).await, 0);
    // Again: still 200, and the first read_at stands.
    let again = app.mark_read(&ada.access_token, &id).await;
    assert_eq!(again["read_at"], read["read_at"]);
    let listed = notifications(&app, &ada.access_token).await;
    assert_eq!(listed[0]["read_at"], read["read_at"]);
}

async fn another_users_notification_cannot_be_read_or_deleted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.user_with_role("admin@example.com", Role::Admin).await;
    let ada = app.customer("ada@example.com").await;
    let grace = app.customer("grace@example.com").await;
    let ada_id = app.user_id(&ada.access_token).await;
    broadcast_ok(&app, &admin.access_token, "For Ada", json!([ada_id])).await;
    let id = notifications(&app, &ada.access_token).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let read = app
        .post(
            &format!("/v1/notifications/{id}/read"),
            &json!({}),
            Some(&grace.access_token),
        )
        .await;
    let deleted = app
        .delete(&format!("/v1/notifications/{id}"), &grace.access_token)
        .await;

    assert_eq!(read.status(), StatusCode::NOT_FOUND);
    assert_eq!(problem(read).await["code"], "not_found");
    assert_eq!(deleted.status(), StatusCode::NOT_FOUND);
    assert_eq!(problem(deleted).await["code"], "not_found");
    // Not even an admin reads another user's notification.
    let by_admin = app
        .post(
            &format!("/v1/notifications/{id}/read"),
            &json!({}),
            Some(&admin.access_token),
        )
        .await;
    assert_eq!(by_admin.status(), StatusCode::NOT_FOUND);
    let unknown = app
        .post(
            &format!("/v1/notifications/{}/read", uuid::Uuid::now_v7()),
            &json!({}),
            Some(&ada.access_token),
        )
        .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    problem(unknown).await;
    let items = notifications(&app, &ada.access_token).await;
    assert_eq!(items.len(), 1);
    assert!(items[0]["read_at"].is_null());
}

async fn read_all_marks_every_unread_notification_of_the_caller_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.user_with_role("admin@example.com", Role::Admin).await;
    let ada = app.customer("ada@example.com").await;
    let grace = app.customer("grace@example.com").await;
    let ada_id = app.user_id(&ada.access_token).await;
    let grace_id = app.user_id(&grace.access_token).await;
    for i in 1..=3 {
        broadcast_ok(
            &app,
            &admin.access_token,
            &format!("Message {i}"),
            json!([ada_id, grace_id]),
        )
        .await;
    }
    let first = notifications(&app, &ada.access_token).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.mark_read(&ada.access_token, &first).await;

    let body = app.mark_all_read(&ada.access_token).await;

    assert_eq!(body, json!({"marked": 2}));
    assert_eq!(unread_count(&app, &ada.access_token).await, 0);
    assert!(
        notifications(&app, &ada.access_token)
            .await
            .iter()
            .all(|n| n["read_at"].is_string())
    );
    assert_eq!(unread_count(&app, &grace.access_token).await, 3);
    let again = app.mark_all_read(&ada.access_token).await;
    assert_eq!(again, json!({"marked": 0}));
}

async fn a_deleted_notification_is_gone(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.user_with_role("admin@example.com", Role::Admin).await;
    let ada = app.customer("ada@example.com").await;
    let ada_id = app.user_id(&ada.access_token).await;
    broadcast_ok(&app, &admin.access_token, "Keep", json!([ada_id])).await;
    broadcast_ok(&app, &admin.access_token, "Drop", json!([ada_id])).await;
    let id = notifications(&app, &ada.access_token).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/notifications/{id}");

    let response = app.delete(&path, &ada.access_token).await;

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(response.bytes().await.unwrap().is_empty());
    assert_eq!(
        titles(&notifications(&app, &ada.access_token).await),
        ["Keep"]
    );
    assert_eq!(unread_count(&app, &ada.access_token).await, 1);
    let again = app.delete(&path, &ada.access_token).await;
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    assert_eq!(problem(again).await["code"], "not_found");
    let read = app
        .post(&format!("{path}/read"), &json!({}), Some(&ada.access_token))
        .await;
    assert_eq!(read.status(), StatusCode::NOT_FOUND);
}

async fn notifications_need_a_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let paths = [
        "/v1/notifications",
        "/v1/notifications/unread-count",
        "/v1/me/notification-preferences",
    ];

    for path in paths {
        let response = app.get(path, None).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(problem(response).await["code"], "missing_token");
    }
    let read_all = app
        .post("/v1/notifications/read-all", &json!({}), None)
        .await;
    assert_eq!(read_all.status(), StatusCode::UNAUTHORIZED);
}

async fn preferences_start_empty_and_are_replaced_by_put(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ada = app.customer("ada@example.com").await;
    let initial = app
        .get_json("/v1/me/notification-preferences", Some(&ada.access_token))
        .await;
    assert_eq!(initial, json!({"muted": []}));

    let response = set_muted(
        &app,
        &ada.access_token,
        json!(["low_stock", "broadcast", "broadcast"]),
    )
    .await;

    let put = json_body(response, StatusCode::OK).await;
    assert_eq!(
        muted_kinds(&put),
        ["broadcast", "low_stock"],
        "deduplicated"
    );
    let got = app
        .get_json("/v1/me/notification-preferences", Some(&ada.access_token))
        .await;
    assert_eq!(muted_kinds(&got), ["broadcast", "low_stock"]);
    assert_eq!(put, got, "PUT answers what GET will");
    // A PUT replaces the whole set.
    let replaced = set_muted(&app, &ada.access_token, json!(["order_status"])).await;
    assert_eq!(replaced.status(), StatusCode::OK);
    let got = app
        .get_json("/v1/me/notification-preferences", Some(&ada.access_token))
        .await;
    assert_eq!(got, json!({"muted": ["order_status"]}));
    let cleared = set_muted(&app, &ada.access_token, json!([])).await;
    assert_eq!(cleared.status(), StatusCode::OK);
    let got = app
        .get_json("/v1/me/notification-preferences", Some(&ada.access_token))
        .await;
    assert_eq!(got, json!({"muted": []}));
}

async fn a_muted_broadcast_skips_that_user(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.user_with_role("admin@example.com", Role::Admin).await;
    let ada = app.customer("ada@example.com").await;
    let grace = app.customer("grace@example.com").await;
    let muted = set_muted(&app, &ada.access_token, json!(["broadcast"])).await;
    assert_eq!(muted.status(), StatusCode::OK);

    let recipients = broadcast_ok(&app, &admin.access_token, "Sale", json!("all")).await;

    assert_eq!(recipients, 2, "admin and grace, not ada");
    assert!(notifications(&app, &ada.access_token).await.is_empty());
    assert_eq!(
        titles(&notifications(&app, &grace.access_token).await),
        ["Sale"]
    );
    // Naming her does not override her mute either.
    let ada_id = app.user_id(&ada.access_token).await;
    let named = broadcast_ok(&app, &admin.access_token, "Personal", json!([ada_id])).await;
    assert_eq!(named, 0);
    assert!(notifications(&app, &ada.access_token).await.is_empty());
    // Other kinds still reach her.
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let product = app.product(&staff.access_token, "TEA-1", 450, 50).await;
    let placed = app
        .place_order(&ada.access_token, &[(product["id"].as_str().unwrap(), 1)])
        .await;
    app.set_status(&staff.access_token, placed["id"].as_str().unwrap(), "paid")
        .await;
    let items = notifications(&app, &ada.access_token).await;
    assert_eq!(of_kind(&items, "order_status").len(), 1, "{items:?}");
}

async fn a_staff_member_who_muted_low_stock_is_not_notified(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let admin = app.user_with_role("admin@example.com", Role::Admin).await;
    let muted = set_muted(&app, &staff.access_token, json!(["low_stock"])).await;
    assert_eq!(muted.status(), StatusCode::OK);
    let product = app.product(&staff.access_token, "TEA-1", 450, 5).await;

    adjust_stock(
        &app,
        &staff.access_token,
        product["id"].as_str().unwrap(),
        -4,
    )
    .await;

    assert!(notifications(&app, &staff.access_token).await.is_empty());
    let items = notifications(&app, &admin.access_token).await;
    assert_eq!(of_kind(&items, "low_stock").len(), 1, "{items:?}");
}

async fn an_unknown_notification_kind_is_a_422_problem(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ada = app.customer("ada@example.com").await;
    set_muted(&app, &ada.access_token, json!(["broadcast"])).await;

    let response = set_muted(
        &app,
        &ada.access_token,
        json!(["order_status", "carrier_pigeon"]),
    )
    .await;

    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = problem(response).await;
    assert_eq!(body["status"], 422);
    let got = app
        .get_json("/v1/me/notification-preferences", Some(&ada.access_token))
        .await;
    assert_eq!(got, json!({"muted": ["broadcast"]}), "unchanged");
    let not_a_list = app
        .put(
            "/v1/me/notification-preferences",
            &json!({"muted": "broadcast"}),
            &ada.access_token,
        )
        .await;
    assert_eq!(not_a_list.status(), StatusCode::UNPROCESSABLE_ENTITY);
    problem(not_a_list).await;
}

async fn only_an_admin_may_broadcast(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let ada = app.customer("ada@example.com").await;

    for token in [&ada.access_token, &staff.access_token] {
        let response = broadcast(&app, token, "Hijack", json!("all")).await;

        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(problem(response).await["code"], "forbidden");
    }
    for token in [&ada.access_token, &staff.access_token] {
        assert!(notifications(&app, token).await.is_empty());
    }
    let anonymous = app
        .post(
            "/v1/notifications/broadcast",
            &json!({"title": "t", "body": "b", "audience": "all"}),
            None,
        )
        .await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

async fn a_broadcast_to_all_reaches_every_enabled_user(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.user_with_role("admin@example.com", Role::Admin).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let ada = app.customer("ada@example.com").await;
    let grace = app.customer("grace@example.com").await;
    let bob = app.customer("bob@example.com").await;
    let bob_id = app.user_id(&bob.access_token).await;
    let disabled = app
        .patch(
            &format!("/v1/users/{bob_id}"),
            &json!({"disabled": true}),
            &admin.access_token,
        )
        .await;
    assert_eq!(disabled.status(), StatusCode::OK);

    let response = app
        .post(
            "/v1/notifications/broadcast",
            &json!({"title": "  Maintenance  ", "body": "Down at noon.", "audience": "all"}),
            Some(&admin.access_token),
        )
        .await;

    let body = json_body(response, StatusCode::CREATED).await;
    assert_eq!(body, json!({"recipients": 4}), "everyone but disabled bob");
    for token in [
        &admin.access_token,
        &staff.access_token,
        &ada.access_token,
        &grace.access_token,
    ] {
        let items = notifications(&app, token).await;
        assert_eq!(items.len(), 1, "{items:?}");
        assert_eq!(items[0]["kind"], "broadcast");
        assert_eq!(items[0]["title"], "Maintenance", "trimmed");
        assert_eq!(items[0]["body"], "Down at noon.");
    }
}

async fn a_broadcast_to_staff_reaches_staff_and_admins_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.user_with_role("admin@example.com", Role::Admin).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let other_staff = app.user_with_role("staff2@example.com", Role::Staff).await;
    let ada = app.customer("ada@example.com").await;

    let recipients = broadcast_ok(&app, &admin.access_token, "Team", json!("staff")).await;

    assert_eq!(recipients, 3);
    for token in [
        &admin.access_token,
        &staff.access_token,
        &other_staff.access_token,
    ] {
        assert_eq!(titles(&notifications(&app, token).await), ["Team"]);
    }
    assert!(notifications(&app, &ada.access_token).await.is_empty());
}

async fn a_broadcast_to_a_list_reaches_exactly_those_users(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.user_with_role("admin@example.com", Role::Admin).await;
    let ada = app.customer("ada@example.com").await;
    let grace = app.customer("grace@example.com").await;
    let bob = app.customer("bob@example.com").await;
    let ada_id = app.user_id(&ada.access_token).await;
    let grace_id = app.user_id(&grace.access_token).await;

    let recipients = broadcast_ok(
        &app,
        &admin.access_token,
        "Just you two",
        json!([ada_id, grace_id, ada_id]),
    )
    .await;

    assert_eq!(recipients, 2, "a repeated id counts once");
    for token in [&ada.access_token, &grace.access_token] {
        assert_eq!(titles(&notifications(&app, token).await), ["Just you two"]);
    }
    assert!(notifications(&app, &bob.access_token).await.is_empty());
    assert!(notifications(&app, &admin.access_token).await.is_empty());
}

async fn a_broadcast_to_an_unknown_user_or_audience_is_a_422_problem(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.user_with_role("admin@example.com", Role::Admin).await;
    let ada = app.customer("ada@example.com").await;
    let ada_id = app.user_id(&ada.access_token).await;
    let stranger = uuid::Uuid::now_v7();

    let unknown = broadcast(&app, &admin.access_token, "Hi", json!([ada_id, stranger])).await;

    assert_eq!(unknown.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = problem(unknown).await;
    assert_eq!(body["code"], "validation_failed");
    assert_eq!(body["errors"][0]["field"], "audience");
    assert_eq!(body["errors"][0]["code"], "unknown_user");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains(&stranger.to_string()),
        "{body}"
    );
    assert!(
        notifications(&app, &ada.access_token).await.is_empty(),
        "all or nothing"
    );
    for audience in [json!("everyone"), json!("ALL"), json!([])] {
        let response = broadcast(&app, &admin.access_token, "Hi", audience.clone()).await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{audience}"
        );
        let body = problem(response).await;
        assert_eq!(body["errors"][0]["field"], "audience", "{audience}");
    }
    for audience in [json!(["not-a-uuid"]), json!(42)] {
        let response = broadcast(&app, &admin.access_token, "Hi", audience.clone()).await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{audience}"
        );
        problem(response).await;
    }
    let blank = app
        .post(
            "/v1/notifications/broadcast",
            &json!({"title": "  ", "body": "", "audience": "all"}),
            Some(&admin.access_token),
        )
        .await;
    assert_eq!(blank.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = problem(blank).await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["title", "body"]);
    assert!(notifications(&app, &ada.access_token).await.is_empty());
}

async fn a_broadcast_reaches_thirty_registered_users(backend: Backend) {
    // Thirty registrations would trip the per-IP limit of the auth routes.
    let app = TestApp::spawn_with(backend, |c| c.auth_rate_per_ip = 0).await;
    let admin = app.user_with_role("admin@example.com", Role::Admin).await;
    let emails: Vec<String> = (0..30).map(|i| format!("user{i:02}@example.com")).collect();
    let mut ids = Vec::new();
    for email in &emails {
        let user = json_body(app.register(email, PASSWORD).await, StatusCode::CREATED).await;
        ids.push(user["id"].as_str().unwrap().to_owned());
    }

    let to_all = broadcast_ok(&app, &admin.access_token, "To all", json!("all")).await;
    let to_list = broadcast_ok(&app, &admin.access_token, "To the list", json!(ids)).await;

    assert_eq!(to_all, 31, "thirty customers and the admin");
    assert_eq!(to_list, 30);
    for email in [&emails[0], &emails[17], &emails[29]] {
        let tokens = app.login_ok(email).await;
        assert_eq!(
            titles(&notifications(&app, &tokens.access_token).await),
            ["To the list", "To all"],
            "{email}"
        );
    }
    assert_eq!(
        titles(&notifications(&app, &admin.access_token).await),
        ["To all"]
    );
}
