//! Pushes per second and their latency from commit to the push service, against a running
//! Tidings, through a Web Push receiver of its own.
//!
//! It registers a Web Push subscription for each user of `--users` (lines of
//! `tidings user tokens`: `<id> <email> <token>`) at its receiver, then has the admin
//! broadcast `--rounds` notifications to all of them (nobody is connected, so each is
//! pushed at once), and waits for every push. The receiver decrypts each message with the
//! subscription's key (RFC 8291, written here, not the server's code) and takes the
//! event's commit time (`at`) from it. It prints pushes/s, the latency percentiles, and,
//! given `--server-pid`, the server's CPU time per push. `bench/push.sh` runs it the
//! standard way; the server needs `TIDINGS_PUSH_ALLOW_PRIVATE_ENDPOINTS=true` (the
//! receiver is on 127.0.0.1) and a `TIDINGS_PUSH_DEVICE_RATE` above `--rounds`.
//!
//! With `--steady <pushes/s>` it instead keeps that rate of pushes going for `--duration`
//! (for the fan-out benchmark with push traffic beside it).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aes_gcm::aead::{Aead, KeyInit};
use axum::body::Bytes;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Parser;
use hdrhistogram::Histogram;
use hkdf::Hkdf;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::{PublicKey, SecretKey};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;

#[derive(Parser, Debug)]
struct Args {
    /// The server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    base_url: String,
    /// `tidings user tokens` output for the users who receive the pushes.
    #[arg(long)]
    users: std::path::PathBuf,
    /// `tidings user tokens --role admin` output (its first line broadcasts).
    #[arg(long)]
    admin: std::path::PathBuf,
    /// Notifications per user: pushes = users × rounds.
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Instead of a burst: this many pushes a second, for `--duration`.
    #[arg(long)]
    steady: Option<f64>,
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// The server's process, for its CPU time.
    #[arg(long)]
    server_pid: Option<u32>,
}

/// A subscription's private side.
struct Subscriber {
    secret: SecretKey,
    auth: [u8; 16],
}

impl Subscriber {
    fn new(n: usize) -> Subscriber {
        let mut bytes = [7u8; 32];
        bytes[..8].copy_from_slice(&(n as u64 + 1).to_be_bytes());
        Subscriber {
            secret: SecretKey::from_slice(&bytes).expect("a valid scalar"),
            auth: [(n % 251) as u8; 16],
        }
    }

    fn decrypt(&self, body: &[u8]) -> Option<Vec<u8>> {
        let salt = body.get(..16)?;
        let id_len = *body.get(20)? as usize;
        let as_public_bytes = body.get(21..21 + id_len)?;
        let ciphertext = body.get(21 + id_len..)?;
        let as_public = PublicKey::from_sec1_bytes(as_public_bytes).ok()?;
        let shared =
            p256::ecdh::diffie_hellman(self.secret.to_nonzero_scalar(), as_public.as_affine());
        let ua_public = self.secret.public_key().to_encoded_point(false);
        let mut info = b"WebPush: info\0".to_vec();
        info.extend_from_slice(ua_public.as_bytes());
        info.extend_from_slice(as_public_bytes);
        let mut ikm = [0u8; 32];
        Hkdf::<Sha256>::new(Some(&self.auth), shared.raw_secret_bytes())
            .expand(&info, &mut ikm)
            .ok()?;
        let prk = Hkdf::<Sha256>::new(Some(salt), &ikm);
        let (mut cek, mut nonce) = ([0u8; 16], [0u8; 12]);
        prk.expand(b"Content-Encoding: aes128gcm\0", &mut cek)
            .ok()?;
        prk.expand(b"Content-Encoding: nonce\0", &mut nonce).ok()?;
        let mut plain = aes_gcm::Aes128Gcm::new(&cek.into())
            .decrypt(&nonce.into(), ciphertext)
            .ok()?;
        while plain.last() == Some(&0) {
            plain.pop();
        }
        (plain.pop() == Some(2)).then_some(plain)
    }
}

/// One push as the receiver saw it: which subscription, when, and its body.
struct Arrival {
    subscriber: usize,
    at: chrono::DateTime<chrono::Utc>,
    body: Bytes,
}

fn read_users(path: &std::path::Path) -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let id = parts.next()?.to_owned();
            let _email = parts.next()?;
            Some((id, parts.next()?.to_owned()))
        })
        .collect())
}

/// The process's CPU time (user + system), from /proc.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let base = args.base_url.trim_end_matches('/').to_owned();
    let users = read_users(&args.users)?;
    let admin = read_users(&args.admin)?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no admin token"))?
        .1;
    anyhow::ensure!(!users.is_empty(), "no users");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;

    // The receiver: every POST /push/<n> goes to the measuring loop.
    let (tx, mut arrivals) = mpsc::unbounded_channel::<Arrival>();
    let router = axum::Router::new().route(
        "/push/{n}",
        axum::routing::post(
            move |axum::extract::Path(n): axum::extract::Path<usize>, body: Bytes| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(Arrival {
                        subscriber: n,
                        at: chrono::Utc::now(),
                        body,
                    });
                    axum::http::StatusCode::CREATED
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let receiver = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, router).await });

    let subscribers: Arc<Vec<Subscriber>> =
        Arc::new((0..users.len()).map(Subscriber::new).collect());
    eprintln!("registering {} subscriptions…", users.len());
    for (n, (_, token)) in users.iter().enumerate() {
        let s = &subscribers[n];
        let body = json!({
            "kind": "webpush",
            "endpoint": format!("{receiver}/push/{n}"),
            "keys": {
                "p256dh": URL_SAFE_NO_PAD.encode(s.secret.public_key().to_encoded_point(false).as_bytes()),
                "auth": URL_SAFE_NO_PAD.encode(s.auth),
            },
        });
        let response = client
            .post(format!("{base}/v1/me/devices"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "registering a device: {}",
            response.text().await?
        );
    }

    let ids: Vec<String> = users.iter().map(|(id, _)| id.clone()).collect();
    let broadcast = |round: usize, to: Vec<String>| {
        let client = client.clone();
        let base = base.clone();
        let admin = admin.clone();
        async move {
            for chunk in to.chunks(1000) {
                let response = client
                    .post(format!("{base}/v1/notifications/broadcast"))
                    .bearer_auth(&admin)
                    .json(&json!({"title": format!("Round {round}"), "body": "A push benchmark.", "audience": chunk}))
                    .send()
                    .await?;
                anyhow::ensure!(
                    response.status().is_success(),
                    "broadcast: {}",
                    response.text().await?
                );
            }
            anyhow::Ok(())
        }
    };

    let cpu_before = args.server_pid.and_then(cpu_seconds);
    let started = Instant::now();
    let expected = match args.steady {
        None => {
            for round in 0..args.rounds {
                broadcast(round, ids.clone()).await?;
            }
            users.len() * args.rounds
        }
        Some(rate) => {
            // A broadcast to `batch` users every `every`: `rate` pushes a second.
            let every = Duration::from_millis(100);
            let batch = ((rate * every.as_secs_f64()).round() as usize).clamp(1, ids.len());
            let mut sent = 0;
            let mut tick = tokio::time::interval(every);
            let mut round = 0;
            while started.elapsed() < args.duration {
                tick.tick().await;
                let to: Vec<String> = (0..batch)
                    .map(|i| ids[(round * batch + i) % ids.len()].clone())
                    .collect();
                broadcast(round, to).await?;
                sent += batch;
                round += 1;
            }
            sent
        }
    };

    let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut per_subscriber: HashMap<usize, usize> = HashMap::new();
    let mut first = None;
    let mut last = started;
    let mut undecryptable = 0;
    let mut received = 0;
    while received < expected {
        let arrival = tokio::time::timeout(Duration::from_secs(60), arrivals.recv())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "{received} of {expected} pushes arrived; the rest did not within 60 s"
                )
            })?
            .ok_or_else(|| anyhow::anyhow!("the receiver stopped"))?;
        received += 1;
        let now = Instant::now();
        first.get_or_insert(now);
        last = now;
        *per_subscriber.entry(arrival.subscriber).or_default() += 1;
        let Some(plain) = subscribers
            .get(arrival.subscriber)
            .and_then(|s| s.decrypt(&arrival.body))
        else {
            undecryptable += 1;
            continue;
        };
        let event: Value = serde_json::from_slice(&plain)?;
        let committed: chrono::DateTime<chrono::Utc> =
            event["at"].as_str().unwrap_or_default().parse()?;
        let micros = (arrival.at - committed)
            .num_microseconds()
            .unwrap_or(0)
            .max(1) as u64;
        latency.record(micros)?;
    }
    let cpu = match (args.server_pid.and_then(cpu_seconds), cpu_before) {
        (Some(after), Some(before)) => Some(after - before),
        _ => None,
    };
    let span = last.duration_since(started).as_secs_f64();
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{received} pushes to {} subscriptions in {span:.2} s: {:.0} pushes/s; \
         commit → push service p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {undecryptable} not decryptable",
        per_subscriber.len(),
        received as f64 / span,
        ms(0.5),
        ms(0.99),
        latency.max() as f64 / 1000.0,
    );
    if let Some(cpu) = cpu {
        println!(
            "server CPU: {cpu:.2} s, {:.0} µs per push, {:.0} pushes per core-second",
            cpu * 1e6 / received as f64,
            received as f64 / cpu
        );
    }
    anyhow::ensure!(undecryptable == 0, "some pushes did not decrypt");
    Ok(())
}
