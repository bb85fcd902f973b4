//! Reading the `events` outbox.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use super::Db;
use crate::store::on_pool;

/// The columns of [`EventRow`], for every query that reads the outbox.
macro_rules! event_columns {
    () => {
        "id, seq, topic, type, audience, user_id, data, created_at"
    };
}
pub(crate) use event_columns;

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
