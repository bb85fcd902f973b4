//! The load tester against a live Tidings: a small scenario counts no loss, and counts the
//! one it is made to lose.

use std::process::Stdio;

use serde_json::Value;
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
