//! The merge of a partitioned bus (`TIDINGS_BUS_PARTITIONS` > 0): puts the lanes an
//! instance follows back together, batch by batch, in `seq` order.
//!
//! On a partitioned bus an instance sees only part of the stream, so a gap in `seq` means
//! nothing by itself; the batch's clock says which lanes had events, and how many. A batch
//! is complete when every lane the instance follows that its clock lists has come with as
//! many events; complete batches are delivered in order and the delivered seq moves to
//! their `upto` even when none of their events were for this instance. What does not come
//! in time (a lost data message, a lost clock, data on a lane subscribed a moment ago) is a
//! gap, which the hub reads from the database. Pure: time and the delivered seq are given.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::events::Event;
use crate::events::bus::{Clock, Data};

/// The partitioned batches not yet delivered.
#[derive(Debug)]
pub(super) struct Merge {
    /// By their `upto`.
    pending: BTreeMap<i64, Pending>,
    /// How long a batch's missing messages are waited for.
    wait: Duration,
}

/// What came of one batch.
#[derive(Debug)]
struct Pending {
    from: i64,
    /// The clock's lanes and their counts, and when it came.
    clock: Option<(BTreeMap<String, u32>, Instant)>,
    /// Each lane's events, as its data message brought them.
    data: HashMap<String, Vec<Event>>,
    /// When its first message came.
    since: Instant,
}

/// What the hub is to do next.
#[derive(Debug, PartialEq)]
pub(super) enum Step {
    /// Route these events (in seq order; maybe none for this instance) and move the
    /// delivered seq to `upto`.
    Deliver { events: Vec<Event>, upto: i64 },
    /// Read the database from the delivered seq up to `upto`, then
    /// [`Merge::forget_through`] it.
    Gap { upto: i64 },
    /// Nothing until the next message, or until this instant.
    Wait(Option<Instant>),
}

impl Merge {
    pub(super) fn new(wait: Duration) -> Merge {
        Merge {
            pending: BTreeMap::new(),
            wait,
        }
    }

    /// Takes a lane's data of a batch (a repeat replaces it: the same events).
    pub(super) fn data(&mut self, data: Data, delivered: i64, now: Instant) {
        if data.upto <= delivered {
            return;
        }
        self.batch(data.from, data.upto, now)
            .data
            .insert(data.lane, data.events);
    }

    /// Takes a batch's clock (a repeat changes nothing).
    pub(super) fn clock(&mut self, clock: Clock, delivered: i64, now: Instant) {
        if clock.upto <= delivered {
            return;
        }
        let batch = self.batch(clock.from, clock.upto, now);
        if batch.clock.is_none() {
            batch.clock = Some((clock.lanes, now));
        }
    }

    fn batch(&mut self, from: i64, upto: i64, now: Instant) -> &mut Pending {
        self.pending.entry(upto).or_insert_with(|| Pending {
            from,
            clock: None,
            data: HashMap::new(),
            since: now,
        })
    }

    /// Drops what a read of the database up to `seq` covered.
    pub(super) fn forget_through(&mut self, seq: i64) {
        self.pending = self.pending.split_off(&(seq + 1));
    }

    /// Drops the first batch waiting: the database did not have what it needed (a batch of
    /// another deployment on the same channels), and waiting on would read it again and
    /// again.
    pub(super) fn forget_first(&mut self) {
        if let Some((&upto, _)) = self.pending.first_key_value() {
            self.forget_through(upto);
        }
    }

    /// Drops what came of a lane the hub stopped following: no batch waits for it any
    /// more, and its events are for nobody here. A batch left with nothing is dropped
    /// too (its clock, if it comes, makes it again).
    pub(super) fn forget_lane(&mut self, lane: &str) {
        self.pending.retain(|_, batch| {
            batch.data.remove(lane);
            batch.clock.is_some() || !batch.data.is_empty()
        });
    }

    /// Batches waiting.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.pending.len()
    }

    /// The next step, the hub having delivered everything up to `delivered` and following
    /// the lanes for which `follows` is true.
    pub(super) fn next(
        &mut self,
        delivered: i64,
        follows: impl Fn(&str) -> bool,
        now: Instant,
    ) -> Step {
        self.forget_through(delivered);
        let Some((&upto, first)) = self.pending.first_key_value() else {
            return Step::Wait(None);
        };
        let Some((lanes, clocked)) = &first.clock else {
            // Its clock has not come: lost, or on its way.
            let deadline = first.since + self.wait;
            return if now >= deadline {
                Step::Gap { upto }
            } else {
                Step::Wait(Some(deadline))
            };
        };
        if first.from < delivered {
            // It overlaps what was read from the database (a batch published again).
            return Step::Gap { upto };
        }
        if first.from > delivered {
            // Nothing came of the batches before it yet: lost, or on their way.
            let deadline = first.since + self.wait;
            return if now >= deadline {
                Step::Gap { upto: first.from }
            } else {
                Step::Wait(Some(deadline))
            };
        }
        let complete = lanes.iter().all(|(lane, count)| {
            !follows(lane)
                || first
                    .data
                    .get(lane)
                    .is_some_and(|events| events.len() == *count as usize)
        });
        if !complete {
            let deadline = *clocked + self.wait;
            return if now >= deadline {
                Step::Gap { upto }
            } else {
                Step::Wait(Some(deadline))
            };
        }
        let Some(batch) = self.pending.remove(&upto) else {
            return Step::Wait(None);
        };
        let mut events: Vec<Event> = batch.data.into_values().flatten().collect();
        events.sort_by_key(|e| e.seq);
        // A user-and-staff event comes on its user's lane and on staff's.
        events.dedup_by_key(|e| e.seq);
        Step::Deliver { events, upto }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Audience;
    use crate::events::Topic;

    const WAIT: Duration = Duration::from_millis(50);

    fn event(seq: i64) -> Event {
        Event {
            seq,
            topic: Topic::Orders,
            kind: "order.placed".into(),
            audience: Audience::Staff,
            at: chrono::Utc::now(),
            data: serde_json::Value::Null,
        }
    }

    fn data(from: i64, upto: i64, lane: &str, seqs: &[i64]) -> Data {
        Data {
            from,
            upto,
            lane: lane.into(),
            events: seqs.iter().copied().map(event).collect(),
        }
    }

    fn clock(from: i64, upto: i64, lanes: &[(&str, u32)]) -> Clock {
        Clock {
            from,
            upto,
            lanes: lanes.iter().map(|(l, n)| ((*l).to_owned(), *n)).collect(),
        }
    }

    /// Follows `all`, `staff` and `u:1`.
    fn follows(lane: &str) -> bool {
        matches!(lane, "all" | "staff" | "u:1")
    }

    fn delivered(step: Step) -> (Vec<i64>, i64) {
        match step {
            Step::Deliver { events, upto } => (events.iter().map(|e| e.seq).collect(), upto),
            other => panic!("expected a delivery, got {other:?}"),
        }
    }

    #[test]
    fn messages_in_any_order_make_batches_delivered_in_order() {
        let mut merge = Merge::new(WAIT);
        let now = Instant::now();
        // Batch (2, 4] comes before (0, 2], its clock before its data.
        merge.clock(clock(2, 4, &[("u:1", 1), ("all", 1)]), 0, now);
        merge.data(data(2, 4, "all", &[3]), 0, now);
        assert!(matches!(merge.next(0, follows, now), Step::Wait(Some(_))));
        merge.data(data(2, 4, "u:1", &[4]), 0, now);
        merge.data(data(0, 2, "staff", &[1, 2]), 0, now);
        merge.clock(clock(0, 2, &[("staff", 2)]), 0, now);

        assert_eq!(delivered(merge.next(0, follows, now)), (vec![1, 2], 2));
        assert_eq!(delivered(merge.next(2, follows, now)), (vec![3, 4], 4));
        assert_eq!(merge.next(4, follows, now), Step::Wait(None));
    }

    #[test]
    fn a_batch_of_lanes_not_followed_moves_the_delivered_seq_with_no_events() {
        let mut merge = Merge::new(WAIT);
        let now = Instant::now();
        merge.clock(clock(0, 3, &[("u:5", 3)]), 0, now);
        assert_eq!(delivered(merge.next(0, follows, now)), (vec![], 3));
    }

    #[test]
    fn a_lost_data_message_is_a_gap_once_waited_for() {
        let mut merge = Merge::new(WAIT);
        let now = Instant::now();
        merge.clock(clock(0, 2, &[("all", 1), ("u:1", 1)]), 0, now);
        merge.data(data(0, 2, "all", &[1]), 0, now);
        merge.data(data(2, 3, "all", &[3]), 0, now);
        merge.clock(clock(2, 3, &[("all", 1)]), 0, now);

        assert_eq!(merge.next(0, follows, now), Step::Wait(Some(now + WAIT)));
        assert_eq!(merge.next(0, follows, now + WAIT), Step::Gap { upto: 2 });
        // The database was read up to 2; the next batch goes on from there.
        merge.forget_through(2);
        assert_eq!(delivered(merge.next(2, follows, now + WAIT)), (vec![3], 3));
    }

    #[test]
    fn a_lost_clock_is_a_gap_once_waited_for() {
        let mut merge = Merge::new(WAIT);
        let now = Instant::now();
        // (0, 2]'s clock was lost; its data came.
        merge.data(data(0, 2, "all", &[1, 2]), 0, now);
        assert_eq!(merge.next(0, follows, now), Step::Wait(Some(now + WAIT)));
        merge.data(data(2, 3, "all", &[3]), 0, now);
        merge.clock(clock(2, 3, &[("all", 1)]), 0, now);
        assert_eq!(merge.next(0, follows, now), Step::Wait(Some(now + WAIT)));
        assert_eq!(merge.next(0, follows, now + WAIT), Step::Gap { upto: 2 });
        merge.forget_through(2);
        assert_eq!(delivered(merge.next(2, follows, now)), (vec![3], 3));
    }

    #[test]
    fn a_lost_batch_is_read_up_to_the_next_one_which_comes_from_the_bus() {
        let mut merge = Merge::new(WAIT);
        let now = Instant::now();
        merge.clock(clock(2, 3, &[("all", 1)]), 0, now);
        merge.data(data(2, 3, "all", &[3]), 0, now);
        assert_eq!(merge.next(0, follows, now), Step::Wait(Some(now + WAIT)));
        assert_eq!(merge.next(0, follows, now + WAIT), Step::Gap { upto: 2 });
        merge.forget_through(2);
        assert_eq!(delivered(merge.next(2, follows, now + WAIT)), (vec![3], 3));
    }

    #[test]
    fn a_lost_last_clock_is_a_gap_once_waited_for() {
        let mut merge = Merge::new(WAIT);
        let now = Instant::now();
        merge.data(data(0, 1, "u:1", &[1]), 0, now);
        assert_eq!(merge.next(0, follows, now + WAIT), Step::Gap { upto: 1 });
    }

    #[test]
    fn duplicates_are_delivered_once() {
        let mut merge = Merge::new(WAIT);
        let now = Instant::now();
        // A user-and-staff event on both lanes, a data message and a clock twice.
        merge.data(data(0, 2, "u:1", &[1]), 0, now);
        merge.data(data(0, 2, "staff", &[1, 2]), 0, now);
        merge.data(data(0, 2, "staff", &[1, 2]), 0, now);
        merge.clock(clock(0, 2, &[("staff", 2), ("u:1", 1)]), 0, now);
        merge.clock(clock(0, 2, &[("staff", 2), ("u:1", 1)]), 0, now);
        assert_eq!(delivered(merge.next(0, follows, now)), (vec![1, 2], 2));
        // Late repeats of what was delivered are dropped.
        merge.data(data(0, 2, "u:1", &[1]), 2, now);
        merge.clock(clock(0, 2, &[("staff", 2), ("u:1", 1)]), 2, now);
        assert_eq!(merge.next(2, follows, now), Step::Wait(None));
        assert_eq!(merge.len(), 0);
    }

    #[test]
    fn a_lane_removed_while_a_batch_waits_for_it_completes_the_batch() {
        let mut merge = Merge::new(WAIT);
        let now = Instant::now();
        let mut lanes = vec!["all", "u:2"];
        merge.clock(clock(0, 2, &[("all", 1), ("u:2", 1)]), 0, now);
        merge.data(data(0, 2, "all", &[1]), 0, now);
        assert_eq!(
            merge.next(0, |l| lanes.contains(&l), now),
            Step::Wait(Some(now + WAIT))
        );
        // The last user of u:2 left a while ago: the hub stops following it.
        lanes.retain(|l| *l != "u:2");
        merge.forget_lane("u:2");
        assert_eq!(
            delivered(merge.next(0, |l| lanes.contains(&l), now)),
            (vec![1], 2)
        );
        assert_eq!(merge.len(), 0);
    }

    #[test]
    fn what_came_of_a_removed_lane_is_dropped_not_delivered() {
        let mut merge = Merge::new(WAIT);
        let now = Instant::now();
        let follows_all = |lane: &str| lane == "all";
        // u:2's data of two batches whose clocks have not come; one has all's data too.
        merge.data(data(0, 2, "u:2", &[1]), 0, now);
        merge.data(data(0, 2, "all", &[2]), 0, now);
        merge.data(data(2, 3, "u:2", &[3]), 0, now);
        assert_eq!(merge.len(), 2);

        merge.forget_lane("u:2");

        assert_eq!(merge.len(), 1, "a batch left with nothing is not kept");
        merge.clock(clock(0, 2, &[("all", 1), ("u:2", 1)]), 0, now);
        assert_eq!(delivered(merge.next(0, follows_all, now)), (vec![2], 2));
        merge.clock(clock(2, 3, &[("u:2", 1)]), 2, now);
        assert_eq!(delivered(merge.next(2, follows_all, now)), (vec![], 3));
        assert_eq!(merge.len(), 0);
    }

    #[test]
    fn a_lane_followed_mid_stream_blocks_until_its_data_or_the_database_covers_it() {
        let mut merge = Merge::new(WAIT);
        let now = Instant::now();
        let mut lanes = vec!["all"];
        // (0, 1] before u:2 is followed: complete without it.
        merge.clock(clock(0, 1, &[("u:2", 1)]), 0, now);
        assert_eq!(
            delivered(merge.next(0, |l| lanes.contains(&l), now)),
            (vec![], 1)
        );
        // A user of u:2 connects: (1, 2] lists u:2, whose data was published before the
        // subscription took, and never comes.
        lanes.push("u:2");
        merge.clock(clock(1, 2, &[("u:2", 1)]), 1, now);
        assert_eq!(
            merge.next(1, |l| lanes.contains(&l), now),
            Step::Wait(Some(now + WAIT))
        );
        assert_eq!(
            merge.next(1, |l| lanes.contains(&l), now + WAIT),
            Step::Gap { upto: 2 }
        );
        merge.forget_through(2);
        // From then on its data comes.
        merge.data(data(2, 3, "u:2", &[3]), 2, now);
        merge.clock(clock(2, 3, &[("u:2", 1)]), 2, now);
        assert_eq!(
            delivered(merge.next(2, |l| lanes.contains(&l), now)),
            (vec![3], 3)
        );
    }
}
