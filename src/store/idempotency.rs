//! Queries on `idempotency_keys`: the first answer to a keyed request, kept for retries.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use super::Tx;
use crate::store::on_tx;

/// A stored answer.
#[derive(Debug, sqlx::FromRow)]
pub struct StoredResponse {
    pub request_hash: Vec<u8>,
    pub response_status: i32,
    pub response_body: Json<Value>,
}

pub async fn find(
    tx: &mut Tx,
    user_id: Uuid,
    key: &str,
) -> Result<Option<StoredResponse>, sqlx::Error> {
    on_tx!(tx, c => {
        sqlx::query_as::<_, StoredResponse>(
            "select request_hash, response_status, response_body from idempotency_keys \
             where user_id = $1 and key = $2",
        )
        .bind(user_id)
        .bind(key)
        .fetch_optional(c)
        .await
    })
}

/// Stores the answer; false if another request with the same key committed first (on
/// PostgreSQL the insert waits for it), in which case the caller must roll back.
pub async fn store(
    tx: &mut Tx,
    user_id: Uuid,
    key: &str,
    request_hash: &[u8],
    status: u16,
    body: &Value,
    at: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    on_tx!(tx, c => {
        sqlx::query(
            "insert into idempotency_keys (user_id, key, request_hash, response_status, response_body, created_at) \
             values ($1, $2, $3, $4, $5, $6) on conflict do nothing",
        )
        .bind(user_id)
        .bind(key)
        .bind(request_hash)
        .bind(i32::from(status))
        .bind(Json(body))
        .bind(at)
        .execute(c)
        .await
        .map(|done| done.rows_affected() == 1)
    })
}
