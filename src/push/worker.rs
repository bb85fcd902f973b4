//! The delivery worker: sends what a user's live connections did not acknowledge to their
//! devices (or, with no device, by email), from the outbox.
//!
//! One worker is active per database, like the relay (on PostgreSQL the holder of an
//! advisory lock of its own; the others stand by and take over when its connection goes).
//! It reads the sequenced events after its cursor, in order, from the database: nothing
//! is skipped across restarts or changes of leader. Three steps, each a few queries:
//!
//! 1. **Ingest.** Each `notification.created` becomes an *intent* (the event, its user),
//!    due within a second when the user holds no live connection on any instance (and
//!    postponed to the full delay if one is recorded by then), else `TIDINGS_PUSH_DELAY`
//!    after its commit. The cursor moves in the same transaction.
//! 2. **Decide.** A due intent whose user's apps acknowledged its seq (`live_acks`) is
//!    done. Otherwise, by the user's preferences for the notification's kind: a
//!    *delivery* to each device whose provider is configured, or with none, one to their
//!    email address; one per event and target, whatever happens twice.
//! 3. **Send.** Due deliveries are claimed with a lease (a crashed sender's lease lapses and
//!    another tries again), sent a few dozen at a time, and settled: sent, gone (the device
//!    is removed), rejected, retried with exponential backoff and jitter (after the
//!    provider's `Retry-After`, if longer), or dead after the last attempt. Every attempt
//!    is recorded for `GET /v1/admin/deliveries`.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use rand::Rng;
use serde_json::{Value, json};
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::apns::Apns;
use super::fcm::Fcm;
use super::webpush::{MAX_PAYLOAD, WebPush};
use super::{Outcome, PushMessage, PushProvider, Urgency};
use crate::events::{Audience, Event, EventType, stream};
use crate::mail::{Mailer, Outgoing, templates};
use crate::service::delivery as delivery_service;
use crate::service::devices as device_service;
use crate::store::deliveries::{self, Attempt, Delivery, Intent, Settled};
use crate::store::devices::{self, Device};
use crate::store::users;
use crate::store::{self, Db, now, presence};

/// The advisory lock key of the delivery worker ("tidings-p" would not fit; "tidpush").
const LOCK_KEY: i64 = 0x0074_6964_7075_7368;

/// Most events read, intents decided or deliveries claimed in one step.
const BATCH: i64 = 500;

/// How long a claimed delivery is the claimer's: longer than one request may take
/// (`webpush::REQUEST_TIMEOUT`, 30 s), so that only a stopped instance's claims lapse.
const LEASE: Duration = Duration::from_secs(90);

/// The longest wait between two retries of a delivery.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// How long a push service keeps a message for a device that is offline.
const PUSH_TTL: Duration = Duration::from_secs(24 * 3600);

/// How long a notification for a user connected nowhere waits before it is decided: the
/// time it takes an instance to record a connection just opened (`realtime::presence`
/// writes within about 50 ms). If the user is connected by then, it waits the full delay.
const PRESENCE_GRACE: Duration = Duration::from_secs(1);

/// The least time between two rounds that a wake starts. A round is a dozen round trips
/// to the database (read the new events, record intents, decide what is due, claim), and
/// the hub wakes the worker at every batch of notifications it routes: at 3,000
/// notifications a second, about 250 rounds a second made the worker's thread the busiest
/// of its instance.
///
/// Paced, a round takes the batches of its 50 ms together. No push is due sooner than a
/// second after its event unless the delay is set below that (`PRESENCE_GRACE`), so this
/// delays none by more than 50 ms.
const WAKE_PACE: Duration = Duration::from_millis(50);

/// How often presence rows of instances that stopped without saying so are removed.
const PRUNE_PRESENCE_EVERY: Duration = Duration::from_secs(15);

/// Settings of the worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// How long an event waits for a connected user's apps to acknowledge it.
    pub delay: Duration,
    /// Attempts at one delivery before it is dead.
    pub max_attempts: u32,
    /// The wait before the second attempt; each later one doubles it (with jitter).
    pub retry_base: Duration,
    /// Messages one device may be sent a minute; more wait their turn.
    pub device_rate_per_minute: u32,
    /// Sends in flight at once.
    pub concurrency: usize,
    /// How often to look for work when nothing woke the worker.
    pub poll: Duration,
    /// How often a standby tries to take over.
    pub standby_retry: Duration,
    /// An instance not seen for this long holds no connection.
    pub presence_timeout: Duration,
}

/// What the worker has done, for metrics and tests.
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub leader: AtomicBool,
    pub intents: AtomicU64,
    pub sent: AtomicU64,
}

/// The providers this server is configured for; a device of another kind is not sent to.
#[derive(Clone, Default)]
pub struct Providers {
    pub webpush: Option<WebPush>,
    /// Firebase Cloud Messaging (absent without `TIDINGS_FCM_CREDENTIALS`).
    pub fcm: Option<Fcm>,
    /// Apple's push service (absent without `TIDINGS_APNS_KEY`).
    pub apns: Option<Apns>,
    /// Email, for users with no device who chose it (absent without `TIDINGS_SMTP_URL`).
    pub mail: Option<Mailer>,
}

impl Providers {
    fn serves(&self, kind: &str) -> bool {
        match kind {
            "webpush" => self.webpush.is_some(),
            "fcm" => self.fcm.is_some(),
            "apns" => self.apns.is_some(),
            _ => false,
        }
    }
}

/// Runs the worker until shutdown. `wake` is signalled when events arrive.
pub async fn run(
    db: Db,
    providers: Providers,
    config: WorkerConfig,
    wake: Arc<Notify>,
    stats: Arc<WorkerStats>,
    shutdown: CancellationToken,
) {
    let rate = NonZeroU32::new(config.device_rate_per_minute.max(1)).expect("at least 1");
    let worker = Worker {
        limiter: RateLimiter::keyed(Quota::per_minute(rate)),
        sends: Arc::new(Semaphore::new(config.concurrency)),
        db,
        providers,
        config,
        stats,
    };
    match worker.db.clone() {
        Db::Postgres(pool, _) => loop {
            match worker.lead_postgres(&pool, &wake, &shutdown).await {
                Ok(()) => return,
                Err(e) => {
                    if worker.stats.leader.swap(false, Ordering::AcqRel) {
                        tracing::warn!(error = %e, "the delivery worker lost its lock; standing by");
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(worker.config.standby_retry) => {}
            }
        },
        Db::Sqlite(..) => {
            worker.stats.leader.store(true, Ordering::Release);
            worker.work(&wake, &shutdown, None).await.ok();
        }
    }
}

struct Worker {
    db: Db,
    providers: Providers,
    config: WorkerConfig,
    stats: Arc<WorkerStats>,
    limiter: DefaultKeyedRateLimiter<String>,
    sends: Arc<Semaphore>,
}

impl Worker {
    async fn lead_postgres(
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
        self.stats.leader.store(true, Ordering::Release);
        tracing::info!("this instance runs the delivery worker");
        let result = self.work(wake, shutdown, Some(&mut lock)).await;
        self.stats.leader.store(false, Ordering::Release);
        let _ = lock.close().await;
        result
    }

    /// The worker's loop while it leads; `Err` when the lock connection fails.
    async fn work(
        &self,
        wake: &Notify,
        shutdown: &CancellationToken,
        mut lock: Option<&mut PgConnection>,
    ) -> Result<(), sqlx::Error> {
        let mut sending: JoinSet<Settled> = JoinSet::new();
        let mut last_prune = Instant::now() - PRUNE_PRESENCE_EVERY;
        let mut last_lock_check = Instant::now();
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let round = tokio::time::Instant::now();
            let mut busy = self.ingest().await;
            busy |= self.decide().await;
            busy |= self.claim(&mut sending).await;
            if last_prune.elapsed() >= PRUNE_PRESENCE_EVERY {
                last_prune = Instant::now();
                self.prune_presence().await;
            }
            if let Some(lock) = lock.as_deref_mut()
                && last_lock_check.elapsed() >= self.config.poll
            {
                last_lock_check = Instant::now();
                // Still holding the lock? A dead connection means another may lead now.
                if let Err(e) = sqlx::query("select 1").execute(&mut *lock).await {
                    self.finish(&mut sending).await;
                    return Err(e);
                }
            }
            let wait = if busy {
                Duration::ZERO
            } else {
                self.next_wait().await
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = wake.notified() => {
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep_until(round + WAKE_PACE) => {}
                    }
                }
                () = tokio::time::sleep(wait) => {}
                Some(done) = sending.join_next(), if !sending.is_empty() => {
                    let mut settled: Vec<Settled> = done.into_iter().collect();
                    while let Some(done) = sending.try_join_next() {
                        settled.extend(done);
                    }
                    self.settle(&settled).await;
                }
            }
        }
        self.finish(&mut sending).await;
        Ok(())
    }

    /// Lets the sends in flight end and records them; what is still claimed after a crash
    /// is sent again when its lease lapses.
    async fn finish(&self, sending: &mut JoinSet<Settled>) {
        let mut settled = Vec::new();
        while let Some(done) = sending.join_next().await {
            settled.extend(done);
        }
        self.settle(&settled).await;
    }

    /// How long to sleep: until the next intent or delivery is due, at most the poll.
    async fn next_wait(&self) -> Duration {
        let mut wait = self.config.poll;
        let due = deliveries::next_due(&self.db).await.ok().flatten();
        let attempt = if self.sends.available_permits() > 0 {
            deliveries::next_attempt(&self.db).await.ok().flatten()
        } else {
            None
        };
        for at in [due, attempt].into_iter().flatten() {
            let until = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            wait = wait.min(until + Duration::from_millis(1));
        }
        wait
    }

    /// Turns the events after the cursor into intents; whether there may be more.
    async fn ingest(&self) -> bool {
        match self.try_ingest().await {
            Ok(more) => more,
            Err(e) => {
                tracing::warn!(error = %e, "the delivery worker could not read events");
                false
            }
        }
    }

    async fn try_ingest(&self) -> Result<bool, sqlx::Error> {
        let cursor = deliveries::cursor(&self.db).await?;
        // The relay numbers events and moves `last_seq` in one transaction, so every seq up
        // to it is committed. Only the notifications of the next BATCH seqs are read: the
        // rest of the stream (orders, stock) is most of it and never becomes a push.
        let head = stream::last_seq(&self.db).await?;
        if head <= cursor {
            return Ok(false);
        }
        let last = head.min(cursor + BATCH);
        let events = stream::of_type_between(
            &self.db,
            cursor,
            last,
            EventType::NotificationCreated.as_str(),
        )
        .await?;
        let notifications: Vec<(&Event, Uuid)> = events
            .iter()
            .filter_map(|e| match e.audience {
                Audience::User(user) => Some((e, user)),
                _ => None,
            })
            .collect();
        let users: Vec<Uuid> = notifications.iter().map(|(_, u)| *u).collect();
        let alive_since = now() - self.config.presence_timeout;
        let connected = presence::connected(&self.db, &users, alive_since).await?;
        let at = now();
        let intents: Vec<Intent> = notifications
            .iter()
            .map(|(event, user)| Intent {
                event_seq: event.seq,
                user_id: *user,
                kind: event.data["kind"].as_str().unwrap_or("").to_owned(),
                payload: payload(event),
                // Not connected: soon, after a moment in which a connection being opened
                // is recorded (checked again when due).
                due_at: if connected.contains(user) {
                    event.at + self.config.delay
                } else {
                    at + PRESENCE_GRACE
                },
                state: "waiting".to_owned(),
                created_at: at,
                decided_at: None,
            })
            .collect();
        let mut tx = self.db.begin().await?;
        deliveries::insert_intents(&mut tx, &intents).await?;
        deliveries::advance_cursor(&mut tx, last).await?;
        tx.commit().await?;
        self.stats
            .intents
            .fetch_add(notifications.len() as u64, Ordering::Relaxed);
        Ok(last < head)
    }

    /// Decides the intents that are due; whether there may be more.
    async fn decide(&self) -> bool {
        match self.try_decide().await {
            Ok(more) => more,
            Err(e) => {
                tracing::warn!(error = %e, "the delivery worker could not decide deliveries");
                false
            }
        }
    }

    async fn try_decide(&self) -> anyhow::Result<bool> {
        let at = now();
        let intents = deliveries::due_intents(&self.db, at, BATCH).await?;
        if intents.is_empty() {
            return Ok(false);
        }
        // What the decisions read, for the whole batch at once: three queries, not three
        // per intent.
        let mut users: Vec<Uuid> = intents.iter().map(|i| i.user_id).collect();
        users.sort_unstable();
        users.dedup();
        let alive_since = now() - self.config.presence_timeout;
        let connected = presence::connected(&self.db, &users, alive_since).await?;
        let context = Context {
            acked: presence::acked_seqs(&self.db, &users).await?,
            prefs: delivery_service::preferences_of(&self.db, &users).await?,
            devices: devices::of_users(&self.db, &users).await?,
        };
        let mut decided = Vec::with_capacity(intents.len());
        let mut postponed = Vec::new();
        for intent in &intents {
            // Due early because its user was not connected, but connected now: their apps
            // get the delay to acknowledge it.
            let full_delay =
                event_time(&intent.payload).unwrap_or(intent.created_at) + self.config.delay;
            let acked = context
                .acked
                .get(&intent.user_id)
                .is_some_and(|s| *s >= intent.event_seq);
            if !acked
                && intent.due_at < full_delay
                && full_delay > at
                && connected.contains(&intent.user_id)
            {
                postponed.push((intent, full_delay));
                continue;
            }
            decided.push((intent, self.decision(intent, &context, at).await?));
        }
        let mut tx = self.db.begin().await?;
        for (intent, due_at) in &postponed {
            deliveries::postpone(&mut tx, intent.event_seq, intent.user_id, *due_at).await?;
        }
        let decisions: Vec<(i64, Uuid, &str)> = decided
            .iter()
            .map(|(intent, (state, _))| (intent.event_seq, intent.user_id, *state))
            .collect();
        let waiting = deliveries::decide(&mut tx, &decisions, at).await?;
        for (intent, (_, planned)) in &decided {
            if waiting.contains(&(intent.event_seq, intent.user_id)) {
                for delivery in planned {
                    deliveries::insert_delivery(&mut tx, delivery).await?;
                }
            }
        }
        tx.commit().await?;
        for (_, (state, _)) in &decided {
            metrics::counter!("tidings_push_decisions_total", "decision" => *state).increment(1);
        }
        Ok(intents.len() as i64 == BATCH)
    }

    /// What becomes of one due intent: its new state, and the deliveries to make.
    async fn decision(
        &self,
        intent: &Intent,
        context: &Context,
        at: DateTime<Utc>,
    ) -> anyhow::Result<(&'static str, Vec<Delivery>)> {
        let acked = context.acked.get(&intent.user_id);
        if acked.is_some_and(|seq| *seq >= intent.event_seq) {
            return Ok(("acked", Vec::new()));
        }
        let prefs = context
            .prefs
            .get(&intent.user_id)
            .cloned()
            .unwrap_or_default();
        let push = prefs.pushes(&intent.kind);
        let email = prefs.emails(&intent.kind);
        if !push && !email {
            return Ok(("live_only", Vec::new()));
        }
        let event_at = event_time(&intent.payload).unwrap_or(intent.created_at);
        let delivery =
            |channel: &str, device: Option<Uuid>, key: String, target: String| Delivery {
                id: Uuid::now_v7(),
                event_seq: intent.event_seq,
                user_id: intent.user_id,
                channel: channel.to_owned(),
                device_id: device,
                target_key: key,
                target,
                payload: intent.payload.clone(),
                status: "pending".to_owned(),
                attempts: 0,
                next_attempt_at: at,
                lease_until: None,
                created_at: at,
                updated_at: at,
                event_at,
            };
        if push {
            let targets: Vec<Delivery> = context
                .devices
                .iter()
                .filter(|d| d.user_id == intent.user_id && self.providers.serves(&d.kind))
                .map(|d| delivery(&d.kind, Some(d.id), d.id.to_string(), shown(d)))
                .collect();
            if !targets.is_empty() {
                return Ok(("pushed", targets));
            }
        }
        // Email only to an address its owner has verified: a notification is not sent to
        // whoever typed an address at registration.
        if email
            && self.providers.mail.is_some()
            && let Some(user) = users::find(&self.db, intent.user_id).await?
            && user.email_verified
        {
            let key = format!("email:{}", user.email);
            return Ok((
                "emailed",
                vec![delivery("email", None, key, masked(&user.email))],
            ));
        }
        Ok(("no_target", Vec::new()))
    }

    /// Claims due deliveries and starts sending them, as many as there are free sends;
    /// whether every free send was used (there may be more).
    async fn claim(&self, sending: &mut JoinSet<Settled>) -> bool {
        let free = self.sends.available_permits();
        if free == 0 {
            return false;
        }
        let at = now();
        let lease = at + LEASE;
        let claimed = match deliveries::claim(&self.db, at, lease, free as i64).await {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::warn!(error = %e, "the delivery worker could not claim deliveries");
                return false;
            }
        };
        let full = claimed.len() == free;
        let mut deferred = Vec::new();
        let device_ids: Vec<Uuid> = claimed.iter().filter_map(|d| d.device_id).collect();
        let found: HashMap<Uuid, Device> = match devices::get_many(&self.db, &device_ids).await {
            Ok(found) => found.into_iter().map(|d| (d.id, d)).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "the delivery worker could not read devices");
                let later = at + Duration::from_secs(1);
                let back: Vec<Settled> = claimed.iter().map(|d| put_back(d, later)).collect();
                self.settle(&back).await;
                return false;
            }
        };
        for delivery in claimed {
            // A device sent too much lately waits its turn, without an attempt counted.
            if let Err(not_until) = self.limiter.check_key(&delivery.target_key) {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                metrics::counter!("tidings_push_attempts_total", "provider" => delivery.channel.clone(), "outcome" => "rate_limited")
                    .increment(1);
                deferred.push(put_back(&delivery, at + wait));
                continue;
            }
            let Ok(permit) = self.sends.clone().try_acquire_owned() else {
                // Not sent now: back to pending, not left to its lease.
                deferred.push(put_back(&delivery, at));
                continue;
            };
            let job = self.job();
            let device = delivery.device_id.and_then(|id| found.get(&id).cloned());
            sending.spawn(async move {
                let settled = job.send(delivery, device).await;
                drop(permit);
                settled
            });
        }
        self.settle(&deferred).await;
        full
    }

    fn job(&self) -> SendJob {
        SendJob {
            db: self.db.clone(),
            providers: self.providers.clone(),
            max_attempts: self.config.max_attempts,
            retry_base: self.config.retry_base,
        }
    }

    async fn settle(&self, settled: &[Settled]) {
        if settled.is_empty() {
            return;
        }
        if let Err(e) = deliveries::settle(&self.db, settled, now()).await {
            // Their leases lapse and they are sent again: at least once, not exactly.
            tracing::warn!(error = %e, "the delivery worker could not record outcomes");
        }
        let sent = settled.iter().filter(|s| s.status == "sent").count();
        self.stats.sent.fetch_add(sent as u64, Ordering::Relaxed);
    }

    async fn prune_presence(&self) {
        let before = now() - self.config.presence_timeout;
        match presence::prune_instances(&self.db, before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(instances = n, "removed the presence of instances gone"),
            Err(e) => tracing::warn!(error = %e, "could not prune presence"),
        }
    }
}

/// A claimed delivery returned to pending, due at `next`, without an attempt.
fn put_back(delivery: &Delivery, next: DateTime<Utc>) -> Settled {
    Settled {
        id: delivery.id,
        status: "pending",
        attempts: delivery.attempts,
        next_attempt_at: next,
        attempt: None,
        used_device: None,
    }
}

/// What the decisions of one batch of intents read.
struct Context {
    acked: HashMap<Uuid, i64>,
    prefs: HashMap<Uuid, delivery_service::Preferences>,
    devices: Vec<Device>,
}

/// One send, with what it needs, run on its own task.
struct SendJob {
    db: Db,
    providers: Providers,
    max_attempts: u32,
    retry_base: Duration,
}

impl SendJob {
    /// Sends one delivery to its device (`None`: removed since, or an email).
    async fn send(self, delivery: Delivery, device: Option<Device>) -> Settled {
        let started = Instant::now();
        let at = now();
        let attempt = delivery.attempts + 1;
        let record = |outcome: &str, detail: Option<String>| Attempt {
            delivery_id: delivery.id,
            attempt,
            at,
            outcome: outcome.to_owned(),
            detail,
            duration_ms: started.elapsed().as_millis() as i64,
        };
        let channel = delivery.channel.as_str();
        let outcome = if channel == "email" {
            self.email(&delivery).await
        } else {
            match device {
                None => Outcome::Gone,
                Some(device) => {
                    let message = PushMessage {
                        payload: delivery.payload.clone().into_bytes(),
                        ttl: PUSH_TTL,
                        urgency: Urgency::Normal,
                        topic: collapse_topic(&delivery.payload),
                    };
                    match channel {
                        "webpush" => match &self.providers.webpush {
                            Some(provider) => provider.send(&device, &message).await,
                            None => Outcome::Rejected("Web Push is not configured".to_owned()),
                        },
                        "fcm" => match &self.providers.fcm {
                            Some(provider) => provider.send(&device, &message).await,
                            None => Outcome::Rejected("FCM is not configured".to_owned()),
                        },
                        "apns" => match &self.providers.apns {
                            Some(provider) => provider.send(&device, &message).await,
                            None => Outcome::Rejected("APNs is not configured".to_owned()),
                        },
                        other => Outcome::Rejected(format!("no {other} provider is configured")),
                    }
                }
            }
        };
        let label = match &outcome {
            Outcome::Delivered => "delivered",
            Outcome::Gone => "gone",
            Outcome::RetryAfter(_) => "retry",
            Outcome::Rejected(_) => "rejected",
        };
        metrics::counter!("tidings_push_attempts_total", "provider" => delivery.channel.clone(), "outcome" => label)
            .increment(1);
        // Waits count from the answer, not from when the request left.
        let answered = now();
        let settled = |status: &'static str, next: DateTime<Utc>, attempt: Attempt| Settled {
            id: delivery.id,
            status,
            attempts: attempt.attempt,
            next_attempt_at: next,
            attempt: Some(attempt),
            used_device: None,
        };
        match outcome {
            Outcome::Delivered => {
                let lag = (Utc::now() - delivery.event_at)
                    .to_std()
                    .unwrap_or_default();
                metrics::histogram!("tidings_push_latency_seconds", "provider" => delivery.channel.clone())
                    .record(lag.as_secs_f64());
                Settled {
                    used_device: delivery.device_id,
                    ..settled("sent", at, record("delivered", None))
                }
            }
            Outcome::Gone => {
                if let Some(id) = delivery.device_id
                    && let Err(e) = device_service::remove_gone(&self.db, id).await
                {
                    tracing::warn!(error = %e, "could not remove a gone device");
                }
                settled(
                    "gone",
                    at,
                    record("gone", Some("the provider says the device is gone".into())),
                )
            }
            Outcome::Rejected(reason) => settled("rejected", at, record("rejected", Some(reason))),
            Outcome::RetryAfter(after) => {
                let detail = after.map(|d| format!("retry after {} s", d.as_secs()));
                if attempt as u32 >= self.max_attempts {
                    metrics::counter!("tidings_push_dead_total", "provider" => delivery.channel.clone())
                        .increment(1);
                    tracing::warn!(delivery = %delivery.id, attempts = attempt, "a push delivery is dead after its last attempt");
                    settled("dead", at, record("retry", detail))
                } else {
                    let wait =
                        backoff(self.retry_base, attempt as u32).max(after.unwrap_or_default());
                    settled("pending", answered + wait, record("retry", detail))
                }
            }
        }
    }

    /// Emails the notification of a delivery to its user's address.
    async fn email(&self, delivery: &Delivery) -> Outcome {
        let Some(mailer) = &self.providers.mail else {
            return Outcome::Rejected("email is off".to_owned());
        };
        let Some(to) = delivery.target_key.strip_prefix("email:") else {
            return Outcome::Rejected("not an email delivery".to_owned());
        };
        let event: Value = serde_json::from_str(&delivery.payload).unwrap_or_default();
        let title = event["data"]["title"].as_str().unwrap_or("A notification");
        let body = event["data"]["body"].as_str().unwrap_or_default();
        let outgoing = Outgoing {
            kind: "event",
            to: to.to_owned(),
            email: templates::event(title, body, &mailer.page("notifications")),
        };
        match mailer.try_send(outgoing).await {
            Ok(()) => Outcome::Delivered,
            Err(e) if e.permanent => Outcome::Rejected(e.reason),
            Err(_) => Outcome::RetryAfter(None),
        }
    }
}

/// The wait after attempt `n` (1-based): `base` × 2^(n−1), at most an hour, then a random
/// part of it taken off ("equal jitter": between half and all of it), so that deliveries
/// failed together do not come back together.
fn backoff(base: Duration, n: u32) -> Duration {
    let full = base
        .saturating_mul(1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX))
        .min(MAX_BACKOFF);
    let half = full / 2;
    half + half.mul_f64(rand::rng().random::<f64>())
}

/// What a delivery's payload is: the event as a live client receives it (`seq`, `topic`,
/// `type`, `at`, `data`), so that an app handles a push and a live event alike. A
/// notification too large for Web Push loses its `data`, then the end of its body.
fn payload(event: &Event) -> String {
    let mut data = event.data.clone();
    let envelope = |data: &Value| {
        json!({
            "seq": event.seq,
            "topic": event.topic.as_str(),
            "type": event.kind,
            "at": event.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "data": data,
        })
        .to_string()
    };
    let mut text = envelope(&data);
    if text.len() > MAX_PAYLOAD {
        data["data"] = json!({});
        text = envelope(&data);
    }
    while text.len() > MAX_PAYLOAD {
        let Some(body) = data["body"].as_str() else {
            break;
        };
        let keep = body.len().saturating_sub(text.len() - MAX_PAYLOAD + 3);
        let mut cut = keep.min(body.len());
        while !body.is_char_boundary(cut) {
            cut -= 1;
        }
        data["body"] = Value::String(format!("{}…", &body[..cut]));
        text = envelope(&data);
        if cut == 0 {
            break;
        }
    }
    text
}

/// When the event of a payload was committed.
fn event_time(payload: &str) -> Option<DateTime<Utc>> {
    let value: Value = serde_json::from_str(payload).ok()?;
    DateTime::parse_from_rfc3339(value["at"].as_str()?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The collapse key of a payload: its notification's id (32 hex digits), so that a message
/// sent twice (a lapsed lease) replaces the first at the push service if not yet shown.
fn collapse_topic(payload: &str) -> Option<String> {
    let value: Value = serde_json::from_str(payload).ok()?;
    let id = Uuid::parse_str(value["data"]["id"].as_str()?).ok()?;
    Some(id.simple().to_string())
}

/// What an operator sees of an address: its first character and its domain.
fn masked(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}…@{domain}")
        }
        None => "…".to_owned(),
    }
}

/// What an operator sees of a device: an endpoint's host, a token's first characters.
fn shown(device: &Device) -> String {
    match device.kind.as_str() {
        "webpush" => url::Url::parse(&device.target)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default(),
        _ => format!("{}…", device.target.chars().take(8).collect::<String>()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_stops_at_an_hour() {
        let base = Duration::from_secs(1);
        for n in 1..=5 {
            let full = Duration::from_secs(1 << (n - 1));
            let wait = backoff(base, n);
            assert!(wait >= full / 2 && wait <= full, "attempt {n}: {wait:?}");
        }
        assert!(backoff(base, 40) <= MAX_BACKOFF);
        assert!(backoff(base, 40) >= MAX_BACKOFF / 2);
    }
}
