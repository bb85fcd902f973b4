//! Queries on `orders` and `order_items`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::AssertSqlSafe;
use uuid::Uuid;

use super::events::{self, NewRows, bind_rows, insert_rows};
use super::{Db, Tx, placeholders};
use crate::store::{on_pool, on_tx};

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    Pending,
    Paid,
    Shipped,
    Delivered,
    Cancelled,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "pending",
            OrderStatus::Paid => "paid",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Delivered => "delivered",
            OrderStatus::Cancelled => "cancelled",
        }
    }

    /// The status staff may move an order to from this one: one step along
    /// pending → paid → shipped → delivered.
    pub fn next(self) -> Option<OrderStatus> {
        match self {
            OrderStatus::Pending => Some(OrderStatus::Paid),
            OrderStatus::Paid => Some(OrderStatus::Shipped),
            OrderStatus::Shipped => Some(OrderStatus::Delivered),
            OrderStatus::Delivered | OrderStatus::Cancelled => None,
        }
    }

    /// The status an order must have to move to this one.
    pub fn previous(self) -> Option<OrderStatus> {
        match self {
            OrderStatus::Paid => Some(OrderStatus::Pending),
            OrderStatus::Shipped => Some(OrderStatus::Paid),
            OrderStatus::Delivered => Some(OrderStatus::Shipped),
            OrderStatus::Pending | OrderStatus::Cancelled => None,
        }
    }

    /// Orders can be cancelled until they ship.
    pub fn cancellable(self) -> bool {
        matches!(self, OrderStatus::Pending | OrderStatus::Paid)
    }
}

impl TryFrom<String> for OrderStatus {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        serde_json::from_value(serde_json::Value::String(s.clone()))
            .map_err(|_| format!("unknown order status {s:?}"))
    }
}

/// An order without its items.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrderRow {
    pub id: Uuid,
    pub user_id: Uuid,
    #[sqlx(try_from = "String")]
    pub status: OrderStatus,
    pub currency: String,
    pub total_amount: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

/// A line of an order, priced when the order was placed.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct OrderItem {
    #[serde(skip)]
    pub order_id: Uuid,
    pub product_id: Uuid,
    pub sku: String,
    pub name: String,
    pub unit_amount: i64,
    pub quantity: i64,
}

/// An order with its items, as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Order {
    pub id: Uuid,
    pub user_id: Uuid,
    pub status: OrderStatus,
    pub currency: String,
    /// The sum of the lines, in the currency's minor units.
    pub total_amount: i64,
    pub items: Vec<OrderItem>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

impl Order {
    pub fn new(row: OrderRow, items: Vec<OrderItem>) -> Order {
        Order {
            id: row.id,
            user_id: row.user_id,
            status: row.status,
            currency: row.currency,
            total_amount: row.total_amount,
            items,
            created_at: row.created_at,
            updated_at: row.updated_at,
            version: row.version,
        }
    }
}

macro_rules! order_columns {
    () => {
        "id, user_id, status, currency, total_amount, created_at, updated_at, version"
    };
}

/// The SQLSTATE `place_order` raises when the order must be placed the full way.
const FULL_PATH: &str = "TD001";

/// Places an order in one statement on PostgreSQL, outside any explicit transaction (see
/// migration 0013, `place_order`): takes each item's stock if its product is still as the
/// `items` were priced from it, and writes the order, its items and `events`, in which
/// `stock_events[i]` (an index from 1) is the `inventory.stock_changed` of `items[i]`,
/// given its stock and version there; `at` stamps the events, the order's row has its
/// own time (which its products' `updated_at` take). `Ok(false)`, with nothing written, when a product
/// changed, is short or gone, or falls to its low-stock threshold; and always on SQLite,
/// where the full path is no slower (a statement is a function call there).
pub async fn place_at_once(
    db: &Db,
    row: &OrderRow,
    items: &[OrderItem],
    events: NewRows<'_>,
    stock_events: &[i32],
    at: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let Db::Postgres(pool, wake) = db else {
        return Ok(false);
    };
    debug_assert!(
        items.is_sorted_by_key(|i| i.product_id),
        "stock is taken in id order"
    );
    let placed = sqlx::query(
        "select place_order($7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
                            $1, $2, $3, $4, $5, $18, $6)",
    );
    let placed = bind_rows(placed, events, at)
        .bind(items.iter().map(|i| i.product_id).collect::<Vec<_>>())
        .bind(items.iter().map(|i| i.quantity).collect::<Vec<_>>())
        .bind(items.iter().map(|i| i.unit_amount).collect::<Vec<_>>())
        .bind(items.iter().map(|i| i.sku.as_str()).collect::<Vec<_>>())
        .bind(items.iter().map(|i| i.name.as_str()).collect::<Vec<_>>())
        .bind(&row.currency)
        .bind(row.id)
        .bind(row.user_id)
        .bind(row.status.as_str())
        .bind(row.total_amount)
        .bind(row.created_at)
        .bind(stock_events)
        .execute(pool)
        .await;
    match placed {
        Ok(_) => {
            wake.notify_one();
            Ok(true)
        }
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(FULL_PATH) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Inserts an order, its items and its events (stamped `at`): on PostgreSQL one statement,
/// the order and its lines as `with` clauses of the outbox's insert.
pub async fn insert_with_events(
    tx: &mut Tx,
    row: &OrderRow,
    items: &[OrderItem],
    events: NewRows<'_>,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    match &mut *tx {
        Tx::Postgres(c) => {
            c.wrote_events();
            let query = sqlx::query(concat!(
                "with o as (insert into orders (id, user_id, status, currency, total_amount, created_at, updated_at, version) \
                            values ($7, $8, $9, $10, $11, $12, $12, 1)), \
                 i as (insert into order_items (order_id, product_id, sku, name, unit_amount, quantity) \
                       select $7, * from unnest($13::uuid[], $14::text[], $15::text[], $16::bigint[], $17::bigint[])) ",
                insert_rows!()
            ));
            bind_rows(query, events, at)
                .bind(row.id)
                .bind(row.user_id)
                .bind(row.status.as_str())
                .bind(&row.currency)
                .bind(row.total_amount)
                .bind(row.created_at)
                .bind(items.iter().map(|i| i.product_id).collect::<Vec<_>>())
                .bind(items.iter().map(|i| i.sku.as_str()).collect::<Vec<_>>())
                .bind(items.iter().map(|i| i.name.as_str()).collect::<Vec<_>>())
                .bind(items.iter().map(|i| i.unit_amount).collect::<Vec<_>>())
                .bind(items.iter().map(|i| i.quantity).collect::<Vec<_>>())
                .execute(&mut **c)
                .await?;
            Ok(())
        }
        Tx::Sqlite(c) => {
            // A statement is a function call here, not a round trip.
            sqlx::query(
                "insert into orders (id, user_id, status, currency, total_amount, created_at, updated_at, version) \
                 values ($1, $2, $3, $4, $5, $6, $6, 1)",
            )
            .bind(row.id)
            .bind(row.user_id)
            .bind(row.status.as_str())
            .bind(&row.currency)
            .bind(row.total_amount)
            .bind(row.created_at)
            .execute(&mut **c)
            .await?;
            for item in items {
                sqlx::query(
                    "insert into order_items (order_id, product_id, sku, name, unit_amount, quantity) \
                     values ($1, $2, $3, $4, $5, $6)",
                )
                .bind(row.id)
                .bind(item.product_id)
                .bind(&item.sku)
                .bind(&item.name)
                .bind(item.unit_amount)
                .bind(item.quantity)
                .execute(&mut **c)
                .await?;
            }
            events::append(tx, events, at).await
        }
    }
}

pub async fn find(db: &Db, id: Uuid) -> Result<Option<Order>, sqlx::Error> {
    let row = on_pool!(db, pool => {
        sqlx::query_as::<_, OrderRow>(concat!("select ", order_columns!(), " from orders where id = $1"))
            .bind(id)
            .fetch_optional(pool)
            .await
    })?;
    let Some(row) = row else { return Ok(None) };
    let mut items = items_of(db, &[row.id]).await?;
    Ok(Some(Order::new(row, items.remove(&id).unwrap_or_default())))
}

pub async fn find_row_tx(tx: &mut Tx, id: Uuid) -> Result<Option<OrderRow>, sqlx::Error> {
    on_tx!(tx, c => {
        sqlx::query_as::<_, OrderRow>(concat!("select ", order_columns!(), " from orders where id = $1"))
            .bind(id)
            .fetch_optional(c)
            .await
    })
}

/// An order read inside a transaction and, on PostgreSQL, locked until it ends, so that its
/// status cannot change between this read and the transaction's own change. (SQLite's
/// transactions hold the one write lock from the start.)
pub async fn lock_row(tx: &mut Tx, id: Uuid) -> Result<Option<OrderRow>, sqlx::Error> {
    // Built from constants only.
    let sql = format!(
        concat!("select ", order_columns!(), " from orders where id = $1{}"),
        tx.for_update()
    );
    on_tx!(tx, c => sqlx::query_as::<_, OrderRow>(AssertSqlSafe(sql)).bind(id).fetch_optional(c).await)
}

pub async fn items_tx(tx: &mut Tx, order_id: Uuid) -> Result<Vec<OrderItem>, sqlx::Error> {
    on_tx!(tx, c => {
        sqlx::query_as::<_, OrderItem>(
            "select order_id, product_id, sku, name, unit_amount, quantity from order_items \
             where order_id = $1 order by product_id",
        )
        .bind(order_id)
        .fetch_all(c)
        .await
    })
}

/// The items of several orders in one query (no N+1 on lists).
async fn items_of(
    db: &Db,
    order_ids: &[Uuid],
) -> Result<HashMap<Uuid, Vec<OrderItem>>, sqlx::Error> {
    if order_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!(
        "select order_id, product_id, sku, name, unit_amount, quantity from order_items \
         where order_id in ({}) order by order_id, product_id",
        placeholders(1, order_ids.len())
    );
    let rows = on_pool!(db, pool => {
        let mut query = sqlx::query_as::<_, OrderItem>(AssertSqlSafe(sql));
        for id in order_ids {
            query = query.bind(id);
        }
        query.fetch_all(pool).await
    })?;
    let mut by_order: HashMap<Uuid, Vec<OrderItem>> = HashMap::new();
    for item in rows {
        by_order.entry(item.order_id).or_default().push(item);
    }
    Ok(by_order)
}

/// Moves an order from `from` to `to`; `None` if it is not in `from` (or does not exist).
pub async fn transition(
    tx: &mut Tx,
    id: Uuid,
    from: &[OrderStatus],
    to: OrderStatus,
    at: DateTime<Utc>,
) -> Result<Option<OrderRow>, sqlx::Error> {
    let sql = format!(
        concat!(
            "update orders set status = $2, version = version + 1, updated_at = $3 \
             where id = $1 and status in ({}) returning ",
            order_columns!()
        ),
        placeholders(4, from.len())
    );
    on_tx!(tx, c => {
        let mut query = sqlx::query_as::<_, OrderRow>(AssertSqlSafe(sql)).bind(id).bind(to.as_str()).bind(at);
        for status in from {
            query = query.bind(status.as_str());
        }
        query.fetch_optional(c).await
    })
}

/// Filters of an order list.
#[derive(Debug, Default)]
pub struct OrderQuery {
    /// Only this user's orders (always set for customers).
    pub user_id: Option<Uuid>,
    pub status: Option<OrderStatus>,
}

/// A page of orders, newest first, before the cursor.
pub async fn list(
    db: &Db,
    query: &OrderQuery,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Order>, sqlx::Error> {
    let rows = on_pool!(db, pool => {
        sqlx::query_as::<_, OrderRow>(concat!(
            "select ", order_columns!(), " from orders \
             where ($1 is null or user_id = $1) and ($2 is null or status = $2) and ($3 is null or id < $3) \
             order by id desc limit $4"
        ))
        .bind(query.user_id)
        .bind(query.status.map(OrderStatus::as_str))
        .bind(before)
        .bind(limit)
        .fetch_all(pool)
        .await
    })?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let mut items = items_of(db, &ids).await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let lines = items.remove(&row.id).unwrap_or_default();
            Order::new(row, lines)
        })
        .collect())
}
