//! `/v1/orders`: placing orders, following them, moving and cancelling them.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::openapi;
use super::pagination::{Page, PageParams};
use crate::domain::Role;
use crate::error::{FieldError, ProblemDoc};
use crate::http::AppState;
use crate::http::etag;
use crate::http::extract::{Json, Path, Query, Repeated, at_most_one, whole};
use crate::http::position::{self, Position};
use crate::http::problem::{ApiError, ApiResult};
use crate::service::Actor;
use crate::service::accounts::{self, CurrentUser};
use crate::service::orders::{self as service, IdempotencyKey, Placed};
use crate::store::Db;
use crate::store::orders::{Order, OrderQuery, OrderStatus};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, place))
        .routes(routes!(get_one))
        .routes(routes!(set_status))
        .routes(routes!(cancel))
}

/// Most lines one order may have.
const MAX_ITEMS: usize = 100;

/// A line of a new order.
#[derive(Debug, Deserialize, serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewItem {
    product_id: Uuid,
    /// 1 to 10,000; the lines of one product together, too.
    #[serde(deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 10_000)]
    quantity: i64,
}

/// A new order.
#[derive(Debug, Deserialize, serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrder {
    /// 1 to 100 lines. Lines of the same product are merged into one first, and the
    /// merged quantity must be 1 to 10,000 too (else a 422 names the product).
    #[schema(min_items = 1, max_items = 100)]
    items: Vec<NewItem>,
}

/// Places an order for the caller. With an `Idempotency-Key`, a retry returns the first
/// answer instead of a second order.
#[utoipa::path(post, path = "/v1/orders", tag = "orders", security(("bearer" = [])),
    params(IdempotencyKeyHeader),
    request_body = NewOrder,
    responses(
        (status = 201, description = "The order (or, for a retried key, the first answer)", body = Order,
            headers(("etag" = String, description = "The order's version"), ("location" = String, description = "The order's URL"))),
        (status = 400, description = "The body is not JSON, or the Idempotency-Key is not 1 to 255 visible characters", body = ProblemDoc),
        (status = 403, description = "The caller's email address is not verified (`email_not_verified`), when `TIDINGS_REQUIRE_VERIFIED_EMAIL` is on", body = ProblemDoc),
        (status = 409, description = "Short of stock; each short item named", body = ProblemDoc),
        (status = 422, description = "Invalid items (the merged quantity of a product above 10,000 included), unknown products, products in different currencies, or a reused key with another body", body = ProblemDoc),
    ))]
#[tracing::instrument(skip_all)]
async fn place(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    Json(body): Json<NewOrder>,
) -> ApiResult<Response> {
    let db = &state.db;
    if state.config.require_verified_email {
        accounts::emails::require_verified_email(db, actor.user.id).await?;
    }
    let mut errors = Vec::new();
    if body.items.is_empty() || body.items.len() > MAX_ITEMS {
        errors.push(FieldError::new(
            "items",
            "out_of_range",
            format!("an order has 1 to {MAX_ITEMS} items"),
        ));
    }
    for (i, item) in body.items.iter().enumerate() {
        if !(1..=service::MAX_QUANTITY).contains(&item.quantity) {
            errors.push(FieldError::new(
                format!("items[{i}].quantity"),
                "out_of_range",
                format!("must be between 1 and {}", service::MAX_QUANTITY),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let invalid_key = || {
        ApiError::bad_request(
            "invalid_idempotency_key",
            "send one Idempotency-Key of 1 to 255 visible ASCII characters",
        )
    };
    let key = match at_most_one(&headers, "idempotency-key").map_err(|Repeated| invalid_key())? {
        None => None,
        Some(value) => {
            let key = value.as_bytes();
            if key.is_empty() || key.len() > 255 || !key.iter().all(u8::is_ascii_graphic) {
                return Err(invalid_key());
            }
            let key = std::str::from_utf8(key).map_err(|_| invalid_key())?;
            // serde_json sorts object keys, so the same body always hashes the same.
            let canonical = serde_json::to_vec(&body).map_err(anyhow::Error::from)?;
            Some(IdempotencyKey {
                key: key.to_owned(),
                request_hash: Sha256::digest(canonical).to_vec(),
            })
        }
    };
    let items: Vec<(Uuid, i64)> = body
        .items
        .iter()
        .map(|i| (i.product_id, i.quantity))
        .collect();
    Ok(
        match service::place(db, &state.price_book, &actor, &items, key.as_ref()).await? {
            Placed::Created(order) => {
                let mut response = etag::tagged(StatusCode::CREATED, order.version, &order);
                if let Ok(location) = format!("/v1/orders/{}", order.id).parse() {
                    response.headers_mut().insert(header::LOCATION, location);
                }
                response
            }
            Placed::Replayed { status, body } => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::CREATED);
                let mut response = (status, axum::Json(body)).into_response();
                response
                    .headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
                response
            }
        },
    )
}

/// The `Idempotency-Key` header of an order.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyKeyHeader {
    /// 1 to 255 visible ASCII characters; a retry with the same key and body gets the first
    /// answer rather than a second order.
    #[param(
        rename = "idempotency-key",
        min_length = 1,
        max_length = 255,
        pattern = "^[!-~]+$"
    )]
    _key: Option<String>,
}

/// Filters of the order list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OrderListParams {
    /// Only orders in this status.
    status: Option<OrderStatus>,
    /// Staff only: only this user's orders.
    user_id: Option<Uuid>,
    /// 1 to 100; 50 when omitted.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    #[param(schema_with = openapi::cursor)]
    cursor: Option<String>,
}

/// The caller's orders, newest first; staff see every order.
#[utoipa::path(get, path = "/v1/orders", tag = "orders", security(("bearer" = [])),
    params(OrderListParams),
    responses(
        (status = 200, description = "A page of orders", body = Page<Order>),
        (status = 422, description = "Invalid parameters: limit out of range, or a cursor this list did not issue", body = ProblemDoc),
    ))]
#[tracing::instrument(skip_all)]
async fn list(
    State(db): State<Db>,
    user: CurrentUser,
    Query(params): Query<OrderListParams>,
) -> ApiResult<(Position, Json<Page<Order>>)> {
    let request = PageParams {
        limit: params.limit,
        cursor: params.cursor,
    }
    .parse::<Uuid>()?;
    let query = OrderQuery {
        user_id: params.user_id,
        status: params.status,
    };
    let (position, rows) = position::before(
        &db,
        service::list(&db, &user, query, request.after, request.fetch_limit()),
    )
    .await?;
    Ok((
        position,
        Json(Page::from_rows(rows, &request, |o| o.id, |o| o)),
    ))
}

/// One order, the caller's own or any for staff; with its ETag.
#[utoipa::path(get, path = "/v1/orders/{id}", tag = "orders", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The order", body = Order, headers(("etag" = String, description = "The order's version"))),
        (status = 304, description = "Not modified since the ETag in If-None-Match"),
        (status = 404, description = "No such order, or not the caller's", body = ProblemDoc),
    ))]
#[tracing::instrument(skip_all)]
async fn get_one(
    State(db): State<Db>,
    user: CurrentUser,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (position, order) = position::before(&db, service::get(&db, &user, id)).await?;
    Ok((position, etag::conditional(&headers, order.version, &order)).into_response())
}

/// A status to move an order to.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    /// One step from the current status (cancel with POST /v1/orders/{id}/cancel).
    status: NextStatus,
}

/// The statuses staff move an order to.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NextStatus {
    Paid,
    Shipped,
    Delivered,
}

impl From<NextStatus> for OrderStatus {
    fn from(status: NextStatus) -> Self {
        match status {
            NextStatus::Paid => OrderStatus::Paid,
            NextStatus::Shipped => OrderStatus::Shipped,
            NextStatus::Delivered => OrderStatus::Delivered,
        }
    }
}

/// Moves an order one step along pending → paid → shipped → delivered (staff).
#[utoipa::path(post, path = "/v1/orders/{id}/status", tag = "orders", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    request_body = StatusChange,
    responses(
        (status = 200, description = "The order", body = Order, headers(("etag" = String, description = "The order's version"))),
        (status = 403, description = "Not staff", body = ProblemDoc),
        (status = 404, description = "No such order", body = ProblemDoc),
        (status = 409, description = "Not the next status of this order", body = ProblemDoc),
    ))]
#[tracing::instrument(skip_all)]
async fn set_status(
    State(db): State<Db>,
    actor: Actor,
    Path(id): Path<Uuid>,
    Json(body): Json<StatusChange>,
) -> ApiResult<Response> {
    actor.user.require(Role::Staff)?;
    let order = service::set_status(&db, &actor, id, body.status.into()).await?;
    Ok(etag::tagged(StatusCode::OK, order.version, &order))
}

/// Cancels an order before it ships, returning its stock: its owner or staff.
#[utoipa::path(post, path = "/v1/orders/{id}/cancel", tag = "orders", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The cancelled order", body = Order, headers(("etag" = String, description = "The order's version"))),
        (status = 404, description = "No such order, or not the caller's", body = ProblemDoc),
        (status = 409, description = "Already shipped, delivered or cancelled", body = ProblemDoc),
    ))]
#[tracing::instrument(skip_all)]
async fn cancel(State(db): State<Db>, actor: Actor, Path(id): Path<Uuid>) -> ApiResult<Response> {
    let order = service::cancel(&db, &actor, id).await?;
    Ok(etag::tagged(StatusCode::OK, order.version, &order))
}
