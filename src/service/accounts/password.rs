//! Password hashing with argon2id, off the async runtime and a bounded number at a time.
//!
//! Each argon2 hash or check takes 19 MiB (the crate's default parameters: m = 19456 KiB,
//! t = 2, p = 1) and tens of milliseconds of a core. The server runs them through one
//! [`Hasher`], which lets `concurrency` run at once (the cores by default) and makes the
//! rest wait in line for at most `queue_timeout`, then answers 503: argon2's memory stays
//! under `concurrency` × 19 MiB however many requests come.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::service::error::{ServiceError, ServiceResult};

/// Runs argon2 for the server's requests, at most so many at a time.
pub struct Hasher {
    /// One permit per hash allowed to run at once.
    permits: Arc<Semaphore>,
    /// How long a request waits for a permit before it is refused with 503.
    queue_timeout: Duration,
    /// What `/metrics` shows.
    stats: Arc<HashStats>,
}

/// Counts of the hasher's work, for `/metrics`.
#[derive(Debug, Default)]
pub struct HashStats {
    /// Hashes and checks running now.
    pub in_progress: AtomicU64,
    /// The most that ever ran at once.
    pub in_progress_max: AtomicU64,
    /// Hashes and checks done.
    pub total: AtomicU64,
    /// Requests refused because no permit came within the queue timeout.
    pub refused: AtomicU64,
}

impl Hasher {
    /// A hasher running at most `concurrency` (at least one) argon2 computations at once.
    pub fn new(concurrency: usize, queue_timeout: Duration) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            queue_timeout,
            stats: Arc::default(),
        }
    }

    pub fn stats(&self) -> &HashStats {
        &self.stats
    }

    /// Hashes a password into a PHC string (argon2id, a fresh random salt).
    pub async fn hash(&self, password: String) -> ServiceResult<String> {
        Ok(self.run(move || hash_now(&password)).await??)
    }

    /// Checks a password against a stored PHC string.
    pub async fn verify(&self, password: String, phc: String) -> ServiceResult<bool> {
        self.run(move || verify_now(&password, &phc)).await
    }

    /// Checks a password against a hash nobody's password matches, so that a login for a
    /// missing account takes as long (and as much of the hasher) as one with a wrong
    /// password.
    pub async fn verify_dummy(&self, password: String) -> ServiceResult<()> {
        self.run(move || verify_now(&password, dummy_hash()))
            .await?;
        Ok(())
    }

    /// Runs `work` on the blocking pool once a permit is free.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> ServiceResult<T> {
        let permit =
            match tokio::time::timeout(self.queue_timeout, self.permits.clone().acquire_owned())
                .await
            {
                Ok(permit) => permit.context("the hasher's semaphore is closed")?,
                Err(_elapsed) => {
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                    return Err(busy(self.queue_timeout));
                }
            };
        let running = Running::start(permit, self.stats.clone());
        // The permit moves into the task: a request dropped meanwhile (client gone, timeout)
        // does not free it while argon2 still holds its memory.
        let done = tokio::task::spawn_blocking(move || {
            let _running = running;
            work()
        })
        .await
        .context("the hashing task failed")?;
        Ok(done)
    }
}

/// A permit in use, counted in the stats until the hash is done.
struct Running {
    _permit: OwnedSemaphorePermit,
    stats: Arc<HashStats>,
}

impl Running {
    fn start(permit: OwnedSemaphorePermit, stats: Arc<HashStats>) -> Self {
        let now = stats.in_progress.fetch_add(1, Ordering::AcqRel) + 1;
        stats.in_progress_max.fetch_max(now, Ordering::AcqRel);
        Self {
            _permit: permit,
            stats,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stats.in_progress.fetch_sub(1, Ordering::AcqRel);
        self.stats.total.fetch_add(1, Ordering::Relaxed);
    }
}

/// 503 with a Retry-After of the queue's length: by then the line has moved on.
fn busy(queue_timeout: Duration) -> ServiceError {
    let retry_after = queue_timeout.as_secs_f64().ceil().max(1.0) as u64;
    ServiceError::Busy {
        code: "busy",
        detail: format!("too many password checks at once; retry in {retry_after} s"),
        retry_after,
    }
}

/// Hashes a password outside any limit, for the command line (`tidings user tokens`), which
/// hashes one password and is not a server request.
pub async fn hash(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || hash_now(&password))
        .await
        .context("the hashing task failed")?
}

fn hash_now(password: &str) -> anyhow::Result<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing a password failed: {e}"))
}

/// A malformed hash counts as a mismatch, logged, since it can only come from a damaged row.
fn verify_now(password: &str, phc: &str) -> bool {
    match Argon2::default().verify_password(password.as_bytes(), phc) {
        Ok(()) => true,
        Err(argon2::password_hash::Error::PasswordInvalid) => false,
        Err(e) => {
            tracing::error!(error = %e, "a stored password hash could not be checked");
            false
        }
    }
}

/// Made on first use, on the blocking pool under a permit like any other hash.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_now(&uuid::Uuid::new_v4().to_string()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_no_other() {
        let hasher = Hasher::new(1, Duration::from_secs(5));
        let phc = hasher.hash("correct horse".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(
            hasher
                .verify("correct horse".into(), phc.clone())
                .await
                .unwrap()
        );
        assert!(!hasher.verify("wrong horse".into(), phc).await.unwrap());
        assert!(
            !hasher
                .verify("x".into(), "not a hash".into())
                .await
                .unwrap()
        );
        assert_eq!(hasher.stats().total.load(Ordering::Relaxed), 4);
        assert_eq!(hasher.stats().in_progress.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn the_command_line_hash_verifies_too() {
        let phc = hash("correct horse".into()).await.unwrap();
        assert!(verify_now("correct horse", &phc));
    }
}
