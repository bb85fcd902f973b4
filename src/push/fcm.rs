//! Firebase Cloud Messaging, HTTP v1: a data message to a registration token through
//! `messages:send`, authorised by an OAuth 2.0 access token that the server gets for its
//! service account (the JWT bearer grant of RFC 7523, signed RS256 with the account's key).
//!
//! No FCM crate: the maintained ones are thin wrappers that bring their own HTTP and auth
//! stacks, while this is two requests. The JWT is `jsonwebtoken`'s (already the server's
//! token library), whose `rust_crypto` backend signs RS256 with RustCrypto's `rsa`. That
//! crate's known timing side channel (RUSTSEC-2023-0071) needs many private-key operations
//! an attacker can time; here the key signs once an hour, unprompted. HTTP is `reqwest`
//! with rustls, as for Web Push.
//!
//! The base URL and the token endpoint are the operator's settings (trusted); the device's
//! registration token goes only into the JSON body, and was checked when it was registered.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Outcome, PushMessage, PushProvider, Urgency, clipped, retry_after, valid_topic};
use crate::config::Config;
use crate::domain::device::fcm_token;
use crate::store::devices::Device;

/// The OAuth scope that sending needs.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// How long a grant's assertion is valid (Google's limit is an hour).
const ASSERTION_LIFETIME_SECS: i64 = 3600;

/// An access token is renewed this long before it expires, so that none is sent stale.
const RENEW_BEFORE: Duration = Duration::from_secs(60);

/// How long one request to FCM or the token endpoint may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The fields of a Google service-account key file that the grant needs.
#[derive(Deserialize)]
struct ServiceAccount {
    /// `service_account` when present.
    #[serde(rename = "type")]
    kind: Option<String>,
    project_id: String,
    client_email: String,
    /// PEM (PKCS#8 or PKCS#1), RSA. Never shown.
    private_key: String,
    token_uri: String,
}

/// An access token and when to stop using it.
struct AccessToken {
    value: String,
    renew_at: Instant,
}

/// The FCM provider: one HTTP client, the service account, the cached access token.
#[derive(Clone)]
pub struct Fcm {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    client_email: String,
    key: EncodingKey,
    token_uri: url::Url,
    /// `{base}/v1/projects/{project_id}/messages:send`.
    send_url: url::Url,
    /// The access token; the lock is held across a refresh, so that the sends waiting for
    /// a token wait for that one request rather than each making their own.
    token: tokio::sync::Mutex<Option<AccessToken>>,
}

impl std::fmt::Debug for Fcm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fcm")
            .field("client_email", &self.inner.client_email)
            .field("send_url", &self.inner.send_url.as_str())
            .finish_non_exhaustive()
    }
}

impl Fcm {
    /// The provider of `TIDINGS_FCM_CREDENTIALS`, if set. A file that cannot be read or
    /// holds no usable key is an error that names the setting and never shows the key.
    pub fn from_config(config: &Config) -> anyhow::Result<Option<Fcm>> {
        let Some(path) = &config.fcm_credentials else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).with_context(|| {
            format!("TIDINGS_FCM_CREDENTIALS: could not read {}", path.display())
        })?;
        Fcm::new(&text, path, &config.fcm_base_url).map(Some)
    }

    /// The provider of a service-account JSON (read from `path`, named in errors).
    pub fn new(json: &str, path: &Path, base: &url::Url) -> anyhow::Result<Fcm> {
        let problem = |what: String| {
            anyhow::anyhow!(
                "TIDINGS_FCM_CREDENTIALS: {} is not a usable service-account key file: {what}",
                path.display()
            )
        };
        // serde_json's message could quote a value; only its kind and place are shown.
        let account: ServiceAccount = serde_json::from_str(json).map_err(|e| {
            problem(match e.classify() {
                serde_json::error::Category::Data => format!(
                    "a field is missing or of the wrong type (line {}, column {}); it needs \
                     project_id, client_email, private_key and token_uri",
                    e.line(),
                    e.column()
                ),
                _ => format!("not JSON (line {}, column {})", e.line(), e.column()),
            })
        })?;
        if let Some(kind) = &account.kind
            && kind != "service_account"
        {
            return Err(problem(format!(
                "its type is {kind:?}, not \"service_account\""
            )));
        }
        let project_ok = !account.project_id.is_empty()
            && account.project_id.len() <= 100
            && account
                .project_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':'));
        if !project_ok {
            return Err(problem("project_id is not a project id".into()));
        }
        let token_uri = url::Url::parse(&account.token_uri)
            .ok()
            .filter(|u| matches!(u.scheme(), "https" | "http") && u.host().is_some())
            .ok_or_else(|| problem("token_uri is not an http(s) URL".into()))?;
        let key = EncodingKey::from_rsa_pem(account.private_key.as_bytes())
            .map_err(|_| problem("private_key is not an RSA private key in PEM".into()))?;
        // Parsing the PEM does not parse the key inside; a signature does.
        let header = Header::new(Algorithm::RS256);
        jsonwebtoken::encode(&header, &json!({}), &key)
            .map_err(|_| problem("private_key is not a usable RSA private key".into()))?;
        let send_url = url::Url::parse(&format!(
            "{}/v1/projects/{}/messages:send",
            base.as_str().trim_end_matches('/'),
            account.project_id
        ))
        .context("TIDINGS_FCM_BASE_URL: not a base for FCM's URLs")?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .no_proxy()
            .build()?;
        Ok(Fcm {
            inner: Arc::new(Inner {
                client,
                client_email: account.client_email,
                key,
                token_uri,
                send_url,
                token: tokio::sync::Mutex::new(None),
            }),
        })
    }

    /// A valid access token: the cached one, or a new one from the token endpoint.
    async fn access_token(&self) -> Result<String, String> {
        let mut cached = self.inner.token.lock().await;
        if let Some(token) = cached.as_ref()
            && Instant::now() < token.renew_at
        {
            return Ok(token.value.clone());
        }
        let token = self.fetch_token().await?;
        let value = token.value.clone();
        *cached = Some(token);
        Ok(value)
    }

    /// Forgets `used` if it is still the cached token (FCM refused it).
    async fn drop_token(&self, used: &str) {
        let mut cached = self.inner.token.lock().await;
        if cached.as_ref().is_some_and(|t| t.value == used) {
            *cached = None;
        }
    }

    /// The JWT bearer grant: an assertion signed with the account's key for an access
    /// token.
    async fn fetch_token(&self) -> Result<AccessToken, String> {
        let now = chrono::Utc::now().timestamp();
        let claims = json!({
            "iss": self.inner.client_email,
            "scope": SCOPE,
            "aud": self.inner.token_uri.as_str(),
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
        });
        let assertion =
            jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.inner.key)
                .map_err(|e| format!("the grant could not be signed: {e}"))?;
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
            .append_pair("assertion", &assertion)
            .finish();
        let asked = Instant::now();
        let response = self
            .inner
            .client
            .post(self.inner.token_uri.clone())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .map_err(|e| format!("the token endpoint could not be reached: {e}"))?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or_default();
        if !(200..300).contains(&status) {
            // RFC 6749 section 5.2: `error` and perhaps `error_description`.
            return Err(format!(
                "the token endpoint answered {status} {}",
                clipped(
                    &format!(
                        "{} {}",
                        body["error"].as_str().unwrap_or_default(),
                        body["error_description"].as_str().unwrap_or_default()
                    ),
                    200
                )
                .trim()
            ));
        }
        let value = body["access_token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or("the token endpoint's answer has no access_token")?;
        let expires_in = Duration::from_secs(body["expires_in"].as_u64().unwrap_or(3600));
        Ok(AccessToken {
            value: value.to_owned(),
            renew_at: asked + expires_in.saturating_sub(RENEW_BEFORE),
        })
    }
}

/// The `messages:send` body: the event as the data message's `event` value (FCM data
/// values are strings), with the Android and APNs equivalents of TTL, urgency and topic.
/// FCM keeps at most four collapse keys per device, so of many different notifications
/// pending for a device that is off, only a few are kept; the topic is the notification's
/// id, so this trades those for never showing one notification twice.
fn body(token: &str, message: &PushMessage) -> Value {
    let mut android = json!({
        "ttl": format!("{}s", message.ttl.as_secs()),
        "priority": if message.urgency == Urgency::High { "high" } else { "normal" },
    });
    let mut body = json!({
        "message": {
            "token": token,
            "data": {"event": String::from_utf8_lossy(&message.payload)},
        }
    });
    if let Some(topic) = &message.topic {
        android["collapse_key"] = json!(topic);
        body["message"]["apns"] = json!({"headers": {"apns-collapse-id": topic}});
    }
    body["message"]["android"] = android;
    body
}

impl PushProvider for Fcm {
    async fn send(&self, device: &Device, message: &PushMessage) -> Outcome {
        if device.kind != "fcm" {
            return Outcome::Rejected(format!("a {} device is not an FCM token", device.kind));
        }
        if fcm_token("token", &device.target).is_err() {
            return Outcome::Rejected("the registration token is malformed".into());
        }
        if let Some(topic) = &message.topic
            && !valid_topic(topic)
        {
            return Outcome::Rejected(
                "a topic is 1 to 32 characters of the base64url alphabet".into(),
            );
        }
        let token = match self.access_token().await {
            Ok(token) => token,
            Err(reason) => {
                tracing::warn!(%reason, "no FCM access token");
                return Outcome::RetryAfter(None);
            }
        };
        let response = match self
            .inner
            .client
            .post(self.inner.send_url.clone())
            .bearer_auth(&token)
            .json(&body(&device.target, message))
            .send()
            .await
        {
            Ok(response) => response,
            Err(err) => {
                tracing::debug!(device = %device.id, error = %err, "an FCM request failed");
                return Outcome::RetryAfter(None);
            }
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let error = if (200..300).contains(&status) {
            None
        } else {
            Some(FcmError::of(&response.bytes().await.unwrap_or_default()))
        };
        let outcome = outcome(status, &headers, error.as_ref());
        if status == 401 && matches!(outcome, Outcome::RetryAfter(_)) {
            self.drop_token(&token).await;
        }
        outcome
    }
}

/// What an FCM error body says: `{"error": {"code", "message", "status", "details":
/// [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode"}]}}`.
#[derive(Debug, Default)]
struct FcmError {
    /// The canonical status (`INVALID_ARGUMENT`, `NOT_FOUND`, …).
    status: String,
    /// FCM's own code (`UNREGISTERED`, `QUOTA_EXCEEDED`, …), if given.
    code: Option<String>,
    message: String,
}

impl FcmError {
    fn of(body: &[u8]) -> FcmError {
        let body: Value = serde_json::from_slice(body).unwrap_or_default();
        let error = &body["error"];
        let code = error["details"].as_array().and_then(|details| {
            details
                .iter()
                .find(|d| {
                    d["@type"]
                        .as_str()
                        .is_some_and(|t| t.ends_with("google.firebase.fcm.v1.FcmError"))
                })
                .and_then(|d| d["errorCode"].as_str())
                .map(str::to_owned)
        });
        FcmError {
            status: error["status"].as_str().unwrap_or_default().to_owned(),
            code,
            message: error["message"].as_str().unwrap_or_default().to_owned(),
        }
    }
}

/// What FCM's answer means (its error codes' documented handling). 401 is a refused
/// access token (the caller drops it and tries again with a new one) unless FCM says the
/// APNs or Web Push credentials behind it were refused, which another try does not mend.
fn outcome(status: u16, headers: &reqwest::header::HeaderMap, error: Option<&FcmError>) -> Outcome {
    let code = error.and_then(|e| e.code.as_deref());
    match status {
        200..=299 => Outcome::Delivered,
        _ if code == Some("UNREGISTERED") => Outcome::Gone,
        404 => Outcome::Gone,
        401 if code != Some("THIRD_PARTY_AUTH_ERROR") => Outcome::RetryAfter(None),
        429 | 500..=599 => Outcome::RetryAfter(retry_after(headers)),
        s => {
            let error = error.map(|e| {
                let code = e.code.as_deref().unwrap_or(&e.status);
                clipped(&format!(" {code}: {}", e.message), 300)
            });
            Outcome::Rejected(format!("FCM answered {s}{}", error.unwrap_or_default()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(status: &str, code: &str) -> FcmError {
        FcmError::of(
            json!({"error": {"code": 0, "message": "m", "status": status, "details": [
                {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}
            ]}})
            .to_string()
            .as_bytes(),
        )
    }

    #[test]
    fn answers_map_to_outcomes() {
        let none = reqwest::header::HeaderMap::new();
        assert_eq!(outcome(200, &none, None), Outcome::Delivered);
        let gone = error("NOT_FOUND", "UNREGISTERED");
        assert_eq!(outcome(404, &none, Some(&gone)), Outcome::Gone);
        let gone = error("INVALID_ARGUMENT", "UNREGISTERED");
        assert_eq!(outcome(400, &none, Some(&gone)), Outcome::Gone);
        assert_eq!(
            outcome(
                400,
                &none,
                Some(&error("INVALID_ARGUMENT", "INVALID_ARGUMENT"))
            ),
            Outcome::Rejected("FCM answered 400 INVALID_ARGUMENT: m".into())
        );
        let mut later = reqwest::header::HeaderMap::new();
        later.insert(reqwest::header::RETRY_AFTER, "30".parse().unwrap());
        let quota = error("RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED");
        assert_eq!(
            outcome(429, &later, Some(&quota)),
            Outcome::RetryAfter(Some(Duration::from_secs(30)))
        );
        let down = error("UNAVAILABLE", "UNAVAILABLE");
        assert_eq!(outcome(503, &none, Some(&down)), Outcome::RetryAfter(None));
        let refused = error("UNAUTHENTICATED", "");
        assert_eq!(
            outcome(401, &none, Some(&refused)),
            Outcome::RetryAfter(None)
        );
        let apns = error("UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR");
        assert!(matches!(
            outcome(401, &none, Some(&apns)),
            Outcome::Rejected(_)
        ));
    }

    #[test]
    fn the_body_carries_the_event_ttl_priority_and_collapse_keys() {
        let message = PushMessage {
            payload: br#"{"seq":1}"#.to_vec(),
            ttl: Duration::from_secs(90),
            urgency: Urgency::Normal,
            topic: Some("abc".into()),
        };
        assert_eq!(
            body("tok", &message),
            json!({"message": {
                "token": "tok",
                "data": {"event": "{\"seq\":1}"},
                "android": {"ttl": "90s", "priority": "normal", "collapse_key": "abc"},
                "apns": {"headers": {"apns-collapse-id": "abc"}},
            }})
        );
    }

    #[test]
    fn a_file_without_a_key_is_refused_without_showing_it() {
        let base = url::Url::parse("https://fcm.googleapis.com").unwrap();
        let path = Path::new("/etc/sa.json");
        let secret = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n";
        let file = json!({
            "type": "service_account", "project_id": "p", "client_email": "a@p.iam",
            "private_key": secret, "token_uri": "https://oauth2.googleapis.com/token",
        });
        let err = Fcm::new(&file.to_string(), path, &base)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("TIDINGS_FCM_CREDENTIALS: /etc/sa.json"),
            "{err}"
        );
        assert!(err.contains("private_key"), "{err}");
        assert!(!err.contains("c2VjcmV0"), "{err}");
        let mut config = Config::defaults();
        config.fcm_credentials = Some("/nonexistent/sa.json".into());
        let err = format!("{:#}", Fcm::from_config(&config).unwrap_err());
        assert!(
            err.starts_with("TIDINGS_FCM_CREDENTIALS: could not read /nonexistent/sa.json"),
            "{err}"
        );
        let err = Fcm::new(r#"{"private_key": 5}"#, path, &base)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing or of the wrong type"), "{err}");
        let err = Fcm::new("not json", path, &base).unwrap_err().to_string();
        assert!(err.contains("not JSON"), "{err}");
    }
}
