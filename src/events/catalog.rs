//! Every event type a change can write: its name, its topic, who receives it, and the Rust
//! type of its `data`. An event can only be made from an [`EventData`], so no event type
//! exists outside this list, and the AsyncAPI document (`GET /asyncapi.json`) describes each
//! one from the same list, its `data` schema generated from that type.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::{Ref, RefOr};
use uuid::Uuid;

use super::{Audience, Topic};
use crate::store::notifications::Notification;
use crate::store::orders::{Order, OrderStatus};
use crate::store::products::Product;

/// Who receives the events of a type; each event's [`Audience`] must be of its type's reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Every authenticated user.
    Everyone,
    /// Staff and admins.
    Staff,
    /// The user the event is about (an order's owner), and every staff member and admin.
    OwnerAndStaff,
    /// The one user it is for; staff see only their own.
    Recipient,
    /// No client: the hubs act on it.
    Hubs,
}

impl Reach {
    /// Whether `audience` is one this reach allows.
    pub fn admits(self, audience: Audience) -> bool {
        matches!(
            (self, audience),
            (Reach::Everyone, Audience::Everyone)
                | (Reach::Staff, Audience::Staff)
                | (Reach::OwnerAndStaff, Audience::UserAndStaff(_))
                | (Reach::Recipient | Reach::Hubs, Audience::User(_))
        )
    }

    /// In words, as the AsyncAPI document says it.
    pub fn describe(self) -> &'static str {
        match self {
            Reach::Everyone => "every authenticated user",
            Reach::Staff => "staff and admins only",
            Reach::OwnerAndStaff => "the order's owner; every staff member and admin",
            Reach::Recipient => "the recipient only (staff too see only their own)",
            Reach::Hubs => "no client: the hubs act on it",
        }
    }
}

/// Declares the event types once: the [`EventType`] enum with its list and names, and the
/// [`EventData`] enum that ties each type to the type of its data.
macro_rules! event_types {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident = $name:literal on $topic:ident: $data:ty, to $reach:ident;
    )*) => {
        /// An event type, such as `order.created`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EventType {
            $($(#[doc = $doc])* $variant,)*
        }

        impl EventType {
            /// Every event type, as declared.
            pub const ALL: &'static [EventType] = &[$(EventType::$variant),*];

            /// Its name, as the envelope's `type` and the SSE `event:` carry it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(EventType::$variant => $name,)*
                }
            }

            /// The topic it is published on.
            pub fn topic(self) -> Topic {
                match self {
                    $(EventType::$variant => Topic::$topic,)*
                }
            }

            /// Who receives it.
            pub fn reach(self) -> Reach {
                match self {
                    $(EventType::$variant => Reach::$reach,)*
                }
            }

            /// Who receives it, in words.
            pub fn receivers(self) -> &'static str {
                self.reach().describe()
            }

            /// What it tells, from its doc comment.
            pub fn description(self) -> String {
                let lines: &[&str] = match self {
                    $(EventType::$variant => &[$($doc),*],)*
                };
                lines.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" ")
            }

            /// The schema of its `data`, as a reference into `schemas`, to which the schema
            /// and every schema it refers to are added.
            pub fn data_schema(self, schemas: &mut Vec<(String, RefOr<Schema>)>) -> RefOr<Schema> {
                match self {
                    $(EventType::$variant => component::<$data>(schemas),)*
                }
            }
        }

        /// An event's data, of the type its event type has.
        #[derive(Debug, Clone, Copy)]
        pub enum EventData<'a> {
            $($variant(&'a $data),)*
        }

        impl EventData<'_> {
            pub fn event_type(&self) -> EventType {
                match self {
                    $(EventData::$variant(_) => EventType::$variant,)*
                }
            }

            pub fn to_value(&self) -> Value {
                match self {
                    $(EventData::$variant(data) => serde_json::to_value(data),)*
                }
                .expect("event data serialises")
            }
        }
    };
}

event_types! {
    /// A product was added to the catalog.
    ProductCreated = "product.created" on Inventory: Product,
        to Everyone;
    /// A product changed (any field but its stock), or a deleted product was restored.
    ProductUpdated = "product.updated" on Inventory: Product,
        to Everyone;
    /// A product was deleted (a soft delete: it stays in past orders and can be restored).
    ProductDeleted = "product.deleted" on Inventory: ProductDeleted,
        to Everyone;
    /// A product's stock moved: adjusted by staff, taken by an order, returned by a
    /// cancellation.
    StockChanged = "inventory.stock_changed" on Inventory: StockChanged,
        to Everyone;
    /// A product's stock has just fallen to or below its threshold.
    LowStock = "inventory.low_stock" on Inventory: LowStock,
        to Staff;
    /// An order was placed.
    OrderCreated = "order.created" on Orders: Order,
        to OwnerAndStaff;
    /// An order moved one step along pending → paid → shipped → delivered.
    OrderStatusChanged = "order.status_changed" on Orders: OrderChange,
        to OwnerAndStaff;
    /// An order was cancelled; its stock was returned.
    OrderCancelled = "order.cancelled" on Orders: OrderChange,
        to OwnerAndStaff;
    /// A notification was created for the user.
    NotificationCreated = "notification.created" on Notifications: Notification,
        to Recipient;
    /// One, or all, of the user's notifications were marked read.
    NotificationRead = "notification.read" on Notifications: NotificationRead,
        to Recipient;
    /// One of the user's notifications was deleted.
    NotificationDeleted = "notification.deleted" on Notifications: NotificationDeleted,
        to Recipient;
    /// A user's sessions were revoked: every hub closes the user's connections opened with
    /// an older token. Never sent to a client.
    SessionsRevoked = "user.sessions_revoked" on System: SessionsRevoked,
        to Hubs;
}

/// A [`ToSchema`] type's schema as a reference, its schemas added to `schemas`.
fn component<T: ToSchema>(schemas: &mut Vec<(String, RefOr<Schema>)>) -> RefOr<Schema> {
    let name: Cow<'static, str> = T::name();
    schemas.push((name.to_string(), T::schema()));
    T::schemas(schemas);
    RefOr::Ref(Ref::from_schema_name(name))
}

/// The data of `product.deleted`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProductDeleted {
    pub id: Uuid,
    pub sku: String,
    pub deleted_at: DateTime<Utc>,
    /// The product's version after the change.
    pub version: i64,
}

/// The data of `inventory.stock_changed`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StockChanged {
    pub product_id: Uuid,
    pub sku: String,
    /// Units in stock now.
    pub stock: i64,
    /// Units added (positive) or taken (negative).
    pub delta: i64,
    /// Why: the staff's reason for an adjustment, `order` for an order placed,
    /// `order_cancelled` for one cancelled.
    pub reason: String,
    /// The product's version after the change.
    pub version: i64,
}

/// The data of `inventory.low_stock`, and of the `low_stock` notification staff receive.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LowStock {
    pub product_id: Uuid,
    pub sku: String,
    pub name: String,
    /// Units in stock now.
    pub stock: i64,
    pub low_stock_threshold: i64,
    /// The product's version: that of the stock change that crossed the threshold.
    pub version: i64,
}

/// The data of `order.status_changed` and `order.cancelled`, and of the `order_status`
/// notification the owner receives.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OrderChange {
    pub order_id: Uuid,
    /// The order's owner.
    pub user_id: Uuid,
    pub status: OrderStatus,
    pub previous_status: OrderStatus,
    /// In the currency's minor units.
    pub total_amount: i64,
    pub currency: String,
    pub updated_at: DateTime<Utc>,
    /// The order's version after the change.
    pub version: i64,
}

/// The data of `notification.read`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum NotificationRead {
    /// One notification was marked read.
    One {
        /// The notification read (one id).
        ids: Vec<Uuid>,
        read_at: DateTime<Utc>,
        /// The notification's version now (2: read).
        version: i64,
    },
    /// Every unread notification of the user was marked read.
    All {
        /// Always `true`.
        all: bool,
        /// The notifications marked read: exactly those, not any committed meanwhile.
        ids: Vec<Uuid>,
        read_at: DateTime<Utc>,
        /// Their version now (2: read).
        version: i64,
    },
}

/// The data of `notification.deleted`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NotificationDeleted {
    /// The notification deleted.
    pub id: Uuid,
}

/// The data of `user.sessions_revoked`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionsRevoked {
    pub user_id: Uuid,
    /// Connections opened with a token of an older version are closed.
    pub token_version: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_has_a_distinct_name_on_its_declared_topic() {
        let mut names: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), EventType::ALL.len());
        for kind in EventType::ALL {
            let prefix = kind.as_str().split('.').next().unwrap();
            let expected = match prefix {
                "product" | "inventory" => Topic::Inventory,
                "order" => Topic::Orders,
                "notification" => Topic::Notifications,
                _ => Topic::System,
            };
            assert_eq!(kind.topic(), expected, "{}", kind.as_str());
            assert!(!kind.description().is_empty());
        }
    }

    #[test]
    fn an_events_data_is_the_json_of_its_type() {
        let data = SessionsRevoked {
            user_id: Uuid::nil(),
            token_version: 3,
        };
        let typed = EventData::SessionsRevoked(&data);
        assert_eq!(typed.event_type(), EventType::SessionsRevoked);
        assert_eq!(
            typed.to_value(),
            serde_json::json!({"user_id": Uuid::nil(), "token_version": 3})
        );
        let mut schemas = Vec::new();
        let reference = EventType::SessionsRevoked.data_schema(&mut schemas);
        let RefOr::Ref(reference) = reference else {
            panic!("a reference");
        };
        assert_eq!(
            reference.ref_location,
            "#/components/schemas/SessionsRevoked"
        );
        assert_eq!(schemas[0].0, "SessionsRevoked");
    }

    #[test]
    fn each_reach_admits_its_audiences_only() {
        let someone = Uuid::nil();
        let audiences = [
            Audience::Everyone,
            Audience::Staff,
            Audience::UserAndStaff(someone),
            Audience::User(someone),
        ];
        let admitted = |reach: Reach| -> Vec<Audience> {
            audiences.into_iter().filter(|a| reach.admits(*a)).collect()
        };
        assert_eq!(admitted(Reach::Everyone), [Audience::Everyone]);
        assert_eq!(admitted(Reach::Staff), [Audience::Staff]);
        assert_eq!(
            admitted(Reach::OwnerAndStaff),
            [Audience::UserAndStaff(someone)]
        );
        assert_eq!(admitted(Reach::Recipient), [Audience::User(someone)]);
        assert_eq!(EventType::LowStock.reach(), Reach::Staff);
        assert_eq!(EventType::OrderCreated.reach(), Reach::OwnerAndStaff);
    }

    #[test]
    #[should_panic(expected = "user.sessions_revoked goes to no client")]
    fn an_event_for_the_wrong_audience_is_never_made() {
        let data = SessionsRevoked {
            user_id: Uuid::nil(),
            token_version: 1,
        };
        let _ = crate::events::NewEvent::new(EventData::SessionsRevoked(&data), Audience::Everyone);
    }
}
