//! The delivery worker: notifications no app acknowledged reach the user's devices through
//! a Web Push service in the test (which decrypts each message with the subscription's
//! key); the fallback rule (connected and acknowledging: nothing; connected and silent:
//! after the delay; not connected: at once), acks over WebSocket and HTTP, preferences,
//! retries, dead letters, gone devices, the per-device rate limit, restarts, and the
//! delivery log.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::mpsc::error::TryRecvError;
use uuid::Uuid;

use crate::devices::{Receiver, Subscriber, register};
use crate::errors::field_errors;
use crate::helpers::{Backend, TestApp, json_body};
use crate::{backend_tests, postgres_tests};

backend_tests!(
    a_user_with_no_connection_is_pushed_at_once,
    a_connected_user_whose_app_acks_is_not_pushed,
    a_connected_user_whose_app_does_not_ack_is_pushed_after_the_delay,
    an_event_stream_client_acks_over_http,
    acks_out_of_range_are_refused,
    acks_are_written_together_and_a_deleted_users_does_not_lose_the_others,
    preferences_choose_which_kinds_are_pushed,
    a_device_the_service_reports_gone_is_removed,
    a_failing_service_is_retried_with_backoff_then_the_delivery_is_dead,
    the_services_retry_after_is_honoured,
    a_device_sent_too_much_waits_its_turn,
    a_waiting_delivery_survives_a_restart_and_is_sent_once,
    only_admins_read_the_delivery_log,
    a_user_with_no_device_who_chose_email_is_emailed_if_verified,
);

postgres_tests!(two_instances_push_each_notification_once);

/// How long a test waits for the worker to get somewhere.
const PATIENCE: Duration = Duration::from_secs(15);

/// An app that pushes to the test's receiver (on 127.0.0.1, plain http), with `delay` for
/// acknowledgements.
async fn spawn(
    backend: Backend,
    delay: Duration,
    tweak: impl FnOnce(&mut tidings::config::Config),
) -> TestApp {
    TestApp::spawn_with(backend, |c| {
        c.push_allow_private_endpoints = true;
        c.push_delay = delay;
        tweak(c);
    })
    .await
}

/// A user with a Web Push subscription at the receiver: their tokens, id, subscriber.
struct Pushed {
    token: String,
    id: Uuid,
    subscriber: Subscriber,
    device: Value,
}

async fn subscribed_user(app: &TestApp, email: &str, receiver: &Receiver, seed: u8) -> Pushed {
    let tokens = app.customer(email).await;
    let subscriber = Subscriber::new(seed);
    let device = json_body(
        register(
            app,
            &tokens.access_token,
            &subscriber.registration(&format!("{}/push/{seed}", receiver.base)),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let id = app.user_id(&tokens.access_token).await;
    Pushed {
        token: tokens.access_token,
        id,
        subscriber,
        device,
    }
}

pub(crate) async fn admin(app: &TestApp) -> String {
    app.user_with_role("root@example.com", tidings::domain::Role::Admin)
        .await
        .access_token
}

/// Sends the user a notification (an admin's broadcast to them alone).
pub(crate) async fn notify(app: &TestApp, admin: &str, user: Uuid, title: &str) {
    app.broadcast(admin, title, &format!("About {title}."), json!([user]))
        .await;
}

/// The delivery log's items for `query` (e.g. `user=…`).
pub(crate) async fn log(app: &TestApp, admin: &str, query: &str) -> Vec<Value> {
    let body = app
        .get_json(&format!("/v1/admin/deliveries?{query}"), Some(admin))
        .await;
    body["items"].as_array().unwrap().clone()
}

/// Waits until the log of `user` has an item for which `done` holds; that item.
pub(crate) async fn until_logged(
    app: &TestApp,
    admin: &str,
    user: Uuid,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        if let Some(item) = log(app, admin, &format!("user={user}"))
            .await
            .into_iter()
            .find(|i| done(i))
        {
            return item;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "the delivery log of {user} did not get there: {:?}",
            log(app, admin, &format!("user={user}")).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the user's live connection is recorded as present.
async fn until_present(app: &TestApp, user: Uuid) {
    let started = Instant::now();
    loop {
        let since = chrono::Utc::now() - chrono::Duration::seconds(15);
        let present = tidings::store::presence::connected(&app.state.db, &[user], since)
            .await
            .unwrap();
        if present.contains(&user) {
            return;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "the connection was not recorded"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The decrypted payload of a push, as JSON.
fn opened(subscriber: &Subscriber, received: &crate::devices::Received) -> Value {
    serde_json::from_slice(&subscriber.decrypt(&received.body)).expect("the payload is JSON")
}

fn state_is(state: &'static str) -> impl Fn(&Value) -> bool {
    move |i: &Value| i["state"] == state
}

pub(crate) fn delivery_is(status: &'static str) -> impl Fn(&Value) -> bool {
    move |i: &Value| {
        i["deliveries"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["status"] == status))
    }
}

async fn a_user_with_no_connection_is_pushed_at_once(backend: Backend) {
    // A delay longer than the test's patience: only the no-connection rule can push.
    let app = spawn(backend, Duration::from_secs(600), |_| {}).await;
    let admin = admin(&app).await;
    let mut receiver = Receiver::start().await;
    let ada = subscribed_user(&app, "ada@example.com", &receiver, 11).await;

    notify(&app, &admin, ada.id, "Sale").await;
    let push = receiver.next().await;
    assert_eq!(push.path, "/push/11");
    assert_eq!(push.headers["content-encoding"], "aes128gcm");
    assert_eq!(push.headers["ttl"], "86400");
    assert_eq!(push.headers["urgency"], "normal");
    let event = opened(&ada.subscriber, &push);
    assert_eq!(event["type"], "notification.created");
    assert_eq!(event["topic"], "notifications");
    assert_eq!(event["data"]["title"], "Sale");
    assert_eq!(event["data"]["body"], "About Sale.");
    let notification: Uuid = event["data"]["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        push.headers["topic"].to_str().unwrap(),
        notification.simple().to_string(),
        "a repeat of the message replaces it at the push service"
    );

    let item = until_logged(&app, &admin, ada.id, delivery_is("sent")).await;
    assert_eq!(item["event_seq"], event["seq"]);
    assert_eq!(item["state"], "pushed");
    assert_eq!(item["kind"], "broadcast");
    let delivery = &item["deliveries"][0];
    assert_eq!(delivery["channel"], "webpush");
    assert_eq!(delivery["device_id"], ada.device["id"]);
    assert_eq!(
        delivery["target"], "127.0.0.1",
        "only the endpoint's host is shown"
    );
    assert_eq!(delivery["attempts"], 1);
    assert_eq!(delivery["log"][0]["outcome"], "delivered");
    // Also found by event.
    let by_event = log(&app, &admin, &format!("event={}", event["seq"])).await;
    assert_eq!(by_event.len(), 1);
    assert_eq!(by_event[0]["user_id"], json!(ada.id));
    // The device's last use is recorded.
    let devices = app.get_json("/v1/me/devices", Some(&ada.token)).await;
    assert!(!devices[0]["last_used_at"].is_null(), "{devices}");
}

async fn a_connected_user_whose_app_acks_is_not_pushed(backend: Backend) {
    let app = spawn(backend, Duration::from_secs(3), |_| {}).await;
    let admin = admin(&app).await;
    let mut receiver = Receiver::start().await;
    let ada = subscribed_user(&app, "ada@example.com", &receiver, 12).await;
    let mut ws = app.ws(&ada.token).await;
    ws.subscribe(&["notifications"], None).await;
    until_present(&app, ada.id).await;

    notify(&app, &admin, ada.id, "Hello").await;
    let event = ws.next_of("notification.created").await;
    ws.send(json!({"type": "ack", "seq": event["seq"]})).await;

    let item = until_logged(&app, &admin, ada.id, |i| i["state"] != "waiting").await;
    assert_eq!(item["state"], "acked", "{item}");
    assert_eq!(item["deliveries"], json!([]));
    assert!(
        matches!(receiver.requests.try_recv(), Err(TryRecvError::Empty)),
        "nothing was pushed"
    );
}

async fn a_connected_user_whose_app_does_not_ack_is_pushed_after_the_delay(backend: Backend) {
    let delay = Duration::from_secs(1);
    let app = spawn(backend, delay, |_| {}).await;
    let admin = admin(&app).await;
    let mut receiver = Receiver::start().await;
    let ada = subscribed_user(&app, "ada@example.com", &receiver, 13).await;
    let mut ws = app.ws(&ada.token).await;
    ws.subscribe(&["notifications"], None).await;
    until_present(&app, ada.id).await;

    notify(&app, &admin, ada.id, "Unseen").await;
    let live = ws.next_of("notification.created").await;
    let push = receiver.next().await;
    let event = opened(&ada.subscriber, &push);
    assert_eq!(event["seq"], live["seq"]);
    assert_eq!(
        event["data"], live["data"],
        "the push carries what the socket did"
    );
    let committed = chrono::DateTime::parse_from_rfc3339(event["at"].as_str().unwrap()).unwrap();
    let waited = (chrono::Utc::now() - committed.with_timezone(&chrono::Utc))
        .to_std()
        .unwrap();
    assert!(
        waited >= delay,
        "pushed {waited:?} after the commit, before the delay"
    );
    let item = until_logged(&app, &admin, ada.id, delivery_is("sent")).await;
    assert_eq!(item["state"], "pushed");
    // An ack after the push changes nothing.
    ws.send(json!({"type": "ack", "seq": live["seq"]})).await;
}

async fn an_event_stream_client_acks_over_http(backend: Backend) {
    let app = spawn(backend, Duration::from_secs(3), |_| {}).await;
    let admin = admin(&app).await;
    let mut receiver = Receiver::start().await;
    let ada = subscribed_user(&app, "ada@example.com", &receiver, 14).await;
    let mut sse = app.sse(&ada.token, "notifications", None).await;
    until_present(&app, ada.id).await;

    notify(&app, &admin, ada.id, "Streamed").await;
    let event = loop {
        let next = sse.next().await.expect("the stream stays open");
        if next.event == "notification.created" {
            break next.data;
        }
    };
    let acked = app
        .post(
            "/v1/events/ack",
            &json!({"seq": event["seq"]}),
            Some(&ada.token),
        )
        .await;
    assert_eq!(acked.status(), StatusCode::NO_CONTENT);

    let item = until_logged(&app, &admin, ada.id, |i| i["state"] != "waiting").await;
    assert_eq!(item["state"], "acked", "{item}");
    assert!(matches!(
        receiver.requests.try_recv(),
        Err(TryRecvError::Empty)
    ));
}

async fn acks_out_of_range_are_refused(backend: Backend) {
    let app = spawn(backend, Duration::from_secs(2), |_| {}).await;
    let ada = app.customer("ada@example.com").await;
    for seq in [json!(0), json!(-1), json!(1_000_000)] {
        let refused = app
            .post(
                "/v1/events/ack",
                &json!({"seq": seq}),
                Some(&ada.access_token),
            )
            .await;
        assert_eq!(
            field_errors(refused).await,
            vec![("seq".to_owned(), "out_of_range".to_owned())],
            "seq {seq}"
        );
    }
    let extra = app
        .post(
            "/v1/events/ack",
            &json!({"seq": 1, "more": true}),
            Some(&ada.access_token),
        )
        .await;
    assert_eq!(extra.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let anonymous = app.post("/v1/events/ack", &json!({"seq": 1}), None).await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    let mut ws = app.ws(&ada.access_token).await;
    ws.send(json!({"type": "ack", "seq": 1_000_000})).await;
    let error = ws.next_json().await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["code"], "bad_ack");
    ws.send(json!({"type": "ack"})).await;
    assert_eq!(ws.next_json().await["code"], "bad_message");
    // The connection stays open.
    ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.next_json().await["type"], "pong");
}

async fn preferences_choose_which_kinds_are_pushed(backend: Backend) {
    let app = spawn(backend, Duration::from_secs(600), |_| {}).await;
    let admin = admin(&app).await;
    let mut receiver = Receiver::start().await;
    let ada = subscribed_user(&app, "ada@example.com", &receiver, 15).await;

    let defaults = app
        .get_json("/v1/me/delivery-preferences", Some(&ada.token))
        .await;
    assert_eq!(
        defaults,
        json!({"push": ["order_status", "low_stock", "broadcast"], "email": []})
    );
    let set = app
        .put(
            "/v1/me/delivery-preferences",
            &json!({"push": ["broadcast", "order_status", "order_status"], "email": []}),
            &ada.token,
        )
        .await;
    assert_eq!(
        json_body(set, StatusCode::OK).await,
        json!({"push": ["order_status", "broadcast"], "email": []}),
        "in a fixed order, once each"
    );
    let unknown = app
        .put(
            "/v1/me/delivery-preferences",
            &json!({"push": ["sms"], "email": []}),
            &ada.token,
        )
        .await;
    assert_eq!(unknown.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let missing = app
        .put(
            "/v1/me/delivery-preferences",
            &json!({"push": []}),
            &ada.token,
        )
        .await;
    assert_eq!(missing.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // Live only for broadcasts: decided, not pushed.
    app.put(
        "/v1/me/delivery-preferences",
        &json!({"push": ["order_status"], "email": []}),
        &ada.token,
    )
    .await;
    notify(&app, &admin, ada.id, "Quiet").await;
    let item = until_logged(&app, &admin, ada.id, |i| i["state"] != "waiting").await;
    assert_eq!(item["state"], "live_only");
    assert!(matches!(
        receiver.requests.try_recv(),
        Err(TryRecvError::Empty)
    ));

    // A user with no device: decided as having no target.
    let bob = app.customer("bob@example.com").await;
    let bob_id = app.user_id(&bob.access_token).await;
    notify(&app, &admin, bob_id, "Nowhere").await;
    let item = until_logged(&app, &admin, bob_id, |i| i["state"] != "waiting").await;
    assert_eq!(item["state"], "no_target");
}

async fn a_device_the_service_reports_gone_is_removed(backend: Backend) {
    let app = spawn(backend, Duration::from_secs(600), |_| {}).await;
    let admin = admin(&app).await;
    let mut receiver = Receiver::start().await;
    let ada = subscribed_user(&app, "ada@example.com", &receiver, 16).await;
    receiver
        .answer_with(axum::http::StatusCode::GONE, Vec::new())
        .await;

    notify(&app, &admin, ada.id, "Gone").await;
    receiver.next().await;
    let item = until_logged(&app, &admin, ada.id, delivery_is("gone")).await;
    let delivery = &item["deliveries"][0];
    assert_eq!(delivery["log"][0]["outcome"], "gone");
    assert!(
        delivery["device_id"].is_null(),
        "the device is removed: {delivery}"
    );
    let devices = app.get_json("/v1/me/devices", Some(&ada.token)).await;
    assert_eq!(devices, json!([]));
}

async fn a_failing_service_is_retried_with_backoff_then_the_delivery_is_dead(backend: Backend) {
    let app = spawn(backend, Duration::from_secs(600), |c| {
        c.push_max_attempts = 3;
        c.push_retry_base = Duration::from_millis(100);
    })
    .await;
    let admin = admin(&app).await;
    let mut receiver = Receiver::start().await;
    let ada = subscribed_user(&app, "ada@example.com", &receiver, 17).await;
    receiver
        .answer_with(axum::http::StatusCode::SERVICE_UNAVAILABLE, Vec::new())
        .await;

    notify(&app, &admin, ada.id, "Flaky").await;
    let mut times = Vec::new();
    for _ in 0..3 {
        times.push(receiver.next().await.at);
    }
    let item = until_logged(&app, &admin, ada.id, delivery_is("dead")).await;
    let delivery = &item["deliveries"][0];
    assert_eq!(delivery["attempts"], 3);
    let outcomes: Vec<&str> = delivery["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["retry", "retry", "retry"]);
    // Waits of base × 2^(n−1) with equal jitter: at least 50 ms, then at least 100 ms.
    assert!(
        times[1] - times[0] >= Duration::from_millis(50),
        "{times:?}"
    );
    assert!(
        times[2] - times[1] >= Duration::from_millis(100),
        "{times:?}"
    );
    assert!(
        matches!(receiver.requests.try_recv(), Err(TryRecvError::Empty)),
        "no fourth attempt"
    );
    // The device is kept: the service failed, not the subscription.
    let devices = app.get_json("/v1/me/devices", Some(&ada.token)).await;
    assert_eq!(devices.as_array().unwrap().len(), 1);
}

async fn the_services_retry_after_is_honoured(backend: Backend) {
    let app = spawn(backend, Duration::from_secs(600), |c| {
        c.push_retry_base = Duration::from_millis(10);
    })
    .await;
    let admin = admin(&app).await;
    let mut receiver = Receiver::start().await;
    let ada = subscribed_user(&app, "ada@example.com", &receiver, 18).await;
    receiver
        .answer_with(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            vec![("retry-after", "1")],
        )
        .await;

    notify(&app, &admin, ada.id, "Busy").await;
    let first = receiver.next().await.at;
    // The receiver reads its answer after handing the request over: switch it only once
    // the first answer is recorded.
    until_logged(&app, &admin, ada.id, |i| {
        i["deliveries"][0]["log"][0]["outcome"] == "retry"
    })
    .await;
    receiver
        .answer_with(axum::http::StatusCode::CREATED, Vec::new())
        .await;
    let again = receiver.next().await;
    assert!(
        again.at - first >= Duration::from_millis(900),
        "retried {:?} after a Retry-After of 1 s",
        again.at - first
    );
    assert_eq!(opened(&ada.subscriber, &again)["data"]["title"], "Busy");
    let item = until_logged(&app, &admin, ada.id, delivery_is("sent")).await;
    let log = &item["deliveries"][0]["log"];
    assert_eq!(log[0]["outcome"], "retry");
    assert_eq!(log[0]["detail"], "retry after 1 s");
    assert_eq!(log[1]["outcome"], "delivered");
}

async fn a_device_sent_too_much_waits_its_turn(backend: Backend) {
    let app = spawn(backend, Duration::from_secs(600), |c| {
        c.push_device_rate = 1
    })
    .await;
    let admin = admin(&app).await;
    let mut receiver = Receiver::start().await;
    let ada = subscribed_user(&app, "ada@example.com", &receiver, 19).await;

    notify(&app, &admin, ada.id, "First").await;
    receiver.next().await;
    notify(&app, &admin, ada.id, "Second").await;
    // Decided, claimed and put back to wait (before the claim it is pending too, due now).
    let later = |i: &Value| {
        i["deliveries"][0]["next_attempt_at"]
            .as_str()
            .and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok())
            .is_some_and(|t| t - chrono::Utc::now() > chrono::Duration::seconds(30))
    };
    let item = until_logged(&app, &admin, ada.id, |i| {
        i["deliveries"][0]["status"] == "pending" && later(i)
    })
    .await;
    let delivery = &item["deliveries"][0];
    assert_eq!(delivery["attempts"], 0, "waiting is not an attempt");
    let next: chrono::DateTime<chrono::Utc> = delivery["next_attempt_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        next - chrono::Utc::now() > chrono::Duration::seconds(30),
        "the second message waits for the device's minute: {next}"
    );
    assert!(matches!(
        receiver.requests.try_recv(),
        Err(TryRecvError::Empty)
    ));
}

async fn a_waiting_delivery_survives_a_restart_and_is_sent_once(backend: Backend) {
    let delay = Duration::from_secs(2);
    let mut first = spawn(backend, delay, |_| {}).await;
    let admin = admin(&first).await;
    let mut receiver = Receiver::start().await;
    let ada = subscribed_user(&first, "ada@example.com", &receiver, 20).await;
    let mut ws = first.ws(&ada.token).await;
    ws.subscribe(&["notifications"], None).await;
    until_present(&first, ada.id).await;
    notify(&first, &admin, ada.id, "Restart").await;
    ws.next_of("notification.created").await;
    until_logged(&first, &admin, ada.id, state_is("waiting")).await;
    // The instance stops while the intent waits for an ack that never comes.
    drop(ws);
    first.shut_down().await;

    let second = first.another_instance().await;
    let push = receiver.next().await;
    assert_eq!(opened(&ada.subscriber, &push)["data"]["title"], "Restart");
    let item = until_logged(&second, &admin, ada.id, delivery_is("sent")).await;
    assert_eq!(item["deliveries"].as_array().unwrap().len(), 1);
    assert_eq!(item["deliveries"][0]["attempts"], 1);
    assert!(
        matches!(receiver.requests.try_recv(), Err(TryRecvError::Empty)),
        "sent once"
    );
}

async fn only_admins_read_the_delivery_log(backend: Backend) {
    let app = spawn(backend, Duration::from_secs(600), |_| {}).await;
    let ada = app.customer("ada@example.com").await;
    let staff = app
        .user_with_role("staff@example.com", tidings::domain::Role::Staff)
        .await;
    for token in [&ada.access_token, &staff.access_token] {
        let refused = app.get("/v1/admin/deliveries", Some(token)).await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    }
    let admin = admin(&app).await;
    for query in ["limit=0", "limit=101", "event=0", "user=nobody"] {
        let refused = app
            .get(&format!("/v1/admin/deliveries?{query}"), Some(&admin))
            .await;
        assert!(
            refused.status().is_client_error(),
            "{query}: {}",
            refused.status()
        );
    }
    assert_eq!(
        app.get_json("/v1/admin/deliveries", Some(&admin)).await,
        json!({"items": []})
    );
}

async fn two_instances_push_each_notification_once(backend: Backend) {
    let one = spawn(backend, Duration::from_secs(600), |_| {}).await;
    let two = one.another_instance().await;
    let admin = admin(&one).await;
    let mut receiver = Receiver::start().await;
    let ada = subscribed_user(&one, "ada@example.com", &receiver, 21).await;

    for n in 0..20 {
        let app = if n % 2 == 0 { &one } else { &two };
        notify(app, &admin, ada.id, &format!("N{n}")).await;
    }
    let mut titles = Vec::new();
    for _ in 0..20 {
        let push = receiver.next().await;
        titles.push(
            opened(&ada.subscriber, &push)["data"]["title"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    titles.sort();
    let mut expected: Vec<String> = (0..20).map(|n| format!("N{n}")).collect();
    expected.sort();
    assert_eq!(titles, expected);
    let started = Instant::now();
    loop {
        let items = log(&one, &admin, &format!("user={}", ada.id)).await;
        if items.len() == 20 && items.iter().all(delivery_is("sent")) {
            break;
        }
        assert!(started.elapsed() < PATIENCE, "{items:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        matches!(receiver.requests.try_recv(), Err(TryRecvError::Empty)),
        "each once"
    );
}

async fn a_user_with_no_device_who_chose_email_is_emailed_if_verified(backend: Backend) {
    let mut smtp = crate::smtp::SmtpServer::open().await;
    let app = spawn(backend, Duration::from_secs(600), |c| {
        crate::mail::mail_through(c, &smtp)
    })
    .await;
    let admin = admin(&app).await;
    let email_broadcasts = json!({"push": ["order_status"], "email": ["broadcast"]});
    let mut users = Vec::new();
    for email in ["ada@example.com", "bob@example.com"] {
        let tokens = app.customer(email).await;
        let id = app.user_id(&tokens.access_token).await;
        let set = app
            .put(
                "/v1/me/delivery-preferences",
                &email_broadcasts,
                &tokens.access_token,
            )
            .await;
        assert_eq!(set.status(), StatusCode::OK);
        users.push(id);
    }
    // Ada verifies her address; Bob does not.
    app.state.mailer.settled().await;
    while smtp.try_next().is_some() {}
    let mut tx = app.state.db.begin().await.unwrap();
    tidings::store::users::mark_verified(&mut tx, users[0], "ada@example.com")
        .await
        .unwrap()
        .expect("Ada is verified");
    tx.commit().await.unwrap();

    notify(&app, &admin, users[0], "Weekly digest").await;
    notify(&app, &admin, users[1], "Weekly digest").await;
    let mail = smtp.next().await;
    assert_eq!(mail.to, ["ada@example.com"]);
    let parsed = mail.parsed();
    assert!(
        parsed
            .subject()
            .unwrap_or_default()
            .contains("Weekly digest"),
        "{:?}",
        parsed.subject()
    );
    assert!(
        parsed
            .body_text(0)
            .unwrap()
            .contains("About Weekly digest.")
    );
    let item = until_logged(&app, &admin, users[0], delivery_is("sent")).await;
    assert_eq!(item["state"], "emailed");
    assert_eq!(item["deliveries"][0]["channel"], "email");
    assert_eq!(item["deliveries"][0]["target"], "a…@example.com");
    let bob = until_logged(&app, &admin, users[1], |i| i["state"] != "waiting").await;
    assert_eq!(
        bob["state"], "no_target",
        "no mail to an unverified address"
    );
    assert!(smtp.try_next().is_none(), "one mail only");
}

async fn acks_are_written_together_and_a_deleted_users_does_not_lose_the_others(backend: Backend) {
    let app = spawn(backend, Duration::from_secs(600), |_| {}).await;
    let ada = app.customer("ada@example.com").await;
    let ada = app.user_id(&ada.access_token).await;
    let db = &app.state.db;
    let now = chrono::Utc::now();
    let gone = Uuid::now_v7();
    tidings::store::presence::record_acks(db, &[(ada, 5), (gone, 7)], now)
        .await
        .expect("the unknown user is skipped");
    // Never lowered; raised.
    tidings::store::presence::record_acks(db, &[(ada, 3)], now)
        .await
        .unwrap();
    let seqs = tidings::store::presence::acked_seqs(db, &[ada, gone])
        .await
        .unwrap();
    assert_eq!(seqs.get(&ada), Some(&5));
    assert_eq!(seqs.get(&gone), None);
    tidings::store::presence::record_acks(db, &[(ada, 9)], now)
        .await
        .unwrap();
    let seqs = tidings::store::presence::acked_seqs(db, &[ada])
        .await
        .unwrap();
    assert_eq!(seqs.get(&ada), Some(&9));
}
