//! What every subscriber of one worker adds to while it runs: counters, the latency of the
//! current second, connect times, and the storm's recovery.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// Latency histograms are sharded by subscriber so that, on a multi-threaded runtime,
/// subscribers rarely wait on each other; on one thread a lock is never contended.
const SHARDS: usize = 16;

/// Microseconds, from 1 µs to 10 minutes, three significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

/// A histogram as `(value, count)` pairs: what crosses a process boundary.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counts(pub Vec<(u64, u64)>);

impl Counts {
    pub fn of(histogram: &Histogram<u64>) -> Counts {
        Counts(
            histogram
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        )
    }

    pub fn add_to(&self, histogram: &mut Histogram<u64>) {
        for &(value, count) in &self.0 {
            let _ = histogram.record_n(value, count);
        }
    }
}

/// Counters shared by the subscribers of one worker.
pub struct Probe {
    /// Events received, all subscribers together.
    pub deliveries: AtomicU64,
    /// Connections open now.
    pub connections: AtomicI64,
    pub connect_errors: AtomicU64,
    /// Subscribers live for the first time, and those that gave up connecting.
    pub ready: AtomicUsize,
    pub failed: AtomicUsize,
    pub ready_changed: Notify,
    /// The highest seq any subscriber has seen.
    pub high_seq: AtomicI64,
    /// Delivery latency (µs) since the last tick, per shard.
    latency: Vec<Mutex<Histogram<u64>>>,
    /// Time to connect (and subscribe), µs.
    connect: Mutex<Histogram<u64>>,
    /// The storm: the seq every dropped subscriber must reach again, and how many have
    /// not yet.
    pub watermark: AtomicI64,
    pub recovering: AtomicUsize,
    /// Why the first subscriber that gave up did.
    pub first_error: Mutex<Option<String>>,
}

impl Probe {
    pub fn new() -> Probe {
        Probe {
            deliveries: AtomicU64::new(0),
            connections: AtomicI64::new(0),
            connect_errors: AtomicU64::new(0),
            ready: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            ready_changed: Notify::new(),
            high_seq: AtomicI64::new(0),
            latency: (0..SHARDS).map(|_| Mutex::new(new_histogram())).collect(),
            connect: Mutex::new(new_histogram()),
            watermark: AtomicI64::new(i64::MAX),
            recovering: AtomicUsize::new(0),
            first_error: Mutex::new(None),
        }
    }

    /// Records a batch of latencies (µs) read together, under one lock.
    pub fn record_latencies(&self, shard: usize, micros: &[u64]) {
        let mut histogram = self.latency[shard % SHARDS].lock().expect("histogram lock");
        for &m in micros {
            let _ = histogram.record(m.max(1));
        }
    }

    pub fn record_connect(&self, micros: u64) {
        let _ = self
            .connect
            .lock()
            .expect("histogram lock")
            .record(micros.max(1));
    }

    pub fn connect_times(&self) -> Histogram<u64> {
        self.connect.lock().expect("histogram lock").clone()
    }

    /// The latencies since the last call, every shard merged, and the shards reset.
    pub fn take_latency(&self) -> Histogram<u64> {
        let mut total = new_histogram();
        for shard in &self.latency {
            let mut shard = shard.lock().expect("histogram lock");
            total.add(&*shard).expect("same bounds");
            shard.reset();
        }
        total
    }

    pub fn mark_ready(&self, ready: bool) {
        if ready { &self.ready } else { &self.failed }.fetch_add(1, Ordering::AcqRel);
        self.ready_changed.notify_waiters();
    }

    /// A dropped subscriber is back and has caught up.
    pub fn mark_recovered(&self) {
        self.recovering.fetch_sub(1, Ordering::AcqRel);
    }

    /// A subscriber gave up connecting.
    pub fn give_up(&self, why: String) {
        self.first_error.lock().expect("lock").get_or_insert(why);
        self.mark_ready(false);
    }
}
