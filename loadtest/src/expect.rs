//! What each subscriber should have received, computed from what the tester wrote and the
//! audience rules (DESIGN.md, "Topics and who receives what"), against what it did.

use std::collections::HashMap;

use serde::Serialize;

use crate::subscriber::{Class, Spec, Sum, Tally, key};
use crate::writes::Log;

/// The expected events, by who receives them.
#[derive(Debug, Default)]
pub struct Expected {
    /// `inventory.stock_changed` of the seeded products: everyone on `inventory`.
    inventory: Sum,
    /// Order events: the owner, and every staff member.
    orders_all: Sum,
    orders_by_owner: HashMap<String, Sum>,
    /// `notification.created` of order status changes and of notes to one user: that user
    /// only.
    notifications_by_owner: HashMap<String, Sum>,
    /// Broadcasts to all: everyone on `notifications`.
    broadcasts: Sum,
    /// Generic mode: every message published.
    published: Sum,
}

impl Expected {
    /// From the workload's log and each seeded product's versions before and after: every
    /// stock change (an adjustment, an order) moved its product's version by one.
    pub fn new(log: &Log, products: &[(String, i64, i64)]) -> Expected {
        let mut expected = Expected::default();
        for (id, before, after) in products {
            for version in before + 1..=*after {
                expected.inventory.add(key(id.as_bytes(), version));
            }
        }
        for event in &log.order_events {
            let k = key(event.order_id.as_bytes(), event.version);
            expected.orders_all.add(k);
            expected
                .orders_by_owner
                .entry(event.owner.clone())
                .or_default()
                .add(k);
            if let Some(body) = &event.notification {
                expected
                    .notifications_by_owner
                    .entry(event.owner.clone())
                    .or_default()
                    .add(key(body.as_bytes(), 0));
            }
        }
        for (user, body) in &log.notes {
            expected
                .notifications_by_owner
                .entry(user.clone())
                .or_default()
                .add(key(body.as_bytes(), 0));
        }
        for body in &log.broadcasts {
            expected.broadcasts.add(key(body.as_bytes(), 0));
        }
        for &n in &log.published {
            expected.published.add(key(b"", n));
        }
        expected
    }

    /// What one subscriber should have received, per class.
    pub fn for_subscriber(&self, spec: &Spec, generic: bool) -> [Sum; 3] {
        let mut sums = [Sum::default(); 3];
        if generic {
            sums[Class::Inventory as usize] = self.published;
            return sums;
        }
        let user = spec.user_id.as_deref().unwrap_or_default();
        let of = |map: &HashMap<String, Sum>| map.get(user).copied().unwrap_or_default();
        for topic in &spec.topics {
            match topic.as_str() {
                "inventory" => sums[Class::Inventory as usize].merge(self.inventory),
                "orders" if spec.staff => sums[Class::Orders as usize].merge(self.orders_all),
                "orders" => sums[Class::Orders as usize].merge(of(&self.orders_by_owner)),
                "notifications" => {
                    let notifications = &mut sums[Class::Notifications as usize];
                    notifications.merge(self.broadcasts);
                    notifications.merge(of(&self.notifications_by_owner));
                }
                _ => {}
            }
        }
        sums
    }
}

/// Notifications made by something other than the tester, one `<user_id> <body>` line
/// each (the body may hold spaces; blank lines are skipped), as the log's notes.
pub fn parse_notes(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| match line.split_once(char::is_whitespace) {
            Some((user, body)) if !user.is_empty() && !body.is_empty() => {
                Ok((user.to_owned(), body.to_owned()))
            }
            _ => anyhow::bail!("line {}: expected `<user_id> <body>`", n + 1),
        })
        .collect()
}

/// Waits for `path` to appear (written whole, then renamed into place, by whatever made
/// the events once it has stopped), at most `patience`; the notes it lists.
pub async fn wait_for_notes(
    path: &std::path::Path,
    patience: std::time::Duration,
) -> anyhow::Result<Vec<(String, String)>> {
    let until = tokio::time::Instant::now() + patience;
    loop {
        match tokio::fs::read_to_string(path).await {
            Ok(text) => {
                return parse_notes(&text).map_err(|e| e.context(format!("in {}", path.display())));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("reading {}", path.display())));
            }
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < until,
            "{} did not appear within {patience:?}",
            path.display()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Expected against received, over every subscriber.
#[derive(Debug, Default, Serialize)]
pub struct Verdict {
    pub expected_deliveries: u64,
    /// Checked events received (no duplicates or reordered ones).
    pub received: u64,
    pub lost: u64,
    /// Checked events beyond what was expected (written by someone else, or misrouted).
    pub unexpected: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Subscribers whose events were not exactly the expected ones.
    pub mismatched_subscribers: usize,
    pub reconnects: u64,
    pub resets: u64,
}

pub fn check(expected: &Expected, subscribers: &[(&Spec, &Tally)], generic: bool) -> Verdict {
    let mut verdict = Verdict::default();
    for (spec, tally) in subscribers {
        let want = expected.for_subscriber(spec, generic);
        let mut mismatched = false;
        for (want, got) in want.iter().zip(&tally.classes) {
            verdict.expected_deliveries += want.count;
            verdict.received += got.count;
            verdict.lost += want.count.saturating_sub(got.count);
            verdict.unexpected += got.count.saturating_sub(want.count);
            mismatched |= want != got;
        }
        verdict.mismatched_subscribers += usize::from(mismatched);
        verdict.duplicates += tally.duplicates;
        verdict.out_of_order += tally.out_of_order;
        verdict.reconnects += tally.reconnects;
        verdict.resets += tally.resets;
    }
    verdict
}

/// How many deliveries the subscribers should get in all, to know when they have.
pub fn total(expected: &Expected, specs: &[Spec], generic: bool) -> u64 {
    specs
        .iter()
        .map(|s| {
            expected
                .for_subscriber(s, generic)
                .iter()
                .map(|c| c.count)
                .sum::<u64>()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writes::OrderEvent;

    fn spec(user: &str, staff: bool, topics: &[&str]) -> Spec {
        Spec {
            transport: crate::subscriber::Transport::Ws,
            token: None,
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            user_id: Some(user.to_owned()),
            staff,
        }
    }

    fn log() -> Log {
        let mut log = Log::default();
        for (owner, order, version, note) in [
            ("alice", "o1", 1, None),
            ("bob", "o2", 1, None),
            ("alice", "o1", 2, Some("paid")),
        ] {
            log.order_events.push(OrderEvent {
                owner: owner.into(),
                order_id: order.into(),
                version,
                notification: note.map(str::to_owned),
            });
        }
        log.broadcasts.push("hello".into());
        log
    }

    #[test]
    fn customers_expect_their_own_orders_and_staff_expect_all() {
        let expected = Expected::new(&log(), &[("p1".into(), 1, 4)]);
        let alice = expected.for_subscriber(&spec("alice", false, &["orders", "inventory"]), false);
        assert_eq!(alice[Class::Orders as usize].count, 2);
        assert_eq!(alice[Class::Inventory as usize].count, 3);
        let staff = expected.for_subscriber(&spec("carol", true, &["orders"]), false);
        assert_eq!(staff[Class::Orders as usize].count, 3);
        assert_eq!(staff[Class::Inventory as usize].count, 0);
        let bob = expected.for_subscriber(&spec("bob", false, &["notifications"]), false);
        assert_eq!(
            bob[Class::Notifications as usize].count,
            1,
            "the broadcast only"
        );
    }

    #[test]
    fn a_note_to_one_user_is_expected_by_that_user_alone() {
        let mut log = Log::default();
        log.notes.push(("bob".into(), "for bob".into()));
        let expected = Expected::new(&log, &[]);
        let on = |user| {
            expected.for_subscriber(&spec(user, false, &["notifications"]), false)
                [Class::Notifications as usize]
        };
        assert_eq!(on("bob").count, 1);
        assert_eq!(on("bob").checksum, key(b"for bob", 0));
        assert_eq!(on("alice").count, 0);
    }

    #[test]
    fn notes_from_a_file_are_a_user_and_a_body_with_its_spaces() {
        let notes = parse_notes("u1 sql 17\n\nu2 sql 18\n").unwrap();
        assert_eq!(
            notes,
            [
                ("u1".to_owned(), "sql 17".to_owned()),
                ("u2".to_owned(), "sql 18".to_owned())
            ]
        );
        assert!(parse_notes("u1\n").is_err(), "a line without a body");
    }

    #[tokio::test]
    async fn the_notes_are_read_once_their_file_appears() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("expected");
        let waiting = tokio::spawn({
            let path = path.clone();
            async move { wait_for_notes(&path, std::time::Duration::from_secs(30)).await }
        });
        std::fs::write(dir.path().join("partial"), "bob for bob\n").unwrap();
        std::fs::rename(dir.path().join("partial"), &path).unwrap();
        let notes = waiting.await.unwrap().unwrap();
        let mut log = Log::default();
        log.notes.extend(notes);
        let expected = Expected::new(&log, &[]);
        let bob = expected.for_subscriber(&spec("bob", false, &["notifications"]), false);
        assert_eq!(
            bob[Class::Notifications as usize].checksum,
            key(b"for bob", 0)
        );
    }

    #[tokio::test]
    async fn a_file_that_never_appears_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("never");
        let result = wait_for_notes(&missing, std::time::Duration::from_millis(50)).await;
        assert!(result.unwrap_err().to_string().contains("did not appear"));
    }

    #[test]
    fn a_missing_event_is_lost_and_a_foreign_one_unexpected() {
        let expected = Expected::new(&log(), &[]);
        let bob = spec("bob", false, &["orders"]);
        let mut got = Tally::default();
        got.classes[Class::Orders as usize].add(key(b"o9", 1));
        got.classes[Class::Orders as usize].add(key(b"o9", 2));
        let verdict = check(&expected, &[(&bob, &got)], false);
        assert_eq!(
            (
                verdict.lost,
                verdict.unexpected,
                verdict.mismatched_subscribers
            ),
            (0, 1, 1)
        );
        let verdict = check(&expected, &[(&bob, &Tally::default())], false);
        assert_eq!((verdict.lost, verdict.mismatched_subscribers), (1, 1));
    }
}
