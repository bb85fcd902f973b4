//! Rate limits on every route that checks a password (login, register, password change,
//! password reset), per client IP and per account, and on the emails one address is sent. A route counts the
//! attempt before it hashes anything, so a refused request costs no argon2.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::http::AppState;
use crate::http::problem::ApiError;

/// Keys are dropped once their bucket is full again, whenever the store grows past this.
const PRUNE_ABOVE: usize = 10_000;

/// Generic cell rate limiters keyed by client IP and by account (its email address). Both
/// are this instance's: behind a load balancer of n instances a client gets up to n times
/// the limit.
pub struct AuthLimiter {
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    per_account: Option<DefaultKeyedRateLimiter<String>>,
}

impl AuthLimiter {
    /// Limits of so many attempts a minute (bursts up to that many); 0 turns a limit off.
    pub fn new(per_ip_per_minute: u32, per_account_per_minute: u32) -> Self {
        let quota = |n| NonZeroU32::new(n).map(Quota::per_minute);
        Self {
            per_ip: quota(per_ip_per_minute).map(RateLimiter::keyed),
            per_account: quota(per_account_per_minute).map(RateLimiter::keyed),
        }
    }

    /// A limit on the emails sent to one address (password reset and verification links):
    /// so many an hour, in bursts up to that many; 0 turns it off. Keyed by the address as
    /// typed, whether or not it has an account, so that a refusal says nothing about one.
    pub fn mail(per_address_per_hour: u32) -> Self {
        Self {
            per_ip: None,
            per_account: NonZeroU32::new(per_address_per_hour)
                .map(Quota::per_hour)
                .map(RateLimiter::keyed),
        }
    }

    /// Counts one attempt from `ip` alone, where no account is named (a link's token).
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), ApiError> {
        match &self.per_ip {
            Some(limiter) => check(limiter, &ip),
            None => Ok(()),
        }
    }

    /// Counts one attempt from `ip` on the account of `email` (as typed, or the caller's);
    /// a 429 with Retry-After when over either limit. Login, password change and reset of
    /// one account share its count: guessing by one route leaves no extra budget on another.
    pub fn check(&self, ip: IpAddr, email: &str) -> Result<(), ApiError> {
        if let Some(limiter) = &self.per_ip {
            check(limiter, &ip)?;
        }
        if let Some(limiter) = &self.per_account {
            check(limiter, &email.trim().to_lowercase())?;
        }
        Ok(())
    }
}

fn check<K: std::hash::Hash + Eq + Clone>(
    limiter: &DefaultKeyedRateLimiter<K>,
    key: &K,
) -> Result<(), ApiError> {
    if limiter.len() > PRUNE_ABOVE {
        limiter.retain_recent();
    }
    limiter.check_key(key).map_err(|not_until| {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        ApiError::too_many_requests(wait.as_secs().max(1))
    })
}

/// The client's IP: the peer address, or the last X-Forwarded-For entry (the one our own
/// proxy added) when `TIDINGS_TRUST_FORWARDED_FOR` is set.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if state.config.trust_forwarded_for
            && let Some(ip) = parts
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                // Only the last entry was written by our proxy; earlier ones are the client's word.
                .next_back()
                .and_then(|s| s.trim().parse::<IpAddr>().ok())
        {
            return Ok(ClientIp(ip));
        }
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        Ok(ClientIp(peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_per_email_case_insensitively_and_per_ip() {
        let limiter = AuthLimiter::new(3, 2);
        let ip = IpAddr::from([10, 0, 0, 1]);
        assert!(limiter.check(ip, "a@example.com").is_ok());
        assert!(limiter.check(ip, "A@example.com").is_ok());
        let err = limiter.check(ip, "a@example.com").unwrap_err();
        assert_eq!(err.status(), axum::http::StatusCode::TOO_MANY_REQUESTS);
        // The IP has used its 3 attempts now, whatever the email.
        assert!(limiter.check(ip, "b@example.com").is_err());
        assert!(
            limiter
                .check(IpAddr::from([10, 0, 0, 2]), "b@example.com")
                .is_ok()
        );
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let limiter = AuthLimiter::new(0, 0);
        for _ in 0..100 {
            assert!(
                limiter
                    .check(IpAddr::from([10, 0, 0, 1]), "a@example.com")
                    .is_ok()
            );
        }
    }
}
