//! Notifications: created by the system with their cause, or broadcast by an admin.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::Actor;
use crate::error::FieldError;
use crate::events::catalog::{NotificationDeleted, NotificationRead};
use crate::events::{Audience, EventData, NewEvent, outbox};
use crate::service::error::{ServiceError, ServiceResult};
use crate::store::notifications::{self, Notification, READ_VERSION, Recipients};
use crate::store::{Db, Tx, now};

/// The kinds of notification; each can be muted per user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A status change of one of the user's orders.
    OrderStatus,
    /// A product's stock fell to or below its threshold (staff).
    LowStock,
    /// A message from an admin.
    Broadcast,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::OrderStatus, Kind::LowStock, Kind::Broadcast];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::OrderStatus => "order_status",
            Kind::LowStock => "low_stock",
            Kind::Broadcast => "broadcast",
        }
    }
}

/// Creates notifications for the recipients who have not muted `kind`, inside the
/// caller's transaction, and returns their `notification.created` events.
pub async fn notify(
    tx: &mut Tx,
    recipients: &Recipients,
    kind: Kind,
    title: &str,
    body: &str,
    data: Value,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<NewEvent>, sqlx::Error> {
    let users = notifications::resolve(tx, recipients, kind.as_str()).await?;
    let made =
        notifications::insert_many(tx, &users, kind.as_str(), title, body, &data, at).await?;
    Ok(made.iter().map(created_event).collect())
}

fn created_event(n: &Notification) -> NewEvent {
    NewEvent::new(EventData::NotificationCreated(n), Audience::User(n.user_id))
}

/// Who a broadcast goes to.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum BroadcastAudience {
    /// `"all"` or `"staff"`.
    Group(String),
    /// Particular users.
    Users(Vec<Uuid>),
}

/// Most users one broadcast may name.
pub const MAX_BROADCAST_USERS: usize = 1000;

/// Sends a notification to a group of users (admin). Returns how many received it.
#[tracing::instrument(skip_all, fields(actor = %actor.user.id))]
pub async fn broadcast(
    db: &Db,
    actor: &Actor,
    title: &str,
    body: &str,
    audience: &BroadcastAudience,
) -> ServiceResult<usize> {
    let recipients = match audience {
        BroadcastAudience::Group(g) if g == "all" => Recipients::All,
        BroadcastAudience::Group(g) if g == "staff" => Recipients::Staff,
        BroadcastAudience::Group(_) => {
            return Err(ServiceError::validation(vec![FieldError::new(
                "audience",
                "invalid",
                "must be \"all\", \"staff\" or a list of user ids",
            )]));
        }
        BroadcastAudience::Users(ids) => {
            // Counted as sent, as the document states it, before repeats are dropped.
            if ids.is_empty() || ids.len() > MAX_BROADCAST_USERS {
                return Err(ServiceError::validation(vec![FieldError::new(
                    "audience",
                    "invalid",
                    format!("a list of 1 to {MAX_BROADCAST_USERS} user ids"),
                )]));
            }
            let mut ids = ids.clone();
            ids.sort();
            ids.dedup();
            Recipients::Users(ids)
        }
    };
    let at = now();
    let mut tx = db.begin().await?;
    if let Recipients::Users(ids) = &recipients {
        let known = notifications::existing_users(&mut tx, ids).await?;
        if known.len() != ids.len() {
            let unknown: Vec<String> = ids
                .iter()
                .filter(|id| !known.contains(id))
                .map(Uuid::to_string)
                .collect();
            return Err(ServiceError::validation(vec![FieldError::new(
                "audience",
                "unknown_user",
                format!("no such users: {}", unknown.join(", ")),
            )]));
        }
    }
    let events = notify(
        &mut tx,
        &recipients,
        Kind::Broadcast,
        title,
        body,
        json!({}),
        at,
    )
    .await?;
    let count = events.len();
    actor
        .audit(
            &mut tx,
            "notification.broadcast",
            "notification",
            "broadcast",
            json!({"title": title, "recipients": count}),
            at,
        )
        .await?;
    outbox::commit(tx, &events).await?;
    Ok(count)
}

/// Marks one of the caller's notifications read.
pub async fn mark_read(db: &Db, user_id: Uuid, id: Uuid) -> ServiceResult<Notification> {
    let at = now();
    let mut tx = db.begin().await?;
    let (notification, changed) = notifications::mark_read(&mut tx, user_id, id, at)
        .await?
        .ok_or_else(|| ServiceError::not_found("notification"))?;
    let events = if changed {
        let read = NotificationRead::One {
            ids: vec![id],
            read_at: at,
            version: notification.version,
        };
        vec![read_event(user_id, &read)]
    } else {
        Vec::new()
    };
    outbox::commit(tx, &events).await?;
    Ok(notification)
}

/// Marks all of the caller's notifications read; how many were unread.
pub async fn mark_all_read(db: &Db, user_id: Uuid) -> ServiceResult<u64> {
    let at = now();
    let mut tx = db.begin().await?;
    let ids = notifications::mark_all_read(&mut tx, user_id, at).await?;
    // `ids` says which: "all" alone would also take in a notification that the update did
    // not see (committed meanwhile) but that a client received before this event.
    let events = if ids.is_empty() {
        Vec::new()
    } else {
        let read = NotificationRead::All {
            all: true,
            ids: ids.clone(),
            read_at: at,
            version: READ_VERSION,
        };
        vec![read_event(user_id, &read)]
    };
    outbox::commit(tx, &events).await?;
    Ok(ids.len() as u64)
}

/// The `notification.read` event, for the reader only.
fn read_event(user_id: Uuid, read: &NotificationRead) -> NewEvent {
    NewEvent::new(EventData::NotificationRead(read), Audience::User(user_id))
}

/// Deletes one of the caller's notifications, telling the caller's other clients.
pub async fn delete(db: &Db, user_id: Uuid, id: Uuid) -> ServiceResult<()> {
    let mut tx = db.begin().await?;
    if !notifications::delete(&mut tx, user_id, id).await? {
        return Err(ServiceError::not_found("notification"));
    }
    let event = NewEvent::new(
        EventData::NotificationDeleted(&NotificationDeleted { id }),
        Audience::User(user_id),
    );
    outbox::commit(tx, &[event]).await?;
    Ok(())
}

/// Replaces the caller's muted kinds.
pub async fn set_muted(db: &Db, user_id: Uuid, muted: &[Kind]) -> ServiceResult<()> {
    let kinds: Vec<&str> = muted.iter().map(|k| k.as_str()).collect();
    let mut tx = db.begin().await?;
    notifications::set_muted_kinds(&mut tx, user_id, &kinds).await?;
    tx.commit().await?;
    Ok(())
}
