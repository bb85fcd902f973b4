//! Delivery beyond the socket: `POST /v1/events/ack` (what an event-stream client's app
//! has handled, as a WebSocket's `ack` message says it), `/v1/me/delivery-preferences`
//! (which kinds go to push and to email) and `GET /v1/admin/deliveries` (did user X get
//! event Y, how, and when).

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::domain::Role;
use crate::error::{FieldError, ProblemDoc};
use crate::events::stream;
use crate::http::AppState;
use crate::http::extract::{Json, Query};
use crate::http::problem::{ApiError, ApiResult};
use crate::service::accounts::CurrentUser;
use crate::service::delivery::{self, Preferences};
use crate::service::notifications::Kind;
use crate::store::Db;
use crate::store::deliveries::{self as store, Attempt, Delivery, Intent};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(ack))
        .routes(routes!(get_preferences, put_preferences))
        .routes(routes!(list_deliveries))
}

/// What the app has handled.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    /// The seq of the last event the app handled: it and every earlier event this client
    /// received count as seen.
    #[schema(minimum = 1)]
    seq: i64,
}

/// Acknowledges events received on an event stream (WebSocket clients send an `ack`
/// message instead): a notification an app of the user's acknowledged within
/// `TIDINGS_PUSH_DELAY` is not pushed to their devices.
#[utoipa::path(post, path = "/v1/events/ack", tag = "live", security(("bearer" = [])),
    request_body = Ack,
    responses(
        (status = 204, description = "Recorded"),
        (status = 422, description = "A seq below 1 or beyond the last event", body = ProblemDoc),
    ))]
#[tracing::instrument(skip_all)]
async fn ack(
    State(state): State<AppState>,
    user: CurrentUser,
    Json(body): Json<Ack>,
) -> ApiResult<StatusCode> {
    let bad = || {
        ApiError::validation(vec![FieldError::new(
            "seq",
            "out_of_range",
            "the seq of an event this client received",
        )])
    };
    if body.seq < 1 {
        return Err(bad());
    }
    // This instance's hub may be a moment behind the one that delivered the event.
    if body.seq > state.realtime.hub.last_seq() && body.seq > stream::last_seq(&state.db).await? {
        return Err(bad());
    }
    state.realtime.presence.ack(user.id, body.seq);
    Ok(StatusCode::NO_CONTENT)
}

/// Which kinds of notification reach the user beyond their live connections. A
/// notification no app of theirs acknowledged in time goes to every device (push) if its
/// kind is in `push`, else by email if its kind is in `email`; in neither, it stays live
/// only. New users push every kind and email none.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliveryPreferences {
    push: Vec<Kind>,
    email: Vec<Kind>,
}

impl From<Preferences> for DeliveryPreferences {
    fn from(p: Preferences) -> Self {
        DeliveryPreferences {
            push: p.push,
            email: p.email,
        }
    }
}

/// The caller's delivery preferences.
#[utoipa::path(get, path = "/v1/me/delivery-preferences", tag = "me", security(("bearer" = [])),
    responses((status = 200, description = "The caller's channels per kind", body = DeliveryPreferences)))]
#[tracing::instrument(skip_all)]
async fn get_preferences(
    State(db): State<Db>,
    user: CurrentUser,
) -> ApiResult<Json<DeliveryPreferences>> {
    Ok(Json(delivery::preferences(&db, user.id).await?.into()))
}

/// Replaces the caller's delivery preferences.
#[utoipa::path(put, path = "/v1/me/delivery-preferences", tag = "me", security(("bearer" = [])),
    request_body = DeliveryPreferences,
    responses(
        (status = 200, description = "The preferences now", body = DeliveryPreferences),
        (status = 422, description = "An unknown kind, or a field missing", body = ProblemDoc),
    ))]
#[tracing::instrument(skip_all)]
async fn put_preferences(
    State(db): State<Db>,
    user: CurrentUser,
    Json(body): Json<DeliveryPreferences>,
) -> ApiResult<Json<DeliveryPreferences>> {
    let wanted = Preferences {
        push: body.push,
        email: body.email,
    };
    Ok(Json(
        delivery::set_preferences(&db, user.id, &wanted)
            .await?
            .into(),
    ))
}

/// Filters of the delivery log; at least one of `user` and `event` narrows it.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryParams {
    /// Only this user's.
    user: Option<Uuid>,
    /// Only this event's (its seq).
    #[param(minimum = 1)]
    event: Option<i64>,
    /// 1 to 100; 50 when omitted.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
}

/// One event for one user: what was decided and what was sent.
#[derive(Debug, Serialize, ToSchema)]
pub struct IntentView {
    event_seq: i64,
    user_id: Uuid,
    /// The notification's kind.
    kind: String,
    /// `waiting` (for an ack until `due_at`), `acked` (an app of the user's handled it
    /// live), `pushed`, `emailed` (no device; the user chose email for this kind),
    /// `live_only` (the user wants neither push nor email for this kind), `no_target` (no
    /// device, and no email: not chosen, mail off, or the address not verified).
    state: String,
    due_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    decided_at: Option<DateTime<Utc>>,
    deliveries: Vec<DeliveryView>,
}

/// One message to one device, or by email.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    id: Uuid,
    /// `webpush`, `fcm`, `apns` or `email`.
    channel: String,
    /// The device (null once removed, and for email).
    device_id: Option<Uuid>,
    /// What may be shown of the target: an endpoint's host, a token's first characters, an
    /// address's first letter and domain.
    target: String,
    /// `pending`, `sending`, `sent`, `gone` (the device was removed), `rejected` (refused
    /// for good), `dead` (every attempt failed).
    status: String,
    attempts: i32,
    next_attempt_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    /// Every attempt, in order.
    log: Vec<AttemptView>,
}

/// One attempt and what the provider answered.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    attempt: i32,
    at: DateTime<Utc>,
    /// `delivered`, `gone`, `retry` or `rejected`.
    outcome: String,
    detail: Option<String>,
    duration_ms: i64,
}

/// The delivery log.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryLog {
    items: Vec<IntentView>,
}

/// Did user X get event Y, how, and when (admin): the notifications the delivery worker
/// took up, newest first, each with its deliveries and their attempts.
#[utoipa::path(get, path = "/v1/admin/deliveries", tag = "admin", security(("bearer" = [])),
    params(DeliveryParams),
    responses(
        (status = 200, description = "The log", body = DeliveryLog),
        (status = 403, description = "Not an admin", body = ProblemDoc),
        (status = 422, description = "Invalid parameters", body = ProblemDoc),
    ))]
#[tracing::instrument(skip_all)]
async fn list_deliveries(
    State(db): State<Db>,
    user: CurrentUser,
    Query(params): Query<DeliveryParams>,
) -> ApiResult<Json<DeliveryLog>> {
    user.require(Role::Admin)?;
    let limit = params.limit.unwrap_or(50);
    let mut errors = Vec::new();
    if !(1..=100).contains(&limit) {
        errors.push(FieldError::new("limit", "out_of_range", "1 to 100"));
    }
    if params.event.is_some_and(|e| e < 1) {
        errors.push(FieldError::new(
            "event",
            "out_of_range",
            "an event's seq, 1 or more",
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let intents = store::find_intents(&db, params.user, params.event, i64::from(limit)).await?;
    let deliveries = store::deliveries_of(&db, &intents).await?;
    let attempts = store::attempts_of(&db, &deliveries).await?;
    Ok(Json(DeliveryLog {
        items: intents
            .into_iter()
            .map(|i| intent_view(i, &deliveries, &attempts))
            .collect(),
    }))
}

fn intent_view(i: Intent, deliveries: &[Delivery], attempts: &[Attempt]) -> IntentView {
    IntentView {
        deliveries: deliveries
            .iter()
            .filter(|d| d.event_seq == i.event_seq && d.user_id == i.user_id)
            .map(|d| DeliveryView {
                id: d.id,
                channel: d.channel.clone(),
                device_id: d.device_id,
                target: d.target.clone(),
                status: d.status.clone(),
                attempts: d.attempts,
                next_attempt_at: d.next_attempt_at,
                created_at: d.created_at,
                updated_at: d.updated_at,
                log: attempts
                    .iter()
                    .filter(|a| a.delivery_id == d.id)
                    .map(|a| AttemptView {
                        attempt: a.attempt,
                        at: a.at,
                        outcome: a.outcome.clone(),
                        detail: a.detail.clone(),
                        duration_ms: a.duration_ms,
                    })
                    .collect(),
            })
            .collect(),
        event_seq: i.event_seq,
        user_id: i.user_id,
        kind: i.kind,
        state: i.state,
        due_at: i.due_at,
        created_at: i.created_at,
        decided_at: i.decided_at,
    }
}
