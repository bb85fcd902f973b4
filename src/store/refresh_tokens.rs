//! Queries on `refresh_tokens`: opaque tokens, stored only as hashes, in rotation families.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Tx, now};
use crate::store::on_tx;

/// A stored refresh token.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RefreshToken {
    pub id: Uuid,
    pub user_id: Uuid,
    /// Shared by every token rotated from one login.
    pub family_id: Uuid,
    pub expires_at: DateTime<Utc>,
    /// Set when this token was exchanged for the next one.
    pub rotated_at: Option<DateTime<Utc>>,
    /// That next token, sealed with this one (see `tokens::seal_successor`), for a repeat
    /// of the refresh within the grace window.
    pub successor_seal: Option<Vec<u8>>,
    /// Set by logout, logout-all, a password change or a detected reuse.
    pub revoked_at: Option<DateTime<Utc>>,
}

pub async fn insert(
    tx: &mut Tx,
    user_id: Uuid,
    family_id: Uuid,
    token_hash: &[u8],
    expires_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    on_tx!(tx, c => {
        sqlx::query(
            "insert into refresh_tokens (id, user_id, family_id, token_hash, created_at, expires_at) \
             values ($1, $2, $3, $4, $5, $6)",
        )
        .bind(Uuid::now_v7())
        .bind(user_id)
        .bind(family_id)
        .bind(token_hash)
        .bind(now())
        .bind(expires_at)
        .execute(c)
        .await
        .map(|done| done.rows_affected())
    })?;
    Ok(())
}

pub async fn find_by_hash(
    tx: &mut Tx,
    token_hash: &[u8],
) -> Result<Option<RefreshToken>, sqlx::Error> {
    on_tx!(tx, c => {
        sqlx::query_as::<_, RefreshToken>(
            "select id, user_id, family_id, expires_at, rotated_at, successor_seal, revoked_at \
             from refresh_tokens where token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(c)
        .await
    })
}

/// Marks a live token as used, keeping its sealed successor. False if it was already
/// rotated or revoked, which under concurrency means another request won the race: that is
/// a reuse too.
pub async fn mark_rotated(
    tx: &mut Tx,
    id: Uuid,
    successor_seal: &[u8],
) -> Result<bool, sqlx::Error> {
    let done = on_tx!(tx, c => {
        sqlx::query(
            "update refresh_tokens set rotated_at = $2, successor_seal = $3 \
             where id = $1 and rotated_at is null and revoked_at is null",
        )
        .bind(id)
        .bind(now())
        .bind(successor_seal)
        .execute(c)
        .await
        .map(|done| done.rows_affected())
    })?;
    Ok(done == 1)
}

pub async fn revoke_family(tx: &mut Tx, family_id: Uuid) -> Result<(), sqlx::Error> {
    on_tx!(tx, c => {
        sqlx::query("update refresh_tokens set revoked_at = $2 where family_id = $1 and revoked_at is null")
            .bind(family_id)
            .bind(now())
            .execute(c)
            .await
            .map(|done| done.rows_affected())
    })?;
    Ok(())
}

pub async fn revoke_all_for_user(tx: &mut Tx, user_id: Uuid) -> Result<(), sqlx::Error> {
    on_tx!(tx, c => {
        sqlx::query("update refresh_tokens set revoked_at = $2 where user_id = $1 and revoked_at is null")
            .bind(user_id)
            .bind(now())
            .execute(c)
            .await
            .map(|done| done.rows_affected())
    })?;
    Ok(())
}
