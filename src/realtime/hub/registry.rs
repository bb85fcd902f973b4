//! The registry: which connections this instance holds, and an index of them by topic and
//! by who may receive what, so that finding an event's receivers never scans every
//! connection. A [`Registration`] is a connection's place in it; dropping it unregisters.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use uuid::Uuid;

use super::Hub;
use crate::events::{Audience, Event, Topic};
use crate::realtime::Transport;
use crate::realtime::mailbox::Mailbox;

/// Identifies one connection in the hub.
pub type ConnId = u64;

/// What the hub knows of a connection.
#[derive(Debug)]
pub(super) struct Conn {
    pub(super) user_id: Uuid,
    pub(super) is_staff: bool,
    /// The token version the connection authenticated with; revocations above it close it.
    pub(super) token_version: AtomicI64,
    pub(super) mailbox: Arc<Mailbox>,
    pub(super) topics: Vec<Topic>,
    pub(super) transport: Transport,
}

/// The connections subscribed to one topic, indexed by who may receive what.
#[derive(Debug, Default)]
pub(super) struct TopicIndex {
    pub(super) everyone: HashMap<ConnId, Arc<Mailbox>>,
    pub(super) staff: HashMap<ConnId, Arc<Mailbox>>,
    pub(super) by_user: HashMap<Uuid, HashMap<ConnId, (Arc<Mailbox>, bool)>>,
}

#[derive(Debug, Default)]
pub(super) struct Registry {
    pub(super) next_id: ConnId,
    pub(super) conns: HashMap<ConnId, Conn>,
    pub(super) per_user: HashMap<Uuid, Vec<ConnId>>,
    pub(super) topics: [TopicIndex; Topic::SUBSCRIBABLE.len()],
}

pub(super) fn slot(topic: Topic) -> usize {
    topic.index().expect("a subscribable topic")
}

/// A connection's place in the hub; dropping it unregisters the connection.
#[derive(Debug)]
pub struct Registration {
    pub(super) hub: Arc<Hub>,
    pub(super) id: ConnId,
    pub(super) mailbox: Arc<Mailbox>,
}

impl Registration {
    pub fn mailbox(&self) -> &Arc<Mailbox> {
        &self.mailbox
    }

    /// Starts live delivery of these topics (those not yet subscribed). Returns the seq
    /// from which delivery is live: every later event of these topics will be queued, and
    /// earlier ones are the caller's to replay from the database.
    pub fn subscribe(&self, topics: &[Topic]) -> i64 {
        let shard = self.hub.shard_of_conn(self.id);
        let mut registry = shard.registry.write();
        let live_from = shard.routed().max(self.hub.live_at_least());
        let Registry {
            conns,
            topics: indexes,
            ..
        } = &mut *registry;
        let Some(conn) = conns.get_mut(&self.id) else {
            return live_from;
        };
        for topic in topics {
            if conn.topics.contains(topic) {
                continue;
            }
            // What an earlier subscription to the topic left queued is the caller's replay
            // to send (or was unsubscribed from): only what comes after this is live.
            conn.mailbox.skip_through(*topic, live_from);
            let index = &mut indexes[slot(*topic)];
            index.everyone.insert(self.id, conn.mailbox.clone());
            if conn.is_staff {
                index.staff.insert(self.id, conn.mailbox.clone());
            }
            index
                .by_user
                .entry(conn.user_id)
                .or_default()
                .insert(self.id, (conn.mailbox.clone(), conn.is_staff));
            conn.topics.push(*topic);
        }
        live_from
    }

    /// Stops delivery of these topics.
    pub fn unsubscribe(&self, topics: &[Topic]) {
        let mut registry = self.hub.shard_of_conn(self.id).registry.write();
        let Registry {
            conns,
            topics: indexes,
            ..
        } = &mut *registry;
        let Some(conn) = conns.get_mut(&self.id) else {
            return;
        };
        for topic in topics {
            remove_from(&mut indexes[slot(*topic)], self.id, conn.user_id);
            // Nothing of the topic still queued goes out after the unsubscription.
            conn.mailbox.skip_through(*topic, i64::MAX);
        }
        conn.topics.retain(|t| !topics.contains(t));
    }

    /// The topics this connection receives.
    pub fn topics(&self) -> Vec<Topic> {
        let registry = self.hub.shard_of_conn(self.id).registry.read();
        registry
            .conns
            .get(&self.id)
            .map(|c| c.topics.clone())
            .unwrap_or_default()
    }

    /// A fresh token was presented in-band: revocations up to its version spare it.
    pub fn set_token_version(&self, version: i64) {
        let registry = self.hub.shard_of_conn(self.id).registry.read();
        if let Some(conn) = registry.conns.get(&self.id) {
            conn.token_version.store(version, Ordering::Release);
        }
    }
}

/// The mailboxes of the connections entitled to `event` (and to the run of events for
/// everyone on its topic that it begins).
pub(super) fn receivers(registry: &Registry, event: &Event) -> Vec<Arc<Mailbox>> {
    let index = &registry.topics[slot(event.topic)];
    let mut targets = Vec::new();
    match event.audience {
        Audience::Everyone => targets.extend(index.everyone.values().cloned()),
        Audience::Staff => targets.extend(index.staff.values().cloned()),
        Audience::User(user) => {
            if let Some(conns) = index.by_user.get(&user) {
                targets.extend(conns.values().map(|(mailbox, _)| mailbox.clone()));
            }
        }
        Audience::UserAndStaff(user) => {
            targets.extend(index.staff.values().cloned());
            if let Some(conns) = index.by_user.get(&user) {
                // The user's staff connections were served with the staff.
                targets.extend(
                    conns
                        .values()
                        .filter(|(_, is_staff)| !is_staff)
                        .map(|(mailbox, _)| mailbox.clone()),
                );
            }
        }
    }
    targets
}

pub(super) fn remove_from(index: &mut TopicIndex, id: ConnId, user: Uuid) {
    index.everyone.remove(&id);
    index.staff.remove(&id);
    if let Some(conns) = index.by_user.get_mut(&user) {
        conns.remove(&id);
        if conns.is_empty() {
            index.by_user.remove(&user);
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut registry = self.hub.shard_of_conn(self.id).registry.write();
        let Some(conn) = registry.conns.remove(&self.id) else {
            return;
        };
        for topic in &conn.topics {
            remove_from(&mut registry.topics[slot(*topic)], self.id, conn.user_id);
        }
        let mut last = false;
        if let Some(ids) = registry.per_user.get_mut(&conn.user_id) {
            ids.retain(|id| *id != self.id);
            if ids.is_empty() {
                registry.per_user.remove(&conn.user_id);
                self.hub.presence_changed.notify_one();
                last = true;
            }
        }
        if self.hub.config.partitions > 0 && (last || conn.is_staff) {
            self.hub.unfollow(conn.user_id, last, conn.is_staff);
        }
    }
}
