//! Devices (push targets) and Web Push: registering, listing, deleting, the cap, the
//! refusals (server-side request forgery included), the VAPID key, and the Web Push
//! provider against a receiving endpoint in the test that decrypts every message with the
//! subscription's private key and checks the VAPID token and headers.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::{PublicKey, SecretKey};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tidings::config::VapidPrivateKey;
use tidings::push::vapid::VapidKey;
use tidings::push::webpush::WebPush;
use tidings::push::{Outcome, PushMessage, PushProvider, Urgency};
use tokio::sync::{Mutex, mpsc};

use crate::backend_tests;
use crate::errors::field_errors;
use crate::helpers::{Backend, TestApp, json_body, problem};

backend_tests!(
    a_web_push_subscription_is_registered_listed_and_deleted,
    the_same_subscription_registered_twice_is_one_device,
    fcm_and_apns_tokens_are_registered,
    another_users_device_cannot_be_deleted,
    a_user_may_register_only_so_many_devices,
    endpoints_on_private_addresses_or_plain_http_are_refused,
    malformed_keys_and_tokens_are_422_field_errors,
    devices_need_a_token,
    the_vapid_public_key_is_served_and_survives_a_restart,
    the_vapid_key_from_the_settings_is_the_one_served,
    a_web_push_message_arrives_encrypted_for_the_subscription_and_signed,
    a_gone_subscription_is_reported_and_removed,
    a_rate_limited_push_is_retried_after_the_services_delay,
);

/// A browser's side of a subscription: its key pair and auth secret.
pub(crate) struct Subscriber {
    secret: SecretKey,
    auth: [u8; 16],
}

impl Subscriber {
    pub(crate) fn new(seed: u8) -> Subscriber {
        let mut bytes = [seed; 32];
        bytes[0] = 1;
        Subscriber {
            secret: SecretKey::from_slice(&bytes).unwrap(),
            auth: [seed.wrapping_mul(3); 16],
        }
    }

    fn p256dh(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.secret.public_key().to_encoded_point(false).as_bytes())
    }

    fn auth(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.auth)
    }

    /// The registration body of this subscription at `endpoint`, as a browser's
    /// `PushSubscription.toJSON()` gives it plus the kind.
    pub(crate) fn registration(&self, endpoint: &str) -> Value {
        json!({
            "kind": "webpush",
            "endpoint": endpoint,
            "expirationTime": null,
            "keys": {"p256dh": self.p256dh(), "auth": self.auth()},
        })
    }

    /// Decrypts an `aes128gcm` body (RFC 8291, RFC 8188) as a browser does, written here
    /// from the RFCs rather than with the server's code.
    pub(crate) fn decrypt(&self, body: &[u8]) -> Vec<u8> {
        use aes_gcm::aead::{Aead, KeyInit};
        use hkdf::Hkdf;
        use sha2::Sha256;
        let salt = &body[..16];
        let record_size = u32::from_be_bytes(body[16..20].try_into().unwrap());
        let id_len = body[20] as usize;
        assert_eq!(
            id_len, 65,
            "the key id is the sender's uncompressed public key"
        );
        let as_public_bytes = &body[21..21 + id_len];
        let ciphertext = &body[21 + id_len..];
        assert!(
            ciphertext.len() <= record_size as usize,
            "one record holds the message"
        );
        let as_public = PublicKey::from_sec1_bytes(as_public_bytes).unwrap();
        let shared =
            p256::ecdh::diffie_hellman(self.secret.to_nonzero_scalar(), as_public.as_affine());
        let ua_public = self.secret.public_key().to_encoded_point(false);
        let mut info = b"WebPush: info\0".to_vec();
        info.extend_from_slice(ua_public.as_bytes());
        info.extend_from_slice(as_public_bytes);
        let mut ikm = [0u8; 32];
        Hkdf::<Sha256>::new(Some(&self.auth), shared.raw_secret_bytes())
            .expand(&info, &mut ikm)
            .unwrap();
        let prk = Hkdf::<Sha256>::new(Some(salt), &ikm);
        let (mut cek, mut nonce) = ([0u8; 16], [0u8; 12]);
        prk.expand(b"Content-Encoding: aes128gcm\0", &mut cek)
            .unwrap();
        prk.expand(b"Content-Encoding: nonce\0", &mut nonce)
            .unwrap();
        let mut plain = aes_gcm::Aes128Gcm::new(&cek.into())
            .decrypt(&nonce.into(), ciphertext)
            .expect("the body decrypts with the subscription's key");
        // Padding: zeros after the delimiter, which is 2 in the last record.
        while plain.last() == Some(&0) {
            plain.pop();
        }
        assert_eq!(plain.pop(), Some(2), "one record, the last");
        plain
    }
}

/// What the receiving endpoint saw of one request.
pub(crate) struct Received {
    /// When the receiver took it (not when the test read it).
    pub(crate) at: std::time::Instant,
    pub(crate) path: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// The status and headers the receiver answers with.
pub(crate) type Answer = (AxumStatus, Vec<(&'static str, &'static str)>);

/// A Web Push service in the test: takes every POST, hands it to the test, and answers
/// with the status and headers the test set.
pub(crate) struct Receiver {
    pub(crate) base: String,
    pub(crate) requests: mpsc::Receiver<Received>,
    answer: Arc<Mutex<Answer>>,
    _server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub(crate) async fn start() -> Receiver {
        let (tx, requests) = mpsc::channel(1024);
        let answer = Arc::new(Mutex::new((
            AxumStatus::CREATED,
            Vec::<(&'static str, &'static str)>::new(),
        )));
        let state = (tx, answer.clone());
        let router = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
                let (tx, answer) = state.clone();
                async move {
                    let _ = tx
                        .send(Received {
                            at: std::time::Instant::now(),
                            path: uri.path().to_owned(),
                            headers,
                            body,
                        })
                        .await;
                    let (status, headers) = answer.lock().await.clone();
                    let mut response = axum::response::Response::new(axum::body::Body::empty());
                    *response.status_mut() = status;
                    for (name, value) in headers {
                        response.headers_mut().insert(name, value.parse().unwrap());
                    }
                    response
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Receiver {
            base,
            requests,
            answer,
            _server: server,
        }
    }

    pub(crate) async fn answer_with(
        &self,
        status: AxumStatus,
        headers: Vec<(&'static str, &'static str)>,
    ) {
        *self.answer.lock().await = (status, headers);
    }

    pub(crate) async fn next(&mut self) -> Received {
        tokio::time::timeout(Duration::from_secs(10), self.requests.recv())
            .await
            .expect("a push request within 10 s")
            .expect("the receiver runs")
    }
}

pub(crate) async fn spawn_allowing_private(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |c| c.push_allow_private_endpoints = true).await
}

pub(crate) async fn register(app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    app.post("/v1/me/devices", body, Some(token)).await
}

async fn devices(app: &TestApp, token: &str) -> Vec<Value> {
    app.get_json("/v1/me/devices", Some(token))
        .await
        .as_array()
        .unwrap()
        .clone()
}

/// The stored device of a registration answer, as the provider takes it.
async fn stored(app: &TestApp, device: &Value) -> tidings::store::devices::Device {
    let id: uuid::Uuid = device["id"].as_str().unwrap().parse().unwrap();
    tidings::store::devices::get(&app.state.db, id)
        .await
        .unwrap()
        .expect("the device is stored")
}

fn message(payload: &[u8]) -> PushMessage {
    PushMessage {
        payload: payload.to_vec(),
        ttl: Duration::from_secs(3600),
        urgency: Urgency::High,
        topic: Some("order-42".into()),
    }
}

async fn a_web_push_subscription_is_registered_listed_and_deleted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ada = app.customer("ada@example.com").await;
    let endpoint = "https://push.example.net/send/abc123";
    let sub = Subscriber::new(7);

    let device = json_body(
        register(&app, &ada.access_token, &sub.registration(endpoint)).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(device["kind"], "webpush");
    assert_eq!(device["endpoint"], endpoint);
    assert!(device["last_used_at"].is_null());
    assert!(
        device.get("auth").is_none() && device.get("keys").is_none(),
        "{device}"
    );

    let listed = devices(&app, &ada.access_token).await;
    assert_eq!(listed, vec![device.clone()]);

    let id = device["id"].as_str().unwrap();
    let deleted = app
        .delete(&format!("/v1/me/devices/{id}"), &ada.access_token)
        .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert!(devices(&app, &ada.access_token).await.is_empty());
    let again = app
        .delete(&format!("/v1/me/devices/{id}"), &ada.access_token)
        .await;
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
}

async fn the_same_subscription_registered_twice_is_one_device(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ada = app.customer("ada@example.com").await;
    let endpoint = "https://push.example.net/send/same";
    let first = json_body(
        register(
            &app,
            &ada.access_token,
            &Subscriber::new(1).registration(endpoint),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    // The browser's keys may have changed; it is the same subscription still.
    let second = json_body(
        register(
            &app,
            &ada.access_token,
            &Subscriber::new(2).registration(endpoint),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(second["id"], first["id"]);
    assert_eq!(devices(&app, &ada.access_token).await.len(), 1);
    let device = stored(&app, &second).await;
    assert_eq!(
        device.p256dh.as_deref(),
        Some(Subscriber::new(2).p256dh().as_str())
    );

    // Another user with the same subscription (one browser, two accounts) has a device
    // of their own.
    let grace = app.customer("grace@example.com").await;
    let theirs = json_body(
        register(
            &app,
            &grace.access_token,
            &Subscriber::new(1).registration(endpoint),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_ne!(theirs["id"], first["id"]);
}

async fn fcm_and_apns_tokens_are_registered(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ada = app.customer("ada@example.com").await;
    let fcm_token = "dQw4w9WgXcQ:APA91bH-example_token_0123456789";
    let fcm = json_body(
        register(
            &app,
            &ada.access_token,
            &json!({"kind": "fcm", "token": fcm_token}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(fcm["kind"], "fcm");
    assert_eq!(fcm["token"], fcm_token);

    let hex = "AB".repeat(32);
    let apns = json_body(
        register(
            &app,
            &ada.access_token,
            &json!({"kind": "apns", "token": hex, "topic": "com.example.shop", "environment": "sandbox"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(apns["token"], "ab".repeat(32), "stored in lower case");
    assert_eq!(apns["topic"], "com.example.shop");
    assert_eq!(apns["environment"], "sandbox");
    // The same token in upper case is the same device.
    let again = register(
        &app,
        &ada.access_token,
        &json!({"kind": "apns", "token": hex, "topic": "com.example.shop", "environment": "sandbox"}),
    )
    .await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(devices(&app, &ada.access_token).await.len(), 2);
}

async fn another_users_device_cannot_be_deleted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ada = app.customer("ada@example.com").await;
    let grace = app.customer("grace@example.com").await;
    let device = json_body(
        register(
            &app,
            &ada.access_token,
            &Subscriber::new(3).registration("https://push.example.net/a"),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let id = device["id"].as_str().unwrap();
    let response = app
        .delete(&format!("/v1/me/devices/{id}"), &grace.access_token)
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(problem(response).await["code"], "not_found");
    assert!(devices(&app, &grace.access_token).await.is_empty());
    assert_eq!(devices(&app, &ada.access_token).await.len(), 1);
}

async fn a_user_may_register_only_so_many_devices(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.max_devices_per_user = 2).await;
    let ada = app.customer("ada@example.com").await;
    let sub = Subscriber::new(4);
    for n in 0..2 {
        let endpoint = format!("https://push.example.net/{n}");
        let response = register(&app, &ada.access_token, &sub.registration(&endpoint)).await;
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let over = register(
        &app,
        &ada.access_token,
        &sub.registration("https://push.example.net/2"),
    )
    .await;
    assert_eq!(over.status(), StatusCode::CONFLICT);
    assert_eq!(problem(over).await["code"], "too_many_devices");
    // One already registered is still found, not refused.
    let again = register(
        &app,
        &ada.access_token,
        &sub.registration("https://push.example.net/0"),
    )
    .await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(devices(&app, &ada.access_token).await.len(), 2);
}

async fn endpoints_on_private_addresses_or_plain_http_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ada = app.customer("ada@example.com").await;
    let sub = Subscriber::new(5);
    for (endpoint, code) in [
        ("https://127.0.0.1/", "private_address"),
        ("https://[::1]/", "private_address"),
        ("https://10.0.0.1/", "private_address"),
        (
            "https://169.254.169.254/latest/meta-data",
            "private_address",
        ),
        ("https://localhost/", "private_address"),
        ("http://example.com/", "not_https"),
        ("not a url", "invalid_url"),
    ] {
        let errors =
            field_errors(register(&app, &ada.access_token, &sub.registration(endpoint)).await)
                .await;
        assert_eq!(
            errors,
            vec![("endpoint".to_owned(), code.to_owned())],
            "{endpoint}"
        );
    }
    assert!(devices(&app, &ada.access_token).await.is_empty());

    // The test setting lets them through (for a local receiver).
    let lax = spawn_allowing_private(Backend::Sqlite).await;
    let ada = lax.customer("ada@example.com").await;
    let response = register(
        &lax,
        &ada.access_token,
        &sub.registration("http://127.0.0.1:9/x"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
}

async fn malformed_keys_and_tokens_are_422_field_errors(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ada = app.customer("ada@example.com").await;
    let endpoint = "https://push.example.net/k";
    let sub = Subscriber::new(6);
    let cases: Vec<(Value, Vec<(&str, &str)>)> = vec![
        (
            json!({"kind": "webpush", "endpoint": endpoint, "keys": {"p256dh": URL_SAFE_NO_PAD.encode([4u8; 65]), "auth": sub.auth()}}),
            vec![("keys.p256dh", "invalid_key")],
        ),
        (
            json!({"kind": "webpush", "endpoint": endpoint, "keys": {"p256dh": sub.p256dh(), "auth": URL_SAFE_NO_PAD.encode([1u8; 8])}}),
            vec![("keys.auth", "invalid_key")],
        ),
        (
            json!({"kind": "webpush", "endpoint": endpoint}),
            vec![("keys.p256dh", "required"), ("keys.auth", "required")],
        ),
        (
            json!({"kind": "fcm", "token": "has spaces in it, which no token has"}),
            vec![("token", "invalid_token")],
        ),
        (
            json!({"kind": "fcm", "token": "dQw4w9WgXcQ:APA91bH-example", "endpoint": endpoint}),
            vec![("endpoint", "unexpected")],
        ),
        (
            json!({"kind": "apns", "token": "zz".repeat(32), "topic": "com.example.shop"}),
            vec![("token", "invalid_token")],
        ),
        (
            json!({"kind": "apns", "token": "ab".repeat(32), "topic": ""}),
            vec![("topic", "invalid_topic")],
        ),
        (
            json!({"kind": "apns", "token": "ab".repeat(32), "topic": "com.example.shop", "environment": "staging"}),
            vec![("environment", "invalid")],
        ),
    ];
    for (body, expected) in cases {
        let errors = field_errors(register(&app, &ada.access_token, &body).await).await;
        let expected: Vec<(String, String)> = expected
            .into_iter()
            .map(|(f, c)| (f.to_owned(), c.to_owned()))
            .collect();
        assert_eq!(errors, expected, "{body}");
    }
    // A kind that does not exist is refused by the body's schema.
    let response = register(&app, &ada.access_token, &json!({"kind": "pigeon"})).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(devices(&app, &ada.access_token).await.is_empty());
}

async fn devices_need_a_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app.get("/v1/me/devices", None).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = app
        .post(
            "/v1/me/devices",
            &json!({"kind": "fcm", "token": "x"}),
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

async fn vapid_key(app: &TestApp) -> String {
    let body = json_body(
        app.get("/v1/push/vapid-public-key", None).await,
        StatusCode::OK,
    )
    .await;
    body["public_key"].as_str().unwrap().to_owned()
}

async fn the_vapid_public_key_is_served_and_survives_a_restart(backend: Backend) {
    let mut app = TestApp::spawn(backend.clone()).await;
    let key = vapid_key(&app).await;
    let point = URL_SAFE_NO_PAD.decode(&key).unwrap();
    assert_eq!(point.len(), 65);
    assert!(PublicKey::from_sec1_bytes(&point).is_ok());
    let path = app.config.data_dir.join("vapid-private-key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the key file is the owner's only");
    }

    // A new process on the same data directory serves the same key.
    app.shut_down().await;
    let data_dir = app.config.data_dir.clone();
    let restarted = TestApp::spawn_with(backend, |c| c.data_dir = data_dir).await;
    assert_eq!(vapid_key(&restarted).await, key);
}

async fn the_vapid_key_from_the_settings_is_the_one_served(backend: Backend) {
    let scalar = [0x42u8; 32];
    let app = TestApp::spawn_with(backend, |c| {
        c.vapid_private_key = Some(VapidPrivateKey(scalar));
    })
    .await;
    let expected = VapidKey::new(&scalar, "mailto:admin@example.com").unwrap();
    assert_eq!(vapid_key(&app).await, expected.public_key());
    assert!(
        !app.config.data_dir.join("vapid-private-key").exists(),
        "nothing generated when the settings give a key"
    );
}

async fn a_web_push_message_arrives_encrypted_for_the_subscription_and_signed(backend: Backend) {
    let app = spawn_allowing_private(backend).await;
    let ada = app.customer("ada@example.com").await;
    let mut receiver = Receiver::start().await;
    let sub = Subscriber::new(8);
    let endpoint = format!("{}/push/v2/ada-subscription", receiver.base);
    let registered = json_body(
        register(&app, &ada.access_token, &sub.registration(&endpoint)).await,
        StatusCode::CREATED,
    )
    .await;
    let device = stored(&app, &registered).await;
    let provider = WebPush::new(app.state.vapid.clone(), true).unwrap();

    let payload = br#"{"type":"notification.created","title":"Your order shipped"}"#;
    let before = chrono::Utc::now().timestamp();
    let outcome = provider.send(&device, &message(payload)).await;
    assert_eq!(outcome, Outcome::Delivered);
    let request = receiver.next().await;

    assert_eq!(request.path, "/push/v2/ada-subscription");
    assert_eq!(sub.decrypt(&request.body), payload);
    tidings::service::devices::mark_used(&app.state.db, device.id)
        .await
        .unwrap();
    assert!(devices(&app, &ada.access_token).await[0]["last_used_at"].is_string());
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(header("content-encoding"), "aes128gcm");
    assert_eq!(header("ttl"), "3600");
    assert_eq!(header("urgency"), "high");
    assert_eq!(header("topic"), "order-42");

    // VAPID: `vapid t=<JWT>, k=<the served public key>`; the JWT is ES256 by that key,
    // for the endpoint's origin, for at most 24 hours, with the configured subject.
    let authorization = header("authorization");
    let (t, k) = authorization
        .strip_prefix("vapid t=")
        .and_then(|rest| rest.split_once(", k="))
        .expect("vapid t=…, k=…");
    assert_eq!(k, vapid_key(&app).await);
    let (signed, signature) = t.rsplit_once('.').unwrap();
    let (jwt_header, claims) = signed.split_once('.').unwrap();
    let verifying = VerifyingKey::from_sec1_bytes(&URL_SAFE_NO_PAD.decode(k).unwrap()).unwrap();
    let signature = Signature::from_slice(&URL_SAFE_NO_PAD.decode(signature).unwrap()).unwrap();
    verifying
        .verify(signed.as_bytes(), &signature)
        .expect("the VAPID token is signed by the served key");
    let jwt_header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(jwt_header).unwrap()).unwrap();
    assert_eq!(jwt_header["alg"], "ES256");
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
    assert_eq!(claims["aud"], receiver.base);
    assert_eq!(claims["sub"], app.config.vapid_subject);
    let exp = claims["exp"].as_i64().unwrap();
    let after = chrono::Utc::now().timestamp();
    assert!(exp > after && exp <= before + 24 * 3600, "exp {exp}");

    // Each message has its own sender key and salt: the same payload never encrypts alike.
    let outcome = provider.send(&device, &message(payload)).await;
    assert_eq!(outcome, Outcome::Delivered);
    let second = receiver.next().await;
    assert_ne!(second.body, request.body);
    assert_eq!(sub.decrypt(&second.body), payload);

    // The largest payload fits one record; one byte more is refused before sending.
    let largest = vec![b'x'; tidings::push::webpush::MAX_PAYLOAD];
    assert_eq!(
        provider.send(&device, &message(&largest)).await,
        Outcome::Delivered
    );
    assert_eq!(sub.decrypt(&receiver.next().await.body), largest);
    let too_large = vec![b'x'; tidings::push::webpush::MAX_PAYLOAD + 1];
    assert!(matches!(
        provider.send(&device, &message(&too_large)).await,
        Outcome::Rejected(_)
    ));
}

async fn a_gone_subscription_is_reported_and_removed(backend: Backend) {
    let app = spawn_allowing_private(backend).await;
    let ada = app.customer("ada@example.com").await;
    let mut receiver = Receiver::start().await;
    let sub = Subscriber::new(9);
    let registered = json_body(
        register(
            &app,
            &ada.access_token,
            &sub.registration(&format!("{}/gone", receiver.base)),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let device = stored(&app, &registered).await;
    let provider = WebPush::new(app.state.vapid.clone(), true).unwrap();

    receiver.answer_with(AxumStatus::GONE, vec![]).await;
    let outcome = provider.send(&device, &message(b"hello")).await;
    assert_eq!(outcome, Outcome::Gone);
    receiver.next().await;
    let removed = tidings::service::devices::remove_gone(&app.state.db, device.id)
        .await
        .unwrap();
    assert!(removed);
    assert!(devices(&app, &ada.access_token).await.is_empty());

    // Another refusal is final, but not "gone".
    receiver.answer_with(AxumStatus::BAD_REQUEST, vec![]).await;
    assert!(matches!(
        provider.send(&device, &message(b"hello")).await,
        Outcome::Rejected(_)
    ));
}

async fn a_rate_limited_push_is_retried_after_the_services_delay(backend: Backend) {
    let app = spawn_allowing_private(backend).await;
    let ada = app.customer("ada@example.com").await;
    let receiver = Receiver::start().await;
    let sub = Subscriber::new(10);
    let registered = json_body(
        register(
            &app,
            &ada.access_token,
            &sub.registration(&format!("{}/busy", receiver.base)),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let device = stored(&app, &registered).await;
    let provider = WebPush::new(app.state.vapid.clone(), true).unwrap();

    receiver
        .answer_with(AxumStatus::TOO_MANY_REQUESTS, vec![("retry-after", "30")])
        .await;
    assert_eq!(
        provider.send(&device, &message(b"hello")).await,
        Outcome::RetryAfter(Some(Duration::from_secs(30)))
    );
    receiver
        .answer_with(AxumStatus::SERVICE_UNAVAILABLE, vec![])
        .await;
    assert_eq!(
        provider.send(&device, &message(b"hello")).await,
        Outcome::RetryAfter(None)
    );
    // The device stays: a busy service is no reason to forget it.
    assert_eq!(devices(&app, &ada.access_token).await.len(), 1);
    assert_eq!(receiver.requests.len(), 2, "each send made one request");

    // A push service that cannot be reached is retried too.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let unreachable = format!("http://{}/nobody", closed.local_addr().unwrap());
    drop(closed);
    let registered = json_body(
        register(&app, &ada.access_token, &sub.registration(&unreachable)).await,
        StatusCode::CREATED,
    )
    .await;
    let device = stored(&app, &registered).await;
    assert_eq!(
        provider.send(&device, &message(b"hello")).await,
        Outcome::RetryAfter(None)
    );
}
