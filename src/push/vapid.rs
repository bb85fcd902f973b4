//! The VAPID key (RFC 8292): the server's P-256 key pair with which it signs a token for
//! each Web Push request, so that push services know the sender. Browsers bind a
//! subscription to its public key (`applicationServerKey`), so it must stay the same
//! across restarts and instances: from `TIDINGS_VAPID_PRIVATE_KEY`, or generated once into
//! the data directory, as the JWT key is.

use std::path::Path;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use rand::RngCore;
use serde_json::json;

use crate::config::{Config, VapidPrivateKey};
use crate::service::accounts::tokens::write_private;

/// How long a VAPID token is valid; RFC 8292 allows at most 24 hours.
pub const TOKEN_LIFETIME_SECS: i64 = 12 * 60 * 60;

/// How long one push service's token is reused: signing one per request was a third of
/// each push's work, and an hour-old token still has 11 hours to run.
const TOKEN_REUSE_SECS: i64 = 60 * 60;

/// Push services whose tokens are kept; beyond, the cache starts over (there are a handful
/// in practice: one per browser vendor).
const CACHED_ORIGINS: usize = 64;

/// The server's VAPID key pair and subject.
pub struct VapidKey {
    signing: SigningKey,
    /// The public key as browsers take it: base64url of the uncompressed point.
    public: String,
    /// `mailto:` or `https:`: who runs this server.
    subject: String,
    /// Per push service origin, the `Authorization` value last made and when.
    tokens: parking_lot::Mutex<std::collections::HashMap<String, (i64, String)>>,
}

impl std::fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VapidKey")
            .field("public", &self.public)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl VapidKey {
    /// The key of a 32-byte private scalar (checked when the settings were read).
    pub fn new(private: &[u8; 32], subject: &str) -> anyhow::Result<VapidKey> {
        let signing = SigningKey::from_slice(private).context("not a P-256 private key")?;
        let public =
            URL_SAFE_NO_PAD.encode(signing.verifying_key().to_encoded_point(false).as_bytes());
        Ok(VapidKey {
            signing,
            public,
            subject: subject.to_owned(),
            tokens: parking_lot::Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// The key from the settings, or the one kept in the data directory (made on first
    /// start).
    pub fn load(config: &Config) -> anyhow::Result<VapidKey> {
        let private = match &config.vapid_private_key {
            Some(key) => key.clone(),
            None => load_or_create(&config.data_dir.join("vapid-private-key"))?,
        };
        VapidKey::new(&private.0, &config.vapid_subject)
    }

    /// The public key, base64url of the uncompressed P-256 point (65 bytes).
    pub fn public_key(&self) -> &str {
        &self.public
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The `Authorization` header of a request to a push service at `origin`
    /// (`https://host[:port]`): `vapid t=<ES256 JWT>, k=<public key>`, the same for an
    /// hour per origin.
    pub fn authorization(&self, origin: &str, now: i64) -> String {
        if let Some((made, value)) = self.tokens.lock().get(origin)
            && (0..TOKEN_REUSE_SECS).contains(&(now - made))
        {
            return value.clone();
        }
        let value = self.sign(origin, now);
        let mut tokens = self.tokens.lock();
        if tokens.len() >= CACHED_ORIGINS {
            tokens.clear();
        }
        tokens.insert(origin.to_owned(), (now, value.clone()));
        value
    }

    /// A fresh token for `origin`, valid from `now`.
    fn sign(&self, origin: &str, now: i64) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = json!({
            "aud": origin,
            "exp": now + TOKEN_LIFETIME_SECS,
            "sub": self.subject,
        });
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signing_input = format!("{header}.{claims}");
        // JWS's ES256 signature is r and s, 32 bytes each (not DER).
        let signature: Signature = self.signing.sign(signing_input.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(signature.to_bytes());
        format!("vapid t={signing_input}.{signature}, k={}", self.public)
    }
}

fn load_or_create(path: &Path) -> anyhow::Result<VapidPrivateKey> {
    match std::fs::read_to_string(path) {
        Ok(text) => VapidPrivateKey::parse(&text)
            .ok()
            .flatten()
            .with_context(|| {
                format!(
                    "the VAPID key in {} is not base64url of a P-256 private key; browsers' \
                     subscriptions are bound to it, so restore it (deleting it makes a new \
                     one and every subscription must be made again)",
                    path.display()
                )
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = loop {
                let mut bytes = [0u8; 32];
                rand::rng().fill_bytes(&mut bytes);
                // Nearly every 32 bytes are a valid scalar (below the group order, not 0).
                if p256::SecretKey::from_slice(&bytes).is_ok() {
                    break bytes;
                }
            };
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("could not create {}", dir.display()))?;
            }
            write_private(path, URL_SAFE_NO_PAD.encode(key).as_bytes())
                .with_context(|| format!("could not write the VAPID key to {}", path.display()))?;
            tracing::info!(path = %path.display(), "generated a VAPID key; set TIDINGS_VAPID_PRIVATE_KEY to share one between instances");
            Ok(VapidPrivateKey(key))
        }
        Err(e) => {
            Err(e).with_context(|| format!("could not read the VAPID key at {}", path.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::VerifyingKey;
    use p256::ecdsa::signature::Verifier;

    #[test]
    fn a_token_is_an_es256_jwt_with_the_claims_rfc_8292_asks_for() {
        let key = VapidKey::new(&[9u8; 32], "mailto:ops@example.com").unwrap();
        let header = key.authorization("https://push.example.net", 1_000);
        let (t, k) = header
            .strip_prefix("vapid t=")
            .unwrap()
            .split_once(", k=")
            .unwrap();
        assert_eq!(k, key.public_key());
        let (input, signature) = t.rsplit_once('.').unwrap();
        let verifying = VerifyingKey::from_sec1_bytes(&URL_SAFE_NO_PAD.decode(k).unwrap()).unwrap();
        let signature = Signature::from_slice(&URL_SAFE_NO_PAD.decode(signature).unwrap()).unwrap();
        verifying.verify(input.as_bytes(), &signature).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(input.split_once('.').unwrap().1)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(claims["aud"], "https://push.example.net");
        assert_eq!(claims["exp"], 1_000 + TOKEN_LIFETIME_SECS);
        assert_eq!(claims["sub"], "mailto:ops@example.com");
    }

    #[test]
    fn a_generated_key_is_kept_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vapid-private-key");
        let first = load_or_create(&path).unwrap();
        let again = load_or_create(&path).unwrap();
        assert_eq!(first.0, again.0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
