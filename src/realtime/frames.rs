//! Events encoded for the wire, once per event and format, shared by every connection
//! that receives them.

use std::sync::Arc;

use bytes::Bytes;
use chrono::SecondsFormat;
use serde::Serialize;

use crate::events::{Event, Topic};

/// One event, encoded for both transports.
#[derive(Debug)]
pub struct PreparedEvent {
    pub seq: i64,
    pub topic: Topic,
    /// When the change was committed, for the delivery lag metric.
    pub at: chrono::DateTime<chrono::Utc>,
    /// The envelope as a whole WebSocket text frame: server frames are not masked, so every
    /// connection is sent these same bytes.
    pub ws_frame: Bytes,
    /// `id:`, `event:` and `data:` lines of a Server-Sent Event…
    pub sse: Bytes,
    /// …and the same as one HTTP/1.1 chunk (size line, event, CRLF), for a stream whose
    /// socket the hub writes to: chunks written back to back are a valid chunked body.
    /// `sse` is a slice of it.
    pub sse_chunk: Bytes,
}

/// What a mailbox holds: a shared handle, not a copy.
pub type Frame = Arc<PreparedEvent>;

/// An event, as every client receives it (the same JSON on both transports).
#[derive(Serialize, utoipa::ToSchema)]
pub struct Envelope<'a> {
    /// Its position in the stream of the deployment: contiguous, in commit order. Keep the
    /// last one received to resume from it.
    seq: i64,
    /// The topic it was published on.
    topic: &'a str,
    /// The event type.
    #[serde(rename = "type")]
    kind: &'a str,
    /// When the change was committed, in RFC 3339 (UTC, microseconds).
    #[schema(format = DateTime)]
    at: String,
    /// What changed: everything a client needs to update its screen without a request.
    #[schema(value_type = Object)]
    data: &'a serde_json::Value,
}

impl PreparedEvent {
    pub fn encode(event: &Event) -> Frame {
        let envelope = Envelope {
            seq: event.seq,
            topic: event.topic.as_str(),
            kind: &event.kind,
            at: event.at.to_rfc3339_opts(SecondsFormat::Micros, true),
            data: &event.data,
        };
        let json = serde_json::to_string(&envelope).expect("an envelope always serialises");
        let sse = format!("id: {}\nevent: {}\ndata: {json}\n\n", event.seq, event.kind);
        let size_line = chunk_size_line(sse.len());
        let sse_chunk = Bytes::from([size_line.as_str(), &sse, "\r\n"].concat());
        let ws_frame = crate::net::wire::text_frame(json.as_bytes());
        Arc::new(PreparedEvent {
            seq: event.seq,
            topic: event.topic,
            at: event.at,
            ws_frame: Bytes::from(ws_frame),
            sse: sse_chunk.slice(size_line.len()..size_line.len() + sse.len()),
            sse_chunk,
        })
    }

    /// Seconds from the commit of this event to now.
    pub fn lag_seconds(&self) -> f64 {
        let lag = chrono::Utc::now() - self.at;
        lag.to_std().unwrap_or_default().as_secs_f64()
    }

    /// The size counted against a mailbox's limit.
    pub fn len(&self) -> usize {
        self.sse.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sse.is_empty()
    }
}

/// The size line that opens an HTTP/1.1 chunk of `len` bytes.
pub fn chunk_size_line(len: usize) -> String {
    format!("{len:x}\r\n")
}

/// Records commit-to-write lag once per batch written (its oldest event), which is cheap
/// enough for the hot path and is the lag that matters.
pub fn record_delivery_lag<'a>(
    frames: impl IntoIterator<Item = &'a Frame>,
    transport: &'static str,
) {
    if let Some(first) = frames.into_iter().next() {
        metrics::histogram!("tidings_delivery_lag_seconds", "transport" => transport)
            .record(first.lag_seconds());
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::events::Audience;

    #[test]
    fn an_event_is_one_envelope_on_both_transports() {
        let event = Event {
            seq: 1042,
            topic: Topic::Orders,
            kind: "order.status_changed".into(),
            audience: Audience::Staff,
            at: "2026-11-22T10:00:00.123456Z".parse().unwrap(),
            data: json!({"order_id": "o1", "status": "shipped"}),
        };
        let frame = PreparedEvent::encode(&event);
        // A text frame with a 16-bit length: the payload follows 4 bytes of header.
        assert_eq!(frame.ws_frame[..2], [0x81, 126]);
        let json = std::str::from_utf8(&frame.ws_frame[4..]).unwrap();
        let envelope: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(
            envelope,
            json!({"seq": 1042, "topic": "orders", "type": "order.status_changed",
                   "at": "2026-11-22T10:00:00.123456Z", "data": {"order_id": "o1", "status": "shipped"}})
        );
        assert_eq!(
            usize::from(u16::from_be_bytes([frame.ws_frame[2], frame.ws_frame[3]])),
            json.len()
        );
        assert_eq!(
            std::str::from_utf8(&frame.sse).unwrap(),
            format!("id: 1042\nevent: order.status_changed\ndata: {}\n\n", json)
        );
        assert_eq!(
            frame.sse_chunk,
            [
                format!("{:x}\r\n", frame.sse.len()).as_bytes(),
                &frame.sse,
                b"\r\n"
            ]
            .concat()
        );
    }
}
