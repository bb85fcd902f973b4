//! Settings, read once at start from the command line and the environment, and validated.
//!
//! Every setting is taken as text first and parsed here, so that a bad value stops the
//! server with one line naming the variable and what is wrong with it, never a panic or a
//! page of usage text.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// The command line of the `tidings` binary.
#[derive(Debug, Parser)]
#[command(
    name = "tidings",
    version,
    about = "A real-time commerce backend",
    after_help = "Every setting above is also an environment variable (shown in brackets). \
                  These are environment variables only:\n  \
                  TIDINGS_JWT_SECRET  the HS256 signing key, at least 32 bytes, the same on every \
                  instance (no flag, so that it never shows in a process list; generated into \
                  the data directory when unset)\n  \
                  TIDINGS_PASSWORD    the password for `user create` and `seed` (else a prompt, \
                  or a generated one for seed)\n  \
                  RUST_LOG            the log filter, e.g. info or tidings=debug,sqlx=warn \
                  (default info,sqlx=warn,tower_http=info)"
)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings shared by every subcommand.
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// Fill a demo catalog, users of each role (password from TIDINGS_PASSWORD, or
    /// generated and printed) and some orders. Safe to run twice.
    Seed,
    /// Manage users from the command line.
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user; the password comes from TIDINGS_PASSWORD or a prompt, never an argument.
    Create {
        /// The new user's email address.
        #[arg(long)]
        email: String,
        /// customer, staff or admin.
        #[arg(long, default_value = "customer")]
        role: String,
    },
    /// Create many users at once (for load tests) and print one line per user:
    /// `<id> <email> <access token>`. Their emails are `<prefix>-<n>@example.com`; users
    /// that exist already are reused. They share one random password nobody is shown:
    /// they authenticate with the printed tokens, which are signed with the server's key.
    Tokens {
        /// How many users.
        #[arg(long)]
        count: u32,
        /// Start of every email address.
        #[arg(long, default_value = "loadtest")]
        prefix: String,
        /// customer, staff or admin.
        #[arg(long, default_value = "customer")]
        role: String,
        /// How long the tokens stay valid.
        #[arg(long, default_value = "6h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
}

/// Raw settings as given; [`Settings::validate`] turns them into a [`Config`].
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Address to listen on.
    #[arg(
        long,
        env = "TIDINGS_LISTEN",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub listen: String,
    /// Directory for the SQLite database and the generated signing key.
    #[arg(
        long,
        env = "TIDINGS_DATA_DIR",
        default_value = "./data",
        global = true
    )]
    pub data_dir: String,
    /// postgres://… or sqlite:…; a SQLite file in the data directory when unset.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,
    /// Largest number of pooled database connections.
    #[arg(
        long,
        env = "TIDINGS_DB_MAX_CONNECTIONS",
        default_value = "10",
        global = true
    )]
    pub db_max_connections: String,
    /// How long a request waits for a database connection before failing.
    #[arg(
        long,
        env = "TIDINGS_DB_ACQUIRE_TIMEOUT",
        default_value = "5s",
        global = true
    )]
    pub db_acquire_timeout: String,
    /// redis://…; the in-process bus when unset.
    #[arg(long, env = "REDIS_URL", global = true, hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Lifetime of an access token.
    #[arg(
        long,
        env = "TIDINGS_ACCESS_TOKEN_TTL",
        default_value = "15m",
        global = true
    )]
    pub access_token_ttl: String,
    /// Lifetime of a refresh token.
    #[arg(
        long,
        env = "TIDINGS_REFRESH_TOKEN_TTL",
        default_value = "30days",
        global = true
    )]
    pub refresh_token_ttl: String,
    /// `text` (readable) or `json`.
    #[arg(
        long,
        env = "TIDINGS_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    pub log_format: String,
    /// Longest time a REST request may take before it is answered with 408.
    #[arg(
        long,
        env = "TIDINGS_REQUEST_TIMEOUT",
        default_value = "30s",
        global = true
    )]
    pub request_timeout: String,
    /// Largest request body accepted, in bytes.
    #[arg(
        long,
        env = "TIDINGS_BODY_LIMIT",
        default_value = "65536",
        global = true
    )]
    pub body_limit: String,
    /// Attempts at a route that checks a password (login, register, password change)
    /// allowed per client IP per minute (0 turns the limit off).
    #[arg(
        long,
        env = "TIDINGS_AUTH_RATE_PER_IP",
        default_value = "30",
        global = true
    )]
    pub auth_rate_per_ip: String,
    /// Attempts at a route that checks a password allowed per account (the email given, or
    /// the caller's) per minute (0 turns it off).
    #[arg(
        long,
        env = "TIDINGS_AUTH_RATE_PER_EMAIL",
        default_value = "10",
        global = true
    )]
    pub auth_rate_per_email: String,
    /// Password hashes (argon2, 19 MiB each) run at once; `auto` is the cores available.
    #[arg(
        long,
        env = "TIDINGS_HASH_CONCURRENCY",
        default_value = "auto",
        global = true
    )]
    pub hash_concurrency: String,
    /// How long a request waits for a turn to hash before it is answered 503.
    #[arg(
        long,
        env = "TIDINGS_HASH_QUEUE_TIMEOUT",
        default_value = "5s",
        global = true
    )]
    pub hash_queue_timeout: String,
    /// A refresh token refreshed again this soon after its rotation (two tabs at once) gets
    /// the same successor instead of revoking its family; 0 turns this off.
    #[arg(
        long,
        env = "TIDINGS_REFRESH_REUSE_GRACE",
        default_value = "10s",
        global = true
    )]
    pub refresh_reuse_grace: String,
    /// The Redis pub/sub channel of the bus (instances of one deployment share it).
    #[arg(
        long,
        env = "TIDINGS_REDIS_CHANNEL",
        default_value = "tidings:events",
        global = true
    )]
    pub redis_channel: String,
    /// Bytes a live connection's queue may hold before it is closed as a slow consumer.
    #[arg(
        long,
        env = "TIDINGS_QUEUE_BYTES",
        default_value = "1048576",
        global = true
    )]
    pub queue_bytes: String,
    /// The kernel's send buffer of a live connection's socket, in bytes (Linux doubles it);
    /// 0 leaves it to the kernel's autotuning.
    #[arg(
        long,
        env = "TIDINGS_LIVE_SEND_BUFFER",
        default_value = "131072",
        global = true
    )]
    pub live_send_buffer: String,
    /// Live connections (WebSocket and SSE) one user may hold on one instance.
    #[arg(
        long,
        env = "TIDINGS_MAX_CONNECTIONS_PER_USER",
        default_value = "16",
        global = true
    )]
    pub max_connections_per_user: String,
    /// A client that takes none of what is written to it for this long is dropped (REST
    /// responses, WebSocket and SSE alike).
    #[arg(
        long,
        env = "TIDINGS_WRITE_TIMEOUT",
        default_value = "60s",
        global = true
    )]
    pub write_timeout: String,
    /// How often WebSocket connections are pinged.
    #[arg(
        long,
        env = "TIDINGS_WS_PING_INTERVAL",
        default_value = "20s",
        global = true
    )]
    pub ws_ping_interval: String,
    /// A WebSocket peer silent (not even a pong) for this long is dropped.
    #[arg(
        long,
        env = "TIDINGS_WS_IDLE_TIMEOUT",
        default_value = "60s",
        global = true
    )]
    pub ws_idle_timeout: String,
    /// Largest WebSocket message a client may send, in bytes (close 1009 beyond).
    #[arg(
        long,
        env = "TIDINGS_WS_MAX_MESSAGE",
        default_value = "4096",
        global = true
    )]
    pub ws_max_message: String,
    /// For conformance tests only: adds `GET /v1/ws/echo`, a WebSocket without
    /// authentication that sends every message back.
    #[arg(long, env = "TIDINGS_WS_ECHO", default_value = "false", global = true)]
    pub ws_echo: String,
    /// How often an idle SSE stream gets a heartbeat comment.
    #[arg(
        long,
        env = "TIDINGS_SSE_HEARTBEAT",
        default_value = "15s",
        global = true
    )]
    pub sse_heartbeat: String,
    /// How long events are kept for resuming clients.
    #[arg(
        long,
        env = "TIDINGS_EVENT_RETENTION",
        default_value = "24h",
        global = true
    )]
    pub event_retention: String,
    /// How often the relay looks for events when no commit woke it.
    #[arg(long, env = "TIDINGS_RELAY_POLL", default_value = "1s", global = true)]
    pub relay_poll: String,
    /// Live connections closed at once when shutting down…
    #[arg(
        long,
        env = "TIDINGS_DRAIN_BATCH",
        default_value = "500",
        global = true
    )]
    pub drain_batch: String,
    /// …and the pause between such batches.
    #[arg(
        long,
        env = "TIDINGS_DRAIN_PAUSE",
        default_value = "100ms",
        global = true
    )]
    pub drain_pause: String,
    /// Origins of browser apps allowed to call the API (comma-separated, e.g.
    /// `https://shop.example.com`); none when empty.
    #[arg(long, env = "TIDINGS_CORS_ORIGINS", default_value = "", global = true)]
    pub cors_origins: String,
    /// Connections not yet authenticated (reading their first request, or REST), in all;
    /// over it the oldest idle one is closed, or new ones wait (0: no cap).
    #[arg(
        long,
        env = "TIDINGS_MAX_PENDING_CONNECTIONS",
        default_value = "10000",
        global = true
    )]
    pub max_pending_connections: String,
    /// …and from one address (IPv6: one /64); over it the oldest idle one is closed, or the
    /// newcomer is answered 503 (0: no cap).
    #[arg(
        long,
        env = "TIDINGS_MAX_PENDING_PER_IP",
        default_value = "2000",
        global = true
    )]
    pub max_pending_per_ip: String,
    /// Take the client IP from the last X-Forwarded-For entry (behind a trusted proxy only).
    #[arg(
        long,
        env = "TIDINGS_TRUST_FORWARDED_FOR",
        default_value = "false",
        global = true
    )]
    pub trust_forwarded_for: String,
}

/// Where the data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A `postgres://` or `postgresql://` URL.
    Postgres(String),
    /// A SQLite file.
    Sqlite(PathBuf),
}

impl DatabaseUrl {
    /// The URL with any password replaced, fit for a log line or an error message.
    pub fn redacted(&self) -> String {
        match self {
            DatabaseUrl::Sqlite(path) => format!("sqlite:{}", path.display()),
            DatabaseUrl::Postgres(url) => redact_url(url),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address the server listens on.
    pub listen: SocketAddr,
    /// Directory for the SQLite file and the generated JWT key.
    pub data_dir: PathBuf,
    /// The database to use.
    pub database_url: DatabaseUrl,
    /// Largest number of pooled database connections.
    pub db_max_connections: u32,
    /// How long to wait for a pooled connection.
    pub db_acquire_timeout: Duration,
    /// The Redis bus, if any.
    pub redis_url: Option<String>,
    /// The JWT signing key from the environment, if given; otherwise one is kept in `data_dir`.
    pub jwt_secret: Option<Vec<u8>>,
    /// Lifetime of an access token.
    pub access_token_ttl: Duration,
    /// Lifetime of a refresh token.
    pub refresh_token_ttl: Duration,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// Longest time a REST request may take.
    pub request_timeout: Duration,
    /// Largest request body, in bytes.
    pub body_limit: usize,
    /// Auth attempts per client IP per minute; 0 is unlimited.
    pub auth_rate_per_ip: u32,
    /// Auth attempts per account per minute; 0 is unlimited.
    pub auth_rate_per_email: u32,
    /// Password hashes run at once.
    pub hash_concurrency: usize,
    /// How long a request waits for its turn to hash.
    pub hash_queue_timeout: Duration,
    /// How long after a rotation a refresh token still yields its successor; zero is never.
    pub refresh_reuse_grace: Duration,
    /// Whether X-Forwarded-For names the client.
    pub trust_forwarded_for: bool,
    /// The bus's Redis channel.
    pub redis_channel: String,
    /// A live connection's queue limit, in bytes.
    pub queue_bytes: usize,
    /// A live socket's send buffer, in bytes; `None` for the kernel's autotuning.
    pub live_send_buffer: Option<usize>,
    pub max_connections_per_user: usize,
    /// How long a write may wait for a client that takes no bytes.
    pub write_timeout: Duration,
    pub ws_ping_interval: Duration,
    pub ws_idle_timeout: Duration,
    pub ws_max_message: usize,
    /// Whether `GET /v1/ws/echo` exists (conformance tests only).
    pub ws_echo: bool,
    pub sse_heartbeat: Duration,
    pub event_retention: Duration,
    pub relay_poll: Duration,
    pub drain_batch: usize,
    pub drain_pause: Duration,
    /// Browser origins allowed by CORS.
    pub cors_origins: Vec<String>,
    /// Caps on connections not yet authenticated.
    pub pending: crate::net::server::Limits,
}

/// A setting that could not be used: which one, and why.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {problem}")]
pub struct ConfigError {
    /// The environment variable (the flag has the same name in kebab case).
    pub var: &'static str,
    /// What is wrong with its value.
    pub problem: String,
}

fn invalid(var: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        problem: problem.into(),
    }
}

/// The shortest JWT signing key accepted: HS256 wants at least 256 bits.
pub const MIN_JWT_SECRET_LEN: usize = 32;

impl Settings {
    /// Settings with every default, as if nothing was set; tests start from these.
    pub fn defaults() -> Self {
        Cli::parse_from(["tidings"]).settings
    }

    /// Checks every setting, reading `TIDINGS_JWT_SECRET` from the environment (it has no
    /// flag, so that it never shows in a process list).
    pub fn validate(&self) -> Result<Config, ConfigError> {
        self.validate_with_secret(std::env::var("TIDINGS_JWT_SECRET").ok())
    }

    /// [`Settings::validate`] with the signing key given explicitly.
    pub fn validate_with_secret(&self, jwt_secret: Option<String>) -> Result<Config, ConfigError> {
        let listen = parse_listen(&self.listen)?;
        if self.data_dir.trim().is_empty() {
            return Err(invalid("TIDINGS_DATA_DIR", "must not be empty"));
        }
        let data_dir = PathBuf::from(&self.data_dir);
        let database_url = match self.database_url.as_deref().map(str::trim) {
            None | Some("") => DatabaseUrl::Sqlite(data_dir.join("tidings.db")),
            Some(url) => parse_database_url(url)?,
        };
        let redis_url = match self.redis_url.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => {
                Some(url.to_owned())
            }
            Some(url) => {
                return Err(invalid(
                    "REDIS_URL",
                    format!(
                        "{} is not a redis:// or rediss:// URL",
                        quote(&redact_url(url))
                    ),
                ));
            }
        };
        let jwt_secret = match jwt_secret {
            None => None,
            Some(s) if s.len() < MIN_JWT_SECRET_LEN => {
                return Err(invalid(
                    "TIDINGS_JWT_SECRET",
                    format!("must be at least {MIN_JWT_SECRET_LEN} bytes long"),
                ));
            }
            Some(s) => Some(s.into_bytes()),
        };
        let log_format = match self.log_format.trim().to_ascii_lowercase().as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(invalid(
                    "TIDINGS_LOG_FORMAT",
                    format!("{} is not one of text, json", quote(other)),
                ));
            }
        };
        let db_max_connections = parse_number(
            "TIDINGS_DB_MAX_CONNECTIONS",
            &self.db_max_connections,
            1..=10_000,
        )?;
        Ok(Config {
            listen,
            data_dir,
            database_url,
            db_max_connections,
            db_acquire_timeout: parse_duration(
                "TIDINGS_DB_ACQUIRE_TIMEOUT",
                &self.db_acquire_timeout,
            )?,
            redis_url,
            jwt_secret,
            access_token_ttl: parse_duration("TIDINGS_ACCESS_TOKEN_TTL", &self.access_token_ttl)?,
            refresh_token_ttl: parse_duration(
                "TIDINGS_REFRESH_TOKEN_TTL",
                &self.refresh_token_ttl,
            )?,
            log_format,
            request_timeout: parse_duration("TIDINGS_REQUEST_TIMEOUT", &self.request_timeout)?,
            body_limit: parse_number("TIDINGS_BODY_LIMIT", &self.body_limit, 1024..=64 << 20)?,
            auth_rate_per_ip: parse_number(
                "TIDINGS_AUTH_RATE_PER_IP",
                &self.auth_rate_per_ip,
                0..=1_000_000,
            )?,
            auth_rate_per_email: parse_number(
                "TIDINGS_AUTH_RATE_PER_EMAIL",
                &self.auth_rate_per_email,
                0..=1_000_000,
            )?,
            hash_concurrency: match self.hash_concurrency.trim() {
                "auto" => std::thread::available_parallelism().map_or(1, |n| n.get()),
                n => parse_number("TIDINGS_HASH_CONCURRENCY", n, 1..=1024)?,
            },
            hash_queue_timeout: parse_duration(
                "TIDINGS_HASH_QUEUE_TIMEOUT",
                &self.hash_queue_timeout,
            )?,
            refresh_reuse_grace: match humantime::parse_duration(self.refresh_reuse_grace.trim()) {
                Ok(zero) if zero.is_zero() => zero,
                _ => parse_duration("TIDINGS_REFRESH_REUSE_GRACE", &self.refresh_reuse_grace)?,
            },
            trust_forwarded_for: parse_bool(
                "TIDINGS_TRUST_FORWARDED_FOR",
                &self.trust_forwarded_for,
            )?,
            redis_channel: match self.redis_channel.trim() {
                "" => return Err(invalid("TIDINGS_REDIS_CHANNEL", "must not be empty")),
                channel => channel.to_owned(),
            },
            queue_bytes: parse_number("TIDINGS_QUEUE_BYTES", &self.queue_bytes, 4096..=1 << 30)?,
            live_send_buffer: match parse_number(
                "TIDINGS_LIVE_SEND_BUFFER",
                &self.live_send_buffer,
                0..=1 << 30,
            )? {
                0 => None,
                n if n < 4096 => {
                    return Err(invalid(
                        "TIDINGS_LIVE_SEND_BUFFER",
                        "must be 0 (the kernel's autotuning) or at least 4096",
                    ));
                }
                n => Some(n),
            },
            max_connections_per_user: parse_number(
                "TIDINGS_MAX_CONNECTIONS_PER_USER",
                &self.max_connections_per_user,
                1..=1_000_000,
            )?,
            write_timeout: parse_duration("TIDINGS_WRITE_TIMEOUT", &self.write_timeout)?,
            ws_ping_interval: parse_duration("TIDINGS_WS_PING_INTERVAL", &self.ws_ping_interval)?,
            ws_idle_timeout: parse_duration("TIDINGS_WS_IDLE_TIMEOUT", &self.ws_idle_timeout)?,
            ws_max_message: parse_number(
                "TIDINGS_WS_MAX_MESSAGE",
                &self.ws_max_message,
                256..=64 << 20,
            )?,
            ws_echo: parse_bool("TIDINGS_WS_ECHO", &self.ws_echo)?,
            sse_heartbeat: parse_duration("TIDINGS_SSE_HEARTBEAT", &self.sse_heartbeat)?,
            event_retention: parse_duration("TIDINGS_EVENT_RETENTION", &self.event_retention)?,
            relay_poll: parse_duration("TIDINGS_RELAY_POLL", &self.relay_poll)?,
            drain_batch: parse_number("TIDINGS_DRAIN_BATCH", &self.drain_batch, 1..=1_000_000)?,
            drain_pause: parse_duration("TIDINGS_DRAIN_PAUSE", &self.drain_pause)?,
            cors_origins: parse_origins(&self.cors_origins)?,
            pending: crate::net::server::Limits {
                total: parse_number(
                    "TIDINGS_MAX_PENDING_CONNECTIONS",
                    &self.max_pending_connections,
                    0..=10_000_000,
                )?,
                per_ip: parse_number(
                    "TIDINGS_MAX_PENDING_PER_IP",
                    &self.max_pending_per_ip,
                    0..=10_000_000,
                )?,
                shed_after: crate::net::server::Limits::DEFAULT_SHED_AFTER,
            },
        })
    }
}

/// `IP:port` or `host:port`; a host name is resolved now, and the first of its addresses
/// is the one listened on (`localhost:8080` is usually `127.0.0.1:8080` or `[::1]:8080`).
fn parse_listen(value: &str) -> Result<SocketAddr, ConfigError> {
    const VAR: &str = "TIDINGS_LISTEN";
    let value = value.trim();
    if let Ok(addr) = value.parse() {
        return Ok(addr);
    }
    let hint = "expected host:port or IP:port, e.g. 127.0.0.1:8080, [::]:8080 or localhost:8080";
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err(invalid(
            VAR,
            format!("{} has no port ({hint})", quote(value)),
        ));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(invalid(
            VAR,
            format!("{} is not host:port ({hint})", quote(value)),
        ));
    }
    use std::net::ToSocketAddrs;
    match value.to_socket_addrs().map(|mut addrs| addrs.next()) {
        Ok(Some(addr)) => Ok(addr),
        Ok(None) | Err(_) => Err(invalid(
            VAR,
            format!(
                "the host name in {} does not resolve ({hint})",
                quote(value)
            ),
        )),
    }
}

fn parse_origins(value: &str) -> Result<Vec<String>, ConfigError> {
    let mut origins = Vec::new();
    for origin in value.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let valid = (origin.starts_with("http://") || origin.starts_with("https://"))
            && !origin.trim_end_matches('/').contains(['?', '#', ' '])
            && origin
                .split("://")
                .nth(1)
                .is_some_and(|host| !host.is_empty() && !host.contains('/'));
        if !valid {
            return Err(invalid(
                "TIDINGS_CORS_ORIGINS",
                format!(
                    "{} is not an origin (scheme://host[:port], no path)",
                    quote(origin)
                ),
            ));
        }
        origins.push(origin.to_owned());
    }
    Ok(origins)
}

fn parse_database_url(url: &str) -> Result<DatabaseUrl, ConfigError> {
    const VAR: &str = "DATABASE_URL";
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(DatabaseUrl::Postgres(url.to_owned()));
    }
    if let Some(rest) = url.strip_prefix("sqlite:") {
        let path = rest.strip_prefix("//").unwrap_or(rest);
        let path = path.split('?').next().unwrap_or_default();
        if path.is_empty() || path == ":memory:" {
            return Err(invalid(
                VAR,
                "a SQLite URL must name a file (e.g. sqlite:./data/tidings.db)",
            ));
        }
        return Ok(DatabaseUrl::Sqlite(Path::new(path).to_owned()));
    }
    Err(invalid(
        VAR,
        format!(
            "{} is neither a postgres:// nor a sqlite: URL",
            quote(&redact_url(url))
        ),
    ))
}

fn parse_duration(var: &'static str, value: &str) -> Result<Duration, ConfigError> {
    let duration = humantime::parse_duration(value.trim()).map_err(|e| {
        invalid(
            var,
            format!(
                "{} is not a duration ({e}; write e.g. 30s, 15m, 2h)",
                quote(value)
            ),
        )
    })?;
    if duration.is_zero() {
        return Err(invalid(var, "must be longer than zero"));
    }
    Ok(duration)
}

fn parse_number<T>(
    var: &'static str,
    value: &str,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let n: T = value
        .trim()
        .parse()
        .map_err(|_| invalid(var, format!("{} is not a whole number", quote(value))))?;
    if !range.contains(&n) {
        return Err(invalid(
            var,
            format!("{n} is out of range ({} to {})", range.start(), range.end()),
        ));
    }
    Ok(n)
}

fn parse_bool(var: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(invalid(
            var,
            format!("{} is not true or false", quote(value)),
        )),
    }
}

fn quote(value: &str) -> String {
    format!("{value:?}")
}

/// Hides the password of a URL such as `postgres://user:secret@host/db`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{tail}")
            } else {
                format!("{scheme}://{user}@{host}{tail}")
            }
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings::defaults()
    }

    #[test]
    fn defaults_are_valid_and_embedded() {
        let config = settings().validate_with_secret(None).unwrap();
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(
            config.database_url,
            DatabaseUrl::Sqlite(PathBuf::from("./data/tidings.db"))
        );
        assert_eq!(config.access_token_ttl, Duration::from_secs(900));
        assert!(config.redis_url.is_none());
    }

    #[test]
    fn a_bad_listen_address_names_the_variable() {
        for bad in [
            "nowhere",
            "localhost",
            "localhost:http",
            ":8080",
            "no-such-host.invalid:8080",
        ] {
            let mut s = settings();
            s.listen = bad.into();
            let err = s.validate_with_secret(None).unwrap_err();
            assert_eq!(err.var, "TIDINGS_LISTEN");
            assert!(err.problem.contains("host:port"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_host_name_is_listened_on_at_its_address() {
        let mut s = settings();
        s.listen = "localhost:8080".into();
        let listen = s.validate_with_secret(None).unwrap().listen;
        assert!(listen.ip().is_loopback(), "{listen}");
        assert_eq!(listen.port(), 8080);
        s.listen = "[::]:9000".into();
        assert_eq!(s.validate_with_secret(None).unwrap().listen.port(), 9000);
    }

    #[test]
    fn an_unknown_database_scheme_is_refused_without_showing_the_password() {
        let mut s = settings();
        s.database_url = Some("mysql://root:hunter2@db/x".into());
        let err = s.validate_with_secret(None).unwrap_err();
        assert_eq!(err.var, "DATABASE_URL");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn a_short_jwt_secret_is_refused() {
        let err = settings()
            .validate_with_secret(Some("short".into()))
            .unwrap_err();
        assert_eq!(err.var, "TIDINGS_JWT_SECRET");
        assert!(!err.to_string().contains("short"));
    }

    #[test]
    fn durations_numbers_and_formats_are_checked() {
        type Change = fn(&mut Settings);
        let cases: [(Change, &str); 6] = [
            (
                |s| s.access_token_ttl = "soon".into(),
                "TIDINGS_ACCESS_TOKEN_TTL",
            ),
            (|s| s.log_format = "xml".into(), "TIDINGS_LOG_FORMAT"),
            (
                |s| s.db_max_connections = "0".into(),
                "TIDINGS_DB_MAX_CONNECTIONS",
            ),
            (|s| s.redis_url = Some("http://x".into()), "REDIS_URL"),
            (
                |s| s.cors_origins = "https://ok.example, shop.example".into(),
                "TIDINGS_CORS_ORIGINS",
            ),
            (
                |s| s.max_pending_per_ip = "many".into(),
                "TIDINGS_MAX_PENDING_PER_IP",
            ),
        ];
        for (change, var) in cases {
            let mut s = settings();
            change(&mut s);
            assert_eq!(s.validate_with_secret(None).unwrap_err().var, var);
        }
    }

    #[test]
    fn hashing_and_refresh_settings_have_their_defaults_and_zero_grace_is_off() {
        let config = settings().validate_with_secret(None).unwrap();
        assert!(config.hash_concurrency >= 1);
        assert_eq!(config.refresh_reuse_grace, Duration::from_secs(10));
        let mut s = settings();
        (s.hash_concurrency, s.refresh_reuse_grace) = ("3".into(), "0s".into());
        let config = s.validate_with_secret(None).unwrap();
        assert_eq!(config.hash_concurrency, 3);
        assert_eq!(config.refresh_reuse_grace, Duration::ZERO);
        s.hash_concurrency = "0".into();
        assert_eq!(
            s.validate_with_secret(None).unwrap_err().var,
            "TIDINGS_HASH_CONCURRENCY"
        );
    }

    #[test]
    fn a_live_send_buffer_is_a_size_or_0_for_the_kernels_autotuning() {
        let mut s = settings();
        assert_eq!(
            s.validate_with_secret(None).unwrap().live_send_buffer,
            Some(128 * 1024)
        );
        s.live_send_buffer = "0".into();
        assert_eq!(s.validate_with_secret(None).unwrap().live_send_buffer, None);
        s.live_send_buffer = "100".into();
        assert_eq!(
            s.validate_with_secret(None).unwrap_err().var,
            "TIDINGS_LIVE_SEND_BUFFER"
        );
    }

    #[test]
    fn redact_url_hides_only_the_password() {
        assert_eq!(
            redact_url("postgres://app:secret@db:5432/tidings"),
            "postgres://app:***@db:5432/tidings"
        );
        assert_eq!(redact_url("postgres://db/tidings"), "postgres://db/tidings");
    }
}
