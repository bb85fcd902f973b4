//! Resuming a stream: what a client missed, read from the database.

use crate::events::stream;
use crate::events::{Event, Topic};
use crate::service::accounts::CurrentUser;
use crate::store::Db;

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
