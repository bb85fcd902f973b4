//! The audit log: every write by staff and admins, with its actor and request id.

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use tidings::domain::Role;

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, json_body, problem};

backend_tests!(
    product_writes_are_recorded_with_actor_target_summary_and_request_id,
    order_status_user_update_and_broadcast_are_recorded,
    a_write_without_a_request_id_records_the_one_the_server_gave_it,
    a_customers_own_order_is_not_recorded,
    the_log_filters_by_actor_and_action,
    the_log_filters_by_time_with_since_inclusive_and_until_exclusive,
    the_log_is_paged_newest_first,
    only_admins_read_the_audit_log,
);

/// Sends a JSON write as `token` with the given `x-request-id`.
async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    body: &Value,
    token: &str,
    request_id: &str,
) -> Response {
    app.client
        .request(method, app.url(path))
        .json(body)
        .bearer_auth(token)
        .header("x-request-id", request_id)
        .send()
        .await
        .expect("the request is sent")
}

/// Every entry matching `query` (such as `?action=product.create`), newest first.
async fn audit(app: &TestApp, admin: &str, query: &str) -> Vec<Value> {
    let separator = if query.is_empty() { "?" } else { "&" };
    let page = app
        .get_json(
            &format!("/v1/admin/audit{query}{separator}limit=100"),
            Some(admin),
        )
        .await;
    assert!(page["next"].is_null(), "fewer than 100 in these tests");
    page["items"].as_array().unwrap().clone()
}

fn actions(entries: &[Value]) -> Vec<&str> {
    entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect()
}

fn ids(entries: &[Value]) -> Vec<&str> {
    entries.iter().map(|e| e["id"].as_str().unwrap()).collect()
}

fn created_at(entry: &Value) -> DateTime<Utc> {
    entry["created_at"]
        .as_str()
        .unwrap()
        .parse()
        .expect("created_at is RFC 3339")
}

/// The one entry with this action.
fn only<'a>(entries: &'a [Value], action: &str) -> &'a Value {
    let found: Vec<&Value> = entries.iter().filter(|e| e["action"] == action).collect();
    assert_eq!(found.len(), 1, "one {action}: {entries:?}");
    found[0]
}

async fn product_writes_are_recorded_with_actor_target_summary_and_request_id(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.user_with_role("admin@example.com", Role::Admin).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let staff_id = app.user_id(&staff.access_token).await.to_string();
    let before = Utc::now();

    let created = send(
        &app,
        Method::POST,
        "/v1/products",
        &json!({"sku": "TEA-1", "name": "Green tea", "unit_amount": 450, "currency": "EUR",
                "stock": 10, "low_stock_threshold": 2}),
        &staff.access_token,
        "req-create",
    )
    .await;
    let product = json_body(created, StatusCode::CREATED).await;
    let product_id = product["id"].as_str().unwrap();
    let path = format!("/v1/products/{product_id}");
    let updated = send(
        &app,
        Method::PATCH,
        &path,
        &json!({"name": "Sencha"}),
        &staff.access_token,
        "req-update",
    )
    .await;
    assert_eq!(updated.status(), StatusCode::OK);
    let adjusted = send(
        &app,
        Method::POST,
        &format!("{path}/stock-adjustments"),
        &json!({"delta": -3, "reason": "damaged"}),
        &staff.access_token,
        "req-adjust",
    )
    .await;
    assert_eq!(adjusted.status(), StatusCode::OK);

    let entries = audit(&app, &admin.access_token, "").await;

    assert_eq!(
        actions(&entries),
        ["product.stock_adjust", "product.update", "product.create"]
    );
    for (entry, request_id) in entries
        .iter()
        .zip(["req-adjust", "req-update", "req-create"])
    {
        assert_eq!(entry["actor_id"], staff_id.as_str());
        assert_eq!(entry["target_type"], "product");
        assert_eq!(entry["target_id"], product_id);
        assert_eq!(entry["request_id"], request_id);
        let at = created_at(entry);
        assert!(at >= before - chrono::Duration::seconds(1), "{at}");
        assert!(at <= Utc::now(), "{at}");
    }
    let create = only(&entries, "product.create");
    assert_eq!(create["summary"]["sku"], "TEA-1");
    assert_eq!(create["summary"]["name"], "Green tea");
    assert_eq!(
        only(&entries, "product.update")["summary"]["name"],
        "Sencha"
    );
    let adjust = &only(&entries, "product.stock_adjust")["summary"];
    assert_eq!(adjust["delta"], -3);
    assert_eq!(adjust["reason"], "damaged");
    assert_eq!(adjust["stock"], 7);
}

async fn order_status_user_update_and_broadcast_are_recorded(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.user_with_role("admin@example.com", Role::Admin).await;
    let admin_id = app.user_id(&admin.access_token).await.to_string();
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let staff_id = app.user_id(&staff.access_token).await.to_string();
    let ada = app.customer("ada@example.com").await;
    let bob = app.customer("bob@example.com").await;
    let bob_id = app.user_id(&bob.access_token).await.to_string();
    let product = app.product(&staff.access_token, "TEA-1", 450, 10).await;
    let placed = app
        .place_order(&ada.access_token, &[(product["id"].as_str().unwrap(), 1)])
        .await;
    let order_id = placed["id"].as_str().unwrap();

    let paid = send(
        &app,
        Method::POST,
        &format!("/v1/orders/{order_id}/status"),
        &json!({"status": "paid"}),
        &staff.access_token,
        "req-status",
    )
    .await;
    let promoted = send(
        &app,
        Method::PATCH,
        &format!("/v1/users/{bob_id}"),
        &json!({"role": "staff"}),
        &admin.access_token,
        "req-user",
    )
    .await;
    let broadcast = send(
        &app,
        Method::POST,
        "/v1/notifications/broadcast",
        &json!({"title": "Hello", "body": "Hello, everyone.", "audience": "all"}),
        &admin.access_token,
        "req-broadcast",
    )
    .await;

    assert_eq!(paid.status(), StatusCode::OK);
    assert_eq!(promoted.status(), StatusCode::OK);
    assert_eq!(broadcast.status(), StatusCode::CREATED);
    let entries = audit(&app, &admin.access_token, "").await;
    assert_eq!(
        actions(&entries),
        [
            "notification.broadcast",
            "user.update",
            "order.status",
            "product.create"
        ]
    );
    let status = only(&entries, "order.status");
    assert_eq!(status["actor_id"], staff_id.as_str());
    assert_eq!(status["target_type"], "order");
    assert_eq!(status["target_id"], order_id);
    assert_eq!(status["summary"], json!({"from": "pending", "to": "paid"}));
    assert_eq!(status["request_id"], "req-status");
    let user = only(&entries, "user.update");
    assert_eq!(user["actor_id"], admin_id.as_str());
    assert_eq!(user["target_type"], "user");
    assert_eq!(user["target_id"], bob_id.as_str());
    assert_eq!(user["summary"]["role"], "staff");
    assert_eq!(user["request_id"], "req-user");
    let sent = only(&entries, "notification.broadcast");
    assert_eq!(sent["actor_id"], admin_id.as_str());
    assert_eq!(sent["target_type"], "notification");
    assert_eq!(sent["target_id"], "broadcast");
    assert_eq!(sent["summary"]["title"], "Hello");
    assert_eq!(sent["summary"]["recipients"], 4);
    assert_eq!(sent["request_id"], "req-broadcast");
}

async fn a_write_without_a_request_id_records_the_one_the_server_gave_it(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.user_with_role("admin@example.com", Role::Admin).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;

    let response = app
        .post(
            "/v1/products",
            &json!({"sku": "TEA-1", "name": "Green tea", "unit_amount": 450,
                    "currency": "EUR", "stock": 10, "low_stock_threshold": 2}),
            Some(&staff.access_token),
        )
        .await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let given = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(!given.is_empty());
    let entries = audit(&app, &admin.access_token, "").await;
    assert_eq!(only(&entries, "product.create")["request_id"], given);
}

async fn a_customers_own_order_is_not_recorded(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.user_with_role("admin@example.com", Role::Admin).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let ada = app.customer("ada@example.com").await;
    let ada_id = app.user_id(&ada.access_token).await;
    let product = app.product(&staff.access_token, "TEA-1", 450, 10).await;
    let product_id = product["id"].as_str().unwrap();

    let placed = app.place_order(&ada.access_token, &[(product_id, 2)]).await;
    app.cancel_order(&ada.access_token, placed["id"].as_str().unwrap())
        .await;
    let preferences = app
        .put(
            "/v1/me/notification-preferences",
            &json!({"muted": ["broadcast"]}),
            &ada.access_token,
        )
        .await;

    assert_eq!(preferences.status(), StatusCode::OK);
    let entries = audit(&app, &admin.access_token, "").await;
    assert_eq!(actions(&entries), ["product.create"]);
    assert!(
        audit(&app, &admin.access_token, &format!("?actor={ada_id}"))
            .await
            .is_empty()
    );
    // A staff member's own order is a staff write, and is recorded.
    let staff_order = app
        .place_order(&staff.access_token, &[(product_id, 1)])
        .await;
    let entries = audit(&app, &admin.access_token, "?action=order.create").await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["target_id"], staff_order["id"]);
}

async fn the_log_filters_by_actor_and_action(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.user_with_role("admin@example.com", Role::Admin).await;
    let admin_id = app.user_id(&admin.access_token).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let staff_id = app.user_id(&staff.access_token).await;
    let first = app.product(&staff.access_token, "TEA-1", 450, 10).await;
    app.product(&staff.access_token, "TEA-2", 450, 10).await;
    let third = app.product(&admin.access_token, "TEA-3", 450, 10).await;
    let adjusted = app
        .post(
            &format!(
                "/v1/products/{}/stock-adjustments",
                first["id"].as_str().unwrap()
            ),
            &json!({"delta": 5, "reason": "delivery"}),
            Some(&admin.access_token),
        )
        .await;
    assert_eq!(adjusted.status(), StatusCode::OK);

    let by_staff = audit(&app, &admin.access_token, &format!("?actor={staff_id}")).await;
    let creates = audit(&app, &admin.access_token, "?action=product.create").await;
    let admin_creates = audit(
        &app,
        &admin.access_token,
        &format!("?actor={admin_id}&action=product.create"),
    )
    .await;

    assert_eq!(actions(&by_staff), ["product.create", "product.create"]);
    assert!(
        by_staff
            .iter()
            .all(|e| e["actor_id"] == staff_id.to_string())
    );
    assert_eq!(creates.len(), 3);
    assert!(creates.iter().all(|e| e["action"] == "product.create"));
    assert_eq!(admin_creates.len(), 1);
    assert_eq!(admin_creates[0]["target_id"], third["id"]);
    assert!(
        audit(&app, &admin.access_token, "?action=product.delete")
            .await
            .is_empty()
    );
    let nobody = uuid::Uuid::now_v7();
    assert!(
        audit(&app, &admin.access_token, &format!("?actor={nobody}"))
            .await
            .is_empty()
    );
    let malformed = app
        .get(
            "/v1/admin/audit?actor=not-a-uuid",
            Some(&admin.access_token),
        )
        .await;
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    problem(malformed).await;
}

async fn the_log_filters_by_time_with_since_inclusive_and_until_exclusive(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.user_with_role("admin@example.com", Role::Admin).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    for sku in ["TEA-1", "TEA-2", "TEA-3"] {
        app.product(&staff.access_token, sku, 450, 10).await;
    }
    let all = audit(&app, &admin.access_token, "").await;
    assert_eq!(all.len(), 3);
    let middle = created_at(&all[1]);
    let at_or_after: Vec<&str> = all
        .iter()
        .filter(|e| created_at(e) >= middle)
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    let before: Vec<&str> = all
        .iter()
        .filter(|e| created_at(e) < middle)
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert!(at_or_after.contains(&all[1]["id"].as_str().unwrap()));
    assert!(!before.is_empty(), "the first write was earlier: {all:?}");
    let zulu = middle.to_rfc3339_opts(SecondsFormat::Micros, true);
    let utc_offset = middle
        .to_rfc3339_opts(SecondsFormat::Micros, false)
        .replace('+', "%2B");
    let plus_two = middle
        .with_timezone(&FixedOffset::east_opt(2 * 3600).unwrap())
        .to_rfc3339_opts(SecondsFormat::Micros, false)
        .replace('+', "%2B");

    for since in [&zulu, &utc_offset, &plus_two] {
        let since_page = audit(&app, &admin.access_token, &format!("?since={since}")).await;
        let until_page = audit(&app, &admin.access_token, &format!("?until={since}")).await;

        assert_eq!(ids(&since_page), at_or_after, "since={since}");
        assert_eq!(ids(&until_page), before, "until={since}");
    }
    let window = audit(
        &app,
        &admin.access_token,
        &format!(
            "?since={zulu}&until={}",
            created_at(&all[0]).to_rfc3339_opts(SecondsFormat::Micros, true)
        ),
    )
    .await;
    assert!(
        ids(&window).contains(&all[1]["id"].as_str().unwrap()),
        "{window:?}"
    );
    assert!(!ids(&window).contains(&all[0]["id"].as_str().unwrap()));
    let future =
        (Utc::now() + chrono::Duration::days(1)).to_rfc3339_opts(SecondsFormat::Secs, true);
    assert!(
        audit(&app, &admin.access_token, &format!("?since={future}"))
            .await
            .is_empty()
    );
    assert_eq!(
        audit(&app, &admin.access_token, &format!("?until={future}"))
            .await
            .len(),
        3
    );
    let malformed = app
        .get("/v1/admin/audit?since=yesterday", Some(&admin.access_token))
        .await;
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem(malformed).await["code"], "invalid_query");
}

async fn the_log_is_paged_newest_first(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.user_with_role("admin@example.com", Role::Admin).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let mut product_ids = Vec::new();
    for i in 1..=5 {
        let product = app
            .product(&staff.access_token, &format!("TEA-{i}"), 450, 10)
            .await;
        product_ids.push(product["id"].as_str().unwrap().to_owned());
    }

    let mut pages = Vec::new();
    let mut path = "/v1/admin/audit?limit=2".to_owned();
    loop {
        let page = app.get_json(&path, Some(&admin.access_token)).await;
        let items = page["items"].as_array().unwrap().clone();
        pages.push(items);
        match page["next"].as_str() {
            Some(next) => path = format!("/v1/admin/audit?limit=2&cursor={next}"),
            None => break,
        }
    }

    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [2, 2, 1]);
    let targets: Vec<String> = pages
        .iter()
        .flatten()
        .map(|e| e["target_id"].as_str().unwrap().to_owned())
        .collect();
    product_ids.reverse();
    assert_eq!(targets, product_ids, "newest first, none repeated");
    let times: Vec<DateTime<Utc>> = pages.iter().flatten().map(created_at).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    let too_big = app
        .get("/v1/admin/audit?limit=101", Some(&admin.access_token))
        .await;
    assert_eq!(too_big.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem(too_big).await["code"], "validation_failed");
    let bad_cursor = app
        .get("/v1/admin/audit?cursor=garbage", Some(&admin.access_token))
        .await;
    assert_eq!(bad_cursor.status(), StatusCode::UNPROCESSABLE_ENTITY);
    problem(bad_cursor).await;
}

async fn only_admins_read_the_audit_log(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let ada = app.customer("ada@example.com").await;
    app.product(&staff.access_token, "TEA-1", 450, 10).await;

    for token in [&staff.access_token, &ada.access_token] {
        let response = app.get("/v1/admin/audit", Some(token)).await;

        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(problem(response).await["code"], "forbidden");
    }
    let anonymous = app.get("/v1/admin/audit", None).await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    problem(anonymous).await;
}
