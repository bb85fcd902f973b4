//! The vocabulary of the live protocol: the messages a WebSocket client sends and is sent,
//! the codes of `error` messages, and the close codes. The endpoints speak only these
//! types, and the AsyncAPI document (`GET /asyncapi.json`) is generated from them, so what
//! the document lists is what the code sends.

use serde::{Deserialize, Serialize, Serializer};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

use crate::events::Topic;

/// Declares a closed list of values with a doc comment each: the enum, [`ALL`], the value
/// of each, and its description (from the doc comment).
macro_rules! listed {
    (
        $(#[doc = $what:literal])*
        pub enum $name:ident: $ty:ty {
            $($(#[doc = $doc:literal])* $variant:ident = $value:expr,)*
        }
    ) => {
        $(#[doc = $what])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[doc = $doc])* $variant,)*
        }

        impl $name {
            /// Every value, as declared.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            pub fn value(self) -> $ty {
                match self {
                    $($name::$variant => $value,)*
                }
            }

            /// What it means, from its doc comment.
            pub fn description(self) -> String {
                let lines: &[&str] = match self {
                    $($name::$variant => &[$($doc),*],)*
                };
                lines.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" ")
            }
        }
    };
}

/// What a WebSocket client may send.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// Starts live delivery of topics (adding to those already subscribed). With `since`,
    /// first every event after that seq the user may receive (or a `reset` when it is out
    /// of reach); then `subscribed`.
    Subscribe {
        #[schema(schema_with = topic_list)]
        topics: Vec<String>,
        /// The last seq received; 0 for every event still retained.
        #[serde(default)]
        #[schema(minimum = 0)]
        since: Option<i64>,
    },
    /// Stops delivery of topics; answered with `unsubscribed`.
    Unsubscribe {
        #[schema(schema_with = topic_list)]
        topics: Vec<String>,
    },
    /// A fresh access token for this connection, sent before the current one expires
    /// (else the connection closes with 4001); answered with `authenticated`, or an
    /// `invalid_token` error (the connection keeps its token). A token of another user
    /// closes the connection with 1008, one whose role changed with 4001.
    Auth {
        /// An access token of the same user.
        token: String,
    },
    /// Answered with `pong`.
    Ping,
    /// The app has handled every event up to `seq` that this connection delivered: the
    /// user is not sent those by push or email (a notification no app of the user's
    /// acknowledged within `TIDINGS_PUSH_DELAY` goes to their devices). Not answered; a
    /// `seq` below 1 or beyond the last event is a `bad_ack` error.
    Ack {
        #[schema(minimum = 1)]
        seq: i64,
    },
}

impl ClientMessage {
    /// The `type` of each client message.
    pub const TYPES: [&'static str; 5] = ["subscribe", "unsubscribe", "auth", "ping", "ack"];
}

/// What the server sends a WebSocket client, besides events.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage<'a> {
    /// Live delivery of `topics` (every topic the connection now has) is registered; sent
    /// after any replay the `subscribe` asked for.
    Subscribed {
        #[schema(schema_with = topic_list)]
        topics: Vec<&'static str>,
        /// Where live delivery starts: events after this seq come live.
        seq: i64,
        /// The server takes `ack` messages: a client that sends them after its app handled
        /// events spares the user pushes of what they already saw. Always true here.
        acks: bool,
    },
    /// The `since` of a subscribe, or the `Last-Event-ID` of a stream, is out of reach
    /// (before the retention window, or a seq the server never had): reload these topics
    /// over REST, then carry on with the events that follow. On SSE its `id:` moves the
    /// stream's last event id past the gap.
    Reset {
        #[schema(schema_with = topic_list)]
        topics: Vec<&'static str>,
    },
    /// Delivery of `topics` stopped.
    Unsubscribed {
        /// The topics just unsubscribed.
        #[schema(schema_with = topic_list)]
        topics: Vec<&'static str>,
        /// The topics still subscribed.
        #[schema(schema_with = topic_list)]
        subscribed: Vec<&'static str>,
    },
    /// The token of an `auth` message is now the connection's.
    Authenticated {
        /// When the new token expires, in seconds since the Unix epoch.
        expires_at: i64,
    },
    /// The answer to `ping`.
    Pong,
    /// A client message was refused; the connection stays open.
    Error {
        code: ErrorCode,
        /// For people, not for programs: it may change.
        message: &'a str,
    },
}

impl ServerMessage<'_> {
    /// The message as the text of a WebSocket message (or an SSE `data:` line).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a server message serialises")
    }
}

/// A list of topics, each one a client may subscribe to.
fn topic_list() -> ArrayBuilder {
    let names: Vec<&str> = Topic::SUBSCRIBABLE.iter().map(|t| t.as_str()).collect();
    ArrayBuilder::new().items(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(names)),
    )
}

listed! {
    /// The `code` of an `error` message.
    pub enum ErrorCode: &'static str {
        /// Not a message of the protocol: not JSON, a binary frame, a field missing, extra
        /// or of the wrong type, or a subscribe naming no topic.
        BadMessage = "bad_message",
        /// A `type` that is not subscribe, unsubscribe, auth, ping or ack.
        UnknownType = "unknown_type",
        /// A topic that is not orders, inventory or notifications.
        UnknownTopic = "unknown_topic",
        /// A negative `since`.
        BadSince = "bad_since",
        /// An `ack` of a seq below 1 or beyond the last event.
        BadAck = "bad_ack",
        /// The token of an `auth` message is not valid; the connection keeps its own.
        InvalidToken = "invalid_token",
        /// The missed events could not be read: the topics are not subscribed; subscribe
        /// again.
        ReplayFailed = "replay_failed",
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.value())
    }
}

impl PartialSchema for ErrorCode {
    fn schema() -> RefOr<Schema> {
        let meanings: Vec<String> = ErrorCode::ALL
            .iter()
            .map(|c| format!("- `{}`: {}", c.value(), c.description()))
            .collect();
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(ErrorCode::ALL.iter().map(|c| c.value())))
            .description(Some(format!(
                "Why a client message was refused:\n{}",
                meanings.join("\n")
            )))
            .into()
    }
}

impl ToSchema for ErrorCode {}

listed! {
    /// The status code of a Close the server sends on a WebSocket.
    pub enum CloseCode: u16 {
        /// The server is shutting down: reconnect at once (to another instance) and resume
        /// from the last seq.
        GoingAway = 1001,
        /// A broken frame or close frame (a 64-bit length with its top bit set, or a length
        /// not in its shortest form, included): a bug in the client.
        ProtocolError = 1002,
        /// A text message or close reason that is not UTF-8 (checked as it arrives: the
        /// connection closes at the first byte that cannot be UTF-8).
        NotUtf8 = 1007,
        /// An in-band `auth` with a token of another user: stop and report; do not
        /// reconnect with it.
        PolicyViolation = 1008,
        /// A message larger than the server takes, or in too many frames.
        TooBig = 1009,
        /// The token expired, or the user's sessions were revoked (password change,
        /// logout-all, role change, disabled), or an in-band `auth` carried a token of
        /// another role: refresh the token, then reconnect and resume.
        Unauthorized = 4001,
        /// Slow consumer: the connection fell too far behind. Reconnect and resume from
        /// the last seq.
        SlowConsumer = 4008,
        /// Too many connections for this user: back off before reconnecting.
        TooManyConnections = 4029,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `type` values of a tagged enum's generated schema.
    fn tags(schema: RefOr<Schema>) -> Vec<String> {
        let value = serde_json::to_value(schema).unwrap();
        value["oneOf"]
            .as_array()
            .expect("a oneOf")
            .iter()
            .map(|v| {
                v["properties"]["type"]["enum"][0]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn the_client_message_types_are_those_of_the_enum() {
        assert_eq!(tags(ClientMessage::schema()), ClientMessage::TYPES);
    }

    #[test]
    fn every_server_message_type_is_in_its_schema() {
        assert_eq!(
            tags(ServerMessage::schema()),
            [
                "subscribed",
                "reset",
                "unsubscribed",
                "authenticated",
                "pong",
                "error"
            ]
        );
    }

    #[test]
    fn server_messages_serialise_with_their_type() {
        let error = ServerMessage::Error {
            code: ErrorCode::BadSince,
            message: "no",
        };
        assert_eq!(
            error.to_json(),
            r#"{"type":"error","code":"bad_since","message":"no"}"#
        );
        assert_eq!(ServerMessage::Pong.to_json(), r#"{"type":"pong"}"#);
    }
}
