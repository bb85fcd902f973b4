//! Hardening of passwords and tokens: the argon2 cap, rate limits on every password check,
//! `no-store` on token responses, access tokens from the future, whitespace passwords, and
//! the grace window for two tabs refreshing one token at once.

use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use tidings::store::Db;

use crate::helpers::{Backend, PASSWORD, TestApp, Tokens, problem, typed_body};
use crate::{backend_tests, postgres_tests};

backend_tests!(
    concurrent_password_checks_hash_one_at_a_time_and_the_queue_overflow_gets_503,
    a_login_for_an_unknown_email_takes_a_turn_to_hash_too,
    password_change_is_rate_limited_per_account_before_any_hash,
    password_change_is_rate_limited_per_ip,
    token_responses_are_not_stored,
    access_tokens_issued_or_valid_only_in_the_future_are_refused,
    register_refuses_a_password_of_spaces,
    two_tabs_refreshing_one_token_at_once_get_the_same_pair_and_stay_logged_in,
    a_repeated_refresh_after_the_first_tab_refreshed_again_gets_the_newest_token,
    a_refresh_repeated_after_the_grace_window_revokes_the_family,
    logout_all_after_a_grace_refresh_revokes_every_token,
);

postgres_tests!(two_tabs_refreshing_on_two_instances_get_the_same_pair);

async fn refresh(app: &TestApp, token: &str) -> Response {
    app.post("/v1/auth/refresh", &json!({"refresh_token": token}), None)
        .await
}

async fn change_password(app: &TestApp, token: &str, current: &str) -> Response {
    app.post(
        "/v1/me/password",
        &json!({"current_password": current, "new_password": "a fine new passphrase"}),
        Some(token),
    )
    .await
}

/// A value of `/metrics` (a gauge or counter without labels).
async fn metric(app: &TestApp, name: &str) -> f64 {
    let text = app.metrics().await.text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} is in /metrics"))
        .parse()
        .unwrap()
}

async fn concurrent_password_checks_hash_one_at_a_time_and_the_queue_overflow_gets_503(
    backend: Backend,
) {
    let app = TestApp::spawn_with(backend, |c| {
        c.hash_concurrency = 1;
        c.hash_queue_timeout = Duration::from_millis(1);
        c.auth_rate_per_ip = 0;
        c.auth_rate_per_email = 0;
    })
    .await;
    let tokens = app.customer("ada@example.com").await;

    let attempts = (0..16).map(|_| change_password(&app, &tokens.access_token, "not my password"));
    let responses = futures::future::join_all(attempts).await;

    let mut busy = 0;
    for response in responses {
        match response.status() {
            StatusCode::FORBIDDEN => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                busy += 1;
                assert_eq!(response.headers()["retry-after"], "1");
                assert_eq!(problem(response).await["code"], "busy");
            }
            other => panic!("a wrong password gets 403 or 503, not {other}"),
        }
    }
    // Each hash takes milliseconds and the line holds for one: sixteen at once overflow it.
    assert!(busy > 0, "no request waited longer than the queue timeout");
    assert_eq!(
        metric(&app, "tidings_password_hashes_in_progress_max").await,
        1.0
    );
    assert_eq!(
        metric(&app, "tidings_password_hashes_refused_total").await,
        f64::from(busy)
    );
    assert_eq!(
        metric(&app, "tidings_password_hashes_in_progress").await,
        0.0
    );
    // The server is healthy and the password unchanged.
    assert_eq!(
        change_password(&app, &tokens.access_token, PASSWORD)
            .await
            .status(),
        StatusCode::OK
    );
}

async fn a_login_for_an_unknown_email_takes_a_turn_to_hash_too(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let before = metric(&app, "tidings_password_hashes_total").await;

    let response = app.login("nobody@example.com", PASSWORD).await;

    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        metric(&app, "tidings_password_hashes_total").await,
        before + 1.0
    );
}

async fn password_change_is_rate_limited_per_account_before_any_hash(backend: Backend) {
    // Registering and logging in are two of the account's five attempts.
    let app = TestApp::spawn_with(backend, |c| c.auth_rate_per_email = 5).await;
    let tokens = app.customer("ada@example.com").await;
    for _ in 0..3 {
        let wrong = change_password(&app, &tokens.access_token, "guess").await;
        assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    }
    let hashes = metric(&app, "tidings_password_hashes_total").await;

    let limited = change_password(&app, &tokens.access_token, PASSWORD).await;

    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(problem(limited).await["code"], "rate_limited");
    assert_eq!(
        metric(&app, "tidings_password_hashes_total").await,
        hashes,
        "a refused attempt hashes nothing"
    );
    // Login shares the account's count: no more guesses by another route.
    assert_eq!(
        app.login("ada@example.com", PASSWORD).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

async fn password_change_is_rate_limited_per_ip(backend: Backend) {
    // Registering and logging in take two of the address's four attempts.
    let app = TestApp::spawn_with(backend, |c| c.auth_rate_per_ip = 4).await;
    let tokens = app.customer("ada@example.com").await;
    for _ in 0..2 {
        let wrong = change_password(&app, &tokens.access_token, "guess").await;
        assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    }

    let limited = change_password(&app, &tokens.access_token, PASSWORD).await;

    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers().contains_key("retry-after"));
}

async fn token_responses_are_not_stored(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert_eq!(
        app.register("ada@example.com", PASSWORD).await.status(),
        StatusCode::CREATED
    );
    let no_store = |response: &Response, what: &str| {
        assert!(
            response.status().is_success(),
            "{what}: {}",
            response.status()
        );
        assert_eq!(
            response
                .headers()
                .get("cache-control")
                .map(|v| v.to_str().unwrap()),
            Some("no-store"),
            "{what}"
        );
    };

    let login = app.login("ada@example.com", PASSWORD).await;
    no_store(&login, "login");
    let tokens: Tokens = login.json().await.unwrap();
    let refreshed = refresh(&app, &tokens.refresh_token).await;
    no_store(&refreshed, "refresh");
    let tokens: Tokens = refreshed.json().await.unwrap();
    let ticket = app
        .post("/v1/stream-tickets", &json!({}), Some(&tokens.access_token))
        .await;
    no_store(&ticket, "stream ticket");
    let changed = change_password(&app, &tokens.access_token, PASSWORD).await;
    no_store(&changed, "password change");
}

async fn access_tokens_issued_or_valid_only_in_the_future_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tokens = app.customer("ada@example.com").await;
    let id = app.user_id(&tokens.access_token).await;
    let now = chrono::Utc::now().timestamp();
    let sign = |iat: i64, nbf: Option<i64>| {
        let mut claims =
            json!({"sub": id, "role": "customer", "tv": 0, "iat": iat, "exp": now + 600});
        if let Some(nbf) = nbf {
            claims["nbf"] = json!(nbf);
        }
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret("test-secret-".repeat(4).as_bytes()),
        )
        .unwrap()
    };

    for (iat, nbf) in [(now + 3600, None), (now, Some(now + 3600))] {
        let response = app.get("/v1/me", Some(&sign(iat, nbf))).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{iat} {nbf:?}");
        assert_eq!(problem(response).await["code"], "token_not_yet_valid");
    }
    // A clock a few seconds ahead is within the leeway.
    let response = app
        .get("/v1/me", Some(&sign(now + 10, Some(now + 10))))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

async fn register_refuses_a_password_of_spaces(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for password in [" ".repeat(8), " a b c d ".into()] {
        let response = app.register("ada@example.com", &password).await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{password:?}"
        );
        let body = problem(response).await;
        assert_eq!(body["errors"][0]["field"], "password");
    }
    // Spaces between words are fine.
    assert_eq!(
        app.register("ada@example.com", "a cat sat on a mat")
            .await
            .status(),
        StatusCode::CREATED
    );
}

/// Both tabs refresh the same token at once; a refresh answer as JSON.
async fn both_tabs_refresh(first: &TestApp, second: &TestApp, token: &str) -> (Tokens, Tokens) {
    let (a, b) = tokio::join!(refresh(first, token), refresh(second, token));
    (
        typed_body(a, StatusCode::OK).await,
        typed_body(b, StatusCode::OK).await,
    )
}

async fn two_tabs_refreshing_one_token_at_once_get_the_same_pair_and_stay_logged_in(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let login = app.customer("ada@example.com").await;

    let (a, b) = both_tabs_refresh(&app, &app, &login.refresh_token).await;

    assert_eq!(a.refresh_token, b.refresh_token);
    assert_ne!(a.refresh_token, login.refresh_token);
    for tab in [&a, &b] {
        let me = app.get("/v1/me", Some(&tab.access_token)).await;
        assert_eq!(me.status(), StatusCode::OK);
    }
    // The family is alive: the shared token rotates on.
    assert_eq!(
        refresh(&app, &a.refresh_token).await.status(),
        StatusCode::OK
    );
}

async fn two_tabs_refreshing_on_two_instances_get_the_same_pair(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let other = app.another_instance().await;
    let login = app.customer("ada@example.com").await;

    let (a, b) = both_tabs_refresh(&app, &other, &login.refresh_token).await;

    assert_eq!(a.refresh_token, b.refresh_token);
    assert_eq!(
        refresh(&other, &a.refresh_token).await.status(),
        StatusCode::OK
    );
}

async fn a_repeated_refresh_after_the_first_tab_refreshed_again_gets_the_newest_token(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let login = app.customer("ada@example.com").await;
    let first = app.refresh_ok(&login.refresh_token).await;
    let second = app.refresh_ok(&first.refresh_token).await;

    let late = refresh(&app, &login.refresh_token).await;

    let late: Tokens = typed_body(late, StatusCode::OK).await;
    assert_eq!(
        late.refresh_token, second.refresh_token,
        "the live token, not a rotated one"
    );
    assert_eq!(
        refresh(&app, &late.refresh_token).await.status(),
        StatusCode::OK
    );
}

/// The window is passed by moving the rotation back in time in the database, rather than
/// by waiting for the clock.
async fn a_refresh_repeated_after_the_grace_window_revokes_the_family(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let login = app.customer("ada@example.com").await;
    let rotated = app.refresh_ok(&login.refresh_token).await;
    let long_ago = tidings::store::now() - app.config.refresh_reuse_grace - Duration::from_secs(1);
    let age = "update refresh_tokens set rotated_at = $1 where rotated_at is not null";
    match &app.state.db {
        Db::Postgres(pool, _) => drop(sqlx::query(age).bind(long_ago).execute(pool).await.unwrap()),
        Db::Sqlite(pool, _) => drop(sqlx::query(age).bind(long_ago).execute(pool).await.unwrap()),
    }

    let replay = refresh(&app, &login.refresh_token).await;

    assert_eq!(replay.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(problem(replay).await["code"], "refresh_token_reused");
    let successor = refresh(&app, &rotated.refresh_token).await;
    assert_eq!(successor.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(problem(successor).await["code"], "refresh_token_revoked");
}

async fn logout_all_after_a_grace_refresh_revokes_every_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let login = app.customer("ada@example.com").await;
    let (a, b) = both_tabs_refresh(&app, &app, &login.refresh_token).await;

    let response = app
        .post("/v1/auth/logout-all", &json!({}), Some(&a.access_token))
        .await;

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    for token in [&login.refresh_token, &a.refresh_token, &b.refresh_token] {
        let response = refresh(&app, token).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let body: Value = problem(response).await;
        assert_eq!(body["code"], "refresh_token_revoked");
    }
    for token in [&a.access_token, &b.access_token] {
        assert_eq!(
            app.get("/v1/me", Some(token)).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
}
