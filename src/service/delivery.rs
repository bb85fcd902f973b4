//! Delivery preferences: which kinds of notification a user wants pushed to their devices,
//! and which emailed, when no app of theirs acknowledged them live. No stored row means
//! the defaults: push for every kind, email for none.

use uuid::Uuid;

use super::error::ServiceResult;
use super::notifications::Kind;
use crate::store::{Db, deliveries};

/// A user's channels per notification kind, each list in the order of [`Kind::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preferences {
    pub push: Vec<Kind>,
    pub email: Vec<Kind>,
}

impl Default for Preferences {
    fn default() -> Self {
        Preferences {
            push: Kind::ALL.to_vec(),
            email: Vec::new(),
        }
    }
}

impl Preferences {
    pub fn pushes(&self, kind: &str) -> bool {
        self.push.iter().any(|k| k.as_str() == kind)
    }

    pub fn emails(&self, kind: &str) -> bool {
        self.email.iter().any(|k| k.as_str() == kind)
    }
}

/// The kinds of `list` (stored comma-separated), in the order of [`Kind::ALL`]; a name no
/// longer known is dropped.
fn parse(list: &str) -> Vec<Kind> {
    Kind::ALL
        .into_iter()
        .filter(|k| list.split(',').any(|s| s == k.as_str()))
        .collect()
}

fn join(kinds: &[Kind]) -> String {
    Kind::ALL
        .into_iter()
        .filter(|k| kinds.contains(k))
        .map(Kind::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

/// The user's preferences.
pub async fn preferences(db: &Db, user: Uuid) -> ServiceResult<Preferences> {
    Ok(match deliveries::preferences(db, user).await? {
        Some(stored) => Preferences {
            push: parse(&stored.push),
            email: parse(&stored.email),
        },
        None => Preferences::default(),
    })
}

/// The preferences of each of these users (the defaults for those who set none).
pub async fn preferences_of(
    db: &Db,
    users: &[Uuid],
) -> ServiceResult<std::collections::HashMap<Uuid, Preferences>> {
    let stored = deliveries::preferences_of(db, users).await?;
    Ok(users
        .iter()
        .map(|user| {
            let prefs = match stored.get(user) {
                Some(s) => Preferences {
                    push: parse(&s.push),
                    email: parse(&s.email),
                },
                None => Preferences::default(),
            };
            (*user, prefs)
        })
        .collect())
}

/// Replaces the user's preferences; what they are now (repeats dropped, in order).
pub async fn set_preferences(
    db: &Db,
    user: Uuid,
    wanted: &Preferences,
) -> ServiceResult<Preferences> {
    let (push, email) = (join(&wanted.push), join(&wanted.email));
    deliveries::set_preferences(db, user, &push, &email).await?;
    Ok(Preferences {
        push: parse(&push),
        email: parse(&email),
    })
}
