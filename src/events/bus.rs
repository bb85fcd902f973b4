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
//! and the publisher can publish on any channel ([`Publisher::publish_on`]): the shape a
//! bus split into partitions needs. The app uses one channel, `TIDINGS_REDIS_CHANNEL`.

pub mod cluster;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::Event;

/// Batches waiting for the hub; the relay waits when it is full.
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

/// The sending side, used by the relay.
#[derive(Clone)]
pub enum Publisher {
    Memory(mpsc::Sender<Vec<Event>>),
    Redis {
        connection: redis::aio::ConnectionManager,
        channel: Arc<str>,
    },
    /// Redis Cluster: `SPUBLISH` on the master that owns the channel's slot.
    Cluster {
        connection: cluster::ClusterPublisher,
        channel: Arc<str>,
    },
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
    /// Publishes a batch on the bus's channel; whether the bus took it. A failure loses
    /// nothing: hubs find the events in the database.
    pub async fn publish(&self, batch: Vec<Event>) -> bool {
        match self {
            Publisher::Memory(_) => self.publish_on("", batch).await,
            Publisher::Redis { channel, .. } | Publisher::Cluster { channel, .. } => {
                let channel = channel.clone();
                self.publish_on(&channel, batch).await
            }
        }
    }

    /// Publishes a batch on a channel of choice (the in-process bus has one, and ignores
    /// the name); whether the bus took it. Bounded in time, and a failure loses nothing.
    pub async fn publish_on(&self, channel: &str, batch: Vec<Event>) -> bool {
        let payload = match self {
            // Only fails when the hub is gone, at shutdown.
            Publisher::Memory(hub) => return hub.send(batch).await.is_ok(),
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
    /// Batches for this instance's hub.
    pub batches: mpsc::Receiver<Vec<Event>>,
    pub health: BusHealth,
    /// The channels the subscriber follows (the in-process bus has none to follow).
    pub channels: Channels,
    /// `memory`, `redis` or `redis-cluster`.
    pub kind: &'static str,
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
        }
    }

    /// The Redis bus: on one Redis (classic pub/sub), or on Redis Cluster (sharded pub/sub)
    /// when `cluster` is set or `url` names several nodes (comma-separated). Starts even
    /// while Redis is unreachable (degraded, reconnecting in the background); only a
    /// malformed URL is an error.
    pub async fn redis(
        url: &str,
        cluster: bool,
        channel: &str,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Bus> {
        let seeds =
            cluster::seeds(url).map_err(|e| anyhow::anyhow!("REDIS_URL is not usable: {e}"))?;
        if cluster || seeds.len() > 1 {
            return Self::cluster(seeds, channel, shutdown);
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
        let channels = Channels::new([channel.to_owned()]);
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
            },
            batches: rx,
            health,
            channels,
            kind: "redis",
        })
    }

    /// The bus on Redis Cluster, seeded by `seeds`.
    fn cluster(
        seeds: Vec<redis::ConnectionInfo>,
        channel: &str,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Bus> {
        let connection = cluster::ClusterPublisher::start(seeds.clone(), shutdown.clone())
            .map_err(|e| anyhow::anyhow!("REDIS_URL is not usable: {e}"))?;
        let (tx, rx) = mpsc::channel(HUB_QUEUE);
        let health = BusHealth::new(false);
        let channels = Channels::new([channel.to_owned()]);
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
            },
            batches: rx,
            health,
            channels,
            kind: "redis-cluster",
        })
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
    hub: mpsc::Sender<Vec<Event>>,
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

/// A batch as published on the bus; `None` (logged) for anything else.
fn decode(payload: &[u8]) -> Option<Vec<Event>> {
    serde_json::from_slice(payload)
        .inspect_err(|e| {
            tracing::error!(error = %e, "a message on the bus is not a batch of events; ignored")
        })
        .ok()
}

/// Hands every batch on the channel to the hub until the subscription ends (`Err`, why) or
/// the hub is gone (`Ok`, at shutdown).
async fn forward(
    mut messages: redis::aio::PubSubStream,
    hub: &mpsc::Sender<Vec<Event>>,
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
