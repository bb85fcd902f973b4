//! `tidings-loadtest`: opens many WebSocket and SSE subscribers to a Tidings server (or any
//! server, in generic mode), drives a write workload through its REST API, and measures
//! what arrives: commit-to-receipt latency (from each envelope's `at`) in an HDR histogram,
//! deliveries per second, and for every subscriber the events it should have received
//! against those it did, so lost, duplicated and out-of-order events are counted. Any of
//! them makes it exit 1.

mod api;
mod envelope;
mod expect;
mod fleet;
mod html;
mod memory;
mod net;
mod placement;
mod probe;
mod report;
mod run;
mod scenario;
mod sse;
mod subscriber;
mod worker;
mod writes;
mod ws;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::scenario::{Name, Options, Scenario};

/// Load-test a Tidings server, or any WebSocket or SSE server.
#[derive(Debug, Parser)]
#[command(name = "tidings-loadtest", version)]
struct Cli {
    /// A TOML file of settings (the flags' names, in kebab case); flags win over it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Connections that only listen: server memory per connection.
    Idle(Options),
    /// Subscribers of `inventory`; stock adjustments at a rate.
    Fanout(Options),
    /// Customers each on their own `orders` stream plus staff; orders placed at a rate.
    Orders(Options),
    /// Fanout with a fraction of the connections dropped at once mid-run.
    Storm(Options),
    /// Any server: subscribe to a WebSocket or SSE URL, publish by POSTing a template.
    Generic(Options),
    /// A worker process (started by the tester itself for --workers).
    #[command(hide = true)]
    Worker,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One thread: the tester is meant to be pinned to one core, and on one core a
    // single-threaded runtime wastes nothing on cross-thread wake-ups.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("tidings-loadtest: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(start(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("tidings-loadtest: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs what the command line asks; whether the run was correct.
async fn start(cli: Cli) -> anyhow::Result<bool> {
    let file = match &cli.config {
        Some(path) => Options::from_file(path)?,
        None => Options::default(),
    };
    let (name, flags) = match cli.command {
        Some(Command::Worker) => {
            worker::serve_stdio().await?;
            return Ok(true);
        }
        Some(Command::Idle(o)) => (Name::Idle, o),
        Some(Command::Fanout(o)) => (Name::Fanout, o),
        Some(Command::Orders(o)) => (Name::Orders, o),
        Some(Command::Storm(o)) => (Name::Storm, o),
        Some(Command::Generic(o)) => (Name::Generic, o),
        None => (
            file.scenario
                .ok_or_else(|| anyhow::anyhow!("name a scenario (idle, fanout, orders, storm, generic), or give one in --config"))?,
            Options::default(),
        ),
    };
    let options = flags.or(file);
    let scenario = Scenario::resolve(name, options)?;
    let (json, html) = (scenario.options.json.clone(), scenario.options.html.clone());
    let summary = run::run(scenario).await?;
    summary.print();
    let value = serde_json::to_value(&summary)?;
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_vec_pretty(&value)?)?;
    }
    if let Some(path) = html {
        std::fs::write(&path, html::render(&value))?;
    }
    Ok(summary.clean())
}
