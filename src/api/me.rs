//! `/v1/me`: the caller's own account.

use axum::extract::State;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::users::UserView;
use crate::domain::{Email, NewPassword};
use crate::error::{FieldError, ProblemDoc};
use crate::http::AppState;
use crate::http::auth::{NoStore, no_store};
use crate::http::extract::Json;
use crate::http::problem::{ApiError, ApiResult};
use crate::http::ratelimit::ClientIp;
use crate::service::accounts::CurrentUser;
use crate::service::accounts::{self, TokenPair};
use crate::store::{Db, users};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me))
        .routes(routes!(change_password))
}

/// The caller's account.
#[utoipa::path(get, path = "/v1/me", tag = "me", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = UserView),
        (status = 401, description = "No valid access token", body = ProblemDoc),
    ))]
#[tracing::instrument(skip_all, fields(user_id = %user.id))]
async fn me(State(db): State<Db>, user: CurrentUser) -> ApiResult<Json<UserView>> {
    let user = users::find(&db, user.id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    Ok(Json(UserView::from(user)))
}

/// A password change.
#[derive(Deserialize, ToSchema)]
pub struct PasswordChange {
    current_password: String,
    #[schema(schema_with = super::openapi::new_password)]
    new_password: String,
}

/// Changes the caller's password; every earlier token stops working and a new pair is
/// returned.
#[utoipa::path(post, path = "/v1/me/password", tag = "me", security(("bearer" = [])),
    request_body = PasswordChange,
    responses(
        (status = 200, description = "A new token pair", body = TokenPair, headers(("cache-control" = String, description = "no-store"))),
        (status = 401, description = "No valid access token", body = ProblemDoc),
        (status = 403, description = "The current password is wrong", body = ProblemDoc),
        (status = 422, description = "Invalid fields; a new password that is too short or long, the email address, or a common password", body = ProblemDoc),
        (status = 429, description = "Too many attempts", body = ProblemDoc, headers(("retry-after" = u64, description = "Seconds to wait"))),
        (status = 503, description = "Too many passwords being checked at once (`busy`)", body = ProblemDoc, headers(("retry-after" = u64, description = "Seconds to wait"))),
    ))]
#[tracing::instrument(skip_all, fields(user_id = %user.id))]
async fn change_password(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    user: CurrentUser,
    Json(body): Json<PasswordChange>,
) -> ApiResult<NoStore<Json<TokenPair>>> {
    let email = Email::parse(&user.email).ok();
    let new = NewPassword::parse(body.new_password, email.as_ref()).map_err(|message| {
        ApiError::validation(vec![FieldError::new("new_password", "weak", message)])
    })?;
    // Counted before the current password is checked: a stolen access token is no oracle.
    state.limiter.check(ip, &user.email)?;
    Ok(no_store(Json(
        accounts::change_password(&state.accounts(), &user, body.current_password, &new).await?,
    )))
}
