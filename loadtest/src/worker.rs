//! A worker holds a slice of the subscribers: it opens them at the ramp rate, reports
//! when they are live, ticks a timeline every second while the parent measures, drops a
//! fraction of them on command (the storm), and hands back every tally at the end.
//!
//! The same worker runs inside the parent process or in a child process of the same
//! binary (`tidings-loadtest worker`), speaking JSON lines over stdin and stdout, so that
//! one run can hold more sockets than one process may open.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::memory;
use crate::net::Endpoint;
use crate::probe::{Counts, Probe};
use crate::subscriber::{self, Context, Spec, Tally, Target};

/// What one worker is to open.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub target: Target,
    pub specs: Vec<Spec>,
    /// Subscribers opened per second by this worker.
    pub ramp: f64,
    pub source_addrs: Vec<IpAddr>,
    /// For testing the tester: the first subscriber skips one checked event.
    pub inject_loss: bool,
}

/// From the parent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    /// Start the timeline.
    Measure,
    /// Drop this fraction of the connections at once; they reconnect and resume.
    Drop { fraction: f64 },
    /// Close everything and report the tallies.
    Stop,
}

/// To the parent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Report {
    /// Every subscriber is live, or gave up.
    Connected {
        ready: usize,
        failed: usize,
        first_error: Option<String>,
    },
    /// One second of the timeline.
    Tick {
        index: u32,
        connections: i64,
        deliveries: u64,
        latency: Counts,
    },
    /// Every dropped subscriber is back and caught up, this long after the drop.
    Recovered {
        seconds: f64,
    },
    Done(Box<Done>),
}

/// What a worker hands back at the end.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Done {
    pub tallies: Vec<Tally>,
    pub connect_errors: u64,
    pub connect_us: Counts,
    /// Latency recorded since the last tick.
    pub latency_rest: Counts,
    /// CPU seconds the worker process used while measuring, when it is a process of its own.
    pub cpu_seconds: Option<f64>,
}

/// Runs a worker until it is told to stop.
pub async fn run(
    plan: Plan,
    mut commands: mpsc::Receiver<Command>,
    reports: mpsc::Sender<Report>,
    own_process: bool,
) -> anyhow::Result<()> {
    let (ws, sse) = match &plan.target {
        Target::Tidings { base } => {
            let base = base.trim_end_matches('/');
            (
                Some(Endpoint::resolve(&format!("{base}/v1/ws")).await?),
                Some(Endpoint::resolve(&format!("{base}/v1/events")).await?),
            )
        }
        Target::Generic {
            ws_url, sse_url, ..
        } => (
            match ws_url {
                Some(url) => Some(Endpoint::resolve(url).await?),
                None => None,
            },
            match sse_url {
                Some(url) => Some(Endpoint::resolve(url).await?),
                None => None,
            },
        ),
    };
    let probe = Arc::new(Probe::new());
    let stop = CancellationToken::new();
    let context = Arc::new(Context {
        target: plan.target.clone(),
        ws,
        sse,
        source_addrs: plan.source_addrs.clone(),
        probe: probe.clone(),
        stop: stop.clone(),
    });
    let total = plan.specs.len();
    let mut leave = Vec::with_capacity(total);
    let mut tasks = Vec::with_capacity(total);
    let opening = {
        let (context, specs) = (context.clone(), plan.specs.clone());
        let tokens: Vec<CancellationToken> = (0..total).map(|_| stop.child_token()).collect();
        leave.clone_from(&tokens);
        let (ramp, inject) = (plan.ramp.max(1.0), plan.inject_loss);
        tokio::spawn(async move {
            let batch = (ramp / 100.0).ceil().max(1.0) as usize;
            let pause = Duration::from_secs_f64(batch as f64 / ramp);
            let mut ticks = tokio::time::interval(pause);
            let mut handles = Vec::with_capacity(specs.len());
            for (i, (spec, token)) in specs.into_iter().zip(tokens).enumerate() {
                if i % batch == 0 {
                    ticks.tick().await;
                }
                handles.push(tokio::spawn(subscriber::run(
                    context.clone(),
                    i,
                    spec,
                    token,
                    inject && i == 0,
                )));
            }
            handles
        })
    };

    // Wait until every subscriber is live or has given up.
    loop {
        let changed = probe.ready_changed.notified();
        let (ready, failed) = (
            probe.ready.load(Ordering::Acquire),
            probe.failed.load(Ordering::Acquire),
        );
        if ready + failed >= total {
            let first_error = probe.first_error.lock().expect("lock").clone();
            let _ = reports
                .send(Report::Connected {
                    ready,
                    failed,
                    first_error,
                })
                .await;
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), changed).await;
    }
    tasks.extend(opening.await?);

    let mut ticker: Option<tokio::task::JoinHandle<()>> = None;
    let mut cpu_start = None;
    while let Some(command) = commands.recv().await {
        match command {
            Command::Measure => {
                cpu_start = memory::own_cpu_seconds();
                probe.take_latency();
                ticker = Some(tokio::spawn(tick(probe.clone(), reports.clone())));
            }
            Command::Drop { fraction } => {
                let chosen: Vec<&CancellationToken> = leave
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| dropped(*i, fraction))
                    .map(|(_, t)| t)
                    .collect();
                probe
                    .watermark
                    .store(probe.high_seq.load(Ordering::Acquire), Ordering::Release);
                probe.recovering.store(chosen.len(), Ordering::Release);
                let dropped_at = Instant::now();
                for token in &chosen {
                    token.cancel();
                }
                if chosen.is_empty() {
                    let _ = reports.send(Report::Recovered { seconds: 0.0 }).await;
                } else {
                    let (probe, reports) = (probe.clone(), reports.clone());
                    tokio::spawn(async move {
                        // Polled: 20 ms is finer than any recovery worth measuring.
                        while probe.recovering.load(Ordering::Acquire) > 0 {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        let seconds = dropped_at.elapsed().as_secs_f64();
                        let _ = reports.send(Report::Recovered { seconds }).await;
                    });
                }
            }
            Command::Stop => break,
        }
    }
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    stop.cancel();
    let mut tallies = Vec::with_capacity(total);
    for task in tasks {
        tallies.push(task.await?);
    }
    let cpu_seconds = own_process
        .then(|| cpu_start.zip(memory::own_cpu_seconds()).map(|(a, b)| b - a))
        .flatten();
    let done = Done {
        tallies,
        connect_errors: probe.connect_errors.load(Ordering::Acquire),
        connect_us: Counts::of(&probe.connect_times()),
        latency_rest: Counts::of(&probe.take_latency()),
        cpu_seconds,
    };
    let _ = reports.send(Report::Done(Box::new(done))).await;
    Ok(())
}

/// Whether the storm drops subscriber `i`: spread evenly, `fraction` of them in all.
pub fn dropped(i: usize, fraction: f64) -> bool {
    ((i + 1) as f64 * fraction).floor() > (i as f64 * fraction).floor()
}

/// Reports one timeline second at a time.
async fn tick(probe: Arc<Probe>, reports: mpsc::Sender<Report>) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.tick().await;
    let mut last = probe.deliveries.load(Ordering::Acquire);
    for index in 0u32.. {
        ticks.tick().await;
        let now = probe.deliveries.load(Ordering::Acquire);
        let report = Report::Tick {
            index,
            connections: probe.connections.load(Ordering::Acquire),
            deliveries: now - last,
            latency: Counts::of(&probe.take_latency()),
        };
        last = now;
        if reports.send(report).await.is_err() {
            return;
        }
    }
}

/// `tidings-loadtest worker`: a worker in a process of its own. Its plan is the first line
/// of stdin, commands the next ones; reports go to stdout, one JSON line each.
pub async fn serve_stdio() -> anyhow::Result<()> {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let plan: Plan = serde_json::from_str(
        &lines
            .next_line()
            .await?
            .ok_or_else(|| anyhow::anyhow!("no plan on stdin"))?,
    )?;
    let (command_tx, command_rx) = mpsc::channel(16);
    let (report_tx, mut report_rx) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let Ok(command) = serde_json::from_str::<Command>(&line) else {
                continue;
            };
            if command_tx.send(command).await.is_err() {
                break;
            }
        }
        // The parent went away: stop.
        let _ = command_tx.send(Command::Stop).await;
    });
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(report) = report_rx.recv().await {
            let mut line = serde_json::to_vec(&report)?;
            line.push(b'\n');
            stdout.write_all(&line).await?;
            stdout.flush().await?;
        }
        anyhow::Ok(())
    });
    run(plan, command_rx, report_tx, true).await?;
    writer.await??;
    Ok(())
}
