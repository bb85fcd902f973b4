//! The AsyncAPI document of the live protocol (`/asyncapi.json`): that it lists every event
//! type, message, error code and close code the code has, that what the server really sends
//! over WebSocket and SSE is what it describes, and that the README names the same events.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tidings::domain::Role;
use tidings::events::{EventType, Topic};
use tidings::realtime::protocol::{ClientMessage, CloseCode, ErrorCode};
use tokio_tungstenite::tungstenite::Message;

use crate::backend_tests;
use crate::clients::WsClient;
use crate::helpers::{Backend, TestApp};

backend_tests!(
    asyncapi_json_is_served_like_openapi_json,
    the_document_lists_every_event_type_of_the_code_with_its_data_schema,
    the_document_lists_every_message_error_code_and_close_code_of_the_code,
    the_document_lists_every_event_type_the_readme_names,
    the_document_quotes_this_servers_settings,
    every_message_the_server_sends_is_one_the_document_describes,
);

async fn asyncapi(app: &TestApp) -> Value {
    let response = app.get("/asyncapi.json", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    response.json().await.expect("the document is JSON")
}

/// The event types a client can receive: every one but those of `system`.
fn client_event_types() -> Vec<EventType> {
    EventType::ALL
        .iter()
        .copied()
        .filter(|t| t.topic() != Topic::System)
        .collect()
}

/// The names an operation's `messages` refer to, in `channel`.
fn operation_messages(document: &Value, operation: &str, channel: &str) -> Vec<String> {
    let prefix = format!("#/channels/{channel}/messages/");
    document["operations"][operation]["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("operation {operation}"))
        .iter()
        .map(|r| {
            let reference = r["$ref"].as_str().unwrap();
            reference.strip_prefix(&prefix).unwrap().to_owned()
        })
        .collect()
}

/// The schema a `$ref` in the document points to.
fn resolve<'a>(document: &'a Value, reference: &str) -> &'a Value {
    let pointer = reference.strip_prefix('#').expect("a local reference");
    document
        .pointer(pointer)
        .unwrap_or_else(|| panic!("{reference} resolves"))
}

async fn asyncapi_json_is_served_like_openapi_json(backend: Backend) {
    let origin = "https://shop.example";
    let app = TestApp::spawn_with(backend, |c| c.cors_origins = vec![origin.into()]).await;

    let mut answers = Vec::new();
    for path in ["/openapi.json", "/asyncapi.json"] {
        let response = app
            .client
            .get(app.url(path))
            .header("origin", origin)
            .send()
            .await
            .unwrap();
        answers.push(response);
    }

    let [openapi, asyncapi] = &answers[..] else {
        unreachable!()
    };
    assert_eq!(asyncapi.status(), StatusCode::OK);
    for header in [
        "content-type",
        "cache-control",
        "access-control-allow-origin",
        "access-control-expose-headers",
        "vary",
    ] {
        assert_eq!(
            asyncapi.headers().get(header),
            openapi.headers().get(header),
            "{header}"
        );
    }
    assert_eq!(asyncapi.headers()["access-control-allow-origin"], origin);
    let document: Value = answers.pop().unwrap().json().await.unwrap();
    assert_eq!(document["asyncapi"], "3.0.0");
    assert_eq!(document["channels"]["websocket"]["address"], "/v1/ws");
    assert_eq!(document["channels"]["sse"]["address"], "/v1/events");
}

async fn the_document_lists_every_event_type_of_the_code_with_its_data_schema(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let document = asyncapi(&app).await;

    let sent_on_ws = operation_messages(&document, "sendEvents", "websocket");
    let sent_on_sse = operation_messages(&document, "streamEvents", "sse");
    for kind in EventType::ALL {
        let name = kind.as_str();
        let message = &document["components"]["messages"][name];
        if kind.topic() == Topic::System {
            assert!(message.is_null(), "{name} never reaches a client");
            assert!(!sent_on_ws.iter().any(|m| m == name), "{name}");
            continue;
        }
        assert!(message.is_object(), "{name} is in the document");
        for channel in ["websocket", "sse"] {
            assert!(
                document["channels"][channel]["messages"][name].is_object(),
                "{name} on {channel}"
            );
        }
        assert!(
            sent_on_ws.iter().any(|m| m == name),
            "{name} is sent on WebSocket"
        );
        assert!(
            sent_on_sse.iter().any(|m| m == name),
            "{name} is sent on SSE"
        );
        let payload = &message["payload"]["properties"];
        assert_eq!(payload["type"]["enum"], json!([name]), "{name}");
        assert_eq!(
            payload["topic"]["enum"],
            json!([kind.topic().as_str()]),
            "{name}"
        );
        for field in ["seq", "at"] {
            assert!(payload[field].is_object(), "{name} has {field}");
        }
        let data = resolve(&document, payload["data"]["$ref"].as_str().unwrap());
        assert!(
            data["properties"].is_object() || data["oneOf"].is_array(),
            "{name}: its data schema {data}"
        );
        assert!(
            message["description"]
                .as_str()
                .unwrap()
                .contains("Received by"),
            "{name} says who receives it"
        );
    }
    // The data of the events the issue names, field by field.
    let schemas = &document["components"]["schemas"];
    for (schema, field) in [
        ("StockChanged", "version"),
        ("StockChanged", "reason"),
        ("OrderChange", "previous_status"),
        ("LowStock", "low_stock_threshold"),
        ("ProductDeleted", "deleted_at"),
        ("Order", "items"),
        ("Product", "version"),
        ("Notification", "kind"),
    ] {
        assert!(
            schemas[schema]["properties"][field].is_object(),
            "{schema}.{field}"
        );
    }
}

async fn the_document_lists_every_message_error_code_and_close_code_of_the_code(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let document = asyncapi(&app).await;

    let ws = &document["channels"]["websocket"];
    let server_messages = [
        "subscribed",
        "reset",
        "unsubscribed",
        "authenticated",
        "pong",
        "error",
    ];
    for name in ClientMessage::TYPES.iter().chain(&server_messages) {
        assert!(ws["messages"][name].is_object(), "{name} on the WebSocket");
        let payload = &document["components"]["messages"][name]["payload"];
        assert_eq!(payload["properties"]["type"]["enum"], json!([name]));
    }
    // What the server receives, and what it answers each with.
    for (operation, replies) in [
        ("subscribe", &["subscribed", "reset", "error"][..]),
        ("unsubscribe", &["unsubscribed", "error"]),
        ("auth", &["authenticated", "error"]),
        ("ping", &["pong"]),
    ] {
        assert_eq!(document["operations"][operation]["action"], "receive");
        assert_eq!(
            operation_messages(&document, operation, "websocket"),
            [operation]
        );
        let answers: Vec<&str> = document["operations"][operation]["reply"]["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["$ref"].as_str().unwrap())
            .collect();
        for reply in replies {
            let reference = format!("#/channels/websocket/messages/{reply}");
            assert!(
                answers.contains(&reference.as_str()),
                "{operation}: {reply}"
            );
        }
    }
    assert_eq!(
        operation_messages(&document, "streamEvents", "sse")
            .iter()
            .filter(|m| *m == "reset")
            .count(),
        1
    );

    let error_code = resolve(
        &document,
        document["components"]["messages"]["error"]["payload"]["properties"]["code"]["$ref"]
            .as_str()
            .unwrap(),
    );
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.value()).collect();
    assert_eq!(error_code["enum"], json!(codes));
    assert_eq!(
        codes,
        [
            "bad_message",
            "unknown_type",
            "unknown_topic",
            "bad_since",
            "bad_ack",
            "invalid_token",
            "replay_failed"
        ]
    );
    for code in ErrorCode::ALL {
        let description = error_code["description"].as_str().unwrap();
        assert!(
            description.contains(&format!("`{}`: {}", code.value(), code.description())),
            "{}",
            code.value()
        );
    }

    let close_codes: Vec<u16> = CloseCode::ALL.iter().map(|c| c.value()).collect();
    assert_eq!(
        close_codes,
        [1001, 1002, 1007, 1008, 1009, 4001, 4008, 4029]
    );
    let listed = ws["x-close-codes"].as_object().unwrap();
    assert_eq!(listed.len(), close_codes.len());
    let description = ws["description"].as_str().unwrap();
    for code in CloseCode::ALL {
        let meaning = code.description();
        assert_eq!(listed[&code.value().to_string()]["description"], meaning);
        assert!(
            description.contains(&format!("| {} | {meaning} |", code.value())),
            "{} in the channel's description",
            code.value()
        );
    }

    let schemes = &document["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["ticket"]["in"], "query");
    assert_eq!(schemes["ticket"]["name"], "ticket");
    for server in ["websocket", "sse"] {
        assert_eq!(
            document["servers"][server]["security"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }
}

/// The event types of the README's table of topics (section "Live events").
fn readme_event_types() -> BTreeSet<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("the README");
    let section = readme
        .split("\n## Live events")
        .nth(1)
        .expect("a Live events section");
    let mut rows = section
        .lines()
        .skip_while(|l| !l.starts_with("| topic | event types |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .peekable();
    assert!(rows.peek().is_some(), "the table of topics");
    let mut types = BTreeSet::new();
    for row in rows {
        let cells: Vec<&str> = row.split('|').collect();
        for (i, part) in cells[2].split('`').enumerate() {
            if i % 2 == 1 {
                types.insert(part.to_owned());
            }
        }
    }
    types
}

async fn the_document_lists_every_event_type_the_readme_names(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let document = asyncapi(&app).await;

    let in_readme = readme_event_types();
    let in_document: BTreeSet<String> = operation_messages(&document, "sendEvents", "websocket")
        .into_iter()
        .collect();
    assert_eq!(in_readme, in_document);
    let in_code: BTreeSet<String> = client_event_types()
        .iter()
        .map(|t| t.as_str().to_owned())
        .collect();
    assert_eq!(in_document, in_code);
}

async fn the_document_quotes_this_servers_settings(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.sse_heartbeat = Duration::from_secs(7);
        c.max_connections_per_user = 3;
        c.ws_max_message = 4096;
    })
    .await;

    let document = asyncapi(&app).await;

    let overview = document["info"]["description"].as_str().unwrap();
    assert!(
        overview.contains("At most 3 live connections per user"),
        "{overview}"
    );
    assert!(overview.contains("at most 4096 bytes"), "{overview}");
    let sse = document["channels"]["sse"]["description"].as_str().unwrap();
    assert!(sse.contains("`: keep-alive` every 7 s"), "{sse}");
    assert!(sse.contains("`retry: 2000`"), "{sse}");
}

/// Checks messages against the document's schemas, strictly: an object schema that lists
/// its properties takes no other here (the document itself leaves objects open, so that a
/// client ignores fields added later).
struct Checker {
    root: Value,
}

impl Checker {
    fn new(document: &Value) -> Checker {
        let mut components = document["components"].clone();
        close_objects(&mut components);
        Checker {
            root: json!({"components": components}),
        }
    }

    /// Why `instance` is not a valid `name` message, if it is not.
    fn errors(&self, name: &str, instance: &Value) -> Option<String> {
        let mut schema = self.root.clone();
        schema["$ref"] = json!(format!("#/components/messages/{name}/payload"));
        assert!(
            self.root["components"]["messages"][name].is_object(),
            "{name} is a message of the document"
        );
        let validator = jsonschema::draft7::new(&schema).expect("a valid schema");
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        (!errors.is_empty()).then(|| errors.join("; "))
    }

    fn check(&self, name: &str, instance: &Value) {
        if let Some(errors) = self.errors(name, instance) {
            panic!("{instance} is not a valid {name} message: {errors}");
        }
    }
}

/// Adds `additionalProperties: false` to every object schema with `properties` that says
/// nothing of others.
fn close_objects(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.get("type") == Some(&json!("object"))
                && map.get("properties").is_some_and(Value::is_object)
                && !map.contains_key("additionalProperties")
            {
                map.insert("additionalProperties".into(), json!(false));
            }
            map.values_mut().for_each(close_objects);
        }
        Value::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
    }
}

async fn every_message_the_server_sends_is_one_the_document_describes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let document = asyncapi(&app).await;
    let checker = Checker::new(&document);
    // The checker sees a field the document does not list, and one it lacks.
    assert!(
        checker
            .errors("pong", &json!({"type": "pong", "extra": 1}))
            .is_some()
    );
    assert!(
        checker
            .errors("subscribed", &json!({"type": "subscribed", "topics": []}))
            .is_some()
    );
    let admin = app.user_with_role("admin@example.com", Role::Admin).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let ada = app.customer("ada@example.com").await;
    let all_topics = ["orders", "inventory", "notifications"];

    // Every server message but events, each answering what the client sent.
    let mut ws = app.ws(&staff.access_token).await;
    let answer = async |ws: &mut WsClient, message: Message, name: &str| {
        ws.send_raw(message).await;
        let answer = ws.next_json().await;
        assert_eq!(answer["type"], name, "{answer}");
        checker.check(name, &answer);
        answer
    };
    let text = |v: Value| Message::Text(v.to_string().into());
    answer(
        &mut ws,
        text(json!({"type": "subscribe", "topics": all_topics})),
        "subscribed",
    )
    .await;
    answer(&mut ws, text(json!({"type": "ping"})), "pong").await;
    answer(
        &mut ws,
        text(json!({"type": "auth", "token": staff.access_token})),
        "authenticated",
    )
    .await;
    for (message, code) in [
        (text(json!({"type": "teleport"})), "unknown_type"),
        (Message::Text("not json".into()), "bad_message"),
        (Message::Binary(vec![1, 2].into()), "bad_message"),
        (
            text(json!({"type": "auth", "token": "not a token"})),
            "invalid_token",
        ),
        (
            text(json!({"type": "subscribe", "topics": ["weather"]})),
            "unknown_topic",
        ),
        (
            text(json!({"type": "subscribe", "topics": ["orders"], "since": -1})),
            "bad_since",
        ),
    ] {
        let error = answer(&mut ws, message, "error").await;
        assert_eq!(error["code"], code);
    }
    let mut other = app.ws(&staff.access_token).await;
    answer(
        &mut other,
        text(json!({"type": "subscribe", "topics": ["orders"], "since": 1_000_000})),
        "reset",
    )
    .await;
    checker.check("subscribed", &other.next_json().await);
    answer(
        &mut other,
        text(json!({"type": "unsubscribe", "topics": ["orders"]})),
        "unsubscribed",
    )
    .await;

    // Every event type, made by the changes that make it.
    let tee = app.product(&staff.access_token, "TEE", 1500, 3).await;
    let tee_id = tee["id"].as_str().unwrap();
    let product = format!("/v1/products/{tee_id}");
    let patched = app
        .patch(&product, &json!({"name": "Tee"}), &staff.access_token)
        .await;
    assert_eq!(patched.status(), StatusCode::OK);
    // Threshold 2: stock 3 to 1 is low stock, and a notification to staff.
    app.adjust_stock(&staff.access_token, tee_id, -2).await;
    let notifications = app
        .get_json("/v1/notifications", Some(&staff.access_token))
        .await;
    let low = notifications["items"][0]["id"].as_str().unwrap();
    app.mark_read(&staff.access_token, low).await;
    let broadcast = app
        .post(
            "/v1/notifications/broadcast",
            &json!({"title": "Stocktake", "body": "Friday", "audience": "staff"}),
            Some(&admin.access_token),
        )
        .await;
    assert_eq!(broadcast.status(), StatusCode::CREATED);
    app.mark_all_read(&staff.access_token).await;
    let deleted = app
        .delete(&format!("/v1/notifications/{low}"), &staff.access_token)
        .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let order = app.place_order(&ada.access_token, &[(tee_id, 1)]).await;
    let order_id = order["id"].as_str().unwrap();
    app.set_status(&staff.access_token, order_id, "paid").await;
    app.cancel_order(&ada.access_token, order_id).await;
    assert_eq!(
        app.delete(&product, &staff.access_token).await.status(),
        StatusCode::NO_CONTENT
    );
    app.restore_product(&staff.access_token, tee_id).await;

    let wanted: BTreeSet<&str> = client_event_types().iter().map(|t| t.as_str()).collect();
    let mut seen = BTreeSet::new();
    let mut last = 0;
    while seen != wanted {
        let event = ws.next_event().await;
        let kind = event["type"].as_str().unwrap().to_owned();
        checker.check(&kind, &event);
        last = event["seq"].as_i64().unwrap();
        seen.insert(wanted.get(kind.as_str()).copied().expect("a known type"));
    }

    // The same over SSE, replayed from the start: `id:` is the seq, `event:` the type.
    let mut sse = app
        .sse(&staff.access_token, &all_topics.join(","), Some(0))
        .await;
    let mut seen = BTreeSet::new();
    loop {
        let event = sse.next().await.expect("the stream goes on");
        checker.check(&event.event, &event.data);
        assert_eq!(event.id, event.data["seq"].to_string());
        assert_eq!(event.event, event.data["type"]);
        seen.insert(event.event);
        if event.data["seq"] == last {
            break;
        }
    }
    assert_eq!(seen.len(), wanted.len(), "{seen:?}");
    // And a Last-Event-ID the server never handed out: `reset`.
    let mut sse = app
        .sse(&staff.access_token, "orders", Some(1_000_000))
        .await;
    let reset = sse.next().await.expect("a reset");
    assert_eq!(reset.event, "reset");
    checker.check("reset", &reset.data);
}
