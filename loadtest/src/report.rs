//! The end of a run: every figure in one `Summary`, printed plainly, written as JSON (and
//! HTML by `html.rs`), and the live progress line while it runs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::expect::Verdict;
use crate::fleet::Merged;

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub samples: u64,
}

impl Percentiles {
    /// From a histogram of microseconds.
    pub fn of(histogram: &Histogram<u64>) -> Percentiles {
        let ms = |micros: u64| micros as f64 / 1000.0;
        Percentiles {
            p50: ms(histogram.value_at_quantile(0.5)),
            p90: ms(histogram.value_at_quantile(0.9)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
            samples: histogram.len(),
        }
    }
}

/// One second of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// Seconds since measuring started.
    pub t: f64,
    pub connections: i64,
    pub deliveries_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub writes_per_s: f64,
}

/// Every figure of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub scenario: String,
    pub subscribers: usize,
    pub ws: usize,
    pub sse: usize,
    pub staff: usize,
    pub topics: Vec<String>,
    pub workers: usize,
    pub connect_seconds: f64,
    pub connect_ms: Percentiles,
    pub connect_errors: u64,
    pub rate: f64,
    pub mix: String,
    pub writes: u64,
    pub write_errors: u64,
    pub writes_by_kind: BTreeMap<String, u64>,
    pub first_write_error: Option<String>,
    /// Seconds from the first write until everything expected arrived (or the drain ended).
    pub measured_seconds: f64,
    pub expected_deliveries: u64,
    /// Checked events received (in order, no repeats).
    pub deliveries: u64,
    /// Every event received per second while measuring, checked or not.
    pub deliveries_per_second: f64,
    pub lost: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub unexpected: u64,
    pub mismatched_subscribers: usize,
    pub reconnects: u64,
    pub resets: u64,
    pub delivery_latency_ms: Percentiles,
    pub write_latency_ms: Percentiles,
    pub write_latency_by_kind_ms: BTreeMap<String, Percentiles>,
    /// Server memory growth per connection (PSS), all phases together.
    pub server_kib_per_connection: Option<f64>,
    pub server_kib_per_ws_connection: Option<f64>,
    pub server_kib_per_sse_connection: Option<f64>,
    /// Cores the server used while measuring.
    pub server_cpu_cores: Option<f64>,
    /// Cores the tester (every worker process) used while measuring.
    pub tester_cpu_cores: Option<f64>,
    /// Tester CPU time per event received, µs.
    pub tester_cpu_us_per_delivery: Option<f64>,
    /// Storm: the connections dropped, and the seconds until all were back and caught up.
    pub dropped: Option<usize>,
    pub recovery_seconds: Option<f64>,
    pub timeline: Vec<Point>,
}

impl Summary {
    pub fn verdict_fields(&mut self, verdict: &Verdict) {
        self.expected_deliveries = verdict.expected_deliveries;
        self.deliveries = verdict.received;
        self.lost = verdict.lost;
        self.duplicates = verdict.duplicates;
        self.out_of_order = verdict.out_of_order;
        self.unexpected = verdict.unexpected;
        self.mismatched_subscribers = verdict.mismatched_subscribers;
        self.reconnects = verdict.reconnects;
        self.resets = verdict.resets;
    }

    /// Nothing lost, repeated, reordered, foreign or unrecovered.
    pub fn clean(&self) -> bool {
        self.lost == 0
            && self.duplicates == 0
            && self.out_of_order == 0
            && self.unexpected == 0
            && self.mismatched_subscribers == 0
            && self.resets == 0
            && (self.dropped.is_none() || self.recovery_seconds.is_some())
    }

    pub fn print(&self) {
        let l = &self.delivery_latency_ms;
        println!(
            "scenario           {} ({} workers)",
            self.scenario, self.workers
        );
        println!(
            "subscribers        {} ({} ws, {} sse, {} staff) on {}; connected in {:.1} s, connect p50 {:.1} ms p99 {:.1} ms, {} errors",
            self.subscribers,
            self.ws,
            self.sse,
            self.staff,
            self.topics.join(","),
            self.connect_seconds,
            self.connect_ms.p50,
            self.connect_ms.p99,
            self.connect_errors
        );
        if self.writes + self.write_errors > 0 {
            println!(
                "writes             {} ({} failed) at {}/s, mix {}",
                self.writes, self.write_errors, self.rate, self.mix
            );
            for (kind, p) in &self.write_latency_by_kind_ms {
                println!(
                    "  {kind:<16} {} · p50 {:.1} ms p99 {:.1} ms p99.9 {:.1} ms",
                    p.samples, p.p50, p.p99, p.p999
                );
            }
            if let Some(e) = &self.first_write_error {
                println!("  first error: {e}");
            }
        }
        println!(
            "deliveries         {} of {} expected, {:.0}/s over {:.1} s",
            self.deliveries,
            self.expected_deliveries,
            self.deliveries_per_second,
            self.measured_seconds
        );
        println!(
            "latency (commit to receipt) ms: p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}",
            l.p50, l.p90, l.p99, l.p999, l.max
        );
        if let (Some(dropped), Some(seconds)) = (self.dropped, self.recovery_seconds) {
            println!(
                "storm              {dropped} dropped, all back and caught up in {seconds:.2} s"
            );
        } else if let Some(dropped) = self.dropped {
            println!("storm              {dropped} dropped, NOT all back and caught up");
        }
        for (label, kib) in [
            ("per connection", self.server_kib_per_connection),
            ("per WebSocket", self.server_kib_per_ws_connection),
            ("per SSE stream", self.server_kib_per_sse_connection),
        ] {
            if let Some(kib) = kib {
                println!(
                    "server memory      {kib:.1} KiB {label} (growth of PSS, or of RSS with --metrics-url, / connections)"
                );
            }
        }
        if let Some(cores) = self.server_cpu_cores {
            println!("server cpu         {cores:.2} cores while measuring");
        }
        if let Some(cores) = self.tester_cpu_cores {
            let per = self
                .tester_cpu_us_per_delivery
                .map_or(String::new(), |us| format!(", {us:.2} µs per delivery"));
            println!("tester cpu         {cores:.2} cores while measuring{per}");
        }
        let (green, red, plain) = if colour() {
            ("\x1b[32m", "\x1b[31m", "\x1b[0m")
        } else {
            ("", "", "")
        };
        if self.clean() {
            println!("{green}correct: nothing lost, duplicated or out of order{plain}");
        } else {
            println!(
                "{red}INCORRECT: lost {} duplicated {} out of order {} unexpected {} mismatched subscribers {} resets {}{}{plain}",
                self.lost,
                self.duplicates,
                self.out_of_order,
                self.unexpected,
                self.mismatched_subscribers,
                self.resets,
                if self.dropped.is_some() && self.recovery_seconds.is_none() {
                    ", storm not recovered"
                } else {
                    ""
                }
            );
        }
    }
}

/// Whether to colour the verdict: only on a terminal, and never with `NO_COLOR` set
/// (<https://no-color.org>), so that pipes and log files get plain text.
fn colour() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
}

/// The merged seconds as timeline points, with the writes of each second.
pub fn timeline(merged: &Merged, writes_per_second: &[u64]) -> Vec<Point> {
    merged
        .seconds
        .iter()
        .map(|(&index, second)| {
            let ms = |q: f64| second.latency.value_at_quantile(q) as f64 / 1000.0;
            Point {
                t: f64::from(index + 1),
                connections: second.connections,
                deliveries_per_s: second.deliveries as f64,
                p50_ms: ms(0.5),
                p99_ms: ms(0.99),
                p999_ms: ms(0.999),
                writes_per_s: writes_per_second.get(index as usize).copied().unwrap_or(0) as f64,
            }
        })
        .collect()
}

/// A live line on the terminal while a run measures: connections, deliveries per second,
/// p99 so far, writes. indicatif hides it when stderr is not a terminal. Also samples the
/// writes done each second for the timeline.
pub fn progress(
    merged: Arc<Mutex<Merged>>,
    writes_per_second: Arc<Mutex<Vec<u64>>>,
) -> tokio::task::JoinHandle<()> {
    let bar = indicatif::ProgressBar::new_spinner();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let mut last_writes = 0;
        loop {
            tick.tick().await;
            let writes = crate::writes::WRITES_DONE.load(std::sync::atomic::Ordering::Relaxed);
            writes_per_second
                .lock()
                .expect("lock")
                .push(writes - last_writes);
            last_writes = writes;
            let message = {
                let merged = merged.lock().expect("lock");
                let (connections, deliveries) = merged
                    .seconds
                    .values()
                    .next_back()
                    .map_or((0, 0), |s| (s.connections, s.deliveries));
                let p99 = merged.latency.value_at_quantile(0.99) as f64 / 1000.0;
                format!(
                    "{connections} connections · {deliveries} deliveries/s · p99 {p99:.1} ms so far · {writes} writes"
                )
            };
            bar.set_message(message);
            bar.tick();
        }
    })
}
