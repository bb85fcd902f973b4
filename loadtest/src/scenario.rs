//! What a run does: the flags, the same fields in an optional TOML file, and each
//! scenario's defaults. Flags win over the file, the file over the defaults.

use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use crate::writes::Mix;

/// A duration written as `10s`, `1m30s`, `500ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl FromStr for Span {
    type Err = humantime::DurationError;

    fn from_str(text: &str) -> Result<Span, Self::Err> {
        humantime::parse_duration(text).map(Span)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Span, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Name {
    /// Connections that only listen: server memory per connection.
    Idle,
    /// Many subscribers of `inventory`, stock adjustments at a rate.
    Fanout,
    /// Customers each on their own `orders` stream plus staff, orders placed at a rate.
    Orders,
    /// Fanout, and a fraction of the connections dropped at once mid-run.
    Storm,
    /// Any WebSocket or SSE server, publishing by HTTP POST.
    Generic,
}

impl Name {
    pub fn as_str(self) -> &'static str {
        match self {
            Name::Idle => "idle",
            Name::Fanout => "fanout",
            Name::Orders => "orders",
            Name::Storm => "storm",
            Name::Generic => "generic",
        }
    }
}

/// Every setting of a run, each optional: given as a flag, in the TOML file, or left to
/// the scenario's default.
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Options {
    /// In a TOML file only: the scenario to run when the command line names none.
    #[arg(skip)]
    pub scenario: Option<Name>,
    /// The Tidings server.
    #[arg(long)]
    pub base_url: Option<String>,
    /// A staff or admin account for the writes and the seed.
    #[arg(long, env = "LOADTEST_ADMIN_EMAIL")]
    pub admin_email: Option<String>,
    #[arg(long, env = "LOADTEST_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// WebSocket subscribers.
    #[arg(long)]
    pub ws: Option<usize>,
    /// SSE subscribers.
    #[arg(long)]
    pub sse: Option<usize>,
    /// Topics every subscriber subscribes to (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub topics: Option<Vec<String>>,
    /// Distinct customers the subscribers belong to (and who place the orders).
    #[arg(long)]
    pub users: Option<usize>,
    /// Extra WebSocket subscribers, each a staff user of its own.
    #[arg(long)]
    pub staff: Option<usize>,
    /// Customers from a file of `<user_id> <email> <access_token>` lines
    /// (`tidings user tokens`), instead of registering them.
    #[arg(long)]
    pub tokens: Option<PathBuf>,
    /// Staff users from such a file.
    #[arg(long)]
    pub staff_tokens: Option<PathBuf>,
    /// Subscribers opened per second.
    #[arg(long)]
    pub ramp: Option<f64>,
    /// How long to write (or, idle, to hold the connections).
    #[arg(long)]
    pub duration: Option<Span>,
    /// Writes per second.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Weights of the write kinds: `orders=1,status=1,stock=4,broadcast=1`.
    #[arg(long)]
    pub mix: Option<Mix>,
    /// Products seeded for the writes.
    #[arg(long)]
    pub products: Option<usize>,
    /// Most writes waiting for an answer at once.
    #[arg(long)]
    pub max_in_flight: Option<usize>,
    /// Storm: the fraction of connections dropped at once.
    #[arg(long)]
    pub drop: Option<f64>,
    /// Storm: when, after writing starts, to drop them (default: a third of the duration).
    #[arg(long)]
    pub drop_after: Option<Span>,
    /// How long to wait after the writes for what is in flight to arrive.
    #[arg(long)]
    pub drain: Option<Span>,
    /// Worker processes holding the subscribers (more than one: child processes).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Local addresses to connect from, round robin (e.g. 127.0.0.2,127.0.0.3).
    #[arg(long, value_delimiter = ',')]
    pub source_addrs: Option<Vec<IpAddr>>,
    /// The server's PID: its memory (PSS) and CPU are sampled.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// The server's Prometheus endpoint, for its process memory and CPU when no PID is given.
    #[arg(long)]
    pub metrics_url: Option<String>,
    /// Sent as `Authorization: Bearer` to the Prometheus endpoint (Tidings' public port
    /// serves `/metrics` only with its `TIDINGS_METRICS_TOKEN`).
    #[arg(long, env = "LOADTEST_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Write every figure to this JSON file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a self-contained HTML report to this file.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Other instances for the subscribers (comma-separated base URLs): each user's
    /// subscribers open the instance of their partition (`--place-partitions`) modulo
    /// these, each instance's in a worker process of its own; writes still go to
    /// `--base-url`.
    #[arg(long, value_delimiter = ',')]
    pub subscribe_urls: Option<Vec<String>>,
    /// The partitions by which `--subscribe-urls` places users (the server's
    /// `TIDINGS_BUS_PARTITIONS` function, whatever the server is set to; default 64).
    #[arg(long)]
    pub place_partitions: Option<u32>,
    /// How long to hold the connections, idle, between connecting and writing.
    #[arg(long)]
    pub settle: Option<Span>,
    /// Make no writes: something else makes the events (SQL inserting outbox rows). Once
    /// live, hold the subscribers until this file appears (at most `--duration`), then
    /// expect exactly the notifications it lists, one `<user_id> <body>` line each.
    #[arg(long)]
    pub expect_from: Option<PathBuf>,
    /// Generic mode: the WebSocket URL subscribers open.
    #[arg(long)]
    pub ws_url: Option<String>,
    /// Generic mode: the SSE URL subscribers open.
    #[arg(long)]
    pub sse_url: Option<String>,
    /// Generic mode: a text message each WebSocket sends once open.
    #[arg(long)]
    pub ws_subscribe: Option<String>,
    /// Generic mode: where to POST each message.
    #[arg(long)]
    pub publish_url: Option<String>,
    /// Generic mode: the body POSTed; `{{ts}}` becomes the send time in µs since the epoch,
    /// `{{n}}` the message's number.
    #[arg(long)]
    pub body: Option<String>,
    /// Generic mode: extra request headers, `Name: value` (repeatable).
    #[arg(long)]
    pub header: Option<Vec<String>>,
    /// For testing the tester: the first subscriber skips one event.
    #[arg(long, hide = true)]
    #[serde(skip)]
    pub inject_loss: bool,
}

impl Options {
    /// `self`, with what it leaves unset taken from `file`.
    pub fn or(self, file: Options) -> Options {
        macro_rules! pick {
            ($($field:ident),*) => { Options { $($field: self.$field.or(file.$field),)* inject_loss: self.inject_loss } };
        }
        pick!(
            scenario,
            base_url,
            admin_email,
            admin_password,
            ws,
            sse,
            topics,
            users,
            staff,
            tokens,
            staff_tokens,
            ramp,
            duration,
            rate,
            mix,
            products,
            max_in_flight,
            drop,
            drop_after,
            drain,
            workers,
            source_addrs,
            server_pid,
            metrics_url,
            metrics_token,
            json,
            html,
            subscribe_urls,
            place_partitions,
            settle,
            expect_from,
            ws_url,
            sse_url,
            ws_subscribe,
            publish_url,
            body,
            header
        )
    }

    pub fn from_file(path: &std::path::Path) -> anyhow::Result<Options> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("in {}", path.display()))
    }
}

/// A run with every setting decided.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: Name,
    pub base_url: String,
    pub ws: usize,
    pub sse: usize,
    pub topics: Vec<String>,
    pub users: usize,
    pub staff: usize,
    pub ramp: f64,
    pub duration: Duration,
    pub rate: f64,
    pub mix: Mix,
    pub products: usize,
    pub max_in_flight: usize,
    pub drop: Option<(f64, Duration)>,
    pub drain: Duration,
    pub workers: usize,
    pub options: Options,
}

/// Most sockets one worker process holds: the machine allows 20,000 open files per
/// process, and the process needs some for itself.
pub const SOCKETS_PER_WORKER: usize = 18_000;

impl Scenario {
    pub fn resolve(name: Name, o: Options) -> anyhow::Result<Scenario> {
        let duration = o.duration.map_or(Duration::from_secs(10), |s| s.0);
        let users = o.users.unwrap_or(match name {
            Name::Orders => 100,
            _ => 50,
        });
        let (ws, topics, rate, mix) = match name {
            Name::Idle => (1000, "inventory,orders", 0.0, "stock=1"),
            Name::Fanout | Name::Storm => (100, "inventory", 10.0, "stock=1"),
            Name::Orders => (users, "orders", 50.0, "orders=1"),
            Name::Generic => (0, "", 10.0, "stock=1"),
        };
        let ws = o.ws.unwrap_or(ws);
        let sse = o.sse.unwrap_or(0);
        let staff = o.staff.unwrap_or(if name == Name::Orders { 2 } else { 0 });
        let drop = match name {
            Name::Storm => {
                let fraction = o.drop.unwrap_or(0.5);
                anyhow::ensure!(
                    (0.0..=1.0).contains(&fraction),
                    "--drop is a fraction, 0 to 1"
                );
                Some((fraction, o.drop_after.map_or(duration / 3, |s| s.0)))
            }
            _ => None,
        };
        let total = ws + sse + staff;
        let workers = o
            .workers
            .unwrap_or(1)
            .max(total.div_ceil(SOCKETS_PER_WORKER))
            .max(1);
        if name == Name::Generic {
            anyhow::ensure!(o.publish_url.is_some(), "generic mode needs --publish-url");
            anyhow::ensure!(
                o.body.as_deref().is_some_and(|b| b.contains("{{ts}}")),
                "generic mode needs a --body with {{{{ts}}}}"
            );
            anyhow::ensure!(
                ws == 0 || o.ws_url.is_some(),
                "--ws subscribers need --ws-url"
            );
            anyhow::ensure!(
                sse == 0 || o.sse_url.is_some(),
                "--sse subscribers need --sse-url"
            );
        }
        Ok(Scenario {
            name,
            base_url: o
                .base_url
                .clone()
                .unwrap_or_else(|| "http://127.0.0.1:8080".into()),
            ws,
            sse,
            topics: o.topics.clone().unwrap_or_else(|| {
                topics
                    .split(',')
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect()
            }),
            users: users.max(1),
            staff,
            ramp: o.ramp.unwrap_or(2000.0),
            duration,
            rate: o.rate.unwrap_or(rate),
            mix: o
                .mix
                .clone()
                .unwrap_or_else(|| mix.parse().expect("a valid default")),
            products: o.products.unwrap_or(20).max(1),
            max_in_flight: o.max_in_flight.unwrap_or(512),
            drop,
            drain: o.drain.map_or(Duration::from_secs(10), |s| s.0),
            workers,
            options: o,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_the_file_over_the_defaults() {
        let file: Options = toml::from_str(
            "scenario = \"storm\"\nws = 300\nrate = 5.0\nduration = \"4s\"\nmix = \"stock=2,broadcast=1\"\ntopics = [\"inventory\", \"notifications\"]\n",
        )
        .unwrap();
        let flags = Options {
            rate: Some(50.0),
            ..Options::default()
        };
        let merged = flags.or(file);
        let scenario = Scenario::resolve(merged.scenario.unwrap(), merged).unwrap();
        assert_eq!(scenario.name, Name::Storm);
        assert_eq!((scenario.ws, scenario.rate), (300, 50.0));
        assert_eq!(scenario.duration, Duration::from_secs(4));
        assert_eq!(scenario.topics, ["inventory", "notifications"]);
        assert_eq!(scenario.drop.unwrap().0, 0.5);
    }

    #[test]
    fn an_unknown_field_in_the_file_is_an_error() {
        assert!(toml::from_str::<Options>("wss = 3").is_err());
    }

    #[test]
    fn more_sockets_than_one_process_may_hold_take_more_workers() {
        let o = Options {
            ws: Some(30_000),
            ..Options::default()
        };
        assert_eq!(Scenario::resolve(Name::Idle, o).unwrap().workers, 2);
    }
}
