//! The hub: routes each sequenced event to this instance's connections.
//!
//! Events arrive from the bus in batches. The hub delivers them strictly in `seq` order
//! with no gap: a batch that skips ahead makes it read the missing events from the
//! database first, and while the bus is degraded it reads new events from the database
//! on a short timer. Each event is encoded once (see `frames`) and a shared handle is
//! pushed into the mailbox of every connection entitled to it, found through an index by
//! topic and audience, so a per-user event never scans every connection. A push to an
//! idle WebSocket writes to its socket there and then (see `mailbox`).
//!
//! The connections are spread over fan-out [`shard`]s, each on a thread of its own: the
//! delivery loop here puts the events in order and hands each run to every shard, which
//! finds its receivers and writes to them. Who is connected to a shard is its
//! [`registry`]'s; the pushes in progress are its [`fanout`]'s.
//!
//! On a partitioned bus (`TIDINGS_BUS_PARTITIONS` > 0) the loop follows only the lanes of
//! the connections it holds, and puts batches back together from them, their chains and
//! the clocks ([`merge`]) before handing them on as above.

mod fanout;
mod merge;
mod registry;
mod shard;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use uuid::Uuid;

use self::fanout::Tally;
use self::merge::{Merge, Step};
use self::registry::{Conn, Registry};
pub use self::registry::{ConnId, Registration};
use self::shard::{Run, Shard};
use super::Transport;
use super::mailbox::{Closed, Mailbox};
use crate::events::bus::{self, BusHealth, Channels, Message};
use crate::events::stream;
use crate::events::{Event, Topic};
use crate::store::Db;

/// Events read from the database per query when catching up.
const CATCH_UP_BATCH: i64 = 1000;

/// Pushes between two offers of the hub's thread to others (see [`Hub::fan_out`]).
const YIELD_EVERY: usize = 128;

/// Settings of the hub.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Bytes a connection's queue may hold before it is closed as a slow consumer.
    pub mailbox_bytes: usize,
    /// Live connections one user may hold on this instance.
    pub max_connections_per_user: usize,
    /// How often to read the database while the bus is degraded.
    pub degraded_poll: Duration,
    /// How often to read the database anyway, as a safety net.
    pub safety_poll: Duration,
    /// Fan-out shards, each on a thread of its own (at least 1).
    pub shards: usize,
    /// The user lanes of the bus (`TIDINGS_BUS_PARTITIONS`; 0: one channel, no merge).
    pub partitions: u32,
    /// The bus's base channel, which the lanes' channels are named after.
    pub bus_channel: String,
    /// How long a lane nobody here needs any more is still followed
    /// (`TIDINGS_BUS_LANE_LINGER`).
    pub lane_linger: Duration,
}

/// How long a partitioned batch's missing messages are waited for before the hub reads the
/// batch from the database: long against Redis's delivery (well under a millisecond,
/// messages of one batch published at once), short against what a client notices.
const MERGE_WAIT: Duration = Duration::from_millis(50);

/// Counters the metrics endpoint reads.
#[derive(Debug, Default)]
pub struct HubStats {
    pub deliveries: AtomicU64,
    pub slow_consumers: AtomicU64,
    pub events: AtomicU64,
    pub catch_up_reads: AtomicU64,
    /// Events received on user lanes of a partitioned bus.
    pub user_lane_events: AtomicU64,
}

/// The live connections, in their shards, and the delivery loop.
#[derive(Debug)]
pub struct Hub {
    shards: Box<[Shard]>,
    /// The last seq delivered: every event up to it has been handed to the shards.
    last_seq: AtomicI64,
    db: Db,
    config: HubConfig,
    /// Set at shutdown: no new connection is taken.
    closing: std::sync::atomic::AtomicBool,
    /// Recent revocations: user, token version, when. A connection authenticated just
    /// before a revocation but registered just after it would otherwise miss it.
    revoked: Mutex<HashMap<Uuid, (i64, Instant)>>,
    /// Signalled when a user's first connection registers or their last one goes, for
    /// the presence the delivery worker reads (`realtime::presence`).
    pub(crate) presence_changed: tokio::sync::Notify,
    /// Signalled when notifications have been routed: the delivery worker, if it runs on
    /// this instance, reads them (the worker reads the database; this only wakes it).
    pub notifications_seen: Arc<tokio::sync::Notify>,
    /// On a partitioned bus, the lanes this instance follows (`all` always, `staff` while
    /// a staff connection is here, `u:{k}` while a user of partition k is, each for
    /// `lane_linger` longer), with who holds them. Also the gate between a connection's
    /// start and the merge: a lane is added and removed under it, and a merged batch's
    /// `upto` is recorded under it (see [`Hub::merge`]).
    lanes: Mutex<BTreeMap<String, Followed>>,
    /// Signalled when a lane was added or its last holder went, for the loop to subscribe
    /// to it or to time its removal.
    lanes_changed: tokio::sync::Notify,
    pub stats: HubStats,
    /// The instance's token cache, told of every revocation routed.
    token_cache: Arc<crate::service::accounts::TokenCache>,
}

/// A lane the hub follows.
#[derive(Debug, Default)]
struct Followed {
    /// The users of its partition with a connection here (`u:{k}`), or the staff
    /// connections here (`staff`: a user's connections may differ in role, one made before
    /// a promotion and one after). Changed under the shard's registry lock where a user's
    /// first connection registers and their last one goes, so it is exact.
    holders: usize,
    /// Since when nobody holds it (`all`: never; it is not counted and stays).
    idle_since: Option<Instant>,
}

/// How long a revocation is remembered for connections still on their way to the hub
/// (authenticated, not yet registered: a moment, unless the server is badly overloaded).
const REVOKED_MEMORY: Duration = Duration::from_secs(300);

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The user holds the most connections allowed.
    TooMany,
    /// The server is shutting down.
    ShuttingDown,
    /// The user's sessions were revoked after this connection's token was checked.
    Revoked,
}

impl Hub {
    /// A hub that delivers what comes after `last_seq` (the stream's end at start).
    pub fn new(
        db: Db,
        config: HubConfig,
        last_seq: i64,
        token_cache: Arc<crate::service::accounts::TokenCache>,
    ) -> Arc<Hub> {
        Arc::new(Hub {
            shards: (0..config.shards.max(1))
                .map(|_| Shard::new(last_seq))
                .collect(),
            last_seq: AtomicI64::new(last_seq),
            db,
            config,
            closing: std::sync::atomic::AtomicBool::new(false),
            revoked: Mutex::new(HashMap::new()),
            presence_changed: tokio::sync::Notify::new(),
            notifications_seen: Arc::new(tokio::sync::Notify::new()),
            lanes: Mutex::new(BTreeMap::from([(
                bus::LANE_ALL.to_owned(),
                Followed::default(),
            )])),
            lanes_changed: tokio::sync::Notify::new(),
            stats: HubStats::default(),
            token_cache,
        })
    }

    /// The last seq delivered.
    pub fn last_seq(&self) -> i64 {
        self.last_seq.load(Ordering::Acquire)
    }

    /// Whether [`Hub::drain`] has begun: the instance is shutting down and refuses new
    /// connections.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Starts a thread per shard; what [`Hub::run`] hands them runs through the returned
    /// senders, and each thread ends once they are dropped (when `run` ends).
    pub fn start_shards(self: &Arc<Self>) -> std::io::Result<Shards> {
        let mut senders = Vec::with_capacity(self.shards.len());
        for index in 0..self.shards.len() {
            let (tx, rx) = mpsc::channel(shard::SHARD_QUEUE);
            let hub = Arc::clone(self);
            std::thread::Builder::new()
                .name(format!("tidings-hub-{index}"))
                .spawn(move || shard::run(hub, index, rx))?;
            senders.push(tx);
        }
        Ok(Shards(senders))
    }

    /// The shard that holds `user`'s connections: all of a user's connections are in one,
    /// so their limit, their presence and their revocation are one shard's business.
    fn shard_of(&self, user: Uuid) -> usize {
        let (high, low) = user.as_u64_pair();
        // Mixed, so that ids with patterned bits still spread.
        let mixed = (high ^ low).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        ((mixed >> 32) % self.shards.len() as u64) as usize
    }

    /// The shard holding the connection `id` (ids are numbered so that it says).
    fn shard_of_conn(&self, id: ConnId) -> &Shard {
        &self.shards[(id % self.shards.len() as u64) as usize]
    }

    /// Registers a connection (with no topics yet).
    pub fn connect(
        self: &Arc<Self>,
        user_id: Uuid,
        is_staff: bool,
        token_version: i64,
        transport: Transport,
    ) -> Result<Registration, Refused> {
        let index = self.shard_of(user_id);
        let mut registry = self.shards[index].registry.write();
        if self.closing.load(Ordering::Acquire) {
            return Err(Refused::ShuttingDown);
        }
        // Under the registry's write lock, which the shard holds to apply a revocation the
        // delivery loop remembered first: it is either seen here or applied to the
        // registered connection, never neither.
        let revoked = self.revoked.lock().get(&user_id).copied();
        if revoked.is_some_and(|(version, _)| version > token_version) {
            return Err(Refused::Revoked);
        }
        let count = registry.per_user.get(&user_id).map_or(0, Vec::len);
        if count >= self.config.max_connections_per_user {
            return Err(Refused::TooMany);
        }
        registry.next_id += 1;
        let id = registry.next_id * self.shards.len() as u64 + index as u64;
        let mailbox = Mailbox::new(self.config.mailbox_bytes);
        let conn = Conn {
            user_id,
            is_staff,
            token_version: AtomicI64::new(token_version),
            mailbox: mailbox.clone(),
            topics: Vec::new(),
            transport,
        };
        registry.conns.insert(id, conn);
        let ids = registry.per_user.entry(user_id).or_default();
        ids.push(id);
        let first = ids.len() == 1;
        if first {
            self.presence_changed.notify_one();
        }
        if self.config.partitions > 0 && (first || is_staff) {
            self.follow(user_id, first, is_staff);
        }
        Ok(Registration {
            hub: self.clone(),
            id,
            mailbox,
        })
    }

    /// Follows the lanes of a user's connection, `first` of the user's here, or holds them
    /// once more (before it subscribes to anything: see [`Hub::merge`] for why that order
    /// keeps it from missing an event). A lane lingering after its last holder went is
    /// kept.
    fn follow(&self, user: Uuid, first: bool, is_staff: bool) {
        let mut lanes = self.lanes.lock();
        let mut added = false;
        for lane in self.lanes_of(user, first, is_staff) {
            let followed = lanes.entry(lane).or_insert_with(|| {
                added = true;
                Followed::default()
            });
            followed.holders += 1;
            followed.idle_since = None;
        }
        if added {
            self.lanes_changed.notify_one();
        }
    }

    /// Lets go of the lanes of a connection that went, the `last` of its user's here; a
    /// lane left with no holder is removed by the loop after `lane_linger` (see
    /// [`Hub::sync_lanes`]).
    fn unfollow(&self, user: Uuid, last: bool, is_staff: bool) {
        let mut lanes = self.lanes.lock();
        let mut idle = false;
        for lane in self.lanes_of(user, last, is_staff) {
            if let Some(followed) = lanes.get_mut(&lane) {
                followed.holders = followed.holders.saturating_sub(1);
                if followed.holders == 0 {
                    followed.idle_since = Some(Instant::now());
                    idle = true;
                }
            }
        }
        if idle {
            self.lanes_changed.notify_one();
        }
    }

    /// The lanes a connection holds: its user's, if it is the first (or last) of its user
    /// here, and `staff` if it is a staff connection.
    fn lanes_of(&self, user: Uuid, user_lane: bool, is_staff: bool) -> Vec<String> {
        let mut lanes = Vec::with_capacity(2);
        if user_lane {
            lanes.push(bus::user_lane(bus::partition_of(
                user,
                self.config.partitions,
            )));
        }
        if is_staff {
            lanes.push(bus::LANE_STAFF.to_owned());
        }
        lanes
    }

    /// Lanes of a partitioned bus followed now (`all`, `staff`, `u:{k}`; the clock not
    /// counted); 0 on one channel.
    pub fn lanes_followed(&self) -> usize {
        if self.config.partitions > 0 {
            self.lanes.lock().len()
        } else {
            0
        }
    }

    /// Where a subscription made now is live from, at least: on a partitioned bus, the
    /// last seq merged (which may be ahead of the shard's routed seq, see [`Hub::merge`]).
    fn live_at_least(&self) -> i64 {
        if self.config.partitions > 0 {
            self.last_seq()
        } else {
            0
        }
    }

    /// The users with a live connection on this instance.
    pub fn connected_users(&self) -> std::collections::HashSet<Uuid> {
        self.shards
            .iter()
            .flat_map(|shard| {
                shard
                    .registry
                    .read()
                    .per_user
                    .keys()
                    .copied()
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Live connections on this instance.
    pub fn connections(&self) -> usize {
        self.sum(|registry| registry.conns.len())
    }

    /// Live connections of `transport` on this instance (a scan, as [`Hub::queued_bytes`]
    /// is: for a metrics scrape, not the hot path).
    pub fn connections_by(&self, transport: Transport) -> usize {
        self.sum(|registry| {
            registry
                .conns
                .values()
                .filter(|c| c.transport == transport)
                .count()
        })
    }

    /// Bytes queued over all connections.
    pub fn queued_bytes(&self) -> usize {
        self.sum(|registry| {
            registry
                .conns
                .values()
                .map(|c| c.mailbox.queued_bytes())
                .sum()
        })
    }

    /// The shards' connections per shard, in shard order.
    pub fn connections_per_shard(&self) -> Vec<usize> {
        self.shards
            .iter()
            .map(|shard| shard.registry.read().conns.len())
            .collect()
    }

    /// `count` summed over the shards' registries, each read in turn.
    fn sum(&self, count: impl Fn(&Registry) -> usize) -> usize {
        self.shards
            .iter()
            .map(|shard| count(&shard.registry.read()))
            .sum()
    }

    /// Closes every connection for shutdown, `batch` at a time with `pause` between, so
    /// that clients reconnect elsewhere without a thundering herd.
    pub async fn drain(&self, batch: usize, pause: Duration) {
        self.closing.store(true, Ordering::Release);
        let mailboxes: Vec<Arc<Mailbox>> = self
            .shards
            .iter()
            .flat_map(|shard| {
                let registry = shard.registry.read();
                registry
                    .conns
                    .values()
                    .map(|c| c.mailbox.clone())
                    .collect::<Vec<_>>()
            })
            .collect();
        for (i, chunk) in mailboxes.chunks(batch.max(1)).enumerate() {
            if i > 0 {
                tokio::time::sleep(pause).await;
            }
            for mailbox in chunk {
                mailbox.close(Closed::Shutdown);
            }
        }
    }

    /// Hands events that follow the last delivered one without a gap (the caller has
    /// checked the order) to every shard, which routes them to its connections.
    async fn route(&self, shards: &Shards, events: Vec<Event>) {
        let (Some(last), count) = (events.last().map(|e| e.seq), events.len()) else {
            return;
        };
        let notifications = events.iter().any(|e| e.topic == Topic::Notifications);
        for event in events.iter().filter(|e| e.topic == Topic::System) {
            self.remember_revocation(event);
        }
        let run = Run::new(events);
        // Before any shard has it: a client may acknowledge an event as soon as its shard
        // wrote it, and an ack beyond the last delivered seq is refused. Never back: a
        // merged batch's `upto` may be past its last event here.
        self.last_seq.fetch_max(last, Ordering::AcqRel);
        for shard in &shards.0 {
            // Fails only when the shard's thread is gone, at shutdown.
            let _ = shard.send(run.clone()).await;
        }
        self.stats.events.fetch_add(count as u64, Ordering::Relaxed);
        if notifications {
            self.notifications_seen.notify_one();
        }
    }

    fn record(&self, tally: Tally) {
        self.stats
            .deliveries
            .fetch_add(tally.deliveries, Ordering::Relaxed);
        self.stats
            .slow_consumers
            .fetch_add(tally.slow, Ordering::Relaxed);
        for transport in Transport::ALL {
            let written = tally.written[transport as usize];
            if written > 0 {
                metrics::counter!("tidings_deliveries_written_total", "transport" => transport.label())
                    .increment(written);
            }
        }
    }

    /// `user.sessions_revoked`, once per instance, by the delivery loop before any shard
    /// has the event: the token cache forgets the user's older tokens, and the revocation
    /// is remembered for connections still on their way to a shard (see [`Hub::connect`]).
    fn remember_revocation(&self, event: &Event) {
        let Some((user, version)) = revocation(event) else {
            return;
        };
        self.token_cache.revoke(user, version);
        let mut revoked = self.revoked.lock();
        revoked.retain(|_, (_, at)| at.elapsed() < REVOKED_MEMORY);
        let entry = revoked.entry(user).or_insert((version, Instant::now()));
        *entry = (entry.0.max(version), Instant::now());
    }

    /// `user.sessions_revoked`, by each shard under its registry's lock: close the user's
    /// connections opened with an older token (those in `registry`, one shard's). A
    /// connection registering after this saw the revocation remembered
    /// ([`Hub::remember_revocation`] came first), and one registered before it is in
    /// `registry`: it is either refused or closed.
    fn apply_system(&self, registry: &Registry, event: &Event) {
        let Some((user, version)) = revocation(event) else {
            return;
        };
        for id in registry.per_user.get(&user).into_iter().flatten() {
            if let Some(conn) = registry.conns.get(id)
                && conn.token_version.load(Ordering::Acquire) < version
            {
                conn.mailbox.close(Closed::Revoked);
            }
        }
    }

    /// Delivers a batch from the bus: duplicates are skipped, and a gap is filled from
    /// the database before anything after it is delivered.
    async fn deliver(&self, shards: &Shards, mut events: Vec<Event>) {
        events.sort_by_key(|e| e.seq);
        // The contiguous run being gathered, handed on as a whole.
        let mut run: Vec<Event> = Vec::new();
        for event in events {
            loop {
                let last = run.last().map_or_else(|| self.last_seq(), |e| e.seq);
                if event.seq <= last {
                    break;
                }
                if event.seq == last + 1 {
                    run.push(event);
                    break;
                }
                if !run.is_empty() {
                    self.route(shards, std::mem::take(&mut run)).await;
                    continue;
                }
                self.catch_up(shards, Some(event.seq - 1)).await;
                if self.last_seq() == last {
                    // The database does not have what the bus says came before: this batch
                    // is not ours (two deployments on one Redis channel?). Drop it; the
                    // timed database reads deliver whatever really exists.
                    tracing::error!(
                        seq = event.seq,
                        last,
                        "the bus carried events this database does not have; check TIDINGS_REDIS_CHANNEL"
                    );
                    return;
                }
            }
        }
        self.route(shards, run).await;
    }

    /// Reads and delivers events from the database after the last delivered one, up to
    /// `upto` (or to the end).
    async fn catch_up(&self, shards: &Shards, upto: Option<i64>) {
        loop {
            let last = self.last_seq();
            if upto.is_some_and(|upto| last >= upto) {
                return;
            }
            self.stats.catch_up_reads.fetch_add(1, Ordering::Relaxed);
            let events = match stream::after_seq(&self.db, last, CATCH_UP_BATCH).await {
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!(error = %e, "the hub could not read events to catch up; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let Some(first) = events.first() else { return };
            if first.seq != last + 1 {
                // Only pruning leaves a hole; clients behind it are sent a reset on resume.
                tracing::warn!(
                    from = last + 1,
                    to = first.seq - 1,
                    "events are missing from the database; skipping them"
                );
                self.last_seq.store(first.seq - 1, Ordering::Release);
            }
            let full = events.len() as i64 == CATCH_UP_BATCH;
            let mut run = Vec::with_capacity(events.len());
            for event in events {
                if upto.is_some_and(|upto| event.seq > upto) {
                    break;
                }
                if run
                    .last()
                    .is_some_and(|prev: &Event| event.seq != prev.seq + 1)
                {
                    break;
                }
                run.push(event);
            }
            self.route(shards, run).await;
            if !full {
                return;
            }
        }
    }

    /// The delivery loop: batches from the bus, and the database on a timer (often while
    /// the bus is degraded, rarely otherwise), handed to the shards through `shards` (see
    /// [`Hub::start_shards`]). Ends when the bus's sender is gone.
    pub async fn run(
        self: Arc<Self>,
        mut batches: mpsc::Receiver<Message>,
        health: BusHealth,
        channels: Channels,
        shards: Shards,
    ) {
        let mut safety = tokio::time::interval(self.config.safety_poll);
        let mut degraded = tokio::time::interval(self.config.degraded_poll);
        safety.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        degraded.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut merge = Merge::new(MERGE_WAIT);
        // When the merge gives up waiting for a batch's missing messages.
        let mut deadline: Option<Instant> = None;
        // When the first lane left with no holder is to be removed.
        let mut linger: Option<Instant> = None;
        loop {
            let wake = deadline.map(tokio::time::Instant::from_std);
            let unfollow = linger.map(tokio::time::Instant::from_std);
            tokio::select! {
                message = batches.recv() => match message {
                    Some(message) => {
                        deadline = self.receive(&shards, &mut merge, message, &mut batches).await;
                        continue;
                    }
                    None => return,
                },
                () = sleep_until(wake), if wake.is_some() => {}
                () = self.lanes_changed.notified() => linger = self.sync_lanes(&channels, &mut merge),
                () = sleep_until(unfollow), if unfollow.is_some() => {
                    linger = self.sync_lanes(&channels, &mut merge);
                }
                _ = degraded.tick(), if !health.is_up() => self.catch_up(&shards, None).await,
                // The bus going down must wake the loop, or reading the database would wait
                // for the next safety poll.
                () = health.down(), if health.is_up() => {}
                // Back up: what was published before the subscription took is read from the
                // database now, not when the next event shows the gap.
                () = health.up(), if !health.is_up() => self.catch_up(&shards, None).await,
                _ = safety.tick() => self.catch_up(&shards, None).await,
            }
            deadline = self.merge(&shards, &mut merge).await;
        }
    }

    /// Takes a message and those waiting behind it (whole batches, up to a catch-up
    /// batch's worth, go out together: the busier the hub, the more events each
    /// connection's write carries), delivers what it can; when the merge next gives up
    /// waiting.
    async fn receive(
        &self,
        shards: &Shards,
        merge: &mut Merge,
        message: Message,
        batches: &mut mpsc::Receiver<Message>,
    ) -> Option<Instant> {
        let mut events: Vec<Event> = Vec::new();
        let mut next = Some(message);
        let mut taken = 0;
        while let Some(message) = next.take() {
            taken += 1;
            match message {
                Message::Batch(batch) => events.extend(batch),
                Message::Data(data) => {
                    if data.lane.starts_with("u:") {
                        self.stats
                            .user_lane_events
                            .fetch_add(data.events.len() as u64, Ordering::Relaxed);
                    }
                    // Data of a lane no longer followed (in flight when it was
                    // unsubscribed) is for nobody here, and no batch waits for it.
                    if self.lanes.lock().contains_key(&data.lane) {
                        merge.data(data, self.last_seq(), Instant::now());
                    }
                }
                Message::Clock(clock) => merge.clock(clock, self.last_seq(), Instant::now()),
            }
            if events.len() < CATCH_UP_BATCH as usize && taken < CATCH_UP_BATCH {
                next = batches.try_recv().ok();
            }
        }
        if !events.is_empty() {
            self.deliver(shards, events).await;
        }
        self.merge(shards, merge).await
    }

    /// Delivers the merged batches that are complete, and reads from the database those
    /// that will not be; when the merge next gives up waiting, if it waits.
    ///
    /// A complete batch's `upto` is recorded as the last seq under the lanes' lock, before
    /// its events go to the shards. A connection's lane is added under the same lock before
    /// it subscribes, and its subscription is live from the last seq at least. So either
    /// the merge saw the lane (and the batch waits for its data, or the database), or the
    /// batch's seqs are the connection's replay: none is neither.
    async fn merge(&self, shards: &Shards, merge: &mut Merge) -> Option<Instant> {
        loop {
            let step = {
                let lanes = self.lanes.lock();
                let step = merge.next(self.last_seq(), &lanes, Instant::now());
                if let Step::Deliver { upto, .. } = &step {
                    self.last_seq.fetch_max(*upto, Ordering::AcqRel);
                }
                step
            };
            match step {
                Step::Deliver { events, .. } => self.route(shards, events).await,
                Step::Gap { upto } => {
                    self.catch_up(shards, Some(upto)).await;
                    merge.forget_through(upto);
                    if self.last_seq() < upto {
                        tracing::error!(
                            upto,
                            last = self.last_seq(),
                            "the bus carried a batch this database does not have; check TIDINGS_REDIS_CHANNEL"
                        );
                        merge.forget_first();
                    }
                }
                Step::Wait(deadline) => return deadline,
            }
        }
    }

    /// Removes the lanes nobody has held for `lane_linger`, with what the merge holds of
    /// them, and makes the bus's channels those of the lanes followed; when the next lane
    /// left with no holder is due for removal, if one is.
    ///
    /// A lane is removed under the lanes' lock, as it is added: a batch decided complete
    /// before the removal waited for its data, and one decided after it does not (the
    /// merge's `follows`). Nobody here needs that data: its holders' count, kept under the
    /// same lock, says no connection of its users is registered, and a connection that
    /// registers later adds the lane again before it subscribes, as a first one does.
    fn sync_lanes(&self, channels: &Channels, merge: &mut Merge) -> Option<Instant> {
        let now = Instant::now();
        let linger = self.config.lane_linger;
        let mut removed = Vec::new();
        let (followed, next) = {
            let mut lanes = self.lanes.lock();
            lanes.retain(|lane, followed| {
                let due = followed
                    .idle_since
                    .is_some_and(|since| now >= since + linger);
                if due {
                    merge.forget_lane(lane);
                    removed.push(lane.clone());
                }
                !due
            });
            let next = lanes
                .values()
                .filter_map(|followed| followed.idle_since)
                .min()
                .map(|since| since + linger);
            (lanes.keys().cloned().collect::<Vec<_>>(), next)
        };
        for lane in removed {
            channels.remove(&bus::lane_channel(&self.config.bus_channel, &lane));
        }
        for lane in followed {
            channels.add(&bus::lane_channel(&self.config.bus_channel, &lane));
        }
        next
    }
}

/// The user and the new token version of a `user.sessions_revoked` event.
fn revocation(event: &Event) -> Option<(Uuid, i64)> {
    let user = event.data["user_id"].as_str()?.parse::<Uuid>().ok()?;
    Some((user, event.data["token_version"].as_i64()?))
}

/// Sleeps until `at`, or forever.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The way into the shards' threads (see [`Hub::start_shards`]); dropping it ends them
/// once they have pushed what they were handed.
#[derive(Debug)]
pub struct Shards(Vec<mpsc::Sender<Arc<Run>>>);

#[cfg(test)]
mod tests {
    use super::fanout::{Lag, Pending};
    use super::*;
    use crate::realtime::frames::{Frame, PreparedEvent};

    fn frame(seq: i64) -> Frame {
        Arc::new(PreparedEvent {
            seq,
            topic: Topic::Inventory,
            at: chrono::Utc::now(),
            ws_frame: bytes::Bytes::new(),
            sse: bytes::Bytes::from_static(b"x"),
            sse_chunk: bytes::Bytes::new(),
        })
    }

    /// The seqs a mailbox was pushed, in order.
    async fn seqs(mailbox: &Mailbox) -> Vec<i64> {
        let batch = mailbox.take().await.expect("open");
        batch.frames.iter().map(|f| f.seq).collect()
    }

    fn push_all(pending: &mut Pending, step: usize) -> Tally {
        let lag = Lag::histograms();
        let mut tally = Tally::default();
        while pending.push_some(step, &mut tally, &lag) {}
        tally
    }

    fn hub() -> Arc<Hub> {
        hub_with_partitions(0)
    }

    fn hub_with_partitions(partitions: u32) -> Arc<Hub> {
        hub_with(partitions, Duration::from_secs(10))
    }

    fn hub_with(partitions: u32, lane_linger: Duration) -> Arc<Hub> {
        let pool = sqlx::sqlite::SqlitePool::connect_lazy("sqlite::memory:").expect("a pool");
        let db = Db::Sqlite(pool, Arc::new(tokio::sync::Notify::new()));
        let config = HubConfig {
            mailbox_bytes: 1 << 20,
            max_connections_per_user: 4,
            degraded_poll: Duration::from_millis(100),
            safety_poll: Duration::from_secs(2),
            shards: 2,
            partitions,
            bus_channel: "tidings:events".into(),
            lane_linger,
        };
        let token_cache = Arc::new(crate::service::accounts::TokenCache::new(Duration::ZERO));
        Hub::new(db, config, 0, token_cache)
    }

    fn revoke(hub: &Hub, user: Uuid, version: i64) {
        let revoked = crate::events::sessions_revoked(user, version);
        let event = Event {
            seq: 1,
            topic: revoked.topic(),
            kind: revoked.kind.as_str().into(),
            audience: revoked.audience,
            at: chrono::Utc::now(),
            data: revoked.data,
        };
        hub.remember_revocation(&event);
        for shard in &hub.shards {
            hub.apply_system(&shard.registry.read(), &event);
        }
    }

    /// The window of a user joining a lane: a batch merged before the lane was followed
    /// (so without the user's events), its `upto` recorded, not yet routed by the shards.
    /// The connection is live only from after it; its seqs are the replay's to send.
    #[tokio::test]
    async fn on_a_partitioned_bus_a_subscription_is_live_from_the_last_merged_seq() {
        for (partitions, live_from) in [(8, 5), (0, 0)] {
            let hub = hub_with_partitions(partitions);
            hub.last_seq.store(5, Ordering::Release);
            let user = Uuid::now_v7();
            let conn = hub
                .connect(user, false, 1, Transport::WebSocket)
                .expect("open");
            let lane = bus::user_lane(bus::partition_of(user, partitions));
            assert_eq!(hub.lanes.lock().contains_key(&lane), partitions > 0);
            assert_eq!(conn.subscribe(&[Topic::Orders]), live_from);
        }
    }

    /// The channel of `user`'s lane, of 8.
    fn channel_of(user: Uuid) -> String {
        bus::lane_channel(
            "tidings:events",
            &bus::user_lane(bus::partition_of(user, 8)),
        )
    }

    #[tokio::test]
    async fn a_user_coming_back_while_their_lane_lingers_keeps_it() {
        let hub = hub_with(8, Duration::from_secs(3600));
        let channels = bus::Bus::memory().channels;
        let mut merge = Merge::new(MERGE_WAIT);
        let user = Uuid::now_v7();
        let first = hub
            .connect(user, false, 1, Transport::WebSocket)
            .expect("open");
        let second = hub
            .connect(user, false, 1, Transport::EventStream)
            .expect("open");
        assert_eq!(hub.sync_lanes(&channels, &mut merge), None);
        assert!(channels.list().contains(&channel_of(user)));

        drop(first);
        assert_eq!(
            hub.sync_lanes(&channels, &mut merge),
            None,
            "the user is still here"
        );
        drop(second);
        let due = hub
            .sync_lanes(&channels, &mut merge)
            .expect("a removal due");
        assert!(due > Instant::now() + Duration::from_secs(3000));
        let back = hub
            .connect(user, false, 1, Transport::WebSocket)
            .expect("open");

        assert_eq!(
            hub.sync_lanes(&channels, &mut merge),
            None,
            "no removal due"
        );
        assert!(channels.list().contains(&channel_of(user)));
        assert_eq!(hub.lanes_followed(), 2);
        drop(back);
    }

    #[tokio::test]
    async fn a_lane_nobody_holds_is_removed_and_followed_again_from_the_last_merged_seq() {
        let hub = hub_with(8, Duration::ZERO);
        let channels = bus::Bus::memory().channels;
        let mut merge = Merge::new(MERGE_WAIT);
        let (ada, bob) = (Uuid::now_v7(), Uuid::now_v7());
        let ada_conn = hub
            .connect(ada, true, 1, Transport::WebSocket)
            .expect("open");
        let bob_conn = hub
            .connect(bob, true, 1, Transport::WebSocket)
            .expect("open");
        hub.sync_lanes(&channels, &mut merge);
        let staff = bus::lane_channel("tidings:events", bus::LANE_STAFF);
        assert!(channels.list().contains(&staff));

        drop(ada_conn);
        hub.sync_lanes(&channels, &mut merge);
        let listed = channels.list();
        assert!(listed.contains(&staff), "Bob is staff too: {listed:?}");
        assert!(listed.contains(&channel_of(bob)));
        drop(bob_conn);
        assert_eq!(hub.sync_lanes(&channels, &mut merge), None);
        assert_eq!(
            channels.list(),
            [bus::lane_channel("tidings:events", bus::LANE_ALL)]
        );
        assert_eq!(hub.lanes_followed(), 1);

        // Back after the removal: the lane is followed before the connection subscribes,
        // which is live from the last merged seq (the replay covers what came before).
        hub.last_seq.store(7, Ordering::Release);
        let again = hub
            .connect(bob, false, 1, Transport::WebSocket)
            .expect("open");
        assert!(
            hub.lanes
                .lock()
                .contains_key(&bus::user_lane(bus::partition_of(bob, 8)))
        );
        assert_eq!(again.subscribe(&[Topic::Orders]), 7);
        hub.sync_lanes(&channels, &mut merge);
        assert!(channels.list().contains(&channel_of(bob)));
    }

    #[tokio::test]
    async fn a_revocation_reaches_connections_registered_before_and_after_it() {
        let hub = hub();
        let user = Uuid::now_v7();
        let before = hub
            .connect(user, false, 1, Transport::WebSocket)
            .expect("open");

        revoke(&hub, user, 2);

        assert!(matches!(
            before.mailbox().take().await,
            Err(Closed::Revoked)
        ));
        // Authenticated with the old version before the revocation, registered after it.
        assert_eq!(
            hub.connect(user, false, 1, Transport::EventStream).err(),
            Some(Refused::Revoked)
        );
        // A token issued after it is welcome, and other users are not affected.
        assert!(hub.connect(user, false, 2, Transport::WebSocket).is_ok());
        assert!(
            hub.connect(Uuid::now_v7(), false, 1, Transport::WebSocket)
                .is_ok()
        );
    }

    /// A panic while a lock of the hub is held (a bug anywhere in the hot path) poisons
    /// nothing: parking_lot's locks have no poisoning, so later registrations, their drops
    /// (a panic in a `Drop` while unwinding would abort the process) and fan-outs go on.
    #[tokio::test]
    async fn a_panic_under_the_hubs_locks_does_not_take_the_hub_down() {
        let hub = hub();
        let user = Uuid::now_v7();
        let first = hub
            .connect(user, false, 1, Transport::WebSocket)
            .expect("open");
        let panicking = Arc::clone(&hub);
        let panicked = std::thread::spawn(move || {
            let shard = &panicking.shards[panicking.shard_of(user)];
            let _registry = shard.registry.write();
            let _pending = shard.pending.lock();
            let _revoked = panicking.revoked.lock();
            panic!("a bug while the hub's locks are held");
        })
        .join();
        assert!(panicked.is_err());

        drop(first);
        assert_eq!(hub.connections(), 0);
        let second = hub
            .connect(user, false, 1, Transport::EventStream)
            .expect("open");
        assert_eq!(hub.connections(), 1);
        revoke(&hub, user, 2);
        assert!(matches!(
            second.mailbox().take().await,
            Err(Closed::Revoked)
        ));
    }

    #[tokio::test]
    async fn an_event_routed_mid_fan_out_joins_the_pushes_not_yet_made() {
        let mailboxes: Vec<Arc<Mailbox>> = (0..4).map(|_| Mailbox::new(1 << 20)).collect();
        let mut pending = Pending::default();
        let lag = Lag::histograms();
        let mut tally = Tally::default();
        pending.add(vec![frame(1)], mailboxes.clone());
        // Two of four reached; then event 2 for all, and event 3 for the last two.
        assert!(pending.push_some(2, &mut tally, &lag));
        pending.add(vec![frame(2)], mailboxes.clone());
        pending.add(vec![frame(3)], mailboxes[2..].to_vec());
        // The first two get event 2 in a push of its own; the last two get 1, 2 and 3 in one.
        assert_eq!(pending.pushes.len(), 4);
        let tally = push_all(&mut pending, 1);
        assert_eq!(tally.deliveries, 2 + 2 * 3);
        assert!(pending.pushes.is_empty() && pending.last_push.is_empty());
        for mailbox in &mailboxes[..2] {
            assert_eq!(seqs(mailbox).await, [1, 2]);
        }
        for mailbox in &mailboxes[2..] {
            assert_eq!(seqs(mailbox).await, [1, 2, 3]);
        }
    }

    #[tokio::test]
    async fn a_connection_reached_again_gets_a_later_push_in_order() {
        let a = Mailbox::new(1 << 20);
        let b = Mailbox::new(1 << 20);
        let mut pending = Pending::default();
        let lag = Lag::histograms();
        let mut tally = Tally::default();
        pending.add(vec![frame(1)], vec![a.clone(), b.clone()]);
        assert!(pending.push_some(1, &mut tally, &lag));
        // `a` was reached: event 2 goes after b's push; event 3 then joins that push.
        pending.add(vec![frame(2)], vec![a.clone()]);
        pending.add(vec![frame(3)], vec![a.clone(), b.clone()]);
        push_all(&mut pending, 100);
        assert_eq!(seqs(&a).await, [1, 2, 3]);
        assert_eq!(seqs(&b).await, [1, 3]);
    }

    #[tokio::test]
    async fn a_fan_out_that_never_catches_up_holds_one_push_per_connection() {
        let mailboxes: Vec<Arc<Mailbox>> = (0..3).map(|_| Mailbox::new(1 << 20)).collect();
        let mut pending = Pending::default();
        let lag = Lag::histograms();
        let mut tally = Tally::default();
        // An event for all three after every push: the hub never catches up.
        for seq in 1..=1000 {
            pending.add(vec![frame(seq)], mailboxes.clone());
            assert!(pending.push_some(1, &mut tally, &lag));
            assert!(pending.pushes.len() <= mailboxes.len());
        }
        push_all(&mut pending, 10);
        for mailbox in &mailboxes {
            assert_eq!(seqs(mailbox).await, (1..=1000).collect::<Vec<_>>());
        }
    }
}
