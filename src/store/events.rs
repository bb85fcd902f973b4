//! Writing and reading the `events` outbox.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use super::{Db, Tx};
use crate::store::on_pool;

/// The columns of [`EventRow`], for every query that reads the outbox.
macro_rules! event_columns {
    () => {
        "id, seq, topic, type, audience, user_id, data, created_at"
    };
}
pub(crate) use event_columns;

/// New outbox rows as columns, one entry per event, for one multi-row insert.
#[derive(Debug, Default)]
pub struct NewRows<'a> {
    pub topics: Vec<&'static str>,
    pub kinds: Vec<&'static str>,
    pub audiences: Vec<&'static str>,
    pub users: Vec<Option<Uuid>>,
    pub data: Vec<Json<&'a Value>>,
}

impl NewRows<'_> {
    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }
}

/// The insert of [`NewRows`] on PostgreSQL: the columns bound as `$1` to `$5`, the time as
/// `$6`, rows inserted (and so numbered) in the order given. A statement may put data-modifying
/// `with` clauses before it, numbering their parameters from `$7`.
macro_rules! insert_rows {
    () => {
        "insert into events (topic, type, audience, user_id, data, created_at) \
         select t, k, a, u, d, $6 \
         from unnest($1::text[], $2::text[], $3::text[], $4::uuid[], $5::jsonb[]) \
         with ordinality as e(t, k, a, u, d, n) order by n"
    };
}
pub(crate) use insert_rows;

/// Binds [`NewRows`] and the time as [`insert_rows!`] numbers them.
pub(crate) fn bind_rows<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    rows: NewRows<'q>,
    at: DateTime<Utc>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(rows.topics)
        .bind(rows.kinds)
        .bind(rows.audiences)
        .bind(rows.users)
        .bind(rows.data)
        .bind(at)
}

/// Appends rows stamped `at`: one statement on PostgreSQL, one prepared statement per row
/// on SQLite, where a statement is a function call, not a round trip.
pub async fn append(tx: &mut Tx, rows: NewRows<'_>, at: DateTime<Utc>) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    match tx {
        Tx::Postgres(c) => {
            c.wrote_events();
            bind_rows(sqlx::query(insert_rows!()), rows, at)
                .execute(&mut **c)
                .await?;
        }
        Tx::Sqlite(c) => {
            c.wrote_events();
            for i in 0..rows.topics.len() {
                sqlx::query(
                    "insert into events (topic, type, audience, user_id, data, created_at) \
                     values ($1, $2, $3, $4, $5, $6)",
                )
                .bind(rows.topics[i])
                .bind(rows.kinds[i])
                .bind(rows.audiences[i])
                .bind(rows.users[i])
                .bind(rows.data[i])
                .bind(at)
                .execute(&mut **c)
                .await?;
            }
        }
    }
    Ok(())
}

/// An outbox row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    /// Insertion order (not yet the stream position).
    pub id: i64,
    /// The stream position, once the relay has given one.
    pub seq: Option<i64>,
    pub topic: String,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub audience: String,
    pub user_id: Option<Uuid>,
    pub data: Json<Value>,
    pub created_at: DateTime<Utc>,
}

/// Outbox rows after `after_id`, in insertion order.
pub async fn after_id(db: &Db, after_id: i64, limit: i64) -> Result<Vec<EventRow>, sqlx::Error> {
    on_pool!(db, pool => {
        sqlx::query_as::<_, EventRow>(
            concat!("select ", event_columns!(), " from events where id > $1 order by id limit $2"),
        )
        .bind(after_id)
        .bind(limit)
        .fetch_all(pool)
        .await
    })
}
