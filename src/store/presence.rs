//! Queries on who is connected (`live_instances`, `live_users`) and on what their apps
//! acknowledged (`live_acks`): written by every instance, read by the delivery worker.

use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;
use uuid::Uuid;

use super::{Db, placeholders};
use crate::store::{on_pool, on_tx};

/// Records that the instance is alive.
pub async fn heartbeat(db: &Db, instance: Uuid, at: DateTime<Utc>) -> Result<(), sqlx::Error> {
    on_pool!(db, p => sqlx::query(
        "insert into live_instances (id, seen_at) values ($1, $2) \
         on conflict (id) do update set seen_at = excluded.seen_at",
    )
    .bind(instance).bind(at).execute(p).await.map(|_| ()))
}

/// Adds and removes users of the instance's connected set, in one transaction.
pub async fn update(
    db: &Db,
    instance: Uuid,
    at: DateTime<Utc>,
    joined: &[Uuid],
    left: &[Uuid],
) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    on_tx!(&mut tx, c => sqlx::query(
        "insert into live_instances (id, seen_at) values ($1, $2) \
         on conflict (id) do update set seen_at = excluded.seen_at",
    )
    .bind(instance).bind(at).execute(c).await.map(|_| ()))?;
    for chunk in left.chunks(500) {
        let sql = format!(
            "delete from live_users where instance_id = $1 and user_id in ({})",
            placeholders(2, chunk.len())
        );
        on_tx!(&mut tx, c => {
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(instance);
            for user in chunk {
                q = q.bind(user);
            }
            q.execute(c).await.map(|_| ())
        })?;
    }
    for chunk in joined.chunks(500) {
        let values = (0..chunk.len())
            .map(|i| format!("($1, ${})", i + 2))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "insert into live_users (instance_id, user_id) values {values} on conflict do nothing"
        );
        on_tx!(&mut tx, c => {
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(instance);
            for user in chunk {
                q = q.bind(user);
            }
            q.execute(c).await.map(|_| ())
        })?;
    }
    tx.commit().await
}

/// Removes the instance and its connected users (a clean shutdown).
pub async fn remove_instance(db: &Db, instance: Uuid) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    on_tx!(&mut tx, c => sqlx::query("delete from live_users where instance_id = $1")
        .bind(instance).execute(c).await.map(|_| ()))?;
    on_tx!(&mut tx, c => sqlx::query("delete from live_instances where id = $1")
        .bind(instance).execute(c).await.map(|_| ()))?;
    tx.commit().await
}

/// Removes instances not seen since `before` (they crashed) with their users; how many.
pub async fn prune_instances(db: &Db, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let mut tx = db.begin().await?;
    on_tx!(&mut tx, c => sqlx::query(
        "delete from live_users where instance_id in (select id from live_instances where seen_at < $1)",
    )
    .bind(before).execute(c).await.map(|_| ()))?;
    let n = on_tx!(&mut tx, c => sqlx::query("delete from live_instances where seen_at < $1")
        .bind(before).execute(c).await.map(|r| r.rows_affected()))?;
    tx.commit().await?;
    Ok(n)
}

/// Which of these users have a live connection on an instance seen since `alive_since`.
pub async fn connected(
    db: &Db,
    users: &[Uuid],
    alive_since: DateTime<Utc>,
) -> Result<Vec<Uuid>, sqlx::Error> {
    if users.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "select distinct u.user_id from live_users u join live_instances i on i.id = u.instance_id \
         where i.seen_at >= $1 and u.user_id in ({})",
        placeholders(2, users.len())
    );
    on_pool!(db, p => {
        let mut q = sqlx::query_scalar::<_, Uuid>(AssertSqlSafe(sql)).bind(alive_since);
        for user in users {
            q = q.bind(user);
        }
        q.fetch_all(p).await
    })
}

/// Raises each user's acknowledged seq to the one given (never lowers it): one statement
/// per 500 users. A user deleted meanwhile fails a statement; its users are then written one
/// by one, and the deleted one skipped.
pub async fn record_acks(
    db: &Db,
    acks: &[(Uuid, i64)],
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    for chunk in acks.chunks(500) {
        if upsert_acks(db, chunk, at).await.is_err() {
            for one in chunk {
                match upsert_acks(db, std::slice::from_ref(one), at).await {
                    Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {}
                    other => other?,
                }
            }
        }
    }
    Ok(())
}

async fn upsert_acks(db: &Db, acks: &[(Uuid, i64)], at: DateTime<Utc>) -> Result<(), sqlx::Error> {
    let values = (0..acks.len())
        .map(|i| format!("(${}, ${}, $1)", 2 * i + 2, 2 * i + 3))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "insert into live_acks (user_id, seq, acked_at) values {values} \
         on conflict (user_id) do update set seq = excluded.seq, acked_at = excluded.acked_at \
         where live_acks.seq < excluded.seq"
    );
    on_pool!(db, p => {
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(at);
        for (user, seq) in acks {
            q = q.bind(user).bind(seq);
        }
        q.execute(p).await.map(|_| ())
    })
}

/// The highest acknowledged seq of each of these users who acknowledged anything.
pub async fn acked_seqs(
    db: &Db,
    users: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, i64>, sqlx::Error> {
    if users.is_empty() {
        return Ok(Default::default());
    }
    let sql = format!(
        "select user_id, seq from live_acks where user_id in ({})",
        placeholders(1, users.len())
    );
    let rows: Vec<(Uuid, i64)> = on_pool!(db, p => {
        let mut q = sqlx::query_as::<_, (Uuid, i64)>(AssertSqlSafe(sql));
        for user in users {
            q = q.bind(user);
        }
        q.fetch_all(p).await
    })?;
    Ok(rows.into_iter().collect())
}
