//! `/v1/me`: the caller's own account.

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use serde::Deserialize;

use super::extract::Json;
use super::users::UserView;
use crate::AppState;
use crate::auth::CurrentUser;
use crate::auth::service::{self, TokenPair};
use crate::domain::{Email, NewPassword};
use crate::error::{ApiError, ApiResult, FieldError};
use crate::store::users;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/me", get(me))
        .route("/v1/me/password", post(change_password))
}

/// The caller's account.
#[tracing::instrument(skip_all, fields(user_id = %user.id))]
async fn me(State(state): State<AppState>, user: CurrentUser) -> ApiResult<Json<UserView>> {
    let user = users::find(&state.db, user.id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    Ok(Json(UserView::from(user)))
}

#[derive(Deserialize)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

/// Changes the caller's password; every earlier token stops working and a new pair is
/// returned.
#[tracing::instrument(skip_all, fields(user_id = %user.id))]
async fn change_password(
    State(state): State<AppState>,
    user: CurrentUser,
    Json(body): Json<PasswordChange>,
) -> ApiResult<Json<TokenPair>> {
    let email = Email::parse(&user.email).ok();
    let new = NewPassword::parse(body.new_password, email.as_ref()).map_err(|message| {
        ApiError::validation(vec![FieldError::new("new_password", "weak", message)])
    })?;
    Ok(Json(
        service::change_password(&state, &user, body.current_password, &new).await?,
    ))
}
