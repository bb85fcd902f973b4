//! The REST side: accounts, products, and the write workload.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::subscriber::Shared;

/// A Tidings server's REST API.
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    base: String,
}

/// One write the tester made, and the event it must produce.
#[derive(Debug, Clone)]
pub struct Write {
    /// `product_id` and `version` of the `inventory.stock_changed` event it causes.
    pub key: u64,
    pub latency: Duration,
}

/// The identity of a stock change: its product and the version it made.
pub fn key(product_id: &str, version: i64) -> u64 {
    // FNV-1a: stable, fast, and spreads well enough for a checksum of keys.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in product_id.bytes().chain(version.to_le_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The checksum of a set of keys: a sum, so order does not matter.
pub fn hash_all(writes: &[Write]) -> u64 {
    writes.iter().fold(0u64, |sum, w| sum.wrapping_add(w.key))
}

impl Api {
    pub fn new(base: &str) -> anyhow::Result<Api> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Api {
            client,
            base: base.to_owned(),
        })
    }

    pub async fn login(&self, email: &str, password: &str) -> anyhow::Result<String> {
        let response = self
            .client
            .post(format!("{}/v1/auth/login", self.base))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        anyhow::ensure!(
            response.status().is_success(),
            "logging in as {email} failed: {}",
            response.text().await?
        );
        let tokens: Value = response.json().await?;
        Ok(tokens["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    pub async fn create_products(&self, token: &str, count: usize) -> anyhow::Result<Vec<String>> {
        let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let mut ids = Vec::with_capacity(count);
        for i in 0..count {
            let body = json!({"sku": format!("LT-{run}-{i}"), "name": format!("Load test {i}"),
                              "unit_amount": 100, "currency": "EUR", "stock": 1_000_000_000i64});
            let response = self
                .client
                .post(format!("{}/v1/products", self.base))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await?;
            anyhow::ensure!(
                response.status().is_success(),
                "creating a product failed: {}",
                response.text().await?
            );
            let product: Value = response.json().await?;
            ids.push(product["id"].as_str().unwrap_or_default().to_owned());
        }
        Ok(ids)
    }

    /// Registers `count` users and logs them in; their access tokens.
    pub async fn users(&self, count: usize) -> anyhow::Result<Vec<String>> {
        let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        let password = format!("load test password {run}");
        let tokens = futures::stream::iter(0..count)
            .map(|i| {
                let (api, password, email) = (
                    self.clone(),
                    password.clone(),
                    format!("lt-{run}-{i}@example.com"),
                );
                async move {
                    let response = api
                        .client
                        .post(format!("{}/v1/auth/register", api.base))
                        .json(&json!({"email": email, "password": password}))
                        .send()
                        .await?;
                    anyhow::ensure!(
                        response.status().is_success(),
                        "registering failed (run the server with TIDINGS_AUTH_RATE_PER_IP=0): {}",
                        response.text().await?
                    );
                    api.login(&email, &password).await
                }
            })
            .buffer_unordered(8)
            .collect::<Vec<_>>()
            .await;
        tokens.into_iter().collect()
    }
}

/// Adjusts stock at `rate` per second for `duration`, spread over the products; returns
/// each write with the event it must cause.
pub async fn write_stock(
    api: &Api,
    token: &str,
    products: &[String],
    rate: f64,
    duration: Duration,
    shared: &Arc<Shared>,
) -> anyhow::Result<Vec<Write>> {
    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let end = Instant::now() + duration;
    let mut in_flight = Vec::new();
    let mut n = 0usize;
    while Instant::now() < end {
        ticks.tick().await;
        let product = products[n % products.len()].clone();
        n += 1;
        let (client, url, token) = (
            api.client.clone(),
            format!("{}/v1/products/{product}/stock-adjustments", api.base),
            token.to_owned(),
        );
        shared
            .writes_started
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        in_flight.push(tokio::spawn(async move {
            let started = Instant::now();
            let response = client
                .post(url)
                .bearer_auth(token)
                .json(&json!({"delta": 1, "reason": "load test"}))
                .send()
                .await?;
            anyhow::ensure!(
                response.status().is_success(),
                "a stock adjustment failed: {}",
                response.status()
            );
            let body: Value = response.json().await?;
            Ok(Write {
                key: key(&product, body["version"].as_i64().unwrap_or_default()),
                latency: started.elapsed(),
            })
        }));
    }
    let mut writes = Vec::with_capacity(in_flight.len());
    for write in in_flight {
        writes.push(write.await??);
    }
    Ok(writes)
}
