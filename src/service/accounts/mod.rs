//! Accounts: registration, login, refresh tokens, password changes, and who a request's
//! access token says the caller is. Each operation owns its transaction; handlers validate
//! and call these.

pub mod cache;
pub mod emails;
pub mod password;
pub mod tokens;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use serde::Serialize;
use uuid::Uuid;

use self::cache::Access;
pub use self::cache::TokenCache;
use self::password::Hasher;
use self::tokens::TokenKeys;
use crate::config::Config;
use crate::domain::{Email, NewPassword, Role};
use crate::events::{self, outbox};
use crate::service::Actor;
use crate::service::error::{ServiceError, ServiceResult};
use crate::store::refresh_tokens::RefreshToken;
use crate::store::users::User;
use crate::store::{Db, Tx, now, refresh_tokens, users};

/// What the account operations need: the database, the password hasher, the token keys
/// and the instance's token cache.
#[derive(Clone)]
pub struct Accounts {
    pub db: Db,
    pub hasher: Arc<Hasher>,
    pub tokens: Arc<TokenKeys>,
    /// Who was lately found allowed; an operation that revokes a user's sessions clears
    /// their entry once it has committed.
    pub token_cache: Arc<TokenCache>,
    /// How long a rotated refresh token may still be presented (a client's retry after a
    /// lost response) and get the pair it was rotated into.
    pub refresh_reuse_grace: Duration,
}

impl Accounts {
    /// The accounts of a server or a command: the hasher sized and the token keys loaded
    /// (or generated into the data directory) as the settings say.
    pub fn new(db: Db, config: &Config) -> anyhow::Result<Accounts> {
        Ok(Accounts {
            db,
            hasher: Arc::new(Hasher::new(
                config.hash_concurrency,
                config.hash_queue_timeout,
            )),
            tokens: Arc::new(TokenKeys::load(config)?),
            token_cache: Arc::new(TokenCache::new(config.auth_cache_ttl)),
            refresh_reuse_grace: config.refresh_reuse_grace,
        })
    }
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub id: Uuid,
    pub email: String,
    /// The role as stored now (a role change also bumps the token version).
    pub role: Role,
    /// The token version the request's token was issued under.
    pub token_version: i64,
    /// When the presented access token expires (seconds since the epoch).
    pub expires_at: i64,
}

impl CurrentUser {
    /// 403 unless the caller has at least `role`.
    pub fn require(&self, role: Role) -> ServiceResult<()> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ServiceError::forbidden(
                "forbidden",
                format!("this needs the {role} role"),
            ))
        }
    }
}

/// Checks an access token and that it still stands: the user exists, is enabled, and has
/// not bumped their token version since it was issued. What the cache holds of the user
/// answers without a database read (see [`cache`]); a token newer than the cached version
/// (issued on another instance whose revocation has not reached this one yet) is checked
/// against the database.
pub async fn authenticate(
    db: &Db,
    tokens: &TokenKeys,
    cache: &TokenCache,
    token: &str,
) -> ServiceResult<CurrentUser> {
    let claims = tokens.verify(token)?;
    let revoked = || {
        ServiceError::unauthorized(
            "token_revoked",
            "the access token has been revoked; log in again",
        )
    };
    let current = |access: Access| CurrentUser {
        id: claims.sub,
        email: access.email,
        role: access.role,
        token_version: access.token_version,
        expires_at: claims.exp,
    };
    if let Some(access) = cache.get(claims.sub) {
        // Versions only grow: a token below the version read is revoked for good.
        if access.token_version > claims.tv {
            return Err(revoked());
        }
        if access.token_version == claims.tv {
            return Ok(current(access));
        }
    }
    let read_at = Instant::now();
    let user = users::find(db, claims.sub).await?.ok_or_else(revoked)?;
    let access = Access::of(&user).ok_or_else(revoked)?;
    cache.insert(user.id, access.clone(), read_at);
    if access.token_version != claims.tv {
        return Err(revoked());
    }
    Ok(current(access))
}

/// What login, refresh and a password change answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
}

/// Creates an account.
#[tracing::instrument(skip_all, fields(role = %role))]
pub async fn register(
    accounts: &Accounts,
    email: &Email,
    password: &NewPassword,
    role: Role,
) -> ServiceResult<User> {
    let hash = accounts.hasher.hash(password.as_str().to_owned()).await?;
    let mut tx = accounts.db.begin().await?;
    let user = users::insert(&mut tx, email, &hash, role).await?;
    tx.commit().await?;
    tracing::info!(user_id = %user.id, "user registered");
    Ok(user)
}

/// Checks a password and starts a new refresh-token family.
#[tracing::instrument(skip_all)]
pub async fn login(
    accounts: &Accounts,
    email: &Email,
    password: String,
) -> ServiceResult<TokenPair> {
    let invalid =
        || ServiceError::unauthorized("invalid_credentials", "the email or password is wrong");
    let Some(credentials) = users::credentials_by_email(&accounts.db, email).await? else {
        // Spend the same time as a real check, so response times do not reveal accounts.
        accounts.hasher.verify_dummy(password).await?;
        return Err(invalid());
    };
    if !accounts
        .hasher
        .verify(password, credentials.password_hash)
        .await?
    {
        return Err(invalid());
    }
    let user = credentials.user;
    if user.disabled {
        return Err(ServiceError::forbidden(
            "account_disabled",
            "this account is disabled",
        ));
    }
    let mut tx = accounts.db.begin().await?;
    let pair = issue_pair(accounts, &mut tx, &user, Uuid::now_v7()).await?;
    tx.commit().await?;
    tracing::info!(user_id = %user.id, "user logged in");
    Ok(pair)
}

/// Exchanges a refresh token for a new pair. A token presented a second time means it was
/// stolen or replayed: its whole family is revoked. Except moments after its rotation
/// (`TIDINGS_REFRESH_REUSE_GRACE`): two tabs of one browser refreshing at once both get
/// the pair the first one got (see [`successor_in_grace`]).
#[tracing::instrument(skip_all)]
pub async fn refresh(accounts: &Accounts, refresh_token: &str) -> ServiceResult<TokenPair> {
    let hash = tokens::hash_refresh_token(refresh_token);
    let mut tx = accounts.db.begin().await?;
    let invalid =
        || ServiceError::unauthorized("invalid_refresh_token", "the refresh token is not valid");
    let Some(found) = refresh_tokens::find_by_hash(&mut tx, &hash).await? else {
        return Err(invalid());
    };
    // The user's row, locked, and then the token read again: a logout-all, password change
    // or logout of this user that committed meanwhile is seen, and one that comes later
    // waits for this refresh and then revokes the token it issues too. A concurrent
    // refresh of the same token waits here too, and then finds it rotated.
    let user = users::lock(&mut tx, found.user_id).await?;
    let Some(stored) = refresh_tokens::find_by_hash(&mut tx, &hash).await? else {
        return Err(invalid());
    };
    if stored.revoked_at.is_some() {
        return Err(revoked());
    }
    let user = user.filter(|u| !u.disabled);
    if stored.rotated_at.is_some() {
        if let Some(user) = &user
            && let Some(successor) =
                successor_in_grace(accounts, &mut tx, &stored, refresh_token).await?
        {
            // Nothing was written; this ends the lock on the user's row.
            tx.commit().await?;
            tracing::info!(user_id = %user.id, family_id = %stored.family_id, "a refresh token was refreshed again within the grace window; its successor is returned");
            return token_pair(accounts, user, successor);
        }
        return reused(tx, &stored).await;
    }
    if stored.expires_at <= Utc::now() {
        return Err(ServiceError::unauthorized(
            "refresh_token_expired",
            "the refresh token has expired; log in again",
        ));
    }
    let Some(user) = user else {
        return Err(ServiceError::unauthorized(
            "refresh_token_revoked",
            "the account is disabled",
        ));
    };
    let pair = issue_pair(accounts, &mut tx, &user, stored.family_id).await?;
    let seal = tokens::seal_successor(refresh_token, &pair.refresh_token)?;
    if !refresh_tokens::mark_rotated(&mut tx, stored.id, &seal).await? {
        return reused(tx, &stored).await;
    }
    tx.commit().await?;
    Ok(pair)
}

/// The longest chain of rotations a repeated refresh follows (see [`successor_in_grace`]);
/// more within the grace window is no browser's doing.
const MAX_GRACE_HOPS: usize = 4;

/// The live successor of `token`, if it was rotated within the grace window: its sealed
/// successor, or, if that was rotated in turn (the first tab refreshed again already), the
/// successor's successor and so on, since a rotated token would be of no use to the
/// caller. `None` (a reuse) when the window has passed, the seal is missing (rotated before
/// it was kept) or any token on the way is revoked or expired.
async fn successor_in_grace(
    accounts: &Accounts,
    tx: &mut Tx,
    stored: &RefreshToken,
    token: &str,
) -> ServiceResult<Option<String>> {
    let grace = chrono::Duration::from_std(accounts.refresh_reuse_grace)
        .context("the refresh grace window is out of range")?;
    let now = Utc::now();
    let (mut current, mut token) = (stored.clone(), token.to_owned());
    for _ in 0..MAX_GRACE_HOPS {
        let (Some(rotated_at), Some(seal)) = (current.rotated_at, &current.successor_seal) else {
            return Ok(None);
        };
        if now - rotated_at > grace {
            return Ok(None);
        }
        let Some(successor) = tokens::unseal_successor(&token, seal) else {
            return Ok(None);
        };
        let hash = tokens::hash_refresh_token(&successor);
        let Some(next) = refresh_tokens::find_by_hash(tx, &hash).await? else {
            return Ok(None);
        };
        if next.family_id != current.family_id
            || next.revoked_at.is_some()
            || next.expires_at <= now
        {
            return Ok(None);
        }
        if next.rotated_at.is_none() {
            return Ok(Some(successor));
        }
        (current, token) = (next, successor);
    }
    Ok(None)
}

fn revoked() -> ServiceError {
    ServiceError::unauthorized(
        "refresh_token_revoked",
        "the refresh token has been revoked; log in again",
    )
}

/// Revokes the family of a token presented again, and says so.
async fn reused(mut tx: Tx, stored: &RefreshToken) -> ServiceResult<TokenPair> {
    refresh_tokens::revoke_family(&mut tx, stored.family_id).await?;
    tx.commit().await?;
    tracing::warn!(user_id = %stored.user_id, family_id = %stored.family_id, "a rotated refresh token was reused; its family is revoked");
    Err(ServiceError::unauthorized(
        "refresh_token_reused",
        "the refresh token was already used; every session from that login is ended",
    ))
}

/// Ends the session a refresh token belongs to. Unknown tokens are ignored: logging out
/// twice is not an error.
#[tracing::instrument(skip_all)]
pub async fn logout(accounts: &Accounts, refresh_token: &str) -> ServiceResult<()> {
    let hash = tokens::hash_refresh_token(refresh_token);
    let mut tx = accounts.db.begin().await?;
    if let Some(stored) = refresh_tokens::find_by_hash(&mut tx, &hash).await? {
        // In turn with a refresh of the same session (see `refresh`), whose new token
        // this then revokes as well.
        users::lock(&mut tx, stored.user_id).await?;
        refresh_tokens::revoke_family(&mut tx, stored.family_id).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Ends every session of the user: refresh tokens are revoked and access tokens refused.
#[tracing::instrument(skip_all, fields(user_id = %user.id))]
pub async fn logout_all(accounts: &Accounts, user: &CurrentUser) -> ServiceResult<()> {
    let mut tx = accounts.db.begin().await?;
    let updated = users::bump_token_version(&mut tx, user.id).await?;
    refresh_tokens::revoke_all_for_user(&mut tx, user.id).await?;
    let revoked = events::sessions_revoked(user.id, updated.token_version);
    outbox::commit(tx, &[revoked]).await?;
    accounts.token_cache.revoke(user.id, updated.token_version);
    Ok(())
}

/// Changes the password after checking the current one. Every earlier token stops
/// working; the caller gets a fresh pair to stay logged in.
#[tracing::instrument(skip_all, fields(user_id = %user.id))]
pub async fn change_password(
    accounts: &Accounts,
    user: &CurrentUser,
    current: String,
    new: &NewPassword,
) -> ServiceResult<TokenPair> {
    let credentials = users::credentials_by_id(&accounts.db, user.id)
        .await?
        .ok_or_else(|| ServiceError::not_found("user"))?;
    // Both hashes are computed before the transaction: argon2 takes tens of milliseconds,
    // and SQLite's write lock would be held all that time.
    if !accounts
        .hasher
        .verify(current, credentials.password_hash)
        .await?
    {
        return Err(ServiceError::forbidden(
            "wrong_password",
            "the current password is wrong",
        ));
    }
    let hash = accounts.hasher.hash(new.as_str().to_owned()).await?;
    let mut tx = accounts.db.begin().await?;
    let updated = users::set_password(&mut tx, user.id, &hash).await?;
    refresh_tokens::revoke_all_for_user(&mut tx, user.id).await?;
    let revoked = events::sessions_revoked(user.id, updated.token_version);
    let pair = issue_pair(accounts, &mut tx, &updated, Uuid::now_v7()).await?;
    outbox::commit(tx, &[revoked]).await?;
    accounts.token_cache.revoke(user.id, updated.token_version);
    tracing::info!("password changed");
    Ok(pair)
}

async fn issue_pair(
    accounts: &Accounts,
    tx: &mut Tx,
    user: &User,
    family_id: Uuid,
) -> ServiceResult<TokenPair> {
    let (refresh_token, hash) = tokens::new_refresh_token();
    let expires_at = Utc::now() + accounts.tokens.refresh_ttl;
    refresh_tokens::insert(tx, user.id, family_id, &hash, expires_at).await?;
    token_pair(accounts, user, refresh_token)
}

/// A refresh token with a fresh access token.
fn token_pair(accounts: &Accounts, user: &User, refresh_token: String) -> ServiceResult<TokenPair> {
    Ok(TokenPair {
        access_token: accounts.tokens.issue(user)?,
        refresh_token,
        token_type: "Bearer",
        expires_in: accounts.tokens.access_ttl.as_secs(),
    })
}

/// Changes a user's role or disables them, for an admin other than that user. Either ends
/// the user's sessions: the role rides in access tokens, the token cache and live
/// connections too, which close and reconnect with a new token.
pub async fn set_access(
    accounts: &Accounts,
    admin: &Actor,
    id: Uuid,
    role: Option<Role>,
    disabled: Option<bool>,
) -> ServiceResult<User> {
    if id == admin.user.id {
        // An admin demoting or disabling themself could leave nobody to administer.
        return Err(ServiceError::conflict(
            "cannot_modify_self",
            "admins cannot change their own role or disable themselves",
        ));
    }
    let mut tx = accounts.db.begin().await?;
    let user = users::update_access(&mut tx, id, role, disabled)
        .await?
        .ok_or_else(|| ServiceError::not_found("user"))?;
    if user.disabled {
        refresh_tokens::revoke_all_for_user(&mut tx, id).await?;
    }
    let revoked = events::sessions_revoked(id, user.token_version);
    let change = serde_json::json!({ "role": role, "disabled": disabled });
    admin
        .audit(&mut tx, "user.update", "user", id, change, now())
        .await?;
    outbox::commit(tx, &[revoked]).await?;
    accounts.token_cache.revoke(id, user.token_version);
    tracing::info!(role = %user.role, disabled = user.disabled, "user access changed");
    Ok(user)
}
