//! The bus: carries each batch the relay numbered to the hub of every instance.
//!
//! In-process (the default), the relay hands batches straight to this instance's hub.
//! With `REDIS_URL`, the relay publishes to a Redis channel and every instance's hub
//! subscribes to it. Redis may drop messages (a reconnect, a slow subscriber): the hubs do
//! not rely on it, since they check that `seq` is contiguous and read any gap from the
//! database, and while the subscription is down (or Redis stops answering its pings) they
//! read the database on a timer.
//!
//! With `REDIS_URL` naming several nodes (or `TIDINGS_REDIS_CLUSTER`), the bus runs on Redis
//! Cluster with sharded pub/sub instead ([`cluster`]): each channel lives on the master that
//! owns its slot.
//!
//! The subscriber follows a set of channels that can change while it runs ([`Channels`]),
//! and the publisher can publish on any channel ([`Publisher::publish_on`]). With
//! `TIDINGS_BUS_PARTITIONS` = 0 the app uses one channel, `TIDINGS_REDIS_CHANNEL`, and each
//! message is a batch. With K > 0 each batch is split ([`lanes`]): one [`Data`] message per
//! channel that has events (`{base}:all`, `{base}:staff`, `{base}:u:{k}`), each carrying
//! the batch's lanes with their counts and where every lane's previous batch ended (the
//! chain); every [`CLOCK_EVERY`] while batches are published, a [`Clock`] on
//! `{base}:clock` says where the stream and each lane's last batch ended. An instance
//! subscribes only to the channels of the connections it holds, and its hub merges them
//! back in order (`realtime/hub/merge.rs`): it reads the data of its lanes and a few
//! clocks a second, and nothing of batches that had no events on its lanes.

pub mod cluster;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{Audience, Event, Topic};

/// Messages waiting for the hub; the relay waits when it is full.
const HUB_QUEUE: usize = 1024;

/// Whether the bus delivers now. The hub polls the database while it does not.
#[derive(Debug, Clone)]
pub struct BusHealth(Arc<watch::Sender<bool>>);

impl BusHealth {
    fn new(up: bool) -> Self {
        BusHealth(Arc::new(watch::Sender::new(up)))
    }

    pub fn is_up(&self) -> bool {
        *self.0.borrow()
    }

    fn set(&self, up: bool) {
        self.0
            .send_if_modified(|was| std::mem::replace(was, up) != up);
    }

    /// Resolves once the bus is down (at once if it is).
    pub async fn down(&self) {
        let _ = self.0.subscribe().wait_for(|up| !*up).await;
    }

    /// Resolves once the bus is up (at once if it is).
    pub async fn up(&self) {
        let _ = self.0.subscribe().wait_for(|up| *up).await;
    }
}

/// The channels a subscriber follows: a handle that changes them while it runs. Each
/// channel of a Redis Cluster bus is subscribed on the master that owns its slot.
#[derive(Debug, Clone)]
pub struct Channels(Arc<watch::Sender<BTreeSet<String>>>);

impl Channels {
    fn new(channels: impl IntoIterator<Item = String>) -> Self {
        Channels(Arc::new(watch::Sender::new(channels.into_iter().collect())))
    }

    /// Follows `channel` too; whether it was new.
    pub fn add(&self, channel: &str) -> bool {
        self.0
            .send_if_modified(|set| set.insert(channel.to_owned()))
    }

    /// Stops following `channel`; whether it was followed.
    pub fn remove(&self, channel: &str) -> bool {
        self.0.send_if_modified(|set| set.remove(channel))
    }

    /// The channels followed now.
    pub fn list(&self) -> Vec<String> {
        self.0.borrow().iter().cloned().collect()
    }

    fn watch(&self) -> watch::Receiver<BTreeSet<String>> {
        self.0.subscribe()
    }
}

/// The channel of partition `partition` of the bus whose channel is `base`. The names
/// differ outside any hash tag, so on Redis Cluster the partitions spread over the slots
/// (and so over the masters); a `base` with a hash tag (`{…}`) would put them all on one.
pub fn partition_channel(base: &str, partition: u32) -> String {
    format!("{base}:{partition}")
}

/// What travels on the bus, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A whole batch, on the single channel (`TIDINGS_BUS_PARTITIONS` = 0): on the wire, a
    /// JSON array of events, as before partitions existed.
    Batch(Vec<Event>),
    /// One channel's share of a partitioned batch.
    Data(Data),
    /// Where a partitioned stream stands.
    Clock(Clock),
}

/// One channel's events of the batch `(from, upto]`, in seq order, with the batch's
/// clock: its lanes and their counts, and the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Data {
    #[serde(rename = "f")]
    pub from: i64,
    #[serde(rename = "u")]
    pub upto: i64,
    /// The channel's lane (`all`, `staff`, `u:{k}`): the name after the base.
    #[serde(rename = "c")]
    pub lane: String,
    /// Every lane of the batch that had events, with how many.
    #[serde(rename = "n")]
    pub lanes: BTreeMap<String, u32>,
    /// The chain: per lane (by [`lane_index`]), how far before `from` its last batch
    /// before this one ended (see [`Chain`]).
    #[serde(rename = "p")]
    pub back: Vec<i64>,
    #[serde(rename = "e")]
    pub events: Vec<Event>,
}

/// The stream was published up to `upto`: per lane (by [`lane_index`]), how far before
/// `upto` its last batch ended. On `{base}:clock`, which every instance follows, every
/// [`CLOCK_EVERY`] while batches are published: an instance none of whose lanes had a
/// batch since hears from it that it missed nothing, and one whose lane's last data was
/// lost hears that it did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Clock {
    #[serde(rename = "u")]
    pub upto: i64,
    #[serde(rename = "p")]
    pub back: Vec<i64>,
}

/// Where the last batch with events on `lane` ended, as of `at` (a batch's `from`, or a
/// clock's `upto`), from the distances `back`: `at` itself when the chain does not know
/// the lane (a publisher that just started, or a lane it has no number for), which makes
/// the hub expect everything before `at`.
pub fn chained(at: i64, back: &[i64], lane: &str) -> i64 {
    lane_index(lane)
        .and_then(|index| back.get(index))
        .map_or(at, |back| at.saturating_sub(*back.max(&0)))
}

/// The partitioned messages on the wire: an object tagged `d` (data) or `k` (clock), told
/// apart from a single-channel batch (an array) by its first byte.
#[derive(Serialize, Deserialize)]
enum Wire {
    #[serde(rename = "d")]
    Data(Data),
    #[serde(rename = "k")]
    Clock(Clock),
}

/// How often, at most, the publisher of a partitioned bus sends a clock while it publishes
/// batches, and how long after the last batch it sends the one that covers it: the longest
/// an instance takes to learn that the last data of one of its lanes was lost (the merge's
/// wait comes on top).
pub const CLOCK_EVERY: Duration = Duration::from_millis(100);

/// The publisher's chain: where each lane's last batch ended, as of the last batch
/// published. Its batches follow one another (each `from` the last `upto`) unless another
/// relay numbered events in between (a change of leader) or a batch is published again;
/// then it knows nothing of the lanes before the new batch, and says so by saying that
/// every lane's last batch ended at its `from`.
#[derive(Debug, Default)]
struct Chain {
    /// The last batch's `upto`.
    upto: Option<i64>,
    /// Per lane, by [`lane_index`].
    ends: Vec<i64>,
    /// When the last clock was sent, and whether a batch was published since.
    clocked: Option<Instant>,
    owed: bool,
}

impl Chain {
    /// Links the batch `(from, upto]` with events on `lanes`: the distances back from
    /// `from` to each lane's last batch.
    fn link<'a>(
        &mut self,
        from: i64,
        upto: i64,
        lanes: impl Iterator<Item = &'a String>,
        partitions: u32,
    ) -> Vec<i64> {
        if self.upto != Some(from) {
            self.ends = vec![from; partitions as usize + 2];
        }
        let back = self.ends.iter().map(|end| from - end).collect();
        for lane in lanes {
            if let Some(end) = lane_index(lane).and_then(|index| self.ends.get_mut(index)) {
                *end = upto;
            }
        }
        self.upto = Some(upto);
        self.owed = true;
        back
    }

    /// The clock owed, if one is and it is due at `now`.
    fn clock(&mut self, now: Instant) -> Option<Clock> {
        let upto = self.upto?;
        if !self.owed || self.clocked.is_some_and(|at| now < at + CLOCK_EVERY) {
            return None;
        }
        self.owed = false;
        self.clocked = Some(now);
        Some(Clock {
            upto,
            back: self.ends.iter().map(|end| upto - end).collect(),
        })
    }

    /// When the clock owed is due, if one is.
    fn due(&self) -> Option<Instant> {
        self.owed.then(|| {
            self.clocked
                .map_or_else(Instant::now, |at| at + CLOCK_EVERY)
        })
    }
}

/// The lane every instance follows: events for everyone and the system's (revocations).
pub const LANE_ALL: &str = "all";
/// The lane of staff-only events and of a copy of each user-and-staff event.
pub const LANE_STAFF: &str = "staff";
/// The lane of the clocks.
pub const LANE_CLOCK: &str = "clock";

/// A lane's place in a chain: `all` 0, `staff` 1, `u:{k}` 2 + k.
pub fn lane_index(lane: &str) -> Option<usize> {
    match lane {
        LANE_ALL => Some(0),
        LANE_STAFF => Some(1),
        _ => lane
            .strip_prefix("u:")?
            .parse::<usize>()
            .ok()
            .and_then(|k| k.checked_add(2)),
    }
}

/// The lane of the users whose id hashes to `partition`.
pub fn user_lane(partition: u32) -> String {
    format!("u:{partition}")
}

/// The partition (of `partitions`) of `user`: a stable hash of the id, the same on every
/// instance and release (the relay and the hubs must agree).
pub fn partition_of(user: uuid::Uuid, partitions: u32) -> u32 {
    let (high, low) = user.as_u64_pair();
    // Mixed, so that ids with patterned bits (v7: a timestamp first) still spread.
    let mixed = (high ^ low).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((mixed >> 32) % u64::from(partitions.max(1))) as u32
}

/// The channel of `lane` on the bus whose base channel is `base`.
pub fn lane_channel(base: &str, lane: &str) -> String {
    format!("{base}:{lane}")
}

/// A batch split into lanes (`partitions` > 0), each lane's events in seq order; a
/// user-and-staff event goes to its user's lane and to staff's.
pub fn lanes(events: &[Event], partitions: u32) -> BTreeMap<String, Vec<Event>> {
    let mut lanes: BTreeMap<String, Vec<Event>> = BTreeMap::new();
    for event in events {
        let mut put = |lane: String| lanes.entry(lane).or_default().push(event.clone());
        match event.audience {
            _ if event.topic == Topic::System => put(LANE_ALL.to_owned()),
            Audience::Everyone => put(LANE_ALL.to_owned()),
            Audience::Staff => put(LANE_STAFF.to_owned()),
            Audience::User(user) => put(user_lane(partition_of(user, partitions))),
            Audience::UserAndStaff(user) => {
                put(user_lane(partition_of(user, partitions)));
                put(LANE_STAFF.to_owned());
            }
        }
    }
    lanes
}

/// Faults to inject into publishing, for tests only: the next so many data messages, or
/// clocks, are dropped as if Redis had lost them (the relay counts them published). Reached
/// through `Realtime::bus_faults`; nothing in the app sets them.
#[derive(Debug, Default)]
pub struct BusFaults {
    drop_data: AtomicU32,
    drop_clocks: AtomicU32,
}

impl BusFaults {
    /// Test only: drops the next `n` data messages published.
    pub fn drop_next_data(&self, n: u32) {
        self.drop_data.fetch_add(n, Ordering::AcqRel);
    }

    /// Test only: drops the next `n` clocks published.
    pub fn drop_next_clocks(&self, n: u32) {
        self.drop_clocks.fetch_add(n, Ordering::AcqRel);
    }

    /// Whether to drop this one (counting it).
    fn take(counter: &AtomicU32) -> bool {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// The sending side, used by the relay.
#[derive(Clone)]
pub enum Publisher {
    Memory(mpsc::Sender<Message>),
    Redis {
        connection: redis::aio::ConnectionManager,
        channel: Arc<str>,
        split: Split,
    },
    /// Redis Cluster: `SPUBLISH` on the master that owns the channel's slot.
    Cluster {
        connection: cluster::ClusterPublisher,
        channel: Arc<str>,
        split: Split,
    },
}

/// How a Redis publisher splits batches: into `partitions` user lanes (0: not at all, one
/// channel), with `faults` injected by tests, chaining them in `chain`.
#[derive(Debug, Clone, Default)]
pub struct Split {
    pub partitions: u32,
    pub faults: Arc<BusFaults>,
    chain: Arc<parking_lot::Mutex<Chain>>,
}

impl Split {
    pub fn new(partitions: u32) -> Split {
        Split {
            partitions,
            ..Split::default()
        }
    }
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Publisher::Memory(_) => f.write_str("Publisher::Memory"),
            Publisher::Redis { channel, .. } => write!(f, "Publisher::Redis({channel})"),
            Publisher::Cluster { channel, .. } => write!(f, "Publisher::Cluster({channel})"),
        }
    }
}

/// How long the relay waits for Redis to take a batch before going on without it.
const PUBLISH_TIMEOUT: Duration = Duration::from_millis(100);

/// The publishing connection's limit on connecting to Redis, on an answer, and on the
/// pause between its reconnection attempts: a Redis that is down makes publishing fail
/// fast (the events wait in the database), and one back is used again within 2 s.
const PUBLISHER_TIMEOUT: Duration = Duration::from_secs(2);

impl Publisher {
    /// Publishes a batch (contiguous seqs, in order) on the bus: on its channel, or split
    /// into lanes and a clock with `TIDINGS_BUS_PARTITIONS`; whether the bus took it. A
    /// failure loses nothing: hubs find the events in the database.
    pub async fn publish(&self, batch: Vec<Event>) -> bool {
        match self {
            Publisher::Memory(_) => self.publish_on("", batch).await,
            Publisher::Redis { channel, split, .. } | Publisher::Cluster { channel, split, .. } => {
                let channel = channel.clone();
                if split.partitions == 0 {
                    self.publish_on(&channel, batch).await
                } else {
                    self.publish_split(&channel, split, batch).await
                }
            }
        }
    }

    /// Publishes a batch's lanes, each on its channel, at once, each with the batch's
    /// clock and chain; then the stream's clock, if one is due.
    async fn publish_split(&self, base: &str, split: &Split, batch: Vec<Event>) -> bool {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return true;
        };
        let (from, upto) = (first.seq - 1, last.seq);
        let lanes = lanes(&batch, split.partitions);
        let counts: BTreeMap<String, u32> = lanes
            .iter()
            .map(|(lane, events)| (lane.clone(), events.len() as u32))
            .collect();
        let back = split
            .chain
            .lock()
            .link(from, upto, counts.keys(), split.partitions);
        let data = lanes.into_iter().map(|(lane, events)| {
            let channel = lane_channel(base, &lane);
            let message = Wire::Data(Data {
                from,
                upto,
                lane,
                lanes: counts.clone(),
                back: back.clone(),
                events,
            });
            let dropped = BusFaults::take(&split.faults.drop_data);
            async move { dropped || self.publish_wire(&channel, &message).await }
        });
        let taken = futures::future::join_all(data).await;
        self.publish_clock().await;
        taken.into_iter().all(|taken| taken)
    }

    /// When the clock owed to the hubs of a partitioned bus is due, if one is owed: the
    /// relay calls [`Publisher::publish_clock`] then.
    pub fn clock_due(&self) -> Option<Instant> {
        match self {
            Publisher::Redis { split, .. } | Publisher::Cluster { split, .. } => {
                split.chain.lock().due()
            }
            Publisher::Memory(_) => None,
        }
    }

    /// Publishes the clock of a partitioned bus if one is owed and due. A clock lost costs
    /// nothing but time: the next one says the same and more.
    pub async fn publish_clock(&self) {
        let (Publisher::Redis { channel, split, .. } | Publisher::Cluster { channel, split, .. }) =
            self
        else {
            return;
        };
        let Some(clock) = split.chain.lock().clock(Instant::now()) else {
            return;
        };
        if !BusFaults::take(&split.faults.drop_clocks) {
            self.publish_wire(&lane_channel(channel, LANE_CLOCK), &Wire::Clock(clock))
                .await;
        }
    }

    async fn publish_wire(&self, channel: &str, message: &Wire) -> bool {
        match serde_json::to_vec(message) {
            Ok(payload) => self.publish_payload(channel, payload).await,
            Err(e) => {
                tracing::error!(error = %e, "a message could not be encoded for the bus");
                false
            }
        }
    }

    /// Publishes a batch on a channel of choice (the in-process bus has one, and ignores
    /// the name); whether the bus took it. Bounded in time, and a failure loses nothing.
    pub async fn publish_on(&self, channel: &str, batch: Vec<Event>) -> bool {
        let payload = match self {
            // Only fails when the hub is gone, at shutdown.
            Publisher::Memory(hub) => return hub.send(Message::Batch(batch)).await.is_ok(),
            Publisher::Redis { .. } | Publisher::Cluster { .. } => {
                match serde_json::to_vec(&batch) {
                    Ok(payload) => payload,
                    Err(e) => {
                        tracing::error!(error = %e, "a batch could not be encoded for the bus");
                        return false;
                    }
                }
            }
        };
        self.publish_payload(channel, payload).await
    }

    /// Publishes an encoded message; bounded in time.
    async fn publish_payload(&self, channel: &str, payload: Vec<u8>) -> bool {
        let published = async {
            match self {
                Publisher::Memory(_) => Ok(()),
                Publisher::Redis { connection, .. } => {
                    let mut connection = connection.clone();
                    redis::cmd("PUBLISH")
                        .arg(channel)
                        .arg(payload)
                        .query_async::<i64>(&mut connection)
                        .await
                        .map(drop)
                }
                Publisher::Cluster { connection, .. } => {
                    connection.spublish(channel, &payload).await
                }
            }
        };
        // Bounded: with Redis gone, the connection's reconnecting would hold the relay for
        // seconds per batch, and the events behind it would get no seq, so hubs reading
        // the database would find nothing new.
        match tokio::time::timeout(PUBLISH_TIMEOUT, published).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "publishing to Redis failed; hubs will read the events from the database");
                false
            }
            Err(_) => {
                tracing::warn!(
                    "publishing to Redis timed out; hubs will read the events from the database"
                );
                false
            }
        }
    }
}

/// The bus as one instance sees it.
#[derive(Debug)]
pub struct Bus {
    pub publisher: Publisher,
    /// Messages for this instance's hub.
    pub batches: mpsc::Receiver<Message>,
    pub health: BusHealth,
    /// The channels the subscriber follows (the in-process bus has none to follow).
    pub channels: Channels,
    /// `memory`, `redis` or `redis-cluster`.
    pub kind: &'static str,
    /// The user lanes batches are split into (0: one channel; always 0 in-process).
    pub partitions: u32,
    /// Faults tests inject into publishing (see [`BusFaults`]).
    pub faults: Arc<BusFaults>,
}

impl Bus {
    /// The in-process bus: what the relay publishes goes straight to the hub.
    pub fn memory() -> Bus {
        let (tx, rx) = mpsc::channel(HUB_QUEUE);
        Bus {
            publisher: Publisher::Memory(tx),
            batches: rx,
            health: BusHealth::new(true),
            channels: Channels::new([]),
            kind: "memory",
            partitions: 0,
            faults: Arc::default(),
        }
    }

    /// The Redis bus: on one Redis (classic pub/sub), or on Redis Cluster (sharded pub/sub)
    /// when `cluster` is set or `url` names several nodes (comma-separated). Starts even
    /// while Redis is unreachable (degraded, reconnecting in the background); only a
    /// malformed URL is an error.
    ///
    /// With `partitions` > 0 batches are split into lanes, and the subscriber starts with
    /// the lanes every instance follows (`all`, `clock`); the hub adds the others.
    pub async fn redis(
        url: &str,
        cluster: bool,
        channel: &str,
        partitions: u32,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Bus> {
        let seeds =
            cluster::seeds(url).map_err(|e| anyhow::anyhow!("REDIS_URL is not usable: {e}"))?;
        let split = Split::new(partitions);
        if cluster || seeds.len() > 1 {
            return Self::cluster(seeds, channel, split, shutdown);
        }
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("REDIS_URL is not usable: {e}"))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(PUBLISHER_TIMEOUT))
            .set_response_timeout(Some(PUBLISHER_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(PUBLISHER_TIMEOUT);
        let connection =
            redis::aio::ConnectionManager::new_lazy_with_config(client.clone(), config)
                .map_err(|e| anyhow::anyhow!("REDIS_URL is not usable: {e}"))?;
        let (tx, rx) = mpsc::channel(HUB_QUEUE);
        let health = BusHealth::new(false);
        let channels = Channels::new(first_channels(channel, partitions));
        let faults = split.faults.clone();
        tokio::spawn(subscribe(
            client,
            channels.watch(),
            tx,
            health.clone(),
            shutdown,
        ));
        Ok(Bus {
            publisher: Publisher::Redis {
                connection,
                channel: Arc::from(channel),
                split,
            },
            batches: rx,
            health,
            channels,
            kind: "redis",
            partitions,
            faults,
        })
    }

    /// The bus on Redis Cluster, seeded by `seeds`.
    fn cluster(
        seeds: Vec<redis::ConnectionInfo>,
        channel: &str,
        split: Split,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Bus> {
        let connection = cluster::ClusterPublisher::start(seeds.clone(), shutdown.clone())
            .map_err(|e| anyhow::anyhow!("REDIS_URL is not usable: {e}"))?;
        let (tx, rx) = mpsc::channel(HUB_QUEUE);
        let health = BusHealth::new(false);
        let channels = Channels::new(first_channels(channel, split.partitions));
        let (partitions, faults) = (split.partitions, split.faults.clone());
        tokio::spawn(cluster::subscribe(
            seeds,
            channels.watch(),
            tx,
            health.clone(),
            shutdown,
        ));
        Ok(Bus {
            publisher: Publisher::Cluster {
                connection,
                channel: Arc::from(channel),
                split,
            },
            batches: rx,
            health,
            channels,
            kind: "redis-cluster",
            partitions,
            faults,
        })
    }
}

/// The channels a subscriber starts with: the one channel, or the lanes every instance
/// follows.
fn first_channels(base: &str, partitions: u32) -> Vec<String> {
    if partitions == 0 {
        vec![base.to_owned()]
    } else {
        vec![lane_channel(base, LANE_ALL), lane_channel(base, LANE_CLOCK)]
    }
}

/// How long connecting to Redis and subscribing may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How often the subscription's connection is pinged. Nothing else tells a Redis that
/// stopped answering (hung, or frozen with its connections open) from a quiet channel.
/// Cheap: one PING per instance, a few times a second.
const PING_EVERY: Duration = Duration::from_millis(250);

/// How long Redis may take to answer a ping before the subscription counts as lost. A
/// healthy Redis answers in well under a millisecond; one slower than this delivers later
/// than the hub reading the database while the bus is down (every 100 ms), so waiting
/// longer gains nothing. A false alarm costs a reconnect and a few database reads.
const PING_DEADLINE: Duration = Duration::from_millis(500);

/// Keeps a subscription to the channels, reconnecting with backoff, and forwards every
/// batch to the hub. The bus is up while subscribed and Redis answers pings in time.
async fn subscribe(
    client: redis::Client,
    mut channels: watch::Receiver<BTreeSet<String>>,
    hub: mpsc::Sender<Message>,
    health: BusHealth,
    shutdown: CancellationToken,
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let subscribed = channels.borrow_and_update().clone();
        let connected = tokio::select! {
            () = shutdown.cancelled() => return,
            connected = tokio::time::timeout(CONNECT_TIMEOUT, connect(&client, &subscribed)) => connected,
        };
        let (pings, messages) = match connected {
            Ok(Ok(pubsub)) => pubsub.split(),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "cannot subscribe to Redis; reading events from the database");
                if wait(&shutdown, &mut backoff).await {
                    return;
                }
                continue;
            }
            Err(_) => {
                tracing::warn!(retry_in = ?backoff, "subscribing to Redis timed out; reading events from the database");
                if wait(&shutdown, &mut backoff).await {
                    return;
                }
                continue;
            }
        };
        tracing::info!(channels = ?subscribed, "subscribed to the Redis bus");
        health.set(true);
        backoff = FIRST_BACKOFF;
        // Both at once: pings go on while a batch waits for room in the hub's queue.
        let lost = tokio::select! {
            () = shutdown.cancelled() => return,
            forwarded = forward(messages, &hub) => match forwarded {
                Ok(()) => return,
                Err(lost) => lost,
            },
            lost = silence(pings, &mut channels, subscribed) => lost,
        };
        // Dropping the subscription's halves closes its connection.
        health.set(false);
        tracing::warn!(
            why = lost,
            "lost the Redis subscription; reading events from the database until it is back"
        );
    }
}

/// A connection subscribed to the channels.
async fn connect(
    client: &redis::Client,
    channels: &BTreeSet<String>,
) -> redis::RedisResult<redis::aio::PubSub> {
    let mut pubsub = client.get_async_pubsub().await?;
    if !channels.is_empty() {
        pubsub
            .subscribe(channels.iter().collect::<Vec<_>>())
            .await?;
    }
    Ok(pubsub)
}

/// A message as published on the bus; `None` (logged) for anything else.
fn decode(payload: &[u8]) -> Option<Message> {
    let batch = payload
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'[');
    let decoded = if batch {
        serde_json::from_slice(payload).map(Message::Batch)
    } else {
        serde_json::from_slice(payload).map(|wire| match wire {
            Wire::Data(data) => Message::Data(data),
            Wire::Clock(clock) => Message::Clock(clock),
        })
    };
    decoded
        .inspect_err(|e| {
            tracing::error!(error = %e, "a message on the bus is not a batch, data or clock; ignored")
        })
        .ok()
}

/// Hands every batch on the channel to the hub until the subscription ends (`Err`, why) or
/// the hub is gone (`Ok`, at shutdown).
async fn forward(
    mut messages: redis::aio::PubSubStream,
    hub: &mpsc::Sender<Message>,
) -> Result<(), &'static str> {
    while let Some(message) = messages.next().await {
        if let Some(batch) = decode(message.get_payload_bytes())
            && hub.send(batch).await.is_err()
        {
            return Ok(());
        }
    }
    Err("the connection closed")
}

/// Pings Redis on the subscription's connection until it fails to answer in time, and
/// subscribes to channels added meanwhile (unsubscribes from those removed); why it ended.
async fn silence(
    mut sink: redis::aio::PubSubSink,
    channels: &mut watch::Receiver<BTreeSet<String>>,
    mut subscribed: BTreeSet<String>,
) -> &'static str {
    let mut following = true;
    loop {
        tokio::select! {
            () = tokio::time::sleep(PING_EVERY) => {
                match tokio::time::timeout(PING_DEADLINE, sink.ping::<()>()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return "the connection failed",
                    Err(_) => return "Redis did not answer a ping in time",
                }
            }
            changed = channels.changed(), if following => {
                if changed.is_err() {
                    // Nobody holds the handle any more: the set stays as it is.
                    following = false;
                    continue;
                }
                let wanted = channels.borrow_and_update().clone();
                let added: Vec<&String> = wanted.difference(&subscribed).collect();
                let removed: Vec<&String> = subscribed.difference(&wanted).collect();
                let changed = async {
                    if !added.is_empty() {
                        sink.subscribe(added).await?;
                    }
                    if !removed.is_empty() {
                        sink.unsubscribe(removed).await?;
                    }
                    redis::RedisResult::Ok(())
                };
                match tokio::time::timeout(PING_DEADLINE, changed).await {
                    Ok(Ok(())) => subscribed = wanted,
                    Ok(Err(_)) => return "changing the subscriptions failed",
                    Err(_) => return "Redis did not answer a subscription change in time",
                }
            }
        }
    }
}

/// The first wait before subscribing to Redis again; it doubles with each failure…
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// …up to this: a Redis back after an outage is noticed within 5 s, while a Redis that
/// stays down costs one connection attempt per 5 s (hubs read the database meanwhile).
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Sleeps for the backoff (doubling it, up to [`MAX_BACKOFF`]); true if shutdown came first.
async fn wait(shutdown: &CancellationToken, backoff: &mut Duration) -> bool {
    let sleep = *backoff;
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    tokio::select! {
        () = shutdown.cancelled() => true,
        () = tokio::time::sleep(sleep) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: i64, topic: Topic, audience: Audience) -> Event {
        Event {
            seq,
            topic,
            kind: "x".into(),
            audience,
            at: chrono::Utc::now(),
            data: serde_json::Value::Null,
        }
    }

    #[test]
    fn a_batch_is_split_into_lanes_with_a_copy_of_user_and_staff_events_for_staff() {
        let user = uuid::Uuid::now_v7();
        let lane = user_lane(partition_of(user, 8));
        let events = [
            event(1, Topic::Inventory, Audience::Everyone),
            event(2, Topic::System, Audience::User(user)),
            event(3, Topic::Inventory, Audience::Staff),
            event(4, Topic::Orders, Audience::UserAndStaff(user)),
            event(5, Topic::Notifications, Audience::User(user)),
        ];
        let lanes = lanes(&events, 8);
        let seqs = |lane: &str| -> Vec<i64> { lanes[lane].iter().map(|e| e.seq).collect() };
        assert_eq!(lanes.len(), 3);
        assert_eq!(seqs(LANE_ALL), [1, 2]);
        assert_eq!(seqs(LANE_STAFF), [3, 4]);
        assert_eq!(seqs(&lane), [4, 5]);
    }

    #[test]
    fn partitioned_messages_and_batches_are_told_apart_on_the_wire() {
        let events = vec![event(1, Topic::Inventory, Audience::Everyone)];
        let batch = serde_json::to_vec(&events).unwrap();
        assert_eq!(decode(&batch), Some(Message::Batch(events.clone())));
        let data = Data {
            from: 0,
            upto: 1,
            lane: LANE_ALL.into(),
            lanes: BTreeMap::from([(LANE_ALL.to_owned(), 1)]),
            back: vec![0, 0],
            events,
        };
        let wire = serde_json::to_vec(&Wire::Data(data.clone())).unwrap();
        assert_eq!(decode(&wire), Some(Message::Data(data)));
        let clock = Clock {
            upto: 1,
            back: vec![0, 1],
        };
        let wire = serde_json::to_vec(&Wire::Clock(clock.clone())).unwrap();
        assert_eq!(
            std::str::from_utf8(&wire).unwrap(),
            r#"{"k":{"u":1,"p":[0,1]}}"#
        );
        assert_eq!(decode(&wire), Some(Message::Clock(clock)));
    }

    #[test]
    fn the_chain_links_each_lane_to_its_last_batch_and_forgets_at_a_break() {
        let mut chain = Chain::default();
        let lanes = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        // all, staff, u:0, u:1. A first batch knows nothing before it.
        assert_eq!(chain.link(10, 12, lanes(&["u:1"]).iter(), 2), [0, 0, 0, 0]);
        assert_eq!(chain.link(12, 15, lanes(&["all"]).iter(), 2), [2, 2, 2, 0]);
        assert_eq!(chain.link(15, 16, lanes(&["u:0"]).iter(), 2), [0, 5, 5, 3]);
        assert_eq!(chained(15, &[0, 5, 5, 3], "u:1"), 12);
        assert_eq!(
            chained(15, &[0, 5, 5, 3], "u:7"),
            15,
            "a lane it has no number for"
        );
        // Another relay numbered (16, 20]: this one knows nothing before 20.
        assert_eq!(chain.link(20, 21, lanes(&["all"]).iter(), 2), [0, 0, 0, 0]);
        assert_eq!(
            chain.clock(Instant::now()),
            Some(Clock {
                upto: 21,
                back: vec![0, 1, 1, 1]
            })
        );
        // At most one clock every CLOCK_EVERY while batches are published.
        chain.link(21, 22, lanes(&["u:0"]).iter(), 2);
        let due = chain.due().unwrap();
        assert_eq!(chain.clock(due - Duration::from_millis(1)), None);
        assert_eq!(
            chain.clock(due),
            Some(Clock {
                upto: 22,
                back: vec![1, 2, 0, 2]
            })
        );
        assert_eq!(chain.due(), None, "nothing owed");
    }

    #[test]
    fn a_users_partition_is_stable_and_spread() {
        let user: uuid::Uuid = "0190f4a2-7b1c-7cde-8f00-123456789abc".parse().unwrap();
        assert_eq!(partition_of(user, 8), partition_of(user, 8));
        let used: BTreeSet<u32> = (0..200)
            .map(|_| partition_of(uuid::Uuid::now_v7(), 8))
            .collect();
        assert_eq!(used.len(), 8);
    }
}
