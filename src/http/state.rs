//! [`AppState`]: what every handler gets, and the parts of it a handler or extractor may
//! take alone (axum's `FromRef`).

use std::sync::Arc;

use axum::extract::FromRef;

use crate::config::Config;
use crate::http::ratelimit::AuthLimiter;
use crate::mail::Mailer;
use crate::push::vapid::VapidKey;
use crate::realtime::Realtime;
use crate::service::accounts::password::Hasher;
use crate::service::accounts::tokens::TokenKeys;
use crate::service::accounts::{Accounts, TokenCache};
use crate::service::orders::PriceBook;
use crate::store::Db;

/// Everything a handler needs, cloned cheaply into each request.
#[derive(Clone)]
pub struct AppState {
    /// The database pool.
    pub db: Db,
    /// Signs and checks access tokens.
    pub tokens: Arc<TokenKeys>,
    /// Who was lately found allowed, so that most requests authenticate without a read.
    pub token_cache: Arc<TokenCache>,
    /// Rate limits on every route that checks a password.
    pub limiter: Arc<AuthLimiter>,
    /// The limit on the emails (reset and verification links) one address is sent.
    pub mail_limiter: Arc<AuthLimiter>,
    /// Runs argon2, a bounded number at a time.
    pub hasher: Arc<Hasher>,
    /// The validated settings.
    pub config: Arc<Config>,
    /// The live side: hub, bus health, relay.
    pub realtime: Realtime,
    /// The Web Push (VAPID) key pair.
    pub vapid: Arc<VapidKey>,
    /// Sends email (or nothing, without `TIDINGS_SMTP_URL`).
    pub mailer: Mailer,
    /// The products as last seen, to price an order without reading them first.
    pub price_book: Arc<PriceBook>,
}

impl AppState {
    pub fn new(
        config: Config,
        accounts: Accounts,
        realtime: Realtime,
        vapid: Arc<VapidKey>,
        mailer: Mailer,
    ) -> Self {
        Self {
            db: accounts.db,
            tokens: accounts.tokens,
            token_cache: accounts.token_cache,
            limiter: Arc::new(AuthLimiter::new(
                config.auth_rate_per_ip,
                config.auth_rate_per_email,
            )),
            mail_limiter: Arc::new(AuthLimiter::mail(config.mail_rate_per_address)),
            hasher: accounts.hasher,
            config: Arc::new(config),
            realtime,
            vapid,
            mailer,
            price_book: Arc::default(),
        }
    }

    /// What the account operations take.
    pub fn accounts(&self) -> Accounts {
        Accounts {
            db: self.db.clone(),
            hasher: self.hasher.clone(),
            tokens: self.tokens.clone(),
            token_cache: self.token_cache.clone(),
            refresh_reuse_grace: self.config.refresh_reuse_grace,
        }
    }
}

impl FromRef<AppState> for Db {
    fn from_ref(state: &AppState) -> Db {
        state.db.clone()
    }
}

impl FromRef<AppState> for Accounts {
    fn from_ref(state: &AppState) -> Accounts {
        state.accounts()
    }
}
