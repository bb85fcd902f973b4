//! The token cache: a request authenticates without a database read when its user was
//! read lately, yet a revoked or demoted user's next request after the revocation event
//! reached an instance is refused there, and a change made around the events is seen
//! within `TIDINGS_AUTH_CACHE_TTL`.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use tidings::domain::Role;
use tidings::store::Db;
use uuid::Uuid;

use crate::backend_tests;
use crate::clients::PATIENCE;
use crate::helpers::{Backend, TestApp, Tokens, problem};

backend_tests!(
    a_user_who_logs_out_everywhere_is_refused_on_every_instance_once_the_revocation_reaches_it,
    a_demoted_user_is_refused_on_every_instance_once_the_revocation_reaches_it,
    a_change_made_without_its_event_is_seen_within_the_cache_ttl,
    a_change_made_with_its_event_is_seen_at_once_however_long_the_ttl,
);

/// A request with `token` is 401 `token_revoked`.
async fn assert_revoked(app: &TestApp, token: &str, context: &str) {
    let response = app.get("/v1/me", Some(token)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{context}");
    assert_eq!(
        problem(response).await["code"],
        "token_revoked",
        "{context}"
    );
}

/// The user's token works on both instances, so that each has it cached; and a live
/// WebSocket of the user on `b`, whose close (4001) tells when the revocation reached `b`.
async fn cached_on_both(a: &TestApp, b: &TestApp, user: &Tokens) -> crate::clients::WsClient {
    for app in [a, b] {
        let me = app.get("/v1/me", Some(&user.access_token)).await;
        assert_eq!(me.status(), StatusCode::OK);
    }
    b.ws(&user.access_token).await
}

/// `a` commits the revocation: its own next request is refused at once (it cleared its
/// cache on commit); `b`'s once the event reached it, which its WebSocket's 4001 tells.
async fn refused_on_both(a: &TestApp, b: &TestApp, old: &Tokens, mut ws: crate::clients::WsClient) {
    assert_revoked(a, &old.access_token, "on the instance that committed it").await;
    let code = tokio::time::timeout(PATIENCE, ws.close_code())
        .await
        .expect("the revocation reached the other instance");
    assert_eq!(code, Some(4001));
    assert_revoked(b, &old.access_token, "on the other instance").await;
}

async fn a_user_who_logs_out_everywhere_is_refused_on_every_instance_once_the_revocation_reaches_it(
    backend: Backend,
) {
    let a = TestApp::spawn(backend).await;
    let b = a.another_instance().await;
    let ada = a.customer("ada@example.com").await;
    let ws = cached_on_both(&a, &b, &ada).await;

    let response = a
        .post("/v1/auth/logout-all", &json!({}), Some(&ada.access_token))
        .await;

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    refused_on_both(&a, &b, &ada, ws).await;
    // A new login is read afresh and works on both.
    let fresh = b.login_ok("ada@example.com").await;
    for app in [&a, &b] {
        let me = app.get("/v1/me", Some(&fresh.access_token)).await;
        assert_eq!(me.status(), StatusCode::OK);
    }
}

async fn a_demoted_user_is_refused_on_every_instance_once_the_revocation_reaches_it(
    backend: Backend,
) {
    let a = TestApp::spawn(backend).await;
    let b = a.another_instance().await;
    let admin = a.user_with_role("admin@example.com", Role::Admin).await;
    let grace = a.user_with_role("grace@example.com", Role::Staff).await;
    let id = a.user_id(&grace.access_token).await;
    let ws = cached_on_both(&a, &b, &grace).await;

    let response = a
        .patch(
            &format!("/v1/users/{id}"),
            &json!({"role": "customer"}),
            &admin.access_token,
        )
        .await;

    assert_eq!(response.status(), StatusCode::OK);
    refused_on_both(&a, &b, &grace, ws).await;
    let fresh = b.login_ok("grace@example.com").await;
    for app in [&a, &b] {
        let me = app.get_json("/v1/me", Some(&fresh.access_token)).await;
        assert_eq!(me["role"], "customer");
    }
}

/// Bumps the user's token version in SQL, as a change made around the API would: no event.
async fn bump_in_sql(app: &TestApp, user: Uuid) -> i64 {
    let bump = "update users set token_version = token_version + 1 where id = $1 \
                returning token_version";
    let version: (i64,) = match &app.state.db {
        Db::Postgres(pool, _) => sqlx::query_as(bump).bind(user).fetch_one(pool).await,
        Db::Sqlite(pool, _) => sqlx::query_as(bump).bind(user).fetch_one(pool).await,
    }
    .expect("the token version is bumped");
    version.0
}

async fn a_change_made_without_its_event_is_seen_within_the_cache_ttl(backend: Backend) {
    const TTL: Duration = Duration::from_secs(2);
    // What the loop between two tries and a loaded machine may add to the bound.
    const MARGIN: Duration = Duration::from_millis(750);
    let app = TestApp::spawn_with(backend, |c| c.auth_cache_ttl = TTL).await;
    let ada = app.customer("ada@example.com").await;
    // The first authenticated request reads the user: that read is the cache's entry.
    let sent = Instant::now();
    let id = app.user_id(&ada.access_token).await;
    let read = Instant::now();

    bump_in_sql(&app, id).await;

    // Within the TTL of the read the cache answers: the change is not seen yet.
    let response = app.get("/v1/me", Some(&ada.access_token)).await;
    if sent.elapsed() < TTL {
        assert_eq!(response.status(), StatusCode::OK, "served from the cache");
    }
    // And no later than the TTL after the read, it is.
    let refused_at = loop {
        let response = app.get("/v1/me", Some(&ada.access_token)).await;
        if response.status() == StatusCode::UNAUTHORIZED {
            assert_eq!(problem(response).await["code"], "token_revoked");
            break Instant::now();
        }
        assert_eq!(response.status(), StatusCode::OK);
        assert!(read.elapsed() < TTL + MARGIN, "still served past the TTL");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        refused_at - read <= TTL + MARGIN,
        "refused {:?} after the read",
        refused_at - read
    );
}

async fn a_change_made_with_its_event_is_seen_at_once_however_long_the_ttl(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.auth_cache_ttl = Duration::from_secs(3600)).await;
    let ada = app.customer("ada@example.com").await;
    let id = app.user_id(&ada.access_token).await;
    let mut ws = app.ws(&ada.access_token).await;
    let version = bump_in_sql(&app, id).await;
    let me = app.get("/v1/me", Some(&ada.access_token)).await;
    assert_eq!(
        me.status(),
        StatusCode::OK,
        "the cache answers, an hour long"
    );

    // The event alone, as the API would have committed with the change.
    let tx = app.state.db.begin().await.unwrap();
    let revoked = tidings::events::sessions_revoked(id, version);
    tidings::events::outbox::commit(tx, &[revoked])
        .await
        .expect("the event is committed");

    let code = tokio::time::timeout(PATIENCE, ws.close_code())
        .await
        .expect("the revocation was routed");
    assert_eq!(code, Some(4001));
    assert_revoked(&app, &ada.access_token, "once the event was routed").await;
}
