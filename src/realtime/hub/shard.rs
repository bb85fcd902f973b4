//! A fan-out shard: a share of the instance's connections, with their index and the pushes
//! in progress to them, on a thread of its own.
//!
//! The hub puts each connection in one shard (by its user, so that a user's connections,
//! their limit and their presence stay in one place) and hands every run of events it
//! delivers to every shard, in `seq` order. Each shard finds its own receivers and writes to
//! its own connections, so a broadcast's wall time divides by the number of shards, and a
//! connection, held by one shard, gets its events in the order its shard was handed them:
//! `seq` order.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::{Mutex, RwLock};
use tokio::sync::mpsc;

use super::fanout::{Lag, Pending, Tally};
use super::registry::{Registry, receivers};
use super::{Hub, YIELD_EVERY};
use crate::events::{Audience, Event, Topic};
use crate::realtime::frames::{Frame, PreparedEvent};

/// Runs of events waiting for one shard; the hub waits when a shard's queue is full, so a
/// shard that cannot keep up slows delivery to the instance rather than growing without
/// bound (the events wait in the bus's queue, then in the database).
pub(super) const SHARD_QUEUE: usize = 64;

/// A contiguous run of events the hub hands to every shard, each event encoded for the
/// wire at most once, by the first shard that has a receiver for it.
#[derive(Debug)]
pub(super) struct Run {
    pub(super) events: Vec<Event>,
    frames: Vec<OnceLock<Frame>>,
}

impl Run {
    pub(super) fn new(events: Vec<Event>) -> Arc<Run> {
        let frames = events.iter().map(|_| OnceLock::new()).collect();
        Arc::new(Run { events, frames })
    }

    fn frames(&self, range: std::ops::Range<usize>) -> Vec<Frame> {
        range
            .map(|i| {
                self.frames[i]
                    .get_or_init(|| PreparedEvent::encode(&self.events[i]))
                    .clone()
            })
            .collect()
    }
}

/// One shard's connections and fan-out.
#[derive(Debug, Default)]
pub(super) struct Shard {
    pub(super) registry: RwLock<Registry>,
    /// What is routed and not yet pushed; only the shard's thread touches it.
    pub(super) pending: Mutex<Pending>,
    /// The last seq this shard routed: every event up to it has been routed to the
    /// connections registered here. A subscription is live from after it.
    pub(super) routed: AtomicI64,
}

impl Shard {
    pub(super) fn new(last_seq: i64) -> Shard {
        Shard {
            routed: AtomicI64::new(last_seq),
            ..Shard::default()
        }
    }

    pub(super) fn routed(&self) -> i64 {
        self.routed.load(Ordering::Acquire)
    }

    /// Finds this shard's receivers of a run and adds the pushes to the fan-out in
    /// progress, which [`Shard::push_some`] makes.
    ///
    /// The receiving connections are looked up under the registry's lock and the lock is
    /// let go before anything is pushed: pushing may write to sockets, which for thousands
    /// of connections takes long enough to hold up every connection opening meanwhile.
    fn route(&self, hub: &Hub, run: &Run) {
        let events = &run.events;
        let mut start = 0;
        while let Some(event) = events.get(start) {
            // A run of events for everyone on one topic goes to each connection at once:
            // one lock, and one write for the run.
            let len = if event.topic != Topic::System && event.audience == Audience::Everyone {
                events[start..]
                    .iter()
                    .take_while(|e| e.topic == event.topic && e.audience == Audience::Everyone)
                    .count()
            } else {
                1
            };
            let end = start + len;
            if event.topic == Topic::System {
                // What was routed before a revocation reaches its connections before it
                // closes them.
                self.push_pending(hub);
            }
            let targets = {
                let registry = self.registry.read();
                let targets = if event.topic == Topic::System {
                    hub.apply_system(&registry, event);
                    Vec::new()
                } else {
                    receivers(&registry, event)
                };
                // Set before the lock is let go: a connection that subscribes from now on is
                // live from after these events, and replays them if it asked to resume.
                self.routed.store(events[end - 1].seq, Ordering::Release);
                targets
            };
            if !targets.is_empty() {
                self.pending.lock().add(run.frames(start..end), targets);
            }
            start = end;
        }
    }

    /// Makes the next pushes of the fan-out in progress; false once none is left.
    fn push_some(&self, hub: &Hub, lag: &Lag) -> bool {
        let mut tally = Tally::default();
        let more = self.pending.lock().push_some(YIELD_EVERY, &mut tally, lag);
        hub.record(tally);
        more
    }

    /// Makes every push routed so far.
    fn push_pending(&self, hub: &Hub) {
        let lag = Lag::histograms();
        while self.push_some(hub, &lag) {
            std::thread::yield_now();
        }
    }
}

/// A shard's thread: routes each run the hub hands it, then makes the pushes a few at a
/// time, taking in the runs that arrive meanwhile (they join the pushes of the connections
/// not yet reached). Ends when the hub stops handing runs (its delivery loop ended) and
/// everything routed has been pushed.
pub(super) fn run(hub: Arc<Hub>, index: usize, mut runs: mpsc::Receiver<Arc<Run>>) {
    let shard = &hub.shards[index];
    while let Some(first) = runs.blocking_recv() {
        // Looked up per fan-out, not once: a handle taken before the process's recorder
        // is installed (it is, on first use) would record nothing for good.
        let lag = Lag::histograms();
        shard.route(&hub, &first);
        loop {
            while let Ok(more) = runs.try_recv() {
                shard.route(&hub, &more);
            }
            if !shard.push_some(&hub, &lag) {
                break;
            }
            // A fan-out to thousands takes tens of milliseconds of one core; let the
            // threads that commit and relay the next change run meanwhile.
            std::thread::yield_now();
        }
    }
}
