//! User administration: roles, disabling, listing.

use reqwest::StatusCode;
use serde_json::{Value, json};
use tidings::domain::Role;

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, problem};

backend_tests!(
    an_admin_changes_a_role_and_the_old_token_stops_working,
    only_an_admin_changes_roles,
    a_disabled_user_cannot_log_in_or_use_earlier_tokens,
    an_admin_cannot_change_themself,
    updating_an_unknown_user_is_404,
    users_are_listed_in_pages_for_admins_only,
);

async fn user_id(app: &TestApp, token: &str) -> String {
    let me = app.get_json("/v1/me", Some(token)).await;
    me["id"].as_str().unwrap().to_owned()
}

async fn an_admin_changes_a_role_and_the_old_token_stops_working(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.user_with_role("admin@example.com", Role::Admin).await;
    let ada = app.customer("ada@example.com").await;
    let id = user_id(&app, &ada.access_token).await;

    let response = app
        .patch(
            &format!("/v1/users/{id}"),
            &json!({"role": "staff"}),
            &admin.access_token,
        )
        .await;

    assert_eq!(response.status(), StatusCode::OK);
    let user: Value = response.json().await.unwrap();
    assert_eq!(user["role"], "staff");
    // The customer token carried the old role: it is refused; a new login carries staff.
    assert_eq!(
        app.get("/v1/me", Some(&ada.access_token)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let fresh = app.login_ok("ada@example.com").await;
    let me = app.get_json("/v1/me", Some(&fresh.access_token)).await;
    assert_eq!(me["role"], "staff");
}

async fn only_an_admin_changes_roles(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let ada = app.customer("ada@example.com").await;
    let id = user_id(&app, &ada.access_token).await;

    for token in [&staff.access_token, &ada.access_token] {
        let response = app
            .patch(&format!("/v1/users/{id}"), &json!({"role": "admin"}), token)
            .await;

        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(problem(response).await["code"], "forbidden");
    }
    let me = app.get_json("/v1/me", Some(&ada.access_token)).await;
    assert_eq!(me["role"], "customer");
}

async fn a_disabled_user_cannot_log_in_or_use_earlier_tokens(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.user_with_role("admin@example.com", Role::Admin).await;
    let ada = app.customer("ada@example.com").await;
    let id = user_id(&app, &ada.access_token).await;

    let response = app
        .patch(
            &format!("/v1/users/{id}"),
            &json!({"disabled": true}),
            &admin.access_token,
        )
        .await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        app.get("/v1/me", Some(&ada.access_token)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let refresh = app
        .post(
            "/v1/auth/refresh",
            &json!({"refresh_token": ada.refresh_token}),
            None,
        )
        .await;
    assert_eq!(refresh.status(), StatusCode::UNAUTHORIZED);
    let login = app.login("ada@example.com", crate::helpers::PASSWORD).await;
    assert_eq!(login.status(), StatusCode::FORBIDDEN);
    assert_eq!(problem(login).await["code"], "account_disabled");

    app.patch(
        &format!("/v1/users/{id}"),
        &json!({"disabled": false}),
        &admin.access_token,
    )
    .await;
    assert_eq!(
        app.login("ada@example.com", crate::helpers::PASSWORD)
            .await
            .status(),
        StatusCode::OK
    );
}

async fn an_admin_cannot_change_themself(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.user_with_role("admin@example.com", Role::Admin).await;
    let id = user_id(&app, &admin.access_token).await;

    let response = app
        .patch(
            &format!("/v1/users/{id}"),
            &json!({"role": "customer"}),
            &admin.access_token,
        )
        .await;

    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(problem(response).await["code"], "cannot_modify_self");
}

async fn updating_an_unknown_user_is_404(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.user_with_role("admin@example.com", Role::Admin).await;

    let unknown = app
        .patch(
            &format!("/v1/users/{}", uuid::Uuid::now_v7()),
            &json!({"role": "staff"}),
            &admin.access_token,
        )
        .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    problem(unknown).await;

    let malformed = app
        .patch(
            "/v1/users/not-a-uuid",
            &json!({"role": "staff"}),
            &admin.access_token,
        )
        .await;
    assert_eq!(malformed.status(), StatusCode::NOT_FOUND);
    problem(malformed).await;

    let bad_role = app
        .patch(
            &format!("/v1/users/{}", uuid::Uuid::now_v7()),
            &json!({"role": "king"}),
            &admin.access_token,
        )
        .await;
    assert_eq!(bad_role.status(), StatusCode::UNPROCESSABLE_ENTITY);
    problem(bad_role).await;
}

async fn users_are_listed_in_pages_for_admins_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.user_with_role("admin@example.com", Role::Admin).await;
    for i in 0..4 {
        app.register(&format!("user{i}@example.com"), crate::helpers::PASSWORD)
            .await;
    }

    let mut emails = Vec::new();
    let mut path = "/v1/users?limit=2".to_owned();
    loop {
        let page = app.get_json(&path, Some(&admin.access_token)).await;
        assert!(page["items"].as_array().unwrap().len() <= 2);
        emails.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u["email"].as_str().unwrap().to_owned()),
        );
        match page["next"].as_str() {
            Some(next) => path = format!("/v1/users?limit=2&cursor={next}"),
            None => break,
        }
    }

    assert_eq!(
        emails,
        [
            "admin@example.com",
            "user0@example.com",
            "user1@example.com",
            "user2@example.com",
            "user3@example.com"
        ]
    );
    let too_big = app
        .get("/v1/users?limit=1000", Some(&admin.access_token))
        .await;
    assert_eq!(too_big.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let bad_cursor = app
        .get("/v1/users?cursor=garbage", Some(&admin.access_token))
        .await;
    assert_eq!(bad_cursor.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let customer = app.login_ok("user0@example.com").await;
    assert_eq!(
        app.get("/v1/users", Some(&customer.access_token))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
}
