//! The outbox: every change writes exactly its events, in its own transaction.

use reqwest::StatusCode;
use serde_json::json;
use tidings::domain::Role;
use tidings::store::events::EventRow;

use crate::backend_tests;
use crate::helpers::{Backend, TestApp};

backend_tests!(
    creating_a_product_writes_product_created_for_everyone,
    an_order_writes_its_creation_its_stock_changes_and_a_low_stock_alert,
    a_status_change_writes_the_change_and_the_owners_notification,
    a_cancellation_writes_the_returned_stock_and_the_cancellation,
    product_changes_write_their_events,
    a_change_that_is_rolled_back_leaves_no_event,
);

/// (topic, type, audience, user) of each event, for compact assertions.
fn shape(events: &[EventRow]) -> Vec<(String, String, String, Option<uuid::Uuid>)> {
    events
        .iter()
        .map(|e| {
            (
                e.topic.clone(),
                e.kind.clone(),
                e.audience.clone(),
                e.user_id,
            )
        })
        .collect()
}

fn row(
    topic: &str,
    kind: &str,
    audience: &str,
    user: Option<uuid::Uuid>,
) -> (String, String, String, Option<uuid::Uuid>) {
    (topic.into(), kind.into(), audience.into(), user)
}

async fn creating_a_product_writes_product_created_for_everyone(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let before = app.last_event_id().await;

    let product = app.product(&staff.access_token, "TEE", 1999, 5).await;

    let events = app.events_after(before).await;
    assert_eq!(
        shape(&events),
        [row("inventory", "product.created", "everyone", None)]
    );
    assert_eq!(
        events[0].data.0, product,
        "the event carries the product as the API shows it"
    );
}

async fn an_order_writes_its_creation_its_stock_changes_and_a_low_stock_alert(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let admin = app.user_with_role("admin@example.com", Role::Admin).await;
    let (staff_id, admin_id) = (
        app.user_id(&staff.access_token).await,
        app.user_id(&admin.access_token).await,
    );
    // Threshold 2: taking 4 of 5 crosses it; taking 1 of 10 does not.
    let tee = app.product(&staff.access_token, "TEE", 1000, 5).await;
    let mug = app.product(&staff.access_token, "MUG", 500, 10).await;
    let ada = app.customer("ada@example.com").await;
    let ada_id = app.user_id(&ada.access_token).await;
    let before = app.last_event_id().await;

    let order = app
        .place_order(
            &ada.access_token,
            &[
                (tee["id"].as_str().unwrap(), 4),
                (mug["id"].as_str().unwrap(), 1),
            ],
        )
        .await;

    let events = app.events_after(before).await;
    let mut stock_events: Vec<&EventRow> = events
        .iter()
        .filter(|e| e.kind == "inventory.stock_changed")
        .collect();
    stock_events.sort_by_key(|e| e.data.0["sku"].as_str().unwrap().to_owned());
    assert_eq!(
        shape(&events[..1]),
        [row(
            "orders",
            "order.created",
            "user_and_staff",
            Some(ada_id)
        )]
    );
    assert_eq!(events[0].data.0, order);
    assert_eq!(stock_events.len(), 2);
    assert_eq!(
        (
            stock_events[0].data.0["sku"].as_str(),
            stock_events[0].data.0["delta"].as_i64()
        ),
        (Some("MUG"), Some(-1))
    );
    assert_eq!(
        (
            stock_events[1].data.0["stock"].as_i64(),
            stock_events[1].data.0["delta"].as_i64()
        ),
        (Some(1), Some(-4))
    );
    assert!(
        stock_events
            .iter()
            .all(|e| e.audience == "everyone" && e.topic == "inventory")
    );
    let low: Vec<&EventRow> = events
        .iter()
        .filter(|e| e.kind == "inventory.low_stock")
        .collect();
    assert_eq!(low.len(), 1);
    assert_eq!(
        (low[0].audience.as_str(), low[0].data.0["sku"].as_str()),
        ("staff", Some("TEE"))
    );
    let mut notified: Vec<uuid::Uuid> = events
        .iter()
        .filter(|e| e.kind == "notification.created")
        .map(|e| e.user_id.unwrap())
        .collect();
    notified.sort();
    let mut expected = vec![staff_id, admin_id];
    expected.sort();
    assert_eq!(
        notified, expected,
        "every staff member and admin, not the customer"
    );
    assert!(
        events
            .iter()
            .filter(|e| e.kind == "notification.created")
            .all(|e| e.audience == "user" && e.data.0["kind"] == "low_stock")
    );
    assert_eq!(events.len(), 1 + 2 + 1 + 2);
}

async fn a_status_change_writes_the_change_and_the_owners_notification(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let tee = app.product(&staff.access_token, "TEE", 1000, 50).await;
    let ada = app.customer("ada@example.com").await;
    let ada_id = app.user_id(&ada.access_token).await;
    let order = app
        .place_order(&ada.access_token, &[(tee["id"].as_str().unwrap(), 1)])
        .await;
    let before = app.last_event_id().await;

    app.set_status(&staff.access_token, order["id"].as_str().unwrap(), "paid")
        .await;

    let events = app.events_after(before).await;
    assert_eq!(
        shape(&events),
        [
            row(
                "orders",
                "order.status_changed",
                "user_and_staff",
                Some(ada_id)
            ),
            row(
                "notifications",
                "notification.created",
                "user",
                Some(ada_id)
            ),
        ]
    );
    let change = &events[0].data.0;
    assert_eq!(
        (
            change["order_id"].as_str(),
            change["status"].as_str(),
            change["previous_status"].as_str()
        ),
        (order["id"].as_str(), Some("paid"), Some("pending"))
    );
    assert_eq!(events[1].data.0["kind"], "order_status");
    assert_eq!(events[1].data.0["data"]["order_id"], order["id"]);
}

async fn a_cancellation_writes_the_returned_stock_and_the_cancellation(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let tee = app.product(&staff.access_token, "TEE", 1000, 50).await;
    let ada = app.customer("ada@example.com").await;
    let ada_id = app.user_id(&ada.access_token).await;
    let order = app
        .place_order(&ada.access_token, &[(tee["id"].as_str().unwrap(), 3)])
        .await;
    let before = app.last_event_id().await;

    app.cancel_order(&ada.access_token, order["id"].as_str().unwrap())
        .await;

    let events = app.events_after(before).await;
    assert_eq!(
        shape(&events),
        [
            row("inventory", "inventory.stock_changed", "everyone", None),
            row("orders", "order.cancelled", "user_and_staff", Some(ada_id)),
            row(
                "notifications",
                "notification.created",
                "user",
                Some(ada_id)
            ),
        ]
    );
    assert_eq!(
        (
            events[0].data.0["delta"].as_i64(),
            events[0].data.0["stock"].as_i64()
        ),
        (Some(3), Some(50))
    );
    assert_eq!(events[1].data.0["status"], "cancelled");
}

async fn product_changes_write_their_events(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let tee = app.product(&staff.access_token, "TEE", 1000, 50).await;
    let path = format!("/v1/products/{}", tee["id"].as_str().unwrap());
    let before = app.last_event_id().await;

    app.patch(&path, &json!({"unit_amount": 1200}), &staff.access_token)
        .await;
    app.adjust_stock_for(
        &staff.access_token,
        tee["id"].as_str().unwrap(),
        -5,
        "damaged",
    )
    .await;
    app.delete(&path, &staff.access_token).await;
    app.restore_product(&staff.access_token, tee["id"].as_str().unwrap())
        .await;

    let events = app.events_after(before).await;
    assert_eq!(
        shape(&events),
        [
            row("inventory", "product.updated", "everyone", None),
            row("inventory", "inventory.stock_changed", "everyone", None),
            row("inventory", "product.deleted", "everyone", None),
            row("inventory", "product.updated", "everyone", None),
        ]
    );
    assert_eq!(events[0].data.0["unit_amount"], 1200);
    assert_eq!(
        (
            events[1].data.0["delta"].as_i64(),
            events[1].data.0["reason"].as_str()
        ),
        (Some(-5), Some("damaged"))
    );
    assert_eq!(events[2].data.0["id"], tee["id"]);
    assert!(events[3].data.0["deleted_at"].is_null());
}

async fn a_change_that_is_rolled_back_leaves_no_event(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let plenty = app.product(&staff.access_token, "PLENTY", 100, 50).await;
    let scarce = app.product(&staff.access_token, "SCARCE", 100, 1).await;
    let ada = app.customer("ada@example.com").await;
    let before = app.last_event_id().await;

    // The first line's stock was taken in the transaction before the second was short.
    let short = app
        .order(
            &ada.access_token,
            &[
                (plenty["id"].as_str().unwrap(), 5),
                (scarce["id"].as_str().unwrap(), 2),
            ],
        )
        .await;
    let below_zero = app
        .post(
            &format!(
                "/v1/products/{}/stock-adjustments",
                scarce["id"].as_str().unwrap()
            ),
            &json!({"delta": -2, "reason": "x"}),
            Some(&staff.access_token),
        )
        .await;
    let duplicate = app
        .post(
            "/v1/products",
            &json!({"sku": "plenty", "name": "Again", "unit_amount": 1, "currency": "EUR"}),
            Some(&staff.access_token),
        )
        .await;

    assert_eq!(short.status(), StatusCode::CONFLICT);
    assert_eq!(below_zero.status(), StatusCode::CONFLICT);
    assert_eq!(duplicate.status(), StatusCode::CONFLICT);
    assert!(app.events_after(before).await.is_empty());
    let read = app
        .get_json(
            &format!("/v1/products/{}", plenty["id"].as_str().unwrap()),
            Some(&staff.access_token),
        )
        .await;
    assert_eq!(read["stock"], 50);
}
