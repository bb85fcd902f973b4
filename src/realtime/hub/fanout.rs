//! The fan-out: deliveries routed and not yet pushed, made a few at a time so that the
//! hub's thread can let others run, with an event routed meanwhile joining the pushes not
//! yet made; and what each push did, counted.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::realtime::Transport;
use crate::realtime::frames::Frame;
use crate::realtime::mailbox::{Mailbox, Pushed};

/// The delivery lag histograms, by transport, of what the hub writes itself.
pub(super) struct Lag(pub(super) [metrics::Histogram; Transport::ALL.len()]);

impl Lag {
    pub(super) fn histograms() -> Lag {
        Lag(Transport::ALL.map(|transport| {
            metrics::histogram!("tidings_delivery_lag_seconds", "transport" => transport.label())
        }))
    }
}

/// What one routing step queued or wrote, counted once into [`HubStats`].
#[derive(Default)]
pub(super) struct Tally {
    pub(super) deliveries: u64,
    /// Deliveries the hub wrote to the socket itself, by transport.
    pub(super) written: [u64; Transport::ALL.len()],
    pub(super) slow: u64,
}

impl Tally {
    pub(super) fn count(&mut self, pushed: Pushed, frames: usize) {
        match pushed {
            Pushed::Written(transport) => {
                self.deliveries += frames as u64;
                self.written[transport as usize] += frames as u64;
            }
            Pushed::Partly(transport, written) => {
                self.deliveries += frames as u64;
                self.written[transport as usize] += written as u64;
            }
            Pushed::Queued => self.deliveries += frames as u64,
            Pushed::Overflowed => self.slow += 1,
            Pushed::Closed => {}
        }
    }
}

/// Deliveries routed but not yet pushed: the fan-out in progress. An event routed while
/// it runs joins the push of each receiving connection it has not reached yet, so under
/// load the connections at the end of a long fan-out get both events in one write instead
/// of waiting for a second fan-out. A push made is dropped at once, with the frames only it
/// held, so a hub that never catches up holds no more than one push per connection.
#[derive(Debug, Default)]
pub(super) struct Pending {
    /// The pushes still to make, in order: a connection and its frames.
    pub(super) pushes: VecDeque<(Arc<Mailbox>, Arc<[Frame]>)>,
    /// Pushes made since the hub last caught up: the number of `pushes[0]`.
    pub(super) made: usize,
    /// The number of each connection's last push, by the mailbox's address.
    ///
    /// An address names one mailbox for as long as its entry can match: an entry matches
    /// only while its push is still queued (`number >= made`), and the queued push holds
    /// the mailbox's `Arc`, so the allocation cannot be freed and reused by another
    /// mailbox meanwhile. A stale entry (its push made) never matches, even if a new
    /// mailbox comes to live at that address; all of them go when the queue empties.
    /// Addresses rather than ids keep the hot path free of a lookup per target.
    pub(super) last_push: HashMap<usize, usize>,
}

impl Pending {
    /// Queues `frames` for each of `targets`, after whatever is queued for it already.
    pub(super) fn add(&mut self, frames: Vec<Frame>, targets: Vec<Arc<Mailbox>>) {
        let fresh: Arc<[Frame]> = frames.into();
        // What each pending push's frames became with these after them, by address (each
        // is held by a queued push for the whole call, so no two share one).
        let mut merged: HashMap<usize, Arc<[Frame]>> = HashMap::new();
        for mailbox in targets {
            let key = Arc::as_ptr(&mailbox) as usize;
            match self.last_push.get(&key) {
                Some(&number) if number >= self.made => {
                    let frames = &mut self.pushes[number - self.made].1;
                    let joined = merged
                        .entry(Arc::as_ptr(frames).cast::<Frame>() as usize)
                        .or_insert_with(|| frames.iter().chain(fresh.iter()).cloned().collect());
                    *frames = joined.clone();
                }
                _ => {
                    self.last_push.insert(key, self.made + self.pushes.len());
                    self.pushes.push_back((mailbox, fresh.clone()));
                }
            }
        }
    }

    /// Makes up to `count` of the pushes; false once none is left.
    pub(super) fn push_some(&mut self, count: usize, tally: &mut Tally, lag: &Lag) -> bool {
        for _ in 0..count {
            let Some((mailbox, frames)) = self.pushes.pop_front() else {
                break;
            };
            self.made += 1;
            let pushed = mailbox.push_all(&frames);
            if let Pushed::Written(transport) | Pushed::Partly(transport, _) = pushed {
                lag.0[transport as usize].record(frames[0].lag_seconds());
            }
            tally.count(pushed, frames.len());
        }
        if self.pushes.is_empty() {
            self.made = 0;
            self.last_push.clear();
            return false;
        }
        if self.last_push.len() > 2 * self.pushes.len() + 4096 {
            // Connections whose pushes are all made need no entry.
            let made = self.made;
            self.last_push.retain(|_, number| *number >= made);
        }
        true
    }
}
