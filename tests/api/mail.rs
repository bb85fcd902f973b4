//! Email: password reset and address verification through links sent over SMTP, to a
//! stand-in mail server in the test (`smtp.rs`) that speaks the protocol and keeps what it
//! is sent; the messages are read with `mail-parser`, as a mail client would.

use std::time::Duration;

use mail_parser::MimeHeaders;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tidings::config::{Config, SmtpUrl};
use tidings::domain::Role;
use tidings::store::Db;

use crate::backend_tests;
use crate::clients::PATIENCE;
use crate::errors::field_errors;
use crate::helpers::{Backend, PASSWORD, TestApp, json_body, problem};
use crate::smtp::{Received, SmtpServer};

backend_tests!(
    a_reset_link_sets_a_new_password_once_and_ends_every_session,
    a_reset_for_an_unknown_address_is_answered_alike_and_sends_nothing,
    an_expired_reset_link_is_refused,
    a_new_password_from_a_reset_link_follows_the_password_rules,
    a_verification_link_works_once_and_marks_the_address_verified,
    a_verification_link_can_be_sent_again,
    orders_wait_for_a_verified_address_when_the_setting_asks,
    a_mail_server_that_is_down_fails_no_request,
    with_email_off_requests_are_answered_alike_and_nothing_is_sent,
    mail_to_one_address_is_rate_limited,
);

const PUBLIC_URL: &str = "https://shop.example";
const SENDER: &str = "no-reply@shop.example";
const SMTP_USER: &str = "mailer@shop.example";
const SMTP_PASSWORD: &str = "s3cret p@ss/w:rd";
const NEW_PASSWORD: &str = "a brand new passphrase";

/// Mail on, through `smtp`.
pub(crate) fn mail_through(config: &mut Config, smtp: &SmtpServer) {
    config.smtp_url = SmtpUrl::parse(&smtp.url()).unwrap();
    config.mail_from = Some(format!("Tidings <{SENDER}>").parse().unwrap());
    config.public_url = Some(PUBLIC_URL.into());
    config.check_mail().expect("the mail settings are complete");
}

/// An app whose mail goes to a stand-in that wants the test's credentials.
async fn app_with_mail(backend: Backend) -> (TestApp, SmtpServer) {
    let smtp = SmtpServer::with_credentials(SMTP_USER, SMTP_PASSWORD).await;
    let app = TestApp::spawn_with(backend, |c| mail_through(c, &smtp)).await;
    (app, smtp)
}

/// The one message for `to` that the app sent by now: every mail it started is sent once
/// `settled` returns, and nothing else may have come.
async fn the_mail(app: &TestApp, smtp: &mut SmtpServer, to: &str) -> Received {
    app.state.mailer.settled().await;
    let mail = smtp.try_next().expect("a message was sent");
    assert_eq!(mail.to, [to]);
    assert!(smtp.try_next().is_none(), "one message only");
    mail
}

/// The token of the dashboard link to `route` in a message, checking that the plain text
/// and the HTML alternative carry the same link, and what else every message has.
fn token_in(mail: &Received, route: &str) -> String {
    assert_eq!(mail.from, SENDER);
    let message = mail.parsed();
    let from = message.from().and_then(|a| a.first()).expect("a From");
    assert_eq!(
        (from.name(), from.address()),
        (Some("Tidings"), Some(SENDER))
    );
    let content_type = message.content_type().expect("a Content-Type");
    assert_eq!(
        (content_type.ctype(), content_type.subtype()),
        ("multipart", Some("alternative"))
    );
    let text = message.body_text(0).expect("a plain text body");
    let html = message.body_html(0).expect("an HTML body");
    let prefix = format!("{PUBLIC_URL}/app/#/{route}?token=");
    let start = text
        .find(&prefix)
        .unwrap_or_else(|| panic!("a link: {text}"))
        + prefix.len();
    let token: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    assert_eq!(token.len(), 43, "32 bytes, base64url: {token}");
    assert!(
        html.contains(&format!("href=\"{prefix}{token}\"")),
        "the HTML has the same link: {html}"
    );
    token
}

async fn confirm_reset(app: &TestApp, token: &str, password: &str) -> reqwest::Response {
    app.post(
        "/v1/auth/password-reset/confirm",
        &json!({"token": token, "password": password}),
        None,
    )
    .await
}

async fn ask_reset(app: &TestApp, email: &str) -> reqwest::Response {
    app.post("/v1/auth/password-reset", &json!({"email": email}), None)
        .await
}

async fn verify(app: &TestApp, token: &str) -> reqwest::Response {
    app.post("/v1/auth/verify-email", &json!({"token": token}), None)
        .await
}

/// Registers a customer, takes their verification mail and logs them in.
async fn customer(
    app: &TestApp,
    smtp: &mut SmtpServer,
    email: &str,
) -> (crate::helpers::Tokens, String) {
    let tokens = app.customer(email).await;
    let mail = the_mail(app, smtp, email).await;
    assert_eq!(
        mail.parsed().subject(),
        Some("Verify your email address for Tidings")
    );
    let token = token_in(&mail, "verify");
    (tokens, token)
}

async fn a_reset_link_sets_a_new_password_once_and_ends_every_session(backend: Backend) {
    let (app, mut smtp) = app_with_mail(backend).await;
    let (ada, _) = customer(&app, &mut smtp, "ada@example.com").await;
    let mut socket = app.ws(&ada.access_token).await;
    socket.subscribe(&["orders"], None).await;

    let asked = ask_reset(&app, "  Ada@Example.com ").await;
    assert_eq!(asked.status(), StatusCode::ACCEPTED);
    let mail = the_mail(&app, &mut smtp, "ada@example.com").await;
    assert_eq!(mail.parsed().subject(), Some("Reset your Tidings password"));
    let token = token_in(&mail, "reset");
    let reset = confirm_reset(&app, &token, NEW_PASSWORD).await;
    assert_eq!(reset.status(), StatusCode::NO_CONTENT);

    // Once only.
    let again = confirm_reset(&app, &token, "yet another passphrase").await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem(again).await["code"], "invalid_token");
    // The new password works, the old one no longer.
    let old = app.login("ada@example.com", PASSWORD).await;
    assert_eq!(old.status(), StatusCode::UNAUTHORIZED);
    let new = app.login("ada@example.com", NEW_PASSWORD).await;
    let new: Value = json_body(new, StatusCode::OK).await;
    // Every session ended: the refresh token, the access token, the live connection.
    let refresh = app
        .post(
            "/v1/auth/refresh",
            &json!({"refresh_token": ada.refresh_token}),
            None,
        )
        .await;
    assert_eq!(refresh.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(problem(refresh).await["code"], "refresh_token_revoked");
    let me = app.get("/v1/me", Some(&ada.access_token)).await;
    assert_eq!(problem(me).await["code"], "token_revoked");
    assert_eq!(socket.close_code().await, Some(4001));
    // The link reached the address, so the address is the user's.
    let me = app.get_json("/v1/me", new["access_token"].as_str()).await;
    assert_eq!(me["email_verified"], true);
}

async fn a_reset_for_an_unknown_address_is_answered_alike_and_sends_nothing(backend: Backend) {
    let (app, mut smtp) = app_with_mail(backend).await;
    customer(&app, &mut smtp, "ada@example.com").await;

    let known = ask_reset(&app, "ada@example.com").await;
    let unknown = ask_reset(&app, "nobody@example.com").await;

    let shape = |r: &reqwest::Response| {
        let mut headers: Vec<(String, String)> = r
            .headers()
            .iter()
            .filter(|(name, _)| !["date", "x-request-id"].contains(&name.as_str()))
            .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
            .collect();
        headers.sort();
        (r.status(), headers)
    };
    assert_eq!(shape(&known), shape(&unknown));
    assert_eq!(known.status(), StatusCode::ACCEPTED);
    assert_eq!(known.bytes().await.unwrap(), unknown.bytes().await.unwrap());
    // One mail, to the account's address; none to the other.
    the_mail(&app, &mut smtp, "ada@example.com").await;
    // An address that cannot exist is a field error, which says nothing about accounts.
    let invalid = ask_reset(&app, "not an address").await;
    assert_eq!(
        field_errors(invalid).await,
        [("email".to_owned(), "invalid".to_owned())]
    );
}

/// The half hour is passed by moving the token's expiry back in the database.
async fn an_expired_reset_link_is_refused(backend: Backend) {
    let (app, mut smtp) = app_with_mail(backend).await;
    customer(&app, &mut smtp, "ada@example.com").await;
    ask_reset(&app, "ada@example.com").await;
    let token = token_in(&the_mail(&app, &mut smtp, "ada@example.com").await, "reset");

    let past = tidings::store::now() - Duration::from_secs(1);
    let expire = "update email_tokens set expires_at = $1 where purpose = 'password_reset'";
    match &app.state.db {
        Db::Postgres(pool, _) => drop(sqlx::query(expire).bind(past).execute(pool).await.unwrap()),
        Db::Sqlite(pool, _) => drop(sqlx::query(expire).bind(past).execute(pool).await.unwrap()),
    }

    let late = confirm_reset(&app, &token, NEW_PASSWORD).await;
    assert_eq!(late.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem(late).await["code"], "invalid_token");
    app.login_ok("ada@example.com").await;
    let unknown = confirm_reset(
        &app,
        "bm90IGEgdG9rZW4gdGhhdCB3YXMgZXZlciBzZW50IQ",
        NEW_PASSWORD,
    )
    .await;
    assert_eq!(problem(unknown).await["code"], "invalid_token");
}

async fn a_new_password_from_a_reset_link_follows_the_password_rules(backend: Backend) {
    let (app, mut smtp) = app_with_mail(backend).await;
    customer(&app, &mut smtp, "ada@example.com").await;
    ask_reset(&app, "ada@example.com").await;
    let token = token_in(&the_mail(&app, &mut smtp, "ada@example.com").await, "reset");

    for weak in ["short", "ada@example.com", "password1234"] {
        let refused = confirm_reset(&app, &token, weak).await;
        assert_eq!(
            field_errors(refused).await,
            [("password".to_owned(), "weak".to_owned())],
            "{weak}"
        );
    }
    // A refused password leaves the link usable.
    let reset = confirm_reset(&app, &token, NEW_PASSWORD).await;
    assert_eq!(reset.status(), StatusCode::NO_CONTENT);
}

async fn a_verification_link_works_once_and_marks_the_address_verified(backend: Backend) {
    let (app, mut smtp) = app_with_mail(backend).await;
    let (ada, token) = customer(&app, &mut smtp, "ada@example.com").await;
    let me = app.get_json("/v1/me", Some(&ada.access_token)).await;
    assert_eq!(me["email_verified"], false);

    let verified = verify(&app, &token).await;
    assert_eq!(verified.status(), StatusCode::NO_CONTENT);

    let again = verify(&app, &token).await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem(again).await["code"], "invalid_token");
    let me = app.get_json("/v1/me", Some(&ada.access_token)).await;
    assert_eq!(me["email_verified"], true);
    // Admins see it too.
    let admin = app.user_with_role("root@example.com", Role::Admin).await;
    let users = app.get_json("/v1/users", Some(&admin.access_token)).await;
    let listed = users["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == "ada@example.com")
        .expect("ada is listed");
    assert_eq!(listed["email_verified"], true);
    // No more links for a verified address.
    let resend = app
        .post(
            "/v1/auth/verify-email/request",
            &json!({}),
            Some(&ada.access_token),
        )
        .await;
    assert_eq!(resend.status(), StatusCode::CONFLICT);
    assert_eq!(problem(resend).await["code"], "email_already_verified");
    // A reset link is no verification link, nor the other way round.
    ask_reset(&app, "ada@example.com").await;
    let reset = token_in(&the_mail(&app, &mut smtp, "ada@example.com").await, "reset");
    assert_eq!(
        problem(verify(&app, &reset).await).await["code"],
        "invalid_token"
    );
}

async fn a_verification_link_can_be_sent_again(backend: Backend) {
    let (app, mut smtp) = app_with_mail(backend).await;
    let (ada, first) = customer(&app, &mut smtp, "ada@example.com").await;

    let resend = app
        .post(
            "/v1/auth/verify-email/request",
            &json!({}),
            Some(&ada.access_token),
        )
        .await;
    assert_eq!(resend.status(), StatusCode::ACCEPTED);
    let second = token_in(
        &the_mail(&app, &mut smtp, "ada@example.com").await,
        "verify",
    );
    assert_ne!(first, second);

    assert_eq!(verify(&app, &second).await.status(), StatusCode::NO_CONTENT);
    let me = app.get_json("/v1/me", Some(&ada.access_token)).await;
    assert_eq!(me["email_verified"], true);
    let anonymous = app
        .post("/v1/auth/verify-email/request", &json!({}), None)
        .await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

async fn orders_wait_for_a_verified_address_when_the_setting_asks(backend: Backend) {
    let mut smtp = SmtpServer::open().await;
    let app = TestApp::spawn_with(backend, |c| {
        mail_through(c, &smtp);
        c.require_verified_email = true;
    })
    .await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let tee = app.product(&staff.access_token, "TEE", 1500, 10).await;
    let tee = tee["id"].as_str().unwrap();
    let (ada, token) = customer(&app, &mut smtp, "ada@example.com").await;

    let refused = app.order(&ada.access_token, &[(tee, 1)]).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(problem(refused).await["code"], "email_not_verified");

    assert_eq!(verify(&app, &token).await.status(), StatusCode::NO_CONTENT);
    app.place_order(&ada.access_token, &[(tee, 1)]).await;
}

async fn a_mail_server_that_is_down_fails_no_request(backend: Backend) {
    // A port nobody listens on any more.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = closed.local_addr().unwrap();
    drop(closed);
    let app = TestApp::spawn_with(backend, |c| {
        c.smtp_url = SmtpUrl::parse(&format!("smtp://{address}")).unwrap();
        c.mail_from = Some(SENDER.parse().unwrap());
        c.public_url = Some(PUBLIC_URL.into());
    })
    .await;

    let ada = app.customer("ada@example.com").await;
    let asked = ask_reset(&app, "ada@example.com").await;
    assert_eq!(asked.status(), StatusCode::ACCEPTED);
    let resend = app
        .post(
            "/v1/auth/verify-email/request",
            &json!({}),
            Some(&ada.access_token),
        )
        .await;
    assert_eq!(resend.status(), StatusCode::ACCEPTED);
    tokio::time::timeout(PATIENCE, app.state.mailer.settled())
        .await
        .expect("a refused connection is given up at once");

    assert_eq!(app.get("/readyz", None).await.status(), StatusCode::OK);
    app.get_json("/v1/me", Some(&ada.access_token)).await;
    let metrics = app.metrics().await.text().await.unwrap();
    for kind in ["verify_email", "password_reset"] {
        let line = format!("tidings_mail_sent_total{{kind=\"{kind}\",outcome=\"failed\"}}");
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
}

async fn with_email_off_requests_are_answered_alike_and_nothing_is_sent(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert!(!app.state.mailer.is_enabled());
    let ada = app.customer("ada@example.com").await;

    for email in ["ada@example.com", "nobody@example.com"] {
        assert_eq!(ask_reset(&app, email).await.status(), StatusCode::ACCEPTED);
    }
    let resend = app
        .post(
            "/v1/auth/verify-email/request",
            &json!({}),
            Some(&ada.access_token),
        )
        .await;
    assert_eq!(resend.status(), StatusCode::ACCEPTED);
    app.state.mailer.settled().await;
    let tokens = "select count(*) from email_tokens";
    let made: i64 = match &app.state.db {
        Db::Postgres(pool, _) => sqlx::query_scalar(tokens).fetch_one(pool).await.unwrap(),
        Db::Sqlite(pool, _) => sqlx::query_scalar(tokens).fetch_one(pool).await.unwrap(),
    };
    assert_eq!(made, 0, "no link is made that nobody would receive");
}

async fn mail_to_one_address_is_rate_limited(backend: Backend) {
    let mut smtp = SmtpServer::open().await;
    let app = TestApp::spawn_with(backend, |c| {
        mail_through(c, &smtp);
        c.mail_rate_per_address = 2;
    })
    .await;
    customer(&app, &mut smtp, "ada@example.com").await;

    for _ in 0..2 {
        assert_eq!(
            ask_reset(&app, "ada@example.com").await.status(),
            StatusCode::ACCEPTED
        );
    }
    let third = ask_reset(&app, "ADA@example.com").await;
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(third.headers().contains_key("retry-after"));
    // Counted by the address typed, so an unknown one is limited alike.
    for _ in 0..2 {
        ask_reset(&app, "nobody@example.com").await;
    }
    let unknown = ask_reset(&app, "nobody@example.com").await;
    assert_eq!(unknown.status(), StatusCode::TOO_MANY_REQUESTS);
    app.state.mailer.settled().await;
    assert!(smtp.try_next().is_some() && smtp.try_next().is_some());
    assert!(smtp.try_next().is_none());
}

/// The binary, its logs at `debug` read whole: the SMTP password (as typed, or as the
/// base64 of an AUTH exchange) and the links' tokens are on no line, though mail was sent
/// with them.
#[tokio::test]
async fn the_smtp_password_and_the_links_tokens_are_in_no_log_line() {
    use std::process::Stdio;
    use tokio::io::AsyncReadExt;

    let mut smtp = SmtpServer::with_credentials(SMTP_USER, SMTP_PASSWORD).await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = crate::cli::tidings()
        .env("TIDINGS_DATA_DIR", dir.path())
        .env("TIDINGS_LISTEN", "127.0.0.1:0")
        .env("TIDINGS_LOG_FORMAT", "json")
        .env("RUST_LOG", "debug")
        .env("TIDINGS_SMTP_URL", smtp.url())
        .env("TIDINGS_MAIL_FROM", format!("Tidings <{SENDER}>"))
        .env("TIDINGS_PUBLIC_URL", PUBLIC_URL)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    // Read on a task of its own, so that the pipe never fills while the test waits.
    let (address_tx, address_rx) = tokio::sync::oneshot::channel();
    let logs = tokio::spawn(async move {
        let mut all = String::new();
        let mut address_tx = Some(address_tx);
        let mut buffer = [0u8; 8192];
        loop {
            let n = stderr.read(&mut buffer).await.unwrap();
            if n == 0 {
                return all;
            }
            all.push_str(&String::from_utf8_lossy(&buffer[..n]));
            if let Some(line) = all.lines().find(|l| l.contains("\"address\""))
                && let Some(tx) = address_tx.take()
            {
                let entry: Value = serde_json::from_str(line).unwrap();
                let _ = tx.send(entry["address"].as_str().unwrap().to_owned());
            }
        }
    });
    let address = tokio::time::timeout(PATIENCE, address_rx)
        .await
        .expect("the server starts in time")
        .unwrap();
    let client = reqwest::Client::new();
    let register = client
        .post(format!("http://{address}/v1/auth/register"))
        .json(&json!({"email": "ada@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(register.status(), StatusCode::CREATED);
    let verification = smtp.next().await;
    let reset = client
        .post(format!("http://{address}/v1/auth/password-reset"))
        .json(&json!({"email": "ada@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), StatusCode::ACCEPTED);
    let reset = smtp.next().await;
    let tokens = [token_in(&verification, "verify"), token_in(&reset, "reset")];
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("the server stops in time")
        .unwrap();
    let logs = logs.await.unwrap();

    assert!(logs.contains("email is sent through SMTP"), "{logs}");
    let auth_plain = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("\0{SMTP_USER}\0{SMTP_PASSWORD}"))
    };
    let encoded_password = smtp.url();
    let encoded_password = encoded_password
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, password)| password.to_owned())
        .unwrap();
    for secret in [
        SMTP_PASSWORD,
        &auth_plain,
        &encoded_password,
        &tokens[0],
        &tokens[1],
    ] {
        let leaked: Vec<&str> = logs.lines().filter(|l| l.contains(secret)).collect();
        assert!(leaked.is_empty(), "{secret:?} is logged: {leaked:?}");
    }
}
