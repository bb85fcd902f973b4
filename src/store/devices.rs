//! Queries on `devices`: the push targets of each user.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Db, Tx};
use crate::store::{on_pool, on_tx};

/// A push target as stored. `target` is what the provider addresses: a Web Push endpoint,
/// an FCM registration token or an APNs device token.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Device {
    pub id: Uuid,
    pub user_id: Uuid,
    /// `webpush`, `fcm` or `apns`.
    pub kind: String,
    pub target: String,
    /// Web Push: the subscription's public key, base64url of an uncompressed P-256 point.
    pub p256dh: Option<String>,
    /// Web Push: the subscription's 16-byte auth secret, base64url.
    pub auth: Option<String>,
    /// APNs: the app's bundle id.
    pub topic: Option<String>,
    /// APNs: `sandbox` or `production`.
    pub environment: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str =
    "id, user_id, kind, target, p256dh, auth, topic, environment, created_at, last_used_at";

/// Takes the user's row lock on PostgreSQL, so that concurrent registrations of one user
/// are counted one after the other (SQLite has one writer at a time anyway).
pub async fn lock_user(tx: &mut Tx, user_id: Uuid) -> Result<(), sqlx::Error> {
    if let Tx::Postgres(c) = tx {
        sqlx::query("select id from users where id = $1 for update")
            .bind(user_id)
            .fetch_optional(&mut **c)
            .await?;
    }
    Ok(())
}

/// The user's device with this kind and target, if registered.
pub async fn find(
    tx: &mut Tx,
    user_id: Uuid,
    kind: &str,
    target: &str,
) -> Result<Option<Device>, sqlx::Error> {
    let sql =
        format!("select {COLUMNS} from devices where user_id = $1 and kind = $2 and target = $3");
    on_tx!(tx, c => sqlx::query_as::<_, Device>(sqlx::AssertSqlSafe(sql))
        .bind(user_id).bind(kind).bind(target).fetch_optional(c).await)
}

/// How many devices the user has.
pub async fn count(tx: &mut Tx, user_id: Uuid) -> Result<i64, sqlx::Error> {
    on_tx!(tx, c => sqlx::query_scalar::<_, i64>("select count(*) from devices where user_id = $1")
        .bind(user_id).fetch_one(c).await)
}

/// Stores a new device.
pub async fn insert(tx: &mut Tx, d: &Device) -> Result<(), sqlx::Error> {
    on_tx!(tx, c => sqlx::query(
        "insert into devices (id, user_id, kind, target, p256dh, auth, topic, environment, created_at) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(d.id).bind(d.user_id).bind(&d.kind).bind(&d.target).bind(&d.p256dh).bind(&d.auth)
    .bind(&d.topic).bind(&d.environment).bind(d.created_at)
    .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Replaces what a registration may change of an existing device (a subscription's keys,
/// an APNs token's topic and environment).
pub async fn update_details(tx: &mut Tx, d: &Device) -> Result<(), sqlx::Error> {
    on_tx!(tx, c => sqlx::query(
        "update devices set p256dh = $2, auth = $3, topic = $4, environment = $5 where id = $1",
    )
    .bind(d.id).bind(&d.p256dh).bind(&d.auth).bind(&d.topic).bind(&d.environment)
    .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// The user's devices, oldest first.
pub async fn list(db: &Db, user_id: Uuid) -> Result<Vec<Device>, sqlx::Error> {
    let sql = format!("select {COLUMNS} from devices where user_id = $1 order by id");
    on_pool!(db, p => sqlx::query_as::<_, Device>(sqlx::AssertSqlSafe(sql))
        .bind(user_id).fetch_all(p).await)
}

/// The devices of these users, oldest first.
pub async fn of_users(db: &Db, users: &[Uuid]) -> Result<Vec<Device>, sqlx::Error> {
    if users.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "select {COLUMNS} from devices where user_id in ({}) order by id",
        super::placeholders(1, users.len())
    );
    on_pool!(db, p => {
        let mut q = sqlx::query_as::<_, Device>(sqlx::AssertSqlSafe(sql));
        for user in users {
            q = q.bind(user);
        }
        q.fetch_all(p).await
    })
}

/// These devices, those that still exist.
pub async fn get_many(db: &Db, ids: &[Uuid]) -> Result<Vec<Device>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "select {COLUMNS} from devices where id in ({})",
        super::placeholders(1, ids.len())
    );
    on_pool!(db, p => {
        let mut q = sqlx::query_as::<_, Device>(sqlx::AssertSqlSafe(sql));
        for id in ids {
            q = q.bind(id);
        }
        q.fetch_all(p).await
    })
}

/// One device by id.
pub async fn get(db: &Db, id: Uuid) -> Result<Option<Device>, sqlx::Error> {
    let sql = format!("select {COLUMNS} from devices where id = $1");
    on_pool!(db, p => sqlx::query_as::<_, Device>(sqlx::AssertSqlSafe(sql))
        .bind(id).fetch_optional(p).await)
}

/// Deletes a device of the user's; whether there was one.
pub async fn delete_of_user(db: &Db, user_id: Uuid, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = on_pool!(db, p => sqlx::query("delete from devices where id = $1 and user_id = $2")
        .bind(id).bind(user_id).execute(p).await.map(|r| r.rows_affected()))?;
    Ok(done > 0)
}

/// Deletes a device whoever's it is; whether there was one.
pub async fn delete(db: &Db, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = on_pool!(db, p => sqlx::query("delete from devices where id = $1")
        .bind(id).execute(p).await.map(|r| r.rows_affected()))?;
    Ok(done > 0)
}

/// Records that something was delivered to the device.
pub async fn mark_used(db: &Db, id: Uuid, at: DateTime<Utc>) -> Result<(), sqlx::Error> {
    on_pool!(db, p => sqlx::query("update devices set last_used_at = $2 where id = $1")
        .bind(id).bind(at).execute(p).await.map(|r| r.rows_affected()))?;
    Ok(())
}
