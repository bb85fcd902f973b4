//! [`AppState`]: what every handler gets, and the parts of it a handler or extractor may
//! take alone (axum's `FromRef`).

use std::sync::Arc;

use axum::extract::FromRef;

use crate::config::Config;
use crate::http::ratelimit::AuthLimiter;
use crate::push::vapid::VapidKey;
use crate::realtime::Realtime;
use crate::service::accounts::Accounts;
use crate::service::accounts::password::Hasher;
use crate::service::accounts::tokens::TokenKeys;
use crate::store::Db;

/// Everything a handler needs, cloned cheaply into each request.
#[derive(Clone)]
pub struct AppState {
    /// The database pool.
    pub db: Db,
    /// Signs and checks access tokens.
    pub tokens: Arc<TokenKeys>,
    /// Rate limits on every route that checks a password.
    pub limiter: Arc<AuthLimiter>,
    /// Runs argon2, a bounded number at a time.
    pub hasher: Arc<Hasher>,
    /// The validated settings.
    pub config: Arc<Config>,
    /// The live side: hub, bus health, relay.
    pub realtime: Realtime,
    /// The Web Push (VAPID) key pair.
    pub vapid: Arc<VapidKey>,
}

impl AppState {
    pub fn new(
        config: Config,
        accounts: Accounts,
        realtime: Realtime,
        vapid: Arc<VapidKey>,
    ) -> Self {
        Self {
            db: accounts.db,
            tokens: accounts.tokens,
            limiter: Arc::new(AuthLimiter::new(
                config.auth_rate_per_ip,
                config.auth_rate_per_email,
            )),
            hasher: accounts.hasher,
            config: Arc::new(config),
            realtime,
            vapid,
        }
    }

    /// What the account operations take.
    pub fn accounts(&self) -> Accounts {
        Accounts {
            db: self.db.clone(),
            hasher: self.hasher.clone(),
            tokens: self.tokens.clone(),
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
