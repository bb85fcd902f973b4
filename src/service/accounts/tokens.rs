//! Access tokens (JWT, HS256) and refresh tokens (256 random bits, kept only as a hash).

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::config::{Config, MIN_JWT_SECRET_LEN};
use crate::domain::Role;
use crate::service::error::ServiceError;
use crate::store::users::User;

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user's id.
    pub sub: Uuid,
    /// The user's role when the token was issued.
    pub role: Role,
    /// The user's token version when the token was issued.
    pub tv: i64,
    pub iat: i64,
    pub exp: i64,
    /// Not before; ours carry none, but one that does is held to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
}

/// How far in the future `iat` and `nbf` may lie: the clocks of the instances that issue
/// and check tokens differ a little (NTP keeps them well within this); beyond it the token
/// was made by a clock that is wrong, or by someone holding the key. It is jsonwebtoken's
/// default leeway, which we cannot use as such since it would stretch `exp` too.
pub const CLOCK_SKEW_SECS: i64 = 60;

/// Signs and checks access tokens.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// Lifetime of an access token.
    pub access_ttl: Duration,
    /// Lifetime of a refresh token.
    pub refresh_ttl: Duration,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("access_ttl", &self.access_ttl)
            .finish_non_exhaustive()
    }
}

impl TokenKeys {
    pub fn new(secret: &[u8], access_ttl: Duration, refresh_ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is exact: a socket's token is due to lapse at `exp`, not a minute later.
        // The one leeway would apply to `nbf` too, so `verify` checks that (and `iat`).
        validation.leeway = 0;
        validation.validate_nbf = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            access_ttl,
            refresh_ttl,
        }
    }

    /// The key from the configuration, or the one kept in the data directory (made on first
    /// start), so that tokens survive restarts without a secret in the code.
    pub fn load(config: &Config) -> anyhow::Result<Self> {
        let secret = match &config.jwt_secret {
            Some(secret) => secret.clone(),
            None => load_or_create_secret(&config.data_dir.join("jwt-secret"))?,
        };
        Ok(Self::new(
            &secret,
            config.access_token_ttl,
            config.refresh_token_ttl,
        ))
    }

    /// Issues an access token for the user's current role and token version.
    pub fn issue(&self, user: &User) -> anyhow::Result<String> {
        let iat = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user.id,
            role: user.role,
            tv: user.token_version,
            iat,
            exp: iat + self.access_ttl.as_secs() as i64,
            nbf: None,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .context("signing an access token failed")
    }

    /// Checks a token's signature, its expiry (exactly), and that it was not issued in, or
    /// made valid only from, the future (give or take [`CLOCK_SKEW_SECS`]).
    pub fn verify(&self, token: &str) -> Result<Claims, ServiceError> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => {
                    ServiceError::unauthorized("token_expired", "the access token has expired")
                }
                _ => ServiceError::unauthorized("invalid_token", "the access token is not valid"),
            })?;
        let latest = chrono::Utc::now().timestamp() + CLOCK_SKEW_SECS;
        if claims.iat > latest || claims.nbf.is_some_and(|nbf| nbf > latest) {
            return Err(ServiceError::unauthorized(
                "token_not_yet_valid",
                "the access token is not valid yet",
            ));
        }
        Ok(claims)
    }
}

fn load_or_create_secret(path: &Path) -> anyhow::Result<Vec<u8>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let secret = text.trim().as_bytes().to_vec();
            anyhow::ensure!(
                secret.len() >= MIN_JWT_SECRET_LEN,
                "the JWT key in {} is shorter than {MIN_JWT_SECRET_LEN} bytes; delete it to make a new one",
                path.display()
            );
            Ok(secret)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 48];
            rand::rng().fill_bytes(&mut bytes);
            let secret = URL_SAFE_NO_PAD.encode(bytes);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("could not create {}", dir.display()))?;
            }
            write_private(path, secret.as_bytes())
                .with_context(|| format!("could not write the JWT key to {}", path.display()))?;
            tracing::info!(path = %path.display(), "generated a JWT signing key; set TIDINGS_JWT_SECRET to share one between instances");
            Ok(secret.into_bytes())
        }
        Err(e) => {
            Err(e).with_context(|| format!("could not read the JWT key at {}", path.display()))
        }
    }
}

/// Writes a new file readable by its owner only (a key).
#[cfg(unix)]
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

#[cfg(not(unix))]
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// A new refresh token and the hash under which it is stored.
pub fn new_refresh_token() -> (String, Vec<u8>) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash_refresh_token(&token);
    (token, hash)
}

/// A fast hash is enough: the token has 256 bits of entropy, nothing to brute-force.
pub fn hash_refresh_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// The successor of a refresh token, sealed with that token, to be stored on its row: only
/// who presents the token again can read it, and the database alone reveals nothing. The
/// pad is SHA-256 of the token (256 random bits) and seals this one value only, so XOR is
/// a one-time pad.
pub fn seal_successor(token: &str, successor: &str) -> anyhow::Result<Vec<u8>> {
    let successor = URL_SAFE_NO_PAD
        .decode(successor)
        .context("a refresh token is base64url")?;
    anyhow::ensure!(successor.len() == 32, "a refresh token is 32 bytes");
    Ok(xor_pad(token, &successor))
}

/// The successor sealed by [`seal_successor`] with `token`; `None` if the seal is not one.
pub fn unseal_successor(token: &str, sealed: &[u8]) -> Option<String> {
    (sealed.len() == 32).then(|| URL_SAFE_NO_PAD.encode(xor_pad(token, sealed)))
}

fn xor_pad(token: &str, bytes: &[u8]) -> Vec<u8> {
    let pad = Sha256::new()
        .chain_update(b"tidings refresh successor")
        .chain_update(token.as_bytes())
        .finalize();
    bytes.iter().zip(pad).map(|(b, p)| b ^ p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        User {
            id: Uuid::now_v7(),
            email: "ada@example.com".into(),
            role: Role::Staff,
            token_version: 3,
            disabled: false,
            email_verified: false,
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn an_issued_token_verifies_with_its_claims() {
        let keys = TokenKeys::new(&[7; 32], Duration::from_secs(60), Duration::from_secs(60));
        let user = user();
        let claims = keys.verify(&keys.issue(&user).unwrap()).unwrap();
        assert_eq!(
            (claims.sub, claims.role, claims.tv),
            (user.id, Role::Staff, 3)
        );
        assert_eq!(claims.exp - claims.iat, 60);
    }

    #[test]
    fn a_token_signed_with_another_key_is_refused() {
        let ours = TokenKeys::new(&[7; 32], Duration::from_secs(60), Duration::from_secs(60));
        let theirs = TokenKeys::new(&[8; 32], Duration::from_secs(60), Duration::from_secs(60));
        let token = theirs.issue(&user()).unwrap();
        assert!(ours.verify(&token).is_err());
    }

    #[test]
    fn the_generated_key_is_kept_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwt-secret");
        let first = load_or_create_secret(&path).unwrap();
        assert!(first.len() >= MIN_JWT_SECRET_LEN);
        assert_eq!(load_or_create_secret(&path).unwrap(), first);
    }

    #[test]
    fn a_token_from_the_future_is_refused_beyond_the_clock_skew() {
        let keys = TokenKeys::new(&[7; 32], Duration::from_secs(60), Duration::from_secs(60));
        let user = user();
        let now = chrono::Utc::now().timestamp();
        let sign = |iat: i64, nbf: Option<i64>| {
            let claims = Claims {
                sub: user.id,
                role: user.role,
                tv: user.token_version,
                iat,
                exp: now + 600,
                nbf,
            };
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding).unwrap()
        };
        let code = |token: String| match keys.verify(&token) {
            Ok(_) => "ok",
            Err(e) => e.code(),
        };
        assert_eq!(code(sign(now + 3600, None)), "token_not_yet_valid");
        assert_eq!(code(sign(now, Some(now + 3600))), "token_not_yet_valid");
        assert_eq!(code(sign(now + 10, Some(now + 10))), "ok");
        assert_eq!(code(sign(now - 10, Some(now - 10))), "ok");
    }

    #[test]
    fn a_sealed_successor_opens_only_with_its_token() {
        let (token, _) = new_refresh_token();
        let (successor, _) = new_refresh_token();
        let sealed = seal_successor(&token, &successor).unwrap();
        assert_eq!(sealed.len(), 32);
        assert_eq!(unseal_successor(&token, &sealed).unwrap(), successor);
        let (other, _) = new_refresh_token();
        assert_ne!(unseal_successor(&other, &sealed).unwrap(), successor);
        assert!(unseal_successor(&token, &sealed[1..]).is_none());
    }

    #[test]
    fn refresh_tokens_are_random_and_hashed() {
        let (a, hash_a) = new_refresh_token();
        let (b, _) = new_refresh_token();
        assert_ne!(a, b);
        assert_eq!(hash_refresh_token(&a), hash_a);
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), 32);
    }
}
