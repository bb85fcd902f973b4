//! Queries on `users`.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Db, Tx, now};
use crate::domain::{Email, Role};
use crate::store::{on_pool, on_tx};

/// A user as stored, without the password hash.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    /// UUIDv7: time-ordered, so it doubles as the pagination key.
    pub id: Uuid,
    /// Normalised address.
    pub email: String,
    #[sqlx(try_from = "String")]
    pub role: Role,
    /// Access tokens carry the version they were issued under.
    pub token_version: i64,
    /// A disabled user can neither log in nor use earlier tokens.
    pub disabled: bool,
    /// Whether the user opened a verification link sent to `email` (or reset their
    /// password through one).
    pub email_verified: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A user with the hash to check a password against.
#[derive(Debug, sqlx::FromRow)]
pub struct Credentials {
    #[sqlx(flatten)]
    pub user: User,
    pub password_hash: String,
}

/// The columns of [`User`], for `select` and `returning`.
macro_rules! user_columns {
    () => {
        "id, email, role, token_version, disabled, email_verified, created_at, updated_at"
    };
}

/// Inserts a user. A taken email is a unique violation, which `ServiceError` calls a conflict.
pub async fn insert(
    tx: &mut Tx,
    email: &Email,
    password_hash: &str,
    role: Role,
) -> Result<User, sqlx::Error> {
    let at = now();
    on_tx!(tx, c => {
        sqlx::query_as::<_, User>(concat!(
            "insert into users (id, email, password_hash, role, created_at, updated_at) \
             values ($1, $2, $3, $4, $5, $5) returning ",
            user_columns!()
        ))
        .bind(Uuid::now_v7())
        .bind(email.as_str())
        .bind(password_hash)
        .bind(role.as_str())
        .bind(at)
        .fetch_one(c)
        .await
    })
}

pub async fn find(db: &Db, id: Uuid) -> Result<Option<User>, sqlx::Error> {
    on_pool!(db, pool => {
        sqlx::query_as::<_, User>(concat!("select ", user_columns!(), " from users where id = $1"))
            .bind(id)
            .fetch_optional(pool)
            .await
    })
}

/// Reads a user inside a transaction and, on PostgreSQL, locks the row until it ends: the
/// token operations of one user (refresh, logout, logout-all, a password or access change)
/// then take their turns, and none can miss a refresh token another is issuing. SQLite's
/// transactions take the one write lock at `BEGIN IMMEDIATE`, which orders them already.
pub async fn lock(tx: &mut Tx, id: Uuid) -> Result<Option<User>, sqlx::Error> {
    // Built from constants only.
    let sql = format!(
        concat!("select ", user_columns!(), " from users where id = $1{}"),
        tx.for_update()
    );
    on_tx!(tx, c => sqlx::query_as::<_, User>(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(c).await)
}

pub async fn find_by_email(db: &Db, email: &Email) -> Result<Option<User>, sqlx::Error> {
    on_pool!(db, pool => {
        sqlx::query_as::<_, User>(concat!("select ", user_columns!(), " from users where email = $1"))
            .bind(email.as_str())
            .fetch_optional(pool)
            .await
    })
}

/// Marks the address verified, if it is still `email` (a link is for the address it was
/// sent to). `None` if the user is gone or has another address now.
pub async fn mark_verified(
    tx: &mut Tx,
    id: Uuid,
    email: &str,
) -> Result<Option<User>, sqlx::Error> {
    on_tx!(tx, c => {
        sqlx::query_as::<_, User>(concat!(
            "update users set email_verified = true, updated_at = $3 \
             where id = $1 and email = $2 returning ",
            user_columns!()
        ))
        .bind(id)
        .bind(email)
        .bind(now())
        .fetch_optional(c)
        .await
    })
}

pub async fn credentials_by_email(
    db: &Db,
    email: &Email,
) -> Result<Option<Credentials>, sqlx::Error> {
    on_pool!(db, pool => {
        sqlx::query_as::<_, Credentials>(concat!(
            "select password_hash, ", user_columns!(), " from users where email = $1"
        ))
        .bind(email.as_str())
        .fetch_optional(pool)
        .await
    })
}

pub async fn credentials_by_id(db: &Db, id: Uuid) -> Result<Option<Credentials>, sqlx::Error> {
    on_pool!(db, c => {
        sqlx::query_as::<_, Credentials>(concat!(
            "select password_hash, ", user_columns!(), " from users where id = $1"
        ))
        .bind(id)
        .fetch_optional(c)
        .await
    })
}

/// Replaces the password hash and bumps the token version, so earlier tokens stop working.
pub async fn set_password(tx: &mut Tx, id: Uuid, password_hash: &str) -> Result<User, sqlx::Error> {
    on_tx!(tx, c => {
        sqlx::query_as::<_, User>(concat!(
            "update users set password_hash = $2, token_version = token_version + 1, \
             updated_at = $3 where id = $1 returning ",
            user_columns!()
        ))
        .bind(id)
        .bind(password_hash)
        .bind(now())
        .fetch_one(c)
        .await
    })
}

/// Bumps the token version: every access token issued before is refused from now on.
pub async fn bump_token_version(tx: &mut Tx, id: Uuid) -> Result<User, sqlx::Error> {
    on_tx!(tx, c => {
        sqlx::query_as::<_, User>(concat!(
            "update users set token_version = token_version + 1, updated_at = $2 \
             where id = $1 returning ",
            user_columns!()
        ))
        .bind(id)
        .bind(now())
        .fetch_one(c)
        .await
    })
}

/// Changes a role or the disabled flag; either change bumps the token version, since the
/// role rides in access tokens and a disabled user must lose access at once.
pub async fn update_access(
    tx: &mut Tx,
    id: Uuid,
    role: Option<Role>,
    disabled: Option<bool>,
) -> Result<Option<User>, sqlx::Error> {
    on_tx!(tx, c => {
        sqlx::query_as::<_, User>(concat!(
            "update users set role = coalesce($2, role), disabled = coalesce($3, disabled), \
             token_version = token_version + 1, updated_at = $4 where id = $1 returning ",
            user_columns!()
        ))
        .bind(id)
        .bind(role.map(Role::as_str))
        .bind(disabled)
        .bind(now())
        .fetch_optional(c)
        .await
    })
}

/// One page of users in creation order, after the given id.
pub async fn list(db: &Db, after: Option<Uuid>, limit: i64) -> Result<Vec<User>, sqlx::Error> {
    on_pool!(db, pool => {
        sqlx::query_as::<_, User>(concat!(
            "select ", user_columns!(), " from users \
             where ($1 is null or id > $1) order by id limit $2"
        ))
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await
    })
}
