//! The relay: numbers committed outbox events and publishes them to the bus.
//!
//! One relay is active per database. On PostgreSQL that is the instance holding a session
//! advisory lock; the others retry every second and take over when the holder's
//! connection goes (a crash closes it, and PostgreSQL releases the lock). It is woken by
//! every commit that wrote events (see [`forward_wakes`]), polls slowly as a safety net,
//! claims up to a batch at a time, and as the leader also prunes events older than the
//! retention window.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use sqlx::Connection;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::Event;
use super::bus::Publisher;
use crate::events::stream;
use crate::store::{self, Db};

/// The advisory lock key of the relay ("tidings" in ASCII).
const LOCK_KEY: i64 = 0x0074_6964_696e_6773;
/// The channel the outbox trigger notifies.
const CHANNEL: &str = "tidings_outbox";

/// Settings of the relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Most events numbered in one transaction.
    pub batch: i64,
    /// How often to look for events when no commit woke it.
    pub poll: Duration,
    /// How often a standby tries to take over.
    pub standby_retry: Duration,
    /// Events older than this are pruned.
    pub retention: Duration,
    /// How often to prune.
    pub prune_every: Duration,
}

/// What the relay has done, for metrics and tests.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Whether this instance is the active relay.
    pub leader: AtomicBool,
    pub relayed: AtomicU64,
    pub batches: AtomicU64,
}

/// How soon the relay publishes again an event the bus did not take.
const RETRY_UNPUBLISHED: Duration = Duration::from_millis(200);

/// How soon the relay tries again after the database failed to give it events: soon
/// enough that a blip delays events barely, seldom enough not to flood a failing database.
const RETRY_CLAIM: Duration = Duration::from_millis(200);

/// Most events numbered in one transaction: a backlog (after an outage, or a burst) is
/// numbered and published in a few large steps, while one transaction stays short enough
/// not to hold the relay's lock on the outbox for long.
pub const BATCH: i64 = 1000;

/// How often a standby instance tries to become the relay: the longest events wait
/// (beyond `TIDINGS_RELAY_POLL`) when the active relay's instance goes away.
pub const STANDBY_RETRY: Duration = Duration::from_secs(1);

/// How often events older than `TIDINGS_EVENT_RETENTION` are deleted. Retention is hours,
/// so a minute's slack in pruning is invisible, and one indexed delete a minute is cheap;
/// not a setting because no deployment needs it different.
pub const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Runs the relay until shutdown.
pub async fn run(
    db: Db,
    publisher: Publisher,
    config: RelayConfig,
    stats: Arc<RelayStats>,
    shutdown: CancellationToken,
) {
    let relay = Relay {
        db,
        publisher,
        config,
        stats,
        unpublished: parking_lot::Mutex::new(None),
    };
    match relay.db.clone() {
        Db::Postgres(pool, commits) => {
            let wake = Notify::new();
            tokio::join!(
                relay.run_postgres(pool.clone(), &wake, shutdown.clone()),
                forward_wakes(&pool, &commits, &wake, &relay.stats.leader, &shutdown),
            );
        }
        Db::Sqlite(_, signal) => relay.run_local(signal, shutdown).await,
    }
}

/// Carries the commits of this instance that wrote events to the relay: to this
/// instance's own (`wake`) while it leads, or else as one `NOTIFY` to whichever instance
/// holds the lock. The commits that happen while a `NOTIFY` is on its way are carried by
/// the next one, so a busy instance sends far fewer than it commits.
///
/// The `NOTIFY` is its own statement after the commit, not part of the writing
/// transaction: PostgreSQL holds a database-wide lock from a notifying transaction's
/// commit until its WAL is flushed, so notifying commits are flushed one at a time, not in
/// groups (measured: TPC-B at 16 clients fell from 2,450 to 550 tps with a `pg_notify`
/// added). A statement that writes nothing flushes nothing, and holds the lock a moment.
/// A wake lost between instances (the lock changing hands) waits for the relay's poll.
async fn forward_wakes(
    pool: &sqlx::PgPool,
    commits: &Notify,
    wake: &Notify,
    leader: &AtomicBool,
    shutdown: &CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = commits.notified() => {}
        }
        if leader.load(Ordering::Acquire) {
            wake.notify_one();
        } else if let Err(e) = sqlx::query("select pg_notify($1, '')")
            .bind(CHANNEL)
            .execute(pool)
            .await
        {
            tracing::debug!(error = %e, "could not wake the relay; its poll will find the events");
        }
    }
}

struct Relay {
    db: Db,
    publisher: Publisher,
    config: RelayConfig,
    stats: Arc<RelayStats>,
    /// The last event of a batch the bus did not take, published again (alone) until it
    /// does: hubs that see it fill what they missed from the database, rather than wait
    /// for the next event or their safety poll.
    unpublished: parking_lot::Mutex<Option<Event>>,
}

impl Relay {
    /// SQLite: one instance, always the leader, woken in-process.
    async fn run_local(&self, signal: Arc<Notify>, shutdown: CancellationToken) {
        self.stats.leader.store(true, Ordering::Release);
        let mut prune = tokio::time::interval(self.config.prune_every);
        loop {
            self.drain().await;
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = signal.notified() => {}
                () = self.clock_due() => {}
                () = tokio::time::sleep(self.next_poll()) => {}
                _ = prune.tick() => self.prune().await,
            }
        }
    }

    /// PostgreSQL: lead while holding the advisory lock, stand by otherwise.
    async fn run_postgres(&self, pool: sqlx::PgPool, wake: &Notify, shutdown: CancellationToken) {
        loop {
            match self.lead(&pool, wake, &shutdown).await {
                Ok(()) => return,
                Err(e) => {
                    if self.stats.leader.swap(false, Ordering::AcqRel) {
                        tracing::warn!(error = %e, "the relay lost its lock connection; standing by");
                    } else {
                        tracing::debug!(error = %e, "the relay could not lead");
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.config.standby_retry) => {}
            }
        }
    }

    /// Takes the lock (or returns to stand by) and relays until shutdown (`Ok`) or until
    /// the lock connection fails (`Err`).
    async fn lead(
        &self,
        pool: &sqlx::PgPool,
        wake: &Notify,
        shutdown: &CancellationToken,
    ) -> Result<(), sqlx::Error> {
        let Some(mut lock) =
            store::advisory_lock(pool, LOCK_KEY, self.config.standby_retry, shutdown).await?
        else {
            return Ok(());
        };
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        self.stats.leader.store(true, Ordering::Release);
        tracing::info!("this instance is the relay");
        let mut prune = tokio::time::interval(self.config.prune_every);
        loop {
            self.drain().await;
            tokio::select! {
                () = shutdown.cancelled() => {
                    self.stats.leader.store(false, Ordering::Release);
                    let _ = lock.close().await;
                    return Ok(());
                }
                () = wake.notified() => {}
                () = self.clock_due() => {}
                notification = listener.recv() => {
                    if let Err(e) = notification {
                        // The listener reconnects on the next recv; the poll covers the gap.
                        tracing::warn!(error = %e, "the relay's LISTEN connection failed");
                    }
                }
                () = tokio::time::sleep(self.next_poll()) => {
                    // Still holding the lock? A dead connection means another may lead now.
                    sqlx::query("select 1").execute(&mut lock).await?;
                }
                _ = prune.tick() => self.prune().await,
            }
        }
    }

    /// How long to wait for a commit before looking anyway: the poll, or soon while the
    /// bus owes hubs an event.
    fn next_poll(&self) -> Duration {
        if self.unpublished.lock().is_some() {
            RETRY_UNPUBLISHED.min(self.config.poll)
        } else {
            self.config.poll
        }
    }

    /// Resolves when a partitioned bus's clock is due (never if none is owed).
    async fn clock_due(&self) {
        match self.publisher.clock_due() {
            Some(due) => tokio::time::sleep_until(due.into()).await,
            None => std::future::pending().await,
        }
    }

    /// Numbers and publishes every committed event, a batch at a time, then the clock of a
    /// partitioned bus if it is due.
    async fn drain(&self) {
        self.drain_batches().await;
        self.publisher.publish_clock().await;
    }

    async fn drain_batches(&self) {
        let retry = self.unpublished.lock().clone();
        if let Some(event) = retry
            && self.publisher.publish(vec![event]).await
        {
            *self.unpublished.lock() = None;
        }
        loop {
            let events = match stream::claim(&self.db, self.config.batch).await {
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!(error = %e, "the relay could not claim events; retrying");
                    tokio::time::sleep(RETRY_CLAIM).await;
                    return;
                }
            };
            if events.is_empty() {
                return;
            }
            let full = events.len() as i64 == self.config.batch;
            let now = Utc::now();
            for event in &events {
                let lag = (now - event.at).to_std().unwrap_or_default();
                metrics::histogram!("tidings_relay_lag_seconds").record(lag.as_secs_f64());
            }
            metrics::counter!("tidings_events_relayed_total").increment(events.len() as u64);
            // Relayed over batches is the mean batch: what a message's cost (one per lane
            // per batch on a partitioned bus, one per batch on one channel) is shared by.
            metrics::counter!("tidings_relay_batches_total").increment(1);
            self.stats
                .relayed
                .fetch_add(events.len() as u64, Ordering::Relaxed);
            self.stats.batches.fetch_add(1, Ordering::Relaxed);
            let last = events.last().cloned();
            let published = self.publisher.publish(events).await;
            *self.unpublished.lock() = if published { None } else { last };
            if !full {
                return;
            }
        }
    }

    async fn prune(&self) {
        let Ok(retention) = chrono::Duration::from_std(self.config.retention) else {
            return;
        };
        match stream::prune(&self.db, Utc::now() - retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(pruned = n, "pruned events past the retention window"),
            Err(e) => tracing::warn!(error = %e, "pruning events failed"),
        }
    }
}
