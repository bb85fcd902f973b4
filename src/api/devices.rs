//! `/v1/me/devices`, the caller's push targets, and `/v1/push/vapid-public-key`, the key a
//! browser subscribes with.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::error::ProblemDoc;
use crate::http::AppState;
use crate::http::extract::{Json, Path};
use crate::http::problem::ApiResult;
use crate::service::accounts::CurrentUser;
use crate::service::devices::{self as service, DeviceKind, DeviceRules, NewDevice};
use crate::store::Db;
use crate::store::devices::Device;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register, list))
        .routes(routes!(delete))
        .routes(routes!(vapid_public_key))
}

/// A Web Push subscription's keys, as `PushSubscription.toJSON()` gives them.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionKeys {
    /// base64url of the subscription's P-256 public key (65 bytes, uncompressed).
    p256dh: Option<String>,
    /// base64url of the 16-byte auth secret.
    auth: Option<String>,
}

/// A push target to register. `webpush`: `endpoint` and `keys` (a browser's
/// `PushSubscription`); `fcm`: `token`; `apns`: `token` (hex), `topic` (the app's bundle id)
/// and `environment` (`production` when omitted).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceRegistration {
    kind: DeviceKind,
    /// webpush: the subscription's endpoint, an https:// URL on a public host.
    #[schema(max_length = 2048)]
    endpoint: Option<String>,
    /// webpush: the subscription's keys.
    keys: Option<SubscriptionKeys>,
    /// fcm: the registration token; apns: the device token in hexadecimal.
    #[schema(max_length = 4096)]
    token: Option<String>,
    /// apns: the app's bundle id.
    #[schema(max_length = 255)]
    topic: Option<String>,
    /// apns: `sandbox` or `production`.
    #[schema(example = "production")]
    environment: Option<String>,
    /// Sent by `PushSubscription.toJSON()` (milliseconds since the epoch, or null); not
    /// used.
    #[serde(rename = "expirationTime")]
    _expiration_time: Option<f64>,
}

/// A registered push target.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceView {
    id: Uuid,
    kind: DeviceKind,
    /// webpush: the subscription's endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint: Option<String>,
    /// fcm and apns: the token.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    /// apns: the app's bundle id.
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<String>,
    /// apns: `sandbox` or `production`.
    #[serde(skip_serializing_if = "Option::is_none")]
    environment: Option<String>,
    created_at: DateTime<Utc>,
    /// When something was last delivered to it.
    last_used_at: Option<DateTime<Utc>>,
}

impl From<Device> for DeviceView {
    fn from(d: Device) -> Self {
        let kind = match d.kind.as_str() {
            "fcm" => DeviceKind::Fcm,
            "apns" => DeviceKind::Apns,
            _ => DeviceKind::Webpush,
        };
        let (endpoint, token) = match kind {
            DeviceKind::Webpush => (Some(d.target), None),
            _ => (None, Some(d.target)),
        };
        DeviceView {
            id: d.id,
            kind,
            endpoint,
            token,
            topic: d.topic,
            environment: d.environment,
            created_at: d.created_at,
            last_used_at: d.last_used_at,
        }
    }
}

/// Registers a push target of the caller's. The same target again is the same device
/// (200, its keys updated); a new one is 201.
#[utoipa::path(post, path = "/v1/me/devices", tag = "me", security(("bearer" = [])),
    request_body = DeviceRegistration,
    responses(
        (status = 201, description = "Registered", body = DeviceView),
        (status = 200, description = "Already registered: the existing device", body = DeviceView),
        (status = 409, description = "`too_many_devices`: the caller has as many as TIDINGS_MAX_DEVICES_PER_USER allows", body = ProblemDoc),
        (status = 422, description = "Invalid fields: an endpoint that is not https:// on a public host, a malformed key or token", body = ProblemDoc),
    ))]
#[tracing::instrument(skip_all)]
async fn register(
    State(state): State<AppState>,
    user: CurrentUser,
    Json(body): Json<DeviceRegistration>,
) -> ApiResult<(StatusCode, Json<DeviceView>)> {
    let new = NewDevice {
        kind: Some(body.kind),
        endpoint: body.endpoint,
        p256dh: body.keys.as_ref().and_then(|k| k.p256dh.clone()),
        auth: body.keys.as_ref().and_then(|k| k.auth.clone()),
        token: body.token,
        topic: body.topic,
        environment: body.environment,
    };
    let rules = DeviceRules {
        max_per_user: state.config.max_devices_per_user,
        allow_private_endpoints: state.config.push_allow_private_endpoints,
    };
    let (device, created) = service::register(&state.db, user.id, &new, rules).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(device.into())))
}

/// The caller's push targets, oldest first.
#[utoipa::path(get, path = "/v1/me/devices", tag = "me", security(("bearer" = [])),
    responses((status = 200, description = "The caller's devices", body = Vec<DeviceView>)))]
#[tracing::instrument(skip_all)]
async fn list(State(db): State<Db>, user: CurrentUser) -> ApiResult<Json<Vec<DeviceView>>> {
    let devices = service::list(&db, user.id).await?;
    Ok(Json(devices.into_iter().map(DeviceView::from).collect()))
}

/// Deletes one of the caller's push targets.
#[utoipa::path(delete, path = "/v1/me/devices/{id}", tag = "me", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such device of the caller's", body = ProblemDoc),
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

/// The server's VAPID public key.
#[derive(Debug, Serialize, ToSchema)]
pub struct VapidPublicKey {
    /// base64url of the uncompressed P-256 point: a browser's `applicationServerKey`.
    public_key: String,
}

/// The key a browser subscribes to Web Push with (`pushManager.subscribe`'s
/// `applicationServerKey`).
#[utoipa::path(get, path = "/v1/push/vapid-public-key", tag = "push",
    responses((status = 200, description = "The VAPID public key", body = VapidPublicKey)))]
#[tracing::instrument(skip_all)]
async fn vapid_public_key(State(state): State<AppState>) -> Json<VapidPublicKey> {
    Json(VapidPublicKey {
        public_key: state.vapid.public_key().to_owned(),
    })
}
