//! Orders: placed with their stock in one transaction, moved along their statuses by staff,
//! cancelled with their stock returned.

use std::collections::{BTreeMap, HashMap};

use parking_lot::Mutex;

use serde_json::{Value, json};
use uuid::Uuid;

use super::Actor;
use super::notifications::{Kind, notify};
use super::products::{low_stock, stock_changed};
use crate::error::FieldError;
use crate::events::catalog::OrderChange;
use crate::events::{Audience, EventData, NewEvent, outbox};
use crate::service::accounts::CurrentUser;
use crate::service::error::{ServiceError, ServiceResult};
use crate::store::notifications::Recipients;
use crate::store::orders::{self, Order, OrderItem, OrderQuery, OrderRow, OrderStatus};
use crate::store::{Db, Tx, idempotency, now, products};

/// An `Idempotency-Key` and the hash of the request body it was sent with.
#[derive(Debug)]
pub struct IdempotencyKey {
    pub key: String,
    pub request_hash: Vec<u8>,
}

/// What placing an order answered.
#[derive(Debug)]
pub enum Placed {
    /// A new order.
    Created(Order),
    /// A retry: the first answer to this idempotency key, as it was sent (its HTTP
    /// status, as the table keeps it, and its body).
    Replayed { status: u16, body: Value },
}

/// The answer an idempotency key keeps for a placed order: its HTTP status, `201 Created`,
/// which a retry with the key gets again.
const CREATED: u16 = 201;

/// Most units of one product one order may take, its lines of that product together.
pub const MAX_QUANTITY: i64 = 10_000;

/// Most products a [`PriceBook`] keeps; a full book starts again empty.
const PRICE_BOOK_CAP: usize = 10_000;

/// The products as this instance last read or wrote them, for pricing an order without a
/// read (`place_at_once`). It is never trusted: the single statement places the order only
/// if each product is still as the book had it, and otherwise the order takes the full
/// path, whose products then replace the book's. So an entry gone stale (staff changed the
/// product, on any instance) costs one order a failed attempt, never a wrong price. Its
/// stock and version are hints (the statement writes the real ones into the events).
#[derive(Debug, Default)]
pub struct PriceBook {
    products: Mutex<HashMap<Uuid, products::Product>>,
}

impl PriceBook {
    /// The products of `ids` (in that order), if the book has every one.
    fn get(&self, ids: &[Uuid]) -> Option<Vec<products::Product>> {
        let book = self.products.lock();
        ids.iter().map(|id| book.get(id).cloned()).collect()
    }

    fn put(&self, products: &[products::Product]) {
        let mut book = self.products.lock();
        if book.len() + products.len() > PRICE_BOOK_CAP {
            book.clear();
        }
        for product in products {
            book.insert(product.id, product.clone());
        }
    }

    fn forget(&self, ids: &[Uuid]) {
        let mut book = self.products.lock();
        for id in ids {
            book.remove(id);
        }
    }
}

/// Places an order for the caller: checks and takes the stock of every item and prices
/// them from the catalog, all or nothing.
#[tracing::instrument(skip_all, fields(user = %actor.user.id))]
pub async fn place(
    db: &Db,
    book: &PriceBook,
    actor: &Actor,
    items: &[(Uuid, i64)],
    key: Option<&IdempotencyKey>,
) -> ServiceResult<Placed> {
    // The same product twice is one line; sorted by id, the order of its items is stable.
    let mut merged: BTreeMap<Uuid, i64> = BTreeMap::new();
    for (product_id, quantity) in items {
        let total = merged.entry(*product_id).or_default();
        *total = total
            .checked_add(*quantity)
            .ok_or_else(|| quantity_error("quantity is too large"))?;
    }
    // The cap holds for what is ordered, not for each line: checked once merged.
    let over: Vec<FieldError> = merged
        .iter()
        .filter(|(_, total)| **total > MAX_QUANTITY)
        .map(|(id, total)| {
            FieldError::new(
                format!("items[{id}]"),
                "out_of_range",
                format!("the lines of this product add up to {total}; at most {MAX_QUANTITY}"),
            )
        })
        .collect();
    if !over.is_empty() {
        return Err(ServiceError::validation(over));
    }
    let items: Vec<(Uuid, i64)> = merged.into_iter().collect();

    let at = now();
    // Staff orders are audited, and a retry with a key must find the first answer: both
    // take the full path, as does any order the single statement cannot place.
    if key.is_none()
        && !actor.user.role.is_staff()
        && let Some(order) = place_at_once(db, book, actor.user.id, &items, at).await?
    {
        return Ok(Placed::Created(order));
    }
    let mut tx = db.begin().await?;
    if let Some(key) = key
        && let Some(stored) = idempotency::find(&mut tx, actor.user.id, &key.key).await?
    {
        return replay(stored, key);
    }

    let taken = products::take_stock(&mut tx, &items, at).await?;
    if taken.len() < items.len() {
        let error = shortage(&mut tx, &items, &taken).await?;
        return Err(error);
    }
    // Written last, with its events (see `outbox::commit_order`).
    let (row, lines, order) = priced(actor.user.id, &items, &taken, at)?;

    let quantities: BTreeMap<Uuid, i64> = items.iter().copied().collect();
    let mut events = vec![NewEvent::new(
        EventData::OrderCreated(&order),
        Audience::UserAndStaff(order.user_id),
    )];
    for product in &taken {
        let quantity = quantities[&product.id];
        events.push(stock_changed(product, -quantity, "order"));
        events.extend(low_stock(&mut tx, product, product.stock + quantity, at).await?);
    }
    actor
        .audit(
            &mut tx,
            "order.create",
            "order",
            order.id,
            json!({"total_amount": order.total_amount, "items": order.items.len()}),
            at,
        )
        .await?;
    if let Some(key) = key {
        let body = serde_json::to_value(&order).map_err(anyhow::Error::from)?;
        let stored = idempotency::store(
            &mut tx,
            actor.user.id,
            &key.key,
            &key.request_hash,
            CREATED,
            &body,
            at,
        )
        .await?;
        if !stored {
            // A concurrent request with the same key committed first: ours is dropped
            // (rolled back) and theirs is the answer.
            drop(tx);
            let mut tx = db.begin().await?;
            let stored = idempotency::find(&mut tx, actor.user.id, &key.key)
                .await?
                .ok_or_else(|| anyhow::anyhow!("an idempotency key vanished after a conflict"))?;
            return replay(stored, key);
        }
    }
    outbox::commit_order(tx, &row, &lines, &events).await?;
    book.put(&taken);
    Ok(Placed::Created(order))
}

/// Places an order in one statement (PostgreSQL; see `orders::place_at_once`), priced from
/// the products as `book` has them (read now if it has not); `None` when it must take the
/// full path: a product missing, deleted, short or about to fall low, prices in several
/// currencies, a total too large, or a product not as the book had it.
async fn place_at_once(
    db: &Db,
    book: &PriceBook,
    user: Uuid,
    items: &[(Uuid, i64)],
    at: chrono::DateTime<chrono::Utc>,
) -> ServiceResult<Option<Order>> {
    if !matches!(db, Db::Postgres(..)) {
        return Ok(None);
    }
    let ids: Vec<Uuid> = items.iter().map(|(id, _)| *id).collect();
    let mut products = match book.get(&ids) {
        Some(products) => products,
        None => {
            let products = products::find_many(db, &ids).await?;
            book.put(&products);
            products
        }
    };
    let ready = products.len() == items.len()
        && products.iter().zip(items).all(|(p, (id, quantity))| {
            p.id == *id
                && p.deleted_at.is_none()
                && p.stock >= *quantity
                && (p.stock - quantity > p.low_stock_threshold || p.stock <= p.low_stock_threshold)
        });
    if !ready {
        return Ok(None);
    }
    // As they will be once taken; the statement writes the real stock and version into
    // the events.
    for (product, (_, quantity)) in products.iter_mut().zip(items) {
        product.stock -= quantity;
        product.version += 1;
    }
    let Ok((row, lines, order)) = priced(user, items, &products, at) else {
        return Ok(None);
    };
    let mut events = vec![NewEvent::new(
        EventData::OrderCreated(&order),
        Audience::UserAndStaff(order.user_id),
    )];
    let mut stock_events = Vec::with_capacity(products.len());
    for (product, (_, quantity)) in products.iter().zip(items) {
        events.push(stock_changed(product, -quantity, "order"));
        stock_events.push(i32::try_from(events.len()).map_err(anyhow::Error::from)?);
    }
    if outbox::place_order_at_once(db, &row, &lines, &events, &stock_events).await? {
        book.put(&products);
        Ok(Some(order))
    } else {
        // The full path's products replace these.
        book.forget(&ids);
        Ok(None)
    }
}

/// An order of the `taken` products (in id order, each with the quantity `items` give
/// it): its row, its lines, and the order as the API shows it.
fn priced(
    user: Uuid,
    items: &[(Uuid, i64)],
    taken: &[products::Product],
    at: chrono::DateTime<chrono::Utc>,
) -> ServiceResult<(OrderRow, Vec<OrderItem>, Order)> {
    let currency = &taken[0].currency;
    if taken.iter().any(|p| &p.currency != currency) {
        return Err(ServiceError::validation(vec![FieldError::new(
            "items",
            "mixed_currencies",
            "every item of an order must be priced in the same currency",
        )]));
    }
    let quantities: BTreeMap<Uuid, i64> = items.iter().copied().collect();
    let mut lines = Vec::with_capacity(taken.len());
    let mut total: i64 = 0;
    let order_id = Uuid::now_v7();
    for product in taken {
        let quantity = quantities[&product.id];
        let amount = product
            .unit_amount
            .checked_mul(quantity)
            .ok_or_else(|| quantity_error("the total is too large"))?;
        total = total
            .checked_add(amount)
            .ok_or_else(|| quantity_error("the total is too large"))?;
        lines.push(OrderItem {
            order_id,
            product_id: product.id,
            sku: product.sku.clone(),
            name: product.name.clone(),
            unit_amount: product.unit_amount,
            quantity,
        });
    }
    lines.sort_by_key(|l| l.product_id);
    let row = OrderRow {
        id: order_id,
        user_id: user,
        status: OrderStatus::Pending,
        currency: currency.clone(),
        total_amount: total,
        created_at: at,
        updated_at: at,
        version: 1,
    };
    let order = Order::new(row.clone(), lines.clone());
    Ok((row, lines, order))
}

fn quantity_error(message: &str) -> ServiceError {
    ServiceError::validation(vec![FieldError::new("items", "out_of_range", message)])
}

fn replay(stored: idempotency::StoredResponse, key: &IdempotencyKey) -> ServiceResult<Placed> {
    if stored.request_hash != key.request_hash {
        return Err(ServiceError::Unprocessable {
            code: "idempotency_key_reused",
            detail: "this Idempotency-Key was used with a different request body".into(),
        });
    }
    Ok(Placed::Replayed {
        status: u16::try_from(stored.response_status).unwrap_or(CREATED),
        body: stored.response_body.0,
    })
}

/// The error for an order some of whose items could not be taken: unknown or deleted
/// products are a 422, short stock a 409 naming each short item.
async fn shortage(
    tx: &mut Tx,
    items: &[(Uuid, i64)],
    taken: &[products::Product],
) -> ServiceResult<ServiceError> {
    let ids: Vec<Uuid> = items.iter().map(|(id, _)| *id).collect();
    let known: BTreeMap<Uuid, (i64, bool)> = products::stock_of(tx, &ids)
        .await?
        .into_iter()
        .map(|(id, stock, deleted)| (id, (stock, deleted)))
        .collect();
    let unknown: Vec<FieldError> = items
        .iter()
        .filter(|(id, _)| known.get(id).is_none_or(|(_, deleted)| *deleted))
        .map(|(id, _)| FieldError::new("items", "unknown_product", format!("no product {id}")))
        .collect();
    if !unknown.is_empty() {
        return Ok(ServiceError::validation(unknown));
    }
    let short: Vec<FieldError> = items
        .iter()
        .filter_map(|(id, quantity)| {
            let (stock, _) = known[id];
            (stock < *quantity).then(|| {
                FieldError::new(
                    format!("items[{id}]"),
                    "insufficient_stock",
                    format!("{quantity} requested, {stock} in stock"),
                )
            })
        })
        .collect();
    if short.is_empty() {
        // Neither unknown nor short now, yet not taken: deleted when the stock was taken and
        // restored since (each statement reads what is committed when it starts). What the
        // take saw stands.
        let gone: Vec<FieldError> = items
            .iter()
            .filter(|(id, _)| !taken.iter().any(|p| p.id == *id))
            .map(|(id, _)| {
                FieldError::new(
                    "items",
                    "unknown_product",
                    format!("no product {id} (it was deleted as the order was placed)"),
                )
            })
            .collect();
        return Ok(ServiceError::validation(gone));
    }
    Ok(ServiceError::Conflict {
        code: "insufficient_stock",
        detail: "some items are short of stock; nothing was ordered".into(),
        errors: short,
    })
}

/// An order the caller may see: their own, or any for staff. Anyone else gets 404.
pub async fn get(db: &Db, user: &CurrentUser, id: Uuid) -> ServiceResult<Order> {
    match orders::find(db, id).await? {
        Some(order) if order.user_id == user.id || user.role.is_staff() => Ok(order),
        _ => Err(ServiceError::not_found("order")),
    }
}

/// Orders the caller may see, newest first.
pub async fn list(
    db: &Db,
    user: &CurrentUser,
    mut query: OrderQuery,
    before: Option<Uuid>,
    limit: i64,
) -> ServiceResult<Vec<Order>> {
    if !user.role.is_staff() {
        query.user_id = Some(user.id);
    }
    Ok(orders::list(db, &query, before, limit).await?)
}

/// Moves an order one step along pending → paid → shipped → delivered (staff).
#[tracing::instrument(skip_all, fields(actor = %actor.user.id, order = %id, to = to.as_str()))]
pub async fn set_status(db: &Db, actor: &Actor, id: Uuid, to: OrderStatus) -> ServiceResult<Order> {
    let Some(from) = to.previous() else {
        return Err(ServiceError::validation(vec![FieldError::new(
            "status",
            "invalid",
            "must be paid, shipped or delivered (cancel with POST /v1/orders/{id}/cancel)",
        )]));
    };
    let at = now();
    let mut tx = db.begin().await?;
    let Some(row) = orders::transition(&mut tx, id, &[from], to, at).await? else {
        return Err(invalid_transition(&mut tx, id, to).await?);
    };
    let (order, events) = finish_change(&mut tx, actor, row, from, false, at).await?;
    outbox::commit(tx, &events).await?;
    Ok(order)
}

/// Cancels an order before it ships and returns its stock: the owner, or staff.
#[tracing::instrument(skip_all, fields(actor = %actor.user.id, order = %id))]
pub async fn cancel(db: &Db, actor: &Actor, id: Uuid) -> ServiceResult<Order> {
    let at = now();
    let mut tx = db.begin().await?;
    // Locked: the status it had is the cancellation's `previous_status`.
    let visible = orders::lock_row(&mut tx, id)
        .await?
        .filter(|o| o.user_id == actor.user.id || actor.user.role.is_staff())
        .ok_or_else(|| ServiceError::not_found("order"))?;
    let Some(row) = orders::transition(
        &mut tx,
        id,
        &[OrderStatus::Pending, OrderStatus::Paid],
        OrderStatus::Cancelled,
        at,
    )
    .await?
    else {
        return Err(invalid_transition(&mut tx, id, OrderStatus::Cancelled).await?);
    };
    let items = orders::items_tx(&mut tx, id).await?;
    let returned: Vec<(Uuid, i64)> = items.iter().map(|i| (i.product_id, i.quantity)).collect();
    let products = products::return_stock(&mut tx, &returned, at).await?;
    let mut events: Vec<NewEvent> = products
        .iter()
        .map(|p| {
            let quantity = returned
                .iter()
                .find(|(id, _)| *id == p.id)
                .map_or(0, |(_, q)| *q);
            stock_changed(p, quantity, "order_cancelled")
        })
        .collect();
    let (order, change) = finish_change(&mut tx, actor, row, visible.status, true, at).await?;
    events.extend(change);
    outbox::commit(tx, &events).await?;
    Ok(order)
}

/// The owner's notification and the audit entry of a status change (a cancellation when
/// `cancelled`); the order and the events to commit with it.
async fn finish_change(
    tx: &mut Tx,
    actor: &Actor,
    row: OrderRow,
    from: OrderStatus,
    cancelled: bool,
    at: chrono::DateTime<chrono::Utc>,
) -> ServiceResult<(Order, Vec<NewEvent>)> {
    let order = Order::new(row.clone(), orders::items_tx(tx, row.id).await?);
    let change = OrderChange {
        order_id: order.id,
        user_id: order.user_id,
        status: order.status,
        previous_status: from,
        total_amount: order.total_amount,
        currency: order.currency.clone(),
        updated_at: order.updated_at,
        version: order.version,
    };
    let data = if cancelled {
        EventData::OrderCancelled(&change)
    } else {
        EventData::OrderStatusChanged(&change)
    };
    let mut events = vec![NewEvent::new(data, Audience::UserAndStaff(order.user_id))];
    let title = format!("Order {}", order.status.as_str());
    let body = format!("Your order {} is now {}.", order.id, order.status.as_str());
    events.extend(
        notify(
            tx,
            &Recipients::Users(vec![order.user_id]),
            Kind::OrderStatus,
            &title,
            &body,
            json!(change),
            at,
        )
        .await?,
    );
    let action = if cancelled {
        "order.cancel"
    } else {
        "order.status"
    };
    actor
        .audit(
            tx,
            action,
            "order",
            order.id,
            json!({"from": from, "to": order.status}),
            at,
        )
        .await?;
    Ok((order, events))
}

async fn invalid_transition(tx: &mut Tx, id: Uuid, to: OrderStatus) -> ServiceResult<ServiceError> {
    Ok(match orders::find_row_tx(tx, id).await? {
        Some(order) => ServiceError::conflict(
            "invalid_transition",
            format!(
                "an order that is {} cannot become {}",
                order.status.as_str(),
                to.as_str()
            ),
        ),
        None => ServiceError::not_found("order"),
    })
}
