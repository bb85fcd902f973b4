//! `/v1/auth`: register, login, refresh, logout, logout-all; password reset and email
//! verification, through links sent by email.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::users::UserView;
use crate::domain::{Email, NewPassword, Role};
use crate::error::{FieldError, ProblemDoc};
use crate::http::AppState;
use crate::http::auth::{NoStore, no_store};
use crate::http::extract::Json;
use crate::http::problem::{ApiError, ApiResult};
use crate::http::ratelimit::ClientIp;
use crate::service::accounts::CurrentUser;
use crate::service::accounts::emails;
use crate::service::accounts::{self, Accounts, TokenPair};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(logout_all))
        .routes(routes!(password_reset))
        .routes(routes!(password_reset_confirm))
        .routes(routes!(verify_email_request))
        .routes(routes!(verify_email))
}

/// An email and a password, as register and login take them.
#[derive(Deserialize, ToSchema)]
pub struct CredentialsBody {
    pub email: String,
    pub password: String,
}

/// A refresh token, as refresh and logout take it.
#[derive(Deserialize, ToSchema)]
pub struct RefreshBody {
    pub refresh_token: String,
}

/// Creates a customer account. With email on, a link to verify the address is sent to it
/// (after the answer; a mail server's trouble does not fail the registration).
#[utoipa::path(post, path = "/v1/auth/register", tag = "auth",
    request_body = crate::api::openapi::NewAccount,
    responses(
        (status = 201, description = "The new user", body = UserView),
        (status = 409, description = "The email is taken", body = ProblemDoc),
        (status = 422, description = "Invalid fields: an invalid email, or a password that is too short or long, the email address, or a common one", body = ProblemDoc),
        (status = 429, description = "Too many attempts", body = ProblemDoc, headers(("retry-after" = u64, description = "Seconds to wait"))),
        (status = 503, description = "Too many passwords being hashed at once (`busy`)", body = ProblemDoc, headers(("retry-after" = u64, description = "Seconds to wait"))),
    ))]
#[tracing::instrument(skip_all)]
async fn register(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(body): Json<CredentialsBody>,
) -> ApiResult<(StatusCode, Json<UserView>)> {
    state.limiter.check(ip, &body.email)?;
    let (email, password) = validate_new_account(&body.email, body.password)?;
    let user = accounts::register(&state.accounts(), &email, &password, Role::Customer).await?;
    if state.mailer.is_enabled() {
        let (db, mailer, created) = (state.db.clone(), state.mailer.clone(), user.clone());
        state.mailer.background(async move {
            match emails::verification_mail(&db, &mailer, &created).await {
                Ok(Some(mail)) => mailer.send(mail).await,
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "a verification link could not be made"),
            }
        });
    }
    Ok((StatusCode::CREATED, Json(UserView::from(user))))
}

/// Checks both fields of a new account and reports every failure at once.
pub fn validate_new_account(email: &str, password: String) -> ApiResult<(Email, NewPassword)> {
    let email = Email::parse(email);
    let password = NewPassword::parse(password, email.as_ref().ok());
    match (email, password) {
        (Ok(email), Ok(password)) => Ok((email, password)),
        (email, password) => {
            let mut errors = Vec::new();
            if let Err(message) = email {
                errors.push(FieldError::new("email", "invalid", message));
            }
            if let Err(message) = password {
                errors.push(FieldError::new("password", "weak", message));
            }
            Err(ApiError::validation(errors))
        }
    }
}

/// Exchanges an email and password for a token pair.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth",
    request_body = CredentialsBody,
    responses(
        (status = 200, description = "A token pair", body = TokenPair, headers(("cache-control" = String, description = "no-store"))),
        (status = 401, description = "Wrong email or password", body = ProblemDoc),
        (status = 403, description = "The account is disabled", body = ProblemDoc),
        (status = 429, description = "Too many attempts", body = ProblemDoc, headers(("retry-after" = u64, description = "Seconds to wait"))),
        (status = 503, description = "Too many passwords being checked at once (`busy`)", body = ProblemDoc, headers(("retry-after" = u64, description = "Seconds to wait"))),
    ))]
#[tracing::instrument(skip_all)]
async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(body): Json<CredentialsBody>,
) -> ApiResult<NoStore<Json<TokenPair>>> {
    state.limiter.check(ip, &body.email)?;
    // An address that cannot exist cannot log in; no need to say more than for a wrong one.
    let email = Email::parse(&body.email).map_err(|_| {
        ApiError::unauthorized("invalid_credentials", "the email or password is wrong")
    })?;
    Ok(no_store(Json(
        accounts::login(&state.accounts(), &email, body.password).await?,
    )))
}

/// Rotates a refresh token into a new pair; a reused one revokes its whole family, unless
/// it was rotated moments ago (two tabs refreshing at once): then the same successor is
/// returned.
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth",
    request_body = RefreshBody,
    responses(
        (status = 200, description = "A new token pair", body = TokenPair, headers(("cache-control" = String, description = "no-store"))),
        (status = 401, description = "Unknown, expired, revoked or reused token", body = ProblemDoc),
    ))]
#[tracing::instrument(skip_all)]
async fn refresh(
    State(accounts): State<Accounts>,
    Json(body): Json<RefreshBody>,
) -> ApiResult<NoStore<Json<TokenPair>>> {
    Ok(no_store(Json(
        accounts::refresh(&accounts, &body.refresh_token).await?,
    )))
}

/// Ends the session of one refresh token.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth",
    request_body = RefreshBody,
    responses((status = 204, description = "Logged out (also for an unknown token)")))]
#[tracing::instrument(skip_all)]
async fn logout(
    State(accounts): State<Accounts>,
    Json(body): Json<RefreshBody>,
) -> ApiResult<StatusCode> {
    accounts::logout(&accounts, &body.refresh_token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Ends every session of the caller, on every device.
#[utoipa::path(post, path = "/v1/auth/logout-all", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 204, description = "Every token of the caller is revoked"),
        (status = 401, description = "No valid access token", body = ProblemDoc),
    ))]
#[tracing::instrument(skip_all)]
async fn logout_all(State(accounts): State<Accounts>, user: CurrentUser) -> ApiResult<StatusCode> {
    accounts::logout_all(&accounts, &user).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The address whose password is forgotten.
#[derive(Deserialize, ToSchema)]
pub struct PasswordResetRequest {
    #[schema(schema_with = crate::api::openapi::email)]
    pub email: String,
}

/// A reset link's token and the new password.
#[derive(Deserialize, ToSchema)]
pub struct PasswordResetConfirm {
    /// The `token` of the link in the email.
    pub token: String,
    #[schema(schema_with = crate::api::openapi::new_password)]
    pub password: String,
}

/// A verification link's token.
#[derive(Deserialize, ToSchema)]
pub struct EmailVerification {
    /// The `token` of the link in the email.
    pub token: String,
}

/// Asks for a link that sets a new password, sent to the address if an account has it.
/// The answer is the same whether or not one does (and whether or not email is on), and
/// comes before any of that is looked up: neither it nor its timing tells who has an
/// account. The link (`{TIDINGS_PUBLIC_URL}/app/#/reset?token=…`) works once, for 30
/// minutes.
#[utoipa::path(post, path = "/v1/auth/password-reset", tag = "auth",
    request_body = PasswordResetRequest,
    responses(
        (status = 202, description = "Accepted; if an account has this address, a link is on its way"),
        (status = 422, description = "Invalid fields: the email is not an address", body = ProblemDoc),
        (status = 429, description = "Too many attempts or emails for this address or from this client", body = ProblemDoc, headers(("retry-after" = u64, description = "Seconds to wait"))),
    ))]
#[tracing::instrument(skip_all)]
async fn password_reset(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(body): Json<PasswordResetRequest>,
) -> ApiResult<StatusCode> {
    let email = Email::parse(&body.email).map_err(|message| {
        ApiError::validation(vec![FieldError::new("email", "invalid", message)])
    })?;
    // Shares the account's budget with login: resets are no way around its limit.
    state.limiter.check(ip, email.as_str())?;
    state.mail_limiter.check(ip, email.as_str())?;
    let (db, mailer) = (state.db.clone(), state.mailer.clone());
    state.mailer.background(async move {
        match emails::password_reset_mail(&db, &mailer, &email).await {
            Ok(Some(mail)) => mailer.send(mail).await,
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "a password reset link could not be made"),
        }
    });
    Ok(StatusCode::ACCEPTED)
}

/// Sets a new password with the token of a reset link, which then stops working (as do
/// the user's other reset links). Every session of the user ends, as after logout-all:
/// refresh and access tokens stop working and live connections close; log in with the new
/// password.
#[utoipa::path(post, path = "/v1/auth/password-reset/confirm", tag = "auth",
    request_body = PasswordResetConfirm,
    responses(
        (status = 204, description = "The password is set; every session is ended"),
        (status = 400, description = "The link is used, expired or unknown (`invalid_token`), or the body is not JSON", body = ProblemDoc),
        (status = 422, description = "Invalid fields: a password that is too short or long, the email address, or a common one", body = ProblemDoc),
        (status = 429, description = "Too many attempts from this client", body = ProblemDoc, headers(("retry-after" = u64, description = "Seconds to wait"))),
        (status = 503, description = "Too many passwords being hashed at once (`busy`)", body = ProblemDoc, headers(("retry-after" = u64, description = "Seconds to wait"))),
    ))]
#[tracing::instrument(skip_all)]
async fn password_reset_confirm(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(body): Json<PasswordResetConfirm>,
) -> ApiResult<StatusCode> {
    state.limiter.check_ip(ip)?;
    emails::reset_password(&state.accounts(), &body.token, body.password).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sends the caller a new link to verify their address (one sent at registration may be
/// lost or expired). The link (`{TIDINGS_PUBLIC_URL}/app/#/verify?token=…`) works once,
/// for 24 hours. Answered 202 when email is off too, though nothing is sent then.
#[utoipa::path(post, path = "/v1/auth/verify-email/request", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 202, description = "A link is on its way"),
        (status = 409, description = "The address is verified already (`email_already_verified`)", body = ProblemDoc),
        (status = 429, description = "Too many emails for this address", body = ProblemDoc, headers(("retry-after" = u64, description = "Seconds to wait"))),
    ))]
#[tracing::instrument(skip_all, fields(user_id = %user.id))]
async fn verify_email_request(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    user: CurrentUser,
) -> ApiResult<StatusCode> {
    state.mail_limiter.check(ip, &user.email)?;
    if let Some(mail) = emails::request_verification(&state.db, &state.mailer, user.id).await? {
        let mailer = state.mailer.clone();
        state
            .mailer
            .background(async move { mailer.send(mail).await });
    }
    Ok(StatusCode::ACCEPTED)
}

/// Verifies the address a link was sent to, with the link's token, which then stops
/// working. No access token is needed: the link may be opened on another device.
#[utoipa::path(post, path = "/v1/auth/verify-email", tag = "auth",
    request_body = EmailVerification,
    responses(
        (status = 204, description = "The address is verified (`email_verified` is true)"),
        (status = 400, description = "The link is used, expired or unknown (`invalid_token`), or the body is not JSON", body = ProblemDoc),
        (status = 429, description = "Too many attempts from this client", body = ProblemDoc, headers(("retry-after" = u64, description = "Seconds to wait"))),
    ))]
#[tracing::instrument(skip_all)]
async fn verify_email(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(body): Json<EmailVerification>,
) -> ApiResult<StatusCode> {
    state.limiter.check_ip(ip)?;
    emails::verify_email(&state.db, &body.token).await?;
    Ok(StatusCode::NO_CONTENT)
}
