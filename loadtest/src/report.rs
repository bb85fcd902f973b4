//! The end of a run: figures, the verdict, and the JSON of both.

use std::time::Duration;

use serde::Serialize;

use crate::api::Write;
use crate::subscriber::{Shared, Tally, new_histogram};

pub struct Inputs<'a> {
    pub tallies: Vec<Tally>,
    pub expected_per_subscriber: u64,
    pub expected_hash: u64,
    pub write_latency: &'a [Write],
    pub shared: &'a Shared,
    pub duration: Duration,
    pub connect_time: Duration,
    /// Server PSS in KiB before and after the subscribers connected.
    pub memory: Option<(u64, u64)>,
    pub subscribers: usize,
    /// Cores the tester used while measuring: near 1.0 means the tester, not the server,
    /// may be what saturates.
    pub tester_cpu: Option<f64>,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub samples: u64,
}

/// Every figure of a run.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub subscribers: usize,
    pub connect_seconds: f64,
    pub writes: u64,
    pub expected_deliveries: u64,
    pub deliveries: u64,
    pub deliveries_per_second: f64,
    pub lost: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Subscribers whose events did not match what was written (wrong or missing keys).
    pub mismatched_subscribers: usize,
    pub ended_early: usize,
    pub delivery_latency_ms: Percentiles,
    pub write_latency_ms: Percentiles,
    pub server_kib_per_connection: Option<f64>,
    /// Cores the tester itself used while measuring.
    pub tester_cpu_cores: Option<f64>,
}

fn percentiles(histogram: &hdrhistogram::Histogram<u64>) -> Percentiles {
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

pub fn summarize(inputs: Inputs<'_>) -> Summary {
    let expected = inputs.expected_per_subscriber;
    let mut writes = new_histogram();
    for write in inputs.write_latency {
        let _ = writes.record(write.latency.as_micros().max(1) as u64);
    }
    let deliveries: u64 = inputs.tallies.iter().map(|t| t.received).sum();
    Summary {
        subscribers: inputs.subscribers,
        connect_seconds: inputs.connect_time.as_secs_f64(),
        writes: inputs.write_latency.len() as u64,
        expected_deliveries: expected * inputs.tallies.len() as u64,
        deliveries,
        deliveries_per_second: deliveries as f64 / inputs.duration.as_secs_f64(),
        lost: inputs
            .tallies
            .iter()
            .map(|t| expected.saturating_sub(t.received))
            .sum(),
        duplicates: inputs.tallies.iter().map(|t| t.duplicates).sum(),
        out_of_order: inputs.tallies.iter().map(|t| t.out_of_order).sum(),
        mismatched_subscribers: inputs
            .tallies
            .iter()
            .filter(|t| t.checksum != inputs.expected_hash)
            .count(),
        ended_early: inputs.tallies.iter().filter(|t| t.ended.is_some()).count(),
        delivery_latency_ms: percentiles(&inputs.shared.latency()),
        write_latency_ms: percentiles(&writes),
        server_kib_per_connection: inputs.memory.map(|(before, after)| {
            after.saturating_sub(before) as f64 / inputs.subscribers.max(1) as f64
        }),
        tester_cpu_cores: inputs.tester_cpu,
    }
}

impl Summary {
    /// Nothing lost, repeated, reordered or mismatched.
    pub fn clean(&self) -> bool {
        self.lost == 0
            && self.duplicates == 0
            && self.out_of_order == 0
            && self.mismatched_subscribers == 0
    }

    pub fn print(&self) {
        let l = &self.delivery_latency_ms;
        println!(
            "subscribers        {} (connected in {:.1} s)",
            self.subscribers, self.connect_seconds
        );
        println!(
            "writes             {} (p50 {:.1} ms, p99 {:.1} ms)",
            self.writes, self.write_latency_ms.p50, self.write_latency_ms.p99
        );
        println!(
            "deliveries         {} of {} expected, {:.0}/s",
            self.deliveries, self.expected_deliveries, self.deliveries_per_second
        );
        println!(
            "latency (commit to receipt) ms: p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}",
            l.p50, l.p90, l.p99, l.p999, l.max
        );
        if let Some(cores) = self.tester_cpu_cores {
            println!("tester cpu         {cores:.2} cores while measuring");
        }
        if let Some(kib) = self.server_kib_per_connection {
            println!("server memory      {kib:.1} KiB per connection (PSS growth / connections)");
        }
        if self.clean() {
            println!("\x1b[32mcorrect: nothing lost, duplicated or out of order\x1b[0m");
        } else {
            println!(
                "\x1b[31mINCORRECT: lost {} duplicated {} out of order {} mismatched subscribers {} (ended early {})\x1b[0m",
                self.lost,
                self.duplicates,
                self.out_of_order,
                self.mismatched_subscribers,
                self.ended_early
            );
        }
    }
}

/// A live line on the terminal while a run measures: subscribers, writes, deliveries per
/// second, p99 so far. indicatif hides it when stderr is not a terminal.
pub fn progress(shared: std::sync::Arc<Shared>, subscribers: usize) -> tokio::task::JoinHandle<()> {
    let bar = indicatif::ProgressBar::new_spinner();
    tokio::spawn(async move {
        let mut last = shared.received.load(std::sync::atomic::Ordering::Relaxed);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            let now = shared.received.load(std::sync::atomic::Ordering::Relaxed);
            let p99 = shared.latency().value_at_quantile(0.99) as f64 / 1000.0;
            bar.set_message(format!(
                "{subscribers} subscribers · {} writes · {:.0} deliveries/s · p99 {p99:.1} ms so far",
                shared.writes_started.load(std::sync::atomic::Ordering::Relaxed),
                (now - last) as f64 * 2.0,
            ));
            bar.tick();
            last = now;
        }
    })
}
