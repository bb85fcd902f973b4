//! Registration, login, token rotation, logout and password changes.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{Backend, PASSWORD, TestApp, problem};

backend_tests!(
    register_creates_a_customer_with_a_normalised_email,
    register_refuses_an_email_taken_in_any_case,
    register_lists_every_invalid_field,
    register_refuses_weak_passwords,
    login_returns_a_bearer_token_pair,
    login_with_a_wrong_password_or_unknown_email_is_401,
    me_needs_a_valid_token,
    refresh_rotates_the_pair,
    reusing_a_rotated_refresh_token_revokes_its_family,
    logout_ends_that_session_only,
    logout_all_refuses_every_earlier_token,
    a_refresh_racing_logout_all_leaves_no_working_token,
    concurrent_refreshes_do_not_exhaust_the_pool,
    password_change_refuses_old_access_and_refresh_tokens,
    password_change_needs_the_current_password_and_a_strong_new_one,
    login_is_rate_limited_per_email_with_retry_after,
    register_is_rate_limited_per_ip,
);

async fn register_creates_a_customer_with_a_normalised_email(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let response = app.register("  Ada.Lovelace@Example.COM ", PASSWORD).await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let user: Value = response.json().await.unwrap();
    assert_eq!(user["email"], "ada.lovelace@example.com");
    assert_eq!(user["role"], "customer");
    assert_eq!(user["disabled"], false);
    assert!(user.get("password_hash").is_none());
    assert!(uuid::Uuid::parse_str(user["id"].as_str().unwrap()).is_ok());
}

async fn register_refuses_an_email_taken_in_any_case(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.customer("ada@example.com").await;

    let response = app
        .register("ADA@example.com", "another good passphrase")
        .await;

    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(problem(response).await["code"], "email_taken");
}

async fn register_lists_every_invalid_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let response = app.register("not-an-email", "short").await;

    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = problem(response).await;
    assert_eq!(body["code"], "validation_failed");
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["email", "password"]);
}

async fn register_refuses_weak_passwords(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let too_long = "x".repeat(129);
    for weak in [
        "seven77",
        "password123",
        "Grace@Example.com",
        too_long.as_str(),
    ] {
        let response = app.register("grace@example.com", weak).await;

        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{weak}"
        );
        let body = problem(response).await;
        assert_eq!(body["errors"][0]["field"], "password", "{weak}");
        assert_eq!(body["errors"][0]["code"], "weak", "{weak}");
    }
    // None of them created the account.
    assert_eq!(
        app.register("grace@example.com", PASSWORD).await.status(),
        StatusCode::CREATED
    );
}

async fn login_returns_a_bearer_token_pair(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("ada@example.com", PASSWORD).await;

    let tokens = app.login_ok("ADA@example.com").await;

    assert_eq!(tokens.token_type, "Bearer");
    assert_eq!(tokens.expires_in, 900);
    assert_eq!(tokens.access_token.split('.').count(), 3, "a JWT");
    assert!(tokens.refresh_token.len() >= 43, "256 bits, base64url");
}

async fn login_with_a_wrong_password_or_unknown_email_is_401(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("ada@example.com", PASSWORD).await;

    for (email, password) in [
        ("ada@example.com", "wrong password!"),
        ("nobody@example.com", PASSWORD),
    ] {
        let response = app.login(email, password).await;

        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(problem(response).await["code"], "invalid_credentials");
    }
}

async fn me_needs_a_valid_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tokens = app.customer("ada@example.com").await;

    let me = app.get_json("/v1/me", Some(&tokens.access_token)).await;
    assert_eq!(me["email"], "ada@example.com");

    let missing = app.get("/v1/me", None).await;
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    assert_eq!(problem(missing).await["code"], "missing_token");
    let forged = format!("{}x", tokens.access_token);
    let response = app.get("/v1/me", Some(&forged)).await;
    assert_eq!(problem(response).await["code"], "invalid_token");
    let response = app
        .client
        .get(app.url("/v1/me"))
        .header("authorization", format!("Basic {}", tokens.access_token))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

async fn refresh_rotates_the_pair(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let first = app.customer("ada@example.com").await;

    let response = app
        .post(
            "/v1/auth/refresh",
            &json!({"refresh_token": first.refresh_token}),
            None,
        )
        .await;

    assert_eq!(response.status(), StatusCode::OK);
    let second: crate::helpers::Tokens = response.json().await.unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_eq!(
        app.get("/v1/me", Some(&second.access_token)).await.status(),
        StatusCode::OK
    );
    let third = app
        .post(
            "/v1/auth/refresh",
            &json!({"refresh_token": second.refresh_token}),
            None,
        )
        .await;
    assert_eq!(third.status(), StatusCode::OK);
}

/// With the grace window off, as any reuse is once the window has passed (see
/// auth_hardening.rs).
async fn reusing_a_rotated_refresh_token_revokes_its_family(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.refresh_reuse_grace = std::time::Duration::ZERO;
    })
    .await;
    let stolen = app.customer("ada@example.com").await;
    let other_device = app.login_ok("ada@example.com").await;
    let rotated = app.refresh_ok(&stolen.refresh_token).await;

    let replay = app
        .post(
            "/v1/auth/refresh",
            &json!({"refresh_token": stolen.refresh_token}),
            None,
        )
        .await;

    assert_eq!(replay.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(problem(replay).await["code"], "refresh_token_reused");
    // The legitimate successor of the stolen token is revoked with it...
    let successor = app
        .post(
            "/v1/auth/refresh",
            &json!({"refresh_token": rotated.refresh_token}),
            None,
        )
        .await;
    assert_eq!(successor.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(problem(successor).await["code"], "refresh_token_revoked");
    // ...but a session from another login is untouched.
    let other = app
        .post(
            "/v1/auth/refresh",
            &json!({"refresh_token": other_device.refresh_token}),
            None,
        )
        .await;
    assert_eq!(other.status(), StatusCode::OK);
}

async fn logout_ends_that_session_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let phone = app.customer("ada@example.com").await;
    let laptop = app.login_ok("ada@example.com").await;

    let response = app
        .post(
            "/v1/auth/logout",
            &json!({"refresh_token": phone.refresh_token}),
            None,
        )
        .await;

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let after = app
        .post(
            "/v1/auth/refresh",
            &json!({"refresh_token": phone.refresh_token}),
            None,
        )
        .await;
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
    let laptop_refresh = app
        .post(
            "/v1/auth/refresh",
            &json!({"refresh_token": laptop.refresh_token}),
            None,
        )
        .await;
    assert_eq!(laptop_refresh.status(), StatusCode::OK);
    // Logging out twice is not an error.
    let again = app
        .post(
            "/v1/auth/logout",
            &json!({"refresh_token": phone.refresh_token}),
            None,
        )
        .await;
    assert_eq!(again.status(), StatusCode::NO_CONTENT);
}

/// Thieves refreshing stolen tokens in loops while their owner logs out everywhere: every
/// refresh token the loops got must be dead afterwards, whichever refresh the logout met.
/// (On PostgreSQL a logout that met a refresh in flight used to miss the token it issued;
/// eight loops and five rounds make meeting one all but certain: without the lock on the
/// user's row this failed in each of several runs.)
async fn a_refresh_racing_logout_all_leaves_no_working_token(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.auth_rate_per_email = 0;
        c.auth_rate_per_ip = 0;
    })
    .await;
    app.customer("ada@example.com").await;
    let refresh = |token: String| {
        let app = &app;
        async move {
            app.post("/v1/auth/refresh", &json!({"refresh_token": token}), None)
                .await
        }
    };
    for _round in 0..5 {
        let owner = app.login_ok("ada@example.com").await;
        let (started, running) = tokio::sync::watch::channel(0);
        let mut thieves = Vec::new();
        for _ in 0..8 {
            let stolen = app.login_ok("ada@example.com").await;
            let started = started.clone();
            thieves.push(async move {
                let mut token = stolen.refresh_token;
                let mut got = vec![token.clone()];
                // Bounded: were the logout to miss a loop's token, it would never stop.
                for _ in 0..200 {
                    let response = refresh(token.clone()).await;
                    if response.status() != StatusCode::OK {
                        break;
                    }
                    token = response.json::<Value>().await.unwrap()["refresh_token"]
                        .as_str()
                        .unwrap()
                        .to_owned();
                    got.push(token.clone());
                    started.send_modify(|n| *n += 1);
                }
                got
            });
        }
        let logout_all = async {
            // Once the loops are going, so that the logout meets refreshes in flight.
            running.clone().wait_for(|n| *n >= 8).await.unwrap();
            let response = app
                .post("/v1/auth/logout-all", &json!({}), Some(&owner.access_token))
                .await;
            assert_eq!(response.status(), StatusCode::NO_CONTENT);
        };
        let race = async { tokio::join!(futures::future::join_all(thieves), logout_all) };
        let (got, ()) = tokio::time::timeout(std::time::Duration::from_secs(60), race)
            .await
            .expect("the refreshes and the logout end");

        // Each loop's newest token: an older one would count as reuse and revoke the
        // family, hiding a newest one that survived.
        for chain in got {
            let newest = chain.last().expect("the stolen token").clone();
            let response = refresh(newest).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        }
    }
}

/// A refresh uses one database connection: many at once, on a pool of two, all succeed.
async fn concurrent_refreshes_do_not_exhaust_the_pool(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.db_max_connections = 2;
        c.db_acquire_timeout = std::time::Duration::from_secs(2);
    })
    .await;
    app.customer("ada@example.com").await;
    let mut sessions = Vec::new();
    for _ in 0..8 {
        sessions.push(app.login_ok("ada@example.com").await);
    }

    let bodies: Vec<Value> = sessions
        .iter()
        .map(|s| json!({"refresh_token": s.refresh_token}))
        .collect();
    let refreshes = bodies
        .iter()
        .map(|body| app.post("/v1/auth/refresh", body, None));
    let responses = futures::future::join_all(refreshes).await;

    for response in responses {
        assert_eq!(response.status(), StatusCode::OK);
    }
}

async fn logout_all_refuses_every_earlier_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let phone = app.customer("ada@example.com").await;
    let laptop = app.login_ok("ada@example.com").await;

    let response = app
        .post(
            "/v1/auth/logout-all",
            &json!({}),
            Some(&laptop.access_token),
        )
        .await;

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    for access in [&phone.access_token, &laptop.access_token] {
        let me = app.get("/v1/me", Some(access)).await;
        assert_eq!(me.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(problem(me).await["code"], "token_revoked");
    }
    for refresh in [&phone.refresh_token, &laptop.refresh_token] {
        let response = app
            .post("/v1/auth/refresh", &json!({"refresh_token": refresh}), None)
            .await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    // A new login works.
    let fresh = app.login_ok("ada@example.com").await;
    assert_eq!(
        app.get("/v1/me", Some(&fresh.access_token)).await.status(),
        StatusCode::OK
    );
}

async fn password_change_refuses_old_access_and_refresh_tokens(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let old = app.customer("ada@example.com").await;
    let new_password = "an entirely new passphrase";

    let response = app
        .post(
            "/v1/me/password",
            &json!({"current_password": PASSWORD, "new_password": new_password}),
            Some(&old.access_token),
        )
        .await;

    assert_eq!(response.status(), StatusCode::OK);
    let fresh: crate::helpers::Tokens = response.json().await.unwrap();
    assert_eq!(
        app.get("/v1/me", Some(&old.access_token)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let old_refresh = app
        .post(
            "/v1/auth/refresh",
            &json!({"refresh_token": old.refresh_token}),
            None,
        )
        .await;
    assert_eq!(old_refresh.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.get("/v1/me", Some(&fresh.access_token)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.login("ada@example.com", PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login("ada@example.com", new_password).await.status(),
        StatusCode::OK
    );
}

async fn password_change_needs_the_current_password_and_a_strong_new_one(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tokens = app.customer("ada@example.com").await;

    let wrong = app
        .post(
            "/v1/me/password",
            &json!({"current_password": "not my password", "new_password": "a fine new passphrase"}),
            Some(&tokens.access_token),
        )
        .await;
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    assert_eq!(problem(wrong).await["code"], "wrong_password");

    let weak = app
        .post(
            "/v1/me/password",
            &json!({"current_password": PASSWORD, "new_password": "12345678"}),
            Some(&tokens.access_token),
        )
        .await;
    assert_eq!(weak.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem(weak).await["errors"][0]["field"], "new_password");

    // Neither attempt changed anything.
    assert_eq!(
        app.get("/v1/me", Some(&tokens.access_token)).await.status(),
        StatusCode::OK
    );
}

async fn login_is_rate_limited_per_email_with_retry_after(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.auth_rate_per_email = 3).await;
    app.register("ada@example.com", PASSWORD).await;

    for _ in 0..2 {
        assert_eq!(
            app.login("ada@example.com", "wrong guess 1").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let limited = app.login("ADA@example.com", PASSWORD).await;

    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(problem(limited).await["code"], "rate_limited");
    // Another address is not limited by this one's attempts.
    assert_eq!(
        app.register("grace@example.com", PASSWORD).await.status(),
        StatusCode::CREATED
    );
}

async fn register_is_rate_limited_per_ip(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.auth_rate_per_ip = 2).await;

    assert_eq!(
        app.register("a@example.com", PASSWORD).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        app.register("b@example.com", PASSWORD).await.status(),
        StatusCode::CREATED
    );
    let limited = app.register("c@example.com", PASSWORD).await;

    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers().contains_key("retry-after"));
}
