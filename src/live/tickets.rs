//! Who opens a stream: a bearer token (native apps, load testers) or a single-use ticket
//! (browsers, whose EventSource and WebSocket cannot send headers).

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ProblemDoc;
use crate::events::stream;
use crate::http::AppState;
use crate::http::auth::{NoStore, no_store};
use crate::http::extract::Json;
use crate::http::problem::{ApiError, ApiResult};
use crate::service::accounts::CurrentUser;
use crate::store::users;

/// How long a ticket may wait to be used.
pub const TICKET_TTL_SECS: i64 = 30;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_ticket))
}

/// A ticket for one stream.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamTicket {
    /// Pass as `?ticket=` to `/v1/ws` or `/v1/events`; it works once.
    ticket: String,
    /// Seconds it stays valid.
    expires_in: i64,
}

/// Makes a single-use ticket (valid 30 s) with which a browser opens a stream, so that no
/// long-lived token sits in a URL or a log.
#[utoipa::path(post, path = "/v1/stream-tickets", tag = "live", security(("bearer" = [])),
    responses(
        (status = 201, description = "A ticket", body = StreamTicket, headers(("cache-control" = String, description = "no-store"))),
        (status = 401, description = "No valid access token", body = ProblemDoc),
    ))]
#[tracing::instrument(skip_all)]
async fn create_ticket(
    State(state): State<AppState>,
    user: CurrentUser,
) -> ApiResult<(axum::http::StatusCode, NoStore<Json<StreamTicket>>)> {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let ticket = URL_SAFE_NO_PAD.encode(bytes);
    let record = stream::Ticket {
        user_id: user.id,
        token_version: user.token_version,
        token_expires_at: chrono::DateTime::from_timestamp(user.expires_at, 0)
            .unwrap_or_else(Utc::now),
        expires_at: Utc::now() + chrono::Duration::seconds(TICKET_TTL_SECS),
    };
    stream::insert_ticket(&state.db, &Sha256::digest(ticket.as_bytes()), &record).await?;
    Ok((
        axum::http::StatusCode::CREATED,
        no_store(Json(StreamTicket {
            ticket,
            expires_in: TICKET_TTL_SECS,
        })),
    ))
}

#[derive(Deserialize)]
struct TicketParam {
    ticket: Option<String>,
}

/// The user of a stream, authenticated before the upgrade: a bad token or ticket is a
/// plain 401.
#[derive(Debug, Clone)]
pub struct StreamUser(pub CurrentUser);

impl FromRequestParts<AppState> for StreamUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let ticket = axum::extract::Query::<TicketParam>::try_from_uri(&parts.uri)
            .ok()
            .and_then(|q| q.0.ticket);
        let Some(ticket) = ticket else {
            return CurrentUser::from_request_parts(parts, state)
                .await
                .map(StreamUser);
        };
        let invalid = || {
            ApiError::unauthorized(
                "invalid_ticket",
                "the stream ticket is unknown, used or expired",
            )
        };
        let record =
            stream::consume_ticket(&state.db, &Sha256::digest(ticket.as_bytes()), Utc::now())
                .await?
                .ok_or_else(invalid)?;
        let user = users::find(&state.db, record.user_id)
            .await?
            .ok_or_else(invalid)?;
        if user.disabled || user.token_version != record.token_version {
            return Err(invalid());
        }
        Ok(StreamUser(CurrentUser {
            id: user.id,
            email: user.email,
            role: user.role,
            token_version: user.token_version,
            expires_at: record.token_expires_at.timestamp(),
        }))
    }
}
