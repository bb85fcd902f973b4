//! Queries on `notifications` and `notification_mutes`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::AssertSqlSafe;
use sqlx::types::Json;
use uuid::Uuid;

use super::{Db, Tx, placeholders};
use crate::store::{on_pool, on_tx};

/// A notification, as stored and as the API shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Notification {
    pub id: Uuid,
    pub user_id: Uuid,
    /// order_status, low_stock or broadcast.
    pub kind: String,
    pub title: String,
    pub body: String,
    /// Details for the client, such as the order id.
    #[schema(value_type = Object)]
    pub data: Json<Value>,
    pub read_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// 1 while unread, 2 once read: being read is the one change a notification has.
    /// Events carry it, as they carry the version of every resource they describe.
    pub version: i64,
}

/// The version of a read notification.
pub const READ_VERSION: i64 = 2;

/// The columns of a [`Notification`]; its version follows from `read_at`, so no column
/// stores it.
macro_rules! notification_columns {
    () => {
        "id, user_id, kind, title, body, data, read_at, created_at, \
         cast(case when read_at is null then 1 else 2 end as bigint) as version"
    };
}

/// Who a notification goes to, before mutes.
#[derive(Debug, Clone)]
pub enum Recipients {
    All,
    Staff,
    Users(Vec<Uuid>),
}

/// The enabled users among the recipients who have not muted `kind`.
pub async fn resolve(
    tx: &mut Tx,
    recipients: &Recipients,
    kind: &str,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let ids: &[Uuid] = match recipients {
        Recipients::Users(ids) => ids,
        _ => &[],
    };
    let scope = match recipients {
        Recipients::All => "true".to_owned(),
        Recipients::Staff => "u.role in ('staff', 'admin')".to_owned(),
        Recipients::Users(ids) => format!("u.id in ({})", placeholders(2, ids.len())),
    };
    let sql = format!(
        "select u.id from users u where {scope} and not u.disabled and not exists \
         (select 1 from notification_mutes m where m.user_id = u.id and m.kind = $1) order by u.id"
    );
    on_tx!(tx, c => {
        let mut query = sqlx::query_scalar::<_, Uuid>(AssertSqlSafe(sql)).bind(kind);
        for id in ids {
            query = query.bind(id);
        }
        query.fetch_all(c).await
    })
}

/// Which of `ids` are users (to refuse a broadcast to unknown ones).
pub async fn existing_users(tx: &mut Tx, ids: &[Uuid]) -> Result<Vec<Uuid>, sqlx::Error> {
    let sql = format!(
        "select id from users where id in ({})",
        placeholders(1, ids.len())
    );
    on_tx!(tx, c => {
        let mut query = sqlx::query_scalar::<_, Uuid>(AssertSqlSafe(sql));
        for id in ids {
            query = query.bind(id);
        }
        query.fetch_all(c).await
    })
}

/// Inserts one notification per user: one statement on PostgreSQL, however many users.
pub async fn insert_many(
    tx: &mut Tx,
    users: &[Uuid],
    kind: &str,
    title: &str,
    body: &str,
    data: &Value,
    at: DateTime<Utc>,
) -> Result<Vec<Notification>, sqlx::Error> {
    let made: Vec<Notification> = users
        .iter()
        .map(|user_id| Notification {
            id: Uuid::now_v7(),
            user_id: *user_id,
            kind: kind.to_owned(),
            title: title.to_owned(),
            body: body.to_owned(),
            data: Json(data.clone()),
            read_at: None,
            created_at: at,
            version: 1,
        })
        .collect();
    if made.is_empty() {
        return Ok(made);
    }
    match tx {
        Tx::Postgres(c) => {
            sqlx::query(
                "insert into notifications (id, user_id, kind, title, body, data, created_at) \
                 select id, user_id, $3, $4, $5, $6, $7 from unnest($1::uuid[], $2::uuid[]) as n(id, user_id)",
            )
            .bind(made.iter().map(|n| n.id).collect::<Vec<_>>())
            .bind(users)
            .bind(kind)
            .bind(title)
            .bind(body)
            .bind(Json(data))
            .bind(at)
            .execute(&mut **c)
            .await?;
        }
        Tx::Sqlite(c) => {
            for n in &made {
                sqlx::query(
                    "insert into notifications (id, user_id, kind, title, body, data, created_at) \
                     values ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(n.id)
                .bind(n.user_id)
                .bind(kind)
                .bind(title)
                .bind(body)
                .bind(Json(data))
                .bind(at)
                .execute(&mut **c)
                .await?;
            }
        }
    }
    Ok(made)
}

/// A page of a user's notifications, newest first.
pub async fn list(
    db: &Db,
    user_id: Uuid,
    unread_only: bool,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Notification>, sqlx::Error> {
    on_pool!(db, pool => {
        sqlx::query_as::<_, Notification>(concat!(
            "select ", notification_columns!(), " from notifications \
             where user_id = $1 and ($2 = false or read_at is null) and ($3 is null or id < $3) \
             order by id desc limit $4"
        ))
        .bind(user_id)
        .bind(unread_only)
        .bind(before)
        .bind(limit)
        .fetch_all(pool)
        .await
    })
}

pub async fn unread_count(db: &Db, user_id: Uuid) -> Result<i64, sqlx::Error> {
    on_pool!(db, pool => {
        sqlx::query_scalar::<_, i64>("select count(*) from notifications where user_id = $1 and read_at is null")
            .bind(user_id)
            .fetch_one(pool)
            .await
    })
}

/// Marks one of the user's notifications read. `None` if it is not theirs; the row as it
/// was already if it had been read before.
pub async fn mark_read(
    tx: &mut Tx,
    user_id: Uuid,
    id: Uuid,
    at: DateTime<Utc>,
) -> Result<Option<(Notification, bool)>, sqlx::Error> {
    let updated = on_tx!(tx, c => {
        sqlx::query_as::<_, Notification>(concat!(
            "update notifications set read_at = $3 where id = $1 and user_id = $2 and read_at is null returning ",
            notification_columns!()
        ))
        .bind(id)
        .bind(user_id)
        .bind(at)
        .fetch_optional(c)
        .await
    })?;
    if let Some(n) = updated {
        return Ok(Some((n, true)));
    }
    let existing = on_tx!(tx, c => {
        sqlx::query_as::<_, Notification>(concat!(
            "select ", notification_columns!(), " from notifications where id = $1 and user_id = $2"
        ))
        .bind(id)
        .bind(user_id)
        .fetch_optional(c)
        .await
    })?;
    Ok(existing.map(|n| (n, false)))
}

/// Marks every unread notification of the user read; their ids, in order.
pub async fn mark_all_read(
    tx: &mut Tx,
    user_id: Uuid,
    at: DateTime<Utc>,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let mut ids = on_tx!(tx, c => {
        sqlx::query_scalar::<_, Uuid>(
            "update notifications set read_at = $2 where user_id = $1 and read_at is null returning id",
        )
        .bind(user_id)
        .bind(at)
        .fetch_all(c)
        .await
    })?;
    ids.sort_unstable();
    Ok(ids)
}

pub async fn delete(tx: &mut Tx, user_id: Uuid, id: Uuid) -> Result<bool, sqlx::Error> {
    on_tx!(tx, c => {
        sqlx::query("delete from notifications where id = $1 and user_id = $2")
            .bind(id)
            .bind(user_id)
            .execute(c)
            .await
            .map(|done| done.rows_affected() == 1)
    })
}

pub async fn muted_kinds(db: &Db, user_id: Uuid) -> Result<Vec<String>, sqlx::Error> {
    on_pool!(db, pool => {
        sqlx::query_scalar::<_, String>("select kind from notification_mutes where user_id = $1 order by kind")
            .bind(user_id)
            .fetch_all(pool)
            .await
    })
}

/// Replaces the user's muted kinds.
pub async fn set_muted_kinds(
    tx: &mut Tx,
    user_id: Uuid,
    kinds: &[&str],
) -> Result<(), sqlx::Error> {
    on_tx!(tx, c => {
        sqlx::query("delete from notification_mutes where user_id = $1")
            .bind(user_id)
            .execute(&mut *c)
            .await
            .map(|_| ())
    })?;
    for kind in kinds {
        on_tx!(tx, c => {
            sqlx::query("insert into notification_mutes (user_id, kind) values ($1, $2)")
                .bind(user_id)
                .bind(*kind)
                .execute(c)
                .await
                .map(|_| ())
        })?;
    }
    Ok(())
}
