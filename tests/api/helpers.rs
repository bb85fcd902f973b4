//! Starting the app for a test, and typed requests against it.

use std::net::SocketAddr;

use reqwest::{Client, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Connection;
use tidings::config::{Config, DatabaseUrl, MetricsToken};
use tidings::domain::{Email, NewPassword, Role};
use tidings::{AppState, Application};

/// Declares each test for both backends: `sqlite::name`, and `postgres::name`, which is
/// reported as ignored, with the reason, when the tests were built without
/// `TEST_DATABASE_URL` (build.rs decides). A test function left out of the list is dead
/// code, which clippy refuses, so none can be forgotten.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        // `any()` is never true: no extra attribute.
        $crate::tests_on_both_backends!(#[cfg_attr(any(), ignore)] $($name),*);
    };
}

/// [`backend_tests!`] for tests that drive Debian's Chromium: ignored, with the reason,
/// when it was missing when the tests were built.
#[macro_export]
macro_rules! browser_tests {
    ($($name:ident),* $(,)?) => {
        $crate::tests_on_both_backends!(
            #[cfg_attr(tidings_no_browser, ignore = "needs Chromium at /usr/bin/chromium (apt-get install chromium)")]
            $($name),*
        );
    };
}

/// The two modules of [`backend_tests!`], each test with the extra attribute given.
#[macro_export]
macro_rules! tests_on_both_backends {
    (#[$extra:meta] $($name:ident),*) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[$extra]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[cfg_attr(tidings_no_postgres, ignore = "needs PostgreSQL: build and run the tests with TEST_DATABASE_URL set")]
                #[cfg_attr(not(tidings_no_postgres), $extra)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::postgres()).await
                }
            )*
        }
    };
}

/// Declares tests that need PostgreSQL (several instances on one database, Redis), ignored
/// as `postgres::` tests are without `TEST_DATABASE_URL`.
#[macro_export]
macro_rules! postgres_tests {
    ($($name:ident),* $(,)?) => {
        mod postgres_only {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[cfg_attr(tidings_no_postgres, ignore = "needs PostgreSQL: build and run the tests with TEST_DATABASE_URL set")]
                async fn $name() {
                    super::$name($crate::helpers::Backend::postgres()).await
                }
            )*
        }
    };
}

/// Declares tests of instances behind a real nginx (Debian's, `/usr/sbin/nginx`), on
/// PostgreSQL and Redis: ignored, with the reason, when either was missing when the tests
/// were built.
#[macro_export]
macro_rules! proxy_tests {
    ($($name:ident),* $(,)?) => {
        mod behind_nginx {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[cfg_attr(tidings_no_postgres, ignore = "needs PostgreSQL: build and run the tests with TEST_DATABASE_URL set")]
                #[cfg_attr(all(not(tidings_no_postgres), tidings_no_nginx), ignore = "needs nginx at /usr/sbin/nginx (apt-get install nginx)")]
                async fn $name() {
                    super::$name($crate::helpers::Backend::postgres()).await
                }
            )*
        }
    };
}

/// Where a test's database lives.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    /// The URL of a PostgreSQL database in which test databases may be created.
    Postgres(String),
}

impl Backend {
    /// PostgreSQL at `TEST_DATABASE_URL`. The tests that call this are ignored when it was
    /// unset at build time; unset now, it is an error, not a silent pass.
    pub fn postgres() -> Backend {
        match std::env::var("TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => Backend::Postgres(url),
            _ => panic!(
                "the tests were built with TEST_DATABASE_URL but it is not set now: set it, or rebuild without it"
            ),
        }
    }
}

/// The password every test user gets.
pub const PASSWORD: &str = "correct horse battery staple";

/// The metrics token every test app has unless a test takes it away: `/metrics` is then
/// on the public port, for [`TestApp::metrics`].
pub const METRICS_TOKEN: &str = "test-metrics-token-0123456789";

/// A running app with its own database.
pub struct TestApp {
    pub addr: SocketAddr,
    /// The admin listener's address, when the test set `admin_listen`.
    pub admin: Option<SocketAddr>,
    pub client: Client,
    /// The app's state, for arranging what the HTTP API cannot (such as the first admin).
    pub state: AppState,
    /// The settings the app was built from.
    pub config: Config,
    _dir: tempfile::TempDir,
    postgres: Option<(String, String)>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Starts the app with the default settings as changed by `tweak`.
    pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> TestApp {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut config = Config::defaults()
            .validate_with_secret(Some("test-secret-".repeat(4)))
            .expect("the default settings are valid");
        config.listen = "127.0.0.1:0".parse().unwrap();
        // Many apps run at once: keep each one's share of PostgreSQL's connections small.
        config.db_max_connections = 4;
        config.data_dir = dir.path().to_owned();
        config.database_url = DatabaseUrl::Sqlite(dir.path().join("tidings.db"));
        config.metrics_token = MetricsToken::parse(METRICS_TOKEN.into()).unwrap();
        let mut postgres = None;
        if let Backend::Postgres(admin_url) = &backend {
            let name = format!("tidings_test_{}", uuid::Uuid::new_v4().simple());
            create_database(admin_url, &name).await;
            config.database_url = DatabaseUrl::Postgres(with_database(admin_url, &name));
            // The production pairing: PostgreSQL with the Redis bus, on a channel of its own.
            if let Ok(redis) = std::env::var("TEST_REDIS_URL")
                && !redis.is_empty()
            {
                config.redis_url = Some(redis);
                config.redis_channel = format!("tidings:test:{name}");
                // `TEST_BUS_PARTITIONS=K` runs every Redis test on a partitioned bus.
                if let Some(k) = std::env::var("TEST_BUS_PARTITIONS")
                    .ok()
                    .and_then(|k| k.parse().ok())
                {
                    config.bus_partitions = k;
                }
            }
            postgres = Some((admin_url.clone(), name));
        }
        tweak(&mut config);
        Self::start(config, dir, postgres).await
    }

    /// Another instance on this one's database and bus, as a second server behind a load
    /// balancer would be.
    pub async fn another_instance(&self) -> TestApp {
        self.another_instance_with(|_| {}).await
    }

    pub async fn another_instance_with(&self, tweak: impl FnOnce(&mut Config)) -> TestApp {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut config = self.config.clone();
        config.data_dir = dir.path().to_owned();
        tweak(&mut config);
        // The database stays the first instance's to drop.
        Self::start(config, dir, None).await
    }

    async fn start(
        config: Config,
        dir: tempfile::TempDir,
        postgres: Option<(String, String)>,
    ) -> TestApp {
        let app = Application::build(config.clone())
            .await
            .expect("the app builds");
        let addr = app.local_addr();
        let admin = app.admin_addr();
        let state = app.state().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        TestApp {
            addr,
            admin,
            client: Client::new(),
            state,
            config,
            _dir: dir,
            postgres,
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// Shuts the app down gracefully (as SIGTERM does) and waits until it has stopped.
    pub async fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("the server task")
                .expect("a clean shutdown");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        let mut request = self.client.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("the request is sent")
    }

    /// `GET /metrics` on the public port, with the test apps' metrics token.
    pub async fn metrics(&self) -> Response {
        self.get("/metrics", Some(METRICS_TOKEN)).await
    }

    pub async fn post(&self, path: &str, body: &Value, token: Option<&str>) -> Response {
        let mut request = self.client.post(self.url(path)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("the request is sent")
    }

    pub async fn patch(&self, path: &str, body: &Value, token: &str) -> Response {
        self.client
            .patch(self.url(path))
            .json(body)
            .bearer_auth(token)
            .send()
            .await
            .expect("the request is sent")
    }

    pub async fn register(&self, email: &str, password: &str) -> Response {
        self.post(
            "/v1/auth/register",
            &json!({"email": email, "password": password}),
            None,
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> Response {
        self.post(
            "/v1/auth/login",
            &json!({"email": email, "password": password}),
            None,
        )
        .await
    }

    /// Registers a customer and logs them in.
    pub async fn customer(&self, email: &str) -> Tokens {
        assert_eq!(
            self.register(email, PASSWORD).await.status(),
            StatusCode::CREATED
        );
        self.login_ok(email).await
    }

    /// Creates a user of any role, as `tidings user create` does, and logs them in.
    pub async fn user_with_role(&self, email: &str, role: Role) -> Tokens {
        let email_value = Email::parse(email).unwrap();
        let password = NewPassword::parse(PASSWORD.into(), Some(&email_value)).unwrap();
        tidings::service::accounts::register(&self.state.accounts(), &email_value, &password, role)
            .await
            .expect("the user is created");
        self.login_ok(email).await
    }

    pub async fn put(&self, path: &str, body: &Value, token: &str) -> Response {
        self.client
            .put(self.url(path))
            .json(body)
            .bearer_auth(token)
            .send()
            .await
            .expect("the request is sent")
    }

    pub async fn delete(&self, path: &str, token: &str) -> Response {
        self.client
            .delete(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("the request is sent")
    }

    /// The id of the user a token belongs to.
    pub async fn user_id(&self, token: &str) -> uuid::Uuid {
        let me = self.get_json("/v1/me", Some(token)).await;
        me["id"].as_str().unwrap().parse().unwrap()
    }

    /// Creates a product as `staff_token`, returning its JSON.
    pub async fn product(
        &self,
        staff_token: &str,
        sku: &str,
        unit_amount: i64,
        stock: i64,
    ) -> Value {
        let response = self
            .post(
                "/v1/products",
                &json!({
                    "sku": sku, "name": format!("Product {sku}"), "unit_amount": unit_amount,
                    "currency": "EUR", "stock": stock, "low_stock_threshold": 2
                }),
                Some(staff_token),
            )
            .await;
        json_body(response, StatusCode::CREATED).await
    }

    /// Adds `delta` to a product's stock as `staff_token`.
    pub async fn adjust_stock(&self, staff_token: &str, product_id: &str, delta: i64) -> Response {
        let response = self
            .post(
                &format!("/v1/products/{product_id}/stock-adjustments"),
                &json!({"delta": delta, "reason": "count"}),
                Some(staff_token),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        response
    }

    /// Places an order of `(product id, quantity)` lines as `token`.
    pub async fn order(&self, token: &str, items: &[(&str, i64)]) -> Response {
        let items: Vec<Value> = items
            .iter()
            .map(|(id, quantity)| json!({"product_id": id, "quantity": quantity}))
            .collect();
        self.post("/v1/orders", &json!({"items": items}), Some(token))
            .await
    }

    /// The outbox id of the newest event, to read what a change adds after it.
    pub async fn last_event_id(&self) -> i64 {
        self.events_after(0).await.last().map_or(0, |e| e.id)
    }

    /// Outbox rows written after `after_id`, in order.
    pub async fn events_after(&self, after_id: i64) -> Vec<tidings::store::events::EventRow> {
        tidings::store::events::after_id(&self.state.db, after_id, 10_000)
            .await
            .expect("the outbox is readable")
    }

    pub async fn login_ok(&self, email: &str) -> Tokens {
        let response = self.login(email, PASSWORD).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("a token pair")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some((admin_url, name)) = self.postgres.take() {
            drop_database(admin_url, name);
        }
    }
}

/// Drops a test database, from a thread with a runtime of its own (for `Drop`, which is
/// not async).
pub fn drop_database(admin_url: String, name: String) {
    let _ = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
                let sql = format!(r#"drop database if exists "{name}" with (force)"#);
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await;
            }
        });
    })
    .join();
}

pub async fn create_database(admin_url: &str, name: &str) {
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .expect("TEST_DATABASE_URL accepts connections");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(r#"create database "{name}""#)))
        .execute(&mut conn)
        .await
        .expect("a test database is created");
}

/// The same server URL with another database name.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let server = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    format!("{server}/{name}{query}")
}

/// A login or refresh answer.
#[derive(Debug, Clone, Deserialize)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: String,
    pub expires_in: u64,
}

/// Reads an error response, checking that it is problem+json, and returns its body.
pub async fn problem(response: Response) -> Value {
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        content_type, "application/problem+json",
        "an error is problem+json"
    );
    let body: Value = response.json().await.expect("a JSON problem body");
    assert!(body["code"].is_string(), "a problem has a code: {body}");
    assert!(body["status"].is_u64(), "a problem has a status: {body}");
    body
}

/// The body of a response that should have answered `expected`. Any other status fails the
/// test with the answer's body (a problem's code and detail, usually), so a step that went
/// wrong names why instead of failing later on a missing field.
pub async fn json_body(response: Response, expected: StatusCode) -> Value {
    typed_body(response, expected).await
}

/// [`json_body`] read into a type of the answer.
pub async fn typed_body<T: serde::de::DeserializeOwned>(
    response: Response,
    expected: StatusCode,
) -> T {
    let status = response.status();
    // The path alone: queries may carry stream tickets.
    let path = response.url().path().to_owned();
    let body = response.text().await.unwrap_or_default();
    assert_eq!(status, expected, "{path} answered {status}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| {
        panic!("{path} answered {status} with an unexpected body ({e}): {body}")
    })
}

/// The steps of the domain that tests take on the way to what they check. Each expects its
/// success status (see [`json_body`]) and returns the parsed answer; the requests above that
/// return the `Response` are for checking refusals.
impl TestApp {
    /// `GET path`, expecting 200.
    pub async fn get_json(&self, path: &str, token: Option<&str>) -> Value {
        json_body(self.get(path, token).await, StatusCode::OK).await
    }

    /// Places an order of `(product id, quantity)` lines as `token`, expecting 201.
    pub async fn place_order(&self, token: &str, items: &[(&str, i64)]) -> Value {
        json_body(self.order(token, items).await, StatusCode::CREATED).await
    }

    /// An order as `token` sees it.
    pub async fn read_order(&self, token: &str, order_id: &str) -> Value {
        self.get_json(&format!("/v1/orders/{order_id}"), Some(token))
            .await
    }

    /// Moves an order to `status` as `staff_token`, expecting 200; returns the order.
    pub async fn set_status(&self, staff_token: &str, order_id: &str, status: &str) -> Value {
        let response = self
            .post(
                &format!("/v1/orders/{order_id}/status"),
                &json!({"status": status}),
                Some(staff_token),
            )
            .await;
        json_body(response, StatusCode::OK).await
    }

    /// Cancels an order as `token`, expecting 200; returns the order.
    pub async fn cancel_order(&self, token: &str, order_id: &str) -> Value {
        let response = self
            .post(
                &format!("/v1/orders/{order_id}/cancel"),
                &json!({}),
                Some(token),
            )
            .await;
        json_body(response, StatusCode::OK).await
    }

    /// Creates a product from a whole request body as `staff_token`, expecting 201.
    pub async fn create_product(&self, staff_token: &str, body: &Value) -> Value {
        let response = self.post("/v1/products", body, Some(staff_token)).await;
        json_body(response, StatusCode::CREATED).await
    }

    /// A product as `token` sees it.
    pub async fn read_product(&self, token: &str, product_id: &str) -> Value {
        self.get_json(&format!("/v1/products/{product_id}"), Some(token))
            .await
    }

    /// Adds `delta` to a product's stock for `reason` as `staff_token`, expecting 200;
    /// returns the product.
    pub async fn adjust_stock_for(
        &self,
        staff_token: &str,
        product_id: &str,
        delta: i64,
        reason: &str,
    ) -> Value {
        let response = self
            .post(
                &format!("/v1/products/{product_id}/stock-adjustments"),
                &json!({"delta": delta, "reason": reason}),
                Some(staff_token),
            )
            .await;
        json_body(response, StatusCode::OK).await
    }

    /// Brings a deleted product back as `staff_token`, expecting 200; returns the product.
    pub async fn restore_product(&self, staff_token: &str, product_id: &str) -> Value {
        let response = self
            .post(
                &format!("/v1/products/{product_id}/restore"),
                &json!({}),
                Some(staff_token),
            )
            .await;
        json_body(response, StatusCode::OK).await
    }

    /// Trades a refresh token for a new pair, expecting 200.
    pub async fn refresh_ok(&self, refresh_token: &str) -> Tokens {
        let response = self
            .post(
                "/v1/auth/refresh",
                &json!({"refresh_token": refresh_token}),
                None,
            )
            .await;
        typed_body(response, StatusCode::OK).await
    }

    /// Sends a broadcast of `title` and `body` to `audience` as `admin_token`, expecting
    /// 201; returns the answer (its recipient count).
    pub async fn broadcast(
        &self,
        admin_token: &str,
        title: &str,
        body: &str,
        audience: Value,
    ) -> Value {
        let response = self
            .post(
                "/v1/notifications/broadcast",
                &json!({"title": title, "body": body, "audience": audience}),
                Some(admin_token),
            )
            .await;
        json_body(response, StatusCode::CREATED).await
    }

    /// Marks a notification read as `token`, expecting 200; returns the notification.
    pub async fn mark_read(&self, token: &str, notification_id: &str) -> Value {
        let response = self
            .post(
                &format!("/v1/notifications/{notification_id}/read"),
                &json!({}),
                Some(token),
            )
            .await;
        json_body(response, StatusCode::OK).await
    }

    /// Marks every notification of `token`'s user read, expecting 200.
    pub async fn mark_all_read(&self, token: &str) -> Value {
        let response = self
            .post("/v1/notifications/read-all", &json!({}), Some(token))
            .await;
        json_body(response, StatusCode::OK).await
    }
}
