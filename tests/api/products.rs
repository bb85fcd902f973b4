//! The catalog: products, their stock, lists, ETags.

use reqwest::StatusCode;
use serde_json::{Value, json};
use tidings::domain::Role;

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, json_body, problem};

backend_tests!(
    staff_create_a_product_with_its_etag_and_location,
    customers_cannot_change_the_catalog,
    a_new_product_with_bad_fields_gets_every_field_listed,
    a_sku_is_unique_whatever_its_case,
    if_none_match_gets_a_304_and_a_change_a_new_etag,
    if_match_with_a_stale_etag_is_412_and_changes_nothing,
    stock_cannot_be_patched,
    a_deleted_product_is_hidden_from_customers_and_can_be_restored,
    stock_adjustments_never_take_stock_below_zero,
    concurrent_stock_adjustments_are_atomic,
    products_are_listed_in_pages_by_each_sort,
    product_lists_filter_by_text_price_and_stock,
    bad_list_parameters_are_422_problems,
    values_a_database_cannot_hold_are_4xx_problems,
    text_with_bidi_overrides_or_invisible_characters_is_refused,
    only_currencies_in_circulation_price_products,
    stock_adjustments_never_take_stock_past_the_product_maximum,
    a_tampered_cursor_is_a_422_not_a_restart,
    whole_numbers_written_with_a_fraction_are_integers,
    a_deleted_product_is_gone_from_its_url_for_staff_too,
);

/// A NUL character (which PostgreSQL cannot store in text or JSON), control characters,
/// the most negative delta and a date before the calendar get clear 4xx answers, on both
/// backends, and change nothing.
async fn values_a_database_cannot_hold_are_4xx_problems(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let admin = app.user_with_role("admin@example.com", Role::Admin).await;
    let product = app.product(&staff.access_token, "A-1", 100, 5).await;
    let id = product["id"].as_str().unwrap();

    let created = app
        .post(
            "/v1/products",
            &json!({"sku": "NUL-1", "name": "a\u{0}b", "unit_amount": 1, "currency": "EUR"}),
            Some(&staff.access_token),
        )
        .await;
    assert_eq!(created.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        problem(created).await["errors"][0]["code"],
        "control_character"
    );
    let adjusted = app
        .post(
            &format!("/v1/products/{id}/stock-adjustments"),
            &json!({"delta": i64::MIN, "reason": "x"}),
            Some(&staff.access_token),
        )
        .await;
    assert_eq!(adjusted.status(), StatusCode::UNPROCESSABLE_ENTITY);
    problem(adjusted).await;
    // A search for a NUL is refused alike on both backends (PostgreSQL could not bind it).
    let searched = app
        .get("/v1/products?q=a%00b", Some(&staff.access_token))
        .await;
    assert_eq!(searched.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let searched = problem(searched).await;
    assert_eq!(searched["errors"][0]["field"], "q", "{searched}");
    assert_eq!(searched["errors"][0]["code"], "control_character");
    let audit = app
        .get(
            "/v1/admin/audit?since=-5000-01-01T00:00:00Z",
            Some(&admin.access_token),
        )
        .await;
    assert!(
        [StatusCode::OK, StatusCode::BAD_REQUEST].contains(&audit.status()),
        "{}",
        audit.status()
    );

    let unchanged = app.read_product(&staff.access_token, id).await;
    assert_eq!(unchanged["stock"], 5);
    assert_eq!(app.get("/livez", None).await.status(), StatusCode::OK);
}

async fn staff_create_a_product_with_its_etag_and_location(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;

    let response = app
        .post(
            "/v1/products",
            &json!({"sku": "tee-blue-m", "name": "  Blue Tee ", "description": "Cotton", "unit_amount": 1999,
                    "currency": "EUR", "stock": 12, "low_stock_threshold": 3}),
            Some(&staff.access_token),
        )
        .await;

    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["etag"], "\"1\"");
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let product: Value = response.json().await.unwrap();
    assert_eq!(
        location,
        format!("/v1/products/{}", product["id"].as_str().unwrap())
    );
    assert_eq!(product["sku"], "TEE-BLUE-M");
    assert_eq!(product["name"], "Blue Tee");
    assert_eq!(product["currency"], "EUR");
    assert_eq!(
        (product["unit_amount"].as_i64(), product["stock"].as_i64()),
        (Some(1999), Some(12))
    );
    assert_eq!(product["deleted_at"], Value::Null);
    assert_eq!(product["version"], 1);
    let customer = app.customer("ada@example.com").await;
    let read = app.get(&location, Some(&customer.access_token)).await;
    assert_eq!(read.status(), StatusCode::OK);
}

async fn customers_cannot_change_the_catalog(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let product = app.product(&staff.access_token, "A-1", 100, 5).await;
    let id = product["id"].as_str().unwrap();
    let customer = app.customer("ada@example.com").await;
    let token = &customer.access_token;

    let attempts = [
        app.post(
            "/v1/products",
            &json!({"sku": "X", "name": "X", "unit_amount": 1, "currency": "EUR"}),
            Some(token),
        )
        .await,
        app.patch(
            &format!("/v1/products/{id}"),
            &json!({"name": "Mine"}),
            token,
        )
        .await,
        app.delete(&format!("/v1/products/{id}"), token).await,
        app.post(
            &format!("/v1/products/{id}/stock-adjustments"),
            &json!({"delta": 5, "reason": "gift"}),
            Some(token),
        )
        .await,
        app.post(
            &format!("/v1/products/{id}/restore"),
            &json!({}),
            Some(token),
        )
        .await,
    ];

    for response in attempts {
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        problem(response).await;
    }
    let unchanged = app.read_product(token, id).await;
    assert_eq!(unchanged["version"], 1);
}

async fn a_new_product_with_bad_fields_gets_every_field_listed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;

    let response = app
        .post(
            "/v1/products",
            &json!({"sku": "no spaces!", "name": " ", "unit_amount": -1, "currency": "EURO", "stock": -5}),
            Some(&staff.access_token),
        )
        .await;

    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = problem(response).await;
    let mut fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    fields.sort();
    assert_eq!(fields, ["currency", "name", "sku", "stock", "unit_amount"]);
}

async fn a_sku_is_unique_whatever_its_case(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    app.product(&staff.access_token, "tee-1", 100, 1).await;
    let other = app.product(&staff.access_token, "tee-2", 100, 1).await;

    let duplicate = app
        .post(
            "/v1/products",
            &json!({"sku": "TEE-1", "name": "Again", "unit_amount": 1, "currency": "EUR"}),
            Some(&staff.access_token),
        )
        .await;
    let renamed = app
        .patch(
            &format!("/v1/products/{}", other["id"].as_str().unwrap()),
            &json!({"sku": "Tee-1"}),
            &staff.access_token,
        )
        .await;

    assert_eq!(duplicate.status(), StatusCode::CONFLICT);
    assert_eq!(problem(duplicate).await["code"], "sku_taken");
    assert_eq!(renamed.status(), StatusCode::CONFLICT);
    assert_eq!(problem(renamed).await["code"], "sku_taken");
}

async fn if_none_match_gets_a_304_and_a_change_a_new_etag(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let product = app.product(&staff.access_token, "A-1", 100, 5).await;
    let path = format!("/v1/products/{}", product["id"].as_str().unwrap());
    let first = app.get(&path, Some(&staff.access_token)).await;
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();

    let cached = app
        .client
        .get(app.url(&path))
        .bearer_auth(&staff.access_token)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(cached.headers()["etag"], etag.as_str());
    assert!(cached.bytes().await.unwrap().is_empty());

    app.patch(&path, &json!({"unit_amount": 150}), &staff.access_token)
        .await;
    let changed = app
        .client
        .get(app.url(&path))
        .bearer_auth(&staff.access_token)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::OK);
    assert_eq!(changed.headers()["etag"], "\"2\"");
}

async fn if_match_with_a_stale_etag_is_412_and_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let product = app.product(&staff.access_token, "A-1", 100, 5).await;
    let path = format!("/v1/products/{}", product["id"].as_str().unwrap());
    let patch = |etag: &'static str, name: &'static str| {
        app.client
            .patch(app.url(&path))
            .bearer_auth(&staff.access_token)
            .header("if-match", etag)
            .json(&json!({"name": name}))
            .send()
    };

    let first = patch("\"1\"", "First").await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["etag"], "\"2\"");
    let stale = patch("\"1\"", "Second").await.unwrap();

    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(problem(stale).await["code"], "version_mismatch");
    let current = app.get_json(&path, Some(&staff.access_token)).await;
    assert_eq!(
        (current["name"].as_str(), current["version"].as_i64()),
        (Some("First"), Some(2))
    );
}

async fn stock_cannot_be_patched(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let product = app.product(&staff.access_token, "A-1", 100, 5).await;

    let response = app
        .patch(
            &format!("/v1/products/{}", product["id"].as_str().unwrap()),
            &json!({"stock": 1000}),
            &staff.access_token,
        )
        .await;

    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem(response).await["errors"][0]["field"], "stock");
}

async fn a_deleted_product_is_hidden_from_customers_and_can_be_restored(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let customer = app.customer("ada@example.com").await;
    let product = app.product(&staff.access_token, "A-1", 100, 5).await;
    let path = format!("/v1/products/{}", product["id"].as_str().unwrap());

    assert_eq!(
        app.delete(&path, &staff.access_token).await.status(),
        StatusCode::NO_CONTENT
    );

    assert_eq!(
        app.get(&path, Some(&customer.access_token)).await.status(),
        StatusCode::NOT_FOUND
    );
    let listed = app
        .get_json("/v1/products", Some(&customer.access_token))
        .await;
    assert!(listed["items"].as_array().unwrap().is_empty());
    let forbidden = app
        .get(
            "/v1/products?include_deleted=true",
            Some(&customer.access_token),
        )
        .await;
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
    let staff_view = app
        .get_json(
            "/v1/products?include_deleted=true",
            Some(&staff.access_token),
        )
        .await;
    assert!(staff_view["items"][0]["deleted_at"].is_string());
    let ordered = app
        .order(
            &customer.access_token,
            &[(product["id"].as_str().unwrap(), 1)],
        )
        .await;
    assert_eq!(ordered.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        app.delete(&path, &staff.access_token).await.status(),
        StatusCode::NOT_FOUND
    );

    app.restore_product(&staff.access_token, product["id"].as_str().unwrap())
        .await;
    assert_eq!(
        app.get(&path, Some(&customer.access_token)).await.status(),
        StatusCode::OK
    );
    let again = app
        .post(
            &format!("{path}/restore"),
            &json!({}),
            Some(&staff.access_token),
        )
        .await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert_eq!(problem(again).await["code"], "not_deleted");
}

async fn stock_adjustments_never_take_stock_below_zero(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let product = app.product(&staff.access_token, "A-1", 100, 5).await;
    let product_id = product["id"].as_str().unwrap();
    let path = format!("/v1/products/{product_id}/stock-adjustments");

    let added = app
        .adjust_stock_for(&staff.access_token, product_id, 10, "restock")
        .await;
    assert_eq!(added["stock"], 15);
    let too_many = app
        .post(
            &path,
            &json!({"delta": -16, "reason": "damaged"}),
            Some(&staff.access_token),
        )
        .await;
    assert_eq!(too_many.status(), StatusCode::CONFLICT);
    assert_eq!(problem(too_many).await["code"], "insufficient_stock");
    let taken = app
        .adjust_stock_for(&staff.access_token, product_id, -15, "damaged")
        .await;
    assert_eq!(taken["stock"], 0);
    for bad in [
        json!({"delta": 0, "reason": "x"}),
        json!({"delta": 1, "reason": ""}),
        json!({"delta": 1}),
    ] {
        let response = app.post(&path, &bad, Some(&staff.access_token)).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
    let unknown = app
        .post(
            &format!("/v1/products/{}/stock-adjustments", uuid::Uuid::now_v7()),
            &json!({"delta": 1, "reason": "x"}),
            Some(&staff.access_token),
        )
        .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

async fn concurrent_stock_adjustments_are_atomic(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let product = app.product(&staff.access_token, "A-1", 100, 10).await;
    let path = format!(
        "/v1/products/{}/stock-adjustments",
        product["id"].as_str().unwrap()
    );

    let take_one = json!({"delta": -1, "reason": "sale"});
    let attempts = (0..25).map(|_| app.post(&path, &take_one, Some(&staff.access_token)));
    let statuses: Vec<StatusCode> = futures::future::join_all(attempts)
        .await
        .iter()
        .map(|r| r.status())
        .collect();

    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        10
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count(),
        15
    );
    let now = app
        .read_product(&staff.access_token, product["id"].as_str().unwrap())
        .await;
    assert_eq!(now["stock"], 0);
    assert_eq!(now["version"], 11);
}

/// Creates products with these SKUs, names, prices and stock, in this order.
async fn catalog(app: &TestApp, token: &str, rows: &[(&str, &str, i64, i64)]) {
    for (sku, name, price, stock) in rows {
        let response = app
            .post("/v1/products", &json!({"sku": sku, "name": name, "unit_amount": price, "currency": "EUR", "stock": stock}), Some(token))
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
    }
}

/// Every SKU of a list, following `next` to the end.
async fn all_skus(app: &TestApp, token: &str, query: &str) -> Vec<String> {
    let mut skus = Vec::new();
    let mut path = format!("/v1/products?limit=2&{query}");
    loop {
        let response = app.get(&path, Some(token)).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let page: Value = response.json().await.unwrap();
        skus.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["sku"].as_str().unwrap().to_owned()),
        );
        match page["next"].as_str() {
            Some(next) => path = format!("/v1/products?limit=2&{query}&cursor={next}"),
            None => return skus,
        }
    }
}

async fn products_are_listed_in_pages_by_each_sort(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let token = &staff.access_token;
    catalog(
        &app,
        token,
        &[
            ("C", "cherry", 300, 0),
            ("A", "Apple", 100, 5),
            ("E", "elderberry", 300, 2),
            ("B", "banana", 200, 9),
            ("D", "Date", 50, 1),
        ],
    )
    .await;

    assert_eq!(
        all_skus(&app, token, "sort=created_at").await,
        ["C", "A", "E", "B", "D"]
    );
    assert_eq!(
        all_skus(&app, token, "sort=-created_at").await,
        ["D", "B", "E", "A", "C"]
    );
    assert_eq!(
        all_skus(&app, token, "sort=name").await,
        ["A", "B", "C", "D", "E"]
    );
    assert_eq!(
        all_skus(&app, token, "sort=-name").await,
        ["E", "D", "C", "B", "A"]
    );
    // Equal prices (C and E, both 300) are ordered by id, which is creation order.
    assert_eq!(
        all_skus(&app, token, "sort=price").await,
        ["D", "A", "B", "C", "E"]
    );
    assert_eq!(
        all_skus(&app, token, "sort=-price").await,
        ["E", "C", "B", "A", "D"]
    );
    assert_eq!(
        all_skus(&app, token, "sort=stock").await,
        ["C", "D", "E", "A", "B"]
    );
}

async fn product_lists_filter_by_text_price_and_stock(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let token = &staff.access_token;
    catalog(
        &app,
        token,
        &[
            ("TEE-1", "Blue Tee", 1500, 3),
            ("TEE-2", "Red Tee", 2500, 0),
            ("MUG-1", "Blue Mug", 900, 7),
            ("CAP_1", "50% Cap", 1200, 1),
        ],
    )
    .await;

    assert_eq!(
        all_skus(&app, token, "sort=name&q=blue").await,
        ["MUG-1", "TEE-1"]
    );
    assert_eq!(
        all_skus(&app, token, "sort=name&q=tee-").await,
        ["TEE-1", "TEE-2"]
    );
    assert_eq!(
        all_skus(&app, token, "q=50%25").await,
        ["CAP_1"],
        "% is matched literally"
    );
    assert_eq!(
        all_skus(&app, token, "sort=price&min_price=1000&max_price=2000").await,
        ["CAP_1", "TEE-1"]
    );
    assert_eq!(
        all_skus(&app, token, "sort=price&in_stock=true").await,
        ["MUG-1", "CAP_1", "TEE-1"]
    );
    assert_eq!(all_skus(&app, token, "in_stock=false").await, ["TEE-2"]);
    assert_eq!(
        all_skus(&app, token, "sort=price&q=tee&in_stock=true&max_price=2000").await,
        ["TEE-1"]
    );
}

async fn bad_list_parameters_are_422_problems(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    catalog(
        &app,
        &staff.access_token,
        &[("A", "a", 1, 1), ("B", "b", 2, 2)],
    )
    .await;
    let page = app
        .get_json("/v1/products?limit=1&sort=price", Some(&staff.access_token))
        .await;
    let cursor = page["next"].as_str().unwrap();

    for query in [
        "sort=weight".to_owned(),
        "limit=0".to_owned(),
        "limit=101".to_owned(),
        "cursor=bm9wZQ".to_owned(),
        format!("sort=name&cursor={cursor}"),
        "min_price=10&max_price=5".to_owned(),
    ] {
        let response = app
            .get(&format!("/v1/products?{query}"), Some(&staff.access_token))
            .await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{query}"
        );
        problem(response).await;
    }
    let not_a_number = app
        .get("/v1/products?min_price=cheap", Some(&staff.access_token))
        .await;
    assert_eq!(not_a_number.status(), StatusCode::BAD_REQUEST);
    problem(not_a_number).await;
}

/// The codes of a 422 problem's errors, by field.
async fn field_codes(response: reqwest::Response) -> Vec<(String, String)> {
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = problem(response).await;
    body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|e| {
            (
                e["field"].as_str().unwrap().to_owned(),
                e["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn text_with_bidi_overrides_or_invisible_characters_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let token = Some(staff.access_token.as_str());
    let product = app.product(&staff.access_token, "A-1", 100, 5).await;
    let id = product["id"].as_str().unwrap();

    for (field, value) in [
        ("name", "invoice\u{202E}fdp.exe"),
        ("name", "zero\u{200B}width"),
        ("description", "\u{FEFF}bom"),
        ("description", "tag\u{E0041}"),
    ] {
        let mut body = json!({"sku": "B-1", "name": "Tee", "unit_amount": 1, "currency": "EUR"});
        body[field] = json!(value);
        let created = app.post("/v1/products", &body, token).await;
        assert_eq!(
            field_codes(created).await,
            [(field.to_owned(), "invisible_character".to_owned())],
            "{value:?}"
        );
        let patched = app
            .patch(
                &format!("/v1/products/{id}"),
                &json!({field: value}),
                &staff.access_token,
            )
            .await;
        assert_eq!(
            field_codes(patched).await,
            [(field.to_owned(), "invisible_character".to_owned())]
        );
    }
    // A SKU is letters, digits, -, _ and . alone: no invisible characters, no spaces.
    for sku in ["B\u{200B}1", "B 1", " B-1"] {
        let created = app
            .post(
                "/v1/products",
                &json!({"sku": sku, "name": "Tee", "unit_amount": 1, "currency": "EUR"}),
                token,
            )
            .await;
        assert_eq!(
            field_codes(created).await,
            [("sku".into(), "invalid".into())]
        );
    }
    // The reason of an adjustment is text as well.
    let adjusted = app
        .post(
            &format!("/v1/products/{id}/stock-adjustments"),
            &json!({"delta": 1, "reason": "re\u{202E}stock"}),
            token,
        )
        .await;
    assert_eq!(
        field_codes(adjusted).await,
        [("reason".into(), "invisible_character".into())]
    );
}

async fn only_currencies_in_circulation_price_products(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let token = Some(staff.access_token.as_str());

    for (n, currency) in [
        "XXX", "XTS", "XAU", "XDR", "BOV", "USN", "HRK", "eur", "EURO",
    ]
    .into_iter()
    .enumerate()
    {
        let created = app
            .post(
                "/v1/products",
                &json!({"sku": format!("C-{n}"), "name": "Tee", "unit_amount": 1, "currency": currency}),
                token,
            )
            .await;
        assert_eq!(
            field_codes(created).await,
            [("currency".into(), "invalid".into())],
            "{currency}"
        );
    }
    for currency in ["EUR", "USD", "JPY", "CHF"] {
        let created = app
            .post(
                "/v1/products",
                &json!({"sku": format!("OK-{currency}"), "name": "Tee", "unit_amount": 1, "currency": currency}),
                token,
            )
            .await;
        assert_eq!(created.status(), StatusCode::CREATED, "{currency}");
    }
}

async fn stock_adjustments_never_take_stock_past_the_product_maximum(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let product = app.product(&staff.access_token, "A-1", 100, 89_998).await;
    let path = format!(
        "/v1/products/{}/stock-adjustments",
        product["id"].as_str().unwrap()
    );
    let adjust = |delta: i64| {
        let body = json!({"delta": delta, "reason": "restock"});
        let (app, path, token) = (&app, &path, &staff.access_token);
        async move { app.post(path, &body, Some(token)).await }
    };

    let first = adjust(999_000_000).await;
    assert_eq!(first.status(), StatusCode::OK);
    let second = adjust(1_000_000_000).await;
    let third = adjust(910_003).await;

    assert_eq!(second.status(), StatusCode::CONFLICT);
    assert_eq!(problem(second).await["code"], "stock_limit");
    assert_eq!(third.status(), StatusCode::CONFLICT);
    // Up to the maximum exactly is fine.
    let last = json_body(adjust(910_002).await, StatusCode::OK).await;
    assert_eq!(last["stock"], 1_000_000_000);
    assert_eq!(last["version"], 3);
}

async fn a_tampered_cursor_is_a_422_not_a_restart(backend: Backend) {
    use base64::Engine;
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    catalog(
        &app,
        &staff.access_token,
        &[("A", "a", 1, 1), ("B", "b", 2, 2), ("C", "c", 3, 3)],
    )
    .await;
    let id = uuid::Uuid::new_v4();
    let cursor =
        |json: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json.to_string());

    for (sort, position) in [
        ("created_at", json!("not a date")),
        ("created_at", json!({"$gt": ""})),
        ("price", json!("1")),
        ("price", json!(1.5)),
        ("name", json!(7)),
        ("name", json!("a\u{0}b")),
    ] {
        let tampered = cursor(json!([sort, [position, id]]));
        let response = app
            .get(
                &format!("/v1/products?sort={sort}&cursor={tampered}"),
                Some(&staff.access_token),
            )
            .await;
        assert_eq!(
            field_codes(response).await,
            [("cursor".into(), "invalid".into())],
            "{sort} {position}"
        );
    }
}

async fn whole_numbers_written_with_a_fraction_are_integers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;

    let created = app
        .create_product(
            &staff.access_token,
            &json!({"sku": "A-1", "name": "Tee", "unit_amount": 517.0, "currency": "EUR", "stock": 2e1}),
        )
        .await;

    assert_eq!(
        (created["unit_amount"].as_i64(), created["stock"].as_i64()),
        (Some(517), Some(20))
    );
    let fraction = app
        .post(
            "/v1/products",
            &json!({"sku": "A-2", "name": "Tee", "unit_amount": 517.5, "currency": "EUR"}),
            Some(&staff.access_token),
        )
        .await;
    assert_eq!(
        field_codes(fraction).await,
        [("unit_amount".into(), "invalid".into())]
    );
}

async fn a_deleted_product_is_gone_from_its_url_for_staff_too(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let product = app.product(&staff.access_token, "A-1", 100, 5).await;
    let path = format!("/v1/products/{}", product["id"].as_str().unwrap());

    app.delete(&path, &staff.access_token).await;

    let read = app.get(&path, Some(&staff.access_token)).await;
    assert_eq!(read.status(), StatusCode::NOT_FOUND);
    problem(read).await;
    app.restore_product(&staff.access_token, product["id"].as_str().unwrap())
        .await;
    assert_eq!(
        app.get(&path, Some(&staff.access_token)).await.status(),
        StatusCode::OK
    );
}
