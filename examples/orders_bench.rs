//! Orders per second and their latency against a running Tidings, over HTTP.
//!
//! It creates its own products (with stock to spare) and customers, then keeps
//! `--concurrency` orders in flight for `--duration`, each of 1 to 3 random products, and
//! prints the rate and the latency percentiles. `bench/orders.sh` runs it the standard way.
//! The server must run with `TIDINGS_AUTH_RATE_PER_IP=0` (it registers many users from one
//! address).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::{Value, json};

#[derive(Parser, Debug)]
struct Args {
    /// The server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    base_url: String,
    /// An admin (or staff) account that may create products.
    #[arg(long, env = "BENCH_ADMIN_EMAIL")]
    admin_email: String,
    #[arg(long, env = "BENCH_ADMIN_PASSWORD", hide_env_values = true)]
    admin_password: String,
    /// Distinct customers placing orders.
    #[arg(long, default_value_t = 64)]
    customers: usize,
    /// Products to order from.
    #[arg(long, default_value_t = 200)]
    products: usize,
    /// Orders in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// How long to measure, after a warm-up of a tenth of it.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
}

async fn login(
    client: &reqwest::Client,
    base: &str,
    email: &str,
    password: &str,
) -> anyhow::Result<String> {
    let response = client
        .post(format!("{base}/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "login of {email} failed: {}",
        response.text().await?
    );
    let tokens: Value = response.json().await?;
    Ok(tokens["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let base = args.base_url.trim_end_matches('/').to_owned();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency * 2)
        .build()?;
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();

    let admin = login(&client, &base, &args.admin_email, &args.admin_password).await?;
    let mut products = Vec::with_capacity(args.products);
    for i in 0..args.products {
        let body = json!({"sku": format!("BENCH-{run}-{i}"), "name": format!("Bench product {i}"),
                          "unit_amount": 100 + i as i64, "currency": "EUR", "stock": 1_000_000_000i64});
        let response = client
            .post(format!("{base}/v1/products"))
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "creating a product failed: {}",
            response.text().await?
        );
        let product: Value = response.json().await?;
        products.push(product["id"].as_str().unwrap_or_default().to_owned());
    }
    let password = format!("bench password {run}");
    let mut tokens = Vec::with_capacity(args.customers);
    for i in 0..args.customers {
        let email = format!("bench-{run}-{i}@example.com");
        let response = client
            .post(format!("{base}/v1/auth/register"))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "registering failed: {}",
            response.text().await?
        );
        tokens.push(login(&client, &base, &email, &password).await?);
    }
    eprintln!(
        "{} products, {} customers ready; warming up",
        products.len(),
        tokens.len()
    );

    let products = Arc::new(products);
    let tokens = Arc::new(tokens);
    let warmup_end = Instant::now() + args.duration / 10;
    let end = warmup_end + args.duration;
    let failures = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for w in 0..args.concurrency {
        let (client, base, products, tokens, failures) = (
            client.clone(),
            base.clone(),
            products.clone(),
            tokens.clone(),
            failures.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
            let mut n: u64 = w as u64;
            loop {
                let now = Instant::now();
                if now >= end {
                    return histogram;
                }
                // A cheap deterministic spread over products and customers.
                n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let lines = 1 + (n >> 60) as usize % 3;
                let items: Vec<Value> = (0..lines)
                    .map(|k| json!({"product_id": products[((n >> 20) as usize + k * 7919) % products.len()], "quantity": 1}))
                    .collect();
                let token = &tokens[(n >> 40) as usize % tokens.len()];
                let started = Instant::now();
                let response = client.post(format!("{base}/v1/orders")).bearer_auth(token).json(&json!({"items": items})).send().await;
                let ok = matches!(&response, Ok(r) if r.status().as_u16() == 201);
                if let Ok(r) = response {
                    let _ = r.bytes().await;
                }
                if started >= warmup_end {
                    if ok {
                        histogram.record(started.elapsed().as_micros() as u64).ok();
                    } else {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for worker in workers {
        total.add(worker.await?)?;
    }
    let secs = args.duration.as_secs_f64();
    let ms = |q: f64| total.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "orders: {} in {:.0} s = {:.0}/s, failed {}; latency ms p50 {:.1} p90 {:.1} p99 {:.1} p99.9 {:.1} max {:.1} (concurrency {})",
        total.len(),
        secs,
        total.len() as f64 / secs,
        failures.load(Ordering::Relaxed),
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        total.max() as f64 / 1000.0,
        args.concurrency
    );
    Ok(())
}
