//! The parent's side of the workers: starts them (in this process, or as child processes
//! of the same binary), sends them commands, and merges what they report into one
//! timeline and one set of tallies.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::{Notify, mpsc};

use crate::probe::new_histogram;
use crate::worker::{self, Command, Done, Plan, Report};

/// One second of the merged timeline.
#[derive(Debug, Clone)]
pub struct Second {
    pub connections: i64,
    pub deliveries: u64,
    pub latency: Histogram<u64>,
}

/// What the workers have reported so far.
pub struct Merged {
    pub connected: Vec<Option<(usize, usize, Option<String>)>>,
    pub seconds: BTreeMap<u32, Second>,
    /// Every latency reported, all workers and seconds together.
    pub latency: Histogram<u64>,
    pub deliveries: u64,
    pub recovered: Vec<Option<f64>>,
    pub done: Vec<Option<Done>>,
    /// A worker that failed, and why.
    pub failure: Option<String>,
}

/// Sends commands to every worker.
#[derive(Clone)]
pub struct Commander(Vec<mpsc::Sender<Command>>);

impl Commander {
    pub async fn send(&self, command: Command) {
        for worker in &self.0 {
            let _ = worker.send(command.clone()).await;
        }
    }
}

/// Running workers.
pub struct Fleet {
    commands: Commander,
    pub merged: Arc<Mutex<Merged>>,
    pub changed: Arc<Notify>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Fleet {
    /// Starts one worker per plan: in this process when there is one plan, else each in a
    /// child process.
    pub fn start(plans: Vec<Plan>) -> anyhow::Result<Fleet> {
        let n = plans.len();
        let merged = Arc::new(Mutex::new(Merged {
            connected: vec![None; n],
            seconds: BTreeMap::new(),
            latency: new_histogram(),
            deliveries: 0,
            recovered: vec![None; n],
            done: (0..n).map(|_| None).collect(),
            failure: None,
        }));
        let changed = Arc::new(Notify::new());
        let mut commands = Vec::with_capacity(n);
        let mut tasks = Vec::new();
        let in_process = n == 1;
        for (id, plan) in plans.into_iter().enumerate() {
            let (command_tx, command_rx) = mpsc::channel(16);
            let (report_tx, mut report_rx) = mpsc::channel::<Report>(64);
            commands.push(command_tx);
            if in_process {
                let failed = (merged.clone(), changed.clone());
                tasks.push(tokio::spawn(async move {
                    if let Err(e) = worker::run(plan, command_rx, report_tx, false).await {
                        fail(&failed.0, &failed.1, format!("worker: {e:#}"));
                    }
                }));
            } else {
                tasks.extend(spawn_child(
                    id, plan, command_rx, report_tx, &merged, &changed,
                )?);
            }
            let (merged, changed) = (merged.clone(), changed.clone());
            tasks.push(tokio::spawn(async move {
                while let Some(report) = report_rx.recv().await {
                    merge(&mut merged.lock().expect("lock"), id, report);
                    changed.notify_waiters();
                }
            }));
        }
        Ok(Fleet {
            commands: Commander(commands),
            merged,
            changed,
            tasks,
        })
    }

    pub async fn send(&self, command: Command) {
        self.commands.send(command).await;
    }

    pub fn commander(&self) -> Commander {
        self.commands.clone()
    }

    /// Waits until `done` holds for what has been merged, or `timeout` passes; whether it
    /// held. A worker failure is an error.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&Merged) -> bool,
    ) -> anyhow::Result<bool> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            {
                let merged = self.merged.lock().expect("lock");
                if let Some(failure) = &merged.failure {
                    anyhow::bail!("{failure}");
                }
                if done(&merged) {
                    return Ok(true);
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Ok(false);
            }
        }
    }

    /// Stops every worker and waits for their tallies.
    pub async fn stop(self) -> anyhow::Result<Vec<Done>> {
        self.send(Command::Stop).await;
        let all_done = self
            .wait_for(Duration::from_secs(60), |m| {
                m.done.iter().all(Option::is_some)
            })
            .await?;
        anyhow::ensure!(all_done, "workers did not report within 60 s of stopping");
        for task in self.tasks {
            task.abort();
        }
        let mut merged = self.merged.lock().expect("lock");
        Ok(merged.done.iter_mut().filter_map(Option::take).collect())
    }
}

fn fail(merged: &Mutex<Merged>, changed: &Notify, why: String) {
    merged.lock().expect("lock").failure.get_or_insert(why);
    changed.notify_waiters();
}

fn merge(merged: &mut Merged, id: usize, report: Report) {
    match report {
        Report::Connected {
            ready,
            failed,
            first_error,
        } => merged.connected[id] = Some((ready, failed, first_error)),
        Report::Tick {
            index,
            connections,
            deliveries,
            latency,
        } => {
            let second = merged.seconds.entry(index).or_insert_with(|| Second {
                connections: 0,
                deliveries: 0,
                latency: new_histogram(),
            });
            second.connections += connections;
            second.deliveries += deliveries;
            latency.add_to(&mut second.latency);
            latency.add_to(&mut merged.latency);
            merged.deliveries += deliveries;
        }
        Report::Recovered { seconds } => merged.recovered[id] = Some(seconds),
        Report::Done(done) => {
            done.latency_rest.add_to(&mut merged.latency);
            merged.done[id] = Some(*done);
        }
    }
}

/// Starts `tidings-loadtest worker` with the plan on its stdin; its reports come back on
/// `reports`. The child inherits this process's CPU affinity.
fn spawn_child(
    id: usize,
    plan: Plan,
    mut commands: mpsc::Receiver<Command>,
    reports: mpsc::Sender<Report>,
    merged: &Arc<Mutex<Merged>>,
    changed: &Arc<Notify>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    let mut first = serde_json::to_vec(&plan)?;
    first.push(b'\n');
    let writer = tokio::spawn(async move {
        if stdin.write_all(&first).await.is_err() {
            return;
        }
        while let Some(command) = commands.recv().await {
            let mut line = serde_json::to_vec(&command).expect("commands serialise");
            line.push(b'\n');
            if stdin.write_all(&line).await.is_err() {
                return;
            }
        }
    });
    let (merged, changed) = (merged.clone(), changed.clone());
    let reader = tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            match serde_json::from_str::<Report>(&line) {
                Ok(report) => {
                    let last = matches!(report, Report::Done(_));
                    if reports.send(report).await.is_err() || last {
                        break;
                    }
                }
                Err(e) => return fail(&merged, &changed, format!("worker {id}: {e}: {line}")),
            }
        }
        match child.wait().await {
            Ok(status) if status.success() => {}
            status => fail(&merged, &changed, format!("worker {id} ended: {status:?}")),
        }
    });
    Ok(vec![writer, reader])
}
