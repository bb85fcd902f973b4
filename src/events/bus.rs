//! The bus: carries each batch the relay numbered to the hub of every instance.
//!
//! In-process (the default), the relay hands batches straight to this instance's hub.
//! With `REDIS_URL`, the relay publishes to a Redis channel and every instance's hub
//! subscribes to it. Redis may drop messages (a reconnect, a slow subscriber): the hubs do
//! not rely on it, since they check that `seq` is contiguous and read any gap from the
//! database, and while the subscription is down (or Redis stops answering its pings) they
//! read the database on a timer.

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

/// The sending side, used by the relay.
#[derive(Clone)]
pub enum Publisher {
    Memory(mpsc::Sender<Vec<Event>>),
    Redis {
        connection: redis::aio::ConnectionManager,
        channel: Arc<str>,
    },
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Publisher::Memory(_) => f.write_str("Publisher::Memory"),
            Publisher::Redis { channel, .. } => write!(f, "Publisher::Redis({channel})"),
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
    /// Publishes a batch; whether the bus took it. A failure loses nothing: hubs find the
    /// events in the database.
    pub async fn publish(&self, batch: Vec<Event>) -> bool {
        match self {
            Publisher::Memory(hub) => {
                // Only fails when the hub is gone, at shutdown.
                hub.send(batch).await.is_ok()
            }
            Publisher::Redis {
                connection,
                channel,
            } => {
                let payload = match serde_json::to_vec(&batch) {
                    Ok(payload) => payload,
                    Err(e) => {
                        tracing::error!(error = %e, "a batch could not be encoded for the bus");
                        return false;
                    }
                };
                let mut connection = connection.clone();
                let mut command = redis::cmd("PUBLISH");
                command.arg(channel.as_ref()).arg(payload);
                let publish = command.query_async::<i64>(&mut connection);
                // Bounded: with Redis gone, the connection manager's reconnecting would hold
                // the relay for seconds per batch, and the events behind it would get no
                // seq, so hubs reading the database would find nothing new.
                match tokio::time::timeout(PUBLISH_TIMEOUT, publish).await {
                    Ok(Ok(_)) => true,
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
    }
}

/// The bus as one instance sees it.
#[derive(Debug)]
pub struct Bus {
    pub publisher: Publisher,
    /// Batches for this instance's hub.
    pub batches: mpsc::Receiver<Vec<Event>>,
    pub health: BusHealth,
    /// `memory` or `redis`.
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
            kind: "memory",
        }
    }

    /// The Redis bus. Starts even while Redis is unreachable (degraded, reconnecting in the
    /// background); only a malformed URL is an error.
    pub async fn redis(
        url: &str,
        channel: &str,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Bus> {
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
        tokio::spawn(subscribe(
            client,
            channel.to_owned(),
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
            kind: "redis",
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

/// Keeps a subscription to the channel, reconnecting with backoff, and forwards every
/// batch to the hub. The bus is up while subscribed and Redis answers pings in time.
async fn subscribe(
    client: redis::Client,
    channel: String,
    hub: mpsc::Sender<Vec<Event>>,
    health: BusHealth,
    shutdown: CancellationToken,
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let connected = tokio::select! {
            () = shutdown.cancelled() => return,
            connected = tokio::time::timeout(CONNECT_TIMEOUT, connect(&client, &channel)) => connected,
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
        tracing::info!(%channel, "subscribed to the Redis bus");
        health.set(true);
        backoff = FIRST_BACKOFF;
        // Both at once: pings go on while a batch waits for room in the hub's queue.
        let lost = tokio::select! {
            () = shutdown.cancelled() => return,
            forwarded = forward(messages, &hub) => match forwarded {
                Ok(()) => return,
                Err(lost) => lost,
            },
            lost = silence(pings) => lost,
        };
        // Dropping the subscription's halves closes its connection.
        health.set(false);
        tracing::warn!(
            why = lost,
            "lost the Redis subscription; reading events from the database until it is back"
        );
    }
}

/// A connection subscribed to the channel.
async fn connect(client: &redis::Client, channel: &str) -> redis::RedisResult<redis::aio::PubSub> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

/// Hands every batch on the channel to the hub until the subscription ends (`Err`, why) or
/// the hub is gone (`Ok`, at shutdown).
async fn forward(
    mut messages: redis::aio::PubSubStream,
    hub: &mpsc::Sender<Vec<Event>>,
) -> Result<(), &'static str> {
    while let Some(message) = messages.next().await {
        match serde_json::from_slice::<Vec<Event>>(message.get_payload_bytes()) {
            Ok(batch) => {
                if hub.send(batch).await.is_err() {
                    return Ok(());
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "a message on the bus is not a batch of events; ignored")
            }
        }
    }
    Err("the connection closed")
}

/// Pings Redis on the subscription's connection until it fails to answer in time; why.
async fn silence(mut pings: redis::aio::PubSubSink) -> &'static str {
    loop {
        tokio::time::sleep(PING_EVERY).await;
        match tokio::time::timeout(PING_DEADLINE, pings.ping::<()>()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return "the connection failed",
            Err(_) => return "Redis did not answer a ping in time",
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
