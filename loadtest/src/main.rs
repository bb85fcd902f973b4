//! `tidings-loadtest`: opens many WebSocket and SSE subscribers to a Tidings server, drives
//! a write workload through its REST API, and measures what arrives: commit-to-receipt
//! latency (from each envelope's `at`) in an HDR histogram, deliveries per second, and for
//! every subscriber the events it should have received against those it did, so lost,
//! duplicated and out-of-order events are counted. Any loss makes it exit non-zero.

mod api;
mod memory;
mod report;
mod subscriber;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};

use crate::report::Summary;
use crate::subscriber::{Shared, Transport};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    /// Subscribers of `inventory`, and stock adjustments at `--rate` per second.
    Fanout,
}

/// Load-test a Tidings server.
#[derive(Debug, Parser)]
#[command(name = "tidings-loadtest", version)]
pub struct Args {
    /// The server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    base_url: String,
    /// A staff or admin account for the writes and the products.
    #[arg(long, env = "LOADTEST_ADMIN_EMAIL")]
    admin_email: String,
    #[arg(long, env = "LOADTEST_ADMIN_PASSWORD", hide_env_values = true)]
    admin_password: String,
    /// WebSocket subscribers.
    #[arg(long, default_value_t = 100)]
    ws: usize,
    /// SSE subscribers.
    #[arg(long, default_value_t = 0)]
    sse: usize,
    /// Distinct users the subscribers belong to (registered by the tester). The server's
    /// TIDINGS_MAX_CONNECTIONS_PER_USER must allow subscribers / users each.
    #[arg(long, default_value_t = 50)]
    users: usize,
    /// Subscribers connected per second.
    #[arg(long, default_value_t = 2000)]
    ramp: u32,
    /// Writes per second during the measurement.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// How long to write.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Products the writes spread over.
    #[arg(long, default_value_t = 20)]
    products: usize,
    /// The server's PID, to sample its memory (PSS) and report it per connection.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Write every figure to this JSON file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    #[arg(long, value_enum, default_value = "fanout")]
    mode: Mode,
    /// For testing the tester: the first subscriber drops one event on purpose.
    #[arg(long, hide = true)]
    inject_loss: bool,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(summary) if summary.clean() => std::process::ExitCode::SUCCESS,
        Ok(_) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("tidings-loadtest: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<Summary> {
    let Mode::Fanout = args.mode;
    let base = args.base_url.trim_end_matches('/').to_owned();
    let api = api::Api::new(&base)?;
    let admin = api.login(&args.admin_email, &args.admin_password).await?;
    let products = api.create_products(&admin, args.products).await?;
    let tokens = api.users(args.users.max(1)).await?;
    eprintln!(
        "{} products and {} users ready",
        products.len(),
        tokens.len()
    );

    let memory_before = args.server_pid.and_then(memory::pss_kib);
    let shared = Arc::new(Shared::new());
    let total = args.ws + args.sse;
    let started = Instant::now();
    let mut subscribers = Vec::with_capacity(total);
    let pause = Duration::from_secs_f64(1.0 / f64::from(args.ramp.max(1)));
    for i in 0..total {
        let transport = if i < args.ws {
            Transport::WebSocket
        } else {
            Transport::Sse
        };
        let token = tokens[i % tokens.len()].clone();
        let inject = args.inject_loss && i == 0;
        subscribers.push(tokio::spawn(subscriber::run(
            base.clone(),
            token,
            transport,
            shared.clone(),
            inject,
        )));
        if i % 100 == 99 {
            tokio::time::sleep(pause * 100).await;
        }
    }
    shared.wait_ready(total).await?;
    let connect_time = started.elapsed();
    let memory_after = args.server_pid.and_then(memory::pss_kib);
    eprintln!(
        "{total} subscribers live in {connect_time:.1?}; writing {} per second for {:?}",
        args.rate, args.duration
    );

    let progress = report::progress(shared.clone(), total);
    let cpu_before = memory::own_cpu_seconds();
    let measuring = Instant::now();
    let writes =
        api::write_stock(&api, &admin, &products, args.rate, args.duration, &shared).await?;
    let expected = writes.len() as u64;
    // Let what is in flight arrive.
    let drain_deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < drain_deadline && !shared.all_received(total, expected) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tester_cpu = cpu_before
        .zip(memory::own_cpu_seconds())
        .map(|(before, after)| (after - before) / measuring.elapsed().as_secs_f64());
    progress.abort();
    shared.stop.store(true, Ordering::Release);
    let mut tallies = Vec::with_capacity(total);
    for subscriber in subscribers {
        tallies.push(subscriber.await?);
    }
    let summary = report::summarize(report::Inputs {
        tallies,
        expected_per_subscriber: expected,
        expected_hash: api::hash_all(&writes),
        write_latency: &writes,
        shared: &shared,
        duration: args.duration,
        connect_time,
        memory: memory_before.zip(memory_after),
        subscribers: total,
        tester_cpu,
    });
    summary.print();
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)?;
    }
    Ok(summary)
}
