//! Apple Push Notification service: an alert to a device token over HTTP/2, authorised by a
//! provider token (an ES256 JWT signed with the team's `.p8` key, of token-based
//! authentication).
//!
//! No APNs crate: `a2` brings its own hyper client and TLS set-up, where `reqwest` (already
//! the push client, rustls) speaks HTTP/2 with its `http2` feature, negotiated by ALPN; the
//! JWT is `jsonwebtoken`'s ES256 (RustCrypto's `p256`).
//!
//! The base URLs are the operator's settings (trusted); the device token goes into the path
//! only, checked again here as hexadecimal (it was when it was registered).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::{Outcome, PushMessage, PushProvider, Urgency, clipped, retry_after, valid_topic};
use crate::config::Config;
use crate::domain::device::{apns_token, apns_topic};
use crate::store::devices::Device;

/// A provider token is renewed after this long: Apple refuses one older than an hour and
/// one renewed more often than every 20 minutes (`TooManyProviderTokenUpdates`).
pub const TOKEN_RENEW_AFTER: Duration = Duration::from_secs(50 * 60);

/// The shortest life of a token that `ExpiredProviderToken` renews at once: a younger one
/// refused as expired means a wrong clock, which a new token does not mend.
const TOKEN_MIN_AGE: Duration = Duration::from_secs(20 * 60);

/// The largest payload APNs takes for an alert.
pub const MAX_PAYLOAD: usize = 4096;

/// How long one request to APNs may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A provider token and when it was made.
struct ProviderToken {
    jwt: String,
    made: Instant,
}

/// The APNs provider: one HTTP/2 client, the signing key, the current provider token.
#[derive(Clone)]
pub struct Apns {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    key: EncodingKey,
    key_id: String,
    team_id: String,
    production: url::Url,
    sandbox: url::Url,
    /// The provider token, shared by every request; signing one takes no I/O, so a plain
    /// lock held for the signature is enough.
    token: parking_lot::Mutex<Option<ProviderToken>>,
}

impl std::fmt::Debug for Apns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Apns")
            .field("key_id", &self.inner.key_id)
            .field("team_id", &self.inner.team_id)
            .field("production", &self.inner.production.as_str())
            .field("sandbox", &self.inner.sandbox.as_str())
            .finish_non_exhaustive()
    }
}

/// Where the provider's settings come from, for [`Apns::new`].
pub struct ApnsSettings<'a> {
    /// The `.p8` file's text and where it is (for errors).
    pub key_pem: &'a str,
    pub key_path: &'a Path,
    pub key_id: &'a str,
    pub team_id: &'a str,
    pub production: &'a url::Url,
    pub sandbox: &'a url::Url,
    /// A PEM CA certificate trusted besides the system's roots, and where it is.
    pub extra_ca: Option<(&'a [u8], &'a Path)>,
}

impl Apns {
    /// The provider of `TIDINGS_APNS_KEY` (with its key and team ids), if set. A file that
    /// cannot be read or holds no usable key is an error that names the setting and never
    /// shows the key.
    pub fn from_config(config: &Config) -> anyhow::Result<Option<Apns>> {
        let Some(path) = &config.apns_key else {
            return Ok(None);
        };
        let (Some(key_id), Some(team_id)) = (&config.apns_key_id, &config.apns_team_id) else {
            anyhow::bail!("TIDINGS_APNS_KEY needs TIDINGS_APNS_KEY_ID and TIDINGS_APNS_TEAM_ID");
        };
        let key_pem = std::fs::read_to_string(path)
            .with_context(|| format!("TIDINGS_APNS_KEY: could not read {}", path.display()))?;
        let ca = match &config.apns_ca {
            Some(ca) => Some(
                std::fs::read(ca)
                    .with_context(|| format!("TIDINGS_APNS_CA: could not read {}", ca.display()))?,
            ),
            None => None,
        };
        Apns::new(ApnsSettings {
            key_pem: &key_pem,
            key_path: path,
            key_id,
            team_id,
            production: &config.apns_production_url,
            sandbox: &config.apns_sandbox_url,
            extra_ca: ca.as_deref().zip(config.apns_ca.as_deref()),
        })
        .map(Some)
    }

    pub fn new(settings: ApnsSettings<'_>) -> anyhow::Result<Apns> {
        let key = EncodingKey::from_ec_pem(settings.key_pem.as_bytes())
            .ok()
            // Parsing the PEM does not parse the key inside; a signature does.
            .filter(|key| {
                jsonwebtoken::encode(&Header::new(Algorithm::ES256), &json!({}), key).is_ok()
            })
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "TIDINGS_APNS_KEY: {} is not a P-256 private key in PKCS#8 PEM (the .p8 \
                     file Apple gives)",
                    settings.key_path.display()
                )
            })?;
        let mut builder = reqwest::Client::builder()
            // APNs speaks HTTP/2 only: offered alone by ALPN, so that no other is used.
            .http2_prior_knowledge()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .no_proxy();
        if let Some((pem, path)) = settings.extra_ca {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .ok()
                .filter(|certs| !certs.is_empty())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "TIDINGS_APNS_CA: {} holds no PEM certificate",
                        path.display()
                    )
                })?;
            builder = builder.tls_certs_merge(certs);
        }
        let client = builder
            .build()
            .context("could not make the APNs client (TIDINGS_APNS_CA?)")?;
        Ok(Apns {
            inner: Arc::new(Inner {
                client,
                key,
                key_id: settings.key_id.to_owned(),
                team_id: settings.team_id.to_owned(),
                production: settings.production.clone(),
                sandbox: settings.sandbox.clone(),
                token: parking_lot::Mutex::new(None),
            }),
        })
    }

    /// The current provider token, made anew when it is 50 minutes old.
    fn provider_token(&self) -> Result<String, String> {
        let mut current = self.inner.token.lock();
        if let Some(token) = current.as_ref()
            && token.made.elapsed() < TOKEN_RENEW_AFTER
        {
            return Ok(token.jwt.clone());
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.inner.key_id.clone());
        let claims = json!({"iss": self.inner.team_id, "iat": chrono::Utc::now().timestamp()});
        let jwt = jsonwebtoken::encode(&header, &claims, &self.inner.key)
            .map_err(|e| format!("the provider token could not be signed: {e}"))?;
        *current = Some(ProviderToken {
            jwt: jwt.clone(),
            made: Instant::now(),
        });
        Ok(jwt)
    }

    /// APNs says `used` expired: forget it if it is still current and old enough that
    /// renewing it is allowed and can help.
    fn expire_token(&self, used: &str) {
        let mut current = self.inner.token.lock();
        match current.as_ref() {
            Some(token) if token.jwt == used && token.made.elapsed() >= TOKEN_MIN_AGE => {
                *current = None;
            }
            Some(token) if token.jwt == used => tracing::warn!(
                age_secs = token.made.elapsed().as_secs(),
                "APNs calls a fresh provider token expired: is this server's clock right?"
            ),
            _ => {}
        }
    }

    /// The request for one message, or why it cannot be made.
    fn request(
        &self,
        device: &Device,
        message: &PushMessage,
        jwt: &str,
    ) -> Result<reqwest::RequestBuilder, String> {
        if device.kind != "apns" {
            return Err(format!("a {} device is not an APNs token", device.kind));
        }
        let token = apns_token("token", &device.target)
            .map_err(|_| "the device token is malformed".to_owned())?;
        let bundle = device
            .topic
            .as_deref()
            .and_then(|t| apns_topic("topic", t).ok())
            .ok_or("the device has no valid topic (bundle id)")?;
        let mut url = match device.environment.as_deref() {
            Some("sandbox") => self.inner.sandbox.clone(),
            _ => self.inner.production.clone(),
        };
        url.path_segments_mut()
            .map_err(|_| "the APNs base URL cannot take a path".to_owned())?
            .pop_if_empty()
            .extend(["3", "device", token.as_str()]);
        let expiration = chrono::Utc::now().timestamp() + message.ttl.as_secs() as i64;
        let priority = if message.urgency == Urgency::High {
            "10"
        } else {
            "5"
        };
        let mut request = self
            .inner
            .client
            .post(url)
            .header("authorization", format!("bearer {jwt}"))
            .header("apns-topic", bundle)
            .header("apns-push-type", "alert")
            .header("apns-priority", priority)
            .header("apns-expiration", expiration.to_string())
            .header("content-type", "application/json")
            .body(payload(&message.payload)?);
        if let Some(topic) = &message.topic {
            if !valid_topic(topic) {
                return Err("a topic is 1 to 32 characters of the base64url alphabet".into());
            }
            request = request.header("apns-collapse-id", topic);
        }
        Ok(request)
    }
}

/// The APNs body: an alert of the notification's title and body, and the event as the app
/// receives it live. Past APNs's 4 KiB the event loses its `data` (the app can read it
/// back), then the alert's body its end.
fn payload(event: &[u8]) -> Result<String, String> {
    let event: Value = serde_json::from_slice(event).map_err(|_| "the event is not JSON")?;
    let title = event["data"]["title"].as_str().unwrap_or("A notification");
    let mut body = event["data"]["body"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let make = |event: &Value, body: &str| {
        json!({
            "aps": {"alert": {"title": title, "body": body}, "sound": "default"},
            "event": event,
        })
        .to_string()
    };
    let mut text = make(&event, &body);
    if text.len() <= MAX_PAYLOAD {
        return Ok(text);
    }
    let mut short = event.clone();
    if let Some(fields) = short.as_object_mut() {
        fields.remove("data");
    }
    text = make(&short, &body);
    while text.len() > MAX_PAYLOAD && !body.is_empty() {
        let over = text.len() - MAX_PAYLOAD;
        body = clipped(&body, body.len().saturating_sub(over + 4));
        if body == "…" {
            body.clear();
        }
        text = make(&short, &body);
    }
    if text.len() > MAX_PAYLOAD {
        return Err("the notification is too large for APNs".into());
    }
    Ok(text)
}

impl PushProvider for Apns {
    async fn send(&self, device: &Device, message: &PushMessage) -> Outcome {
        let jwt = match self.provider_token() {
            Ok(jwt) => jwt,
            Err(reason) => return Outcome::Rejected(reason),
        };
        let request = match self.request(device, message, &jwt) {
            Ok(request) => request,
            Err(reason) => return Outcome::Rejected(reason),
        };
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) => {
                tracing::debug!(device = %device.id, error = %err, "an APNs request failed");
                return Outcome::RetryAfter(None);
            }
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let reason = if (200..300).contains(&status) {
            String::new()
        } else {
            let body: Value = response.json().await.unwrap_or_default();
            body["reason"].as_str().unwrap_or_default().to_owned()
        };
        if status == 403 && reason == "ExpiredProviderToken" {
            self.expire_token(&jwt);
        }
        outcome(status, &reason, &headers)
    }
}

/// What APNs's answer means (its status codes and `reason`s).
fn outcome(status: u16, reason: &str, headers: &reqwest::header::HeaderMap) -> Outcome {
    match (status, reason) {
        (200..=299, _) => Outcome::Delivered,
        (410, _) | (400, "BadDeviceToken" | "DeviceTokenNotForTopic") => Outcome::Gone,
        (403, "ExpiredProviderToken") => Outcome::RetryAfter(None),
        (429 | 500..=599, _) => Outcome::RetryAfter(retry_after(headers)),
        (s, reason) => Outcome::Rejected(
            format!("APNs answered {s} {}", clipped(reason, 100))
                .trim_end()
                .to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_map_to_outcomes() {
        let none = reqwest::header::HeaderMap::new();
        assert_eq!(outcome(200, "", &none), Outcome::Delivered);
        assert_eq!(outcome(410, "Unregistered", &none), Outcome::Gone);
        assert_eq!(outcome(400, "BadDeviceToken", &none), Outcome::Gone);
        assert_eq!(outcome(400, "DeviceTokenNotForTopic", &none), Outcome::Gone);
        assert_eq!(
            outcome(400, "BadCollapseId", &none),
            Outcome::Rejected("APNs answered 400 BadCollapseId".into())
        );
        assert_eq!(
            outcome(403, "ExpiredProviderToken", &none),
            Outcome::RetryAfter(None)
        );
        assert!(matches!(
            outcome(403, "InvalidProviderToken", &none),
            Outcome::Rejected(_)
        ));
        let mut later = reqwest::header::HeaderMap::new();
        later.insert(reqwest::header::RETRY_AFTER, "5".parse().unwrap());
        assert_eq!(
            outcome(429, "TooManyRequests", &later),
            Outcome::RetryAfter(Some(Duration::from_secs(5)))
        );
        assert_eq!(
            outcome(503, "ServiceUnavailable", &none),
            Outcome::RetryAfter(None)
        );
    }

    #[test]
    fn a_missing_or_bad_key_is_an_error_naming_the_setting_without_the_key() {
        let mut config = Config::defaults();
        config.apns_key = Some("/nonexistent/AuthKey.p8".into());
        config.apns_key_id = Some("ABC123DEFG".into());
        config.apns_team_id = Some("DEF123GHIJ".into());
        let err = format!("{:#}", Apns::from_config(&config).unwrap_err());
        assert!(
            err.starts_with("TIDINGS_APNS_KEY: could not read /nonexistent/AuthKey.p8"),
            "{err}"
        );

        let url = url::Url::parse("https://api.push.apple.com").unwrap();
        let not_a_key = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n";
        let err = Apns::new(ApnsSettings {
            key_pem: not_a_key,
            key_path: Path::new("/etc/AuthKey.p8"),
            key_id: "ABC123DEFG",
            team_id: "DEF123GHIJ",
            production: &url,
            sandbox: &url,
            extra_ca: None,
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("TIDINGS_APNS_KEY: /etc/AuthKey.p8"),
            "{err}"
        );
        assert!(!err.contains("c2VjcmV0"), "{err}");
    }

    #[test]
    fn the_payload_is_an_alert_with_the_event_and_fits_in_4_kib() {
        let event = json!({"seq": 3, "type": "notification.created",
            "data": {"title": "Sale", "body": "About sale.", "data": {}}});
        let text = payload(event.to_string().as_bytes()).unwrap();
        let sent: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            sent["aps"]["alert"],
            json!({"title": "Sale", "body": "About sale."})
        );
        assert_eq!(sent["aps"]["sound"], "default");
        assert_eq!(sent["event"], event);

        let long = "é".repeat(3000);
        let event = json!({"seq": 4, "data": {"title": "Long", "body": long}});
        let text = payload(event.to_string().as_bytes()).unwrap();
        assert!(text.len() <= MAX_PAYLOAD, "{}", text.len());
        let sent: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(sent["event"], json!({"seq": 4}));
        assert!(
            sent["aps"]["alert"]["body"]
                .as_str()
                .unwrap()
                .ends_with('…')
        );
    }
}
