//! The AsyncAPI 3.0 document of the live protocol, served at `GET /asyncapi.json`: the
//! WebSocket (`/v1/ws`) and SSE (`/v1/events`) channels, every message either way, every
//! event type with the schema of its `data`, the error and close codes, SSE framing and
//! authentication. It is what a native client (Swift, Kotlin) is written from.
//!
//! Generated, not written: event types from [`EventType::ALL`] with their data schemas from
//! the Rust types the events are made of, client and server messages from the enums the
//! WebSocket endpoint parses and sends, codes from [`ErrorCode`] and [`CloseCode`]. The
//! limits it quotes are this server's settings.
//!
//! The document describes the server: it `receive`s what a client sends and `send`s what a
//! client receives.

use axum::Json;
use axum::extract::State;
use serde_json::{Map, Value, json};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;
use utoipa::{PartialSchema, ToSchema};

use crate::config::Config;
use crate::events::{EventType, Topic};
use crate::http::AppState;
use crate::live::tickets::TICKET_TTL_SECS;
use crate::realtime::RealtimeConfig;
use crate::realtime::frames::Envelope;
use crate::realtime::protocol::{ClientMessage, CloseCode, ErrorCode, ServerMessage};

/// The AsyncAPI version the document is written in.
pub const ASYNCAPI_VERSION: &str = "3.0.0";

/// The AsyncAPI 3.0 document of the WebSocket and SSE protocol.
pub async fn serve(State(state): State<AppState>) -> Json<Value> {
    Json(document(&state.config, &state.realtime.config))
}

/// The event types a client can receive (not those only the hubs act on).
pub fn client_event_types() -> impl Iterator<Item = EventType> {
    EventType::ALL
        .iter()
        .copied()
        .filter(|t| t.topic() != Topic::System)
}

/// Builds the document for a server with these settings.
pub fn document(config: &Config, live: &RealtimeConfig) -> Value {
    let mut schemas: Vec<(String, RefOr<Schema>)> = Vec::new();
    let mut messages = Map::new();

    // What clients send, and what the server answers, one message per variant.
    let client = variants(ClientMessage::schema());
    let server = variants(ServerMessage::schema());
    schemas.push((ErrorCode::name().into_owned(), ErrorCode::schema()));
    for (name, mut payload) in client {
        // Refused as `bad_message` (the enum denies unknown fields).
        payload["additionalProperties"] = Value::Bool(false);
        messages.insert(name.clone(), message(&name, payload, None));
    }
    for (name, payload) in server {
        messages.insert(name.clone(), message(&name, payload, None));
    }

    // One message per event type: the envelope, its `type`, `topic` and `data` fixed.
    let envelope = json_of(Envelope::schema());
    let mut events = Vec::new();
    for kind in client_event_types() {
        let data = json_of(kind.data_schema(&mut schemas));
        let mut payload = envelope.clone();
        let properties = &mut payload["properties"];
        properties["type"] = constant(kind.as_str(), "The event type.");
        properties["topic"] = constant(kind.topic().as_str(), "The topic it is published on.");
        properties["data"] = data;
        let description = format!(
            "{} Received by {}. On SSE: `id:` is its `seq`, `event:` its type, `data:` \
             this JSON.",
            kind.description(),
            kind.receivers()
        );
        messages.insert(
            kind.as_str().to_owned(),
            message(kind.as_str(), payload, Some(description)),
        );
        events.push(kind.as_str().to_owned());
    }

    let mut components = Map::new();
    for (name, schema) in schemas {
        components.insert(name, json_of(schema));
    }

    let refs = |channel: &str, names: &[&str]| -> Value {
        names
            .iter()
            .map(|n| json!({"$ref": format!("#/channels/{channel}/messages/{n}")}))
            .collect()
    };
    let event_names: Vec<&str> = events.iter().map(String::as_str).collect();
    let ws_messages: Map<String, Value> = messages
        .keys()
        .map(|name| {
            (
                name.clone(),
                json!({"$ref": format!("#/components/messages/{name}")}),
            )
        })
        .collect();
    let sse_messages: Map<String, Value> = event_names
        .iter()
        .chain(&["reset"])
        .map(|name| {
            (
                (*name).to_owned(),
                json!({"$ref": format!("#/components/messages/{name}")}),
            )
        })
        .collect();
    let reply = |names: &[&str]| {
        json!({
            "channel": {"$ref": "#/channels/websocket"},
            "messages": refs("websocket", names),
        })
    };
    let mut subscribe_replies = vec!["subscribed", "reset", "error"];
    subscribe_replies.extend(&event_names);
    let mut sse_sent = event_names.clone();
    sse_sent.push("reset");

    json!({
        "asyncapi": ASYNCAPI_VERSION,
        "id": "urn:tidings:live",
        "info": {
            "title": "Tidings live events",
            "version": env!("CARGO_PKG_VERSION"),
            "description": overview(config, live),
        },
        "defaultContentType": "application/json",
        "servers": {
            "websocket": server_object("ws", "WebSocket (`wss` behind TLS)"),
            "sse": server_object("http", "Server-Sent Events over HTTP (`https` behind TLS)"),
        },
        "channels": {
            "websocket": {
                "address": "/v1/ws",
                "title": "WebSocket",
                "summary": "Live events and the client's requests, as JSON text messages, on one \
                            connection.",
                "description": websocket_description(live),
                "servers": [{"$ref": "#/servers/websocket"}],
                "messages": ws_messages,
                "bindings": {"ws": {
                    "method": "GET",
                    "query": query_schema(&[("ticket", ticket_description())], &[]),
                    "headers": authorization_header(),
                    "bindingVersion": "0.1.0",
                }},
                "x-close-codes": close_codes(),
            },
            "sse": {
                "address": "/v1/events",
                "title": "Server-Sent Events",
                "summary": "Live events as a text/event-stream, usable by a plain EventSource.",
                "description": sse_description(live),
                "servers": [{"$ref": "#/servers/sse"}],
                "messages": sse_messages,
            },
        },
        "operations": {
            "subscribe": {
                "action": "receive",
                "title": "Subscribe",
                "summary": "Start live delivery of topics, resuming after `since`.",
                "channel": {"$ref": "#/channels/websocket"},
                "messages": refs("websocket", &["subscribe"]),
                "reply": reply(&subscribe_replies),
            },
            "unsubscribe": {
                "action": "receive",
                "title": "Unsubscribe",
                "channel": {"$ref": "#/channels/websocket"},
                "messages": refs("websocket", &["unsubscribe"]),
                "reply": reply(&["unsubscribed", "error"]),
            },
            "auth": {
                "action": "receive",
                "title": "Refresh the connection's token in band",
                "channel": {"$ref": "#/channels/websocket"},
                "messages": refs("websocket", &["auth"]),
                "reply": reply(&["authenticated", "error"]),
            },
            "ping": {
                "action": "receive",
                "title": "Ping",
                "channel": {"$ref": "#/channels/websocket"},
                "messages": refs("websocket", &["ping"]),
                "reply": reply(&["pong"]),
            },
            "ack": {
                "action": "receive",
                "title": "Acknowledge handled events",
                "summary": "The app has handled every event up to `seq`: the user is not sent \
                            those by push. Not answered, unless refused (`bad_ack`).",
                "channel": {"$ref": "#/channels/websocket"},
                "messages": refs("websocket", &["ack"]),
            },
            "sendEvents": {
                "action": "send",
                "title": "Live events over WebSocket",
                "summary": "Every event of the subscribed topics the user may receive, in seq \
                            order.",
                "channel": {"$ref": "#/channels/websocket"},
                "messages": refs("websocket", &event_names),
            },
            "sendErrors": {
                "action": "send",
                "title": "Errors",
                "summary": "A client message that was refused (not JSON, a binary frame, an \
                            unknown type, ...): the connection stays open.",
                "channel": {"$ref": "#/channels/websocket"},
                "messages": refs("websocket", &["error"]),
            },
            "streamEvents": {
                "action": "send",
                "title": "Live events over SSE",
                "summary": "Every event of the stream's topics the user may receive, in seq \
                            order; `reset` when Last-Event-ID is out of reach.",
                "channel": {"$ref": "#/channels/sse"},
                "messages": refs("sse", &sse_sent),
                "bindings": {"http": {
                    "method": "GET",
                    "query": query_schema(&[
                        ("topics", "Comma-separated: orders, inventory, notifications.".to_owned()),
                        ("last_event_id", "Resume after this seq, as the `Last-Event-ID` \
                                           header does (which wins when both are sent)."
                            .to_owned()),
                        ("ticket", ticket_description()),
                    ], &["topics"]),
                    "bindingVersion": "0.3.0",
                }},
            },
        },
        "components": {
            "schemas": components,
            "messages": messages,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "`Authorization: Bearer <access token>` on the opening \
                                    request (native apps, services). An access token comes \
                                    from POST /v1/auth/login or /v1/auth/refresh.",
                },
                "ticket": {
                    "type": "httpApiKey",
                    "name": "ticket",
                    "in": "query",
                    "description": ticket_description(),
                },
            },
        },
    })
}

fn json_of(schema: RefOr<Schema>) -> Value {
    serde_json::to_value(schema).expect("a schema serialises")
}

/// The variants of a tagged enum's schema, by their `type`.
fn variants(schema: RefOr<Schema>) -> Vec<(String, Value)> {
    let schema = json_of(schema);
    let items = schema["oneOf"]
        .as_array()
        .expect("a tagged enum is a oneOf");
    items
        .iter()
        .map(|item| {
            let name = item["properties"]["type"]["enum"][0]
                .as_str()
                .expect("each variant has its type")
                .to_owned();
            (name, item.clone())
        })
        .collect()
}

/// A string schema with one value.
fn constant(value: &str, description: &str) -> Value {
    json!({"type": "string", "enum": [value], "description": description})
}

/// A message of `name`, its payload's description as its own.
fn message(name: &str, mut payload: Value, description: Option<String>) -> Value {
    let description = description.or_else(|| {
        payload
            .as_object_mut()
            .and_then(|p| p.remove("description"))
            .and_then(|d| d.as_str().map(str::to_owned))
    });
    let mut message = json!({
        "name": name,
        "title": name,
        "contentType": "application/json",
        "payload": payload,
    });
    if let Some(description) = description {
        message["summary"] = Value::String(first_sentence(&description));
        message["description"] = Value::String(description);
    }
    message
}

fn first_sentence(text: &str) -> String {
    match text.find(". ") {
        Some(end) => text[..=end].to_owned(),
        None => text.to_owned(),
    }
}

fn server_object(protocol: &str, description: &str) -> Value {
    json!({
        "host": "{host}",
        "protocol": protocol,
        "description": description,
        "variables": {"host": {
            "default": "localhost:8080",
            "description": "The host and port Tidings is reached at",
        }},
        "security": [
            {"$ref": "#/components/securitySchemes/bearer"},
            {"$ref": "#/components/securitySchemes/ticket"},
        ],
    })
}

fn ticket_description() -> String {
    format!(
        "A stream ticket, for browsers (whose EventSource and WebSocket cannot send \
         headers): `POST /v1/stream-tickets` with the bearer token returns one, valid \
         {TICKET_TTL_SECS} s and for one stream only, so no long-lived token sits in a URL \
         or a log."
    )
}

fn query_schema(parameters: &[(&str, String)], required: &[&str]) -> Value {
    let properties: Map<String, Value> = parameters
        .iter()
        .map(|(name, description)| {
            (
                (*name).to_owned(),
                json!({"type": "string", "description": description}),
            )
        })
        .collect();
    json!({"type": "object", "properties": properties, "required": required})
}

fn authorization_header() -> Value {
    json!({"type": "object", "properties": {"Authorization": {
        "type": "string",
        "pattern": "^Bearer .+$",
        "description": "`Bearer <access token>`; or open with `?ticket=` instead.",
    }}})
}

/// Every close code the server sends, by code.
fn close_codes() -> Value {
    CloseCode::ALL
        .iter()
        .map(|c| {
            (
                c.value().to_string(),
                json!({"name": format!("{c:?}"), "description": c.description()}),
            )
        })
        .collect::<Map<String, Value>>()
        .into()
}

fn overview(config: &Config, live: &RealtimeConfig) -> String {
    let mut topics = String::from("| topic | event type | received by |\n|---|---|---|\n");
    for kind in client_event_types() {
        topics.push_str(&format!(
            "| `{}` | `{}` | {} |\n",
            kind.topic().as_str(),
            kind.as_str(),
            kind.receivers()
        ));
    }
    format!(
        "Live events of a Tidings deployment, over WebSocket (`/v1/ws`) or Server-Sent \
Events (`/v1/events`). Every committed change reaches, in order, every connection entitled \
to it, on any instance. Who receives what is decided by the server from the token, never \
by what a client asks for.

{topics}
**Events** are the same JSON on both transports: `seq` numbers every event of the \
deployment, contiguously; `at` is when the change was committed; `data` depends on `type` \
(each event type is a message of its own below). The REST API that issues tokens and \
tickets, and serves the resources events describe, is in `/openapi.json` (OpenAPI 3.1).

**Resuming.** Keep the last `seq` you saw. Reconnect with `since` in the WebSocket \
`subscribe`, or with `Last-Event-ID` (header, or `last_event_id` in the query) on SSE: you \
get every event after it that you may receive, in order, then live events, with no \
duplicate, on any instance. From before the retention window (events are kept {retention} \
s), or from a seq the server never had, you get a `reset` instead: reload those topics over \
REST, then carry on live. Subscribe to all of a connection's topics in one message: its \
events then arrive in seq order, and one last seq is all a client keeps. A topic added \
later with `since` is replayed at once while other topics' events may already be queued, \
so such a connection's stream is in order per topic only: keep a last seq per topic then.

**Authentication.** Open either channel with `Authorization: Bearer <access token>`, or \
(browsers) with `?ticket=` from `POST /v1/stream-tickets`. A bad token or ticket is a \
plain `401` before the upgrade. On WebSocket, send `auth` with a fresh access token \
before the current one expires (access tokens live {access_ttl} s here); otherwise the \
connection closes with 4001. An SSE stream ends when its token expires: reconnect with a \
fresh token or ticket and `Last-Event-ID`.

**Limits of this server.** At most {per_user} live connections per user (WebSocket: close \
4029; SSE: `429`). A client message of at most {max_message} bytes (close 1009). A \
connection whose queue passes {queue} bytes is a slow consumer (WebSocket: close 4008; SSE: \
the stream ends): resume from the last seq.",
        retention = config.event_retention.as_secs(),
        access_ttl = config.access_token_ttl.as_secs(),
        per_user = config.max_connections_per_user,
        max_message = live.max_message_bytes,
        queue = config.queue_bytes,
    )
}

fn websocket_description(live: &RealtimeConfig) -> String {
    let mut codes = String::from("| code | meaning |\n|---|---|\n");
    for code in CloseCode::ALL {
        codes.push_str(&format!("| {} | {} |\n", code.value(), code.description()));
    }
    format!(
        "`GET /v1/ws`, WebSocket version 13 (another version gets `426` with \
`Sec-WebSocket-Version: 13`). Messages are JSON text frames both ways; a binary frame gets \
a `bad_message` error. Send `subscribe` with every topic the connection wants (and `since`, \
to resume): the server replays what was missed, then answers `subscribed` and delivers \
events live. The server pings every {ping} s and drops a peer silent for {idle} s; a \
`ping` message gets a `pong`.

A client's Close is answered with its own status code (none if it sent none); when the \
server closes first, it waits up to 5 s for the client's Close. The close codes the server \
sends (also in `x-close-codes`):

{codes}",
        ping = live.ping_interval.as_secs(),
        idle = live.idle_timeout.as_secs(),
    )
}

fn sse_description(live: &RealtimeConfig) -> String {
    format!(
        "`GET /v1/events?topics=orders,inventory`: a `text/event-stream` (WHATWG HTML, \
\"Server-sent events\"), usable by a plain EventSource.

- The stream opens with `retry: {retry}` (milliseconds an EventSource waits before it \
reconnects).
- Each event is `id: <seq>`, `event: <type>`, `data: <the event's JSON>` and a blank line, \
so `addEventListener(type, ...)` works, and EventSource reconnects with `Last-Event-ID` set \
to the last seq.
- To resume, send `Last-Event-ID: <seq>` (one header) or `?last_event_id=<seq>`: the \
missed events come first, then live ones. A seq out of reach gets `id: <seq>`, \
`event: reset`, `data: {{\"type\":\"reset\",\"topics\":[...]}}`: reload those topics over \
REST; the id moves the stream past the gap.
- A comment `: keep-alive` every {heartbeat} s keeps proxies from closing the stream.
- The stream ends, after a comment saying why (`: token expired`, `: session revoked`, \
`: slow consumer: reconnect with Last-Event-ID`, `: server shutting down`), when the token \
expires, the user's sessions are revoked, the connection falls too far behind, or the \
server shuts down; reconnect with `Last-Event-ID` (and a fresh token or ticket).
- Refused before the stream starts, as `application/problem+json`: `400` \
`unknown_topic` (missing or unknown topics), `bad_last_event_id`, \
`ambiguous_last_event_id` (two headers); `401` (no valid token or ticket); `429` \
`too_many_connections`; `503` `shutting_down`.",
        retry = live.sse_retry.as_millis(),
        heartbeat = live.sse_heartbeat.as_secs(),
    )
}
