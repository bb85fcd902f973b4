//! Web Push (RFC 8030): the payload encrypted for the subscription (RFC 8291, the
//! `aes128gcm` content coding of RFC 8188) and the request signed with the server's VAPID
//! key (RFC 8292), sent to the subscription's endpoint.
//!
//! Built on maintained primitives rather than a Web Push crate (`web-push` needs OpenSSL,
//! and `web-push-native` would add its own request type while the encryption is the few
//! steps of RFC 8291 below): the ECDH of each message (a fresh sender key pair) on
//! `aws-lc-rs`, which rustls already brings, because RustCrypto's pure-Rust `p256` spent
//! about 270 µs of CPU per push there, a third of the server's work per push
//! (docs/benchmarks.md); HKDF, SHA-256 and AES-128-GCM on RustCrypto (`hkdf`, `sha2`,
//! `aes-gcm`), cheap beside it; the VAPID signature (ES256, once an hour per push
//! service) on `p256`. HTTP is `reqwest` with rustls (no OpenSSL), as for FCM and APNs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes128Gcm, Nonce};
use aws_lc_rs::agreement::{self, ECDH_P256, PrivateKey, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hkdf::Hkdf;
use rand::RngCore;
use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
use sha2::Sha256;

use super::vapid::VapidKey;
use super::{Outcome, PushMessage, PushProvider, retry_after, valid_topic};
use crate::domain::device::{is_public, push_endpoint};
use crate::store::devices::Device;

/// The record size written in the header: one record holds the whole message.
const RECORD_SIZE: u32 = 4096;

/// The largest payload one record holds: the record size less the header (86 bytes), the
/// padding delimiter and the 16-byte tag (RFC 8291 section 4 allows 3993).
pub const MAX_PAYLOAD: usize = 3993;

/// How long one request to a push service may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Encrypts `payload` for a subscription (its public key and auth secret, raw bytes):
/// the `aes128gcm` body of RFC 8291 section 4, with a fresh sender key pair and salt.
pub fn encrypt(ua_public: &[u8], auth_secret: &[u8], payload: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let as_secret = PrivateKey::generate(&ECDH_P256)
        .map_err(|_| anyhow::anyhow!("could not make a sender key"))?;
    encrypt_with(ua_public, auth_secret, payload, &as_secret, salt)
}

/// [`encrypt`] with the sender's key and the salt given.
fn encrypt_with(
    ua_public: &[u8],
    auth_secret: &[u8],
    payload: &[u8],
    as_secret: &PrivateKey,
    salt: [u8; 16],
) -> anyhow::Result<Vec<u8>> {
    anyhow::ensure!(
        payload.len() <= MAX_PAYLOAD,
        "a Web Push payload holds at most {MAX_PAYLOAD} bytes"
    );
    anyhow::ensure!(auth_secret.len() == 16, "the auth secret is 16 bytes");
    // The subscription's key as registered: an uncompressed point (65 bytes).
    let not_a_point = || anyhow::anyhow!("the subscription's key is not a P-256 point");
    if ua_public.len() != 65 || ua_public[0] != 4 {
        return Err(not_a_point());
    }
    let as_public = as_secret
        .compute_public_key()
        .map_err(|_| anyhow::anyhow!("the sender key has no public key"))?;
    let shared: [u8; 32] = agreement::agree(
        as_secret,
        UnparsedPublicKey::new(&ECDH_P256, ua_public),
        not_a_point(),
        |secret| secret.try_into().map_err(|_| not_a_point()),
    )?;

    // IKM = HKDF(auth_secret, ecdh_secret, "WebPush: info" 0x00 ua_public as_public, 32)
    let mut key_info = Vec::with_capacity(14 + 65 + 65);
    key_info.extend_from_slice(b"WebPush: info\0");
    key_info.extend_from_slice(ua_public);
    key_info.extend_from_slice(as_public.as_ref());
    let mut ikm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(auth_secret), &shared)
        .expand(&key_info, &mut ikm)
        .map_err(|_| anyhow::anyhow!("HKDF length"))?;

    // RFC 8188: the content key and nonce from the salt and IKM.
    let prk = Hkdf::<Sha256>::new(Some(&salt), &ikm);
    let mut cek = [0u8; 16];
    let mut nonce = [0u8; 12];
    prk.expand(b"Content-Encoding: aes128gcm\0", &mut cek)
        .and_then(|_| prk.expand(b"Content-Encoding: nonce\0", &mut nonce))
        .map_err(|_| anyhow::anyhow!("HKDF length"))?;

    // One record, the last: the payload, then the delimiter 0x02, no padding.
    let mut plaintext = Vec::with_capacity(payload.len() + 1);
    plaintext.extend_from_slice(payload);
    plaintext.push(2);
    let cipher = Aes128Gcm::new_from_slice(&cek).map_err(|_| anyhow::anyhow!("key length"))?;
    let ciphertext = cipher
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: &plaintext,
                aad: b"",
            },
        )
        .map_err(|_| anyhow::anyhow!("AES-GCM failed"))?;

    // The header: salt, record size, the key id (the sender's public key), then the record.
    let mut body = Vec::with_capacity(16 + 4 + 1 + 65 + ciphertext.len());
    body.extend_from_slice(&salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(65);
    body.extend_from_slice(as_public.as_ref());
    body.extend_from_slice(&ciphertext);
    Ok(body)
}

/// The Web Push provider: one HTTP client, the VAPID key.
#[derive(Clone)]
pub struct WebPush {
    client: reqwest::Client,
    vapid: Arc<VapidKey>,
    allow_private: bool,
}

impl WebPush {
    /// A provider signing with `vapid`. Unless `allow_private`
    /// (`TIDINGS_PUSH_ALLOW_PRIVATE_ENDPOINTS`, tests only) it speaks https only, follows
    /// no redirect, and connects to no private, loopback or link-local address, whatever a
    /// host name resolves to.
    pub fn new(vapid: Arc<VapidKey>, allow_private: bool) -> anyhow::Result<WebPush> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .no_proxy();
        if !allow_private {
            builder = builder
                .https_only(true)
                .dns_resolver(Arc::new(PublicOnlyResolver));
        }
        let client = builder.build()?;
        Ok(WebPush {
            client,
            vapid,
            allow_private,
        })
    }

    /// The request for one message, or why it cannot be made.
    fn request(
        &self,
        device: &Device,
        message: &PushMessage,
    ) -> Result<reqwest::RequestBuilder, String> {
        if device.kind != "webpush" {
            return Err(format!(
                "a {} device is not a Web Push subscription",
                device.kind
            ));
        }
        let endpoint = push_endpoint("endpoint", &device.target, self.allow_private)
            .map_err(|e| format!("endpoint: {}", e.message))?;
        let decode = |value: &Option<String>| {
            value
                .as_deref()
                .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
                .ok_or_else(|| "the subscription's keys are missing".to_owned())
        };
        let (p256dh, auth) = (decode(&device.p256dh)?, decode(&device.auth)?);
        if let Some(topic) = &message.topic
            && !valid_topic(topic)
        {
            return Err("a topic is 1 to 32 characters of the base64url alphabet".into());
        }
        let body = encrypt(&p256dh, &auth, &message.payload).map_err(|e| e.to_string())?;
        let origin = endpoint.origin().ascii_serialization();
        let now = chrono::Utc::now().timestamp();
        let mut request = self
            .client
            .post(endpoint)
            .header(AUTHORIZATION, self.vapid.authorization(&origin, now))
            .header(CONTENT_ENCODING, "aes128gcm")
            .header(CONTENT_TYPE, "application/octet-stream")
            .header("TTL", message.ttl.as_secs().to_string())
            .header("Urgency", message.urgency.as_str())
            .body(body);
        if let Some(topic) = &message.topic {
            request = request.header("Topic", topic);
        }
        Ok(request)
    }
}

impl PushProvider for WebPush {
    async fn send(&self, device: &Device, message: &PushMessage) -> Outcome {
        let request = match self.request(device, message) {
            Ok(request) => request,
            Err(reason) => return Outcome::Rejected(reason),
        };
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) => {
                tracing::debug!(device = %device.id, error = %err, "a Web Push request failed");
                return Outcome::RetryAfter(None);
            }
        };
        outcome(response.status().as_u16(), response.headers())
    }
}

/// What a push service's answer means (RFC 8030 section 5, and what services do). The
/// status is a number here: this layer names no HTTP status type (`tests/architecture.rs`).
fn outcome(status: u16, headers: &reqwest::header::HeaderMap) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered,
        404 | 410 => Outcome::Gone,
        429 | 500..=599 => Outcome::RetryAfter(retry_after(headers)),
        s => Outcome::Rejected(format!("the push service answered {s}")),
    }
}

/// Resolves names as the system does, then keeps only public addresses: a host name that
/// points into the server's own network is no way around the endpoint check.
struct PublicOnlyResolver;

impl reqwest::dns::Resolve for PublicOnlyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} has no public address").into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8291 appendix A: the example's keys and salt give its body, byte for byte.
    #[test]
    fn the_rfc_8291_example_encrypts_to_its_body() {
        let b = |s: &str| URL_SAFE_NO_PAD.decode(s).unwrap();
        let as_secret = PrivateKey::from_private_key(
            &ECDH_P256,
            &b("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw"),
        )
        .unwrap();
        let ua_public = b(
            "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
        );
        let auth = b("BTBZMqHH6r4Tts7J_aSIgg");
        let salt: [u8; 16] = b("DGv6ra1nlYgDCS1FRnbzlw").try_into().unwrap();
        let body = encrypt_with(
            &ua_public,
            &auth,
            b"When I grow up, I want to be a watermelon",
            &as_secret,
            salt,
        )
        .unwrap();
        assert_eq!(
            URL_SAFE_NO_PAD.encode(body),
            "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
        );
    }

    #[test]
    fn statuses_map_to_outcomes() {
        let none = reqwest::header::HeaderMap::new();
        assert_eq!(outcome(201, &none), Outcome::Delivered);
        assert_eq!(outcome(410, &none), Outcome::Gone);
        assert_eq!(outcome(404, &none), Outcome::Gone);
        assert_eq!(outcome(502, &none), Outcome::RetryAfter(None));
        let mut later = reqwest::header::HeaderMap::new();
        later.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(
            outcome(429, &later),
            Outcome::RetryAfter(Some(Duration::from_secs(7)))
        );
        assert!(matches!(outcome(413, &none), Outcome::Rejected(_)));
    }
}
