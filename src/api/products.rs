//! `/v1/products`: the catalog and its stock. Reads for any user, writes for staff.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::openapi;
use super::pagination::{Page, PageParams};
use crate::domain::{Currency, Role, Sku, text};
use crate::error::{FieldError, ProblemDoc};
use crate::http::AppState;
use crate::http::etag;
use crate::http::extract::{Json, Path, Query, from_value, present, whole, whole_opt};
use crate::http::position::{self, Position};
use crate::http::problem::{ApiError, ApiResult};
use crate::service::accounts::CurrentUser;
use crate::service::{Actor, products as service};
use crate::store::Db;
use crate::store::products::{
    self, NewProduct, Product, ProductCursor, ProductPatch, ProductQuery, SortKey,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get_one, update, delete))
        .routes(routes!(restore))
        .routes(routes!(adjust_stock))
}

const MAX_AMOUNT: i64 = 1_000_000_000_000;
const MAX_STOCK: i64 = crate::store::products::MAX_STOCK;

/// A new product.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProduct {
    #[schema(schema_with = openapi::sku)]
    sku: String,
    #[schema(schema_with = openapi::text::<200, true>)]
    name: String,
    #[serde(default)]
    #[schema(schema_with = openapi::text::<5000, false>)]
    description: String,
    /// The price in the currency's minor units.
    #[serde(deserialize_with = "whole")]
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    unit_amount: i64,
    #[schema(schema_with = openapi::currency)]
    currency: String,
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    stock: i64,
    /// Staff are told when stock falls to or below this.
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    low_stock_threshold: i64,
}

/// Changes to a product; absent fields stay as they are (`null` is not a value). Stock
/// changes go through stock adjustments.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProduct {
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(schema_with = openapi::sku)]
    sku: Option<String>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(schema_with = openapi::text::<200, true>)]
    name: Option<String>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(schema_with = openapi::text::<5000, false>)]
    description: Option<String>,
    #[serde(
        default,
        deserialize_with = "whole_opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(nullable = false, minimum = 0, maximum = 1_000_000_000_000_i64)]
    unit_amount: Option<i64>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(schema_with = openapi::currency)]
    currency: Option<String>,
    #[serde(
        default,
        deserialize_with = "whole_opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(nullable = false, minimum = 0, maximum = 1_000_000_000)]
    low_stock_threshold: Option<i64>,
}

/// A change of stock.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockAdjustment {
    #[serde(deserialize_with = "whole")]
    #[schema(schema_with = stock_delta)]
    delta: i64,
    /// Why, for the audit log and the event: e.g. `restock`, `damaged`.
    #[schema(schema_with = openapi::text::<200, true>)]
    reason: String,
}

fn stock_delta() -> utoipa::openapi::schema::Schema {
    openapi::delta(MAX_STOCK)
}

/// How a product list is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
pub enum Sort {
    #[serde(rename = "name")]
    Name,
    #[serde(rename = "-name")]
    NameDesc,
    #[serde(rename = "price")]
    Price,
    #[serde(rename = "-price")]
    PriceDesc,
    #[default]
    #[serde(rename = "created_at")]
    CreatedAt,
    #[serde(rename = "-created_at")]
    CreatedAtDesc,
    #[serde(rename = "stock")]
    Stock,
    #[serde(rename = "-stock")]
    StockDesc,
}

impl Sort {
    const ALL: [Sort; 8] = [
        Sort::Name,
        Sort::NameDesc,
        Sort::Price,
        Sort::PriceDesc,
        Sort::CreatedAt,
        Sort::CreatedAtDesc,
        Sort::Stock,
        Sort::StockDesc,
    ];

    fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// A sort by its name; an unknown one is the client's invalid field (422).
    fn parse(name: Option<&str>) -> ApiResult<Sort> {
        let Some(name) = name else {
            return Ok(Sort::default());
        };
        Sort::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| {
                ApiError::validation(vec![FieldError::new(
                    "sort",
                    "invalid",
                    "must be name, price, created_at or stock, with - in front for descending",
                )])
            })
    }

    /// The key and whether it descends.
    fn key(self) -> (SortKey, bool) {
        match self {
            Sort::Name => (SortKey::Name, false),
            Sort::NameDesc => (SortKey::Name, true),
            Sort::Price => (SortKey::Price, false),
            Sort::PriceDesc => (SortKey::Price, true),
            Sort::CreatedAt => (SortKey::CreatedAt, false),
            Sort::CreatedAtDesc => (SortKey::CreatedAt, true),
            Sort::Stock => (SortKey::Stock, false),
            Sort::StockDesc => (SortKey::Stock, true),
        }
    }
}

fn sort_names() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(Sort::ALL.map(Sort::name)))
        .build()
}

/// Filters and order of the product list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProductListParams {
    /// Substring of the name or SKU, case-insensitive.
    #[param(schema_with = openapi::text::<200, false>)]
    q: Option<String>,
    /// Lowest unit_amount.
    min_price: Option<i64>,
    /// Highest unit_amount; not below min_price.
    max_price: Option<i64>,
    /// true: only products in stock; false: only those out of stock.
    in_stock: Option<bool>,
    /// Staff only: deleted products too.
    include_deleted: Option<bool>,
    /// `-` in front for descending; created_at when omitted.
    #[param(schema_with = sort_names)]
    sort: Option<String>,
    /// 1 to 100; 50 when omitted.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    #[param(schema_with = openapi::cursor)]
    cursor: Option<String>,
}

fn check_text(errors: &mut Vec<FieldError>, field: &str, value: &str, max: usize, required: bool) {
    if let Err(error) = text::check(field, value, max, required) {
        errors.push(error);
    }
}

fn check_range(errors: &mut Vec<FieldError>, field: &str, value: i64, max: i64) {
    if !(0..=max).contains(&value) {
        errors.push(FieldError::new(
            field,
            "out_of_range",
            format!("must be between 0 and {max}"),
        ));
    }
}

fn parse_field<T>(
    errors: &mut Vec<FieldError>,
    field: &str,
    result: Result<T, &'static str>,
) -> Option<T> {
    result
        .map_err(|message| errors.push(FieldError::new(field, "invalid", message)))
        .ok()
}

fn done<T>(errors: Vec<FieldError>, value: T) -> ApiResult<T> {
    if errors.is_empty() {
        Ok(value)
    } else {
        Err(ApiError::validation(errors))
    }
}

/// Adds a product (staff).
#[utoipa::path(post, path = "/v1/products", tag = "products", security(("bearer" = [])),
    request_body = CreateProduct,
    responses(
        (status = 201, description = "Created, with its ETag", body = Product,
            headers(("etag" = String, description = "The product's version"), ("location" = String, description = "The product's URL"))),
        (status = 403, description = "Not staff", body = ProblemDoc),
        (status = 409, description = "SKU taken", body = ProblemDoc),
    ))]
#[tracing::instrument(skip_all)]
async fn create(
    State(db): State<Db>,
    actor: Actor,
    Json(body): Json<CreateProduct>,
) -> ApiResult<Response> {
    actor.user.require(Role::Staff)?;
    let mut errors = Vec::new();
    let sku = parse_field(&mut errors, "sku", Sku::parse(&body.sku));
    let currency = parse_field(&mut errors, "currency", Currency::parse(&body.currency));
    check_text(&mut errors, "name", &body.name, 200, true);
    check_text(&mut errors, "description", &body.description, 5000, false);
    check_range(&mut errors, "unit_amount", body.unit_amount, MAX_AMOUNT);
    check_range(&mut errors, "stock", body.stock, MAX_STOCK);
    check_range(
        &mut errors,
        "low_stock_threshold",
        body.low_stock_threshold,
        MAX_STOCK,
    );
    let (Some(sku), Some(currency), true) = (sku, currency, errors.is_empty()) else {
        return Err(ApiError::validation(errors));
    };
    let new = NewProduct {
        sku: sku.as_str(),
        name: body.name.trim(),
        description: body.description.trim(),
        unit_amount: body.unit_amount,
        currency: currency.code(),
        stock: body.stock,
        low_stock_threshold: body.low_stock_threshold,
    };
    let product = service::create(&db, &actor, &new).await?;
    let mut response = etag::tagged(StatusCode::CREATED, product.version, &product);
    if let Ok(location) = format!("/v1/products/{}", product.id).parse() {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Lists products, filtered and sorted, a page at a time.
#[utoipa::path(get, path = "/v1/products", tag = "products", security(("bearer" = [])),
    params(ProductListParams),
    responses(
        (status = 200, description = "A page of products", body = Page<Product>),
        (status = 403, description = "include_deleted without the staff role", body = ProblemDoc),
        (status = 422, description = "Invalid parameters: limit out of range, a cursor this list did not issue (or of another sort), a q with control or invisible characters, min_price above max_price", body = ProblemDoc),
    ))]
#[tracing::instrument(skip_all)]
async fn list(
    State(db): State<Db>,
    user: CurrentUser,
    Query(params): Query<ProductListParams>,
) -> ApiResult<(Position, Json<Page<Product>>)> {
    let include_deleted = params.include_deleted.unwrap_or(false);
    if include_deleted {
        user.require(Role::Staff)?;
    }
    let sort = Sort::parse(params.sort.as_deref())?;
    let (key, _) = sort.key();
    let page = PageParams {
        limit: params.limit,
        cursor: params.cursor.clone(),
    };
    // The cursor carries its sort, so that it cannot be replayed under another.
    let request = page.parse::<(Sort, ProductCursor)>()?;
    let invalid_cursor =
        |message: &str| ApiError::validation(vec![FieldError::new("cursor", "invalid", message)]);
    let after = match &request.after {
        Some((cursor_sort, _)) if *cursor_sort != sort => {
            return Err(invalid_cursor("the cursor belongs to another sort"));
        }
        Some((_, position)) if !products::cursor_fits(position, key) => {
            return Err(invalid_cursor("is not a cursor this list returned"));
        }
        Some((_, position)) => Some(position),
        None => None,
    };
    let mut errors = Vec::new();
    if let Some(q) = &params.q {
        check_text(&mut errors, "q", q, 200, false);
    }
    if let (Some(min), Some(max)) = (params.min_price, params.max_price)
        && min > max
    {
        errors.push(FieldError::new(
            "min_price",
            "invalid",
            "is above max_price",
        ));
    }
    done(errors, ())?;
    let query = ProductQuery {
        q: params
            .q
            .filter(|q| !q.trim().is_empty())
            .map(|q| q.trim().to_owned()),
        min_price: params.min_price,
        max_price: params.max_price,
        in_stock: params.in_stock,
        include_deleted,
        sort: Some(sort.key()),
    };
    let (position, rows) = position::before(
        &db,
        products::list(&db, &query, after, request.fetch_limit()),
    )
    .await?;
    let page = Page::from_rows(
        rows,
        &request,
        |p| (sort, products::cursor_of(p, key)),
        |p| p,
    );
    Ok((position, Json(page)))
}

/// One product, with its ETag; `If-None-Match` gets a 304. A deleted product is gone from
/// here until it is restored (staff find it with `include_deleted` on the list).
#[utoipa::path(get, path = "/v1/products/{id}", tag = "products", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The product's id")),
    responses(
        (status = 200, description = "The product", body = Product, headers(("etag" = String, description = "The product's version"))),
        (status = 304, description = "Not modified since the ETag in If-None-Match"),
        (status = 404, description = "No such product, or deleted", body = ProblemDoc),
    ))]
#[tracing::instrument(skip_all)]
async fn get_one(
    State(db): State<Db>,
    _user: CurrentUser,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (position, product) = position::before(&db, products::find(&db, id)).await?;
    let product = product
        .filter(|p| p.deleted_at.is_none())
        .ok_or_else(|| ApiError::not_found("product"))?;
    Ok((
        position,
        etag::conditional(&headers, product.version, &product),
    )
        .into_response())
}

/// Changes a product (staff); with `If-Match`, only if it has not changed since (else 412).
#[utoipa::path(patch, path = "/v1/products/{id}", tag = "products", security(("bearer" = [])),
    params(("id" = Uuid, Path), openapi::IfMatch),
    request_body = UpdateProduct,
    responses(
        (status = 200, description = "The changed product", body = Product, headers(("etag" = String, description = "The product's version"))),
        (status = 403, description = "Not staff", body = ProblemDoc),
        (status = 404, description = "No such product", body = ProblemDoc),
        (status = 409, description = "SKU taken", body = ProblemDoc),
        (status = 412, description = "Changed since the If-Match ETag (or If-Match names no ETag this server issued)", body = ProblemDoc),
        (status = 422, description = "Invalid fields, or `stock`, which only stock adjustments change", body = ProblemDoc),
    ))]
#[tracing::instrument(skip_all)]
async fn update(
    State(db): State<Db>,
    actor: Actor,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> ApiResult<Response> {
    actor.user.require(Role::Staff)?;
    if body.get("stock").is_some() {
        return Err(ApiError::validation(vec![FieldError::new(
            "stock",
            "read_only",
            "change stock with POST /v1/products/{id}/stock-adjustments",
        )]));
    }
    let body: UpdateProduct = from_value(body)?;
    let if_match = etag::if_match(&headers)?;
    let mut errors = Vec::new();
    let sku = body
        .sku
        .as_deref()
        .and_then(|s| parse_field(&mut errors, "sku", Sku::parse(s)));
    let currency = body
        .currency
        .as_deref()
        .and_then(|c| parse_field(&mut errors, "currency", Currency::parse(c)));
    if let Some(name) = &body.name {
        check_text(&mut errors, "name", name, 200, true);
    }
    if let Some(description) = &body.description {
        check_text(&mut errors, "description", description, 5000, false);
    }
    if let Some(amount) = body.unit_amount {
        check_range(&mut errors, "unit_amount", amount, MAX_AMOUNT);
    }
    if let Some(threshold) = body.low_stock_threshold {
        check_range(&mut errors, "low_stock_threshold", threshold, MAX_STOCK);
    }
    done(errors, ())?;
    let patch = ProductPatch {
        sku: sku.as_ref().map(Sku::as_str),
        name: body.name.as_deref().map(str::trim),
        description: body.description.as_deref().map(str::trim),
        unit_amount: body.unit_amount,
        currency: currency.map(Currency::code),
        low_stock_threshold: body.low_stock_threshold,
    };
    let summary = json!(body);
    let product = service::update(&db, &actor, id, &patch, summary, if_match).await?;
    Ok(etag::tagged(StatusCode::OK, product.version, &product))
}

/// Deletes a product (staff); it stays in past orders and can be restored.
#[utoipa::path(delete, path = "/v1/products/{id}", tag = "products", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Not staff", body = ProblemDoc),
        (status = 404, description = "No such product, or already deleted", body = ProblemDoc),
    ))]
#[tracing::instrument(skip_all)]
async fn delete(State(db): State<Db>, actor: Actor, Path(id): Path<Uuid>) -> ApiResult<StatusCode> {
    actor.user.require(Role::Staff)?;
    service::delete(&db, &actor, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Restores a deleted product (staff).
#[utoipa::path(post, path = "/v1/products/{id}/restore", tag = "products", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The restored product", body = Product, headers(("etag" = String, description = "The product's version"))),
        (status = 403, description = "Not staff", body = ProblemDoc),
        (status = 404, description = "No such product", body = ProblemDoc),
        (status = 409, description = "Not deleted", body = ProblemDoc),
    ))]
#[tracing::instrument(skip_all)]
async fn restore(State(db): State<Db>, actor: Actor, Path(id): Path<Uuid>) -> ApiResult<Response> {
    actor.user.require(Role::Staff)?;
    let product = service::restore(&db, &actor, id).await?;
    Ok(etag::tagged(StatusCode::OK, product.version, &product))
}

/// Adds to or takes from the stock (staff), atomically; never below zero nor above
/// 1,000,000,000 (the most a product may hold).
#[utoipa::path(post, path = "/v1/products/{id}/stock-adjustments", tag = "products", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    request_body = StockAdjustment,
    responses(
        (status = 200, description = "The product with its new stock", body = Product, headers(("etag" = String, description = "The product's version"))),
        (status = 403, description = "Not staff", body = ProblemDoc),
        (status = 404, description = "No such product", body = ProblemDoc),
        (status = 409, description = "Not enough stock (`insufficient_stock`), or more than a product may hold (`stock_limit`)", body = ProblemDoc),
    ))]
#[tracing::instrument(skip_all)]
async fn adjust_stock(
    State(db): State<Db>,
    actor: Actor,
    Path(id): Path<Uuid>,
    Json(body): Json<StockAdjustment>,
) -> ApiResult<impl IntoResponse> {
    actor.user.require(Role::Staff)?;
    let mut errors = Vec::new();
    if body.delta == 0 || body.delta.unsigned_abs() > MAX_STOCK.unsigned_abs() {
        errors.push(FieldError::new(
            "delta",
            "out_of_range",
            format!("must be non-zero and at most {MAX_STOCK} either way"),
        ));
    }
    check_text(&mut errors, "reason", &body.reason, 200, true);
    done(errors, ())?;
    let product = service::adjust_stock(&db, &actor, id, body.delta, body.reason.trim()).await?;
    Ok(etag::tagged(StatusCode::OK, product.version, &product))
}
