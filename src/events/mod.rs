//! Events: what a change tells live clients, written to the outbox in the change's own
//! transaction.

pub mod outbox;

use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

/// The streams a client can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Topic {
    Orders,
    Inventory,
    Notifications,
}

impl Topic {
    pub fn as_str(self) -> &'static str {
        match self {
            Topic::Orders => "orders",
            Topic::Inventory => "inventory",
            Topic::Notifications => "notifications",
        }
    }
}

/// Who may receive an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Every authenticated user.
    Everyone,
    /// Staff and admins.
    Staff,
    /// One user only (even when that user is staff).
    User(Uuid),
    /// One user, and every staff member and admin.
    UserAndStaff(Uuid),
}

impl Audience {
    /// The `audience` and `user_id` columns.
    pub fn columns(self) -> (&'static str, Option<Uuid>) {
        match self {
            Audience::Everyone => ("everyone", None),
            Audience::Staff => ("staff", None),
            Audience::User(id) => ("user", Some(id)),
            Audience::UserAndStaff(id) => ("user_and_staff", Some(id)),
        }
    }
}

/// An event about to be written to the outbox.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub topic: Topic,
    /// The event type, such as `order.created`.
    pub kind: &'static str,
    pub audience: Audience,
    /// What a client needs to update its screen without a second request.
    pub data: Value,
}

impl NewEvent {
    pub fn new(topic: Topic, kind: &'static str, audience: Audience, data: impl Serialize) -> Self {
        Self {
            topic,
            kind,
            audience,
            data: serde_json::to_value(data).expect("event data serialises"),
        }
    }
}
