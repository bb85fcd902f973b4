//! The `tidings` binary: settings validation, `migrate`, `user create`, `healthcheck`,
//! graceful shutdown.

use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tidings::config::DatabaseUrl;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::clients::PATIENCE;
use crate::helpers::{Backend, PASSWORD, TestApp};
use crate::{backend_tests, postgres_tests};

backend_tests!(
    user_create_bootstraps_an_admin_who_can_log_in,
    seed_fills_a_demo_shop_once,
    user_tokens_prints_working_tokens_and_reuses_users,
    healthcheck_exits_0_while_the_server_is_ready_and_1_once_it_is_not
);
postgres_tests!(a_missing_database_is_named_once);

/// The `tidings` binary with a clean environment (only `PATH`), killed if dropped.
pub(crate) fn tidings() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tidings"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    command.kill_on_drop(true);
    command
}

fn url_of(database: &DatabaseUrl) -> String {
    match database {
        DatabaseUrl::Sqlite(path) => format!("sqlite:{}", path.display()),
        DatabaseUrl::Postgres(url) => url.clone(),
    }
}

async fn user_create_bootstraps_an_admin_who_can_log_in(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let output = tidings()
        .args([
            "user",
            "create",
            "--email",
            "Root@Example.com",
            "--role",
            "admin",
        ])
        .env("DATABASE_URL", url_of(&app.config.database_url))
        .env("TIDINGS_DATA_DIR", &app.config.data_dir)
        .env("TIDINGS_PASSWORD", PASSWORD)
        .output()
        .await
        .unwrap();

    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("root@example.com (admin)"), "{stdout}");
    assert!(
        !stdout.contains(PASSWORD) && !String::from_utf8_lossy(&output.stderr).contains(PASSWORD)
    );
    let admin = app.login_ok("root@example.com").await;
    assert_eq!(
        app.get("/v1/users", Some(&admin.access_token))
            .await
            .status(),
        StatusCode::OK
    );
}

async fn user_tokens_prints_working_tokens_and_reuses_users(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tokens = |role: &'static str| {
        tidings()
            .args([
                "user", "tokens", "--count", "3", "--prefix", "lt", "--role", role,
            ])
            .env("DATABASE_URL", url_of(&app.config.database_url))
            .env("TIDINGS_DATA_DIR", &app.config.data_dir)
            // The tokens must verify with the running server's key.
            .env("TIDINGS_JWT_SECRET", "test-secret-".repeat(4))
            .output()
    };
    let lines = |output: &std::process::Output| -> Vec<Vec<String>> {
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| line.split(' ').map(str::to_owned).collect())
            .collect()
    };

    let first = lines(&tokens("staff").await.unwrap());
    let again = lines(&tokens("staff").await.unwrap());

    assert_eq!(first.len(), 3);
    for (n, line) in first.iter().enumerate() {
        assert_eq!(line.len(), 3, "{line:?}");
        assert_eq!(line[1], format!("lt-{n}@example.com"));
        let me = app.get_json("/v1/me", Some(&line[2])).await;
        assert_eq!(me["id"].as_str(), Some(line[0].as_str()));
        assert_eq!(me["role"], "staff");
    }
    let ids = |lines: &[Vec<String>]| lines.iter().map(|l| l[0].clone()).collect::<Vec<_>>();
    assert_eq!(ids(&first), ids(&again), "users are reused, not duplicated");
    let bad = tokens("overlord").await.unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--role"));
}

async fn seed_fills_a_demo_shop_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let seed = || {
        tidings()
            .arg("seed")
            .env("DATABASE_URL", url_of(&app.config.database_url))
            .env("TIDINGS_DATA_DIR", &app.config.data_dir)
            .env("TIDINGS_PASSWORD", PASSWORD)
            .output()
    };

    let first = seed().await.unwrap();
    let second = seed().await.unwrap();

    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        String::from_utf8_lossy(&first.stdout).starts_with("seeded 5 users, 16 products, 6 orders")
    );
    assert!(
        String::from_utf8_lossy(&second.stdout).starts_with("seeded 0 users, 0 products, 0 orders")
    );
    let alice = app.login_ok("alice@example.com").await;
    let orders = app.get_json("/v1/orders", Some(&alice.access_token)).await;
    assert_eq!(orders["items"].as_array().unwrap().len(), 2);
    let products = app
        .get_json("/v1/products?limit=100", Some(&alice.access_token))
        .await;
    assert_eq!(products["items"].as_array().unwrap().len(), 16);
    let admin = app.login_ok("admin@example.com").await;
    let users = app.get_json("/v1/users", Some(&admin.access_token)).await;
    assert_eq!(users["items"].as_array().unwrap().len(), 5);
}

/// What the image's HEALTHCHECK runs: `tidings healthcheck` with the image's environment.
async fn healthcheck(listen: &str, args: &[&str]) -> std::process::Output {
    tidings()
        .arg("healthcheck")
        .args(args)
        .env("TIDINGS_LISTEN", listen)
        .output()
        .await
        .unwrap()
}

async fn healthcheck_exits_0_while_the_server_is_ready_and_1_once_it_is_not(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // As in the image: the server listens on every interface, and is asked on loopback.
    let every_interface = format!("0.0.0.0:{}", app.addr.port());

    let ready = healthcheck(&every_interface, &[]).await;
    // Closing the pool is what a lost database looks like from the app: /readyz is 503.
    // The pool is closed at once; waiting for the connections the relay and the bus hold
    // to come back would wait for as long as the app runs (on PostgreSQL).
    let _ = futures::FutureExt::now_or_never(app.state.db.close());
    let not_ready = healthcheck(&every_interface, &[]).await;
    let not_ready_by_url = healthcheck(
        "127.0.0.1:1",
        &["--url", &format!("http://{}/readyz", app.addr)],
    )
    .await;

    let stdout = String::from_utf8_lossy(&ready.stdout);
    assert_eq!(ready.status.code(), Some(0), "{ready:?}");
    assert_eq!(stdout.trim().lines().count(), 1, "{stdout}");
    assert!(
        stdout.starts_with("ready: http://127.0.0.1:") && stdout.contains("200"),
        "{stdout}"
    );
    for output in [not_ready, not_ready_by_url] {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{output:?}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("not ready: ") && stderr.contains("503"),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn healthcheck_exits_1_when_nothing_answers() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // One that takes connections (the kernel's backlog) but never answers, as a server
    // that hangs.
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let started = std::time::Instant::now();

    let refused = healthcheck(&format!("127.0.0.1:{port}"), &[]).await;
    let silent = healthcheck(
        &hung.local_addr().unwrap().to_string(),
        &["--timeout", "300ms"],
    )
    .await;

    for (output, expected) in [
        (refused, "refused"),
        (silent, "did not answer within 300ms"),
    ] {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{output:?}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("down: ") && stderr.contains(expected),
            "{stderr}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn a_bad_setting_stops_the_server_with_one_line_naming_it() {
    for (var, value) in [
        ("TIDINGS_LISTEN", "nowhere"),
        ("DATABASE_URL", "mysql://root:hunter2@db/shop"),
        ("TIDINGS_JWT_SECRET", "too-short"),
        ("TIDINGS_ACCESS_TOKEN_TTL", "forever"),
    ] {
        let output = tidings().env(var, value).output().await.unwrap();

        assert_eq!(output.status.code(), Some(2), "{var}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(var), "{stderr}");
        assert!(
            !stderr.contains("hunter2") && !stderr.contains("too-short"),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[tokio::test]
async fn a_bad_flag_value_is_one_line_naming_the_flag_and_its_variable() {
    for (args, var) in [
        (["--body-limit", "12"], "TIDINGS_BODY_LIMIT"),
        // Below the ping interval (20 s): checked across settings, after each one's own.
        (["--ws-idle-timeout", "5s"], "TIDINGS_WS_IDLE_TIMEOUT"),
    ] {
        let output = tidings().args(args).output().await.unwrap();

        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(var) && stderr.contains(args[0]), "{stderr}");
    }
}

#[tokio::test]
async fn help_names_the_settings_that_have_no_flag() {
    let output = tidings().arg("--help").output().await.unwrap();

    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for var in [
        "TIDINGS_LISTEN",
        "TIDINGS_JWT_SECRET",
        "TIDINGS_PASSWORD",
        "RUST_LOG",
    ] {
        assert!(help.contains(var), "{var} is not in --help: {help}");
    }
}

#[tokio::test]
async fn an_unreachable_database_is_reported_as_such_at_once() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = std::time::Instant::now();

    let output = tidings()
        .arg("migrate")
        .env(
            "DATABASE_URL",
            format!("postgres://app:hunter2@127.0.0.1:{port}/shop"),
        )
        .env("TIDINGS_DB_ACQUIRE_TIMEOUT", "30s")
        .output()
        .await
        .unwrap();

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("refused"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    // Not after the pool's acquire timeout.
    assert!(started.elapsed() < Duration::from_secs(20), "{stderr}");
}

async fn a_missing_database_is_named_once(backend: Backend) {
    let Backend::Postgres(url) = backend else {
        unreachable!()
    };
    let missing = format!(
        "{}/tidings_no_such_database",
        url.rsplit_once('/').unwrap().0
    );

    let output = tidings()
        .arg("migrate")
        .env("DATABASE_URL", &missing)
        .output()
        .await
        .unwrap();

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.matches("does not exist").count(), 1, "{stderr}");
    assert!(!stderr.contains(" at line "), "{stderr}");
}

#[tokio::test]
async fn user_create_refuses_a_weak_password_and_a_bad_role() {
    let dir = tempfile::tempdir().unwrap();
    for (args, password) in [
        (["--role", "admin"], "12345678"),
        (["--role", "emperor"], PASSWORD),
    ] {
        let output = tidings()
            .args(["user", "create", "--email", "root@example.com"])
            .args(args)
            .env("TIDINGS_DATA_DIR", dir.path())
            .env("TIDINGS_PASSWORD", password)
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap();

        assert!(!output.status.success());
        assert_eq!(
            String::from_utf8_lossy(&output.stderr)
                .trim()
                .lines()
                .count(),
            1
        );
    }
}

#[tokio::test]
async fn migrate_creates_the_embedded_database() {
    let dir = tempfile::tempdir().unwrap();

    let output = tidings()
        .arg("migrate")
        .env("TIDINGS_DATA_DIR", dir.path().join("fresh"))
        .output()
        .await
        .unwrap();

    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(dir.path().join("fresh/tidings.db").exists());
}

/// A server started from the binary, with JSON logs on a pipe.
struct Server {
    child: tokio::process::Child,
    address: String,
    logs: tokio::io::Lines<BufReader<Box<dyn tokio::io::AsyncRead + Unpin + Send>>>,
    _dir: tempfile::TempDir,
}

async fn serve(log_level: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut child = tidings()
        .env("TIDINGS_DATA_DIR", dir.path())
        .env("TIDINGS_LISTEN", "127.0.0.1:0")
        .env("TIDINGS_LOG_FORMAT", "json")
        .env("RUST_LOG", log_level)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr: Box<dyn tokio::io::AsyncRead + Unpin + Send> =
        Box::new(child.stderr.take().unwrap());
    let mut logs = BufReader::new(stderr).lines();
    let address = loop {
        let line = logs
            .next_line()
            .await
            .unwrap()
            .expect("the server logs its address");
        let entry: Value = serde_json::from_str(&line).expect("JSON log lines");
        if let Some(address) = entry["address"].as_str() {
            break address.to_owned();
        }
    };
    Server {
        child,
        address,
        logs,
        _dir: dir,
    }
}

impl Server {
    /// Sends SIGTERM and waits for a clean exit.
    async fn stop(&mut self) {
        self.terminate();
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("the server stops within 10 s")
            .unwrap();
        assert!(status.success(), "{status}");
    }

    /// Sends SIGTERM.
    fn terminate(&self) {
        let kill = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().unwrap().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
    }
}

#[tokio::test]
async fn sigterm_stops_the_server_gracefully() {
    let mut server = serve("info").await;
    let client = reqwest::Client::new();
    let ready = client
        .get(format!("http://{}/readyz", server.address))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);

    server.stop().await;

    assert!(
        client
            .get(format!("http://{}/livez", server.address))
            .send()
            .await
            .is_err()
    );
}

/// The process-level twin of `shutdown::shutdown_returns_only_after_every_live_connection_has_closed`:
/// the binary exits on SIGTERM only once its live connections are closed, so that none is
/// cut off without its Close or the end of its stream by the process ending. One
/// WebSocket client never answers the Close: the process waits the closing handshake's
/// grace for it before it exits.
#[tokio::test]
async fn sigterm_exits_only_after_every_live_connection_has_closed() {
    use futures::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let mut server = serve("info").await;
    let address = server.address.clone();
    let client = reqwest::Client::new();
    let credentials = serde_json::json!({"email": "ada@example.com", "password": PASSWORD});
    client
        .post(format!("http://{address}/v1/auth/register"))
        .json(&credentials)
        .send()
        .await
        .unwrap();
    let tokens: Value = client
        .post(format!("http://{address}/v1/auth/login"))
        .json(&credentials)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = tokens["access_token"].as_str().unwrap();
    fn within<F: Future>(what: F) -> tokio::time::Timeout<F> {
        tokio::time::timeout(PATIENCE, what)
    }
    let mut websockets = Vec::new();
    for _ in 0..3 {
        let mut request = format!("ws://{address}/v1/ws")
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let subscribe = r#"{"type":"subscribe","topics":["orders"]}"#;
        ws.send(Message::Text(subscribe.into())).await.unwrap();
        match within(ws.next()).await.expect("an answer in time") {
            Some(Ok(Message::Text(text))) => assert!(text.contains("subscribed"), "{text}"),
            other => panic!("expected `subscribed`, got {other:?}"),
        }
        websockets.push(ws);
    }
    let mut streams = Vec::new();
    for _ in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        let request = format!(
            "GET /v1/events?topics=orders HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        // The head is written once the stream is registered.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let byte = within(stream.read_u8()).await.expect("the head in time");
            head.push(byte.unwrap());
        }
        assert!(head.starts_with(b"HTTP/1.1 200"));
        streams.push(stream);
    }

    let mut silent = websockets.pop().unwrap();
    let terminated = std::time::Instant::now();
    server.terminate();

    // tungstenite answers a Close on the read after the one that returned it: until the
    // clients read again, the server's side of each closing handshake is still open.
    for ws in &mut websockets {
        let close = loop {
            match within(ws.next()).await.expect("the Close in time") {
                Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                other => panic!("the connection ended without a Close: {other:?}"),
            }
        };
        assert_eq!(close, Some(1001), "Going Away");
    }
    for mut stream in streams {
        let mut body = Vec::new();
        within(stream.read_to_end(&mut body))
            .await
            .expect("the stream's end in time")
            .unwrap();
        assert!(body.ends_with(b"0\r\n\r\n"), "the body's last chunk came");
    }
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server exited while WebSocket clients had not answered their Close"
    );
    for mut ws in websockets {
        while let Some(Ok(_)) = within(ws.next()).await.expect("the server ends it in time") {}
    }
    let status = within(server.child.wait())
        .await
        .expect("the server exits once its connections are closed")
        .unwrap();
    assert!(status.success(), "{status}");
    assert!(
        terminated.elapsed() >= tidings::net::wire::CLOSE_GRACE,
        "the server exited {:?} after SIGTERM, without waiting for the silent client's answer",
        terminated.elapsed()
    );
    match within(silent.next()).await.expect("the Close") {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("the silent client got no Close: {other:?}"),
    }
}

#[tokio::test]
async fn a_server_whose_log_reader_is_gone_still_serves_and_stops() {
    let mut server = serve("info").await;
    let base = format!("http://{}", server.address);
    // The reader of its log goes away, as `tidings | head` or a log shipper that exits.
    drop(
        std::mem::replace(
            &mut server.logs,
            BufReader::new(
                Box::new(tokio::io::empty()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>
            )
            .lines(),
        ),
    );
    let client = reqwest::Client::new();

    // Each request logs a line, which now fails to be written.
    for _ in 0..3 {
        let live = client.get(format!("{base}/livez")).send().await.unwrap();
        assert_eq!(live.status(), StatusCode::OK);
    }

    server.stop().await;
}

#[tokio::test]
async fn no_password_or_token_reaches_the_log_even_at_debug_level() {
    let mut server = serve("debug").await;
    let client = reqwest::Client::new();
    let base = format!("http://{}", server.address);
    let credentials = serde_json::json!({"email": "ada@example.com", "password": PASSWORD});
    client
        .post(format!("{base}/v1/auth/register"))
        .json(&credentials)
        .send()
        .await
        .unwrap();
    let tokens: Value = client
        .post(format!("{base}/v1/auth/login"))
        .json(&credentials)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let me = client
        .get(format!("{base}/v1/me"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    let refreshed = client
        .post(format!("{base}/v1/auth/refresh"))
        .json(&serde_json::json!({"refresh_token": refresh}))
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), StatusCode::OK);

    server.stop().await;

    let mut log = String::new();
    while let Some(line) = server.logs.next_line().await.unwrap() {
        log.push_str(&line);
        log.push('\n');
    }
    assert!(
        log.contains("user logged in"),
        "the log was captured: {log}"
    );
    for secret in [PASSWORD, &access, &refresh, "$argon2id$"] {
        assert!(!log.contains(secret), "{secret} is in the log");
    }
}
