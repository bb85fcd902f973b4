//! Devices: the push targets a user registers (browsers' Web Push subscriptions, FCM and
//! APNs tokens), capped per user; and their removal when a provider says one is gone.

use uuid::Uuid;

use crate::domain::device as check;
use crate::error::FieldError;
use crate::service::error::{ServiceError, ServiceResult};
use crate::store::devices::{self, Device};
use crate::store::{Db, now};

/// The kinds of push target.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// A browser's Web Push subscription.
    Webpush,
    /// An Android (or other) app's Firebase Cloud Messaging registration token.
    Fcm,
    /// An Apple device's APNs token.
    Apns,
}

impl DeviceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Webpush => "webpush",
            DeviceKind::Fcm => "fcm",
            DeviceKind::Apns => "apns",
        }
    }
}

/// A registration as the client sends it, not yet checked.
#[derive(Debug, Clone, Default)]
pub struct NewDevice {
    pub kind: Option<DeviceKind>,
    pub endpoint: Option<String>,
    pub p256dh: Option<String>,
    pub auth: Option<String>,
    pub token: Option<String>,
    pub topic: Option<String>,
    pub environment: Option<String>,
}

/// What the settings say about devices.
#[derive(Debug, Clone, Copy)]
pub struct DeviceRules {
    /// Most devices per user.
    pub max_per_user: usize,
    /// Web Push endpoints on private addresses and plain http accepted (tests only).
    pub allow_private_endpoints: bool,
}

/// Checks a registration; the device it describes (id and times not yet set), or every
/// field at fault.
fn validate(user_id: Uuid, new: &NewDevice, rules: DeviceRules) -> ServiceResult<Device> {
    let mut errors = Vec::new();
    let Some(kind) = new.kind else {
        return Err(ServiceError::validation(vec![FieldError::new(
            "kind",
            "required",
            "webpush, fcm or apns",
        )]));
    };
    let mut device = Device {
        id: Uuid::nil(),
        user_id,
        kind: kind.as_str().to_owned(),
        target: String::new(),
        p256dh: None,
        auth: None,
        topic: None,
        environment: None,
        created_at: now(),
        last_used_at: None,
    };
    let mut take = |result: Result<String, FieldError>| match result {
        Ok(v) => Some(v),
        Err(e) => {
            errors.push(e);
            None
        }
    };
    let missing = |field: &str| FieldError::new(field, "required", "is required for this kind");
    let unexpected = |field: &str| FieldError::new(field, "unexpected", "is not used by this kind");
    let mut extra = Vec::new();
    match kind {
        DeviceKind::Webpush => {
            device.target = take(match &new.endpoint {
                Some(e) => check::push_endpoint("endpoint", e, rules.allow_private_endpoints)
                    .map(|u| u.to_string()),
                None => Err(missing("endpoint")),
            })
            .unwrap_or_default();
            device.p256dh = take(match &new.p256dh {
                Some(k) => check::p256dh("keys.p256dh", k),
                None => Err(missing("keys.p256dh")),
            });
            device.auth = take(match &new.auth {
                Some(k) => check::auth_secret("keys.auth", k),
                None => Err(missing("keys.auth")),
            });
            for (field, value) in [
                ("token", &new.token),
                ("topic", &new.topic),
                ("environment", &new.environment),
            ] {
                if value.is_some() {
                    extra.push(unexpected(field));
                }
            }
        }
        DeviceKind::Fcm => {
            device.target = take(match &new.token {
                Some(t) => check::fcm_token("token", t),
                None => Err(missing("token")),
            })
            .unwrap_or_default();
            for (field, value) in [
                ("endpoint", &new.endpoint),
                ("keys", &new.p256dh.clone().or(new.auth.clone())),
                ("topic", &new.topic),
                ("environment", &new.environment),
            ] {
                if value.is_some() {
                    extra.push(unexpected(field));
                }
            }
        }
        DeviceKind::Apns => {
            device.target = take(match &new.token {
                Some(t) => check::apns_token("token", t),
                None => Err(missing("token")),
            })
            .unwrap_or_default();
            device.topic = take(match &new.topic {
                Some(t) => check::apns_topic("topic", t),
                None => Err(missing("topic")),
            });
            device.environment = take(match new.environment.as_deref() {
                None | Some("production") => Ok("production".to_owned()),
                Some("sandbox") => Ok("sandbox".to_owned()),
                Some(_) => Err(FieldError::new(
                    "environment",
                    "invalid",
                    "sandbox or production",
                )),
            });
            for (field, value) in [
                ("endpoint", &new.endpoint),
                ("keys", &new.p256dh.clone().or(new.auth.clone())),
            ] {
                if value.is_some() {
                    extra.push(unexpected(field));
                }
            }
        }
    }
    errors.extend(extra);
    if errors.is_empty() {
        Ok(device)
    } else {
        Err(ServiceError::validation(errors))
    }
}

/// Registers a device for the user; the device and whether it is new. The same target
/// registered again is the same device (its keys, topic and environment updated); a new
/// one beyond the cap is refused (409 `too_many_devices`).
#[tracing::instrument(skip_all, fields(user = %user_id))]
pub async fn register(
    db: &Db,
    user_id: Uuid,
    new: &NewDevice,
    rules: DeviceRules,
) -> ServiceResult<(Device, bool)> {
    let mut device = validate(user_id, new, rules)?;
    let mut tx = db.begin().await?;
    devices::lock_user(&mut tx, user_id).await?;
    if let Some(existing) = devices::find(&mut tx, user_id, &device.kind, &device.target).await? {
        device.id = existing.id;
        device.created_at = existing.created_at;
        device.last_used_at = existing.last_used_at;
        if device != existing {
            devices::update_details(&mut tx, &device).await?;
        }
        tx.commit().await?;
        return Ok((device, false));
    }
    let count = devices::count(&mut tx, user_id).await?;
    if count >= rules.max_per_user as i64 {
        return Err(ServiceError::conflict(
            "too_many_devices",
            format!(
                "a user may register at most {} devices: delete one first",
                rules.max_per_user
            ),
        ));
    }
    device.id = Uuid::now_v7();
    devices::insert(&mut tx, &device).await?;
    tx.commit().await?;
    Ok((device, true))
}

/// The user's devices, oldest first.
pub async fn list(db: &Db, user_id: Uuid) -> ServiceResult<Vec<Device>> {
    Ok(devices::list(db, user_id).await?)
}

/// Deletes one of the user's devices (404 for anyone else's).
pub async fn delete(db: &Db, user_id: Uuid, id: Uuid) -> ServiceResult<()> {
    if devices::delete_of_user(db, user_id, id).await? {
        Ok(())
    } else {
        Err(ServiceError::not_found("device"))
    }
}

/// Removes a device its provider reported gone (Web Push 404/410, FCM `UNREGISTERED`, APNs
/// 410); whether it was still there.
pub async fn remove_gone(db: &Db, id: Uuid) -> ServiceResult<bool> {
    let removed = devices::delete(db, id).await?;
    if removed {
        tracing::info!(device = %id, "removed a push device its provider reported gone");
    }
    Ok(removed)
}

/// Records a delivery to the device.
pub async fn mark_used(db: &Db, id: Uuid) -> ServiceResult<()> {
    Ok(devices::mark_used(db, id, now()).await?)
}
