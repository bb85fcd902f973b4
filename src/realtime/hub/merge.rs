//! The merge of a partitioned bus (`TIDINGS_BUS_PARTITIONS` > 0): puts the lanes an
//! instance follows back together, batch by batch, in `seq` order.
//!
//! On a partitioned bus an instance sees only part of the stream, so a gap in `seq` means
//! nothing by itself. Each data message carries its batch's clock (the lanes that had
//! events, and how many) and the chain (where each lane's previous batch ended). A batch
//! is complete when every lane the instance follows that it lists has come with as many
//! events; it may go once the chain says that every lane the instance follows had its
//! last batch before it at or below the delivered seq, which then moves to its `upto`. The
//! batches between that had none of this instance's lanes are never seen, and need not
//! be. A clock says the same of the whole stream up to its `upto`, and moves the delivered
//! seq there. What does not come in time (a lost data message, data on a lane subscribed a
//! moment ago) is a gap, which the hub reads from the database. Pure: time and the
//! delivered seq are given.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::events::Event;
use crate::events::bus::{self, Clock, Data};

/// The partitioned batches not yet delivered.
#[derive(Debug)]
pub(super) struct Merge {
    /// By their `upto`.
    pending: BTreeMap<i64, Pending>,
    /// The latest clock not yet passed, and when it came.
    clock: Option<(Clock, Instant)>,
    /// How long a batch's missing messages are waited for.
    wait: Duration,
}

/// What came of one batch.
#[derive(Debug)]
struct Pending {
    from: i64,
    /// The batch's lanes and their counts, and the chain, as its first message brought
    /// them (every message of a batch brings the same).
    lanes: BTreeMap<String, u32>,
    back: Vec<i64>,
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
            clock: None,
            wait,
        }
    }

    /// Takes a lane's data of a batch (a repeat replaces it: the same events).
    pub(super) fn data(&mut self, data: Data, delivered: i64, now: Instant) {
        if data.upto <= delivered {
            return;
        }
        let Data {
            from,
            upto,
            lane,
            lanes,
            back,
            events,
        } = data;
        self.pending
            .entry(upto)
            .or_insert_with(|| Pending {
                from,
                lanes,
                back,
                data: HashMap::new(),
                since: now,
            })
            .data
            .insert(lane, events);
    }

    /// Takes a clock (the latest counts: it says what the ones before it said, and more).
    pub(super) fn clock(&mut self, clock: Clock, delivered: i64, now: Instant) {
        if clock.upto <= delivered
            || self
                .clock
                .as_ref()
                .is_some_and(|(latest, _)| latest.upto >= clock.upto)
        {
            return;
        }
        self.clock = Some((clock, now));
    }

    /// Drops what a read of the database up to `seq` covered.
    pub(super) fn forget_through(&mut self, seq: i64) {
        self.pending = self.pending.split_off(&(seq + 1));
        if self
            .clock
            .as_ref()
            .is_some_and(|(clock, _)| clock.upto <= seq)
        {
            self.clock = None;
        }
    }

    /// Drops the first batch or clock waiting: the database did not have what it needed
    /// (a batch of another deployment on the same channels), and waiting on would read it
    /// again and again.
    pub(super) fn forget_first(&mut self) {
        let batch = self.pending.first_key_value().map(|(&upto, _)| upto);
        let clock = self.clock.as_ref().map(|(clock, _)| clock.upto);
        if let Some(upto) = batch.into_iter().chain(clock).min() {
            self.forget_through(upto);
        }
    }

    /// Drops what came of a lane the hub stopped following: no batch waits for it any
    /// more, and its events are for nobody here. A batch left with nothing is dropped
    /// too (it had nothing for the lanes still followed).
    pub(super) fn forget_lane(&mut self, lane: &str) {
        self.pending.retain(|_, batch| {
            batch.data.remove(lane);
            !batch.data.is_empty()
        });
    }

    /// Batches waiting.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.pending.len()
    }

    /// The next step, the hub having delivered everything up to `delivered` and following
    /// the lanes of `followed`.
    pub(super) fn next<T>(
        &mut self,
        delivered: i64,
        followed: &BTreeMap<String, T>,
        now: Instant,
    ) -> Step {
        self.forget_through(delivered);
        // Where every lane followed had its last batch before `at`, by `back`, is
        // delivered: nothing of them is missing before it.
        let chained = |at: i64, back: &[i64]| {
            followed
                .keys()
                .all(|lane| bus::chained(at, back, lane) <= delivered)
        };
        let first = self.pending.first_key_value();
        // A clock before the first batch waiting goes first.
        if let Some((clock, since)) = &self.clock
            && first.is_none_or(|(&upto, _)| clock.upto < upto)
        {
            if chained(clock.upto, &clock.back) {
                return Step::Deliver {
                    events: Vec::new(),
                    upto: clock.upto,
                };
            }
            // A batch of a lane followed, before the clock, has not come: lost, or on
            // its way.
            return self.waited(*since, now, clock.upto);
        }
        let Some((&upto, first)) = first else {
            return Step::Wait(None);
        };
        if first.from < delivered {
            // It overlaps what was read from the database (a batch published again).
            return Step::Gap { upto };
        }
        if !chained(first.from, &first.back) {
            // A batch of a lane followed, before this one, has not come: lost, or on
            // its way.
            return self.waited(first.since, now, first.from);
        }
        let complete = first.lanes.iter().all(|(lane, count)| {
            !followed.contains_key(lane)
                || first
                    .data
                    .get(lane)
                    .is_some_and(|events| events.len() == *count as usize)
        });
        if !complete {
            return self.waited(first.since, now, upto);
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

    /// A gap up to `upto` once what came at `since` has waited long enough.
    fn waited(&self, since: Instant, now: Instant, upto: i64) -> Step {
        let deadline = since + self.wait;
        if now >= deadline {
            Step::Gap { upto }
        } else {
            Step::Wait(Some(deadline))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Audience;
    use crate::events::Topic;

    const WAIT: Duration = Duration::from_millis(50);

    /// The lanes of the tests' chains, in chain order (K = 3).
    const LANES: [&str; 5] = ["all", "staff", "u:0", "u:1", "u:2"];

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

    /// Where each lane's last batch ended: the lanes named, or `at` (nothing known).
    fn back(at: i64, ends: &[(&str, i64)]) -> Vec<i64> {
        LANES
            .iter()
            .map(|lane| {
                let end = ends.iter().find(|(l, _)| l == lane).map_or(at, |(_, e)| *e);
                at - end
            })
            .collect()
    }

    /// Lane `lane`'s events `seqs` of the batch `(from, upto]`, which had `lanes`, and
    /// whose lanes' last batches ended at `ends`.
    fn data(
        (from, upto): (i64, i64),
        lane: &str,
        seqs: &[i64],
        lanes: &[(&str, u32)],
        ends: &[(&str, i64)],
    ) -> Data {
        Data {
            from,
            upto,
            lane: lane.into(),
            lanes: lanes.iter().map(|(l, n)| ((*l).to_owned(), *n)).collect(),
            back: back(from, ends),
            events: seqs.iter().copied().map(event).collect(),
        }
    }

    fn clock(upto: i64, ends: &[(&str, i64)]) -> Clock {
        Clock {
            upto,
            back: back(upto, ends),
        }
    }

    fn following(lanes: &[&str]) -> BTreeMap<String, ()> {
        lanes.iter().map(|l| ((*l).to_owned(), ())).collect()
    }

    /// Every lane's last batch ended at or before 0.
    const FRESH: [(&str, i64); 5] = [("all", 0), ("staff", 0), ("u:0", 0), ("u:1", 0), ("u:2", 0)];

    /// With `base`'s ends changed by `ends`.
    fn ends<'a>(base: &[(&'a str, i64)], ends: &[(&'a str, i64)]) -> Vec<(&'a str, i64)> {
        base.iter()
            .map(|(lane, end)| {
                let end = ends
                    .iter()
                    .find(|(l, _)| l == lane)
                    .map_or(*end, |(_, e)| *e);
                (*lane, end)
            })
            .collect()
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
        let lanes = following(&["all", "staff", "u:1"]);
        // Batch (2, 4] comes before (0, 2], its lane all before its lane u:1; its chain
        // says staff's last batch ended at 2.
        let second = ends(&FRESH, &[("staff", 2)]);
        let both = [("u:1", 1), ("all", 1)];
        merge.data(data((2, 4), "all", &[3], &both, &second), 0, now);
        assert_eq!(merge.next(0, &lanes, now), Step::Wait(Some(now + WAIT)));
        merge.data(data((2, 4), "u:1", &[4], &both, &second), 0, now);
        assert_eq!(
            merge.next(0, &lanes, now),
            Step::Wait(Some(now + WAIT)),
            "staff's batch before it has not come"
        );
        merge.data(
            data((0, 2), "staff", &[1, 2], &[("staff", 2)], &FRESH),
            0,
            now,
        );

        assert_eq!(delivered(merge.next(0, &lanes, now)), (vec![1, 2], 2));
        assert_eq!(delivered(merge.next(2, &lanes, now)), (vec![3, 4], 4));
        assert_eq!(merge.next(4, &lanes, now), Step::Wait(None));
    }

    #[test]
    fn batches_of_lanes_not_followed_are_never_seen_and_never_waited_for() {
        let mut merge = Merge::new(WAIT);
        let now = Instant::now();
        let lanes = following(&["all", "staff", "u:1"]);
        // (0, 3] had events of u:2 only; this instance never hears of it.
        let chain = ends(&FRESH, &[("u:2", 3)]);
        merge.data(data((3, 5), "u:1", &[4, 5], &[("u:1", 2)], &chain), 0, now);
        assert_eq!(delivered(merge.next(0, &lanes, now)), (vec![4, 5], 5));
        // A clock passes what came after with nothing for it.
        merge.clock(clock(9, &ends(&chain, &[("u:1", 5), ("u:0", 9)])), 5, now);
        assert_eq!(delivered(merge.next(5, &lanes, now)), (vec![], 9));
    }

    #[test]
    fn a_lost_data_message_is_a_gap_once_waited_for() {
        let mut merge = Merge::new(WAIT);
        let now = Instant::now();
        let lanes = following(&["all", "staff", "u:1"]);
        let both = [("all", 1), ("u:1", 1)];
        merge.data(data((0, 2), "all", &[1], &both, &FRESH), 0, now);
        let chain = ends(&FRESH, &[("all", 2), ("u:1", 2)]);
        merge.data(data((2, 3), "all", &[3], &[("all", 1)], &chain), 0, now);

        assert_eq!(merge.next(0, &lanes, now), Step::Wait(Some(now + WAIT)));
        assert_eq!(merge.next(0, &lanes, now + WAIT), Step::Gap { upto: 2 });
        // The database was read up to 2; the next batch goes on from there.
        merge.forget_through(2);
        assert_eq!(delivered(merge.next(2, &lanes, now + WAIT)), (vec![3], 3));
    }

    #[test]
    fn a_lost_batch_is_seen_in_the_chain_of_the_next_and_read_up_to_it() {
        let mut merge = Merge::new(WAIT);
        let now = Instant::now();
        let lanes = following(&["all", "staff", "u:1"]);
        // (0, 2] of u:1 was lost; (2, 3] of all says u:1's last batch ended at 2.
        let chain = ends(&FRESH, &[("u:1", 2)]);
        merge.data(data((2, 3), "all", &[3], &[("all", 1)], &chain), 0, now);
        assert_eq!(merge.next(0, &lanes, now), Step::Wait(Some(now + WAIT)));
        assert_eq!(merge.next(0, &lanes, now + WAIT), Step::Gap { upto: 2 });
        merge.forget_through(2);
        assert_eq!(delivered(merge.next(2, &lanes, now + WAIT)), (vec![3], 3));
    }

    #[test]
    fn a_lost_last_batch_is_seen_in_the_clock() {
        let mut merge = Merge::new(WAIT);
        let now = Instant::now();
        let lanes = following(&["all", "staff", "u:1"]);
        // (0, 2] of u:1 was lost, and no batch of a lane followed comes after it.
        merge.clock(clock(4, &ends(&FRESH, &[("u:1", 2), ("u:0", 4)])), 0, now);
        assert_eq!(merge.next(0, &lanes, now), Step::Wait(Some(now + WAIT)));
        assert_eq!(merge.next(0, &lanes, now + WAIT), Step::Gap { upto: 4 });
        merge.forget_through(4);
        assert_eq!(merge.next(4, &lanes, now + WAIT), Step::Wait(None));
    }

    #[test]
    fn a_clock_ahead_of_its_data_waits_for_it() {
        let mut merge = Merge::new(WAIT);
        let now = Instant::now();
        let lanes = following(&["all", "staff", "u:1"]);
        merge.clock(clock(2, &ends(&FRESH, &[("u:1", 2)])), 0, now);
        assert_eq!(merge.next(0, &lanes, now), Step::Wait(Some(now + WAIT)));
        merge.data(data((0, 2), "u:1", &[1, 2], &[("u:1", 2)], &FRESH), 0, now);
        assert_eq!(delivered(merge.next(0, &lanes, now)), (vec![1, 2], 2));
        assert_eq!(merge.next(2, &lanes, now + WAIT), Step::Wait(None));
    }

    #[test]
    fn a_publisher_that_knows_nothing_before_a_batch_makes_it_wait_for_what_came_before() {
        let mut merge = Merge::new(WAIT);
        let now = Instant::now();
        let lanes = following(&["all"]);
        // A relay taking over: its first batch's chain says every lane ended at its from.
        merge.data(data((7, 8), "all", &[8], &[("all", 1)], &[]), 0, now);
        assert_eq!(merge.next(0, &lanes, now), Step::Wait(Some(now + WAIT)));
        assert_eq!(merge.next(0, &lanes, now + WAIT), Step::Gap { upto: 7 });
        merge.forget_through(7);
        assert_eq!(delivered(merge.next(7, &lanes, now + WAIT)), (vec![8], 8));
    }

    #[test]
    fn duplicates_are_delivered_once() {
        let mut merge = Merge::new(WAIT);
        let now = Instant::now();
        let lanes = following(&["all", "staff", "u:1"]);
        // A user-and-staff event on both lanes, a data message and a clock twice.
        let both = [("staff", 2), ("u:1", 1)];
        merge.data(data((0, 2), "u:1", &[1], &both, &FRESH), 0, now);
        merge.data(data((0, 2), "staff", &[1, 2], &both, &FRESH), 0, now);
        merge.data(data((0, 2), "staff", &[1, 2], &both, &FRESH), 0, now);
        let after = ends(&FRESH, &[("staff", 2), ("u:1", 2)]);
        merge.clock(clock(2, &after), 0, now);
        merge.clock(clock(2, &after), 0, now);
        assert_eq!(delivered(merge.next(0, &lanes, now)), (vec![1, 2], 2));
        // Late repeats of what was delivered are dropped.
        merge.data(data((0, 2), "u:1", &[1], &both, &FRESH), 2, now);
        merge.clock(clock(2, &after), 2, now);
        assert_eq!(merge.next(2, &lanes, now), Step::Wait(None));
        assert_eq!(merge.len(), 0);
    }

    #[test]
    fn a_batch_published_again_over_what_was_delivered_is_read_at_once() {
        let mut merge = Merge::new(WAIT);
        let now = Instant::now();
        let lanes = following(&["all"]);
        merge.data(data((3, 6), "all", &[4, 5, 6], &[("all", 3)], &[]), 4, now);
        assert_eq!(merge.next(4, &lanes, now), Step::Gap { upto: 6 });
    }

    #[test]
    fn a_lane_removed_while_a_batch_waits_for_it_completes_the_batch() {
        let mut merge = Merge::new(WAIT);
        let now = Instant::now();
        let mut lanes = following(&["all", "u:2"]);
        let both = [("all", 1), ("u:2", 1)];
        merge.data(data((0, 2), "all", &[1], &both, &FRESH), 0, now);
        assert_eq!(merge.next(0, &lanes, now), Step::Wait(Some(now + WAIT)));
        // The last user of u:2 left a while ago: the hub stops following it.
        lanes.remove("u:2");
        merge.forget_lane("u:2");
        assert_eq!(delivered(merge.next(0, &lanes, now)), (vec![1], 2));
        assert_eq!(merge.len(), 0);
    }

    #[test]
    fn what_came_of_a_removed_lane_is_dropped_not_delivered() {
        let mut merge = Merge::new(WAIT);
        let now = Instant::now();
        let lanes = following(&["all"]);
        // u:2's data of two batches; one has all's data too.
        let both = [("all", 1), ("u:2", 1)];
        merge.data(data((0, 2), "u:2", &[1], &both, &FRESH), 0, now);
        merge.data(data((0, 2), "all", &[2], &both, &FRESH), 0, now);
        let chain = ends(&FRESH, &[("all", 2), ("u:2", 2)]);
        merge.data(data((2, 3), "u:2", &[3], &[("u:2", 1)], &chain), 0, now);
        assert_eq!(merge.len(), 2);

        merge.forget_lane("u:2");

        assert_eq!(merge.len(), 1, "a batch left with nothing is not kept");
        assert_eq!(delivered(merge.next(0, &lanes, now)), (vec![2], 2));
        assert_eq!(merge.next(2, &lanes, now), Step::Wait(None));
    }

    #[test]
    fn a_lane_followed_mid_stream_blocks_until_its_data_or_the_database_covers_it() {
        let mut merge = Merge::new(WAIT);
        let now = Instant::now();
        let mut lanes = following(&["all"]);
        // (0, 1] had only u:2's events, before u:2 was followed: never seen. A user of
        // u:2 connects; (1, 2] of all says u:2's last batch ended at 1.
        lanes.insert("u:2".into(), ());
        let chain = ends(&FRESH, &[("u:2", 1)]);
        merge.data(data((1, 2), "all", &[2], &[("all", 1)], &chain), 0, now);
        assert_eq!(merge.next(0, &lanes, now), Step::Wait(Some(now + WAIT)));
        assert_eq!(merge.next(0, &lanes, now + WAIT), Step::Gap { upto: 1 });
        merge.forget_through(1);
        assert_eq!(delivered(merge.next(1, &lanes, now + WAIT)), (vec![2], 2));
        // (2, 3] lists u:2, whose data was published before the subscription took, and
        // never comes.
        let chain = ends(&chain, &[("all", 2)]);
        let both = [("all", 1), ("u:2", 1)];
        merge.data(data((2, 3), "all", &[3], &both, &chain), 2, now);
        assert_eq!(merge.next(2, &lanes, now), Step::Wait(Some(now + WAIT)));
        assert_eq!(merge.next(2, &lanes, now + WAIT), Step::Gap { upto: 3 });
        merge.forget_through(3);
        // From then on its data comes.
        let chain = ends(&chain, &[("all", 3), ("u:2", 3)]);
        merge.data(data((3, 4), "u:2", &[4], &[("u:2", 1)], &chain), 3, now);
        assert_eq!(delivered(merge.next(3, &lanes, now)), (vec![4], 4));
    }

    #[test]
    fn what_the_database_does_not_have_is_forgotten_first() {
        let mut merge = Merge::new(WAIT);
        let now = Instant::now();
        let lanes = following(&["all"]);
        merge.clock(clock(999_999, &[]), 0, now);
        merge.data(
            data((999_990, 999_999), "all", &[], &[("all", 1)], &[]),
            0,
            now,
        );
        assert_eq!(
            merge.next(0, &lanes, now + WAIT),
            Step::Gap { upto: 999_990 }
        );
        merge.forget_first();
        assert_eq!(merge.len(), 0);
        assert_eq!(merge.next(0, &lanes, now + WAIT), Step::Wait(None));
    }
}
