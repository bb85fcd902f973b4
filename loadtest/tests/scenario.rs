//! The load tester against a live Tidings: a small scenario counts no loss, and counts the
//! one it is made to lose.

use std::process::Stdio;

use serde_json::{Value, json};
use tidings::config::{Config, DatabaseUrl, MetricsToken};
use tidings::domain::{Email, NewPassword, Role};

const ADMIN: &str = "loadtest-admin@example.com";
const PASSWORD: &str = "load test admin password";
/// Tidings' metrics token: its public port serves `/metrics` to bearers of it.
const METRICS_TOKEN: &str = "loadtest-metrics-token";

/// Tidings on a SQLite file of its own, with sign-up limits off (the tester registers users).
async fn tidings() -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::defaults()
        .validate_with_secret(Some("loadtest-secret-".repeat(3)))
        .unwrap();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.data_dir = dir.path().to_owned();
    config.database_url = DatabaseUrl::Sqlite(dir.path().join("tidings.db"));
    config.auth_rate_per_ip = 0;
    config.auth_rate_per_email = 0;
    config.metrics_token = MetricsToken::parse(METRICS_TOKEN.into()).unwrap();
    let app = tidings::Application::build(config).await.unwrap();
    let email = Email::parse(ADMIN).unwrap();
    let password = NewPassword::parse(PASSWORD.into(), Some(&email)).unwrap();
    tidings::service::accounts::register(&app.state().accounts(), &email, &password, Role::Admin)
        .await
        .unwrap();
    let base = format!("http://{}", app.local_addr());
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    (base, dir)
}

/// Runs the tester's `fanout` with 100 WebSocket and 100 SSE subscribers; `extra` flags
/// come last and win.
async fn loadtest(base: &str, extra: &[&str], json: &std::path::Path) -> (Option<i32>, Value) {
    let mut args = vec![
        "fanout",
        "--ws",
        "100",
        "--sse",
        "100",
        "--users",
        "20",
        "--rate",
        "20",
        "--duration",
        "2s",
    ];
    if let Some(scenario) = extra.first().filter(|a| !a.starts_with("--")) {
        args[0] = scenario;
    }
    let extra = extra.iter().skip_while(|a| !a.starts_with("--"));
    run_tester(base, args.into_iter().chain(extra.copied()), json).await
}

async fn run_tester<'a>(
    base: &str,
    args: impl Iterator<Item = &'a str>,
    json: &std::path::Path,
) -> (Option<i32>, Value) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_tidings-loadtest"))
        .args(args)
        .args(["--base-url", base])
        .arg("--json")
        .arg(json)
        .env("LOADTEST_ADMIN_EMAIL", ADMIN)
        .env("LOADTEST_ADMIN_PASSWORD", PASSWORD)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    // Its output goes to a pipe here, as into a log: no colour codes there.
    assert!(
        !output.stdout.contains(&0x1b),
        "colour codes in piped output: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    let report: Value = serde_json::from_slice(&std::fs::read(json).unwrap_or_default())
        .unwrap_or_else(|_| panic!("no report: {}", String::from_utf8_lossy(&output.stderr)));
    (output.status.code(), report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_scenario_counts_every_delivery_and_no_loss() {
    let (base, dir) = tidings().await;

    // The server's CPU read from its /metrics, which wants the token.
    let metrics = format!("{base}/metrics");
    let (code, report) = loadtest(
        &base,
        &["--metrics-url", &metrics, "--metrics-token", METRICS_TOKEN],
        &dir.path().join("run.json"),
    )
    .await;

    assert_eq!(code, Some(0), "{report}");
    assert!(report["server_cpu_cores"].as_f64().is_some(), "{report}");
    assert_eq!(report["subscribers"], 200);
    assert_eq!(report["lost"], 0);
    assert_eq!(report["duplicates"], 0);
    assert_eq!(report["out_of_order"], 0);
    assert!(report["writes"].as_u64().unwrap() >= 30, "{report}");
    assert_eq!(report["deliveries"], report["expected_deliveries"]);
    assert!(report["delivery_latency_ms"]["p99"].as_f64().unwrap() > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_skips_an_event_is_counted_as_a_loss() {
    let (base, dir) = tidings().await;

    let (code, report) = loadtest(&base, &["--inject-loss"], &dir.path().join("run.json")).await;

    assert_eq!(code, Some(1), "a loss makes the tester fail");
    assert_eq!(report["lost"], 1);
    assert_eq!(report["mismatched_subscribers"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_reach_their_owner_and_staff_and_notifications_their_recipient() {
    let (base, dir) = tidings().await;

    let (code, report) = run_tester(
        &base,
        [
            "orders",
            "--users",
            "10",
            "--staff",
            "2",
            "--topics",
            "orders,notifications",
            "--rate",
            "20",
            "--duration",
            "2s",
            "--mix",
            "orders=2,status=2,broadcast=1",
        ]
        .into_iter(),
        &dir.path().join("orders.json"),
    )
    .await;

    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["scenario"], "orders");
    assert_eq!(report["subscribers"], 12);
    assert_eq!(report["lost"], 0);
    assert_eq!(report["unexpected"], 0);
    for kind in ["orders", "status", "broadcast"] {
        assert!(
            report["writes_by_kind"][kind].as_u64().unwrap() > 0,
            "{kind}: {report}"
        );
        assert!(
            report["write_latency_by_kind_ms"][kind]["p99"]
                .as_f64()
                .unwrap()
                > 0.0
        );
    }
    assert!(report["expected_deliveries"].as_u64().unwrap() > 0);
    assert_eq!(report["deliveries"], report["expected_deliveries"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_drops_half_the_connections_and_they_resume_without_loss() {
    let (base, dir) = tidings().await;

    let (code, report) = run_tester(
        &base,
        [
            "storm",
            "--ws",
            "40",
            "--sse",
            "40",
            "--users",
            "10",
            "--rate",
            "20",
            "--duration",
            "3s",
            "--drop",
            "0.5",
            "--drop-after",
            "1s",
        ]
        .into_iter(),
        &dir.path().join("storm.json"),
    )
    .await;

    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["dropped"], 40);
    assert!(
        report["recovery_seconds"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert!(report["reconnects"].as_u64().unwrap() >= 40);
    assert_eq!(report["lost"], 0);
    assert_eq!(report["duplicates"], 0);
    assert_eq!(report["out_of_order"], 0);
    assert_eq!(report["deliveries"], report["expected_deliveries"]);
    assert!(!report["timeline"].as_array().unwrap().is_empty());
}

/// POSTs `body` as JSON; the answer's JSON.
async fn post(base: &str, path: &str, token: Option<&str>, body: Value) -> Value {
    let mut request = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

/// Runs the tester's `orders` listening only (`--expect-from`) for three users of its own;
/// once it is live, `made` notifications are sent to each (here by REST; in the benchmark
/// by SQL), and the file lists them and `extra` more that were never made.
async fn listening_only(made: usize, extra: &[&str]) -> (Option<i32>, Value) {
    use tokio::io::AsyncBufReadExt;

    let (base, dir) = tidings().await;
    let admin = post(
        &base,
        "/v1/auth/login",
        None,
        json!({"email": ADMIN, "password": PASSWORD}),
    )
    .await;
    let admin = admin["access_token"].as_str().unwrap().to_owned();
    let mut tokens = String::new();
    let mut users = Vec::new();
    for i in 0..3 {
        let email = format!("listener-{i}@example.com");
        let login = json!({"email": email, "password": PASSWORD});
        let user = post(&base, "/v1/auth/register", None, login.clone()).await;
        let token = post(&base, "/v1/auth/login", None, login).await;
        let (id, token) = (
            user["id"].as_str().unwrap(),
            token["access_token"].as_str().unwrap(),
        );
        tokens.push_str(&format!("{id} {email} {token}\n"));
        users.push(id.to_owned());
    }
    std::fs::write(dir.path().join("tokens"), tokens).unwrap();
    let expected = dir.path().join("expected");
    let json = dir.path().join("listen.json");
    let mut tester = tokio::process::Command::new(env!("CARGO_BIN_EXE_tidings-loadtest"))
        .args([
            "orders",
            "--staff",
            "0",
            "--users",
            "3",
            "--topics",
            "notifications",
        ])
        .args(["--duration", "30s", "--drain", "3s", "--base-url", &base])
        .arg("--tokens")
        .arg(dir.path().join("tokens"))
        .arg("--expect-from")
        .arg(&expected)
        .arg("--json")
        .arg(&json)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(tester.stderr.take().unwrap()).lines();
    while let Some(line) = lines.next_line().await.unwrap() {
        if line.starts_with("writing") {
            break;
        }
    }
    let mut listed = String::new();
    for n in 0..made {
        for user in &users {
            let body = format!("made elsewhere {n} for {user}");
            let note = json!({"title": "t", "body": body, "audience": [user]});
            post(&base, "/v1/notifications/broadcast", Some(&admin), note).await;
            listed.push_str(&format!("{user} {body}\n"));
        }
    }
    for body in extra {
        listed.push_str(&format!("{} {body}\n", users[0]));
    }
    std::fs::write(dir.path().join("partial"), listed).unwrap();
    std::fs::rename(dir.path().join("partial"), &expected).unwrap();
    while lines.next_line().await.unwrap().is_some() {}
    let code = tester.wait().await.unwrap().code();
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    (code, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_only_it_expects_what_the_file_lists_and_writes_nothing() {
    let (code, report) = listening_only(2, &[]).await;

    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["writes"], 0);
    assert_eq!(report["expected_deliveries"], 6);
    assert_eq!(report["deliveries"], 6);
    assert_eq!(report["lost"], 0);
    assert_eq!(report["unexpected"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_only_a_listed_notification_that_never_came_is_lost() {
    let (code, report) = listening_only(1, &["never made"]).await;

    assert_eq!(code, Some(1), "{report}");
    assert_eq!(report["expected_deliveries"], 4);
    assert_eq!(report["deliveries"], 3);
    assert_eq!(report["lost"], 1);
    assert_eq!(report["mismatched_subscribers"], 1);
}
