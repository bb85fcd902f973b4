//! Committing a change together with its events.

use sqlx::types::Json;

use super::NewEvent;
use crate::store::events::{self as rows, NewRows};
use crate::store::orders::{self, OrderItem, OrderRow};
use crate::store::{Db, Tx, now};

/// Commits `tx` with the change's `events`, appended as its last statement and stamped
/// with the time of appending. An event's `at` is thus as close to its commit as a row can
/// tell, and the delivery lag measured from it (relay lag, delivery lag, the load tester's
/// commit-to-receipt) counts the commit itself and none of the rest of the transaction.
pub async fn commit(mut tx: Tx, events: &[NewEvent]) -> Result<(), sqlx::Error> {
    rows::append(&mut tx, columns(events), now()).await?;
    tx.commit().await
}

/// Commits `tx` with a new order and its `events`, as [`commit`] does; on PostgreSQL the
/// order, its lines and its events are one statement (one round trip for all three).
pub async fn commit_order(
    mut tx: Tx,
    order: &OrderRow,
    items: &[OrderItem],
    events: &[NewEvent],
) -> Result<(), sqlx::Error> {
    orders::insert_with_events(&mut tx, order, items, columns(events), now()).await?;
    tx.commit().await
}

/// Places a new order with its `events` in one statement, with no transaction around it
/// (see `orders::place_at_once`, which says when it does not and writes nothing).
pub async fn place_order_at_once(
    db: &Db,
    order: &OrderRow,
    items: &[OrderItem],
    events: &[NewEvent],
    stock_events: &[i32],
) -> Result<bool, sqlx::Error> {
    orders::place_at_once(db, order, items, columns(events), stock_events, now()).await
}

/// The events as the outbox's columns.
fn columns(events: &[NewEvent]) -> NewRows<'_> {
    let mut rows = NewRows {
        topics: Vec::with_capacity(events.len()),
        kinds: Vec::with_capacity(events.len()),
        audiences: Vec::with_capacity(events.len()),
        users: Vec::with_capacity(events.len()),
        data: Vec::with_capacity(events.len()),
    };
    for event in events {
        let (audience, user) = event.audience.columns();
        rows.topics.push(event.topic().as_str());
        rows.kinds.push(event.kind.as_str());
        rows.audiences.push(audience);
        rows.users.push(user);
        rows.data.push(Json(&event.data));
    }
    rows
}
