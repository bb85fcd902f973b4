//! Queries on `audit_log`: who changed what, when, under which request.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use super::{Db, Tx};
use crate::store::{on_pool, on_tx};

/// One recorded write by staff or an admin.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: Uuid,
    pub actor_id: Uuid,
    /// Such as `product.update` or `order.status`.
    pub action: String,
    /// product, order, user or notification.
    pub target_type: String,
    pub target_id: String,
    /// What changed.
    #[schema(value_type = Object)]
    pub summary: Json<Value>,
    /// The `x-request-id` of the request that made the change.
    pub request_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// An entry to record.
#[derive(Debug)]
pub struct NewAuditEntry<'a> {
    pub actor_id: Uuid,
    pub action: &'a str,
    pub target_type: &'a str,
    pub target_id: String,
    pub summary: Value,
    pub request_id: Option<&'a str>,
}

pub async fn insert(
    tx: &mut Tx,
    entry: &NewAuditEntry<'_>,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    on_tx!(tx, c => {
        sqlx::query(
            "insert into audit_log (id, actor_id, action, target_type, target_id, summary, request_id, created_at) \
             values ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(Uuid::now_v7())
        .bind(entry.actor_id)
        .bind(entry.action)
        .bind(entry.target_type)
        .bind(&entry.target_id)
        .bind(Json(&entry.summary))
        .bind(entry.request_id)
        .bind(at)
        .execute(c)
        .await
        .map(|_| ())
    })
}

/// Filters of the audit list.
#[derive(Debug, Default)]
pub struct AuditQuery {
    pub actor_id: Option<Uuid>,
    pub action: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// A page of entries, newest first, before the cursor.
pub async fn list(
    db: &Db,
    query: &AuditQuery,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<AuditEntry>, sqlx::Error> {
    on_pool!(db, pool => {
        sqlx::query_as::<_, AuditEntry>(
            "select id, actor_id, action, target_type, target_id, summary, request_id, created_at \
             from audit_log \
             where ($1 is null or actor_id = $1) and ($2 is null or action = $2) \
             and ($3 is null or created_at >= $3) and ($4 is null or created_at < $4) \
             and ($5 is null or id < $5) \
             order by id desc limit $6",
        )
        .bind(query.actor_id)
        .bind(query.action.as_deref())
        .bind(query.since)
        .bind(query.until)
        .bind(before)
        .bind(limit)
        .fetch_all(pool)
        .await
    })
}
