//! Services: each operation opens one transaction, writes the change, its outbox events and
//! (for staff and admins) its audit entry, and commits them together.

pub mod accounts;
pub mod delivery;
pub mod devices;
pub mod error;
pub mod notifications;
pub mod orders;
pub mod products;

use chrono::{DateTime, Utc};
use serde_json::Value;

pub use self::error::{ServiceError, ServiceResult};
use crate::service::accounts::CurrentUser;
use crate::store::{Tx, audit};

/// The caller of a write: who they are and the request's id, for the audit log.
#[derive(Debug, Clone)]
pub struct Actor {
    pub user: CurrentUser,
    pub request_id: Option<String>,
}

impl Actor {
    /// Records a write in the audit log if the actor is staff or an admin.
    pub async fn audit(
        &self,
        tx: &mut Tx,
        action: &str,
        target_type: &str,
        target_id: impl ToString,
        summary: Value,
        at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        if !self.user.role.is_staff() {
            return Ok(());
        }
        let entry = audit::NewAuditEntry {
            actor_id: self.user.id,
            action,
            target_type,
            target_id: target_id.to_string(),
            summary,
            request_id: self.request_id.as_deref(),
        };
        audit::insert(tx, &entry, at).await
    }
}
