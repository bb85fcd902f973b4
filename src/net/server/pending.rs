//! The connections not yet authenticated ("pending"): one whose first request head the
//! accept loop is still reading, or one hyper serves (REST, keep-alive). A connection that
//! became a live stream (a WebSocket's `101`, an event stream's `200`) no longer counts.
//!
//! Why: each costs a file descriptor and memory before anyone knows who is on the other
//! end. Without a cap, idle sockets up to the open-file limit lock every new client out
//! until they time out. So a newcomer over a cap sheds the oldest pending connection that
//! has been waiting on its client for a while; if none can be shed, the accept loop waits
//! for room under the global cap (the kernel's backlog queues newcomers meanwhile), and a
//! newcomer over its address's cap is answered `503`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// The caps on pending connections; 0 is no cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Pending connections in all.
    pub total: usize,
    /// Pending connections from one address (IPv6: one /64).
    pub per_ip: usize,
    /// How long a connection must have waited on its client before it may be shed.
    pub shed_after: Duration,
}

impl Limits {
    /// Long enough for a fresh client to send its request head over a slow link.
    pub const DEFAULT_SHED_AFTER: Duration = Duration::from_secs(2);
}

/// The registry of pending connections, shared by the accept loop and the connections.
pub(crate) struct Pending {
    state: Mutex<State>,
    /// Woken when a connection leaves, for the accept loop waiting for room.
    left: Notify,
    limits: Limits,
}

struct State {
    next_id: u64,
    /// By id, which is by age: the oldest first.
    connections: BTreeMap<u64, Connection>,
    /// Connections counted against each address's cap.
    per_ip: HashMap<IpAddr, usize>,
}

struct Connection {
    /// The address it counts against; `None` for one being refused, which counts only
    /// against the global cap.
    ip: Option<IpAddr>,
    /// Since when it has been waiting on its client; `None` while the server works on
    /// its request.
    idle_since: Option<Instant>,
    /// Cancelled to shed it.
    shed: CancellationToken,
}

impl State {
    /// The oldest connection (from `from`, if given) that has waited on its client for
    /// `shed_after`.
    fn sheddable(&self, limits: &Limits, from: Option<IpAddr>) -> Option<u64> {
        let now = Instant::now();
        self.connections.iter().find_map(|(id, c)| {
            let idle_long = c.idle_since.is_some_and(|t| now - t >= limits.shed_after);
            (idle_long && (from.is_none() || c.ip == from)).then_some(*id)
        })
    }

    /// Takes a connection out, if it is still in.
    fn remove(&mut self, id: u64) -> Option<Connection> {
        let connection = self.connections.remove(&id)?;
        if let Some(ip) = connection.ip
            && let Some(count) = self.per_ip.get_mut(&ip)
        {
            *count -= 1;
            if *count == 0 {
                self.per_ip.remove(&ip);
            }
        }
        metrics::gauge!("tidings_pending_connections").set(self.connections.len() as f64);
        Some(connection)
    }

    fn shed(&mut self, id: u64) {
        if let Some(connection) = self.remove(id) {
            connection.shed.cancel();
            metrics::counter!("tidings_pending_shed_total").increment(1);
        }
    }

    /// When the first idle connection may be shed, if any is idle.
    fn next_sheddable(&self, limits: &Limits) -> Option<Instant> {
        self.connections
            .values()
            .filter_map(|c| c.idle_since)
            .min()
            .map(|t| t + limits.shed_after)
    }
}

/// What became of a newcomer.
pub(crate) enum Admission {
    /// Served.
    Admitted(Slot),
    /// Over its address's cap: to be answered `503` and closed.
    Refused(Slot),
}

impl Pending {
    pub(crate) fn new(limits: Limits) -> Arc<Pending> {
        Arc::new(Pending {
            state: Mutex::new(State {
                next_id: 0,
                connections: BTreeMap::new(),
                per_ip: HashMap::new(),
            }),
            left: Notify::new(),
            limits,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    /// Resolves once a connection may be accepted under the global cap: there is room, or
    /// an idle connection to shed for the newcomer.
    pub(crate) async fn room(&self) {
        if self.limits.total == 0 {
            return;
        }
        loop {
            let retry_at = {
                let state = self.lock();
                if state.connections.len() < self.limits.total
                    || state.sheddable(&self.limits, None).is_some()
                {
                    return;
                }
                state.next_sheddable(&self.limits)
            };
            match retry_at {
                Some(at) => {
                    let _ = tokio::time::timeout_at(at, self.left.notified()).await;
                }
                None => self.left.notified().await,
            }
        }
    }

    /// Sheds the oldest idle connection, if any, to free a file descriptor.
    pub(crate) fn shed_one(&self) {
        let mut state = self.lock();
        if let Some(id) = state.sheddable(&self.limits, None) {
            state.shed(id);
        }
    }

    /// Registers a connection just accepted from `peer`.
    pub(crate) fn admit(self: &Arc<Self>, peer: IpAddr) -> Admission {
        let ip = address_key(peer);
        let mut state = self.lock();
        let mut refused = false;
        if self.limits.per_ip > 0
            && state.per_ip.get(&ip).copied().unwrap_or(0) >= self.limits.per_ip
        {
            match state.sheddable(&self.limits, Some(ip)) {
                Some(id) => state.shed(id),
                None => refused = true,
            }
        }
        // [`Pending::room`] found room, or an idle connection to shed (if it has become
        // busy since, the cap is passed by one).
        if self.limits.total > 0
            && state.connections.len() >= self.limits.total
            && let Some(id) = state.sheddable(&self.limits, None)
        {
            state.shed(id);
        }
        let id = state.next_id;
        state.next_id += 1;
        let shed = CancellationToken::new();
        state.connections.insert(
            id,
            Connection {
                ip: (!refused).then_some(ip),
                idle_since: Some(Instant::now()),
                shed: shed.clone(),
            },
        );
        if !refused {
            *state.per_ip.entry(ip).or_default() += 1;
        }
        metrics::gauge!("tidings_pending_connections").set(state.connections.len() as f64);
        let slot = Slot {
            pending: self.clone(),
            id,
            shed,
        };
        if refused {
            metrics::counter!("tidings_pending_refused_total").increment(1);
            Admission::Refused(slot)
        } else {
            Admission::Admitted(slot)
        }
    }
}

/// The address a connection counts against: an IPv6 client usually has a whole /64.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !(u128::MAX >> 64)).into()),
        },
    }
}

/// A pending connection's place in the registry, held by its task; dropping it (or
/// [`Slot::leave`]) takes the connection out.
pub(crate) struct Slot {
    pending: Arc<Pending>,
    id: u64,
    shed: CancellationToken,
}

impl Slot {
    /// The connection now waits on its client (idle, or reading a request head).
    pub(crate) fn idle(&self) {
        self.set_idle(true);
    }

    /// The server works on the connection's request.
    pub(crate) fn busy(&self) {
        self.set_idle(false);
    }

    fn set_idle(&self, idle: bool) {
        let mut state = self.pending.lock();
        if let Some(connection) = state.connections.get_mut(&self.id) {
            connection.idle_since = match (idle, connection.idle_since) {
                (true, Some(since)) => Some(since),
                (true, None) => Some(Instant::now()),
                (false, _) => None,
            };
        }
    }

    /// The connection is no longer pending (it became a live stream).
    pub(crate) fn leave(&self) {
        if self.pending.lock().remove(self.id).is_some() {
            self.pending.left.notify_one();
        }
    }

    /// How long a refused client should wait before it tries again, in seconds: by then,
    /// its address's idle connections may be shed.
    pub(crate) fn retry_after(&self) -> u64 {
        self.pending.limits.shed_after.as_secs().max(1)
    }

    /// Resolves when the connection is shed: its task is to close it.
    pub(crate) fn shed(&self) -> WaitForCancellationFutureOwned {
        self.shed.clone().cancelled_owned()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.leave();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(address_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    fn pending(total: usize, per_ip: usize, shed_after: Duration) -> Arc<Pending> {
        Pending::new(Limits {
            total,
            per_ip,
            shed_after,
        })
    }

    const NEVER: Duration = Duration::from_secs(3600);

    fn admitted(admission: Admission) -> Slot {
        match admission {
            Admission::Admitted(slot) => slot,
            Admission::Refused(_) => panic!("refused under the cap"),
        }
    }

    #[test]
    fn a_newcomer_over_its_address_cap_sheds_the_oldest_idle_connection_or_is_refused() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        // Connections too fresh to shed: the newcomer is refused.
        let fresh = pending(0, 2, NEVER);
        let _held = [admitted(fresh.admit(ip)), admitted(fresh.admit(ip))];
        assert!(matches!(fresh.admit(ip), Admission::Refused(_)));

        let idle = pending(0, 2, Duration::ZERO);
        let first = admitted(idle.admit(ip));
        let second = admitted(idle.admit(ip));
        first.busy();
        let _third = admitted(idle.admit(ip));
        assert!(second.shed.is_cancelled(), "the idle one made room");
        assert!(!first.shed.is_cancelled(), "a busy one is kept");
        // Another address is not affected.
        let _other = admitted(idle.admit("192.0.2.2".parse().unwrap()));
    }

    #[tokio::test]
    async fn the_accept_loop_waits_for_room_under_the_global_cap() {
        use futures::FutureExt;
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let idle = pending(1, 0, Duration::ZERO);
        let _only = admitted(idle.admit(ip));
        assert!(idle.room().now_or_never().is_some(), "an idle one can go");

        let busy = pending(1, 0, NEVER);
        let only = admitted(busy.admit(ip));
        assert!(busy.room().now_or_never().is_none(), "too fresh to shed");
        only.busy();
        assert!(busy.room().now_or_never().is_none(), "busy");
        drop(only);
        assert!(busy.room().now_or_never().is_some(), "it left");
    }
}
