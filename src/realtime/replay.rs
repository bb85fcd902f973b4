//! Resuming a stream: what a client missed, read from the database.

use std::collections::VecDeque;

use super::frames::Frame;
use crate::auth::CurrentUser;
use crate::events::{Event, Topic};
use crate::store::{Db, stream};

/// Events read per query while replaying.
pub const PAGE: i64 = 500;

/// Where a resume starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Replay `(since, live_from]`, then go live.
    From(i64),
    /// The events after `since` are gone (pruned) or `since` was never handed out (a
    /// restored database): the client must reload over REST, then goes live.
    Reset,
}

/// Decides how a client that last saw `since` resumes when live delivery starts after
/// `live_from`.
pub async fn plan(db: &Db, since: i64, live_from: i64) -> Result<Resume, sqlx::Error> {
    if since < stream::pruned_through(db).await? {
        return Ok(Resume::Reset);
    }
    // A hub may trail the relay by a moment; only a seq beyond what the database ever
    // handed out is unknown.
    if since > live_from && since > stream::last_seq(db).await? {
        return Ok(Resume::Reset);
    }
    Ok(Resume::From(since))
}

/// One page of the events in `(after, upto]` of `topics` that `user` may receive.
pub async fn page(
    db: &Db,
    user: &CurrentUser,
    topics: &[Topic],
    after: i64,
    upto: i64,
) -> Result<Vec<Event>, sqlx::Error> {
    if after >= upto {
        return Ok(Vec::new());
    }
    stream::replay(db, after, upto, topics, user.id, user.role.is_staff(), PAGE).await
}

/// A replay page (in seq order) merged with the live events of a connection's other topics
/// that were queued for it (in seq order, none of them in the page): each queued event goes
/// out before the first replayed one after it, so the connection's stream stays in seq
/// order. Queued events after the page's last stay queued, for the next page or the end.
pub fn interleave(queued: &mut VecDeque<Frame>, page: Vec<Frame>) -> Vec<Frame> {
    let mut merged = Vec::with_capacity(page.len() + queued.len());
    for frame in page {
        while queued.front().is_some_and(|q| q.seq < frame.seq) {
            merged.extend(queued.pop_front());
        }
        merged.push(frame);
    }
    merged
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::realtime::frames::PreparedEvent;

    fn frame(seq: i64) -> Frame {
        Arc::new(PreparedEvent {
            seq,
            topic: Topic::Orders,
            at: chrono::Utc::now(),
            ws_frame: bytes::Bytes::new(),
            sse: bytes::Bytes::new(),
            sse_chunk: bytes::Bytes::new(),
        })
    }

    fn seqs<'a>(frames: impl IntoIterator<Item = &'a Frame>) -> Vec<i64> {
        frames.into_iter().map(|f| f.seq).collect()
    }

    #[test]
    fn queued_live_events_go_out_between_replayed_ones_in_seq_order() {
        let mut queued: VecDeque<Frame> = [2, 3, 6, 9, 12].map(frame).into();
        let first = interleave(&mut queued, [1, 4, 5, 7].map(frame).into());
        assert_eq!(seqs(&first), [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(seqs(&queued), [9, 12], "after the page: kept for the next");
        let second = interleave(&mut queued, [10].map(frame).into());
        assert_eq!(seqs(&second), [9, 10]);
        assert_eq!(seqs(&queued), [12]);
        assert!(interleave(&mut queued, Vec::new()).is_empty());
        assert_eq!(seqs(&queued), [12]);
    }
}
