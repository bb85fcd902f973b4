//! The account operations that go through an email: a password reset and the verification
//! of an address. Each link carries a single-use token (256 random bits, base64url) that
//! is stored only as its SHA-256 hash, like a refresh token.
//!
//! The operations that make a link return the mail to send ([`Outgoing`]) once the token
//! has committed; the caller hands it to the [`Mailer`], usually in the background, so
//! that a mail server's trouble never fails the request.

use std::time::Duration;

use chrono::Utc;
use uuid::Uuid;

use super::{Accounts, tokens};
use crate::domain::{Email, NewPassword};
use crate::error::FieldError;
use crate::events::{self, outbox};
use crate::mail::{Mailer, Outgoing, templates};
use crate::service::error::{ServiceError, ServiceResult};
use crate::store::email_tokens::{self, Purpose};
use crate::store::users::User;
use crate::store::{Db, refresh_tokens, users};

/// How long a password reset link works: long enough to find the mail, short enough that
/// a mailbox read later (a forwarded mail, a shared computer) cannot take the account.
pub const RESET_VALIDITY: Duration = Duration::from_secs(30 * 60);

/// How long a verification link works: a day, since nothing is at stake while it waits.
pub const VERIFY_VALIDITY: Duration = Duration::from_secs(24 * 60 * 60);

/// What a used, expired or unknown link gets: the same answer for each, so that the
/// answer says nothing about tokens that exist.
fn invalid_token() -> ServiceError {
    ServiceError::BadToken {
        code: "invalid_token",
        detail: "the link is not valid: it was used already, has expired, or was never sent".into(),
    }
}

/// Stores a new link token of `purpose` for `user`, valid for `validity`; returns it.
async fn new_token(
    db: &Db,
    user: &User,
    purpose: Purpose,
    validity: Duration,
) -> ServiceResult<String> {
    let (token, hash) = tokens::new_refresh_token();
    let expires_at =
        Utc::now() + chrono::Duration::from_std(validity).map_err(anyhow::Error::from)?;
    let mut tx = db.begin().await?;
    // The table's housekeeping, where it grows.
    email_tokens::delete_expired(&mut tx).await?;
    email_tokens::insert(&mut tx, user.id, purpose, &hash, &user.email, expires_at).await?;
    tx.commit().await?;
    Ok(token)
}

/// The mail with a link that resets the password of the account of `email`, if there is
/// an enabled one and mail is on; `None` otherwise, which the caller must not let show
/// (the request is answered the same either way).
#[tracing::instrument(skip_all)]
pub async fn password_reset_mail(
    db: &Db,
    mailer: &Mailer,
    email: &Email,
) -> ServiceResult<Option<Outgoing>> {
    if !mailer.is_enabled() {
        return Ok(None);
    }
    let Some(user) = users::find_by_email(db, email).await? else {
        return Ok(None);
    };
    if user.disabled {
        return Ok(None);
    }
    let token = new_token(db, &user, Purpose::PasswordReset, RESET_VALIDITY).await?;
    tracing::info!(user_id = %user.id, "a password reset link is sent");
    Ok(Some(Outgoing {
        kind: "password_reset",
        email: templates::password_reset(&mailer.link("reset", &token), RESET_VALIDITY),
        to: user.email,
    }))
}

/// Sets a new password with a reset link's token and uses the token up. As after a
/// password change, every session ends: refresh tokens are revoked, access tokens refused
/// (the token version is bumped) and live connections closed (`user.sessions_revoked`).
/// The other reset links of the user stop working, and the address counts as verified:
/// the link was read there.
#[tracing::instrument(skip_all)]
pub async fn reset_password(
    accounts: &Accounts,
    token: &str,
    password: String,
) -> ServiceResult<()> {
    let hash = tokens::hash_refresh_token(token);
    // Checked first, so that a bad link costs no argon2 and the rules know the address.
    let live = email_tokens::find_live(&accounts.db, &hash, Purpose::PasswordReset)
        .await?
        .ok_or_else(invalid_token)?;
    let email = Email::parse(&live.email).ok();
    let new = NewPassword::parse(password, email.as_ref()).map_err(|message| {
        ServiceError::validation(vec![FieldError::new("password", "weak", message)])
    })?;
    // Hashed before the transaction: SQLite's write lock is not held through argon2.
    let password_hash = accounts.hasher.hash(new.as_str().to_owned()).await?;
    let mut tx = accounts.db.begin().await?;
    // Of two requests with the same link, the second finds it used here.
    let used = email_tokens::consume(&mut tx, &hash, Purpose::PasswordReset)
        .await?
        .ok_or_else(invalid_token)?;
    // In turn with the user's other token operations (see `users::lock`).
    users::lock(&mut tx, used.user_id)
        .await?
        .ok_or_else(invalid_token)?;
    let updated = users::set_password(&mut tx, used.user_id, &password_hash).await?;
    refresh_tokens::revoke_all_for_user(&mut tx, used.user_id).await?;
    email_tokens::consume_all(&mut tx, used.user_id, Purpose::PasswordReset).await?;
    users::mark_verified(&mut tx, used.user_id, &used.email).await?;
    let revoked = events::sessions_revoked(used.user_id, updated.token_version);
    outbox::commit(tx, &[revoked]).await?;
    accounts
        .token_cache
        .revoke(used.user_id, updated.token_version);
    tracing::info!(user_id = %used.user_id, "password reset through an emailed link");
    Ok(())
}

/// The mail with a link that verifies `user`'s address, if mail is on and the address is
/// not verified yet.
#[tracing::instrument(skip_all, fields(user_id = %user.id))]
pub async fn verification_mail(
    db: &Db,
    mailer: &Mailer,
    user: &User,
) -> ServiceResult<Option<Outgoing>> {
    if !mailer.is_enabled() || user.email_verified {
        return Ok(None);
    }
    let token = new_token(db, user, Purpose::VerifyEmail, VERIFY_VALIDITY).await?;
    Ok(Some(Outgoing {
        kind: "verify_email",
        email: templates::verification(&mailer.link("verify", &token), VERIFY_VALIDITY),
        to: user.email.clone(),
    }))
}

/// A new verification mail for the caller (a resend); 409 if their address is verified
/// already. `None` when mail is off.
pub async fn request_verification(
    db: &Db,
    mailer: &Mailer,
    user_id: Uuid,
) -> ServiceResult<Option<Outgoing>> {
    let user = users::find(db, user_id)
        .await?
        .ok_or_else(|| ServiceError::not_found("user"))?;
    if user.email_verified {
        return Err(ServiceError::conflict(
            "email_already_verified",
            "the email address is verified already",
        ));
    }
    verification_mail(db, mailer, &user).await
}

/// Marks the address a verification link was sent to as verified, and uses the token up.
/// A link for an address the user no longer has is refused like a used one.
#[tracing::instrument(skip_all)]
pub async fn verify_email(db: &Db, token: &str) -> ServiceResult<User> {
    let hash = tokens::hash_refresh_token(token);
    let mut tx = db.begin().await?;
    let used = email_tokens::consume(&mut tx, &hash, Purpose::VerifyEmail)
        .await?
        .ok_or_else(invalid_token)?;
    // Dropped without a commit on `None`: the token stays as it was.
    let user = users::mark_verified(&mut tx, used.user_id, &used.email)
        .await?
        .ok_or_else(invalid_token)?;
    tx.commit().await?;
    tracing::info!(user_id = %user.id, "email address verified");
    Ok(user)
}

/// 403 `email_not_verified` unless the user has verified their address: what
/// `TIDINGS_REQUIRE_VERIFIED_EMAIL` asks of placing an order.
pub async fn require_verified_email(db: &Db, user_id: Uuid) -> ServiceResult<()> {
    match users::find(db, user_id).await? {
        Some(user) if user.email_verified => Ok(()),
        Some(_) => Err(ServiceError::forbidden(
            "email_not_verified",
            "verify your email address first: open the link sent to it, or ask for a new one \
             (POST /v1/auth/verify-email/request)",
        )),
        None => Err(ServiceError::not_found("user")),
    }
}
