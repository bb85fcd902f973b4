//! Push: sending a message to a device that holds no live connection (a closed browser
//! tab, an app in the background), through its provider. Each provider sits behind
//! [`PushProvider`]; what it answers is an [`Outcome`] that the caller acts on (remove a
//! gone device, retry later). There are three: Web Push ([`webpush`]), Firebase Cloud
//! Messaging ([`fcm`]) and Apple's push service ([`apns`]); the [`worker`] sends from the
//! outbox through whichever are configured.

pub mod apns;
pub mod fcm;
pub mod vapid;
pub mod webpush;
pub mod worker;

use std::future::Future;
use std::time::Duration;

use crate::store::devices::Device;

/// What to send.
#[derive(Debug, Clone)]
pub struct PushMessage {
    /// The payload the app receives (encrypted on the way for Web Push).
    pub payload: Vec<u8>,
    /// How long the push service keeps the message for a device that is offline.
    pub ttl: Duration,
    pub urgency: Urgency,
    /// A collapse key: a newer message with the same topic replaces one not yet delivered.
    /// At most 32 characters of the base64url alphabet (Web Push's rule, the strictest).
    pub topic: Option<String>,
}

/// How soon the device should be woken for the message (RFC 8030 section 5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    VeryLow,
    Low,
    Normal,
    High,
}

impl Urgency {
    pub fn as_str(self) -> &'static str {
        match self {
            Urgency::VeryLow => "very-low",
            Urgency::Low => "low",
            Urgency::Normal => "normal",
            Urgency::High => "high",
        }
    }
}

/// What became of one send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The provider accepted the message.
    Delivered,
    /// The device no longer exists (Web Push 404/410): the caller removes it
    /// (`service::devices::remove_gone`).
    Gone,
    /// Try again later: after the provider's `Retry-After` if it gave one (429, 5xx, or
    /// the provider could not be reached).
    RetryAfter(Option<Duration>),
    /// The provider refused this message for good (another 4xx), or it could not be made.
    Rejected(String),
}

/// One kind of push provider.
pub trait PushProvider: Send + Sync {
    /// Sends `message` to `device`; never fails otherwise than through the [`Outcome`].
    fn send(&self, device: &Device, message: &PushMessage) -> impl Future<Output = Outcome> + Send;
}

/// `Retry-After` in seconds or as an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.signed_duration_since(chrono::Utc::now());
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

/// At most `max` bytes of a provider's text for the delivery log, cut at a character.
fn clipped(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &text[..cut])
}

/// Whether a topic is one every provider takes: 1 to 32 characters of the base64url
/// alphabet.
pub fn valid_topic(topic: &str) -> bool {
    (1..=32).contains(&topic.len())
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
