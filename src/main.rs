//! The `tidings` command: `serve` (the default), `migrate`, `seed`, `user`, `healthcheck`.

use std::process::ExitCode;

/// jemalloc, tuned for many idle connections: one arena, no thread caches, and freed pages
/// returned at once. Per live connection this halves resident memory against glibc's
/// allocator (ARCHITECTURE.md, "Memory per live connection"; docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Read by jemalloc at start (the crate prefixes its symbols with `_rjem_`).
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8; 57] = b"narenas:1,tcache:false,dirty_decay_ms:0,muzzy_decay_ms:0\0";

use anyhow::Context;
use clap::Parser;
use tidings::app::seed;
use tidings::config::{Cli, Command, Config, ConfigError, UserCommand};
use tidings::service::accounts::tokens::TokenKeys;
use tidings::service::accounts::{self, Accounts, password};
use tidings::telemetry;
use tidings::{Application, domain, store};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => match ConfigError::from_clap(&e) {
            Some(bad_setting) => {
                say_error(format_args!("{bad_setting}"));
                return ExitCode::from(2);
            }
            // --help, --version, an unknown flag or subcommand: clap says it best.
            None => e.exit(),
        },
    };
    let config = match cli.settings.validate() {
        Ok(config) => config,
        Err(e) => {
            say_error(format_args!("{e}"));
            return ExitCode::from(2);
        }
    };
    telemetry::init(config.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            say_error(format_args!("could not start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command.unwrap_or(Command::Serve), config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes, never a backtrace.
            say_error(format_args!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// One line on stderr; if stderr is gone there is no one to tell (and `eprintln!` would
/// panic).
fn say_error(message: std::fmt::Arguments) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "tidings: {message}");
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            raise_open_file_limit();
            let stop = tidings::shutdown_signal();
            let app = Application::build(config).await?;
            app.run_until_stopped(stop).await
        }
        Command::Migrate => {
            let db = store::Db::connect(&config).await?;
            db.migrate().await?;
            println!("migrated {}", config.database_url.redacted());
            Ok(())
        }
        Command::User(UserCommand::Create { email, role }) => {
            create_user(&config, &email, &role).await
        }
        Command::User(UserCommand::Tokens {
            count,
            prefix,
            role,
            ttl,
        }) => user_tokens(&config, count, &prefix, &role, ttl).await,
        Command::Seed => seed(&config).await,
        Command::Healthcheck { url, timeout } => {
            healthcheck(config.listen, url.as_deref(), timeout).await
        }
    }
}

/// Asks `GET /readyz` and prints one line: `ready: …` (exit 0), or an error saying `not
/// ready: …` (the server answered, not 200) or `down: …` (no connection, or no answer
/// within `timeout`), which exits 1. Without `url`, the server at `listen` is asked; one
/// listening on every interface is asked on loopback. hyper's HTTP/1 client, the server's
/// own HTTP stack: no second client in the binary for one request.
async fn healthcheck(
    listen: std::net::SocketAddr,
    url: Option<&str>,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    use hyper::StatusCode;
    use hyper::header::HOST;
    use hyper_util::rt::TokioIo;

    let url: hyper::Uri = match url {
        Some(url) => url
            .parse()
            .map_err(|e| anyhow::anyhow!("--url {url:?}: {e}"))?,
        None => format!("http://{}/readyz", loopback_if_unspecified(listen)).parse()?,
    };
    anyhow::ensure!(
        url.scheme_str() == Some("http"),
        "--url {url}: only http:// URLs can be asked"
    );
    let authority = url
        .authority()
        .with_context(|| format!("--url {url}: no host"))?
        .clone();
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(80);
    let path = url.path_and_query().map_or("/", |path| path.as_str());
    let asked = async {
        let stream = tokio::net::TcpStream::connect((host, port))
            .await
            .with_context(|| format!("could not connect to {authority}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let request = hyper::Request::get(path)
            .header(HOST, authority.as_str())
            .body(String::new())?;
        anyhow::Ok(sender.send_request(request).await?.status())
    };
    match tokio::time::timeout(timeout, asked).await {
        Ok(Ok(StatusCode::OK)) => {
            println!("ready: {url} answered 200");
            Ok(())
        }
        Ok(Ok(status)) => anyhow::bail!("not ready: {url} answered {status}"),
        Ok(Err(e)) => anyhow::bail!("down: {url}: {e:#}"),
        Err(_) => anyhow::bail!(
            "down: {url} did not answer within {}",
            humantime::format_duration(timeout)
        ),
    }
}

/// The address to reach a server listening on `listen` at: loopback of the same family
/// when it listens on every interface (`0.0.0.0`, `[::]`), which is not an address to
/// connect to.
fn loopback_if_unspecified(listen: std::net::SocketAddr) -> std::net::SocketAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, listen.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, listen.port()).into(),
        _ => listen,
    }
}

/// Every connection takes a file descriptor, and the usual soft limit (1024) would turn
/// clients away long before memory runs out: the soft limit is raised to the hard one.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(max_open_files = limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
}

/// Creates (or reuses) `count` users and prints `<id> <email> <access token>` for each.
/// One password hash serves them all, so ten thousand users take seconds, not minutes.
async fn user_tokens(
    config: &Config,
    count: u32,
    prefix: &str,
    role: &str,
    ttl: std::time::Duration,
) -> anyhow::Result<()> {
    use std::io::Write;
    let role: domain::Role = role
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--role: {e}"))?;
    let db = store::Db::connect(config).await?;
    db.migrate().await?;
    let mut keys = TokenKeys::load(config)?;
    keys.access_ttl = ttl;
    let password = format!("{}{}", uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let hash = password::hash(password).await?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for start in (0..count).step_by(500) {
        let mut tx = db.begin().await?;
        let mut users = Vec::with_capacity(500);
        for n in start..count.min(start + 500) {
            let email = domain::Email::parse(&format!("{prefix}-{n}@example.com"))
                .map_err(|e| anyhow::anyhow!("--prefix makes an email that {e}"))?;
            let user = match store::users::credentials_by_email(&db, &email).await? {
                Some(existing) => existing.user,
                None => store::users::insert(&mut tx, &email, &hash, role).await?,
            };
            users.push(user);
        }
        tx.commit().await?;
        for user in users {
            writeln!(out, "{} {} {}", user.id, user.email, keys.issue(&user)?)?;
        }
    }
    out.flush()?;
    db.close().await;
    Ok(())
}

/// Creates a user from the command line; the password never appears in an argument.
async fn create_user(config: &Config, email: &str, role: &str) -> anyhow::Result<()> {
    let role: domain::Role = role
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--role: {e}"))?;
    let email = domain::Email::parse(email).map_err(|e| anyhow::anyhow!("--email {e}"))?;
    let password = match std::env::var("TIDINGS_PASSWORD") {
        Ok(password) => password,
        Err(_) => {
            let first = rpassword::prompt_password("Password: ").context(
                "could not read a password (set TIDINGS_PASSWORD when there is no terminal)",
            )?;
            let second = rpassword::prompt_password("Again: ")
                .context("could not read the password again")?;
            anyhow::ensure!(first == second, "the two passwords differ");
            first
        }
    };
    let password = domain::NewPassword::parse(password, Some(&email))
        .map_err(|e| anyhow::anyhow!("the password {e}"))?;
    let db = store::Db::connect(config).await?;
    db.migrate().await?;
    let accounts = Accounts::new(db, config)?;
    let user = accounts::register(&accounts, &email, &password, role)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("created {} ({}) with id {}", user.email, user.role, user.id);
    accounts.db.close().await;
    Ok(())
}

/// Seeds demo data; the users' password is TIDINGS_PASSWORD, or a generated one that is
/// printed once (it is demo data: the point is that someone can log in).
async fn seed(config: &Config) -> anyhow::Result<()> {
    let (password, generated) = match std::env::var("TIDINGS_PASSWORD") {
        Ok(password) => (password, false),
        Err(_) => (format!("demo-{}", uuid::Uuid::new_v4().simple()), true),
    };
    let db = store::Db::connect(config).await?;
    db.migrate().await?;
    let accounts = Accounts::new(db, config)?;
    let seeded = seed::run(&accounts, &password).await?;
    println!(
        "seeded {} users, {} products, {} orders into {}",
        seeded.users,
        seeded.products,
        seeded.orders,
        config.database_url.redacted()
    );
    if seeded.users > 0 {
        let who: Vec<String> = seed::USERS
            .iter()
            .map(|(email, role)| format!("{email} ({role})"))
            .collect();
        println!("users: {}", who.join(", "));
        if generated {
            println!("their password: {password}");
        }
    }
    accounts.db.close().await;
    Ok(())
}
