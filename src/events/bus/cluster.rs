//! The bus on Redis Cluster: sharded pub/sub (`SPUBLISH` / `SSUBSCRIBE`).
//!
//! A sharded channel lives on the master that owns its key slot (CRC16 of the name, as for
//! a key), so channels with different names spread over the cluster's masters instead of
//! every message going to every node, as a classic `PUBLISH` does on a cluster.
//!
//! Publishing goes through redis-rs's cluster connection, which routes `SPUBLISH` by the
//! channel's slot and follows `MOVED` and failovers itself.
//!
//! Subscribing does not: redis-rs 1.8's cluster connection can `ssubscribe` (RESP3, with a
//! push sender) and resubscribes after a reconnection, but when a slot migrates, Redis ends
//! the subscription with a `sunsubscribe` push, which the library records as the
//! subscriber's own unsubscription, so it never subscribes again on the new owner; and it
//! tells nobody whether a channel is subscribed right now, which the hubs need to know
//! (while it is not, they read the database). So the subscriber here holds one RESP3
//! connection per master that owns a wanted channel's slot (found with `CLUSTER SLOTS`),
//! sends `SSUBSCRIBE` there, pings each connection (with `ROLE`, which also tells a master
//! turned replica), and on anything that ends a
//! subscription (the connection closes or stops answering, a `sunsubscribe` it did not ask
//! for, a push it had no room for) drops that connection, reads the slots again and
//! subscribes on whoever owns them now. The bus is up while every wanted channel is
//! subscribed on the master that owns it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{ConnectionAddr, ConnectionInfo, PushInfo, PushKind, Value};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    BusHealth, CONNECT_TIMEOUT, FIRST_BACKOFF, MAX_BACKOFF, Message, PING_DEADLINE, PING_EVERY,
    PUBLISHER_TIMEOUT, decode, wait,
};

/// Key slots in a Redis Cluster.
const SLOTS: u16 = 16384;

/// The key slot of a channel (or key), as Redis Cluster computes it: CRC16 (XMODEM) of
/// the name, or of its hash tag (the part between the first `{` and the next `}`, if not
/// empty), modulo 16384.
pub fn key_slot(name: &[u8]) -> u16 {
    let hashed = name
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &name[open + 1..];
            rest.iter()
                .position(|&b| b == b'}')
                .filter(|&len| len > 0)
                .map(|len| &rest[..len])
        })
        .unwrap_or(name);
    crc16(hashed) % SLOTS
}

/// CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, as Redis Cluster uses.
fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |crc, &byte| {
        (0..8).fold(crc ^ (u16::from(byte) << 8), |crc, _| {
            if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            }
        })
    })
}

/// The seed nodes of `REDIS_URL` (comma-separated `redis://` URLs).
pub(super) fn seeds(url: &str) -> redis::RedisResult<Vec<ConnectionInfo>> {
    url.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(redis::IntoConnectionInfo::into_connection_info)
        .collect()
}

/// The publishing side: a cluster connection, once one was made.
#[derive(Clone)]
pub struct ClusterPublisher(watch::Receiver<Option<ClusterConnection>>);

impl ClusterPublisher {
    /// Connects in the background, retrying with backoff until the cluster answers, so
    /// that an instance starts while the cluster is down. Only unusable seeds are an error.
    pub(super) fn start(
        seeds: Vec<ConnectionInfo>,
        shutdown: CancellationToken,
    ) -> redis::RedisResult<ClusterPublisher> {
        let client = ClusterClientBuilder::new(seeds)
            .connection_timeout(PUBLISHER_TIMEOUT)
            .response_timeout(PUBLISHER_TIMEOUT)
            .retries(2)
            .max_retry_wait(PUBLISHER_TIMEOUT.as_millis() as u64)
            .build()?;
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            let mut backoff = FIRST_BACKOFF;
            loop {
                let connected = tokio::select! {
                    () = shutdown.cancelled() => return,
                    connected = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_connection()) => connected,
                };
                match connected {
                    Ok(Ok(connection)) => {
                        // From here on the connection follows the cluster by itself.
                        let _ = tx.send(Some(connection));
                        return;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, retry_in = ?backoff, "cannot connect to the Redis Cluster to publish; hubs will read events from the database")
                    }
                    Err(_) => {
                        tracing::warn!(retry_in = ?backoff, "connecting to the Redis Cluster to publish timed out; hubs will read events from the database")
                    }
                }
                if wait(&shutdown, &mut backoff).await {
                    return;
                }
            }
        });
        Ok(ClusterPublisher(rx))
    }

    /// `SPUBLISH`es a payload on a channel; the cluster connection routes it to the master
    /// that owns the channel's slot.
    pub(super) async fn spublish(&self, channel: &str, payload: &[u8]) -> redis::RedisResult<()> {
        let connection = self.0.borrow().clone();
        let Some(mut connection) = connection else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "not connected to the Redis Cluster yet",
            )
            .into());
        };
        redis::cmd("SPUBLISH")
            .arg(channel)
            .arg(payload)
            .query_async::<i64>(&mut connection)
            .await
            .map(drop)
    }
}

/// A node's address, as `CLUSTER SLOTS` gives it.
type Address = (String, u16);

/// Pushes waiting for the subscriber, from all of its connections. A connection that
/// finds it full marks itself lost rather than wait: it is then made again.
const PUSH_QUEUE: usize = 1024;

/// A connection to one master, and the channels subscribed on it.
struct Node {
    /// Tells its pushes from those of an earlier connection to the same address.
    id: u64,
    connection: MultiplexedConnection,
    /// The channels this connection has `SSUBSCRIBE`d and not given up.
    channels: BTreeSet<String>,
    /// Set when a push could not be queued: the subscriber may have missed one that ended
    /// a subscription, so the connection is not trusted any more.
    overflowed: Arc<AtomicBool>,
}

/// The subscriber's view of the cluster.
struct Subscriber {
    /// `REDIS_URL`'s nodes: where the cluster is first asked for its slots, and the
    /// template (credentials, TLS) for connecting to the nodes it names.
    seeds: Vec<ConnectionInfo>,
    /// Every node the last `CLUSTER SLOTS` named, asked first next time.
    known: Vec<Address>,
    nodes: HashMap<Address, Node>,
    pushes: mpsc::Sender<(u64, PushInfo)>,
    next_id: u64,
}

/// Keeps every channel of `channels` subscribed on the master that owns its slot, following
/// the cluster as it changes, and forwards every batch to the hub. The bus is up while all
/// of them are subscribed and their connections answer pings in time.
pub(super) async fn subscribe(
    seeds: Vec<ConnectionInfo>,
    mut channels: watch::Receiver<BTreeSet<String>>,
    hub: mpsc::Sender<Message>,
    health: BusHealth,
    shutdown: CancellationToken,
) {
    let (pushes_tx, mut pushes) = mpsc::channel(PUSH_QUEUE);
    let mut subscriber = Subscriber {
        seeds,
        known: Vec::new(),
        nodes: HashMap::new(),
        pushes: pushes_tx,
        next_id: 0,
    };
    let mut pings = tokio::time::interval(PING_EVERY);
    pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut backoff = FIRST_BACKOFF;
    // Whether the set of channels may still change.
    let mut following = true;
    // When to bring the subscriptions in line with the wanted channels and the cluster.
    let mut reconcile_at = Some(Instant::now());
    loop {
        if reconcile_at.is_some_and(|at| at <= Instant::now()) {
            let wanted = channels.borrow_and_update().clone();
            let reconciled = tokio::select! {
                () = shutdown.cancelled() => return,
                reconciled = tokio::time::timeout(CONNECT_TIMEOUT, subscriber.reconcile(&wanted)) => {
                    reconciled.unwrap_or_else(|_| Err("the cluster did not answer in time".to_owned()))
                }
            };
            match reconciled {
                Ok(()) => {
                    if !health.is_up() {
                        tracing::info!(channels = ?wanted, "subscribed to the Redis Cluster bus");
                    }
                    health.set(true);
                    backoff = FIRST_BACKOFF;
                    reconcile_at = None;
                }
                Err(why) => {
                    health.set(false);
                    tracing::warn!(%why, retry_in = ?backoff, "cannot subscribe on the Redis Cluster; reading events from the database");
                    reconcile_at = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        let retry = async {
            match reconcile_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let lost = tokio::select! {
            () = shutdown.cancelled() => return,
            changed = channels.changed(), if following => {
                match changed {
                    Ok(()) => reconcile_at = Some(Instant::now()),
                    // Nobody holds the handle any more: the set stays as it is.
                    Err(_) => following = false,
                }
                None
            }
            push = pushes.recv() => {
                let Some((id, push)) = push else { return };
                match subscriber.on_push(id, push) {
                    Pushed::Batch(batch) => {
                        if hub.send(batch).await.is_err() {
                            return;
                        }
                        None
                    }
                    Pushed::Nothing => None,
                    Pushed::Lost(why) => Some(why),
                }
            }
            _ = pings.tick() => subscriber.ping().await,
            () = retry => None,
        };
        if let Some(why) = lost {
            if health.is_up() {
                tracing::warn!(%why, "lost a Redis Cluster subscription; reading events from the database until it is back");
            }
            health.set(false);
            reconcile_at = Some(reconcile_at.map_or(Instant::now(), |at| at.min(Instant::now())));
        }
    }
}

/// What a push means to the subscriber.
enum Pushed {
    Batch(Message),
    Nothing,
    /// A subscription ended; the node's connection was dropped.
    Lost(String),
}

impl Subscriber {
    /// Subscribes every wanted channel on the master that now owns its slot, and nothing
    /// else anywhere; an error says what is missing (the bus is degraded until a retry
    /// succeeds).
    async fn reconcile(&mut self, wanted: &BTreeSet<String>) -> Result<(), String> {
        let slots = self.slots().await?;
        let mut plan: HashMap<Address, BTreeSet<String>> = HashMap::new();
        for channel in wanted {
            let slot = key_slot(channel.as_bytes());
            let owner = slots
                .iter()
                .find(|(start, end, _)| (*start..=*end).contains(&slot))
                .map(|(_, _, owner)| owner.clone())
                .ok_or_else(|| format!("no master serves slot {slot}"))?;
            plan.entry(owner).or_default().insert(channel.clone());
        }
        // Channels that moved away, or are no longer wanted, first.
        let addresses: Vec<Address> = self.nodes.keys().cloned().collect();
        for address in addresses {
            let keep = plan.get(&address);
            let Some(node) = self.nodes.get_mut(&address) else {
                continue;
            };
            let stale: Vec<String> = node
                .channels
                .iter()
                .filter(|channel| keep.is_none_or(|keep| !keep.contains(*channel)))
                .cloned()
                .collect();
            if keep.is_none() {
                // Closing the connection ends its subscriptions.
                self.nodes.remove(&address);
                continue;
            }
            for channel in stale {
                node.channels.remove(&channel);
                // A channel whose slot moved is already unsubscribed there (Redis said
                // so, or answers MOVED): the answer does not matter.
                let _ = redis::cmd("SUNSUBSCRIBE")
                    .arg(&channel)
                    .query_async::<Value>(&mut node.connection)
                    .await;
            }
        }
        for (address, channels) in plan {
            if !self.nodes.contains_key(&address) {
                let node = self
                    .connect(&address)
                    .await
                    .map_err(|e| format!("cannot connect to {}:{}: {e}", address.0, address.1))?;
                self.nodes.insert(address.clone(), node);
            }
            let Some(node) = self.nodes.get_mut(&address) else {
                continue;
            };
            for channel in channels {
                if node.channels.contains(&channel) {
                    continue;
                }
                // One channel per command: the connection takes the command's first
                // confirmation as its answer, and hands any further one to nobody.
                let answer = redis::cmd("SSUBSCRIBE")
                    .arg(&channel)
                    .query_async::<Value>(&mut node.connection)
                    .await;
                match answer {
                    Ok(Value::Push {
                        kind: PushKind::SSubscribe,
                        ..
                    }) => {
                        node.channels.insert(channel);
                    }
                    other => {
                        self.nodes.remove(&address);
                        return Err(format!(
                            "SSUBSCRIBE {channel} on {}:{} answered {other:?}",
                            address.0, address.1
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The slot ranges and their masters, from the first node to answer `CLUSTER SLOTS`,
    /// asked all at once (those the last answer named, and the seeds): a node that hangs
    /// must not hold the subscriber up while another could answer.
    async fn slots(&mut self) -> Result<Vec<(u16, u16, Address)>, String> {
        let mut candidates: Vec<ConnectionInfo> = self
            .known
            .iter()
            .filter_map(|address| self.info_for(address))
            .collect();
        candidates.extend(self.seeds.iter().cloned());
        let asks = candidates
            .into_iter()
            .map(|info| Box::pin(cluster_slots(info)));
        let (masters, _) = futures::future::select_ok(asks)
            .await
            .map_err(|e| format!("no node answered CLUSTER SLOTS ({e})"))?;
        let mut known: Vec<Address> = masters.iter().map(|(_, _, a)| a.clone()).collect();
        known.sort();
        known.dedup();
        self.known = known;
        Ok(masters)
    }

    /// How to reach a node: the first seed's settings (credentials, TLS, RESP3) at the
    /// node's address.
    fn info_for(&self, (host, port): &Address) -> Option<ConnectionInfo> {
        let seed = self.seeds.first()?;
        let addr = match seed.addr().clone() {
            ConnectionAddr::Tcp(..) => ConnectionAddr::Tcp(host.clone(), *port),
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host: host.clone(),
                port: *port,
                insecure,
                tls_params,
            },
            _ => return None,
        };
        Some(seed.clone().set_addr(addr))
    }

    /// A RESP3 connection to a node whose pushes reach the subscriber tagged with its id.
    async fn connect(&mut self, address: &Address) -> redis::RedisResult<Node> {
        let info = self.info_for(address).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "REDIS_URL's first node is not a TCP address",
            )
        })?;
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let info = info.set_redis_settings(settings);
        self.next_id += 1;
        let id = self.next_id;
        let overflowed = Arc::new(AtomicBool::new(false));
        let pushes = self.pushes.clone();
        let overflow = overflowed.clone();
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(CONNECT_TIMEOUT))
            .set_push_sender(move |push: PushInfo| {
                pushes.try_send((id, push)).inspect_err(|_| {
                    overflow.store(true, Ordering::Relaxed);
                })
            });
        let mut connection = redis::Client::open(info)?
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        // The slots may have come from a node that has not heard of a failover yet: a
        // replica would take the subscription (and relay its master's messages) until it
        // is moved elsewhere, so only the master itself is trusted.
        let role: Value = redis::cmd("ROLE").query_async(&mut connection).await?;
        if !is_master(&role) {
            return Err(std::io::Error::other("not a master (any more)").into());
        }
        Ok(Node {
            id,
            connection,
            channels: BTreeSet::new(),
            overflowed,
        })
    }

    /// Handles a push from the connection `id`.
    fn on_push(&mut self, id: u64, push: PushInfo) -> Pushed {
        let Some(address) = self
            .nodes
            .iter()
            .find(|(_, node)| node.id == id)
            .map(|(address, _)| address.clone())
        else {
            // From a connection already dropped.
            return Pushed::Nothing;
        };
        match push.kind {
            PushKind::SMessage => match push.data.get(1) {
                Some(Value::BulkString(payload)) => {
                    decode(payload).map_or(Pushed::Nothing, Pushed::Batch)
                }
                _ => Pushed::Nothing,
            },
            PushKind::SUnsubscribe => {
                let channel = match push.data.first() {
                    Some(Value::BulkString(channel)) => String::from_utf8_lossy(channel),
                    _ => return Pushed::Nothing,
                };
                // One the subscriber asked for was removed from the set before it asked.
                let ours = self
                    .nodes
                    .get(&address)
                    .is_some_and(|node| node.channels.contains(channel.as_ref()));
                if !ours {
                    return Pushed::Nothing;
                }
                let why = format!(
                    "{}:{} ended the subscription to {channel} (its slot moved)",
                    address.0, address.1
                );
                self.nodes.remove(&address);
                Pushed::Lost(why)
            }
            PushKind::Disconnection => {
                self.nodes.remove(&address);
                Pushed::Lost(format!(
                    "the connection to {}:{} closed",
                    address.0, address.1
                ))
            }
            _ => Pushed::Nothing,
        }
    }

    /// Pings every connection at once; drops those that fail, or that missed a push, and
    /// says why if any was dropped.
    async fn ping(&mut self) -> Option<String> {
        let pings = self.nodes.iter().map(|(address, node)| {
            let mut connection = node.connection.clone();
            let overflowed = node.overflowed.load(Ordering::Relaxed);
            let address = address.clone();
            async move {
                if overflowed {
                    return Some((address, "it missed a push"));
                }
                // `ROLE` as the ping: it also tells a master that became a replica.
                let ping = redis::cmd("ROLE");
                let answer = ping.query_async::<Value>(&mut connection);
                match tokio::time::timeout(PING_DEADLINE, answer).await {
                    Ok(Ok(role)) if is_master(&role) => None,
                    Ok(Ok(_)) => Some((address, "it is not a master any more")),
                    Ok(Err(_)) => Some((address, "the connection failed")),
                    Err(_) => Some((address, "no answer to a ping in time")),
                }
            }
        });
        let failed: Vec<(Address, &str)> = futures::future::join_all(pings)
            .await
            .into_iter()
            .flatten()
            .collect();
        let mut why = None;
        for ((host, port), reason) in failed {
            self.nodes.remove(&(host.clone(), port));
            why = Some(format!("{host}:{port}: {reason}"));
        }
        why
    }
}

/// Whether a `ROLE` answer is a master's.
fn is_master(role: &Value) -> bool {
    match role {
        Value::Array(role) => match role.first() {
            Some(Value::BulkString(role)) => role == b"master",
            Some(Value::SimpleString(role)) => role == "master",
            _ => false,
        },
        _ => false,
    }
}

/// The host and port of a TCP connection's settings.
fn address_of(info: &ConnectionInfo) -> Option<Address> {
    match info.addr() {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            Some((host.clone(), *port))
        }
        _ => None,
    }
}

/// Asks one node for the cluster's slot ranges and the master of each; a node that serves
/// no slot (not part of the cluster yet) is an error, so that another answer is taken.
async fn cluster_slots(info: ConnectionInfo) -> redis::RedisResult<Vec<(u16, u16, Address)>> {
    let asked = address_of(&info);
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(CONNECT_TIMEOUT));
    let mut connection = redis::Client::open(info)?
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let answer: Value = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut connection)
        .await?;
    let masters: Vec<(u16, u16, Address)> = parse_slots(&answer)
        .into_iter()
        .map(|(start, end, (host, port))| {
            // An empty host means "the address you reached me on".
            let host = match (host.is_empty(), &asked) {
                (true, Some((asked, _))) => asked.clone(),
                _ => host,
            };
            (start, end, (host, port))
        })
        .collect();
    if masters.is_empty() {
        return Err(std::io::Error::other("it knows of no slot").into());
    }
    Ok(masters)
}

/// `CLUSTER SLOTS`: `[[start, end, [host, port, id, …], replicas…], …]`; entries that do not
/// read so are skipped.
fn parse_slots(answer: &Value) -> Vec<(u16, u16, Address)> {
    let Value::Array(ranges) = answer else {
        return Vec::new();
    };
    ranges
        .iter()
        .filter_map(|range| {
            let Value::Array(range) = range else {
                return None;
            };
            let number = |value: &Value| match value {
                Value::Int(n) => u16::try_from(*n).ok(),
                _ => None,
            };
            let start = number(range.first()?)?;
            let end = number(range.get(1)?)?;
            let Value::Array(master) = range.get(2)? else {
                return None;
            };
            let host = match master.first()? {
                Value::BulkString(host) => String::from_utf8_lossy(host).into_owned(),
                Value::SimpleString(host) => host.clone(),
                _ => return None,
            };
            let port = number(master.get(1)?)?;
            Some((start, end, (host, port)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slots_are_those_redis_computes() {
        // The CRC16 check value, and slots from the Redis Cluster specification and
        // `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"hello"), 866);
        assert_eq!(
            key_slot(b"{user1000}.following"),
            key_slot(b"{user1000}.followers")
        );
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        // An empty hash tag hashes the whole name.
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % SLOTS);
    }

    #[test]
    fn slots_are_read_from_cluster_slots() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let answer = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                Value::Array(vec![bulk("127.0.0.1"), Value::Int(7000), bulk("id1")]),
                Value::Array(vec![bulk("127.0.0.1"), Value::Int(7003), bulk("id4")]),
            ]),
            Value::Array(vec![Value::Int(5461), Value::Int(10922)]),
        ]);
        assert_eq!(
            parse_slots(&answer),
            [(0, 5460, ("127.0.0.1".to_owned(), 7000))]
        );
    }

    #[test]
    fn seeds_are_comma_separated_urls() {
        let seeds = seeds("redis://127.0.0.1:7000, redis://127.0.0.1:7001,").unwrap();
        assert_eq!(
            seeds.iter().filter_map(address_of).collect::<Vec<_>>(),
            [
                ("127.0.0.1".to_owned(), 7000),
                ("127.0.0.1".to_owned(), 7001)
            ]
        );
    }
}
