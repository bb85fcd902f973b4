//! Presence and acknowledgements, for the delivery worker on whichever instance runs it:
//! which users hold a live connection here (`live_users`, kept in step with the hub's
//! registry), and the highest seq each user's apps acknowledged (`live_acks`). Both are
//! written in the background, coalesced: a burst of connections or acks costs one
//! transaction, never a round trip on a connection's path.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::hub::Hub;
use crate::store::{Db, now, presence};

/// How often an instance records that it is alive; the delivery worker treats an instance
/// not seen for three times this as gone, its users as not connected.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// The least time between two writes: what arrives meanwhile is written together.
const COALESCE: Duration = Duration::from_millis(50);

/// The least time between two writes of acknowledgements. Apps acknowledge every few
/// events; what reads them decides `TIDINGS_PUSH_DELAY` (seconds) after an event, so a
/// second's lag costs nothing and turns 20 acks a second per user into one row a second.
const ACK_EVERY: Duration = Duration::from_secs(1);

/// How soon a failed write is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// This instance's presence and the acknowledgements not yet written.
#[derive(Debug)]
pub struct Presence {
    /// A fresh id per process: rows of a previous run are another instance's, pruned when
    /// their heartbeat goes stale.
    pub instance: Uuid,
    acks: parking_lot::Mutex<HashMap<Uuid, i64>>,
    acked: Notify,
}

impl Presence {
    pub fn new() -> Arc<Presence> {
        Arc::new(Presence {
            instance: Uuid::now_v7(),
            acks: parking_lot::Mutex::new(HashMap::new()),
            acked: Notify::new(),
        })
    }

    /// One of the user's apps has handled every event up to `seq` it was sent.
    pub fn ack(&self, user: Uuid, seq: i64) {
        let mut acks = self.acks.lock();
        let entry = acks.entry(user).or_insert(seq);
        *entry = (*entry).max(seq);
        drop(acks);
        metrics::counter!("tidings_acks_total").increment(1);
        self.acked.notify_one();
    }

    /// Writes presence and acknowledgements until shutdown, then the last acks, and
    /// removes this instance's presence.
    pub async fn run(self: Arc<Self>, hub: Arc<Hub>, db: Db, shutdown: CancellationToken) {
        let mut written: HashSet<Uuid> = HashSet::new();
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        let mut acks_written = tokio::time::Instant::now();
        let mut acks_due = false;
        loop {
            let mut presence_due = false;
            let ack_wait = if acks_due {
                ACK_EVERY.saturating_sub(acks_written.elapsed())
            } else {
                Duration::MAX
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.acked.notified(), if !acks_due => {
                    acks_due = true;
                    continue;
                }
                () = tokio::time::sleep(ack_wait), if acks_due => {}
                () = hub.presence_changed.notified() => presence_due = true,
                _ = heartbeat.tick() => presence_due = true,
            }
            // Gather what else comes in the next moment into the same write.
            tokio::time::sleep(COALESCE).await;
            if acks_due && acks_written.elapsed() >= ACK_EVERY {
                acks_due = false;
                acks_written = tokio::time::Instant::now();
                if !self.write_acks(&db).await {
                    acks_due = true;
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            }
            if presence_due {
                let current = hub.connected_users();
                let joined: Vec<Uuid> = current.difference(&written).copied().collect();
                let left: Vec<Uuid> = written.difference(&current).copied().collect();
                match presence::update(&db, self.instance, now(), &joined, &left).await {
                    Ok(()) => written = current,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not record who is connected");
                        // Written again on the next heartbeat or change.
                        hub.presence_changed.notify_one();
                        tokio::time::sleep(RETRY).await;
                    }
                }
            }
        }
        self.write_acks(&db).await;
        if let Err(e) = presence::remove_instance(&db, self.instance).await {
            tracing::warn!(error = %e, "could not remove this instance's presence");
        }
    }

    /// Writes the acknowledgements gathered; whether that worked (if not they are kept).
    async fn write_acks(&self, db: &Db) -> bool {
        let acks: Vec<(Uuid, i64)> = self.acks.lock().drain().collect();
        if acks.is_empty() {
            return true;
        }
        match presence::record_acks(db, &acks, now()).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "could not record acknowledgements");
                let mut pending = self.acks.lock();
                for (user, seq) in acks {
                    let entry = pending.entry(user).or_insert(seq);
                    *entry = (*entry).max(seq);
                }
                false
            }
        }
    }
}
