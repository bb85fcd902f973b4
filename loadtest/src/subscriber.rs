//! One subscriber: a WebSocket or an SSE stream of `inventory`, counting and timing the
//! events the tester's writes cause.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Deserialize;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::api::key;

/// Latency histograms are sharded so subscribers rarely wait on each other.
const SHARDS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[serde(rename = "ws")]
    WebSocket,
    Sse,
}

/// What every subscriber adds to.
pub struct Shared {
    ready: AtomicUsize,
    failed: AtomicUsize,
    ready_changed: Notify,
    pub stop: AtomicBool,
    /// Matching events received, over all subscribers.
    pub received: AtomicU64,
    pub writes_started: AtomicU64,
    /// Commit-to-receipt latency in microseconds.
    histograms: Vec<Mutex<Histogram<u64>>>,
    next_shard: AtomicUsize,
}

impl Shared {
    pub fn new() -> Shared {
        Shared {
            ready: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            ready_changed: Notify::new(),
            stop: AtomicBool::new(false),
            received: AtomicU64::new(0),
            writes_started: AtomicU64::new(0),
            histograms: (0..SHARDS).map(|_| Mutex::new(new_histogram())).collect(),
            next_shard: AtomicUsize::new(0),
        }
    }

    fn mark(&self, ready: bool) {
        if ready { &self.ready } else { &self.failed }.fetch_add(1, Ordering::AcqRel);
        self.ready_changed.notify_waiters();
    }

    /// Waits until every subscriber is live (or has failed, which is an error).
    pub async fn wait_ready(&self, total: usize) -> anyhow::Result<()> {
        loop {
            let notified = self.ready_changed.notified();
            let (ready, failed) = (
                self.ready.load(Ordering::Acquire),
                self.failed.load(Ordering::Acquire),
            );
            anyhow::ensure!(
                failed == 0,
                "{failed} of {total} subscribers could not connect"
            );
            if ready >= total {
                return Ok(());
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
        }
    }

    pub fn all_received(&self, subscribers: usize, expected: u64) -> bool {
        self.received.load(Ordering::Acquire) >= subscribers as u64 * expected
    }

    /// Every shard merged.
    pub fn latency(&self) -> Histogram<u64> {
        let mut total = new_histogram();
        for shard in &self.histograms {
            total
                .add(&*shard.lock().expect("histogram lock"))
                .expect("same bounds");
        }
        total
    }
}

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds")
}

/// What one subscriber saw.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Tally {
    pub transport: Transport,
    /// Events caused by the tester's writes.
    pub received: u64,
    /// The checksum of their keys, to compare with what was written.
    #[serde(skip)]
    pub checksum: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Why the connection ended before the tester stopped it, if it did.
    pub ended: Option<String>,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    seq: i64,
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(borrow)]
    at: &'a str,
    #[serde(borrow)]
    data: StockChange<'a>,
}

#[derive(Deserialize)]
struct StockChange<'a> {
    #[serde(default, borrow)]
    product_id: Option<&'a str>,
    #[serde(default)]
    version: Option<i64>,
}

struct Counter<'s> {
    shared: &'s Shared,
    shard: usize,
    tally: Tally,
    last_seq: i64,
    drop_one: bool,
}

impl Counter<'_> {
    fn event(&mut self, text: &str) {
        let Ok(envelope) = serde_json::from_str::<Envelope>(text) else {
            return;
        };
        if envelope.seq == self.last_seq {
            self.tally.duplicates += 1;
            return;
        }
        if envelope.seq < self.last_seq {
            self.tally.out_of_order += 1;
            return;
        }
        self.last_seq = envelope.seq;
        if envelope.kind != "inventory.stock_changed" {
            return;
        }
        let (Some(product), Some(version)) = (envelope.data.product_id, envelope.data.version)
        else {
            return;
        };
        if std::mem::take(&mut self.drop_one) {
            return;
        }
        self.tally.received += 1;
        self.tally.checksum = self.tally.checksum.wrapping_add(key(product, version));
        self.shared.received.fetch_add(1, Ordering::Relaxed);
        if let Ok(at) = chrono::DateTime::parse_from_rfc3339(envelope.at) {
            let micros = (chrono::Utc::now() - at.to_utc())
                .num_microseconds()
                .unwrap_or(0)
                .max(1) as u64;
            let _ = self.shared.histograms[self.shard]
                .lock()
                .expect("histogram lock")
                .record(micros);
        }
    }
}

/// Runs one subscriber until the tester stops; what it counted.
pub async fn run(
    base: String,
    token: String,
    transport: Transport,
    shared: std::sync::Arc<Shared>,
    drop_one: bool,
) -> Tally {
    let shard = shared.next_shard.fetch_add(1, Ordering::Relaxed) % SHARDS;
    let mut counter = Counter {
        shared: &shared,
        shard,
        tally: Tally {
            transport,
            received: 0,
            checksum: 0,
            duplicates: 0,
            out_of_order: 0,
            ended: None,
        },
        last_seq: 0,
        drop_one,
    };
    let ended = match transport {
        Transport::WebSocket => websocket(&base, &token, &mut counter).await,
        Transport::Sse => sse(&base, &token, &mut counter).await,
    };
    if let Err(e) = ended {
        counter.tally.ended = Some(e.to_string());
    }
    counter.tally
}

async fn websocket(base: &str, token: &str, counter: &mut Counter<'_>) -> anyhow::Result<()> {
    let url = format!("{}/v1/ws", base.replacen("http", "ws", 1));
    let mut request = url.into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let connected = tokio_tungstenite::connect_async(request).await;
    let mut socket = match connected {
        Ok((socket, _)) => socket,
        Err(e) => {
            counter.shared.mark(false);
            return Err(e.into());
        }
    };
    socket
        .send(Message::text(
            r#"{"type":"subscribe","topics":["inventory"]}"#,
        ))
        .await?;
    let mut ready = false;
    loop {
        let next = tokio::time::timeout(Duration::from_millis(200), socket.next()).await;
        if counter.shared.stop.load(Ordering::Acquire) {
            return Ok(());
        }
        let Ok(message) = next else { continue };
        match message {
            Some(Ok(Message::Text(text))) => {
                if !ready {
                    if text.contains(r#""type":"subscribed""#) {
                        ready = true;
                        counter.shared.mark(true);
                    }
                    continue;
                }
                counter.event(&text);
            }
            Some(Ok(Message::Close(frame))) => {
                if !ready {
                    counter.shared.mark(false);
                }
                anyhow::bail!("closed by the server: {frame:?}");
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => anyhow::bail!("{e}"),
            None => anyhow::bail!("the connection ended"),
        }
    }
}

async fn sse(base: &str, token: &str, counter: &mut Counter<'_>) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let response = client
        .get(format!("{base}/v1/events?topics=inventory"))
        .bearer_auth(token)
        .send()
        .await;
    let response = match response {
        Ok(response) if response.status().is_success() => response,
        Ok(response) => {
            counter.shared.mark(false);
            anyhow::bail!("the stream was refused: {}", response.status());
        }
        Err(e) => {
            counter.shared.mark(false);
            return Err(e.into());
        }
    };
    // Live delivery is registered before the server answers.
    counter.shared.mark(true);
    let mut events = response.bytes_stream().eventsource();
    loop {
        let next = tokio::time::timeout(Duration::from_millis(200), events.next()).await;
        if counter.shared.stop.load(Ordering::Acquire) {
            return Ok(());
        }
        let Ok(event) = next else { continue };
        match event {
            Some(Ok(event)) if !event.data.is_empty() => counter.event(&event.data),
            Some(Ok(_)) => {}
            Some(Err(e)) => anyhow::bail!("{e}"),
            None => anyhow::bail!("the stream ended"),
        }
    }
}
