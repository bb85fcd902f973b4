//! `/v1/admin/audit`: every write by staff and admins.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::openapi;
use super::pagination::{Page, PageParams};
use crate::domain::{Role, text};
use crate::error::ProblemDoc;
use crate::http::AppState;
use crate::http::extract::{Json, Query};
use crate::http::problem::{ApiError, ApiResult};
use crate::service::accounts::CurrentUser;
use crate::store::Db;
use crate::store::audit::{self, AuditEntry, AuditQuery};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

/// Filters of the audit log.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditListParams {
    /// Only writes by this user.
    actor: Option<Uuid>,
    /// Only this action, e.g. `product.update`.
    #[param(schema_with = openapi::text::<200, false>)]
    action: Option<String>,
    /// Only entries at or after this time (RFC 3339).
    since: Option<DateTime<Utc>>,
    /// Only entries before this time (RFC 3339).
    until: Option<DateTime<Utc>>,
    /// 1 to 100; 50 when omitted.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    #[param(schema_with = openapi::cursor)]
    cursor: Option<String>,
}

/// The audit log, newest first (admin).
#[utoipa::path(get, path = "/v1/admin/audit", tag = "admin", security(("bearer" = [])),
    params(AuditListParams),
    responses(
        (status = 200, description = "A page of entries", body = Page<AuditEntry>),
        (status = 403, description = "Not an admin", body = ProblemDoc),
        (status = 422, description = "Invalid parameters: limit out of range, a cursor this list did not issue, an action with control or invisible characters", body = ProblemDoc),
    ))]
#[tracing::instrument(skip_all)]
async fn list(
    State(db): State<Db>,
    user: CurrentUser,
    Query(params): Query<AuditListParams>,
) -> ApiResult<Json<Page<AuditEntry>>> {
    user.require(Role::Admin)?;
    if let Some(action) = &params.action {
        text::check("action", action, 200, false).map_err(|e| ApiError::validation(vec![e]))?;
    }
    let request = PageParams {
        limit: params.limit,
        cursor: params.cursor,
    }
    .parse::<Uuid>()?;
    let query = AuditQuery {
        actor_id: params.actor,
        action: params.action,
        since: params.since,
        until: params.until,
    };
    let rows = audit::list(&db, &query, request.after, request.fetch_limit()).await?;
    Ok(Json(Page::from_rows(rows, &request, |e| e.id, |e| e)))
}
