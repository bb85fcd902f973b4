//! Committing a change together with its events.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use super::NewEvent;
use crate::store::{Tx, now};

/// Commits `tx` with the change's `events`, appended as its last statement and stamped
/// with the time of appending. An event's `at` is thus as close to its commit as a row can
/// tell, and the delivery lag measured from it (relay lag, delivery lag, the load tester's
/// commit-to-receipt) counts the commit itself and none of the rest of the transaction.
pub async fn commit(mut tx: Tx, events: &[NewEvent]) -> Result<(), sqlx::Error> {
    append(&mut tx, events, now()).await?;
    tx.commit().await
}

/// Appends events in one statement on PostgreSQL (arrays unnested), and one prepared
/// statement per event on SQLite, where a statement is a function call, not a round trip.
async fn append(tx: &mut Tx, events: &[NewEvent], at: DateTime<Utc>) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    match tx {
        Tx::Postgres(c) => {
            let mut topics = Vec::with_capacity(events.len());
            let mut kinds = Vec::with_capacity(events.len());
            let mut audiences = Vec::with_capacity(events.len());
            let mut users: Vec<Option<Uuid>> = Vec::with_capacity(events.len());
            let mut data = Vec::with_capacity(events.len());
            for event in events {
                let (audience, user) = event.audience.columns();
                topics.push(event.topic().as_str());
                kinds.push(event.kind.as_str());
                audiences.push(audience);
                users.push(user);
                data.push(Json(&event.data));
            }
            sqlx::query(
                "insert into events (topic, type, audience, user_id, data, created_at) \
                 select t, k, a, u, d, $6 \
                 from unnest($1::text[], $2::text[], $3::text[], $4::uuid[], $5::jsonb[]) \
                 with ordinality as e(t, k, a, u, d, n) order by n",
            )
            .bind(topics)
            .bind(kinds)
            .bind(audiences)
            .bind(users)
            .bind(data)
            .bind(at)
            .execute(&mut **c)
            .await?;
        }
        Tx::Sqlite(c) => {
            c.wrote_events();
            for event in events {
                let (audience, user) = event.audience.columns();
                sqlx::query(
                    "insert into events (topic, type, audience, user_id, data, created_at) \
                     values ($1, $2, $3, $4, $5, $6)",
                )
                .bind(event.topic().as_str())
                .bind(event.kind.as_str())
                .bind(audience)
                .bind(user)
                .bind(Json(&event.data))
                .bind(at)
                .execute(&mut **c)
                .await?;
            }
        }
    }
    Ok(())
}
