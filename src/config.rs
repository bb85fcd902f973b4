//! Settings, read once at start from the command line and the environment, and validated.
//!
//! [`Config`] is their one definition: each field is a flag, an environment variable, a
//! default, a typed value parser and the help text that `tidings --help` and README.md's
//! settings table (see [`settings_table`]) show. A bad value stops the server with one
//! line naming the variable, the flag and what is wrong with it, never a panic or a page
//! of usage text ([`ConfigError::from_clap`]); checks that span settings are in
//! [`Config::validate`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand};

/// The command line of the `tidings` binary.
#[derive(Debug, Parser)]
#[command(
    name = "tidings",
    version,
    about = "A real-time commerce backend",
    after_help = after_help()
)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings shared by every subcommand.
    #[command(flatten)]
    pub settings: Config,
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
    /// Ask the server at TIDINGS_LISTEN whether it is ready (`GET /readyz`) and exit 0 if
    /// it is, 1 if it is not or does not answer: a container's HEALTHCHECK, with no curl in
    /// the image. An unspecified listen address (`0.0.0.0`, `[::]`) is asked on loopback.
    Healthcheck {
        /// Ask this URL instead, e.g. `http://10.0.0.5:8080/readyz`.
        #[arg(long)]
        url: Option<String>,
        /// How long to wait for the connection and the answer's head together.
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
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

/// The settings that are environment variables only, for `--help` and the README's table.
struct EnvOnly {
    var: &'static str,
    default: &'static str,
    meaning: &'static str,
}

const ENV_ONLY: [EnvOnly; 6] = [
    EnvOnly {
        var: "TIDINGS_JWT_SECRET",
        default: "unset: generated into `$TIDINGS_DATA_DIR/jwt-secret`",
        meaning: "the HS256 signing key, at least 32 bytes, the same on every instance \
                  (no flag, so that it never shows in a process list)",
    },
    EnvOnly {
        var: "TIDINGS_VAPID_PRIVATE_KEY",
        default: "unset: generated into `$TIDINGS_DATA_DIR/vapid-private-key`",
        meaning: "the Web Push (VAPID) signing key: a P-256 private key as base64url of its \
                  32-byte scalar, the same on every instance (browsers' subscriptions are \
                  bound to its public key; no flag, so that it never shows in a process list)",
    },
    EnvOnly {
        var: "TIDINGS_SMTP_URL",
        default: "unset: no email is sent",
        meaning: "the mail server: `smtp://user:pass@host:port` (plain), \
                  `smtp://…?tls=starttls` (STARTTLS required), `smtp://…?tls=opportunistic` \
                  (STARTTLS if offered), `smtps://…` (TLS from the start); user and password \
                  percent-encoded. Unset, password reset and verification requests are \
                  answered as usual and nothing is sent (no flag, so that the password never \
                  shows in a process list)",
    },
    EnvOnly {
        var: "TIDINGS_METRICS_TOKEN",
        default: "unset",
        meaning: "a bearer token (at least 16 visible ASCII characters) that `/metrics` then \
                  requires, wherever it is served; without `TIDINGS_ADMIN_LISTEN` it is what \
                  puts `/metrics` on the public port (no flag, so that it never shows in a \
                  process list)",
    },
    EnvOnly {
        var: "TIDINGS_PASSWORD",
        default: "unset: a prompt (`seed`: generated and printed)",
        meaning: "the password of the users made by `tidings user create` and `tidings seed`",
    },
    EnvOnly {
        var: "RUST_LOG",
        default: "`info,sqlx=warn,tower_http=info`",
        meaning: "the log filter, e.g. `info` or `tidings=debug,sqlx=warn` \
                  ([`EnvFilter`](https://docs.rs/tracing-subscriber/latest/tracing_subscriber/filter/struct.EnvFilter.html) syntax)",
    },
];

fn after_help() -> String {
    let mut help = String::from(
        "Every setting above is also an environment variable (shown in brackets). \
         These are environment variables only:",
    );
    for EnvOnly {
        var,
        default,
        meaning,
    } in &ENV_ONLY
    {
        let meaning = meaning.split(" ([").next().unwrap_or(meaning);
        let default = if default.starts_with("unset") {
            default.to_string()
        } else {
            format!("default {default}")
        };
        help.push_str(&format!("\n  {var:<19} {meaning}; {default}"));
    }
    help.replace('`', "")
}

/// The settings, as the flags and environment variables define them; [`Config::validate`]
/// completes and checks them. Each field's doc comment is its help text in `--help` and in
/// README.md's settings table, so it is written for whoever runs the server.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// address to listen on: `IP:port` or `host:port` (`0.0.0.0:8080` for every interface)
    #[arg(long, env = "TIDINGS_LISTEN", default_value = "127.0.0.1:8080", global = true,
        value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// a second address, for operators only (`127.0.0.1:9090`), serving `/metrics`,
    /// `/livez` and `/readyz`; set, `/metrics` is not on the public port. Unset, `/metrics`
    /// is on the public port only with `TIDINGS_METRICS_TOKEN`, and not served otherwise
    #[arg(long, env = "TIDINGS_ADMIN_LISTEN", global = true, default_value = "",
        hide_default_value = true, value_parser = parse_admin_listen)]
    pub admin_listen: std::option::Option<SocketAddr>,
    /// directory for the SQLite file and the generated JWT key (created if absent)
    #[arg(long, env = "TIDINGS_DATA_DIR", default_value = "./data", global = true,
        value_parser = parse_data_dir)]
    pub data_dir: PathBuf,
    /// `postgres://…` for PostgreSQL, or `sqlite:PATH`; unset, the SQLite file
    /// `$TIDINGS_DATA_DIR/tidings.db`
    #[arg(id = "database-url", long = "database-url", value_name = "DATABASE_URL",
        env = "DATABASE_URL", global = true,
        hide_env_values = true, default_value = "", hide_default_value = true,
        value_parser = parse_database_url)]
    database_url_setting: std::option::Option<DatabaseUrl>,
    /// The database to use: `DATABASE_URL`, or the SQLite file in `data_dir` (set by
    /// [`Config::validate`]).
    #[arg(skip = DatabaseUrl::Sqlite(PathBuf::new()))]
    pub database_url: DatabaseUrl,
    /// largest number of pooled database connections
    #[arg(long, env = "TIDINGS_DB_MAX_CONNECTIONS", default_value = "10", global = true,
        value_parser = between(1u32, 10_000))]
    pub db_max_connections: u32,
    /// how long a request waits for a pooled connection
    #[arg(long, env = "TIDINGS_DB_ACQUIRE_TIMEOUT", default_value = "5s", global = true,
        value_parser = parse_duration)]
    pub db_acquire_timeout: Duration,
    /// `redis://…` (or `rediss://…`) to fan events out across instances; several
    /// comma-separated URLs are the nodes of a Redis Cluster (sharded pub/sub); unset, an
    /// in-process bus
    #[arg(long, env = "REDIS_URL", global = true, hide_env_values = true,
        default_value = "", hide_default_value = true, value_parser = parse_redis_url)]
    pub redis_url: std::option::Option<String>,
    /// `REDIS_URL` is a node of a Redis Cluster even if it names only one: the bus uses
    /// sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`)
    #[arg(long, env = "TIDINGS_REDIS_CLUSTER", default_value = "false", global = true,
        action = ArgAction::Set, value_parser = parse_bool)]
    pub redis_cluster: bool,
    /// The JWT signing key from `TIDINGS_JWT_SECRET`, if given (no flag, so that it never
    /// shows in a process list); otherwise one is kept in `data_dir`. Set by
    /// [`Config::validate`].
    #[arg(skip)]
    pub jwt_secret: Option<Vec<u8>>,
    /// The token `/metrics` requires, from `TIDINGS_METRICS_TOKEN` (no flag, for the same
    /// reason). Set by [`Config::validate`].
    #[arg(skip)]
    pub metrics_token: Option<MetricsToken>,
    /// The VAPID private key from `TIDINGS_VAPID_PRIVATE_KEY`, if given (no flag, like the
    /// JWT key); otherwise one is kept in `data_dir`. Set by [`Config::validate`].
    #[arg(skip)]
    pub vapid_private_key: Option<VapidPrivateKey>,
    /// The mail server from `TIDINGS_SMTP_URL`, if given (no flag, so that its password never
    /// shows in a process list); unset, no email is sent. Set by [`Config::validate`].
    #[arg(skip)]
    pub smtp_url: Option<SmtpUrl>,
    /// the sender of every email, a mailbox (`Tidings <no-reply@shop.example.com>`);
    /// needed with `TIDINGS_SMTP_URL`
    #[arg(long, env = "TIDINGS_MAIL_FROM", default_value = "", hide_default_value = true,
        global = true, value_parser = parse_mailbox)]
    pub mail_from: std::option::Option<lettre::message::Mailbox>,
    /// where users reach this server (`https://shop.example.com`): the base of the links in
    /// emails, which open the dashboard (`/app/#/reset?token=…`, `/app/#/verify?token=…`);
    /// needed with `TIDINGS_SMTP_URL`
    #[arg(long, env = "TIDINGS_PUBLIC_URL", default_value = "", hide_default_value = true,
        global = true, value_parser = parse_public_url)]
    pub public_url: std::option::Option<String>,
    /// emails (reset and verification links) one address may be sent per hour; more
    /// requests are answered 429; `0` turns it off
    #[arg(long, env = "TIDINGS_MAIL_RATE_PER_ADDRESS", default_value = "5", global = true,
        value_parser = between(0u32, 1_000_000))]
    pub mail_rate_per_address: u32,
    /// refuse orders (403 `email_not_verified`) from users who have not verified their
    /// email address; needs `TIDINGS_SMTP_URL`
    #[arg(long, env = "TIDINGS_REQUIRE_VERIFIED_EMAIL", default_value = "false",
        global = true, action = ArgAction::Set, value_parser = parse_bool)]
    pub require_verified_email: bool,
    /// access token lifetime (`30s`, `15m`, `2h`, …)
    #[arg(long, env = "TIDINGS_ACCESS_TOKEN_TTL", default_value = "15m", global = true,
        value_parser = parse_duration)]
    pub access_token_ttl: Duration,
    /// refresh token lifetime
    #[arg(long, env = "TIDINGS_REFRESH_TOKEN_TTL", default_value = "30days", global = true,
        value_parser = parse_duration)]
    pub refresh_token_ttl: Duration,
    /// longest a REST request may take (then 408)
    #[arg(long, env = "TIDINGS_REQUEST_TIMEOUT", default_value = "30s", global = true,
        value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// largest request body in bytes, up to 64 MiB (then 413)
    #[arg(long, env = "TIDINGS_BODY_LIMIT", default_value = "65536", global = true,
        value_parser = between(1024usize, 64 << 20))]
    pub body_limit: usize,
    /// attempts per client IP per minute at the account routes (login, register, password
    /// change and reset, email verification); `0` turns it off
    #[arg(long, env = "TIDINGS_AUTH_RATE_PER_IP", default_value = "30", global = true,
        value_parser = between(0u32, 1_000_000))]
    pub auth_rate_per_ip: u32,
    /// attempts per account (the email given, or the caller's) per minute at those routes,
    /// counted together; `0` turns it off
    #[arg(long, env = "TIDINGS_AUTH_RATE_PER_EMAIL", default_value = "10", global = true,
        value_parser = between(0u32, 1_000_000))]
    pub auth_rate_per_email: u32,
    /// password hashes (argon2id, 19 MiB each) computed at once; `auto` is the cores
    /// available
    #[arg(long, env = "TIDINGS_HASH_CONCURRENCY", default_value = "auto", global = true,
        value_parser = parse_hash_concurrency)]
    pub hash_concurrency: usize,
    /// how long a login, registration or password change waits for a turn to hash before
    /// it is answered `503 busy` with `Retry-After`
    #[arg(long, env = "TIDINGS_HASH_QUEUE_TIMEOUT", default_value = "5s", global = true,
        value_parser = parse_duration)]
    pub hash_queue_timeout: Duration,
    /// a refresh token presented again this soon after its rotation (two tabs refreshing at
    /// once) gets the same successor instead of revoking its family; `0` turns it off
    #[arg(long, env = "TIDINGS_REFRESH_REUSE_GRACE", default_value = "10s", global = true,
        value_parser = parse_duration_or_zero)]
    pub refresh_reuse_grace: Duration,
    /// how long a user's token version, role and email, once read, answer for their
    /// requests without a database read; a revocation (logout-all, password change or
    /// reset, role change, disable) clears it at once on every instance, so this only bounds
    /// how long a change made around the API (SQL by hand) goes unseen; `0` turns the cache
    /// off
    #[arg(long, env = "TIDINGS_AUTH_CACHE_TTL", default_value = "30s", global = true,
        value_parser = parse_duration_or_zero)]
    pub auth_cache_ttl: Duration,
    /// take the client IP from the last `X-Forwarded-For` entry (only behind your own proxy)
    #[arg(long, env = "TIDINGS_TRUST_FORWARDED_FOR", default_value = "false", global = true,
        action = ArgAction::Set, value_parser = parse_bool)]
    pub trust_forwarded_for: bool,
    /// connections not yet authenticated (reading their first request, or REST keep-alive),
    /// in all; over it the oldest one idle for 2 s is closed, else new clients wait in the
    /// kernel's backlog; `0` turns it off
    #[arg(long, env = "TIDINGS_MAX_PENDING_CONNECTIONS", default_value = "10000",
        global = true, value_parser = between(0usize, 10_000_000))]
    max_pending_connections: usize,
    /// the same, from one address (an IPv6 /64 counts as one); over it the oldest idle one
    /// from that address is closed, else the newcomer gets `503` with `Retry-After`; `0`
    /// turns it off
    #[arg(long, env = "TIDINGS_MAX_PENDING_PER_IP", default_value = "2000", global = true,
        value_parser = between(0usize, 10_000_000))]
    max_pending_per_ip: usize,
    /// The caps on connections not yet authenticated, from the two settings above (set by
    /// [`Config::validate`]).
    #[arg(skip = crate::net::server::Limits {
        total: 0,
        per_ip: 0,
        shed_after: crate::net::server::Limits::DEFAULT_SHED_AFTER,
    })]
    pub pending: crate::net::server::Limits,
    /// browser origins allowed to call the API and open streams, comma-separated
    /// (`https://shop.example.com`)
    #[arg(long, env = "TIDINGS_CORS_ORIGINS", default_value = "", global = true,
        value_parser = parse_origins)]
    pub cors_origins: std::vec::Vec<String>,
    /// the bus's Redis channel; one per deployment
    #[arg(long, env = "TIDINGS_REDIS_CHANNEL", default_value = "tidings:events",
        global = true, value_parser = parse_redis_channel)]
    pub redis_channel: String,
    /// with `REDIS_URL`, the bus's user lanes: `0` puts every event on the one channel;
    /// K > 0 splits each batch into `{channel}:all`, `{channel}:staff`, `{channel}:u:{k}`
    /// (users hashed into K lanes), with a `{channel}:clock` every 100 ms, and each
    /// instance follows only the lanes of the connections it holds. Every instance of a deployment needs the
    /// same value
    #[arg(long, env = "TIDINGS_BUS_PARTITIONS", default_value = "0", global = true,
        value_parser = between(0u32, 4096))]
    pub bus_partitions: u32,
    /// on a partitioned bus, how long an instance keeps following a user lane (or `staff`)
    /// after the last connection that needed it went, so that clients reconnecting do not
    /// cost an unsubscribe and a subscribe each; `0` stops following it at once
    #[arg(long, env = "TIDINGS_BUS_LANE_LINGER", default_value = "10s", global = true,
        value_parser = parse_duration_or_zero)]
    pub bus_lane_linger: Duration,
    /// bytes a live connection may have queued before it is closed as a slow consumer
    #[arg(long, env = "TIDINGS_QUEUE_BYTES", default_value = "1048576", global = true,
        value_parser = between(4096usize, 1 << 30))]
    pub queue_bytes: usize,
    /// the kernel's send buffer of each live connection's socket, in bytes (Linux holds
    /// twice this, capped by `net.core.wmem_max`); `0` leaves it to the kernel, which grows
    /// it to 4 MiB
    #[arg(long, env = "TIDINGS_LIVE_SEND_BUFFER", default_value = "131072", global = true,
        value_parser = parse_send_buffer)]
    pub live_send_buffer: std::option::Option<usize>,
    /// fan-out shards, each on a thread of its own holding a share of the live connections
    /// (a user's all in one): a number, or `auto` for the cores available to the process
    #[arg(long, env = "TIDINGS_HUB_SHARDS", default_value = "auto", global = true,
        value_parser = parse_hub_shards)]
    pub hub_shards: std::option::Option<usize>,
    /// live connections per user per instance (WebSocket closes with 4029, SSE gets 429)
    #[arg(long, env = "TIDINGS_MAX_CONNECTIONS_PER_USER", default_value = "16",
        global = true, value_parser = between(1usize, 1_000_000))]
    pub max_connections_per_user: usize,
    /// a client that takes none of what is written to it this long (a response, a
    /// WebSocket's or an event stream's bytes) is dropped
    #[arg(long, env = "TIDINGS_WRITE_TIMEOUT", default_value = "60s", global = true,
        value_parser = parse_duration)]
    pub write_timeout: Duration,
    /// WebSocket heartbeat: how often connections are pinged
    #[arg(long, env = "TIDINGS_WS_PING_INTERVAL", default_value = "20s", global = true,
        value_parser = parse_duration)]
    pub ws_ping_interval: Duration,
    /// a WebSocket peer that sends nothing (not even a pong) this long is dropped; longer
    /// than `TIDINGS_WS_PING_INTERVAL`
    #[arg(long, env = "TIDINGS_WS_IDLE_TIMEOUT", default_value = "60s", global = true,
        value_parser = parse_duration)]
    pub ws_idle_timeout: Duration,
    /// largest client message in bytes, up to 64 MiB (close 1009 beyond); a message may
    /// come in at most one frame per 64 bytes of it (64 frames at the default)
    #[arg(long, env = "TIDINGS_WS_MAX_MESSAGE", default_value = "4096", global = true,
        value_parser = between(256usize, 64 << 20))]
    pub ws_max_message: usize,
    /// for conformance tests only: adds `GET /v1/ws/echo`, a WebSocket without
    /// authentication that sends every message back (it never reaches the hub); absent
    /// (404) when off
    #[arg(long, env = "TIDINGS_WS_ECHO", default_value = "false", global = true,
        action = ArgAction::Set, value_parser = parse_bool)]
    pub ws_echo: bool,
    /// SSE keep-alive comment: how often an idle event stream gets one
    #[arg(long, env = "TIDINGS_SSE_HEARTBEAT", default_value = "15s", global = true,
        value_parser = parse_duration)]
    pub sse_heartbeat: Duration,
    /// how long events are kept for resuming clients; older resumes get a `reset`
    #[arg(long, env = "TIDINGS_EVENT_RETENTION", default_value = "24h", global = true,
        value_parser = parse_duration)]
    pub event_retention: Duration,
    /// the relay's safety-net poll (it is woken by every commit); hubs read the database
    /// every twice this, in case the bus dropped a message
    #[arg(long, env = "TIDINGS_RELAY_POLL", default_value = "1s", global = true,
        value_parser = parse_duration)]
    pub relay_poll: Duration,
    /// on shutdown (SIGTERM, SIGINT), live connections are closed this many at a time…
    #[arg(long, env = "TIDINGS_DRAIN_BATCH", default_value = "500", global = true,
        value_parser = between(1usize, 1_000_000))]
    pub drain_batch: usize,
    /// …with this pause between; the process exits once every one has closed (a
    /// WebSocket's 1001 written and answered, an event stream's end written), or at the
    /// latest 30 s after the last batch
    #[arg(long, env = "TIDINGS_DRAIN_PAUSE", default_value = "100ms", global = true,
        value_parser = parse_duration)]
    pub drain_pause: Duration,
    /// push targets (browsers, apps) one user may register; one more is refused with 409
    /// `too_many_devices`
    #[arg(long, env = "TIDINGS_MAX_DEVICES_PER_USER", default_value = "10", global = true,
        value_parser = between(1usize, 1000))]
    pub max_devices_per_user: usize,
    /// who runs this server, for push services (the `sub` of VAPID tokens): a `mailto:`
    /// address or an `https:` URL; set your own, push services may contact it
    #[arg(long, env = "TIDINGS_VAPID_SUBJECT", default_value = "mailto:admin@example.com",
        global = true, value_parser = parse_vapid_subject)]
    pub vapid_subject: String,
    /// for tests only: accepts Web Push endpoints on localhost and private addresses, and
    /// plain `http://`, and lets the push client connect to them (never in production: it
    /// lets a subscription reach the server's own network)
    #[arg(long, env = "TIDINGS_PUSH_ALLOW_PRIVATE_ENDPOINTS", default_value = "false",
        global = true, action = ArgAction::Set, value_parser = parse_bool)]
    pub push_allow_private_endpoints: bool,
    /// a notification no app of its user acknowledged (`ack`) within this long after its
    /// commit is pushed to their devices; a user with no live connection is sent it within a second
    /// (acks are recorded within about a second: under 2 s, an acknowledged one may be
    /// pushed)
    #[arg(long, env = "TIDINGS_PUSH_DELAY", default_value = "10s", global = true,
        value_parser = parse_duration)]
    pub push_delay: Duration,
    /// attempts at one push before it is dead (recorded, not tried again); retries wait
    /// `TIDINGS_PUSH_RETRY_BASE`, doubling each time (at most an hour), or the provider's
    /// `Retry-After` if longer
    #[arg(long, env = "TIDINGS_PUSH_MAX_ATTEMPTS", default_value = "8", global = true,
        value_parser = between(1u32, 100))]
    pub push_max_attempts: u32,
    /// the wait before a failed push is tried the second time
    #[arg(long, env = "TIDINGS_PUSH_RETRY_BASE", default_value = "2s", global = true,
        value_parser = parse_duration)]
    pub push_retry_base: Duration,
    /// pushes one device may be sent a minute; more wait their turn
    #[arg(long, env = "TIDINGS_PUSH_DEVICE_RATE", default_value = "60", global = true,
        value_parser = between(1u32, 100_000))]
    pub push_device_rate: u32,
    /// path to the Firebase service-account key file (JSON, from the Firebase console's
    /// service accounts page): set, devices of kind `fcm` are pushed to through FCM's HTTP
    /// v1 API; unset, they are not sent to
    #[arg(long, env = "TIDINGS_FCM_CREDENTIALS", default_value = "", hide_default_value = true,
        global = true, value_parser = parse_optional_path)]
    pub fcm_credentials: std::option::Option<PathBuf>,
    /// where FCM's API is (`…/v1/projects/{project}/messages:send` below it); the access
    /// token comes from the key file's `token_uri`
    #[arg(long, env = "TIDINGS_FCM_BASE_URL", default_value = "https://fcm.googleapis.com",
        global = true, value_parser = parse_base_url)]
    pub fcm_base_url: url::Url,
    /// path to the APNs signing key (the `.p8` file of token-based authentication, a P-256
    /// key): set, with `TIDINGS_APNS_KEY_ID` and `TIDINGS_APNS_TEAM_ID`, devices of kind
    /// `apns` are pushed to; unset, they are not sent to
    #[arg(long, env = "TIDINGS_APNS_KEY", default_value = "", hide_default_value = true,
        global = true, value_parser = parse_optional_path)]
    pub apns_key: std::option::Option<PathBuf>,
    /// the APNs key's id (10 characters, shown beside the key in Apple's developer account)
    #[arg(long, env = "TIDINGS_APNS_KEY_ID", default_value = "", hide_default_value = true,
        global = true, value_parser = parse_apple_id)]
    pub apns_key_id: std::option::Option<String>,
    /// the Apple developer team id (10 characters) that the APNs key belongs to
    #[arg(long, env = "TIDINGS_APNS_TEAM_ID", default_value = "", hide_default_value = true,
        global = true, value_parser = parse_apple_id)]
    pub apns_team_id: std::option::Option<String>,
    /// APNs for apps registered with `environment` `production` (`https://` only)
    #[arg(long, env = "TIDINGS_APNS_PRODUCTION_URL", default_value = "https://api.push.apple.com",
        global = true, value_parser = parse_https_base_url)]
    pub apns_production_url: url::Url,
    /// APNs for apps registered with `environment` `sandbox` (development builds;
    /// `https://` only)
    #[arg(long, env = "TIDINGS_APNS_SANDBOX_URL",
        default_value = "https://api.sandbox.push.apple.com", global = true,
        value_parser = parse_https_base_url)]
    pub apns_sandbox_url: url::Url,
    /// for tests and private gateways: path to a PEM CA certificate that the APNs client
    /// trusts besides the system's roots
    #[arg(long, env = "TIDINGS_APNS_CA", default_value = "", hide_default_value = true,
        global = true, value_parser = parse_optional_path)]
    pub apns_ca: std::option::Option<PathBuf>,
    /// `text` or `json`
    #[arg(long, env = "TIDINGS_LOG_FORMAT", default_value = "text", global = true,
        value_parser = parse_log_format)]
    pub log_format: LogFormat,
}

/// A setting that could not be used: which one, and why.
#[derive(Debug, thiserror::Error)]
#[error("{var}{}: {problem}", flag.as_ref().map(|f| format!(" ({f})")).unwrap_or_default())]
pub struct ConfigError {
    /// The environment variable.
    pub var: String,
    /// Its flag, if it has one.
    pub flag: Option<String>,
    /// What is wrong with its value.
    pub problem: String,
}

impl ConfigError {
    /// The setting a clap error is about, if it is a bad value of one (whether from a flag or
    /// from the environment): its variable, flag and what is wrong, for one line on stderr.
    /// Other clap errors (an unknown flag, `--help`) are clap's to print.
    pub fn from_clap(error: &clap::Error) -> Option<ConfigError> {
        use clap::CommandFactory;
        use clap::error::{ContextKind, ContextValue, ErrorKind};
        if error.kind() != ErrorKind::ValueValidation {
            return None;
        }
        // "--listen <LISTEN>"
        let Some(ContextValue::String(arg)) = error.get(ContextKind::InvalidArg) else {
            return None;
        };
        let long = arg.strip_prefix("--")?.split([' ', '=']).next()?;
        let command = Cli::command();
        let setting = command
            .get_arguments()
            .find(|a| a.get_long() == Some(long))?;
        Some(ConfigError {
            var: setting.get_env()?.to_string_lossy().into_owned(),
            flag: Some(format!("--{long}")),
            problem: std::error::Error::source(error)?.to_string(),
        })
    }
}

/// The shortest JWT signing key accepted: HS256 wants at least 256 bits.
pub const MIN_JWT_SECRET_LEN: usize = 32;

impl Config {
    /// Settings with every default (and whatever the environment sets), not yet validated;
    /// tests start from these.
    pub fn defaults() -> Self {
        Cli::parse_from(["tidings"]).settings
    }

    /// Completes and checks the settings, reading `TIDINGS_JWT_SECRET` and
    /// `TIDINGS_METRICS_TOKEN` from the environment.
    pub fn validate(mut self) -> Result<Config, ConfigError> {
        self.metrics_token =
            MetricsToken::parse(std::env::var("TIDINGS_METRICS_TOKEN").unwrap_or_default())?;
        self.vapid_private_key = VapidPrivateKey::parse(
            &std::env::var("TIDINGS_VAPID_PRIVATE_KEY").unwrap_or_default(),
        )?;
        self.smtp_url = SmtpUrl::parse(&std::env::var("TIDINGS_SMTP_URL").unwrap_or_default())?;
        self.validate_with_secret(std::env::var("TIDINGS_JWT_SECRET").ok())
    }

    /// [`Config::validate`] with the signing key given explicitly. Each setting's own value
    /// was checked as it was read; this fills in what derives from several and checks what
    /// spans several.
    pub fn validate_with_secret(
        mut self,
        jwt_secret: Option<String>,
    ) -> Result<Config, ConfigError> {
        self.jwt_secret = match jwt_secret {
            None => None,
            Some(s) if s.len() < MIN_JWT_SECRET_LEN => {
                return Err(ConfigError {
                    var: "TIDINGS_JWT_SECRET".into(),
                    flag: None,
                    problem: format!("must be at least {MIN_JWT_SECRET_LEN} bytes long"),
                });
            }
            Some(s) => Some(s.into_bytes()),
        };
        self.database_url = match &self.database_url_setting {
            Some(url) => url.clone(),
            None => DatabaseUrl::Sqlite(self.data_dir.join("tidings.db")),
        };
        self.pending = crate::net::server::Limits {
            total: self.max_pending_connections,
            per_ip: self.max_pending_per_ip,
            shed_after: crate::net::server::Limits::DEFAULT_SHED_AFTER,
        };
        self.check_mail()?;
        self.check_apns()?;
        self.check_redis_channel()?;
        if self.ws_idle_timeout <= self.ws_ping_interval {
            return Err(ConfigError {
                var: "TIDINGS_WS_IDLE_TIMEOUT".into(),
                flag: Some("--ws-idle-timeout".into()),
                problem: format!(
                    "{} must be longer than TIDINGS_WS_PING_INTERVAL ({}), or every quiet \
                     client is dropped between two pings",
                    humantime::format_duration(self.ws_idle_timeout),
                    humantime::format_duration(self.ws_ping_interval)
                ),
            });
        }
        Ok(self)
    }
}

impl Config {
    /// The hub's fan-out shards: the setting, or the cores this process may run on (its
    /// CPU affinity and cgroup quota, as the standard library reads them).
    pub fn hub_shards(&self) -> usize {
        self.hub_shards.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }
}

impl Config {
    /// Whether the bus runs on Redis Cluster: `TIDINGS_REDIS_CLUSTER`, or a `REDIS_URL`
    /// naming several nodes.
    pub fn redis_is_cluster(&self) -> bool {
        self.redis_url
            .as_deref()
            .is_some_and(|url| self.redis_cluster || url.contains(','))
    }

    /// On Redis Cluster a channel lives on the slot of its name, or of its hash tag (`{…}`):
    /// a hash tag in the bus's channel would put every partition of the bus on one slot,
    /// and so on one master.
    fn check_redis_channel(&self) -> Result<(), ConfigError> {
        let tagged = self
            .redis_channel
            .split_once('{')
            .is_some_and(|(_, rest)| rest.find('}').is_some_and(|end| end > 0));
        if self.redis_is_cluster() && tagged {
            return Err(ConfigError {
                var: "TIDINGS_REDIS_CHANNEL".into(),
                flag: Some("--redis-channel".into()),
                problem: "must have no hash tag ({…}) on Redis Cluster: the bus's partitions \
                          would all share one slot"
                    .into(),
            });
        }
        Ok(())
    }

    /// With a mail server, the sender and the links' base are needed; without one, no
    /// user could ever verify their address, so requiring it would lock everyone out.
    /// Public: a test that sets `smtp_url` after validation checks the same.
    pub fn check_mail(&self) -> Result<(), ConfigError> {
        let needs = |var: &str, flag: &str, problem: &str| ConfigError {
            var: var.into(),
            flag: Some(flag.into()),
            problem: problem.into(),
        };
        if self.smtp_url.is_some() {
            if self.mail_from.is_none() {
                return Err(needs(
                    "TIDINGS_MAIL_FROM",
                    "--mail-from",
                    "must be set with TIDINGS_SMTP_URL: the sender of every email",
                ));
            }
            if self.public_url.is_none() {
                return Err(needs(
                    "TIDINGS_PUBLIC_URL",
                    "--public-url",
                    "must be set with TIDINGS_SMTP_URL: the base of the links in emails",
                ));
            }
        } else if self.require_verified_email {
            return Err(needs(
                "TIDINGS_REQUIRE_VERIFIED_EMAIL",
                "--require-verified-email",
                "needs TIDINGS_SMTP_URL: without email nobody could verify their address",
            ));
        }
        Ok(())
    }
}

impl Config {
    /// The APNs key, its id and the team id go together: one without the others is a
    /// mistake, not a choice to leave APNs off.
    pub fn check_apns(&self) -> Result<(), ConfigError> {
        let set = [
            self.apns_key.is_some(),
            self.apns_key_id.is_some(),
            self.apns_team_id.is_some(),
        ];
        if set.iter().any(|s| *s) && !set.iter().all(|s| *s) {
            let (var, flag) = match set {
                [false, ..] => ("TIDINGS_APNS_KEY", "--apns-key"),
                [_, false, _] => ("TIDINGS_APNS_KEY_ID", "--apns-key-id"),
                _ => ("TIDINGS_APNS_TEAM_ID", "--apns-team-id"),
            };
            return Err(ConfigError {
                var: var.into(),
                flag: Some(flag.into()),
                problem: "must be set with the other APNs settings: TIDINGS_APNS_KEY, \
                          TIDINGS_APNS_KEY_ID and TIDINGS_APNS_TEAM_ID go together"
                    .into(),
            });
        }
        Ok(())
    }
}

/// README.md's settings table, in Markdown: one row per setting, from the flags' and
/// environment variables' definitions above, then the ones that are environment variables
/// only. A unit test keeps README.md's copy equal to it.
pub fn settings_table() -> String {
    use clap::CommandFactory;
    let command = Cli::command();
    let mut table = String::from("| variable | flag | default | meaning |\n|---|---|---|---|\n");
    let cell = |text: &str| text.replace('|', "\\|");
    for arg in command.get_arguments() {
        let (Some(var), Some(long)) = (arg.get_env(), arg.get_long()) else {
            continue;
        };
        let default = match arg.get_default_values() {
            _ if arg.is_hide_default_value_set() => "unset".to_owned(),
            [empty] if empty.is_empty() => "empty".to_owned(),
            values => values
                .iter()
                .map(|v| format!("`{}`", v.to_string_lossy()))
                .collect::<Vec<_>>()
                .join(", "),
        };
        let meaning = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        table.push_str(&format!(
            "| `{}` | `--{long}` | {} | {} |\n",
            var.to_string_lossy(),
            cell(&default),
            cell(&meaning)
        ));
    }
    for EnvOnly {
        var,
        default,
        meaning,
    } in &ENV_ONLY
    {
        table.push_str(&format!(
            "| `{var}` | | {} | {} |\n",
            cell(default),
            cell(meaning)
        ));
    }
    table
}

/// The VAPID signing key's 32-byte P-256 scalar. Never shown: its `Debug` hides it.
#[derive(Clone)]
pub struct VapidPrivateKey(pub [u8; 32]);

impl VapidPrivateKey {
    /// A key as `TIDINGS_VAPID_PRIVATE_KEY` gives it (base64url, padded or not); empty is
    /// unset.
    pub fn parse(value: &str) -> Result<Option<VapidPrivateKey>, ConfigError> {
        use base64::Engine;
        use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
        let value = value.trim();
        if value.is_empty() {
            return Ok(None);
        }
        URL_SAFE_NO_PAD
            .decode(value)
            .or_else(|_| URL_SAFE.decode(value))
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .filter(|bytes| p256::SecretKey::from_slice(bytes).is_ok())
            .map(|bytes| Some(VapidPrivateKey(bytes)))
            .ok_or_else(|| ConfigError {
                var: "TIDINGS_VAPID_PRIVATE_KEY".into(),
                flag: None,
                problem: "must be base64url of a P-256 private key's 32-byte scalar".into(),
            })
    }
}

impl std::fmt::Debug for VapidPrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VapidPrivateKey(..)")
    }
}

/// How the connection to the mail server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// None: `smtp://` (a relay on the same host or network).
    Plain,
    /// STARTTLS, and refuse a server that does not offer it: `smtp://…?tls=starttls`.
    StartTls,
    /// STARTTLS if the server offers it, else plain: `smtp://…?tls=opportunistic`.
    Opportunistic,
    /// TLS from the first byte: `smtps://`.
    Implicit,
}

/// `TIDINGS_SMTP_URL`, read into its parts. Its `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpUrl {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// User and password, percent-decoded, if the URL has a user.
    pub credentials: Option<(String, String)>,
}

impl SmtpUrl {
    /// A URL as `TIDINGS_SMTP_URL` gives it; empty is unset. Errors never show the password.
    pub fn parse(value: &str) -> Result<Option<SmtpUrl>, ConfigError> {
        let value = value.trim();
        if value.is_empty() {
            return Ok(None);
        }
        let fail = |problem: String| ConfigError {
            var: "TIDINGS_SMTP_URL".into(),
            flag: None,
            problem,
        };
        // Without `://` there is no user information to redact, and a password may be
        // anywhere: such a value is not shown at all.
        let shown = if value.contains("://") {
            quote(&redact_url(value))
        } else {
            "the value".to_owned()
        };
        let url =
            url::Url::parse(value).map_err(|e| fail(format!("{shown} is not a URL ({e})")))?;
        let mut tls = None;
        for (key, mode) in url.query_pairs() {
            let mode = match (key.as_ref(), mode.as_ref()) {
                ("tls", "starttls" | "required") => SmtpTls::StartTls,
                ("tls", "opportunistic") => SmtpTls::Opportunistic,
                ("tls", other) => {
                    return Err(fail(format!(
                        "tls={} is not one of starttls, opportunistic (smtps:// is TLS from the start)",
                        quote(other)
                    )));
                }
                (other, _) => {
                    return Err(fail(format!("{shown} has an unknown parameter {other:?}")));
                }
            };
            tls = Some(mode);
        }
        let (tls, default_port) = match (url.scheme(), tls) {
            ("smtp", None) => (SmtpTls::Plain, 25),
            ("smtp", Some(mode)) => (mode, 587),
            ("smtps", None) => (SmtpTls::Implicit, 465),
            ("smtps", Some(_)) => {
                return Err(fail("smtps:// is TLS from the start; drop ?tls=".into()));
            }
            _ => return Err(fail(format!("{shown} is not an smtp:// or smtps:// URL"))),
        };
        let host = match url.host() {
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            Some(host) => host.to_string(),
            None => return Err(fail(format!("{shown} names no host"))),
        };
        if !matches!(url.path(), "" | "/") {
            return Err(fail(format!("{shown} has a path; an SMTP URL has none")));
        }
        let decode = |part: &str| {
            url::form_urlencoded::parse(format!("x={}", part.replace('+', "%2B")).as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let credentials = match (url.username(), url.password()) {
            ("", None) => None,
            ("", Some(_)) => return Err(fail(format!("{shown} has a password but no user"))),
            (user, password) => Some((decode(user), password.map(decode).unwrap_or_default())),
        };
        Ok(Some(SmtpUrl {
            host,
            port: url.port().unwrap_or(default_port),
            tls,
            credentials,
        }))
    }
}

impl std::fmt::Debug for SmtpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpUrl")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("user", &self.credentials.as_ref().map(|(user, _)| user))
            .finish_non_exhaustive()
    }
}

/// A mailbox (`Name <address>` or a bare address); empty is unset.
fn parse_mailbox(value: &str) -> Result<Option<lettre::message::Mailbox>, String> {
    match value.trim() {
        "" => Ok(None),
        value => value.parse().map(Some).map_err(|_| {
            format!(
                "{} is not a mailbox (write e.g. `Tidings <no-reply@shop.example.com>`)",
                quote(value)
            )
        }),
    }
}

/// An `http(s)://` URL without query or fragment, kept without its trailing slash; empty
/// is unset.
fn parse_public_url(value: &str) -> Result<Option<String>, String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    let url = url::Url::parse(value).map_err(|e| format!("{} is not a URL ({e})", quote(value)))?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host().is_none()
        || url.query().is_some()
        || url.fragment().is_some()
        || url.password().is_some()
        || !url.username().is_empty()
    {
        return Err(format!(
            "{} is not an http:// or https:// URL without user, query or fragment \
             (write e.g. https://shop.example.com)",
            quote(value)
        ));
    }
    Ok(Some(value.trim_end_matches('/').to_owned()))
}

/// The bearer token `/metrics` requires. Never shown: its `Debug` hides it, and it is
/// compared in constant time ([`MetricsToken::matches`]).
#[derive(Clone)]
pub struct MetricsToken(String);

impl MetricsToken {
    /// The shortest token accepted: shorter ones are guessed.
    pub const MIN_LEN: usize = 16;

    /// A token as `TIDINGS_METRICS_TOKEN` gives it; empty is unset. It must be sendable as
    /// `Authorization: Bearer <token>`: visible ASCII, no spaces.
    pub fn parse(value: String) -> Result<Option<MetricsToken>, ConfigError> {
        let problem = if value.is_empty() {
            return Ok(None);
        } else if !value.bytes().all(|b| b.is_ascii_graphic()) {
            "must be visible ASCII characters without spaces (it is sent in an Authorization header)"
                .to_owned()
        } else if value.len() < Self::MIN_LEN {
            format!("must be at least {} characters long", Self::MIN_LEN)
        } else {
            return Ok(Some(MetricsToken(value)));
        };
        Err(ConfigError {
            var: "TIDINGS_METRICS_TOKEN".into(),
            flag: None,
            problem,
        })
    }

    /// Whether `presented` is this token, in time that does not depend on where they first
    /// differ (only on their lengths).
    pub fn matches(&self, presented: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_bytes().ct_eq(presented).into()
    }
}

impl std::fmt::Debug for MetricsToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsToken(***)")
    }
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

/// `IP:port` or `host:port`; a host name is resolved now, and the first of its addresses
/// is the one listened on (`localhost:8080` is usually `127.0.0.1:8080` or `[::1]:8080`).
fn parse_listen(value: &str) -> Result<SocketAddr, String> {
    let value = value.trim();
    if let Ok(addr) = value.parse() {
        return Ok(addr);
    }
    let hint = "expected host:port or IP:port, e.g. 127.0.0.1:8080, [::]:8080 or localhost:8080";
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err(format!("{} has no port ({hint})", quote(value)));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!("{} is not host:port ({hint})", quote(value)));
    }
    use std::net::ToSocketAddrs;
    match value.to_socket_addrs().map(|mut addrs| addrs.next()) {
        Ok(Some(addr)) => Ok(addr),
        Ok(None) | Err(_) => Err(format!(
            "the host name in {} does not resolve ({hint})",
            quote(value)
        )),
    }
}

/// Like `--listen`; empty is unset.
fn parse_admin_listen(value: &str) -> Result<Option<SocketAddr>, String> {
    match value.trim() {
        "" => Ok(None),
        value => parse_listen(value).map(Some),
    }
}

fn parse_optional_path(value: &str) -> Result<Option<PathBuf>, String> {
    match value.trim() {
        "" => Ok(None),
        value => Ok(Some(PathBuf::from(value))),
    }
}

/// A provider's base URL: `http(s)://host[:port][/path]`, no user, query or fragment.
fn parse_base_url(value: &str) -> Result<url::Url, String> {
    let value = value.trim();
    let url = url::Url::parse(value).map_err(|e| format!("{} is not a URL ({e})", quote(value)))?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host().is_none()
        || url.query().is_some()
        || url.fragment().is_some()
        || url.password().is_some()
        || !url.username().is_empty()
    {
        return Err(format!(
            "{} is not an http:// or https:// URL without user, query or fragment",
            quote(value)
        ));
    }
    Ok(url)
}

/// [`parse_base_url`], `https://` only (APNs is HTTP/2 over TLS).
fn parse_https_base_url(value: &str) -> Result<url::Url, String> {
    let url = parse_base_url(value)?;
    if url.scheme() != "https" {
        return Err(format!("{} is not an https:// URL", quote(value.trim())));
    }
    Ok(url)
}

/// An Apple key or team id: 10 letters and digits.
fn parse_apple_id(value: &str) -> Result<Option<String>, String> {
    match value.trim() {
        "" => Ok(None),
        id if id.len() == 10 && id.bytes().all(|b| b.is_ascii_alphanumeric()) => {
            Ok(Some(id.to_owned()))
        }
        id => Err(format!("{} is not 10 letters and digits", quote(id))),
    }
}

fn parse_data_dir(value: &str) -> Result<PathBuf, String> {
    if value.trim().is_empty() {
        return Err("must not be empty".into());
    }
    Ok(PathBuf::from(value))
}

fn parse_origins(value: &str) -> Result<Vec<String>, String> {
    let mut origins = Vec::new();
    for origin in value.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let valid = (origin.starts_with("http://") || origin.starts_with("https://"))
            && !origin.trim_end_matches('/').contains(['?', '#', ' '])
            && origin
                .split("://")
                .nth(1)
                .is_some_and(|host| !host.is_empty() && !host.contains('/'));
        if !valid {
            return Err(format!(
                "{} is not an origin (scheme://host[:port], no path)",
                quote(origin)
            ));
        }
        origins.push(origin.to_owned());
    }
    Ok(origins)
}

/// A `postgres://` or `sqlite:` URL; empty is unset.
fn parse_database_url(url: &str) -> Result<Option<DatabaseUrl>, String> {
    let url = url.trim();
    if url.is_empty() {
        return Ok(None);
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Some(DatabaseUrl::Postgres(url.to_owned())));
    }
    if let Some(rest) = url.strip_prefix("sqlite:") {
        let path = rest.strip_prefix("//").unwrap_or(rest);
        let path = path.split('?').next().unwrap_or_default();
        if path.is_empty() || path == ":memory:" {
            return Err("a SQLite URL must name a file (e.g. sqlite:./data/tidings.db)".into());
        }
        return Ok(Some(DatabaseUrl::Sqlite(Path::new(path).to_owned())));
    }
    Err(format!(
        "{} is neither a postgres:// nor a sqlite: URL",
        quote(&redact_url(url))
    ))
}

/// A `redis://` or `rediss://` URL, or several comma-separated (a cluster's nodes); empty
/// is unset.
fn parse_redis_url(url: &str) -> Result<Option<String>, String> {
    let url = url.trim();
    if url.is_empty() {
        return Ok(None);
    }
    let nodes: Vec<&str> = url.split(',').map(str::trim).collect();
    match nodes
        .iter()
        .find(|node| !(node.starts_with("redis://") || node.starts_with("rediss://")))
    {
        None => Ok(Some(nodes.join(","))),
        Some(node) => Err(format!(
            "{} is not a redis:// or rediss:// URL",
            quote(&redact_url(node))
        )),
    }
}

fn parse_redis_channel(value: &str) -> Result<String, String> {
    match value.trim() {
        "" => Err("must not be empty".into()),
        channel => Ok(channel.to_owned()),
    }
}

fn parse_log_format(value: &str) -> Result<LogFormat, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(format!("{} is not one of text, json", quote(other))),
    }
}

/// A duration longer than zero, such as `30s`, `15m` or `2h`.
fn parse_duration(value: &str) -> Result<Duration, String> {
    let duration = parse_duration_or_zero(value)?;
    if duration.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(duration)
}

fn parse_duration_or_zero(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value.trim()).map_err(|e| {
        format!(
            "{} is not a duration ({e}; write e.g. 30s, 15m, 2h)",
            quote(value)
        )
    })
}

/// A whole number from `min` to `max`.
fn between<T>(min: T, max: T) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy + Send + Sync,
{
    move |value| {
        let n: T = value
            .trim()
            .parse()
            .map_err(|_| format!("{} is not a whole number", quote(value)))?;
        if n < min || n > max {
            return Err(format!("{n} is out of range ({min} to {max})"));
        }
        Ok(n)
    }
}

/// `auto` (the cores available) or 1 to 1024.
fn parse_hash_concurrency(value: &str) -> Result<usize, String> {
    match value.trim() {
        "auto" => Ok(std::thread::available_parallelism().map_or(1, |n| n.get())),
        n => between(1usize, 1024)(n),
    }
}

/// `0` (`None`: the kernel's autotuning) or 4096 bytes to 1 GiB.
fn parse_hub_shards(value: &str) -> Result<Option<usize>, String> {
    match value.trim() {
        "auto" => Ok(None),
        n => between(1usize, 1024)(n)
            .map(Some)
            .map_err(|e| format!("{e}, or `auto`")),
    }
}

fn parse_send_buffer(value: &str) -> Result<Option<usize>, String> {
    match between(0usize, 1 << 30)(value)? {
        0 => Ok(None),
        n if n < 4096 => Err("must be 0 (the kernel's autotuning) or at least 4096".into()),
        n => Ok(Some(n)),
    }
}

/// A `mailto:` address or an `https:` URL, as RFC 8292 asks of a VAPID subject.
fn parse_vapid_subject(value: &str) -> Result<String, String> {
    let value = value.trim();
    let ok = match value.split_once(':') {
        Some(("mailto", address)) => {
            address.contains('@') && !address.contains(char::is_whitespace)
        }
        Some(("https", _)) => url::Url::parse(value).is_ok_and(|u| u.host().is_some()),
        _ => false,
    };
    if ok {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "{} is not a mailto: address or an https: URL",
            quote(value)
        ))
    }
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(format!("{} is not true or false", quote(value))),
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
    use clap::CommandFactory;

    /// The settings read from `args` as `tidings` would read them, and validated.
    fn read(args: &[&str]) -> Result<Config, ConfigError> {
        let cli = Cli::try_parse_from(std::iter::once("tidings").chain(args.iter().copied()))
            .map_err(|e| ConfigError::from_clap(&e).unwrap_or_else(|| panic!("{e}")))?;
        cli.settings.validate_with_secret(None)
    }

    #[test]
    fn defaults_are_valid_and_embedded() {
        let config = read(&[]).unwrap();
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(
            config.database_url,
            DatabaseUrl::Sqlite(PathBuf::from("./data/tidings.db"))
        );
        assert_eq!(config.access_token_ttl, Duration::from_secs(900));
        assert!(config.redis_url.is_none());
        assert!(!config.redis_cluster);
        assert!(!config.redis_is_cluster());
        assert!(config.cors_origins.is_empty());
        assert_eq!(config.pending.total, 10_000);
        assert_eq!(config.pending.per_ip, 2000);
    }

    #[test]
    fn a_bad_listen_address_names_the_variable_and_the_flag() {
        for bad in [
            "nowhere",
            "localhost",
            "localhost:http",
            ":8080",
            "no-such-host.invalid:8080",
        ] {
            let err = read(&["--listen", bad]).unwrap_err();
            assert_eq!(err.var, "TIDINGS_LISTEN");
            assert!(err.problem.contains("host:port"), "{bad}: {err}");
            let line = err.to_string();
            assert!(
                line.starts_with("TIDINGS_LISTEN (--listen): ") && !line.contains('\n'),
                "{line}"
            );
        }
    }

    #[test]
    fn a_host_name_is_listened_on_at_its_address() {
        let listen = read(&["--listen", "localhost:8080"]).unwrap().listen;
        assert!(listen.ip().is_loopback(), "{listen}");
        assert_eq!(listen.port(), 8080);
        assert_eq!(
            read(&["--listen", "[::]:9000"]).unwrap().listen.port(),
            9000
        );
    }

    #[test]
    fn the_database_is_the_data_directorys_sqlite_file_unless_a_url_is_given() {
        let config = read(&["--data-dir", "/srv/tidings", "--database-url", ""]).unwrap();
        assert_eq!(
            config.database_url,
            DatabaseUrl::Sqlite(PathBuf::from("/srv/tidings/tidings.db"))
        );
        let config = read(&["--database-url", "postgres://db/shop"]).unwrap();
        assert_eq!(
            config.database_url,
            DatabaseUrl::Postgres("postgres://db/shop".into())
        );
    }

    #[test]
    fn an_unknown_database_scheme_is_refused_without_showing_the_password() {
        let err = read(&["--database-url", "mysql://root:hunter2@db/x"]).unwrap_err();
        assert_eq!(err.var, "DATABASE_URL");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn a_short_jwt_secret_is_refused() {
        let err = Config::defaults()
            .validate_with_secret(Some("short".into()))
            .unwrap_err();
        assert_eq!(err.var, "TIDINGS_JWT_SECRET");
        assert!(!err.to_string().contains("short"));
    }

    #[test]
    fn the_admin_listener_is_unset_by_default_and_an_address_when_given() {
        assert_eq!(read(&[]).unwrap().admin_listen, None);
        assert_eq!(
            read(&["--admin-listen", "127.0.0.1:9090"])
                .unwrap()
                .admin_listen,
            Some("127.0.0.1:9090".parse().unwrap())
        );
        let err = read(&["--admin-listen", "9090"]).unwrap_err();
        assert_eq!(err.var, "TIDINGS_ADMIN_LISTEN");
    }

    #[test]
    fn a_metrics_token_is_long_sendable_and_never_shown() {
        assert!(MetricsToken::parse(String::new()).unwrap().is_none());
        for bad in [
            "short-token",
            "a token with spaces in it",
            "ä-token-that-is-long-enough",
        ] {
            let err = MetricsToken::parse(bad.into()).unwrap_err();
            assert_eq!(err.var, "TIDINGS_METRICS_TOKEN");
            assert!(!err.to_string().contains(bad), "{err}");
        }
        let token = MetricsToken::parse("a-metrics-token-0123".into())
            .unwrap()
            .unwrap();
        assert!(token.matches(b"a-metrics-token-0123"));
        assert!(!token.matches(b"a-metrics-token-0124"));
        assert!(!token.matches(b"a-metrics-token-01234"));
        assert!(!format!("{token:?}").contains("0123"));
    }

    #[test]
    fn durations_numbers_and_formats_are_checked() {
        for (args, var) in [
            (["--access-token-ttl", "soon"], "TIDINGS_ACCESS_TOKEN_TTL"),
            (["--access-token-ttl", "0s"], "TIDINGS_ACCESS_TOKEN_TTL"),
            (["--log-format", "xml"], "TIDINGS_LOG_FORMAT"),
            (["--db-max-connections", "0"], "TIDINGS_DB_MAX_CONNECTIONS"),
            (["--body-limit", "100"], "TIDINGS_BODY_LIMIT"),
            (["--redis-url", "http://x"], "REDIS_URL"),
            (["--redis-url", "redis://a:7000,http://b"], "REDIS_URL"),
            (["--redis-channel", " "], "TIDINGS_REDIS_CHANNEL"),
            (["--data-dir", ""], "TIDINGS_DATA_DIR"),
            (
                ["--cors-origins", "https://ok.example, shop.example"],
                "TIDINGS_CORS_ORIGINS",
            ),
            (
                ["--max-pending-per-ip", "many"],
                "TIDINGS_MAX_PENDING_PER_IP",
            ),
            (["--ws-echo", "maybe"], "TIDINGS_WS_ECHO"),
        ] {
            let err = read(&args).unwrap_err();
            assert_eq!(err.var, var, "{args:?}: {err}");
            assert_eq!(err.flag.as_deref(), Some(args[0]));
        }
    }

    #[test]
    fn values_are_read_into_their_types() {
        let config = read(&[
            "--log-format",
            " JSON ",
            "--ws-echo",
            "on",
            "--cors-origins",
            "https://a.example, http://b.example:8080",
            "--drain-pause",
            "250ms",
        ])
        .unwrap();
        assert_eq!(config.log_format, LogFormat::Json);
        assert!(config.ws_echo);
        assert_eq!(
            config.cors_origins,
            ["https://a.example", "http://b.example:8080"]
        );
        assert_eq!(config.drain_pause, Duration::from_millis(250));
    }

    #[test]
    fn hashing_and_refresh_settings_have_their_defaults_and_zero_grace_is_off() {
        let config = read(&[]).unwrap();
        assert!(config.hash_concurrency >= 1);
        assert_eq!(config.refresh_reuse_grace, Duration::from_secs(10));
        let config = read(&["--hash-concurrency", "3", "--refresh-reuse-grace", "0s"]).unwrap();
        assert_eq!(config.hash_concurrency, 3);
        assert_eq!(config.refresh_reuse_grace, Duration::ZERO);
        assert_eq!(
            read(&["--hash-concurrency", "0"]).unwrap_err().var,
            "TIDINGS_HASH_CONCURRENCY"
        );
    }

    #[test]
    fn a_live_send_buffer_is_a_size_or_0_for_the_kernels_autotuning() {
        assert_eq!(read(&[]).unwrap().live_send_buffer, Some(128 * 1024));
        assert_eq!(
            read(&["--live-send-buffer", "0"]).unwrap().live_send_buffer,
            None
        );
        assert_eq!(
            read(&["--live-send-buffer", "100"]).unwrap_err().var,
            "TIDINGS_LIVE_SEND_BUFFER"
        );
    }

    #[test]
    fn a_websocket_idle_timeout_must_outlast_the_ping_interval() {
        let err = read(&["--ws-ping-interval", "30s", "--ws-idle-timeout", "30s"]).unwrap_err();
        assert_eq!(err.var, "TIDINGS_WS_IDLE_TIMEOUT");
        assert!(err.problem.contains("TIDINGS_WS_PING_INTERVAL"), "{err}");
        read(&["--ws-ping-interval", "30s", "--ws-idle-timeout", "31s"]).unwrap();
    }

    #[test]
    fn several_redis_urls_are_a_cluster_as_is_one_with_the_setting() {
        let config = read(&["--redis-url", " redis://a:7000 , redis://b:7001"]).unwrap();
        assert_eq!(
            config.redis_url.as_deref(),
            Some("redis://a:7000,redis://b:7001")
        );
        assert!(config.redis_is_cluster());
        let one = read(&["--redis-url", "redis://a:7000"]).unwrap();
        assert!(!one.redis_is_cluster());
        let seeded = read(&["--redis-url", "redis://a:7000", "--redis-cluster", "true"]).unwrap();
        assert!(seeded.redis_is_cluster());
        // A hash tag is only a problem on a cluster.
        assert!(read(&["--redis-url", "redis://a:7000", "--redis-channel", "{t}:e"]).is_ok());
        let tagged = read(&[
            "--redis-url",
            "redis://a:7000,redis://b:7000",
            "--redis-channel",
            "{tidings}:events",
        ])
        .unwrap_err();
        assert_eq!(tagged.var, "TIDINGS_REDIS_CHANNEL", "{tagged}");
    }

    #[test]
    fn every_flag_is_also_an_environment_variable_with_help() {
        for arg in Cli::command().get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if ["help", "version"].contains(&long) {
                continue;
            }
            let var = arg
                .get_env()
                .unwrap_or_else(|| panic!("--{long} has no env"));
            let expected = match long {
                "database-url" => "DATABASE_URL".to_owned(),
                "redis-url" => "REDIS_URL".to_owned(),
                _ => format!("TIDINGS_{}", long.replace('-', "_").to_ascii_uppercase()),
            };
            assert_eq!(var.to_str(), Some(expected.as_str()));
            assert!(arg.get_help().is_some(), "--{long} has no help");
        }
    }

    #[test]
    fn the_readme_settings_table_is_the_generated_one() {
        const BEGIN: &str = "<!-- settings table: generated from src/config.rs -->\n";
        const END: &str = "<!-- end of settings table -->";
        let readme = include_str!("../README.md");
        let start = readme
            .find(BEGIN)
            .expect("README.md marks its settings table")
            + BEGIN.len();
        let end = start
            + readme[start..]
                .find(END)
                .expect("README.md ends its settings table");
        let table = settings_table();
        assert!(
            readme[start..end] == table,
            "README.md's settings table is not the one the settings define; replace it \
             with:\n\n{table}"
        );
    }

    #[test]
    fn an_smtp_url_is_read_into_its_parts() {
        let url = SmtpUrl::parse("smtp://ada%40shop:p%2Fss+w%25rd@mail.example:2525")
            .unwrap()
            .unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.tls),
            ("mail.example", 2525, SmtpTls::Plain)
        );
        assert_eq!(
            url.credentials,
            Some(("ada@shop".to_owned(), "p/ss+w%rd".to_owned()))
        );
        for (value, tls, port) in [
            ("smtp://mail.example", SmtpTls::Plain, 25),
            ("smtp://mail.example?tls=starttls", SmtpTls::StartTls, 587),
            ("smtp://mail.example/?tls=required", SmtpTls::StartTls, 587),
            (
                "smtp://mail.example?tls=opportunistic",
                SmtpTls::Opportunistic,
                587,
            ),
            ("smtps://mail.example", SmtpTls::Implicit, 465),
            ("smtps://[::1]:1465", SmtpTls::Implicit, 1465),
        ] {
            let url = SmtpUrl::parse(value).unwrap().unwrap();
            assert_eq!((url.tls, url.port), (tls, port), "{value}");
            assert_eq!(url.credentials, None);
        }
        assert_eq!(
            SmtpUrl::parse("smtps://[::1]").unwrap().unwrap().host,
            "::1"
        );
        assert!(SmtpUrl::parse(" ").unwrap().is_none());
    }

    #[test]
    fn a_bad_smtp_url_is_refused_without_showing_the_password() {
        for bad in [
            "http://u:hunter2@mail.example",
            "smtp://u:hunter2@mail.example?tls=maybe",
            "smtp://u:hunter2@mail.example?tsl=starttls",
            "smtps://u:hunter2@mail.example?tls=starttls",
            "smtp://u:hunter2@mail.example/path",
            "smtp://:hunter2@mail.example",
            "smtp:hunter2",
        ] {
            let err = SmtpUrl::parse(bad).unwrap_err();
            assert_eq!(err.var, "TIDINGS_SMTP_URL");
            assert!(!err.to_string().contains("hunter2"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_settings_debug_shows_no_smtp_password() {
        let mut config = read(&[
            "--mail-from",
            "Tidings <no-reply@shop.example>",
            "--public-url",
            "https://shop.example/",
        ])
        .unwrap();
        config.smtp_url = SmtpUrl::parse("smtps://mailer:hunter2@mail.example").unwrap();
        config.check_mail().unwrap();
        let shown = format!("{config:?}");
        assert!(
            shown.contains("mail.example") && shown.contains("mailer"),
            "{shown}"
        );
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(config.public_url.as_deref(), Some("https://shop.example"));
    }

    #[test]
    fn the_apns_settings_go_together_and_provider_urls_are_checked() {
        let config = read(&[
            "--apns-key",
            "/etc/tidings/AuthKey.p8",
            "--apns-key-id",
            "ABC123DEFG",
            "--apns-team-id",
            "DEF123GHIJ",
        ])
        .unwrap();
        assert_eq!(config.apns_key_id.as_deref(), Some("ABC123DEFG"));
        assert!(config.fcm_credentials.is_none());
        assert_eq!(config.fcm_base_url.as_str(), "https://fcm.googleapis.com/");
        let err = read(&["--apns-key", "/etc/tidings/AuthKey.p8"]).unwrap_err();
        assert_eq!(err.var, "TIDINGS_APNS_KEY_ID");
        let err = read(&[
            "--apns-key-id",
            "ABC123DEFG",
            "--apns-team-id",
            "DEF123GHIJ",
        ])
        .unwrap_err();
        assert_eq!(err.var, "TIDINGS_APNS_KEY");
        for (args, var) in [
            (["--apns-key-id", "short"], "TIDINGS_APNS_KEY_ID"),
            (["--apns-team-id", "ABC-123-DEF"], "TIDINGS_APNS_TEAM_ID"),
            (
                ["--apns-sandbox-url", "http://127.0.0.1:8443"],
                "TIDINGS_APNS_SANDBOX_URL",
            ),
            (
                ["--apns-production-url", "https://u:p@push.example"],
                "TIDINGS_APNS_PRODUCTION_URL",
            ),
            (
                ["--fcm-base-url", "fcm.googleapis.com"],
                "TIDINGS_FCM_BASE_URL",
            ),
            (
                ["--fcm-base-url", "https://fcm.example/?x=1"],
                "TIDINGS_FCM_BASE_URL",
            ),
        ] {
            assert_eq!(read(&args).unwrap_err().var, var, "{args:?}");
        }
    }

    #[test]
    fn mail_needs_a_sender_and_a_public_url_and_verification_needs_mail() {
        let mut config = read(&["--public-url", "https://shop.example"]).unwrap();
        config.smtp_url = SmtpUrl::parse("smtp://mail.example").unwrap();
        assert_eq!(config.check_mail().unwrap_err().var, "TIDINGS_MAIL_FROM");
        let mut config = read(&["--mail-from", "no-reply@shop.example"]).unwrap();
        config.smtp_url = SmtpUrl::parse("smtp://mail.example").unwrap();
        assert_eq!(config.check_mail().unwrap_err().var, "TIDINGS_PUBLIC_URL");
        let err = read(&["--require-verified-email", "true"]).unwrap_err();
        assert_eq!(err.var, "TIDINGS_REQUIRE_VERIFIED_EMAIL");
        for (args, var) in [
            (["--mail-from", "not a mailbox"], "TIDINGS_MAIL_FROM"),
            (["--public-url", "shop.example"], "TIDINGS_PUBLIC_URL"),
            (
                ["--public-url", "https://shop.example/?x=1"],
                "TIDINGS_PUBLIC_URL",
            ),
            (["--public-url", "ftp://shop.example"], "TIDINGS_PUBLIC_URL"),
        ] {
            assert_eq!(read(&args).unwrap_err().var, var, "{args:?}");
        }
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
