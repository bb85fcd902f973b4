//! `Tidings-Position`: the point of the event stream a REST read reflects. A client loads a
//! list, then subscribes from that point (`since`, or `Last-Event-ID`) and misses no
//! change committed in between.

use std::convert::Infallible;
use std::future::Future;

use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponseParts, ResponseParts};

use crate::events::stream;
use crate::store::Db;

/// The header every read of products, orders and notifications answers with.
pub const HEADER: HeaderName = HeaderName::from_static("tidings-position");

/// A seq of the event stream: every event up to it is reflected in the body it came with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position(pub i64);

/// Reads the stream position, then runs `body` (a future, so not started before) and
/// returns both.
///
/// The position is the relay's counter, `relay_state.last_seq`. A change's events get
/// their seqs after the change commits: the relay's claim, one transaction, takes events
/// of committed changes that have none yet, numbers them on from `last_seq` (which it
/// locks: PostgreSQL's `for update`, SQLite's `BEGIN IMMEDIATE`) and raises `last_seq` to
/// the last number. A claim numbers only what its snapshot shows, so the change behind
/// every numbered event committed before the claim did.
///
/// The counter is read by a statement that has ended before the body's first statement
/// begins. Each statement sees every transaction that committed before it started
/// (PostgreSQL at READ COMMITTED takes a snapshot per statement; SQLite in WAL mode reads
/// from the last commit when a read begins), so the body sees all the counter's read saw,
/// and perhaps more. With `L` the value read:
///
/// - every event with a seq up to `L` is reflected in the body: its claim committed before
///   `L` was read, and its change before that claim;
/// - a change the body lacks loses nothing from `since = L`: it committed after the body's
///   snapshot (or not at all), so after `L` was read, and the claims that had not
///   committed by then number above `L`;
/// - a change the body shows may still come after `L` (committed but not yet numbered, or
///   committed between the two reads): a repeat, which the resource's `version` tells.
///
/// Read after the body, the counter could count a change committed between the two
/// reads, which the body lacks and a stream from `L` would not deliver
/// (tests/api/position.rs races exactly that). One snapshot for both reads would need a
/// REPEATABLE READ transaction on PostgreSQL: two more round trips (BEGIN, COMMIT) for
/// fewer repeats and no stronger guarantee. The cost here is one primary-key read of a
/// one-row table.
pub async fn before<T, E: From<sqlx::Error>>(
    db: &Db,
    body: impl Future<Output = Result<T, E>>,
) -> Result<(Position, T), E> {
    let position = Position(stream::last_seq(db).await?);
    Ok((position, body.await?))
}

impl IntoResponseParts for Position {
    type Error = Infallible;

    fn into_response_parts(self, mut parts: ResponseParts) -> Result<ResponseParts, Infallible> {
        parts
            .headers_mut()
            .insert(HEADER, HeaderValue::from(self.0));
        Ok(parts)
    }
}
