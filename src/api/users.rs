//! `/v1/users`: user administration, for admins.

use axum::Router;
use axum::extract::State;
use axum::routing::{get, patch};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::extract::{Json, Path, Query};
use super::pagination::{Page, PageParams};
use crate::AppState;
use crate::auth::CurrentUser;
use crate::domain::Role;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::store::{refresh_tokens, users};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/users", get(list))
        .route("/v1/users/{id}", patch(update))
}

/// A user as the API shows it.
#[derive(Debug, Serialize)]
pub struct UserView {
    pub id: Uuid,
    pub email: String,
    pub role: Role,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<users::User> for UserView {
    fn from(user: users::User) -> Self {
        Self {
            id: user.id,
            email: user.email,
            role: user.role,
            disabled: user.disabled,
            created_at: user.created_at,
            updated_at: user.updated_at,
        }
    }
}

/// Lists users in the order they signed up (admin).
#[tracing::instrument(skip_all)]
async fn list(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(params): Query<PageParams>,
) -> ApiResult<Json<Page<UserView>>> {
    user.require(Role::Admin)?;
    let request = params.parse::<Uuid>()?;
    let rows = users::list(&state.db, request.after, request.fetch_limit()).await?;
    Ok(Json(Page::from_rows(
        rows,
        &request,
        |u| u.id,
        UserView::from,
    )))
}

/// What an admin may change about a user.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserUpdate {
    role: Option<Role>,
    disabled: Option<bool>,
}

/// Changes a user's role or disables them (admin). Either ends the user's sessions.
#[tracing::instrument(skip_all, fields(target = %id))]
async fn update(
    State(state): State<AppState>,
    admin: CurrentUser,
    Path(id): Path<Uuid>,
    Json(body): Json<UserUpdate>,
) -> ApiResult<Json<UserView>> {
    admin.require(Role::Admin)?;
    if body.role.is_none() && body.disabled.is_none() {
        return Err(ApiError::validation(vec![FieldError::new(
            "role",
            "required",
            "give a role or disabled to change",
        )]));
    }
    if id == admin.id {
        // An admin demoting or disabling themself could leave nobody to administer.
        return Err(ApiError::conflict(
            "cannot_modify_self",
            "admins cannot change their own role or disable themselves",
        ));
    }
    let mut tx = state.db.begin().await?;
    let user = users::update_access(&mut tx, id, body.role, body.disabled)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    if user.disabled {
        refresh_tokens::revoke_all_for_user(&mut tx, id).await?;
    }
    tx.commit().await?;
    tracing::info!(role = %user.role, disabled = user.disabled, "user access changed");
    Ok(Json(UserView::from(user)))
}
