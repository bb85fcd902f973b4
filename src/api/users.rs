//! `/v1/users`: user administration, for admins.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::pagination::{Page, PageParams};
use crate::domain::Role;
use crate::error::{FieldError, ProblemDoc};
use crate::http::AppState;
use crate::http::extract::{Json, Path, Query, present};
use crate::http::problem::{ApiError, ApiResult};
use crate::service::accounts::CurrentUser;

use crate::service::Actor;
use crate::service::accounts::{self, Accounts};
use crate::store::{Db, users};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(update))
}

/// A user as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub email: String,
    pub role: Role,
    pub disabled: bool,
    /// Whether the user opened a verification link sent to this address (or reset their
    /// password through one). False until then, and for accounts made before email
    /// verification existed.
    pub email_verified: bool,
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
            email_verified: user.email_verified,
            created_at: user.created_at,
            updated_at: user.updated_at,
        }
    }
}

/// Lists users in the order they signed up (admin).
#[utoipa::path(get, path = "/v1/users", tag = "users", security(("bearer" = [])),
    params(PageParams),
    responses(
        (status = 200, description = "A page of users", body = Page<UserView>),
        (status = 403, description = "Not an admin", body = ProblemDoc),
        (status = 422, description = "Invalid parameters: limit out of range, or a cursor this list did not issue", body = ProblemDoc),
    ))]
#[tracing::instrument(skip_all)]
async fn list(
    State(db): State<Db>,
    user: CurrentUser,
    Query(params): Query<PageParams>,
) -> ApiResult<Json<Page<UserView>>> {
    user.require(Role::Admin)?;
    let request = params.parse::<Uuid>()?;
    let rows = users::list(&db, request.after, request.fetch_limit()).await?;
    Ok(Json(Page::from_rows(
        rows,
        &request,
        |u| u.id,
        UserView::from,
    )))
}

/// What an admin may change about a user: one of the two at least; `null` is not a value.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(min_properties = 1)]
pub struct UserUpdate {
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    role: Option<Role>,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    disabled: Option<bool>,
}

/// Changes a user's role or disables them (admin). Either ends the user's sessions.
#[utoipa::path(patch, path = "/v1/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    request_body = UserUpdate,
    responses(
        (status = 200, description = "The user", body = UserView),
        (status = 403, description = "Not an admin", body = ProblemDoc),
        (status = 404, description = "No such user", body = ProblemDoc),
        (status = 409, description = "An admin cannot change themself", body = ProblemDoc),
    ))]
#[tracing::instrument(skip_all, fields(target = %id))]
async fn update(
    State(accounts): State<Accounts>,
    actor: Actor,
    Path(id): Path<Uuid>,
    Json(body): Json<UserUpdate>,
) -> ApiResult<Json<UserView>> {
    let admin = &actor.user;
    admin.require(Role::Admin)?;
    if body.role.is_none() && body.disabled.is_none() {
        return Err(ApiError::validation(vec![FieldError::new(
            "role",
            "required",
            "give a role or disabled to change",
        )]));
    }
    let user = accounts::set_access(&accounts, &actor, id, body.role, body.disabled).await?;
    Ok(Json(UserView::from(user)))
}
