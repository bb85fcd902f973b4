//! Queries on `products`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::AssertSqlSafe;
use uuid::Uuid;

use super::{Db, Tx};
use crate::store::{on_pool, on_tx};

/// A product of the catalog, as stored and as the API shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Product {
    pub id: Uuid,
    /// Upper case; unique.
    pub sku: String,
    pub name: String,
    pub description: String,
    /// The price in the currency's minor units (cents for EUR).
    pub unit_amount: i64,
    /// ISO 4217.
    pub currency: String,
    /// Units in stock; never below 0.
    pub stock: i64,
    /// Staff are told when stock falls to or below this.
    pub low_stock_threshold: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Set when the product is deleted (soft delete; it can be restored).
    pub deleted_at: Option<DateTime<Utc>>,
    /// Bumped by every change; the ETag.
    pub version: i64,
}

macro_rules! product_columns {
    () => {
        "id, sku, name, description, unit_amount, currency, stock, low_stock_threshold, \
         created_at, updated_at, deleted_at, version"
    };
    // Qualified by the table alias `p`, for statements that join.
    (p) => {
        "p.id, p.sku, p.name, p.description, p.unit_amount, p.currency, p.stock, \
         p.low_stock_threshold, p.created_at, p.updated_at, p.deleted_at, p.version"
    };
}

/// A product to create.
#[derive(Debug)]
pub struct NewProduct<'a> {
    pub sku: &'a str,
    pub name: &'a str,
    pub description: &'a str,
    pub unit_amount: i64,
    pub currency: &'a str,
    pub stock: i64,
    pub low_stock_threshold: i64,
}

pub async fn insert(
    tx: &mut Tx,
    p: &NewProduct<'_>,
    at: DateTime<Utc>,
) -> Result<Product, sqlx::Error> {
    on_tx!(tx, c => {
        sqlx::query_as::<_, Product>(concat!(
            "insert into products (id, sku, name, name_key, description, unit_amount, currency, \
             stock, low_stock_threshold, created_at, updated_at) \
             values ($1, $2, $3, $10, $4, $5, $6, $7, $8, $9, $9) returning ",
            product_columns!()
        ))
        .bind(Uuid::now_v7())
        .bind(p.sku)
        .bind(p.name)
        .bind(p.description)
        .bind(p.unit_amount)
        .bind(p.currency)
        .bind(p.stock)
        .bind(p.low_stock_threshold)
        .bind(at)
        .bind(name_key(p.name))
        .fetch_one(c)
        .await
    })
}

pub async fn find(db: &Db, id: Uuid) -> Result<Option<Product>, sqlx::Error> {
    on_pool!(db, pool => {
        sqlx::query_as::<_, Product>(concat!("select ", product_columns!(), " from products where id = $1"))
            .bind(id)
            .fetch_optional(pool)
            .await
    })
}

pub async fn find_tx(tx: &mut Tx, id: Uuid) -> Result<Option<Product>, sqlx::Error> {
    on_tx!(tx, c => {
        sqlx::query_as::<_, Product>(concat!("select ", product_columns!(), " from products where id = $1"))
            .bind(id)
            .fetch_optional(c)
            .await
    })
}

/// Changes to a product; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct ProductPatch<'a> {
    pub sku: Option<&'a str>,
    pub name: Option<&'a str>,
    pub description: Option<&'a str>,
    pub unit_amount: Option<i64>,
    pub currency: Option<&'a str>,
    pub low_stock_threshold: Option<i64>,
}

/// Applies a patch to a live product, only at `expected_version` when one is given.
/// `None` when no row matched: missing, deleted, or at another version.
pub async fn update(
    tx: &mut Tx,
    id: Uuid,
    patch: &ProductPatch<'_>,
    expected_version: Option<i64>,
    at: DateTime<Utc>,
) -> Result<Option<Product>, sqlx::Error> {
    on_tx!(tx, c => {
        sqlx::query_as::<_, Product>(concat!(
            "update products set sku = coalesce($2, sku), name = coalesce($3, name), \
             name_key = coalesce($10, name_key), \
             description = coalesce($4, description), unit_amount = coalesce($5, unit_amount), \
             currency = coalesce($6, currency), low_stock_threshold = coalesce($7, low_stock_threshold), \
             version = version + 1, updated_at = $8 \
             where id = $1 and deleted_at is null and ($9 is null or version = $9) returning ",
            product_columns!()
        ))
        .bind(id)
        .bind(patch.sku)
        .bind(patch.name)
        .bind(patch.description)
        .bind(patch.unit_amount)
        .bind(patch.currency)
        .bind(patch.low_stock_threshold)
        .bind(at)
        .bind(expected_version)
        .bind(patch.name.map(name_key))
        .fetch_optional(c)
        .await
    })
}

/// Sets or clears `deleted_at`; `None` if the product is missing or already in that state.
pub async fn set_deleted(
    tx: &mut Tx,
    id: Uuid,
    deleted: bool,
    at: DateTime<Utc>,
) -> Result<Option<Product>, sqlx::Error> {
    on_tx!(tx, c => {
        sqlx::query_as::<_, Product>(concat!(
            "update products set deleted_at = case when $2 then $3 else null end, \
             version = version + 1, updated_at = $3 \
             where id = $1 and (deleted_at is null) = $2 returning ",
            product_columns!()
        ))
        .bind(id)
        .bind(deleted)
        .bind(at)
        .fetch_optional(c)
        .await
    })
}

/// The most units of a product the catalog holds: what creating a product allows, and
/// what a stock adjustment may not go past.
pub const MAX_STOCK: i64 = 1_000_000_000;

/// Adds `delta` to the stock of a live product unless that would take it below zero or
/// above [`MAX_STOCK`].
pub async fn adjust_stock(
    tx: &mut Tx,
    id: Uuid,
    delta: i64,
    at: DateTime<Utc>,
) -> Result<Option<Product>, sqlx::Error> {
    on_tx!(tx, c => {
        sqlx::query_as::<_, Product>(concat!(
            "update products set stock = stock + $2, version = version + 1, updated_at = $3 \
             where id = $1 and deleted_at is null and stock + $2 between 0 and $4 returning ",
            product_columns!()
        ))
        .bind(id)
        .bind(delta)
        .bind(at)
        .bind(MAX_STOCK)
        .fetch_optional(c)
        .await
    })
}

/// Takes `quantity` of each product out of stock, all or nothing. Returns the products
/// that had enough (after the change); fewer rows than items means some were short, and
/// the caller must roll back.
///
/// On PostgreSQL this is one call of the function `take_stock` (migration 0012), which
/// updates the products one by one by primary key, in the order given. `items` must be
/// sorted by id, so that concurrent orders lock their products in the same order and
/// cannot deadlock.
pub async fn take_stock(
    tx: &mut Tx,
    items: &[(Uuid, i64)],
    at: DateTime<Utc>,
) -> Result<Vec<Product>, sqlx::Error> {
    match tx {
        Tx::Postgres(c) => {
            let (ids, quantities): (Vec<Uuid>, Vec<i64>) = items.iter().copied().unzip();
            debug_assert!(ids.is_sorted(), "stock is taken in id order");
            sqlx::query_as::<_, Product>(concat!(
                "select ",
                product_columns!(),
                " from take_stock($1, $2, $3)"
            ))
            .bind(ids)
            .bind(quantities)
            .bind(at)
            .fetch_all(&mut **c)
            .await
        }
        Tx::Sqlite(c) => {
            // SQLite has one writer, taken at BEGIN IMMEDIATE; a statement is a function call.
            let mut taken = Vec::with_capacity(items.len());
            for (id, quantity) in items {
                let row = sqlx::query_as::<_, Product>(concat!(
                    "update products set stock = stock - $2, version = version + 1, updated_at = $3 \
                     where id = $1 and deleted_at is null and stock >= $2 returning ",
                    product_columns!()
                ))
                .bind(id)
                .bind(quantity)
                .bind(at)
                .fetch_optional(&mut **c)
                .await?;
                taken.extend(row);
            }
            Ok(taken)
        }
    }
}

/// Puts quantities back into stock (a cancelled order), deleted products included.
pub async fn return_stock(
    tx: &mut Tx,
    items: &[(Uuid, i64)],
    at: DateTime<Utc>,
) -> Result<Vec<Product>, sqlx::Error> {
    match tx {
        Tx::Postgres(c) => {
            let (ids, quantities): (Vec<Uuid>, Vec<i64>) = items.iter().copied().unzip();
            sqlx::query_as::<_, Product>(concat!(
                "update products p set stock = p.stock + w.qty, version = p.version + 1, updated_at = $3 \
                 from (select * from unnest($1::uuid[], $2::bigint[]) as w(id, qty) order by id) w \
                 where p.id = w.id returning ",
                product_columns!(p)
            ))
            .bind(ids)
            .bind(quantities)
            .bind(at)
            .fetch_all(&mut **c)
            .await
        }
        Tx::Sqlite(c) => {
            let mut returned = Vec::with_capacity(items.len());
            for (id, quantity) in items {
                let row = sqlx::query_as::<_, Product>(concat!(
                    "update products set stock = stock + $2, version = version + 1, updated_at = $3 \
                     where id = $1 returning ",
                    product_columns!()
                ))
                .bind(id)
                .bind(quantity)
                .bind(at)
                .fetch_optional(&mut **c)
                .await?;
                returned.extend(row);
            }
            Ok(returned)
        }
    }
}

/// Some products as they are now, in id order, without locking them (to price an order
/// that `orders::place_at_once` then places only if they are still so).
pub async fn find_many(db: &Db, ids: &[Uuid]) -> Result<Vec<Product>, sqlx::Error> {
    let sql = format!(
        concat!(
            "select ",
            product_columns!(),
            " from products where id in ({}) order by id"
        ),
        super::placeholders(1, ids.len())
    );
    on_pool!(db, pool => {
        let mut query = sqlx::query_as::<_, Product>(AssertSqlSafe(sql));
        for id in ids {
            query = query.bind(id);
        }
        query.fetch_all(pool).await
    })
}

/// Current stock of some products (to name the short items of a refused order).
pub async fn stock_of(tx: &mut Tx, ids: &[Uuid]) -> Result<Vec<(Uuid, i64, bool)>, sqlx::Error> {
    let sql = format!(
        "select id, stock, deleted_at is not null from products where id in ({})",
        super::placeholders(1, ids.len())
    );
    on_tx!(tx, c => {
        let mut query = sqlx::query_as::<_, (Uuid, i64, bool)>(AssertSqlSafe(sql));
        for id in ids {
            query = query.bind(id);
        }
        query.fetch_all(c).await
    })
}

/// How a product list is ordered; every sort ends with `id` so the order is total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Name,
    Price,
    CreatedAt,
    Stock,
}

/// Filters and order of a product list.
#[derive(Debug, Default)]
pub struct ProductQuery {
    /// Substring of the name or SKU, case-insensitive.
    pub q: Option<String>,
    pub min_price: Option<i64>,
    pub max_price: Option<i64>,
    pub in_stock: Option<bool>,
    pub include_deleted: bool,
    pub sort: Option<(SortKey, bool)>,
}

/// The keyset position after which a page starts: the sort value and the id.
pub type ProductCursor = (Value, Uuid);

/// One page of products. The SQL is assembled from fixed fragments only; every value the
/// client gave is bound.
pub async fn list(
    db: &Db,
    query: &ProductQuery,
    after: Option<&ProductCursor>,
    limit: i64,
) -> Result<Vec<Product>, sqlx::Error> {
    let (key, descending) = query.sort.unwrap_or((SortKey::CreatedAt, false));
    let sort_expr = match (key, db) {
        (SortKey::Name, Db::Postgres(..)) => "name_key collate \"C\"",
        (SortKey::Name, Db::Sqlite(..)) => "name_key",
        (SortKey::Price, _) => "unit_amount",
        (SortKey::CreatedAt, _) => "created_at",
        (SortKey::Stock, _) => "stock",
    };
    let mut conditions = Vec::new();
    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };
    if !query.include_deleted {
        conditions.push("deleted_at is null".to_owned());
    }
    let q = query
        .q
        .as_ref()
        .map(|q| format!("%{}%", escape_like(&name_key(q))));
    if q.is_some() {
        let i = next();
        conditions.push(format!(
            "(name_key like ${i} escape '\\' or lower(sku) like ${i} escape '\\')"
        ));
    }
    if query.min_price.is_some() {
        conditions.push(format!("unit_amount >= ${}", next()));
    }
    if query.max_price.is_some() {
        conditions.push(format!("unit_amount <= ${}", next()));
    }
    match query.in_stock {
        Some(true) => conditions.push("stock > 0".to_owned()),
        Some(false) => conditions.push("stock = 0".to_owned()),
        None => {}
    }
    if after.is_some() {
        let (v, i) = (next(), next());
        let op = if descending { "<" } else { ">" };
        conditions.push(format!(
            "({sort_expr} {op} ${v} or ({sort_expr} = ${v} and id {op} ${i}))"
        ));
    }
    let direction = if descending { "desc" } else { "asc" };
    let sql = format!(
        "select {} from products {} {} order by {sort_expr} {direction}, id {direction} limit ${}",
        product_columns!(),
        if conditions.is_empty() { "" } else { "where" },
        conditions.join(" and "),
        next()
    );
    on_pool!(db, pool => {
        let mut select = sqlx::query_as::<_, Product>(AssertSqlSafe(sql));
        if let Some(q) = &q {
            select = select.bind(q.clone());
        }
        if let Some(min) = query.min_price {
            select = select.bind(min);
        }
        if let Some(max) = query.max_price {
            select = select.bind(max);
        }
        if let Some((value, id)) = after {
            select = match key {
                SortKey::Name => select.bind(value.as_str().unwrap_or_default().to_owned()),
                SortKey::Price | SortKey::Stock => select.bind(value.as_i64().unwrap_or_default()),
                SortKey::CreatedAt => select.bind(
                    value.as_str().and_then(|s| s.parse::<DateTime<Utc>>().ok()).unwrap_or_default(),
                ),
            };
            select = select.bind(*id);
        }
        select.bind(limit).fetch_all(pool).await
    })
}

/// Whether a decoded cursor position holds what `key` sorts by: a cursor is opaque to
/// clients, so one that does not is tampered with (or from another version), not a place
/// to restart the list from.
pub fn cursor_fits((value, _): &ProductCursor, key: SortKey) -> bool {
    match key {
        SortKey::Name => value
            .as_str()
            .is_some_and(|s| !s.chars().any(crate::domain::text::refused)),
        SortKey::Price | SortKey::Stock => value.is_i64(),
        SortKey::CreatedAt => value
            .as_str()
            .is_some_and(|s| s.parse::<DateTime<Utc>>().is_ok()),
    }
}

/// The cursor of a product under a sort.
pub fn cursor_of(product: &Product, key: SortKey) -> ProductCursor {
    let value = match key {
        SortKey::Name => Value::from(name_key(&product.name)),
        SortKey::Price => Value::from(product.unit_amount),
        SortKey::Stock => Value::from(product.stock),
        SortKey::CreatedAt => Value::from(product.created_at.to_rfc3339()),
    };
    (value, product.id)
}

fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// The sort and search form of a name: lower case, computed here for both backends alike.
pub fn name_key(name: &str) -> String {
    name.to_lowercase()
}
