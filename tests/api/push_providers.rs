//! The FCM and APNs providers, end to end through the delivery worker: a user registers a
//! device through the API, an admin notifies them (no live connection, so it is pushed at
//! once), and a stand-in for the provider in the test receives it.
//!
//! - The FCM stand-in (HTTP on 127.0.0.1) is the token endpoint too: it verifies the
//!   grant's RS256 signature with the service account's public key and its claims, then
//!   takes `messages:send` only with the access token it issued, and answers with FCM's
//!   real error bodies when told to.
//! - The APNs stand-in speaks HTTP/2 only, over TLS with a certificate made for the test
//!   (trusted through `TIDINGS_APNS_CA`); it verifies the ES256 provider token with the
//!   `.p8` key's public half and checks the headers.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode as AxumStatus, Version};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};
use uuid::Uuid;

use crate::backend_tests;
use crate::devices::register;
use crate::helpers::{Backend, TestApp, json_body};
use crate::push::{admin, delivery_is, notify, until_logged};

backend_tests!(
    an_fcm_device_is_sent_the_notification_with_one_access_token_for_two,
    an_fcm_token_reported_unregistered_is_removed,
    fcm_unavailable_is_retried_after_its_retry_after,
    an_access_token_fcm_refuses_is_replaced,
    an_apns_device_is_sent_the_notification_over_http2,
    an_apns_token_reported_unregistered_is_removed,
    apns_too_many_requests_is_retried,
);

const RSA_PRIVATE: &str = include_str!("../fixtures/fcm-test-service-account.key.pem");
const RSA_PUBLIC: &str = include_str!("../fixtures/fcm-test-service-account.pub.pem");
const CLIENT_EMAIL: &str = "tidings-push@tidings-test.iam.gserviceaccount.com";
const PROJECT: &str = "tidings-test";
const FCM_TOKEN: &str = "dQw4w9WgXcQ:APA91bH-test_token_0123456789";

const KEY_ID: &str = "ABC123DEFG";
const TEAM_ID: &str = "DEF123GHIJ";
const BUNDLE: &str = "com.example.shop";

/// What a stand-in answers: status, headers, body.
type Answer = (u16, Vec<(&'static str, &'static str)>, String);

/// One request a stand-in took.
struct Taken {
    /// When the stand-in took it (not when the test read it).
    at: Instant,
    headers: HeaderMap,
    path: String,
    body: Value,
}

/// The answer `status` with a JSON `body`.
fn answer(status: u16, headers: Vec<(&'static str, &'static str)>, body: Value) -> Answer {
    (status, headers, body.to_string())
}

fn respond((status, headers, body): Answer) -> axum::http::Response<Body> {
    let mut response = axum::http::Response::new(Body::from(body));
    *response.status_mut() = AxumStatus::from_u16(status).unwrap();
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    for (name, value) in headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

/// Waits for the next request a stand-in took.
async fn next(requests: &mut mpsc::Receiver<Taken>) -> Taken {
    tokio::time::timeout(Duration::from_secs(10), requests.recv())
        .await
        .expect("a push request within 10 s")
        .expect("the stand-in runs")
}

/// The notification's id in a pushed event, as the collapse key shows it.
fn collapse_key(event: &Value) -> String {
    let id: Uuid = event["data"]["id"].as_str().unwrap().parse().unwrap();
    id.simple().to_string()
}

async fn spawn(backend: Backend, tweak: impl FnOnce(&mut tidings::config::Config)) -> TestApp {
    TestApp::spawn_with(backend, |c| {
        // Longer than the tests' patience: only the no-connection rule pushes.
        c.push_delay = Duration::from_secs(600);
        c.push_retry_base = Duration::from_millis(50);
        tweak(c);
    })
    .await
}

/// A customer with a device registered as `registration`: their token, id and device.
async fn with_device(app: &TestApp, registration: Value) -> (String, Uuid, Value) {
    let tokens = app.customer("ada@example.com").await;
    let device = json_body(
        register(app, &tokens.access_token, &registration).await,
        StatusCode::CREATED,
    )
    .await;
    let id = app.user_id(&tokens.access_token).await;
    (tokens.access_token, id, device)
}

// FCM

/// FCM and Google's token endpoint in one server.
struct FcmStandIn {
    base: String,
    sends: mpsc::Receiver<Taken>,
    answer: Arc<Mutex<Answer>>,
    /// The access tokens issued, in order.
    issued: Arc<Mutex<Vec<String>>>,
    /// What the stand-in found wrong (a test fails on any).
    problems: Arc<Mutex<Vec<String>>>,
    _server: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct FcmState {
    token_uri: String,
    sends: mpsc::Sender<Taken>,
    answer: Arc<Mutex<Answer>>,
    issued: Arc<Mutex<Vec<String>>>,
    problems: Arc<Mutex<Vec<String>>>,
}

impl FcmStandIn {
    async fn start() -> FcmStandIn {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, sends) = mpsc::channel(64);
        let state = FcmState {
            token_uri: format!("{base}/token"),
            sends: tx,
            answer: Arc::new(Mutex::new(answer(200, vec![], json!({})))),
            issued: Arc::default(),
            problems: Arc::default(),
        };
        let stand_in = (
            state.answer.clone(),
            state.issued.clone(),
            state.problems.clone(),
        );
        let router = axum::Router::new()
            .route("/token", axum::routing::post(fcm_token))
            .fallback(fcm_send)
            .with_state(state);
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        FcmStandIn {
            base,
            sends,
            answer: stand_in.0,
            issued: stand_in.1,
            problems: stand_in.2,
            _server: server,
        }
    }

    /// A service-account key file pointing at this stand-in, written into `dir`.
    fn credentials(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("service-account.json");
        let file = json!({
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": "0123456789abcdef",
            "private_key": RSA_PRIVATE,
            "client_email": CLIENT_EMAIL,
            "client_id": "1234567890",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": format!("{}/token", self.base),
        });
        std::fs::write(&path, file.to_string()).unwrap();
        path
    }

    async fn answer_with(&self, answer: Answer) {
        *self.answer.lock().await = answer;
    }

    async fn assert_no_problems(&self) {
        let problems = self.problems.lock().await;
        assert!(problems.is_empty(), "the FCM stand-in found: {problems:?}");
    }
}

/// The token endpoint: the JWT bearer grant, its assertion checked with the account's
/// public key.
async fn fcm_token(
    axum::extract::State(state): axum::extract::State<FcmState>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::http::Response<Body> {
    let form: std::collections::HashMap<String, String> =
        form_urlencoded::parse(&body).into_owned().collect();
    if let Err(problem) = check_grant(&state, &headers, &form) {
        state.problems.lock().await.push(problem.clone());
        return respond(answer(
            400,
            vec![],
            json!({"error": "invalid_grant", "error_description": problem}),
        ));
    }
    let mut issued = state.issued.lock().await;
    let token = format!("ya29.test-access-token-{}", issued.len() + 1);
    issued.push(token.clone());
    respond(answer(
        200,
        vec![],
        json!({"access_token": token, "expires_in": 3600, "token_type": "Bearer"}),
    ))
}

fn check_grant(
    state: &FcmState,
    headers: &HeaderMap,
    form: &std::collections::HashMap<String, String>,
) -> Result<(), String> {
    let content_type = headers.get("content-type");
    if content_type.is_none_or(|v| v != "application/x-www-form-urlencoded") {
        return Err(format!("content-type {content_type:?}"));
    }
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return Err(format!("grant_type {:?}", form.get("grant_type")));
    }
    let assertion = form.get("assertion").ok_or("no assertion")?;
    let key = DecodingKey::from_rsa_pem(RSA_PUBLIC.as_bytes()).unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[&state.token_uri]);
    validation.set_issuer(&[CLIENT_EMAIL]);
    validation.set_required_spec_claims(&["exp", "aud", "iss"]);
    let claims = jsonwebtoken::decode::<Value>(assertion, &key, &validation)
        .map_err(|e| format!("the assertion does not verify: {e}"))?
        .claims;
    if claims["scope"] != "https://www.googleapis.com/auth/firebase.messaging" {
        return Err(format!("scope {}", claims["scope"]));
    }
    let iat = claims["iat"].as_i64().unwrap_or_default();
    if (iat - chrono::Utc::now().timestamp()).abs() > 60 {
        return Err(format!("iat {iat} is not now"));
    }
    if claims["exp"].as_i64() != Some(iat + 3600) {
        return Err(format!("exp {} is not iat + 3600", claims["exp"]));
    }
    Ok(())
}

/// `messages:send`, with the access token the token endpoint issued.
async fn fcm_send(
    axum::extract::State(state): axum::extract::State<FcmState>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::http::Response<Body> {
    let path = uri.path().to_owned();
    if path != format!("/v1/projects/{PROJECT}/messages:send") {
        state
            .problems
            .lock()
            .await
            .push(format!("a request to {path}"));
        return respond(answer(404, vec![], json!({})));
    }
    let issued = state.issued.lock().await.clone();
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    if !bearer.is_some_and(|t| issued.contains(&t)) {
        state
            .problems
            .lock()
            .await
            .push("a send without an issued access token".into());
        return respond(answer(
            401,
            vec![],
            json!({"error": {"code": 401, "status": "UNAUTHENTICATED",
                "message": "Request had invalid authentication credentials."}}),
        ));
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    let _ = state
        .sends
        .send(Taken {
            at: Instant::now(),
            headers,
            path,
            body,
        })
        .await;
    respond(state.answer.lock().await.clone())
}

/// FCM's answer to a send it took: the message's name.
fn fcm_ok() -> Answer {
    answer(
        200,
        vec![],
        json!({"name": format!("projects/{PROJECT}/messages/0:1700000000000000%31bd1c9631bd1c96")}),
    )
}

async fn spawn_with_fcm(
    backend: Backend,
    fcm: &FcmStandIn,
    tweak: impl FnOnce(&mut tidings::config::Config),
) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let credentials = fcm.credentials(dir.path());
    let base = fcm.base.parse().unwrap();
    // The app reads the file as it starts; the directory may go after.
    spawn(backend, |c| {
        c.fcm_credentials = Some(credentials);
        c.fcm_base_url = base;
        tweak(c);
    })
    .await
}

async fn an_fcm_device_is_sent_the_notification_with_one_access_token_for_two(backend: Backend) {
    let mut fcm = FcmStandIn::start().await;
    fcm.answer_with(fcm_ok()).await;
    let app = spawn_with_fcm(backend, &fcm, |_| {}).await;
    let admin = admin(&app).await;
    let (_, ada, device) = with_device(&app, json!({"kind": "fcm", "token": FCM_TOKEN})).await;

    notify(&app, &admin, ada, "Sale").await;
    let first = next(&mut fcm.sends).await;
    notify(&app, &admin, ada, "Restock").await;
    let second = next(&mut fcm.sends).await;

    assert_eq!(first.path, format!("/v1/projects/{PROJECT}/messages:send"));
    assert_eq!(first.headers["content-type"], "application/json");
    let message = &first.body["message"];
    assert_eq!(message["token"], FCM_TOKEN);
    let event: Value = serde_json::from_str(message["data"]["event"].as_str().unwrap())
        .expect("the event is the data message's `event`, as JSON text");
    assert_eq!(event["type"], "notification.created");
    assert_eq!(event["data"]["title"], "Sale");
    assert_eq!(event["data"]["body"], "About Sale.");
    let key = collapse_key(&event);
    assert_eq!(
        message["android"],
        json!({"ttl": "86400s", "priority": "normal", "collapse_key": key})
    );
    assert_eq!(
        message["apns"],
        json!({"headers": {"apns-collapse-id": key}})
    );
    let event: Value =
        serde_json::from_str(second.body["message"]["data"]["event"].as_str().unwrap()).unwrap();
    assert_eq!(event["data"]["title"], "Restock");

    assert_eq!(
        fcm.issued.lock().await.len(),
        1,
        "one access token serves both messages"
    );
    let item = until_logged(&app, &admin, ada, delivery_is("sent")).await;
    let delivery = &item["deliveries"][0];
    assert_eq!(delivery["channel"], "fcm");
    assert_eq!(delivery["device_id"], device["id"]);
    assert_eq!(delivery["log"][0]["outcome"], "delivered");
    fcm.assert_no_problems().await;
}

async fn an_fcm_token_reported_unregistered_is_removed(backend: Backend) {
    let mut fcm = FcmStandIn::start().await;
    fcm.answer_with(answer(
        404,
        vec![],
        json!({"error": {
            "code": 404,
            "message": "Requested entity was not found.",
            "status": "NOT_FOUND",
            "details": [{
                "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                "errorCode": "UNREGISTERED"
            }]
        }}),
    ))
    .await;
    let app = spawn_with_fcm(backend, &fcm, |_| {}).await;
    let admin = admin(&app).await;
    let (token, ada, _) = with_device(&app, json!({"kind": "fcm", "token": FCM_TOKEN})).await;

    notify(&app, &admin, ada, "Gone").await;
    next(&mut fcm.sends).await;
    let item = until_logged(&app, &admin, ada, delivery_is("gone")).await;
    let delivery = &item["deliveries"][0];
    assert_eq!(delivery["channel"], "fcm");
    assert_eq!(delivery["log"][0]["outcome"], "gone");
    assert!(delivery["device_id"].is_null(), "{delivery}");
    assert_eq!(
        app.get_json("/v1/me/devices", Some(&token)).await,
        json!([])
    );
    fcm.assert_no_problems().await;
}

async fn fcm_unavailable_is_retried_after_its_retry_after(backend: Backend) {
    let mut fcm = FcmStandIn::start().await;
    fcm.answer_with(answer(
        503,
        vec![("retry-after", "1")],
        json!({"error": {
            "code": 503,
            "message": "The service is currently unavailable.",
            "status": "UNAVAILABLE",
            "details": [{
                "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                "errorCode": "UNAVAILABLE"
            }]
        }}),
    ))
    .await;
    let app = spawn_with_fcm(backend, &fcm, |_| {}).await;
    let admin = admin(&app).await;
    let (_, ada, _) = with_device(&app, json!({"kind": "fcm", "token": FCM_TOKEN})).await;

    notify(&app, &admin, ada, "Busy").await;
    let first = next(&mut fcm.sends).await.at;
    // The stand-in reads its answer after handing the request over: switch it only once
    // the first answer is recorded.
    until_logged(&app, &admin, ada, |i| {
        i["deliveries"][0]["log"][0]["outcome"] == "retry"
    })
    .await;
    fcm.answer_with(fcm_ok()).await;
    let again = next(&mut fcm.sends).await;
    assert!(
        again.at - first >= Duration::from_millis(900),
        "retried {:?} after a Retry-After of 1 s",
        again.at - first
    );
    assert_eq!(again.body["message"]["token"], FCM_TOKEN);
    let item = until_logged(&app, &admin, ada, delivery_is("sent")).await;
    let log = &item["deliveries"][0]["log"];
    assert_eq!(log[0]["outcome"], "retry");
    assert_eq!(log[0]["detail"], "retry after 1 s");
    assert_eq!(log[1]["outcome"], "delivered");
    fcm.assert_no_problems().await;
}

async fn an_access_token_fcm_refuses_is_replaced(backend: Backend) {
    let mut fcm = FcmStandIn::start().await;
    // FCM's answer to a token it no longer takes (revoked, or expired early).
    fcm.answer_with(answer(
        401,
        vec![],
        json!({"error": {
            "code": 401,
            "message": "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
            "status": "UNAUTHENTICATED"
        }}),
    ))
    .await;
    // A retry at least half a second later: time to switch the answer before it.
    let app = spawn_with_fcm(backend, &fcm, |c| {
        c.push_retry_base = Duration::from_secs(1)
    })
    .await;
    let admin = admin(&app).await;
    let (_, ada, _) = with_device(&app, json!({"kind": "fcm", "token": FCM_TOKEN})).await;

    notify(&app, &admin, ada, "Again").await;
    let refused = next(&mut fcm.sends).await;
    until_logged(&app, &admin, ada, |i| {
        i["deliveries"][0]["log"][0]["outcome"] == "retry"
    })
    .await;
    fcm.answer_with(fcm_ok()).await;
    let again = next(&mut fcm.sends).await;
    until_logged(&app, &admin, ada, delivery_is("sent")).await;

    let issued = fcm.issued.lock().await.clone();
    assert_eq!(issued.len(), 2, "a new access token after the refusal");
    assert_eq!(
        refused.headers["authorization"],
        format!("Bearer {}", issued[0]).as_str()
    );
    assert_eq!(
        again.headers["authorization"],
        format!("Bearer {}", issued[1]).as_str()
    );
    fcm.assert_no_problems().await;
}

// APNs

/// APNs over HTTP/2 and TLS, with a certificate of a CA made for the test.
struct ApnsStandIn {
    base: String,
    /// The CA's certificate, for `TIDINGS_APNS_CA`.
    ca_pem: String,
    /// The `.p8` key the app signs with (PKCS#8 PEM).
    key_pem: String,
    requests: mpsc::Receiver<Taken>,
    answer: Arc<Mutex<Answer>>,
    problems: Arc<Mutex<Vec<String>>>,
    _server: tokio::task::JoinHandle<()>,
}

impl ApnsStandIn {
    async fn start() -> ApnsStandIn {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Tidings test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .unwrap();
        // HTTP/2 only, as APNs.
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

        let signing = KeyPair::generate().unwrap();
        let public_pem = signing.public_key_pem();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("https://{}", listener.local_addr().unwrap());
        let (tx, requests) = mpsc::channel(64);
        let answer = Arc::new(Mutex::new(apns_ok()));
        let problems: Arc<Mutex<Vec<String>>> = Arc::default();
        let state = (tx, answer.clone(), problems.clone(), public_pem);
        let server = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, state) = (acceptor.clone(), state.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        let alpn = alpn.clone();
                        async move { Ok::<_, Infallible>(apns_request(state, alpn, request).await) }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
                });
            }
        });
        ApnsStandIn {
            base,
            ca_pem: ca.pem(),
            key_pem: signing.serialize_pem(),
            requests,
            answer,
            problems,
            _server: server,
        }
    }

    async fn answer_with(&self, answer: Answer) {
        *self.answer.lock().await = answer;
    }

    async fn assert_no_problems(&self) {
        let problems = self.problems.lock().await;
        assert!(problems.is_empty(), "the APNs stand-in found: {problems:?}");
    }
}

type ApnsState = (
    mpsc::Sender<Taken>,
    Arc<Mutex<Answer>>,
    Arc<Mutex<Vec<String>>>,
    String,
);

/// One request to the APNs stand-in: checked, handed to the test, answered.
async fn apns_request(
    (requests, answer, problems, public_pem): ApnsState,
    alpn: Option<Vec<u8>>,
    request: hyper::Request<hyper::body::Incoming>,
) -> axum::http::Response<Body> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(Body::new(body), 1 << 20)
        .await
        .unwrap_or_default();
    let mut found = Vec::new();
    if parts.version != Version::HTTP_2 || alpn.as_deref() != Some(b"h2") {
        found.push(format!("{:?} with ALPN {alpn:?}", parts.version));
    }
    if parts.method != "POST" {
        found.push(format!("method {}", parts.method));
    }
    let headers = parts.headers;
    let jwt = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bearer "))
        .unwrap_or_default();
    if let Err(problem) = check_provider_token(jwt, &public_pem) {
        found.push(problem);
        problems.lock().await.extend(found);
        return respond(self::answer(
            403,
            vec![],
            json!({"reason": "InvalidProviderToken"}),
        ));
    }
    let expected = [
        ("apns-topic", BUNDLE),
        ("apns-push-type", "alert"),
        ("apns-priority", "5"),
    ];
    for (name, value) in expected {
        if headers.get(name).is_none_or(|v| v != value) {
            found.push(format!("{name}: {:?}", headers.get(name)));
        }
    }
    let expiration: i64 = headers
        .get("apns-expiration")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_default();
    if (expiration - (chrono::Utc::now().timestamp() + 86_400)).abs() > 60 {
        found.push(format!(
            "apns-expiration {expiration} is not a day from now"
        ));
    }
    if headers.get("apns-collapse-id").is_none() {
        found.push("no apns-collapse-id".into());
    }
    problems.lock().await.extend(found);
    let _ = requests
        .send(Taken {
            at: Instant::now(),
            headers,
            path: parts.uri.path().to_owned(),
            body: serde_json::from_slice(&body).unwrap_or_default(),
        })
        .await;
    let answer = answer.lock().await.clone();
    let mut response = respond(answer);
    response
        .headers_mut()
        .insert("apns-id", Uuid::new_v4().to_string().parse().unwrap());
    response
}

/// The provider token: ES256 with the `.p8` key, `kid` the key id, `iss` the team id, `iat`
/// now.
fn check_provider_token(jwt: &str, public_pem: &str) -> Result<(), String> {
    let header = jsonwebtoken::decode_header(jwt).map_err(|e| format!("token header: {e}"))?;
    if header.alg != Algorithm::ES256 || header.kid.as_deref() != Some(KEY_ID) {
        return Err(format!("token header {header:?}"));
    }
    let key = DecodingKey::from_ec_pem(public_pem.as_bytes()).unwrap();
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_issuer(&[TEAM_ID]);
    validation.set_required_spec_claims(&["iss"]);
    validation.validate_exp = false;
    let claims = jsonwebtoken::decode::<Value>(jwt, &key, &validation)
        .map_err(|e| format!("the provider token does not verify: {e}"))?
        .claims;
    let iat = claims["iat"].as_i64().unwrap_or_default();
    if (iat - chrono::Utc::now().timestamp()).abs() > 60 {
        return Err(format!("iat {iat} is not now"));
    }
    Ok(())
}

/// The app with APNs pointed at the stand-in for `sandbox` devices; production's URL leads
/// nowhere, so a device of the wrong environment would not be delivered.
async fn spawn_with_apns(
    backend: Backend,
    apns: &ApnsStandIn,
    tweak: impl FnOnce(&mut tidings::config::Config),
) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("AuthKey_ABC123DEFG.p8");
    std::fs::write(&key, &apns.key_pem).unwrap();
    let ca = dir.path().join("test-ca.pem");
    std::fs::write(&ca, &apns.ca_pem).unwrap();
    let sandbox = apns.base.parse().unwrap();
    spawn(backend, |c| {
        c.apns_key = Some(key);
        c.apns_key_id = Some(KEY_ID.into());
        c.apns_team_id = Some(TEAM_ID.into());
        c.apns_ca = Some(ca);
        c.apns_sandbox_url = sandbox;
        c.apns_production_url = "https://127.0.0.1:9".parse().unwrap();
        tweak(c);
    })
    .await
}

/// APNs's answer to a push it took: 200 and no body.
fn apns_ok() -> Answer {
    (200, vec![], String::new())
}

fn apns_device() -> Value {
    json!({"kind": "apns", "token": "AB".repeat(32), "topic": BUNDLE, "environment": "sandbox"})
}

async fn an_apns_device_is_sent_the_notification_over_http2(backend: Backend) {
    let mut apns = ApnsStandIn::start().await;
    let app = spawn_with_apns(backend, &apns, |_| {}).await;
    let admin = admin(&app).await;
    let (_, ada, device) = with_device(&app, apns_device()).await;

    notify(&app, &admin, ada, "Sale").await;
    let push = next(&mut apns.requests).await;
    assert_eq!(push.path, format!("/3/device/{}", "ab".repeat(32)));
    assert_eq!(push.body["aps"]["alert"]["title"], "Sale");
    assert_eq!(push.body["aps"]["alert"]["body"], "About Sale.");
    assert_eq!(push.body["aps"]["sound"], "default");
    let event = &push.body["event"];
    assert_eq!(event["type"], "notification.created");
    assert_eq!(event["data"]["title"], "Sale");
    assert_eq!(
        push.headers["apns-collapse-id"],
        collapse_key(event).as_str()
    );

    let item = until_logged(&app, &admin, ada, delivery_is("sent")).await;
    let delivery = &item["deliveries"][0];
    assert_eq!(delivery["channel"], "apns");
    assert_eq!(delivery["device_id"], device["id"]);
    apns.assert_no_problems().await;
}

async fn an_apns_token_reported_unregistered_is_removed(backend: Backend) {
    let mut apns = ApnsStandIn::start().await;
    apns.answer_with(answer(
        410,
        vec![],
        json!({"reason": "Unregistered", "timestamp": 1_700_000_000_000_i64}),
    ))
    .await;
    let app = spawn_with_apns(backend, &apns, |_| {}).await;
    let admin = admin(&app).await;
    let (token, ada, _) = with_device(&app, apns_device()).await;

    notify(&app, &admin, ada, "Gone").await;
    next(&mut apns.requests).await;
    let item = until_logged(&app, &admin, ada, delivery_is("gone")).await;
    let delivery = &item["deliveries"][0];
    assert_eq!(delivery["channel"], "apns");
    assert_eq!(delivery["log"][0]["outcome"], "gone");
    assert!(delivery["device_id"].is_null(), "{delivery}");
    assert_eq!(
        app.get_json("/v1/me/devices", Some(&token)).await,
        json!([])
    );
    apns.assert_no_problems().await;
}

async fn apns_too_many_requests_is_retried(backend: Backend) {
    let mut apns = ApnsStandIn::start().await;
    apns.answer_with(answer(429, vec![], json!({"reason": "TooManyRequests"})))
        .await;
    // A retry at least 1.5 s later: time to switch the answer before it, on a busy machine.
    let app = spawn_with_apns(backend, &apns, |c| {
        c.push_retry_base = Duration::from_secs(3)
    })
    .await;
    let admin = admin(&app).await;
    let (_, ada, _) = with_device(&app, apns_device()).await;

    notify(&app, &admin, ada, "Busy").await;
    next(&mut apns.requests).await;
    until_logged(&app, &admin, ada, |i| {
        i["deliveries"][0]["log"][0]["outcome"] == "retry"
    })
    .await;
    apns.answer_with(apns_ok()).await;
    let again = next(&mut apns.requests).await;
    assert_eq!(again.body["aps"]["alert"]["title"], "Busy");
    let item = until_logged(&app, &admin, ada, delivery_is("sent")).await;
    let log = &item["deliveries"][0]["log"];
    assert_eq!(log[0]["outcome"], "retry");
    assert_eq!(log[1]["outcome"], "delivered");
    apns.assert_no_problems().await;
}
