//! The catalog and its stock.

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::Actor;
use super::notifications::{Kind, notify};
use crate::events::catalog::{LowStock, ProductDeleted, StockChanged};
use crate::events::{Audience, EventData, NewEvent, outbox};
use crate::service::error::{ServiceError, ServiceResult};
use crate::store::notifications::Recipients;
use crate::store::products::{self, NewProduct, Product, ProductPatch};
use crate::store::{Db, Tx, now};

/// Adds a product to the catalog.
#[tracing::instrument(skip_all, fields(actor = %actor.user.id))]
pub async fn create(db: &Db, actor: &Actor, new: &NewProduct<'_>) -> ServiceResult<Product> {
    let at = now();
    let mut tx = db.begin().await?;
    let product = products::insert(&mut tx, new, at).await?;
    actor
        .audit(
            &mut tx,
            "product.create",
            "product",
            product.id,
            json!(product),
            at,
        )
        .await?;
    let event = NewEvent::new(EventData::ProductCreated(&product), Audience::Everyone);
    outbox::commit(tx, &[event]).await?;
    Ok(product)
}

/// Changes a product; with `if_match`, only if it is still at that version (else 412).
#[tracing::instrument(skip_all, fields(actor = %actor.user.id, product = %id))]
pub async fn update(
    db: &Db,
    actor: &Actor,
    id: Uuid,
    patch: &ProductPatch<'_>,
    summary: serde_json::Value,
    if_match: Option<i64>,
) -> ServiceResult<Product> {
    let at = now();
    let mut tx = db.begin().await?;
    let Some(product) = products::update(&mut tx, id, patch, if_match, at).await? else {
        return Err(match products::find_tx(&mut tx, id).await? {
            Some(p) if p.deleted_at.is_none() => ServiceError::Stale {
                code: "version_mismatch",
                detail: format!(
                    "the product changed meanwhile (now at version {})",
                    p.version
                ),
            },
            _ => ServiceError::not_found("product"),
        });
    };
    actor
        .audit(&mut tx, "product.update", "product", id, summary, at)
        .await?;
    let event = NewEvent::new(EventData::ProductUpdated(&product), Audience::Everyone);
    outbox::commit(tx, &[event]).await?;
    Ok(product)
}

/// Soft-deletes a product; it stays in past orders and can be restored.
#[tracing::instrument(skip_all, fields(actor = %actor.user.id, product = %id))]
pub async fn delete(db: &Db, actor: &Actor, id: Uuid) -> ServiceResult<Product> {
    let at = now();
    let mut tx = db.begin().await?;
    let product = products::set_deleted(&mut tx, id, true, at)
        .await?
        .ok_or_else(|| ServiceError::not_found("product"))?;
    let deleted = ProductDeleted {
        id: product.id,
        sku: product.sku.clone(),
        deleted_at: product.deleted_at.unwrap_or(at),
        version: product.version,
    };
    let event = NewEvent::new(EventData::ProductDeleted(&deleted), Audience::Everyone);
    actor
        .audit(
            &mut tx,
            "product.delete",
            "product",
            id,
            json!({"sku": product.sku}),
            at,
        )
        .await?;
    outbox::commit(tx, &[event]).await?;
    Ok(product)
}

/// Brings a deleted product back.
#[tracing::instrument(skip_all, fields(actor = %actor.user.id, product = %id))]
pub async fn restore(db: &Db, actor: &Actor, id: Uuid) -> ServiceResult<Product> {
    let at = now();
    let mut tx = db.begin().await?;
    let Some(product) = products::set_deleted(&mut tx, id, false, at).await? else {
        return Err(match products::find_tx(&mut tx, id).await? {
            Some(_) => ServiceError::conflict("not_deleted", "the product is not deleted"),
            None => ServiceError::not_found("product"),
        });
    };
    actor
        .audit(
            &mut tx,
            "product.restore",
            "product",
            id,
            json!({"sku": product.sku}),
            at,
        )
        .await?;
    let event = NewEvent::new(EventData::ProductUpdated(&product), Audience::Everyone);
    outbox::commit(tx, &[event]).await?;
    Ok(product)
}

/// Adds to or takes from a product's stock, never below zero nor above the most a product
/// may hold (409 either way).
#[tracing::instrument(skip_all, fields(actor = %actor.user.id, product = %id, delta))]
pub async fn adjust_stock(
    db: &Db,
    actor: &Actor,
    id: Uuid,
    delta: i64,
    reason: &str,
) -> ServiceResult<Product> {
    let at = now();
    let mut tx = db.begin().await?;
    let Some(product) = products::adjust_stock(&mut tx, id, delta, at).await? else {
        return Err(match products::find_tx(&mut tx, id).await? {
            Some(p) if p.deleted_at.is_none() && delta < 0 => ServiceError::conflict(
                "insufficient_stock",
                format!("only {} in stock; cannot take {}", p.stock, -delta),
            ),
            Some(p) if p.deleted_at.is_none() => ServiceError::conflict(
                "stock_limit",
                format!(
                    "{} in stock; adding {delta} would pass the most a product may hold, {}",
                    p.stock,
                    products::MAX_STOCK
                ),
            ),
            _ => ServiceError::not_found("product"),
        });
    };
    let mut events = vec![stock_changed(&product, delta, reason)];
    events.extend(low_stock(&mut tx, &product, product.stock - delta, at).await?);
    actor
        .audit(
            &mut tx,
            "product.stock_adjust",
            "product",
            id,
            json!({"delta": delta, "reason": reason, "stock": product.stock}),
            at,
        )
        .await?;
    outbox::commit(tx, &events).await?;
    Ok(product)
}

/// The `inventory.stock_changed` event of a product whose stock moved by `delta`.
pub fn stock_changed(product: &Product, delta: i64, reason: &str) -> NewEvent {
    let data = StockChanged {
        product_id: product.id,
        sku: product.sku.clone(),
        stock: product.stock,
        delta,
        reason: reason.to_owned(),
        version: product.version,
    };
    NewEvent::new(EventData::StockChanged(&data), Audience::Everyone)
}

/// When stock has just fallen to or below the threshold (it was above it at
/// `previous_stock`): the staff-only `inventory.low_stock` event, and a notification to
/// every staff member with its events.
pub async fn low_stock(
    tx: &mut Tx,
    product: &Product,
    previous_stock: i64,
    at: DateTime<Utc>,
) -> Result<Vec<NewEvent>, sqlx::Error> {
    let threshold = product.low_stock_threshold;
    if product.deleted_at.is_some() || product.stock > threshold || previous_stock <= threshold {
        return Ok(Vec::new());
    }
    let data = LowStock {
        product_id: product.id,
        sku: product.sku.clone(),
        name: product.name.clone(),
        stock: product.stock,
        low_stock_threshold: threshold,
        version: product.version,
    };
    let mut events = vec![NewEvent::new(EventData::LowStock(&data), Audience::Staff)];
    let title = format!("Low stock: {}", product.name);
    let body = format!(
        "{} ({}) is down to {} (threshold {}).",
        product.name, product.sku, product.stock, threshold
    );
    events.extend(
        notify(
            tx,
            &Recipients::Staff,
            Kind::LowStock,
            &title,
            &body,
            json!(data),
            at,
        )
        .await?,
    );
    Ok(events)
}
