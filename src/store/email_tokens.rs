//! Queries on `email_tokens`: the single-use tokens of the links in emails (password reset,
//! address verification), stored only as hashes.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Db, Tx, now};
use crate::store::{on_pool, on_tx};

/// What a link is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    PasswordReset,
    VerifyEmail,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::PasswordReset => "password_reset",
            Purpose::VerifyEmail => "verify_email",
        }
    }
}

/// A token that was live when it was read (or that this call used up).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EmailToken {
    pub user_id: Uuid,
    /// The address the link was sent to.
    pub email: String,
}

pub async fn insert(
    tx: &mut Tx,
    user_id: Uuid,
    purpose: Purpose,
    token_hash: &[u8],
    email: &str,
    expires_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    on_tx!(tx, c => {
        sqlx::query(
            "insert into email_tokens (id, user_id, purpose, token_hash, email, created_at, expires_at) \
             values ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(Uuid::now_v7())
        .bind(user_id)
        .bind(purpose.as_str())
        .bind(token_hash)
        .bind(email)
        .bind(now())
        .bind(expires_at)
        .execute(c)
        .await
        .map(|done| done.rows_affected())
    })?;
    Ok(())
}

/// The token of this hash and purpose if it is unused and unexpired, without using it up
/// (to check a link before the slow work of what it does).
pub async fn find_live(
    db: &Db,
    token_hash: &[u8],
    purpose: Purpose,
) -> Result<Option<EmailToken>, sqlx::Error> {
    on_pool!(db, pool => {
        sqlx::query_as::<_, EmailToken>(
            "select user_id, email from email_tokens \
             where token_hash = $1 and purpose = $2 and used_at is null and expires_at > $3",
        )
        .bind(token_hash)
        .bind(purpose.as_str())
        .bind(now())
        .fetch_optional(pool)
        .await
    })
}

/// Uses the token up if it is live: of two requests with one link, one gets it and the
/// other `None`, as for a used, expired or unknown token.
pub async fn consume(
    tx: &mut Tx,
    token_hash: &[u8],
    purpose: Purpose,
) -> Result<Option<EmailToken>, sqlx::Error> {
    let at = now();
    on_tx!(tx, c => {
        sqlx::query_as::<_, EmailToken>(
            "update email_tokens set used_at = $3 \
             where token_hash = $1 and purpose = $2 and used_at is null and expires_at > $3 \
             returning user_id, email",
        )
        .bind(token_hash)
        .bind(purpose.as_str())
        .bind(at)
        .fetch_optional(c)
        .await
    })
}

/// Uses up every other live token of a user for a purpose: once a password is reset, the
/// other reset links sent before are of no use to anyone but whoever read that mailbox.
pub async fn consume_all(tx: &mut Tx, user_id: Uuid, purpose: Purpose) -> Result<(), sqlx::Error> {
    on_tx!(tx, c => {
        sqlx::query(
            "update email_tokens set used_at = $3 \
             where user_id = $1 and purpose = $2 and used_at is null",
        )
        .bind(user_id)
        .bind(purpose.as_str())
        .bind(now())
        .execute(c)
        .await
        .map(|done| done.rows_affected())
    })?;
    Ok(())
}

/// Drops tokens that expired more than a day ago, used or not: nothing reads them.
pub async fn delete_expired(tx: &mut Tx) -> Result<u64, sqlx::Error> {
    on_tx!(tx, c => {
        sqlx::query("delete from email_tokens where expires_at < $1")
            .bind(now() - chrono::Duration::days(1))
            .execute(c)
            .await
            .map(|done| done.rows_affected())
    })
}
