//! Queries of the delivery worker: each user's channel preferences, the worker's cursor,
//! intents (one event for one user, waiting for an acknowledgement), deliveries (one
//! message to one target) and their attempts.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;
use uuid::Uuid;

use super::{Db, Tx};
use crate::store::{on_pool, on_tx};

/// A user's channels, as stored: comma-separated notification kinds.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredPreferences {
    pub push: String,
    pub email: String,
}

/// The user's stored channel preferences, if they set any.
pub async fn preferences(db: &Db, user: Uuid) -> Result<Option<StoredPreferences>, sqlx::Error> {
    on_pool!(db, p => sqlx::query_as::<_, StoredPreferences>(
        "select push, email from delivery_preferences where user_id = $1",
    )
    .bind(user).fetch_optional(p).await)
}

/// The stored preferences of each of these users who set any.
pub async fn preferences_of(
    db: &Db,
    users: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, StoredPreferences>, sqlx::Error> {
    if users.is_empty() {
        return Ok(Default::default());
    }
    let sql = format!(
        "select user_id, push, email from delivery_preferences where user_id in ({})",
        super::placeholders(1, users.len())
    );
    let rows: Vec<(Uuid, String, String)> = on_pool!(db, p => {
        let mut q = sqlx::query_as::<_, (Uuid, String, String)>(AssertSqlSafe(sql));
        for user in users {
            q = q.bind(user);
        }
        q.fetch_all(p).await
    })?;
    Ok(rows
        .into_iter()
        .map(|(user, push, email)| (user, StoredPreferences { push, email }))
        .collect())
}

/// Replaces the user's channel preferences.
pub async fn set_preferences(
    db: &Db,
    user: Uuid,
    push: &str,
    email: &str,
) -> Result<(), sqlx::Error> {
    on_pool!(db, p => sqlx::query(
        "insert into delivery_preferences (user_id, push, email) values ($1, $2, $3) \
         on conflict (user_id) do update set push = excluded.push, email = excluded.email",
    )
    .bind(user).bind(push).bind(email).execute(p).await.map(|_| ()))
}

/// The worker's cursor: the last seq it has read.
pub async fn cursor(db: &Db) -> Result<i64, sqlx::Error> {
    on_pool!(db, p => sqlx::query_scalar::<_, i64>("select last_seq from delivery_state where id = 1")
        .fetch_one(p).await)
}

/// Moves the cursor forward (never back).
pub async fn advance_cursor(tx: &mut Tx, to: i64) -> Result<(), sqlx::Error> {
    on_tx!(tx, c => sqlx::query("update delivery_state set last_seq = $1 where id = 1 and last_seq < $1")
        .bind(to).execute(c).await.map(|_| ()))
}

/// One event for one user.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Intent {
    pub event_seq: i64,
    pub user_id: Uuid,
    pub kind: String,
    pub payload: String,
    pub due_at: DateTime<Utc>,
    pub state: String,
    pub created_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
}

const INTENT_COLUMNS: &str =
    "event_seq, user_id, kind, payload, due_at, state, created_at, decided_at";

/// Stores intents, except those that exist already for their event and user (a cursor read
/// twice) and those of users deleted meanwhile. On PostgreSQL one statement for all of
/// them: the worker ingests a batch of events at a time, and a round trip per notification
/// made the relay's instance the busiest of a deployment at thousands of events a second.
pub async fn insert_intents(tx: &mut Tx, intents: &[Intent]) -> Result<(), sqlx::Error> {
    if intents.is_empty() {
        return Ok(());
    }
    match tx {
        Tx::Postgres(c) => {
            sqlx::query(
                "insert into delivery_intents (event_seq, user_id, kind, payload, due_at, state, created_at) \
                 select i.* from unnest($1::bigint[], $2::uuid[], $3::text[], $4::text[], $5::timestamptz[], \
                                        $6::text[], $7::timestamptz[]) \
                        as i(event_seq, user_id, kind, payload, due_at, state, created_at) \
                 where exists (select 1 from users u where u.id = i.user_id) \
                 on conflict (event_seq, user_id) do nothing",
            )
            .bind(intents.iter().map(|i| i.event_seq).collect::<Vec<_>>())
            .bind(intents.iter().map(|i| i.user_id).collect::<Vec<_>>())
            .bind(intents.iter().map(|i| i.kind.as_str()).collect::<Vec<_>>())
            .bind(intents.iter().map(|i| i.payload.as_str()).collect::<Vec<_>>())
            .bind(intents.iter().map(|i| i.due_at).collect::<Vec<_>>())
            .bind(intents.iter().map(|i| i.state.as_str()).collect::<Vec<_>>())
            .bind(intents.iter().map(|i| i.created_at).collect::<Vec<_>>())
            .execute(&mut **c)
            .await?;
        }
        Tx::Sqlite(c) => {
            // A statement is a function call here, not a round trip.
            for i in intents {
                sqlx::query(
                    "insert into delivery_intents (event_seq, user_id, kind, payload, due_at, state, created_at) \
                     select $1, $2, $3, $4, $5, $6, $7 where exists (select 1 from users where id = $2) \
                     on conflict (event_seq, user_id) do nothing",
                )
                .bind(i.event_seq).bind(i.user_id).bind(&i.kind).bind(&i.payload).bind(i.due_at)
                .bind(&i.state).bind(i.created_at)
                .execute(&mut **c)
                .await?;
            }
        }
    }
    Ok(())
}

/// Waiting intents due by `now`, oldest first.
pub async fn due_intents(
    db: &Db,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Intent>, sqlx::Error> {
    let sql = format!(
        "select {INTENT_COLUMNS} from delivery_intents where state = 'waiting' and due_at <= $1 \
         order by due_at, event_seq limit $2"
    );
    on_pool!(db, p => sqlx::query_as::<_, Intent>(AssertSqlSafe(sql))
        .bind(now).bind(limit).fetch_all(p).await)
}

/// When the next waiting intent is due.
pub async fn next_due(db: &Db) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    on_pool!(db, p => sqlx::query_scalar::<_, Option<DateTime<Utc>>>(
        "select min(due_at) from delivery_intents where state = 'waiting'",
    )
    .fetch_one(p).await)
}

/// Records what was decided for waiting intents, `(event_seq, user, state)` each; those
/// that were still waiting (another worker did not decide them first). One statement on
/// PostgreSQL, as [`insert_intents`].
pub async fn decide(
    tx: &mut Tx,
    decisions: &[(i64, Uuid, &str)],
    at: DateTime<Utc>,
) -> Result<HashSet<(i64, Uuid)>, sqlx::Error> {
    if decisions.is_empty() {
        return Ok(HashSet::new());
    }
    match tx {
        Tx::Postgres(c) => {
            let rows: Vec<(i64, Uuid)> = sqlx::query_as(
                "update delivery_intents d set state = w.state, decided_at = $4 \
                 from unnest($1::bigint[], $2::uuid[], $3::text[]) as w(event_seq, user_id, state) \
                 where d.event_seq = w.event_seq and d.user_id = w.user_id and d.state = 'waiting' \
                 returning d.event_seq, d.user_id",
            )
            .bind(decisions.iter().map(|d| d.0).collect::<Vec<_>>())
            .bind(decisions.iter().map(|d| d.1).collect::<Vec<_>>())
            .bind(decisions.iter().map(|d| d.2).collect::<Vec<_>>())
            .bind(at)
            .fetch_all(&mut **c)
            .await?;
            Ok(rows.into_iter().collect())
        }
        Tx::Sqlite(c) => {
            let mut waiting = HashSet::new();
            for &(event_seq, user, state) in decisions {
                let n = sqlx::query(
                    "update delivery_intents set state = $3, decided_at = $4 \
                     where event_seq = $1 and user_id = $2 and state = 'waiting'",
                )
                .bind(event_seq)
                .bind(user)
                .bind(state)
                .bind(at)
                .execute(&mut **c)
                .await?
                .rows_affected();
                if n > 0 {
                    waiting.insert((event_seq, user));
                }
            }
            Ok(waiting)
        }
    }
}

/// Moves a waiting intent's due time later.
pub async fn postpone(
    tx: &mut Tx,
    event_seq: i64,
    user: Uuid,
    due_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    on_tx!(tx, c => sqlx::query(
        "update delivery_intents set due_at = $3 where event_seq = $1 and user_id = $2 and state = 'waiting'",
    )
    .bind(event_seq).bind(user).bind(due_at).execute(c).await.map(|_| ()))
}

/// One message to one target.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Delivery {
    pub id: Uuid,
    pub event_seq: i64,
    pub user_id: Uuid,
    pub channel: String,
    pub device_id: Option<Uuid>,
    pub target_key: String,
    pub target: String,
    pub payload: String,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub lease_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub event_at: DateTime<Utc>,
}

const DELIVERY_COLUMNS: &str = "id, event_seq, user_id, channel, device_id, target_key, target, \
     payload, status, attempts, next_attempt_at, lease_until, created_at, updated_at, event_at";

/// Stores a delivery, unless the event already has one for the target.
pub async fn insert_delivery(tx: &mut Tx, d: &Delivery) -> Result<(), sqlx::Error> {
    on_tx!(tx, c => sqlx::query(
        "insert into deliveries (id, event_seq, user_id, channel, device_id, target_key, target, \
         payload, status, attempts, next_attempt_at, created_at, updated_at, event_at) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
         on conflict (event_seq, target_key) do nothing",
    )
    .bind(d.id).bind(d.event_seq).bind(d.user_id).bind(&d.channel).bind(d.device_id)
    .bind(&d.target_key).bind(&d.target).bind(&d.payload).bind(&d.status).bind(d.attempts)
    .bind(d.next_attempt_at).bind(d.created_at).bind(d.updated_at).bind(d.event_at)
    .execute(c).await.map(|_| ()))
}

/// Claims up to `limit` deliveries due by `now` (pending, or sending with a lapsed lease:
/// an instance stopped while sending them) until `lease_until`, and returns them.
pub async fn claim(
    db: &Db,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Delivery>, sqlx::Error> {
    let lock = match db {
        Db::Postgres(..) => " for update skip locked",
        Db::Sqlite(..) => "",
    };
    let sql = format!(
        "update deliveries set status = 'sending', lease_until = $2 where id in (\
         select id from deliveries where next_attempt_at <= $1 \
         and (status = 'pending' or (status = 'sending' and lease_until < $1)) \
         order by next_attempt_at limit $3{lock}) returning {DELIVERY_COLUMNS}"
    );
    let mut rows = on_pool!(db, p => sqlx::query_as::<_, Delivery>(AssertSqlSafe(sql))
        .bind(now).bind(lease_until).bind(limit).fetch_all(p).await)?;
    rows.sort_by_key(|d| d.next_attempt_at);
    Ok(rows)
}

/// When the next pending delivery is due.
pub async fn next_attempt(db: &Db) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    on_pool!(db, p => sqlx::query_scalar::<_, Option<DateTime<Utc>>>(
        "select min(next_attempt_at) from deliveries where status = 'pending'",
    )
    .fetch_one(p).await)
}

/// One attempt at a delivery and what came of it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Attempt {
    pub delivery_id: Uuid,
    pub attempt: i32,
    pub at: DateTime<Utc>,
    pub outcome: String,
    pub detail: Option<String>,
    pub duration_ms: i64,
}

/// What becomes of a claimed delivery after an attempt.
#[derive(Debug, Clone)]
pub struct Settled {
    pub id: Uuid,
    pub status: &'static str,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    /// The attempt to record, if one was made (a rate-limited delivery is put back
    /// without one).
    pub attempt: Option<Attempt>,
    /// The device to record as used (a delivery sent to it).
    pub used_device: Option<Uuid>,
}

/// Records the outcomes of claimed deliveries, and the last use of the devices sent to, in
/// one transaction.
pub async fn settle(db: &Db, settled: &[Settled], at: DateTime<Utc>) -> Result<(), sqlx::Error> {
    let used: Vec<Uuid> = settled.iter().filter_map(|s| s.used_device).collect();
    let mut tx = db.begin().await?;
    for chunk in used.chunks(500) {
        let sql = format!(
            "update devices set last_used_at = $1 where id in ({})",
            super::placeholders(2, chunk.len())
        );
        on_tx!(&mut tx, c => {
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(at);
            for id in chunk {
                q = q.bind(id);
            }
            q.execute(c).await.map(|_| ())
        })?;
    }
    for s in settled {
        on_tx!(&mut tx, c => sqlx::query(
            "update deliveries set status = $2, attempts = $3, next_attempt_at = $4, \
             lease_until = null, updated_at = $5 where id = $1",
        )
        .bind(s.id).bind(s.status).bind(s.attempts).bind(s.next_attempt_at).bind(at)
        .execute(c).await.map(|_| ()))?;
        if let Some(a) = &s.attempt {
            on_tx!(&mut tx, c => sqlx::query(
                "insert into delivery_attempts (delivery_id, attempt, at, outcome, detail, duration_ms) \
                 values ($1, $2, $3, $4, $5, $6) on conflict do nothing",
            )
            .bind(a.delivery_id).bind(a.attempt).bind(a.at).bind(&a.outcome).bind(&a.detail)
            .bind(a.duration_ms).execute(c).await.map(|_| ()))?;
        }
    }
    tx.commit().await
}

/// Intents of a user, or of an event, or both, newest first.
pub async fn find_intents(
    db: &Db,
    user: Option<Uuid>,
    event: Option<i64>,
    limit: i64,
) -> Result<Vec<Intent>, sqlx::Error> {
    let mut conditions = Vec::new();
    if user.is_some() {
        conditions.push(format!("user_id = ${}", conditions.len() + 2));
    }
    if event.is_some() {
        conditions.push(format!("event_seq = ${}", conditions.len() + 2));
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!("where {}", conditions.join(" and "))
    };
    let sql = format!(
        "select {INTENT_COLUMNS} from delivery_intents {filter} \
         order by event_seq desc, user_id limit $1"
    );
    on_pool!(db, p => {
        let mut q = sqlx::query_as::<_, Intent>(AssertSqlSafe(sql)).bind(limit);
        if let Some(user) = user {
            q = q.bind(user);
        }
        if let Some(event) = event {
            q = q.bind(event);
        }
        q.fetch_all(p).await
    })
}

/// The deliveries of these intents' events for their users.
pub async fn deliveries_of(db: &Db, intents: &[Intent]) -> Result<Vec<Delivery>, sqlx::Error> {
    if intents.is_empty() {
        return Ok(Vec::new());
    }
    // One query for the page, not one per intent: by seq, then kept only for the intents'
    // users (a notification's event has one user, so this drops nothing in practice).
    let mut seqs: Vec<i64> = intents.iter().map(|i| i.event_seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    let sql = format!(
        "select {DELIVERY_COLUMNS} from deliveries where event_seq in ({}) order by created_at, id",
        super::placeholders(1, seqs.len())
    );
    let rows = on_pool!(db, p => {
        let mut query = sqlx::query_as::<_, Delivery>(AssertSqlSafe(sql));
        for seq in &seqs {
            query = query.bind(*seq);
        }
        query.fetch_all(p).await
    })?;
    let wanted: HashSet<(i64, Uuid)> = intents.iter().map(|i| (i.event_seq, i.user_id)).collect();
    Ok(rows
        .into_iter()
        .filter(|d| wanted.contains(&(d.event_seq, d.user_id)))
        .collect())
}

/// The attempts of these deliveries, in order.
pub async fn attempts_of(db: &Db, deliveries: &[Delivery]) -> Result<Vec<Attempt>, sqlx::Error> {
    if deliveries.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "select delivery_id, attempt, at, outcome, detail, duration_ms from delivery_attempts \
         where delivery_id in ({}) order by delivery_id, attempt",
        super::placeholders(1, deliveries.len())
    );
    on_pool!(db, p => {
        let mut query = sqlx::query_as::<_, Attempt>(AssertSqlSafe(sql));
        for d in deliveries {
            query = query.bind(d.id);
        }
        query.fetch_all(p).await
    })
}
