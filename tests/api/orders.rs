//! Orders: placing them against stock, idempotent retries, statuses, cancelling.

use reqwest::StatusCode;
use serde_json::{Value, json};
use tidings::domain::Role;

use crate::helpers::{Backend, TestApp, json_body, problem};
use crate::{backend_tests, postgres_tests};

backend_tests!(
    an_order_takes_the_stock_and_is_priced_from_the_catalog,
    an_order_short_of_one_item_takes_nothing_and_names_the_short_item,
    an_order_of_an_unknown_product_is_422,
    invalid_orders_are_422_problems,
    a_retried_order_with_the_same_idempotency_key_is_placed_once,
    concurrent_retries_with_one_idempotency_key_place_one_order,
    an_idempotency_key_reused_with_another_body_is_422,
    concurrent_orders_never_oversell,
    customers_see_only_their_own_orders,
    staff_see_every_order_and_filter_by_status_and_user,
    staff_move_an_order_one_step_at_a_time,
    customers_cannot_change_an_order_status,
    the_owner_cancels_a_pending_order_and_its_stock_returns,
    an_order_cannot_be_cancelled_once_shipped,
    another_customer_cannot_cancel_an_order,
    a_cancellation_racing_a_payment_names_the_status_it_ended,
    the_quantity_cap_holds_for_a_product_s_lines_together,
    a_quantity_written_with_a_fraction_is_an_integer,
    an_order_s_events_carry_the_stock_and_version_it_left,
    an_order_taking_a_product_to_its_threshold_alerts_staff,
    an_order_after_a_price_change_is_priced_at_the_new_price,
    an_order_of_a_product_deleted_since_the_last_order_is_422,
);

postgres_tests!(the_single_statement_places_nothing_when_a_product_changed_since_it_was_read);

/// A cancel and a payment at once: whichever goes first, the cancellation's event says
/// which status it ended.
async fn a_cancellation_racing_a_payment_names_the_status_it_ended(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let ada = app.customer("ada@example.com").await;
    let tee = app.product(&staff.access_token, "TEE", 100, 1000).await;
    for _ in 0..10 {
        let order = app.place_order(&ada.access_token, &[(id(&tee), 1)]).await;
        let before = app.last_event_id().await;

        let (pay, cancel) = (
            format!("/v1/orders/{}/status", id(&order)),
            format!("/v1/orders/{}/cancel", id(&order)),
        );
        let (paid_body, empty) = (json!({"status": "paid"}), json!({}));
        let (paid, cancelled) = tokio::join!(
            app.post(&pay, &paid_body, Some(&staff.access_token)),
            app.post(&cancel, &empty, Some(&ada.access_token)),
        );

        assert_eq!(cancelled.status(), StatusCode::OK);
        let events = app.events_after(before).await;
        let cancel = events
            .iter()
            .find(|e| e.kind == "order.cancelled")
            .expect("the cancellation's event");
        let ended = if paid.status() == StatusCode::OK {
            // Paid first (a payment after the cancellation is refused).
            "paid"
        } else {
            assert_eq!(paid.status(), StatusCode::CONFLICT);
            "pending"
        };
        assert_eq!(cancel.data["previous_status"], ended);
    }
}

async fn stock(app: &TestApp, token: &str, product: &Value) -> i64 {
    let now = app.read_product(token, id(product)).await;
    now["stock"].as_i64().unwrap()
}

fn id(v: &Value) -> &str {
    v["id"].as_str().unwrap()
}

async fn an_order_takes_the_stock_and_is_priced_from_the_catalog(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let tee = app.product(&staff.access_token, "TEE", 1999, 10).await;
    let mug = app.product(&staff.access_token, "MUG", 850, 4).await;
    let ada = app.customer("ada@example.com").await;

    // The same product twice counts as one line with the sum.
    let response = app
        .order(
            &ada.access_token,
            &[(id(&tee), 2), (id(&mug), 3), (id(&tee), 1)],
        )
        .await;

    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(
        response.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/v1/orders/")
    );
    let order: Value = response.json().await.unwrap();
    assert_eq!(order["status"], "pending");
    assert_eq!(order["currency"], "EUR");
    assert_eq!(order["total_amount"], 3 * 1999 + 3 * 850);
    assert_eq!(
        order["user_id"].as_str().unwrap(),
        app.user_id(&ada.access_token).await.to_string()
    );
    let lines = order["items"].as_array().unwrap();
    assert_eq!(lines.len(), 2);
    let tee_line = lines.iter().find(|l| l["sku"] == "TEE").unwrap();
    assert_eq!(
        (
            tee_line["quantity"].as_i64(),
            tee_line["unit_amount"].as_i64()
        ),
        (Some(3), Some(1999))
    );
    assert_eq!(stock(&app, &staff.access_token, &tee).await, 7);
    assert_eq!(stock(&app, &staff.access_token, &mug).await, 1);
    let read = app.read_order(&ada.access_token, id(&order)).await;
    assert_eq!(read, order);
}

async fn an_order_short_of_one_item_takes_nothing_and_names_the_short_item(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let plenty = app.product(&staff.access_token, "PLENTY", 100, 50).await;
    let scarce = app.product(&staff.access_token, "SCARCE", 100, 2).await;
    let ada = app.customer("ada@example.com").await;

    let response = app
        .order(&ada.access_token, &[(id(&plenty), 5), (id(&scarce), 3)])
        .await;

    assert_eq!(response.status(), StatusCode::CONFLICT);
    let body = problem(response).await;
    assert_eq!(body["code"], "insufficient_stock");
    let short = body["errors"].as_array().unwrap();
    assert_eq!(short.len(), 1);
    assert!(short[0]["field"].as_str().unwrap().contains(id(&scarce)));
    assert_eq!(short[0]["message"], "3 requested, 2 in stock");
    assert_eq!(stock(&app, &staff.access_token, &plenty).await, 50);
    assert_eq!(stock(&app, &staff.access_token, &scarce).await, 2);
    let orders = app.get_json("/v1/orders", Some(&ada.access_token)).await;
    assert!(orders["items"].as_array().unwrap().is_empty());
}

async fn an_order_of_an_unknown_product_is_422(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ada = app.customer("ada@example.com").await;
    let unknown = uuid::Uuid::now_v7().to_string();

    let response = app.order(&ada.access_token, &[(&unknown, 1)]).await;

    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = problem(response).await;
    assert_eq!(body["errors"][0]["code"], "unknown_product");
}

async fn invalid_orders_are_422_problems(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let tee = app.product(&staff.access_token, "TEE", 100, 10).await;
    let ada = app.customer("ada@example.com").await;

    for body in [
        json!({"items": []}),
        json!({"items": [{"product_id": id(&tee), "quantity": 0}]}),
        json!({"items": [{"product_id": id(&tee), "quantity": -1}]}),
        json!({"items": [{"product_id": "not-a-uuid", "quantity": 1}]}),
        json!({"items": [{"product_id": id(&tee)}]}),
        json!({"lines": []}),
    ] {
        let response = app.post("/v1/orders", &body, Some(&ada.access_token)).await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}"
        );
        problem(response).await;
    }
    assert_eq!(stock(&app, &staff.access_token, &tee).await, 10);
}

async fn place_with_key(app: &TestApp, token: &str, key: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/orders"))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn a_retried_order_with_the_same_idempotency_key_is_placed_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let tee = app.product(&staff.access_token, "TEE", 100, 10).await;
    let ada = app.customer("ada@example.com").await;
    let body = json!({"items": [{"product_id": id(&tee), "quantity": 2}]});

    let first = place_with_key(&app, &ada.access_token, "checkout-42", &body).await;
    let retry = place_with_key(&app, &ada.access_token, "checkout-42", &body).await;

    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let (first, retry): (Value, Value) = (first.json().await.unwrap(), retry.json().await.unwrap());
    assert_eq!(first, retry);
    assert_eq!(stock(&app, &staff.access_token, &tee).await, 8);
    let orders = app.get_json("/v1/orders", Some(&ada.access_token)).await;
    assert_eq!(orders["items"].as_array().unwrap().len(), 1);
    // Keys belong to their user: another customer's same key is a new order.
    let grace = app.customer("grace@example.com").await;
    let theirs = place_with_key(&app, &grace.access_token, "checkout-42", &body).await;
    assert!(theirs.headers().get("idempotent-replayed").is_none());
    assert_eq!(stock(&app, &staff.access_token, &tee).await, 6);
}

async fn concurrent_retries_with_one_idempotency_key_place_one_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let tee = app.product(&staff.access_token, "TEE", 100, 100).await;
    let ada = app.customer("ada@example.com").await;
    let body = json!({"items": [{"product_id": id(&tee), "quantity": 1}]});

    let attempts = (0..8).map(|_| place_with_key(&app, &ada.access_token, "double-click", &body));
    let responses = futures::future::join_all(attempts).await;

    let mut ids = Vec::new();
    for response in responses {
        let order = json_body(response, StatusCode::CREATED).await;
        ids.push(order["id"].as_str().unwrap().to_owned());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every retry answered with the one order");
    assert_eq!(stock(&app, &staff.access_token, &tee).await, 99);
}

async fn an_idempotency_key_reused_with_another_body_is_422(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let tee = app.product(&staff.access_token, "TEE", 100, 10).await;
    let ada = app.customer("ada@example.com").await;
    place_with_key(
        &app,
        &ada.access_token,
        "k",
        &json!({"items": [{"product_id": id(&tee), "quantity": 1}]}),
    )
    .await;

    let response = place_with_key(
        &app,
        &ada.access_token,
        "k",
        &json!({"items": [{"product_id": id(&tee), "quantity": 2}]}),
    )
    .await;

    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem(response).await["code"], "idempotency_key_reused");
    assert_eq!(stock(&app, &staff.access_token, &tee).await, 9);
    let empty_key = place_with_key(
        &app,
        &ada.access_token,
        " ",
        &json!({"items": [{"product_id": id(&tee), "quantity": 1}]}),
    )
    .await;
    assert_eq!(empty_key.status(), StatusCode::BAD_REQUEST);
}

async fn concurrent_orders_never_oversell(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let a = app.product(&staff.access_token, "A", 100, 6).await;
    let b = app.product(&staff.access_token, "B", 100, 6).await;
    let ada = app.customer("ada@example.com").await;

    // Half the orders name the products in one order, half in the other: locks are taken
    // in id order, so they cannot deadlock.
    let attempts = (0..12).map(|i| {
        let items = if i % 2 == 0 {
            [(id(&a), 1), (id(&b), 1)]
        } else {
            [(id(&b), 1), (id(&a), 1)]
        };
        let token = ada.access_token.clone();
        let app = &app;
        async move { app.order(&token, &items).await.status() }
    });
    let statuses = futures::future::join_all(attempts).await;

    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        6,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count(),
        6,
        "{statuses:?}"
    );
    assert_eq!(stock(&app, &staff.access_token, &a).await, 0);
    assert_eq!(stock(&app, &staff.access_token, &b).await, 0);
}

async fn customers_see_only_their_own_orders(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let tee = app.product(&staff.access_token, "TEE", 100, 10).await;
    let ada = app.customer("ada@example.com").await;
    let grace = app.customer("grace@example.com").await;
    let adas = app.place_order(&ada.access_token, &[(id(&tee), 1)]).await;
    app.place_order(&grace.access_token, &[(id(&tee), 1)]).await;

    let listed = app.get_json("/v1/orders", Some(&ada.access_token)).await;
    let other = app
        .get(
            &format!("/v1/orders/{}", id(&adas)),
            Some(&grace.access_token),
        )
        .await;
    let filtered = app
        .get_json(
            &format!(
                "/v1/orders?user_id={}",
                app.user_id(&grace.access_token).await
            ),
            Some(&ada.access_token),
        )
        .await;

    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(listed["items"][0]["id"], adas["id"]);
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    problem(other).await;
    assert_eq!(
        filtered["items"][0]["id"], adas["id"],
        "a customer's user filter cannot reach others"
    );
}

async fn staff_see_every_order_and_filter_by_status_and_user(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let tee = app.product(&staff.access_token, "TEE", 100, 10).await;
    let ada = app.customer("ada@example.com").await;
    let grace = app.customer("grace@example.com").await;
    let first = app.place_order(&ada.access_token, &[(id(&tee), 1)]).await;
    let second = app.place_order(&ada.access_token, &[(id(&tee), 1)]).await;
    let third = app.place_order(&grace.access_token, &[(id(&tee), 1)]).await;
    app.set_status(&staff.access_token, id(&first), "paid")
        .await;

    let ids = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = app.get_json("/v1/orders", Some(&staff.access_token)).await;
    let paid = app
        .get_json("/v1/orders?status=paid", Some(&staff.access_token))
        .await;
    let adas = app
        .get_json(
            &format!(
                "/v1/orders?user_id={}",
                app.user_id(&ada.access_token).await
            ),
            Some(&staff.access_token),
        )
        .await;
    let page1 = app
        .get_json("/v1/orders?limit=2", Some(&staff.access_token))
        .await;
    let page2 = app
        .get_json(
            &format!(
                "/v1/orders?limit=2&cursor={}",
                page1["next"].as_str().unwrap()
            ),
            Some(&staff.access_token),
        )
        .await;

    assert_eq!(
        ids(&all),
        [id(&third), id(&second), id(&first)],
        "newest first"
    );
    assert_eq!(ids(&paid), [id(&first)]);
    assert_eq!(ids(&adas), [id(&second), id(&first)]);
    assert_eq!([ids(&page1), ids(&page2)].concat(), ids(&all));
    assert!(page2["next"].is_null());
    let bad = app
        .get("/v1/orders?status=lost", Some(&staff.access_token))
        .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    problem(bad).await;
}

async fn staff_move_an_order_one_step_at_a_time(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let tee = app.product(&staff.access_token, "TEE", 100, 10).await;
    let ada = app.customer("ada@example.com").await;
    let order = app.place_order(&ada.access_token, &[(id(&tee), 1)]).await;
    let path = format!("/v1/orders/{}/status", id(&order));

    let skipped = app
        .post(
            &path,
            &json!({"status": "shipped"}),
            Some(&staff.access_token),
        )
        .await;
    assert_eq!(skipped.status(), StatusCode::CONFLICT);
    assert_eq!(problem(skipped).await["code"], "invalid_transition");
    for status in ["paid", "shipped", "delivered"] {
        let moved = app
            .set_status(&staff.access_token, id(&order), status)
            .await;
        assert_eq!(moved["status"], status);
    }
    let backwards = app
        .post(&path, &json!({"status": "paid"}), Some(&staff.access_token))
        .await;
    assert_eq!(backwards.status(), StatusCode::CONFLICT);
    let cancelled = app
        .post(
            &path,
            &json!({"status": "cancelled"}),
            Some(&staff.access_token),
        )
        .await;
    assert_eq!(cancelled.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let unknown = app
        .post(
            &format!("/v1/orders/{}/status", uuid::Uuid::now_v7()),
            &json!({"status": "paid"}),
            Some(&staff.access_token),
        )
        .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let read = app.read_order(&ada.access_token, id(&order)).await;
    assert_eq!(
        (read["status"].as_str(), read["version"].as_i64()),
        (Some("delivered"), Some(4))
    );
}

async fn customers_cannot_change_an_order_status(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let tee = app.product(&staff.access_token, "TEE", 100, 10).await;
    let ada = app.customer("ada@example.com").await;
    let order = app.place_order(&ada.access_token, &[(id(&tee), 1)]).await;

    let response = app
        .post(
            &format!("/v1/orders/{}/status", id(&order)),
            &json!({"status": "paid"}),
            Some(&ada.access_token),
        )
        .await;

    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    problem(response).await;
}

async fn the_owner_cancels_a_pending_order_and_its_stock_returns(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let tee = app.product(&staff.access_token, "TEE", 100, 10).await;
    let ada = app.customer("ada@example.com").await;
    let order = app.place_order(&ada.access_token, &[(id(&tee), 4)]).await;
    let paid = app.place_order(&ada.access_token, &[(id(&tee), 1)]).await;
    app.set_status(&staff.access_token, id(&paid), "paid").await;

    let cancelled = app.cancel_order(&ada.access_token, id(&order)).await;
    app.cancel_order(&staff.access_token, id(&paid)).await;

    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(stock(&app, &staff.access_token, &tee).await, 10);
    let twice = app
        .post(
            &format!("/v1/orders/{}/cancel", id(&order)),
            &json!({}),
            Some(&ada.access_token),
        )
        .await;
    assert_eq!(twice.status(), StatusCode::CONFLICT);
    assert_eq!(stock(&app, &staff.access_token, &tee).await, 10);
}

async fn an_order_cannot_be_cancelled_once_shipped(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let tee = app.product(&staff.access_token, "TEE", 100, 10).await;
    let ada = app.customer("ada@example.com").await;
    let order = app.place_order(&ada.access_token, &[(id(&tee), 2)]).await;
    for status in ["paid", "shipped"] {
        app.set_status(&staff.access_token, id(&order), status)
            .await;
    }

    for token in [&ada.access_token, &staff.access_token] {
        let response = app
            .post(
                &format!("/v1/orders/{}/cancel", id(&order)),
                &json!({}),
                Some(token),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert_eq!(problem(response).await["code"], "invalid_transition");
    }
    assert_eq!(stock(&app, &staff.access_token, &tee).await, 8);
}

async fn another_customer_cannot_cancel_an_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let tee = app.product(&staff.access_token, "TEE", 100, 10).await;
    let ada = app.customer("ada@example.com").await;
    let grace = app.customer("grace@example.com").await;
    let order = app.place_order(&ada.access_token, &[(id(&tee), 2)]).await;

    let response = app
        .post(
            &format!("/v1/orders/{}/cancel", id(&order)),
            &json!({}),
            Some(&grace.access_token),
        )
        .await;

    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let read = app.read_order(&ada.access_token, id(&order)).await;
    assert_eq!(read["status"], "pending");
}

/// The 10,000 cap is on what is ordered of a product, so lines of the same product are
/// merged before it is checked: a hundred lines of 10,000 are not one line of 1,000,000.
async fn the_quantity_cap_holds_for_a_product_s_lines_together(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let tee = app.product(&staff.access_token, "TEE", 1, 5_000_000).await;
    let mug = app.product(&staff.access_token, "MUG", 1, 100).await;
    let ada = app.customer("ada@example.com").await;
    let mut lines = vec![(id(&tee), 10_000); 100];
    lines[99] = (id(&mug), 1);

    let refused = app.order(&ada.access_token, &lines).await;

    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = problem(refused).await;
    assert_eq!(body["code"], "validation_failed");
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{body}");
    assert_eq!(errors[0]["field"], format!("items[{}]", id(&tee)));
    assert_eq!(errors[0]["code"], "out_of_range");
    let unchanged = app.read_product(&ada.access_token, id(&tee)).await;
    assert_eq!(unchanged["stock"], 5_000_000);
    // Lines that add up to the cap exactly are one line of 10,000.
    let placed = app
        .place_order(&ada.access_token, &[(id(&tee), 4_000), (id(&tee), 6_000)])
        .await;
    assert_eq!(placed["items"][0]["quantity"], 10_000);
}

async fn a_quantity_written_with_a_fraction_is_an_integer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let tee = app.product(&staff.access_token, "TEE", 1, 1000).await;
    let ada = app.customer("ada@example.com").await;

    let placed = app
        .post(
            "/v1/orders",
            &json!({"items": [{"product_id": id(&tee), "quantity": 517.0}]}),
            Some(&ada.access_token),
        )
        .await;

    assert_eq!(placed.status(), StatusCode::CREATED);
    let placed: Value = placed.json().await.unwrap();
    assert_eq!(placed["items"][0]["quantity"], 517);
}

/// The order's events as written: `order.created` first, then each product's stock change
/// with the stock and version the order left it at (on PostgreSQL the single statement
/// writes those into events the server built before it ran).
async fn an_order_s_events_carry_the_stock_and_version_it_left(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let tee = app.product(&staff.access_token, "TEE", 1999, 10).await;
    let mug = app.product(&staff.access_token, "MUG", 850, 40).await;
    app.adjust_stock(&staff.access_token, id(&mug), 5).await;
    let ada = app.customer("ada@example.com").await;
    let before = app.last_event_id().await;

    let response = app
        .order(&ada.access_token, &[(id(&mug), 3), (id(&tee), 2)])
        .await;
    let order = json_body(response, StatusCode::CREATED).await;

    let events = app.events_after(before).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "order.created",
            "inventory.stock_changed",
            "inventory.stock_changed"
        ]
    );
    assert_eq!(events[0].data.0["id"], order["id"]);
    assert_eq!(events[0].data.0["total_amount"], 2 * 1999 + 3 * 850);
    let mut ids = [id(&tee), id(&mug)];
    ids.sort_unstable();
    for (event, product_id) in events[1..].iter().zip(ids) {
        let product = app.read_product(&staff.access_token, product_id).await;
        let data = &event.data.0;
        assert_eq!(data["product_id"], product["id"]);
        assert_eq!(data["sku"], product["sku"]);
        assert_eq!(data["stock"], product["stock"], "{data}");
        assert_eq!(data["version"], product["version"], "{data}");
        assert_eq!(data["reason"], "order");
        let taken = if product_id == id(&tee) { 2 } else { 3 };
        assert_eq!(data["delta"], -taken);
    }
    assert_eq!(stock(&app, &staff.access_token, &tee).await, 8);
    assert_eq!(stock(&app, &staff.access_token, &mug).await, 42);
    // The order as answered, as written, and as its event tells it are one.
    let read = app.read_order(&ada.access_token, id(&order)).await;
    assert_eq!(read, order);
    let mut told = events[0].data.0.clone();
    told.as_object_mut().unwrap().remove("version");
    let mut answered = order.clone();
    answered.as_object_mut().unwrap().remove("version");
    assert_eq!(told, answered);
    let tee_now = app.read_product(&staff.access_token, id(&tee)).await;
    assert_eq!(tee_now["updated_at"], order["created_at"]);
}

/// An order that takes a product to its low-stock threshold raises the staff's alert and
/// notifications, as a stock adjustment does (on PostgreSQL that order is placed the full
/// way, which writes them).
async fn an_order_taking_a_product_to_its_threshold_alerts_staff(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let tee = app.product(&staff.access_token, "TEE", 1999, 5).await;
    let ada = app.customer("ada@example.com").await;
    let before = app.last_event_id().await;

    // 5 → 3 stays above the threshold (2); 3 → 2 reaches it.
    for (quantity, left) in [(2, 3), (1, 2)] {
        let response = app.order(&ada.access_token, &[(id(&tee), quantity)]).await;
        json_body(response, StatusCode::CREATED).await;
        assert_eq!(stock(&app, &staff.access_token, &tee).await, left);
    }

    let events = app.events_after(before).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "order.created",
            "inventory.stock_changed",
            "order.created",
            "inventory.stock_changed",
            "inventory.low_stock",
            "notification.created",
        ]
    );
    assert_eq!(events[3].data.0["stock"], 2);
    assert_eq!(events[4].data.0["stock"], 2);
    assert_eq!(events[4].data.0["product_id"], tee["id"]);
}

/// The single statement that places an order on PostgreSQL writes nothing, and says so,
/// when a product is no longer as the order was priced from it (the server then places the
/// order the full way, from the products as they are); and places it when it is.
async fn the_single_statement_places_nothing_when_a_product_changed_since_it_was_read(
    backend: Backend,
) {
    use tidings::events::catalog::StockChanged;
    use tidings::events::{Audience, EventData, NewEvent};
    use tidings::store::orders::{Order, OrderItem, OrderRow, OrderStatus};

    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let tee = app.product(&staff.access_token, "TEE", 1999, 10).await;
    let ada = app.customer("ada@example.com").await;
    let user = app.user_id(&ada.access_token).await;
    let product: uuid::Uuid = id(&tee).parse().unwrap();
    let before = app.last_event_id().await;

    let at = tidings::store::now();
    let attempt = |unit_amount: i64, name: &str, quantity: i64| {
        let order_id = uuid::Uuid::now_v7();
        let row = OrderRow {
            id: order_id,
            user_id: user,
            status: OrderStatus::Pending,
            currency: "EUR".into(),
            total_amount: unit_amount * quantity,
            created_at: at,
            updated_at: at,
            version: 1,
        };
        let lines = vec![OrderItem {
            order_id,
            product_id: product,
            sku: "TEE".into(),
            name: name.into(),
            unit_amount,
            quantity,
        }];
        (row, lines)
    };
    let place = |row: OrderRow, lines: Vec<OrderItem>| {
        let db = app.state.db.clone();
        async move {
            let order = Order::new(row.clone(), lines.clone());
            // Its stock and version are the statement's to write.
            let stock = StockChanged {
                product_id: product,
                sku: "TEE".into(),
                stock: 0,
                delta: -lines[0].quantity,
                reason: "order".into(),
                version: 0,
            };
            let events = [
                NewEvent::new(
                    EventData::OrderCreated(&order),
                    Audience::UserAndStaff(user),
                ),
                NewEvent::new(EventData::StockChanged(&stock), Audience::Everyone),
            ];
            tidings::events::outbox::place_order_at_once(&db, &row, &lines, &events, &[2])
                .await
                .unwrap()
        }
    };

    // A price, a name changed since; more than is in stock; to the threshold (2).
    for (unit_amount, name, quantity) in [
        (1500, "Product TEE", 1),
        (1999, "Old TEE", 1),
        (1999, "Product TEE", 11),
        (1999, "Product TEE", 8),
    ] {
        let (row, lines) = attempt(unit_amount, name, quantity);
        assert!(!place(row, lines).await, "{unit_amount} {name} {quantity}");
    }
    assert_eq!(stock(&app, &staff.access_token, &tee).await, 10);
    assert!(app.events_after(before).await.is_empty());
    let orders = app.get("/v1/orders", Some(&ada.access_token)).await;
    assert_eq!(json_body(orders, StatusCode::OK).await["items"], json!([]));

    let (row, lines) = attempt(1999, "Product TEE", 3);
    assert!(place(row.clone(), lines).await);
    assert_eq!(stock(&app, &staff.access_token, &tee).await, 7);
    let read = app.read_order(&ada.access_token, &row.id.to_string()).await;
    assert_eq!(read["total_amount"], 3 * 1999);
    let events = app.events_after(before).await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].data.0["stock"], 7);
    let version = app.read_product(&staff.access_token, id(&tee)).await["version"].clone();
    assert_eq!(events[1].data.0["version"], version);
}

/// Each instance keeps the products it last saw, to price an order without a read; a
/// price changed since is the one the next order pays (on PostgreSQL the single statement
/// refuses the stale price and the order takes the full path).
async fn an_order_after_a_price_change_is_priced_at_the_new_price(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let tee = app.product(&staff.access_token, "TEE", 1999, 10).await;
    let ada = app.customer("ada@example.com").await;
    let first = app.order(&ada.access_token, &[(id(&tee), 1)]).await;
    assert_eq!(
        json_body(first, StatusCode::CREATED).await["total_amount"],
        1999
    );

    let path = format!("/v1/products/{}", id(&tee));
    let changed = app
        .patch(
            &path,
            &json!({"unit_amount": 2500, "name": "Tee"}),
            &staff.access_token,
        )
        .await;
    json_body(changed, StatusCode::OK).await;

    for _ in 0..2 {
        let response = app.order(&ada.access_token, &[(id(&tee), 2)]).await;
        let order = json_body(response, StatusCode::CREATED).await;
        assert_eq!(order["total_amount"], 5000);
        assert_eq!(order["items"][0]["unit_amount"], 2500);
        assert_eq!(order["items"][0]["name"], "Tee");
    }
    assert_eq!(stock(&app, &staff.access_token, &tee).await, 5);
}

/// A product deleted after it was ordered is unknown to the next order, however recently
/// this instance priced it.
async fn an_order_of_a_product_deleted_since_the_last_order_is_422(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let tee = app.product(&staff.access_token, "TEE", 1999, 10).await;
    let ada = app.customer("ada@example.com").await;
    let first = app.order(&ada.access_token, &[(id(&tee), 1)]).await;
    json_body(first, StatusCode::CREATED).await;

    let deleted = app
        .delete(&format!("/v1/products/{}", id(&tee)), &staff.access_token)
        .await;
    assert!(deleted.status().is_success(), "{}", deleted.status());

    let response = app.order(&ada.access_token, &[(id(&tee), 1)]).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        problem(response).await["errors"][0]["code"],
        "unknown_product"
    );
}
