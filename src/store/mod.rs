//! Storage: one interface over PostgreSQL (production) and SQLite (embedded).
//!
//! The two backends share their SQL: both take `$1` placeholders, `returning`, partial
//! indexes and `on conflict`, and sqlx encodes UUIDs, timestamps and JSON for each. So a
//! query is written once, and the [`on_tx!`] and [`on_pool!`] macros compile it once per
//! backend with full types. Where the dialects differ, a query matches on the backend
//! itself. Each backend owns its migrations under `migrations/`.

pub mod audit;
pub mod deliveries;
pub mod devices;
pub mod email_tokens;
pub mod events;
pub mod idempotency;
pub mod notifications;
pub mod orders;
pub mod presence;
pub mod products;
pub mod refresh_tokens;
pub mod users;

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, SubsecRound, Utc};
use serde::Serialize;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, PgConnection, PgPool, Postgres, Sqlite, SqlitePool, Transaction};

use tokio::sync::Notify;

use crate::config::{Config, DatabaseUrl};

static POSTGRES_MIGRATIONS: LazyLock<Migrator> =
    LazyLock::new(|| tolerant(sqlx::migrate!("./migrations/postgres")));
static SQLITE_MIGRATIONS: LazyLock<Migrator> =
    LazyLock::new(|| tolerant(sqlx::migrate!("./migrations/sqlite")));

/// A migrator that starts on a database a newer version has migrated further: during a
/// rolling upgrade the old instances keep running, and restart, beside the new ones (every
/// migration is written so that the version before it runs on its schema), and a rollback
/// to the version before needs no new release. The migrations it knows are still checked
/// against what was applied.
fn tolerant(mut migrator: Migrator) -> Migrator {
    migrator.set_ignore_missing(true);
    migrator
}

/// The shortest a SQLite connection waits for another's write lock before failing with
/// "database is locked" (longer if `TIDINGS_DB_ACQUIRE_TIMEOUT` is): SQLite has one
/// writer at a time, and a burst of writes queues behind it for that long rather than
/// failing requests.
const MIN_SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A pool of connections to whichever database is configured.
#[derive(Clone, Debug)]
pub enum Db {
    /// Each backend's pool comes with the in-process signal raised when a commit wrote
    /// events. On SQLite it wakes the relay directly; on PostgreSQL the relay's
    /// [`forward_wakes`](crate::events::relay) wakes it, or sends one `NOTIFY` to the
    /// instance that holds it. The commit itself never notifies: PostgreSQL serialises the
    /// commits of every transaction that issued a `NOTIFY` (a database-wide lock held
    /// until the commit's WAL is flushed), which cut the orders' commit rate to a fraction.
    Postgres(PgPool, Arc<Notify>),
    Sqlite(SqlitePool, Arc<Notify>),
}

/// An open transaction on either backend.
#[derive(Debug)]
pub enum Tx {
    Postgres(OutboxTx<Postgres>),
    Sqlite(OutboxTx<Sqlite>),
}

/// A transaction that remembers whether it wrote events, to raise the outbox signal when it
/// commits. It derefs to the connection, as sqlx's transactions do.
#[derive(Debug)]
pub struct OutboxTx<DB: sqlx::Database> {
    tx: Transaction<'static, DB>,
    wake: Arc<Notify>,
    wrote_events: bool,
}

impl<DB: sqlx::Database> OutboxTx<DB> {
    fn new(tx: Transaction<'static, DB>, wake: &Arc<Notify>) -> Self {
        OutboxTx {
            tx,
            wake: wake.clone(),
            wrote_events: false,
        }
    }

    /// Marks that this transaction wrote to the outbox.
    pub fn wrote_events(&mut self) {
        self.wrote_events = true;
    }

    async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await?;
        if self.wrote_events {
            self.wake.notify_one();
        }
        Ok(())
    }
}

impl<DB: sqlx::Database> std::ops::Deref for OutboxTx<DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl<DB: sqlx::Database> std::ops::DerefMut for OutboxTx<DB> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

/// Runs the same sqlx expression inside a transaction of either backend; `$conn` is bound to
/// the backend's `&mut Connection`.
macro_rules! on_tx {
    ($tx:expr, $conn:ident => $body:expr) => {
        match $tx {
            $crate::store::Tx::Postgres($conn) => {
                let $conn = &mut **$conn;
                $body
            }
            $crate::store::Tx::Sqlite($conn) => {
                let $conn = &mut **$conn;
                $body
            }
        }
    };
}

/// Runs the same sqlx expression on a pool of either backend, outside any transaction.
macro_rules! on_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::store::Db::Postgres($pool, _) => $body,
            $crate::store::Db::Sqlite($pool, _) => $body,
        }
    };
}

// Macros by path (`crate::store::on_tx`), like any other item of the store.
pub(crate) use {on_pool, on_tx};

/// The current time at the precision both backends keep (microseconds), so that a value
/// written and read back compares equal, and SQLite's text timestamps sort correctly.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// `$start, $start+1, …` for `n` values of an `in (…)` list; `null` (matching nothing) for
/// an empty list, which SQL does not allow.
pub fn placeholders(start: usize, n: usize) -> String {
    if n == 0 {
        return "null".to_owned();
    }
    (start..start + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Waits for a PostgreSQL session advisory lock on a connection of its own, trying every
/// `retry`: the connection while it holds the lock (the lock lives exactly as long as it
/// does, so a crash releases it), or `None` at shutdown. One instance leads a task (the
/// relay, the delivery worker) while the others stand by here.
pub async fn advisory_lock(
    pool: &PgPool,
    key: i64,
    retry: Duration,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<Option<PgConnection>, sqlx::Error> {
    let mut lock = PgConnection::connect_with(&pool.connect_options()).await?;
    loop {
        let got: bool = sqlx::query_scalar("select pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut lock)
            .await?;
        if got {
            return Ok(Some(lock));
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            () = tokio::time::sleep(retry) => {}
        }
    }
}

/// How far the schema is migrated, against what this build expects.
#[derive(Debug, Clone, Serialize)]
pub struct MigrationStatus {
    /// Latest migration applied to the database.
    pub applied: Option<i64>,
    /// Latest migration this build carries.
    pub expected: i64,
}

impl MigrationStatus {
    /// Migrated at least as far as this build: a newer schema is one a newer version,
    /// rolling out beside this one, has migrated to.
    pub fn is_ready(&self) -> bool {
        self.applied.is_some_and(|applied| applied >= self.expected)
    }
}

/// A database error in one line, as an operator reads it: the database's own message,
/// without sqlx's prefix, the cause repeated, or the line of PostgreSQL's source code that
/// raised it.
pub fn describe(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Database(db) => db.message().to_owned(),
        sqlx::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}

/// How long a PostgreSQL connection may sit in the pool before it is pinged when taken
/// again. Under load a connection is back in the pool for milliseconds, so none is pinged
/// (a ping is a round trip); one idle longer may have been cut by a restart of the
/// database or a proxy's idle timeout, and a ping finds that before a request does.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

impl Db {
    /// Opens a pool as the configuration says; SQLite files (and their folder) are created.
    pub async fn connect(config: &Config) -> anyhow::Result<Db> {
        let max = config.db_max_connections;
        let acquire = config.db_acquire_timeout;
        match &config.database_url {
            DatabaseUrl::Postgres(url) => {
                let options: PgConnectOptions = url.parse().with_context(|| {
                    format!("DATABASE_URL {} is invalid", config.database_url.redacted())
                })?;
                let failed = |why: String| {
                    anyhow::anyhow!(
                        "could not connect to {}: {why}",
                        config.database_url.redacted()
                    )
                };
                // One connection made directly first: the pool retries a failed connect
                // until its acquire timeout and then says only "pool timed out", hiding the
                // cause (connection refused, no such database, a wrong password).
                let first = tokio::time::timeout(acquire, PgConnection::connect_with(&options))
                    .await
                    .map_err(|_| failed(format!("no answer within {acquire:?}")))?
                    .map_err(|e| failed(describe(&e)))?;
                let _ = first.close().await;
                let pool = PgPoolOptions::new()
                    .max_connections(max)
                    .acquire_timeout(acquire)
                    // A ping before every use was a round trip per transaction; only a
                    // connection that sat idle (where a restart or a proxy may have cut
                    // it) is checked now.
                    .test_before_acquire(false)
                    .before_acquire(|conn, meta| {
                        Box::pin(async move {
                            if meta.idle_for >= PING_IF_IDLE_FOR {
                                conn.ping().await?;
                            }
                            Ok(true)
                        })
                    })
                    .connect_with(options)
                    .await
                    .map_err(|e| failed(describe(&e)))?;
                Ok(Db::Postgres(pool, Arc::new(Notify::new())))
            }
            DatabaseUrl::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("could not create {}", dir.display()))?;
                }
                let options = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .foreign_keys(true)
                    .busy_timeout(acquire.max(MIN_SQLITE_BUSY_TIMEOUT));
                let pool = SqlitePoolOptions::new()
                    .max_connections(max)
                    .acquire_timeout(acquire)
                    .connect_with(options)
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!("could not open {}: {}", path.display(), describe(&e))
                    })?;
                Ok(Db::Sqlite(pool, Arc::new(Notify::new())))
            }
        }
    }

    /// Applies every pending migration of this backend.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        match self {
            Db::Postgres(pool, _) => POSTGRES_MIGRATIONS.run(pool).await,
            Db::Sqlite(pool, _) => SQLITE_MIGRATIONS.run(pool).await,
        }
        .context("could not apply the database migrations")
    }

    /// Checks that the database answers and is migrated to this build's schema.
    pub async fn migration_status(&self) -> Result<MigrationStatus, sqlx::Error> {
        let migrator = match self {
            Db::Postgres(..) => &*POSTGRES_MIGRATIONS,
            Db::Sqlite(..) => &*SQLITE_MIGRATIONS,
        };
        let latest = on_pool!(self, pool => {
            sqlx::query_scalar::<_, Option<i64>>(
                "select max(version) from _sqlx_migrations where success = $1",
            )
            .bind(true)
            .fetch_one(pool)
            .await
        });
        let applied = match latest {
            Ok(version) => version,
            // A database that was never migrated has no such table: not ready, no error.
            Err(sqlx::Error::Database(e)) if e.message().contains("_sqlx_migrations") => None,
            Err(e) => return Err(e),
        };
        let expected = migrator.iter().map(|m| m.version).max().unwrap_or(0);
        Ok(MigrationStatus { applied, expected })
    }

    /// Begins a transaction. SQLite's is `BEGIN IMMEDIATE`: it takes the write lock up
    /// front, so two writers queue on the busy timeout instead of one failing to upgrade.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        Ok(match self {
            Db::Postgres(pool, wake) => Tx::Postgres(OutboxTx::new(pool.begin().await?, wake)),
            Db::Sqlite(pool, wake) => Tx::Sqlite(OutboxTx::new(
                pool.begin_with("BEGIN IMMEDIATE").await?,
                wake,
            )),
        })
    }

    /// The backend's name, for logs and health reports.
    pub fn backend(&self) -> &'static str {
        match self {
            Db::Postgres(..) => "postgres",
            Db::Sqlite(..) => "sqlite",
        }
    }

    /// Closes every connection, waiting for those in use to be returned.
    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }
}

impl Tx {
    /// What ends a `select` that locks its rows until the transaction ends: `for update`
    /// on PostgreSQL; nothing on SQLite, whose transactions hold the one write lock from
    /// `BEGIN IMMEDIATE`.
    pub fn for_update(&self) -> &'static str {
        match self {
            Tx::Postgres(_) => " for update",
            Tx::Sqlite(_) => "",
        }
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Postgres(tx) => tx.commit().await,
            Tx::Sqlite(tx) => tx.commit().await,
        }
    }
}
