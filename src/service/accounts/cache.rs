//! The token cache: what [`authenticate`](super::authenticate) needs of a user (token
//! version, role, email), kept in memory so that a request whose user was read lately does
//! no database read.
//!
//! It is kept exact by the revocations: every change of a user's access bumps their token
//! version and commits `user.sessions_revoked`; the instance that commits it calls
//! [`TokenCache::revoke`] right after the commit, and every instance's hub calls it when it
//! routes the event. A revocation removes the user's entry and remembers the new version
//! as the user's *floor*: a request that read the row before the change and comes to store
//! it after the revocation ran stores nothing, since what it read is below the floor.
//!
//! Its staleness is bounded: an entry serves at most `TIDINGS_AUTH_CACHE_TTL` after the
//! read that made it began, so that a change made without the event (SQL by hand, a hub
//! that is stuck) is seen within that time. A TTL of zero turns the cache off.
//!
//! Hand-written rather than a cache crate: the floor check and the insert must happen
//! under one lock, with the entry's age taken from when its read began, which neither
//! `moka` nor `quick_cache` expresses without a second lock around them; what remains
//! (a map with a size cap and a sweep by age) is a few lines.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use uuid::Uuid;

use crate::domain::Role;
use crate::store::users::User;

/// Most users the cache holds. An entry is about 150 bytes (with a typical email), so the
/// cache stays under 16 MiB; more users active within one TTL than this are read from the
/// database as without a cache, which costs what it always did.
pub const MAX_ENTRIES: usize = 100_000;

/// How often a full cache may be swept of its expired entries: a sweep walks every entry,
/// so it is not made on every insert into a cache full of live ones.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// What a request needs of its user beyond its token's claims. Only enabled users are
/// cached: a disabled one is refused on the database's word every time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub token_version: i64,
    pub role: Role,
    pub email: String,
}

impl Access {
    /// What to cache of `user`, unless they are disabled.
    pub fn of(user: &User) -> Option<Access> {
        (!user.disabled).then(|| Access {
            token_version: user.token_version,
            role: user.role,
            email: user.email.clone(),
        })
    }
}

/// The cache of one instance (see the module's header).
#[derive(Debug)]
pub struct TokenCache {
    /// How long after its read began an entry serves; zero: never (the cache is off).
    ttl: Duration,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    entries: HashMap<Uuid, Entry>,
    /// The token version of each user's latest revocation, and when it was seen: nothing
    /// read below it is stored. Kept one TTL, after which anything read before the
    /// revocation would be expired anyway.
    floors: HashMap<Uuid, (i64, Instant)>,
    /// When the entries were last swept of expired ones.
    swept_at: Instant,
}

#[derive(Debug)]
struct Entry {
    access: Access,
    /// When the read that found it began.
    read_at: Instant,
}

impl TokenCache {
    /// A cache whose entries serve for `ttl`; zero turns it off.
    pub fn new(ttl: Duration) -> TokenCache {
        TokenCache {
            ttl,
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                floors: HashMap::new(),
                swept_at: Instant::now(),
            }),
        }
    }

    /// The longest an entry serves after its read began.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The user's access as read less than a TTL ago and not revoked since.
    pub fn get(&self, user: Uuid) -> Option<Access> {
        if self.ttl.is_zero() {
            return None;
        }
        let inner = self.inner.lock();
        let entry = inner.entries.get(&user)?;
        (entry.read_at.elapsed() < self.ttl).then(|| entry.access.clone())
    }

    /// Stores what a read that began at `read_at` found, unless a revocation at or above
    /// its version came meanwhile, a newer read is stored already, or it is too old to serve.
    pub fn insert(&self, user: Uuid, access: Access, read_at: Instant) {
        if self.ttl.is_zero() || read_at.elapsed() >= self.ttl {
            return;
        }
        let mut inner = self.inner.lock();
        if let Some((floor, _)) = inner.floors.get(&user)
            && access.token_version < *floor
        {
            return;
        }
        if let Some(held) = inner.entries.get(&user)
            && (held.access.token_version, held.read_at) > (access.token_version, read_at)
        {
            return;
        }
        if inner.entries.len() >= MAX_ENTRIES
            && !inner.entries.contains_key(&user)
            && !self.sweep(&mut inner)
        {
            return;
        }
        inner.entries.insert(user, Entry { access, read_at });
    }

    /// A revocation of the user's sessions at `token_version`: their entry goes, and no
    /// read of an earlier version is stored from now on.
    pub fn revoke(&self, user: Uuid, token_version: i64) {
        if self.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut inner = self.inner.lock();
        let ttl = self.ttl;
        inner.floors.retain(|_, (_, at)| now - *at < ttl);
        let floor = inner.floors.entry(user).or_insert((token_version, now));
        *floor = (floor.0.max(token_version), now);
        inner.entries.remove(&user);
    }

    /// The users held, expired entries included until swept.
    pub fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }

    /// Whether the cache holds nobody.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops expired entries, at most once per [`SWEEP_EVERY`]; whether room was made.
    fn sweep(&self, inner: &mut Inner) -> bool {
        if inner.swept_at.elapsed() < SWEEP_EVERY {
            return false;
        }
        inner.swept_at = Instant::now();
        let ttl = self.ttl;
        inner.entries.retain(|_, e| e.read_at.elapsed() < ttl);
        inner.floors.retain(|_, (_, at)| at.elapsed() < ttl);
        inner.entries.len() < MAX_ENTRIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(version: i64) -> Access {
        Access {
            token_version: version,
            role: Role::Customer,
            email: "ada@example.com".into(),
        }
    }

    fn cache() -> TokenCache {
        TokenCache::new(Duration::from_secs(60))
    }

    #[test]
    fn a_stored_read_is_served_until_revoked() {
        let (cache, user) = (cache(), Uuid::now_v7());
        cache.insert(user, access(1), Instant::now());
        assert_eq!(cache.get(user), Some(access(1)));

        cache.revoke(user, 2);

        assert_eq!(cache.get(user), None);
    }

    #[test]
    fn a_read_from_before_a_revocation_stored_after_it_is_dropped() {
        let (cache, user) = (cache(), Uuid::now_v7());
        let read_at = Instant::now();
        cache.revoke(user, 2);

        cache.insert(user, access(1), read_at);

        assert_eq!(cache.get(user), None);
        cache.insert(user, access(2), Instant::now());
        assert_eq!(cache.get(user), Some(access(2)));
    }

    #[test]
    fn an_older_read_does_not_replace_a_newer_one() {
        let (cache, user) = (cache(), Uuid::now_v7());
        let early = Instant::now();
        cache.insert(user, access(2), Instant::now());

        cache.insert(user, access(1), early);

        assert_eq!(cache.get(user), Some(access(2)));
    }

    #[test]
    fn an_entry_serves_no_longer_than_the_ttl_after_its_read_began() {
        let cache = TokenCache::new(Duration::from_millis(50));
        let user = Uuid::now_v7();
        cache.insert(user, access(1), Instant::now());
        assert!(cache.get(user).is_some());

        std::thread::sleep(Duration::from_millis(60));

        assert_eq!(cache.get(user), None);
        cache.insert(user, access(1), Instant::now() - Duration::from_millis(60));
        assert_eq!(
            cache.get(user),
            None,
            "a read older than the TTL is not stored"
        );
    }

    #[test]
    fn a_zero_ttl_turns_the_cache_off() {
        let cache = TokenCache::new(Duration::ZERO);
        let user = Uuid::now_v7();

        cache.insert(user, access(1), Instant::now());

        assert_eq!(cache.get(user), None);
        assert!(cache.is_empty());
    }

    #[test]
    fn a_full_cache_makes_room_only_from_expired_entries() {
        // Short, so that "expired" is a few seconds back (an `Instant` cannot go before boot).
        let cache = TokenCache::new(Duration::from_secs(2));
        let old = Instant::now() - Duration::from_secs(3);
        {
            let mut inner = cache.inner.lock();
            for _ in 0..MAX_ENTRIES {
                let entry = Entry {
                    access: access(1),
                    read_at: Instant::now(),
                };
                inner.entries.insert(Uuid::now_v7(), entry);
            }
            inner.swept_at = old;
        }
        let newcomer = Uuid::now_v7();

        cache.insert(newcomer, access(1), Instant::now());

        assert_eq!(cache.get(newcomer), None, "every entry is live: no room");
        assert_eq!(cache.len(), MAX_ENTRIES);
        {
            let mut inner = cache.inner.lock();
            inner
                .entries
                .values_mut()
                .take(10)
                .for_each(|e| e.read_at = old);
            inner.swept_at = old;
        }
        cache.insert(newcomer, access(1), Instant::now());
        assert_eq!(cache.get(newcomer), Some(access(1)));
        assert_eq!(cache.len(), MAX_ENTRIES - 9);
    }
}
