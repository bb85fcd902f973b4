//! The sequenced event stream: the relay's claims, catch-up and replay reads, pruning, and
//! stream tickets.

use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;
use uuid::Uuid;

use crate::events::{Event, Topic};
use crate::store::events::{EventRow, event_columns};
use crate::store::{Db, Tx, placeholders};
use crate::store::{on_pool, on_tx};

fn sequenced(rows: Vec<EventRow>) -> Vec<Event> {
    rows.into_iter().filter_map(Event::from_row).collect()
}

/// Gives the oldest unsequenced events (up to `limit`) the next contiguous seq numbers,
/// in id order, and returns them, committed. The counter row is locked first, so that
/// even two relays at once (a lost advisory lock) cannot hand out one number twice.
pub async fn claim(db: &Db, limit: i64) -> Result<Vec<Event>, sqlx::Error> {
    let rows = match db {
        // One round trip: the function `relay_claim` (migration 0004) does it all.
        Db::Postgres(pool, _) => {
            sqlx::query_as::<_, EventRow>(concat!(
                "select ",
                event_columns!(),
                " from relay_claim($1)"
            ))
            .bind(i32::try_from(limit).unwrap_or(i32::MAX))
            .fetch_all(pool)
            .await?
        }
        // In-process calls, not round trips; BEGIN IMMEDIATE serialises writers.
        Db::Sqlite(..) => {
            let mut tx = db.begin().await?;
            let Tx::Sqlite(c) = &mut tx else {
                unreachable!("a SQLite database begins SQLite transactions")
            };
            let last: i64 = sqlx::query_scalar("select last_seq from relay_state where id = 1")
                .fetch_one(&mut **c)
                .await?;
            let ids: Vec<i64> =
                sqlx::query_scalar("select id from events where seq is null order by id limit $1")
                    .bind(limit)
                    .fetch_all(&mut **c)
                    .await?;
            let mut rows = Vec::with_capacity(ids.len());
            for (i, id) in ids.iter().enumerate() {
                let row = sqlx::query_as::<_, EventRow>(concat!(
                    "update events set seq = $1 where id = $2 returning ",
                    event_columns!()
                ))
                .bind(last + 1 + i as i64)
                .bind(id)
                .fetch_one(&mut **c)
                .await?;
                rows.push(row);
            }
            if !rows.is_empty() {
                sqlx::query("update relay_state set last_seq = $1 where id = 1")
                    .bind(last + rows.len() as i64)
                    .execute(&mut **c)
                    .await?;
            }
            tx.commit().await?;
            rows
        }
    };
    let mut events = sequenced(rows);
    events.sort_by_key(|e| e.seq);
    Ok(events)
}

/// The last seq handed out.
pub async fn last_seq(db: &Db) -> Result<i64, sqlx::Error> {
    on_pool!(db, pool => {
        sqlx::query_scalar::<_, i64>("select last_seq from relay_state where id = 1").fetch_one(pool).await
    })
}

/// Sequenced events after `after`, in order, for a hub catching up.
pub async fn after_seq(db: &Db, after: i64, limit: i64) -> Result<Vec<Event>, sqlx::Error> {
    let rows = on_pool!(db, pool => {
        sqlx::query_as::<_, EventRow>(concat!(
            "select ", event_columns!(), " from events where seq > $1 order by seq limit $2"
        ))
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await
    })?;
    Ok(sequenced(rows))
}

/// The events of one type in `(after, upto]`, in order: for a reader that follows the whole
/// stream but needs only one kind of event, without reading and decoding the others.
pub async fn of_type_between(
    db: &Db,
    after: i64,
    upto: i64,
    kind: &str,
) -> Result<Vec<Event>, sqlx::Error> {
    let rows = on_pool!(db, pool => {
        sqlx::query_as::<_, EventRow>(concat!(
            "select ", event_columns!(), " from events where seq > $1 and seq <= $2 and type = $3 order by seq"
        ))
        .bind(after)
        .bind(upto)
        .bind(kind)
        .fetch_all(pool)
        .await
    })?;
    Ok(sequenced(rows))
}

/// The events in `(since, upto]` of these topics that this user may receive, in order.
pub async fn replay(
    db: &Db,
    since: i64,
    upto: i64,
    topics: &[Topic],
    user_id: Uuid,
    is_staff: bool,
    limit: i64,
) -> Result<Vec<Event>, sqlx::Error> {
    let sql = format!(
        concat!(
            "select ",
            event_columns!(),
            " from events where seq > $1 and seq <= $2 \
             and topic in ({}) and (audience = 'everyone' \
             or (audience in ('staff', 'user_and_staff') and $3) \
             or (audience in ('user', 'user_and_staff') and user_id = $4)) \
             order by seq limit $5"
        ),
        placeholders(6, topics.len())
    );
    let rows = on_pool!(db, pool => {
        let mut query = sqlx::query_as::<_, EventRow>(AssertSqlSafe(sql))
            .bind(since)
            .bind(upto)
            .bind(is_staff)
            .bind(user_id)
            .bind(limit);
        for topic in topics {
            query = query.bind(topic.as_str());
        }
        query.fetch_all(pool).await
    })?;
    Ok(sequenced(rows))
}

/// Events up to this seq were pruned: a resume from before it cannot be served.
pub async fn pruned_through(db: &Db) -> Result<i64, sqlx::Error> {
    on_pool!(db, pool => {
        sqlx::query_scalar::<_, i64>("select pruned_through from relay_state where id = 1").fetch_one(pool).await
    })
}

/// Deletes the oldest events of the stream, up to the first one created at or after
/// `before`: a prefix, so that a resume is either served whole or told to reset. How many.
pub async fn prune(db: &Db, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let mut tx = db.begin().await?;
    // Walks `seq` from the oldest event, so it reads what it then deletes; no index on
    // `created_at` is kept for it (migration 0011: each event wrote it twice).
    let first_kept: Option<i64> = on_tx!(&mut tx, c => {
        sqlx::query_scalar::<_, i64>(
            "select seq from events where seq is not null and created_at >= $1 order by seq limit 1",
        )
        .bind(before)
        .fetch_optional(c)
        .await
    })?;
    let newest: Option<i64> = match first_kept {
        Some(seq) => Some(seq - 1),
        None => on_tx!(&mut tx, c => {
            sqlx::query_scalar::<_, Option<i64>>("select max(seq) from events")
                .fetch_one(c)
                .await
        })?,
    };
    let Some(newest) = newest.filter(|&seq| seq > 0) else {
        return Ok(0);
    };
    let deleted = on_tx!(&mut tx, c => {
        sqlx::query("delete from events where seq is not null and seq <= $1")
            .bind(newest)
            .execute(c)
            .await
            .map(|done| done.rows_affected())
    })?;
    on_tx!(&mut tx, c => {
        sqlx::query("update relay_state set pruned_through = $1 where id = 1 and pruned_through < $1")
            .bind(newest)
            .execute(c)
            .await
            .map(|_| ())
    })?;
    tx.commit().await?;
    Ok(deleted)
}

/// What a stream ticket stands for: the access token it was made from.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Ticket {
    pub user_id: Uuid,
    pub token_version: i64,
    pub token_expires_at: DateTime<Utc>,
    /// The ticket itself is good until then.
    pub expires_at: DateTime<Utc>,
}

/// Stores a stream ticket under its hash.
pub async fn insert_ticket(db: &Db, hash: &[u8], ticket: &Ticket) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    on_tx!(&mut tx, c => {
        sqlx::query(
            "insert into stream_tickets (ticket_hash, user_id, token_version, token_expires_at, expires_at) \
             values ($1, $2, $3, $4, $5)",
        )
            .bind(hash)
            .bind(ticket.user_id)
            .bind(ticket.token_version)
            .bind(ticket.token_expires_at)
            .bind(ticket.expires_at)
            .execute(c)
            .await
            .map(|_| ())
    })?;
    tx.commit().await
}

/// Takes a ticket: deleted whatever happens, so it works once; what it stood for if it
/// was still valid.
pub async fn consume_ticket(
    db: &Db,
    hash: &[u8],
    now: DateTime<Utc>,
) -> Result<Option<Ticket>, sqlx::Error> {
    let mut tx = db.begin().await?;
    let found: Option<Ticket> = on_tx!(&mut tx, c => {
        sqlx::query_as::<_, Ticket>(
            "delete from stream_tickets where ticket_hash = $1 \
             returning user_id, token_version, token_expires_at, expires_at",
        )
        .bind(hash)
        .fetch_optional(c)
        .await
    })?;
    // Expired tickets of anyone go too, so the table stays small.
    on_tx!(&mut tx, c => {
        sqlx::query("delete from stream_tickets where expires_at < $1").bind(now).execute(c).await.map(|_| ())
    })?;
    tx.commit().await?;
    Ok(found.filter(|t| t.expires_at > now))
}
