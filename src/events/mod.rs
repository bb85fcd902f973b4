//! Events: what a change tells live clients, written to the outbox in the change's own
//! transaction.

pub mod bus;
pub mod catalog;
pub mod outbox;
pub mod relay;
pub mod stream;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::store::events::EventRow;
pub use catalog::{EventData, EventType, Reach};

/// The streams of events. Clients subscribe to the first three; `system` carries what the
/// hubs themselves act on (a user's sessions revoked) and is never sent to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Topic {
    Orders,
    Inventory,
    Notifications,
    System,
}

impl Topic {
    /// The topics a client may subscribe to.
    pub const SUBSCRIBABLE: [Topic; 3] = [Topic::Orders, Topic::Inventory, Topic::Notifications];

    pub fn as_str(self) -> &'static str {
        match self {
            Topic::Orders => "orders",
            Topic::Inventory => "inventory",
            Topic::Notifications => "notifications",
            Topic::System => "system",
        }
    }

    /// Its place in [`Topic::SUBSCRIBABLE`], for tables with one entry per topic; `None`
    /// for `system`.
    pub fn index(self) -> Option<usize> {
        Topic::SUBSCRIBABLE.iter().position(|t| *t == self)
    }

    /// A topic a client may subscribe to, by name.
    pub fn subscribable(name: &str) -> Option<Topic> {
        Topic::SUBSCRIBABLE.into_iter().find(|t| t.as_str() == name)
    }

    fn stored(name: &str) -> Option<Topic> {
        Topic::subscribable(name).or((name == "system").then_some(Topic::System))
    }
}

/// Who may receive an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "user", rename_all = "snake_case")]
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

    /// The inverse of [`Audience::columns`].
    pub fn from_columns(audience: &str, user: Option<Uuid>) -> Option<Audience> {
        match (audience, user) {
            ("everyone", _) => Some(Audience::Everyone),
            ("staff", _) => Some(Audience::Staff),
            ("user", Some(id)) => Some(Audience::User(id)),
            ("user_and_staff", Some(id)) => Some(Audience::UserAndStaff(id)),
            _ => None,
        }
    }
}

/// Tells every hub to close the user's live connections opened with an older token
/// (a password change, logout-all, a role change, disabling). It travels the outbox like
/// any event, so no instance misses it, even with the bus down.
pub fn sessions_revoked(user_id: Uuid, token_version: i64) -> NewEvent {
    let data = catalog::SessionsRevoked {
        user_id,
        token_version,
    };
    NewEvent::new(EventData::SessionsRevoked(&data), Audience::User(user_id))
}

/// An event with its place in the stream, as the relay publishes it and hubs route it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Its position in the stream: contiguous, in commit-visible order.
    pub seq: i64,
    pub topic: Topic,
    #[serde(rename = "type")]
    pub kind: String,
    pub audience: Audience,
    /// When the change was committed (as its transaction saw the clock).
    pub at: DateTime<Utc>,
    pub data: Value,
}

impl Event {
    /// A sequenced outbox row; `None` for a row the relay has not numbered yet, or one
    /// this build cannot route (logged).
    pub fn from_row(row: EventRow) -> Option<Event> {
        let seq = row.seq?;
        let (Some(topic), Some(audience)) = (
            Topic::stored(&row.topic),
            Audience::from_columns(&row.audience, row.user_id),
        ) else {
            tracing::error!(seq, topic = %row.topic, audience = %row.audience, "an event cannot be routed; skipped");
            return None;
        };
        Some(Event {
            seq,
            topic,
            kind: row.kind,
            audience,
            at: row.created_at,
            data: row.data.0,
        })
    }
}

/// An event about to be written to the outbox.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The event type, such as `order.created`; it names the topic too.
    pub kind: EventType,
    pub audience: Audience,
    /// What a client needs to update its screen without a second request.
    pub data: Value,
}

impl NewEvent {
    /// An event of the type its data has.
    ///
    /// # Panics
    ///
    /// If `audience` is not of the type's [`Reach`](catalog::Reach): an order event for
    /// everyone would show every customer everyone's orders. A bug, caught by any test
    /// that makes the event; a request that hit it in production gets a 500, not a leak.
    pub fn new(data: EventData<'_>, audience: Audience) -> Self {
        let kind = data.event_type();
        assert!(
            kind.reach().admits(audience),
            "{} goes to {}, not to {audience:?}",
            kind.as_str(),
            kind.receivers()
        );
        Self {
            kind,
            audience,
            data: data.to_value(),
        }
    }

    pub fn topic(&self) -> Topic {
        self.kind.topic()
    }
}
