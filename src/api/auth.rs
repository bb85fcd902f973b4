//! `/v1/auth`: register, login, refresh, logout, logout-all.

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
use crate::service::accounts::{self, Accounts, TokenPair};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(logout_all))
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

/// Creates a customer account.
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
