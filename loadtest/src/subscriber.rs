//! One subscriber: a WebSocket or an SSE stream that connects, counts and times what it
//! receives, and reconnects where it left off when it is dropped or closed.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::envelope::{self, fields, leading_integer};
use crate::net::{self, Endpoint};
use crate::probe::Probe;
use crate::{sse, ws};

/// Tries at the first connection before a subscriber gives up (reconnects keep trying).
const FIRST_CONNECT_TRIES: u32 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Ws,
    Sse,
}

/// The kinds of event whose every delivery the tester checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// `inventory.stock_changed`; in generic mode, every published message.
    Inventory = 0,
    /// `order.*`.
    Orders = 1,
    /// `notification.created`.
    Notifications = 2,
}

/// How many of a class of event arrived, and a checksum of which: the sum of their keys,
/// so order does not matter and anything missing or foreign changes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sum {
    pub count: u64,
    pub checksum: u64,
}

impl Sum {
    pub fn add(&mut self, key: u64) {
        self.count += 1;
        self.checksum = self.checksum.wrapping_add(key);
    }

    pub fn merge(&mut self, other: Sum) {
        self.count += other.count;
        self.checksum = self.checksum.wrapping_add(other.checksum);
    }
}

/// The identity of an event: FNV-1a over an id and a number (a version, or a publish
/// counter); stable, fast, and spread well enough for a sum of keys.
pub fn key(id: &[u8], n: i64) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in id.iter().chain(&n.to_le_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// What one subscriber saw over the whole run, reconnections included.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Tally {
    /// Per [`Class`].
    pub classes: [Sum; 3],
    /// Events with a seq (or publish counter) equal to the last one's.
    pub duplicates: u64,
    /// Events with a seq lower than one already received.
    pub out_of_order: u64,
    /// Events of kinds the tester does not check (`inventory.low_stock`, …).
    pub other: u64,
    pub reconnects: u64,
    /// `reset` messages: the server could not resume.
    pub resets: u64,
    /// Why the connection last ended or failed, if it did.
    pub last_error: Option<String>,
}

/// Where subscribers connect and how they read what arrives.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Target {
    /// A Tidings server at this base URL.
    Tidings { base: String },
    /// Any server: the publish timestamp and counter are found after these keys.
    Generic {
        ws_url: Option<String>,
        sse_url: Option<String>,
        /// Sent as a text message once a WebSocket is open.
        ws_subscribe: Option<String>,
        ts_key: String,
        n_key: Option<String>,
    },
}

/// One subscriber to open.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    pub transport: Transport,
    pub token: Option<String>,
    pub topics: Vec<String>,
    /// The user it belongs to and whether that user is staff: what it should receive.
    pub user_id: Option<String>,
    pub staff: bool,
}

/// What the subscribers of one worker share.
pub struct Context {
    pub target: Target,
    pub ws: Option<Endpoint>,
    pub sse: Option<Endpoint>,
    pub source_addrs: Vec<IpAddr>,
    pub probe: Arc<Probe>,
    pub stop: CancellationToken,
}

/// Why a session ended.
enum End {
    Stopped,
    Dropped,
    Closed(String),
}

/// The keys after which a generic message holds its publish time and counter.
type GenericKeys = (Vec<u8>, Option<Vec<u8>>);

/// Counts and times the messages of one subscriber.
struct Counter {
    generic: Option<GenericKeys>,
    /// Which latency shard this subscriber records into.
    shard: usize,
    tally: Tally,
    last_seq: i64,
    /// Latencies of the current read, recorded together.
    latencies: Vec<u64>,
    /// For testing the tester: skip the first checked event.
    skip_one: bool,
    /// After a drop: the seq to reach again before this subscriber counts as recovered.
    recovering: bool,
    /// Set when a WebSocket subscription is confirmed.
    subscribed: bool,
}

impl Counter {
    fn message(&mut self, text: &[u8], now: i64, probe: &Probe) {
        if let Some(keys) = self.generic.take() {
            self.generic_message(text, now, probe, &keys);
            self.generic = Some(keys);
            return;
        }
        let Some(event) = envelope::parse(text) else {
            return self.control(text);
        };
        self.latencies
            .push(now.saturating_sub(event.at_micros).max(1) as u64);
        probe.deliveries.fetch_add(1, Ordering::Relaxed);
        if event.seq == self.last_seq {
            self.tally.duplicates += 1;
            return;
        }
        if event.seq < self.last_seq {
            self.tally.out_of_order += 1;
            return;
        }
        self.last_seq = event.seq;
        probe.high_seq.fetch_max(event.seq, Ordering::Relaxed);
        if self.recovering && event.seq >= probe.watermark.load(Ordering::Relaxed) {
            self.recovering = false;
            probe.mark_recovered();
        }
        let counted = match event.kind {
            b"inventory.stock_changed" => {
                let [product, version] = fields(event.data, [b"product_id", b"version"]);
                product
                    .zip(version)
                    .map(|(p, v)| (Class::Inventory, key(p, number(v))))
            }
            b"notification.created" => {
                let [body] = fields(event.data, [b"body"]);
                body.map(|b| (Class::Notifications, key(b, 0)))
            }
            kind if kind.starts_with(b"order.") => {
                let [order_id, id, version] = fields(event.data, [b"order_id", b"id", b"version"]);
                order_id
                    .or(id)
                    .zip(version)
                    .map(|(o, v)| (Class::Orders, key(o, number(v))))
            }
            _ => None,
        };
        match counted {
            Some(_) if std::mem::take(&mut self.skip_one) => {}
            Some((class, k)) => self.tally.classes[class as usize].add(k),
            None => self.tally.other += 1,
        }
    }

    /// A message from any server: the publish time and counter after their keys.
    fn generic_message(&mut self, text: &[u8], now: i64, probe: &Probe, keys: &GenericKeys) {
        let (ts_key, n_key) = keys;
        let Some(ts) = number_after(text, ts_key) else {
            self.tally.other += 1;
            return;
        };
        self.latencies.push(now.saturating_sub(ts).max(1) as u64);
        probe.deliveries.fetch_add(1, Ordering::Relaxed);
        if std::mem::take(&mut self.recovering) {
            probe.mark_recovered();
        }
        let n = n_key
            .as_ref()
            .and_then(|k| number_after(text, k))
            .unwrap_or(ts);
        if n == self.last_seq {
            self.tally.duplicates += 1;
        } else if n < self.last_seq {
            self.tally.out_of_order += 1;
        } else if !std::mem::take(&mut self.skip_one) {
            self.last_seq = n;
            self.tally.classes[Class::Inventory as usize].add(key(b"", n));
        }
    }

    /// A Tidings control message: `subscribed`, `reset`, `error`, `pong` (their keys come
    /// in any order).
    fn control(&mut self, text: &[u8]) {
        let [kind, seq] = fields(text, [b"type", b"seq"]);
        match kind {
            Some(b"subscribed") => {
                self.subscribed = true;
                // Live events are those after this seq; it is where a first resume starts.
                if self.last_seq == 0 {
                    self.last_seq = seq.map_or(0, number);
                }
            }
            Some(b"reset") => self.tally.resets += 1,
            Some(b"error") => {
                self.tally.last_error = Some(String::from_utf8_lossy(text).into_owned());
            }
            _ => {}
        }
    }
}

fn number(bytes: &[u8]) -> i64 {
    leading_integer(bytes).map_or(0, |(n, _)| n)
}

/// The integer after the first `key` in `text`, past any quotes, colons, backslashes or
/// spaces between them (so `"ts":"17…"` and an escaped `\"ts\":17…` both work).
pub fn number_after(text: &[u8], key: &[u8]) -> Option<i64> {
    let mut from = 0;
    while let Some(found) = memchr::memmem::find(&text[from..], key) {
        let mut i = from + found + key.len();
        let start = i;
        while text
            .get(i)
            .is_some_and(|b| matches!(b, b'"' | b':' | b'\\' | b' ' | b'='))
        {
            i += 1;
        }
        if i > start
            && let Some((n, _)) = leading_integer(&text[i..])
        {
            return Some(n);
        }
        from = from + found + 1;
    }
    None
}

/// Runs one subscriber until the worker stops it; what it counted. `leave` is cancelled to
/// drop it (the storm), after which it reconnects and resumes.
pub async fn run(
    context: Arc<Context>,
    index: usize,
    spec: Spec,
    leave: CancellationToken,
    skip_one: bool,
) -> Tally {
    let probe = &context.probe;
    let generic = match &context.target {
        Target::Generic { ts_key, n_key, .. } => Some((
            ts_key.as_bytes().to_vec(),
            n_key.as_ref().map(|k| k.as_bytes().to_vec()),
        )),
        Target::Tidings { .. } => None,
    };
    let mut counter = Counter {
        generic,
        shard: index,
        tally: Tally::default(),
        last_seq: 0,
        latencies: Vec::with_capacity(64),
        skip_one,
        recovering: false,
        subscribed: false,
    };
    let source = (!context.source_addrs.is_empty())
        .then(|| context.source_addrs[index % context.source_addrs.len()]);
    let mut leave = leave;
    let mut ever_ready = false;
    let mut failures = 0;
    loop {
        let started = Instant::now();
        let session = tokio::select! {
            biased;
            () = context.stop.cancelled() => return counter.tally,
            session = open(&context, &spec, source, &mut counter) => session,
        };
        let (stream, buf, kind) = match session {
            Ok(session) => session,
            Err(e) => {
                probe.connect_errors.fetch_add(1, Ordering::Relaxed);
                counter.tally.last_error = Some(format!("{e:#}"));
                failures += 1;
                if !ever_ready && failures >= FIRST_CONNECT_TRIES {
                    probe.give_up(format!("{e:#}"));
                    return counter.tally;
                }
                let backoff = Duration::from_millis(100 * u64::from(failures.min(20)));
                tokio::select! {
                    () = context.stop.cancelled() => return counter.tally,
                    () = tokio::time::sleep(backoff) => continue,
                }
            }
        };
        failures = 0;
        probe.record_connect(started.elapsed().as_micros() as u64);
        probe.connections.fetch_add(1, Ordering::Relaxed);
        if !ever_ready {
            ever_ready = true;
            probe.mark_ready(true);
        }
        let end = read(&context, stream, buf, kind, &leave, &mut counter).await;
        probe.connections.fetch_sub(1, Ordering::Relaxed);
        match end {
            End::Stopped => return counter.tally,
            End::Dropped => {
                counter.recovering = true;
                leave = context.stop.child_token();
            }
            End::Closed(why) => {
                counter.tally.last_error = Some(why);
                tokio::select! {
                    () = context.stop.cancelled() => return counter.tally,
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
        counter.tally.reconnects += 1;
    }
}

/// An open stream, what was read past its response head, and its transport.
type Session = (TcpStream, BytesMut, Reader);

enum Reader {
    Ws(ws::Reader),
    Sse(sse::Reader),
}

/// Connects, upgrades or opens the stream, and for a Tidings WebSocket subscribes
/// (resuming after the last seq) and waits for the confirmation.
async fn open(
    context: &Context,
    spec: &Spec,
    source: Option<IpAddr>,
    counter: &mut Counter,
) -> anyhow::Result<Session> {
    let endpoint = match spec.transport {
        Transport::Ws => context.ws.as_ref(),
        Transport::Sse => context.sse.as_ref(),
    }
    .ok_or_else(|| anyhow::anyhow!("no URL for {:?} subscribers", spec.transport))?;
    let mut stream = net::connect(endpoint.addr, source).await?;
    let token = spec.token.as_deref();
    let resume = (counter.last_seq > 0).then_some(counter.last_seq);
    let tidings = matches!(context.target, Target::Tidings { .. });
    let request = match spec.transport {
        Transport::Ws => ws::upgrade_request(&endpoint.authority, &endpoint.path, token),
        Transport::Sse if tidings => sse::request(
            &endpoint.authority,
            &format!("{}?topics={}", endpoint.path, spec.topics.join(",")),
            token,
            resume,
        ),
        Transport::Sse => sse::request(&endpoint.authority, &endpoint.path, token, None),
    };
    stream.write_all(request.as_bytes()).await?;
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let head = tokio::time::timeout(
        Duration::from_secs(10),
        net::read_head(&mut stream, &mut buf),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no answer within 10 s"))??;
    match spec.transport {
        Transport::Sse => {
            anyhow::ensure!(
                head.status == 200,
                "the stream was refused: {}",
                head.status
            );
            Ok((stream, buf, Reader::Sse(sse::Reader::new(head.chunked))))
        }
        Transport::Ws => {
            anyhow::ensure!(
                head.status == 101,
                "the upgrade was refused: {}",
                head.status
            );
            let subscribe = match &context.target {
                Target::Tidings { .. } => Some(subscribe_message(&spec.topics, resume)),
                Target::Generic { ws_subscribe, .. } => ws_subscribe.clone(),
            };
            if let Some(message) = subscribe {
                let frame = ws::client_frame(ws::OP_TEXT, message.as_bytes(), mask());
                stream.write_all(&frame).await?;
            }
            let mut reader = ws::Reader::default();
            if tidings {
                // Until the server confirms, events are not yet live for this subscriber.
                counter.subscribed = false;
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                while !counter.subscribed {
                    let control = reader.drain(&mut buf, |m| {
                        counter.message(m, envelope::now_micros(), &context.probe)
                    })?;
                    if let Some((code, reason)) = control.close {
                        anyhow::bail!("closed while subscribing: {code} {reason}");
                    }
                    if counter.subscribed {
                        break;
                    }
                    buf.reserve(4096);
                    let n = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf))
                        .await
                        .map_err(|_| anyhow::anyhow!("no subscription confirmed within 10 s"))??;
                    anyhow::ensure!(n > 0, "the connection ended while subscribing");
                }
                flush_latencies(counter, &context.probe);
            }
            Ok((stream, buf, Reader::Ws(reader)))
        }
    }
}

fn subscribe_message(topics: &[String], since: Option<i64>) -> String {
    let topics = serde_json::to_string(topics).expect("strings serialise");
    match since {
        Some(since) => format!(r#"{{"type":"subscribe","topics":{topics},"since":{since}}}"#),
        None => format!(r#"{{"type":"subscribe","topics":{topics}}}"#),
    }
}

/// A mask for a client frame; it only has to vary, not be secret.
fn mask() -> [u8; 4] {
    (envelope::now_micros() as u32).to_le_bytes()
}

fn flush_latencies(counter: &mut Counter, probe: &Probe) {
    if !counter.latencies.is_empty() {
        probe.record_latencies(counter.shard, &counter.latencies);
        counter.latencies.clear();
    }
}

/// Reads the stream until the worker stops or drops it, or the server ends it. No timer
/// per message: the cancellation future is pinned once and polled beside each read.
async fn read(
    context: &Context,
    mut stream: TcpStream,
    mut buf: BytesMut,
    mut kind: Reader,
    leave: &CancellationToken,
    counter: &mut Counter,
) -> End {
    let probe = &*context.probe;
    let leaving = leave.cancelled();
    tokio::pin!(leaving);
    let mut raw_sse = BytesMut::new();
    let mut received = None;
    loop {
        // Bytes left from the response head (or the subscription) are read first.
        if !buf.is_empty() {
            // Receipt is when the kernel took the bytes in, not when this task got to them:
            // one core reading 10,000 sockets falls behind the server in a burst, and a real
            // client has a CPU of its own.
            let now = received.take().unwrap_or_else(envelope::now_micros);
            let result = match &mut kind {
                Reader::Ws(reader) => {
                    match reader.drain(&mut buf, |m| counter.message(m, now, probe)) {
                        Ok(control) => {
                            if let Some(payload) = control.ping {
                                let pong = ws::client_frame(ws::OP_PONG, &payload, mask());
                                if let Err(e) = stream.write_all(&pong).await {
                                    return End::Closed(format!("writing a pong: {e}"));
                                }
                            }
                            match control.close {
                                Some((code, reason)) => {
                                    let close = ws::client_frame(ws::OP_CLOSE, &[], mask());
                                    let _ = stream.write_all(&close).await;
                                    Err(format!("closed by the server: {code} {reason}"))
                                }
                                None => Ok(()),
                            }
                        }
                        Err(e) => Err(format!("{e:#}")),
                    }
                }
                Reader::Sse(reader) => {
                    std::mem::swap(&mut raw_sse, &mut buf);
                    let result = reader
                        .decode(&mut raw_sse)
                        .and_then(|()| reader.events(|e| counter.message(e.data, now, probe)));
                    std::mem::swap(&mut raw_sse, &mut buf);
                    match result {
                        Ok(()) if reader.done() => Err("the stream ended".to_owned()),
                        Ok(()) => Ok(()),
                        Err(e) => Err(format!("{e:#}")),
                    }
                }
            };
            flush_latencies(counter, probe);
            if let Err(why) = result {
                return End::Closed(why);
            }
        }
        if buf.capacity() - buf.len() < 2048 {
            buf.reserve(8 * 1024);
        }
        tokio::select! {
            biased;
            () = &mut leaving => {
                return if context.stop.is_cancelled() { End::Stopped } else { End::Dropped };
            }
            read = crate::net::recv_stamped(&stream, &mut buf) => match read {
                Ok((0, _)) => return End::Closed("the connection ended".into()),
                Ok((_, stamp)) => received = stamp,
                Err(e) => return End::Closed(format!("reading: {e}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter() -> Counter {
        Counter {
            generic: None,
            shard: 0,
            tally: Tally::default(),
            last_seq: 0,
            latencies: Vec::new(),
            skip_one: false,
            recovering: false,
            subscribed: false,
        }
    }

    fn stock(seq: i64, version: i64) -> String {
        format!(
            r#"{{"seq":{seq},"topic":"inventory","type":"inventory.stock_changed","at":"2026-11-22T10:11:12.123456Z","data":{{"delta":1,"product_id":"p1","version":{version}}}}}"#
        )
    }

    #[test]
    fn repeated_and_reordered_events_are_counted_apart_from_the_rest() {
        let probe = Probe::new();
        let mut c = counter();
        for (seq, version) in [(5, 1), (6, 2), (6, 2), (4, 0), (8, 3)] {
            c.message(stock(seq, version).as_bytes(), 0, &probe);
        }
        let inventory = c.tally.classes[Class::Inventory as usize];
        assert_eq!(inventory.count, 3);
        assert_eq!(
            inventory.checksum,
            key(b"p1", 1)
                .wrapping_add(key(b"p1", 2))
                .wrapping_add(key(b"p1", 3))
        );
        assert_eq!((c.tally.duplicates, c.tally.out_of_order), (1, 1));
    }

    #[test]
    fn a_subscription_confirmation_sets_where_resuming_starts() {
        let probe = Probe::new();
        let mut c = counter();
        c.message(
            br#"{"type":"subscribed","topics":["inventory"],"seq":41}"#,
            0,
            &probe,
        );
        assert!(c.subscribed);
        assert_eq!(c.last_seq, 41);
    }

    #[test]
    fn numbers_are_found_after_their_key_however_quoted() {
        assert_eq!(
            number_after(br#"{"n":3,"ts":"1700000000000000"}"#, b"ts"),
            Some(1_700_000_000_000_000)
        );
        assert_eq!(number_after(br#"{"msg":"{\"ts\":42}"}"#, b"ts"), Some(42));
        assert_eq!(number_after(br#"{"tsx":1}"#, b"ts"), None);
    }
}
