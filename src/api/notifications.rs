//! `/v1/notifications` and `/v1/me/notification-preferences`.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::openapi;
use super::pagination::{Page, PageParams};
use crate::domain::{Role, text};
use crate::error::{FieldError, ProblemDoc};
use crate::http::AppState;
use crate::http::extract::{Json, Path, Query};
use crate::http::position::{self, Position};
use crate::http::problem::{ApiError, ApiResult};
use crate::service::Actor;
use crate::service::accounts::CurrentUser;
use crate::service::notifications::{
    self as service, BroadcastAudience, Kind, MAX_BROADCAST_USERS,
};
use crate::store::Db;
use crate::store::notifications::{self, Notification};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(unread_count))
        .routes(routes!(mark_read))
        .routes(routes!(mark_all_read))
        .routes(routes!(delete))
        .routes(routes!(broadcast))
        .routes(routes!(get_preferences, put_preferences))
}

/// Filters of the notification list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NotificationListParams {
    /// true: only unread ones.
    unread: Option<bool>,
    /// 1 to 100; 50 when omitted.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    #[param(schema_with = openapi::cursor)]
    cursor: Option<String>,
}

/// The caller's notifications, newest first.
#[utoipa::path(get, path = "/v1/notifications", tag = "notifications", security(("bearer" = [])),
    params(NotificationListParams),
    responses(
        (status = 200, description = "A page of notifications", body = Page<Notification>),
        (status = 422, description = "Invalid parameters: limit out of range, or a cursor this list did not issue", body = ProblemDoc),
    ))]
#[tracing::instrument(skip_all)]
async fn list(
    State(db): State<Db>,
    user: CurrentUser,
    Query(params): Query<NotificationListParams>,
) -> ApiResult<(Position, Json<Page<Notification>>)> {
    let request = PageParams {
        limit: params.limit,
        cursor: params.cursor,
    }
    .parse::<Uuid>()?;
    let (position, rows) = position::before(
        &db,
        notifications::list(
            &db,
            user.id,
            params.unread.unwrap_or(false),
            request.after,
            request.fetch_limit(),
        ),
    )
    .await?;
    Ok((
        position,
        Json(Page::from_rows(rows, &request, |n| n.id, |n| n)),
    ))
}

/// How many of the caller's notifications are unread.
#[derive(Debug, Serialize, ToSchema)]
pub struct UnreadCount {
    unread: i64,
}

/// Counts the caller's unread notifications.
#[utoipa::path(get, path = "/v1/notifications/unread-count", tag = "notifications", security(("bearer" = [])),
    responses((status = 200, description = "The count", body = UnreadCount)))]
#[tracing::instrument(skip_all)]
async fn unread_count(
    State(db): State<Db>,
    user: CurrentUser,
) -> ApiResult<(Position, Json<UnreadCount>)> {
    let (position, unread) =
        position::before(&db, notifications::unread_count(&db, user.id)).await?;
    Ok((position, Json(UnreadCount { unread })))
}

/// Marks one of the caller's notifications read.
#[utoipa::path(post, path = "/v1/notifications/{id}/read", tag = "notifications", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The notification", body = Notification),
        (status = 404, description = "No such notification of the caller's", body = ProblemDoc),
    ))]
#[tracing::instrument(skip_all)]
async fn mark_read(
    State(db): State<Db>,
    user: CurrentUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Notification>> {
    Ok(Json(service::mark_read(&db, user.id, id).await?))
}

/// How many notifications were marked read.
#[derive(Debug, Serialize, ToSchema)]
pub struct Marked {
    marked: u64,
}

/// Marks all of the caller's notifications read.
#[utoipa::path(post, path = "/v1/notifications/read-all", tag = "notifications", security(("bearer" = [])),
    responses((status = 200, description = "How many were unread", body = Marked)))]
#[tracing::instrument(skip_all)]
async fn mark_all_read(State(db): State<Db>, user: CurrentUser) -> ApiResult<Json<Marked>> {
    Ok(Json(Marked {
        marked: service::mark_all_read(&db, user.id).await?,
    }))
}

/// Deletes one of the caller's notifications.
#[utoipa::path(delete, path = "/v1/notifications/{id}", tag = "notifications", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such notification of the caller's", body = ProblemDoc),
    ))]
#[tracing::instrument(skip_all)]
async fn delete(
    State(db): State<Db>,
    user: CurrentUser,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    service::delete(&db, user.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A message from an admin.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Broadcast {
    #[schema(schema_with = openapi::text::<200, true>)]
    title: String,
    #[schema(schema_with = openapi::text::<5000, true>)]
    body: String,
    #[schema(schema_with = audience)]
    audience: BroadcastAudience,
}

/// `"all"`, `"staff"`, or a list of user ids.
fn audience() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
    use utoipa::openapi::{KnownFormat, SchemaFormat};
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["all", "staff"])),
        )
        .item(
            ArrayBuilder::new()
                .items(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
                )
                .min_items(Some(1))
                .max_items(Some(MAX_BROADCAST_USERS)),
        )
        .description(Some(format!(
            "\"all\", \"staff\", or a list of 1 to {MAX_BROADCAST_USERS} user ids"
        )))
        .build()
        .into()
}

/// How many users a broadcast reached.
#[derive(Debug, Serialize, ToSchema)]
pub struct Recipients {
    recipients: usize,
}

/// Sends a notification to all users, to staff, or to a list of users (admin). Users who
/// muted broadcasts are skipped.
#[utoipa::path(post, path = "/v1/notifications/broadcast", tag = "notifications", security(("bearer" = [])),
    request_body = Broadcast,
    responses(
        (status = 201, description = "Sent", body = Recipients),
        (status = 403, description = "Not an admin", body = ProblemDoc),
        (status = 422, description = "Invalid fields or unknown users", body = ProblemDoc),
    ))]
#[tracing::instrument(skip_all)]
async fn broadcast(
    State(db): State<Db>,
    actor: Actor,
    Json(body): Json<Broadcast>,
) -> ApiResult<(StatusCode, Json<Recipients>)> {
    actor.user.require(Role::Admin)?;
    let errors: Vec<FieldError> = [
        text::check("title", &body.title, 200, true),
        text::check("body", &body.body, 5000, true),
    ]
    .into_iter()
    .filter_map(Result::err)
    .collect();
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let recipients = service::broadcast(
        &db,
        &actor,
        body.title.trim(),
        body.body.trim(),
        &body.audience,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(Recipients { recipients })))
}

/// The kinds of notification the caller has muted.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Preferences {
    /// Muted kinds are never created for this user.
    muted: Vec<Kind>,
}

/// The caller's notification preferences.
#[utoipa::path(get, path = "/v1/me/notification-preferences", tag = "notifications", security(("bearer" = [])),
    responses((status = 200, description = "The muted kinds", body = Preferences)))]
#[tracing::instrument(skip_all)]
async fn get_preferences(State(db): State<Db>, user: CurrentUser) -> ApiResult<Json<Preferences>> {
    let stored = notifications::muted_kinds(&db, user.id).await?;
    let muted = Kind::ALL
        .into_iter()
        .filter(|k| stored.iter().any(|s| s == k.as_str()))
        .collect();
    Ok(Json(Preferences { muted }))
}

/// Replaces the caller's notification preferences.
#[utoipa::path(put, path = "/v1/me/notification-preferences", tag = "notifications", security(("bearer" = [])),
    request_body = Preferences,
    responses(
        (status = 200, description = "The preferences now", body = Preferences),
        (status = 422, description = "An unknown kind", body = ProblemDoc),
    ))]
#[tracing::instrument(skip_all)]
async fn put_preferences(
    State(db): State<Db>,
    user: CurrentUser,
    Json(body): Json<Preferences>,
) -> ApiResult<Json<Preferences>> {
    // The order of Kind::ALL, as GET answers, whatever order (and repeats) the client sent.
    let muted: Vec<Kind> = Kind::ALL
        .into_iter()
        .filter(|k| body.muted.contains(k))
        .collect();
    service::set_muted(&db, user.id, &muted).await?;
    Ok(Json(Preferences { muted }))
}
