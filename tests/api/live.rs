//! Live delivery over real WebSocket and SSE connections: who receives what, and resuming
//! without loss or duplicates.

use reqwest::StatusCode;
use serde_json::{Value, json};
use tidings::domain::Role;

use crate::backend_tests;
use crate::clients::{WsClient, seqs, types};
use crate::helpers::{Backend, TestApp};

backend_tests!(
    a_customer_receives_their_own_orders_and_staff_receive_all,
    notifications_reach_only_their_recipient,
    low_stock_alerts_reach_only_staff,
    a_websocket_resumes_with_exactly_the_missed_events_then_live,
    an_sse_stream_resumes_from_last_event_id_then_live,
    sse_streams_follow_the_same_audience_rules,
    sse_streams_deliver_alike_on_fresh_and_reused_connections,
    subscribed_comes_once_live_delivery_is_registered,
    unsubscribing_and_resubscribing_with_since_gets_each_event_once,
);

fn id(v: &Value) -> &str {
    v["id"].as_str().unwrap()
}

async fn a_customer_receives_their_own_orders_and_staff_receive_all(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let tee = app.product(&staff.access_token, "TEE", 100, 1000).await;
    let ada = app.customer("ada@example.com").await;
    let grace = app.customer("grace@example.com").await;
    let mut ada_ws = app.ws(&ada.access_token).await;
    let mut staff_ws = app.ws(&staff.access_token).await;
    ada_ws.subscribe(&["orders"], None).await;
    staff_ws.subscribe(&["orders"], None).await;

    let graces = app.place_order(&grace.access_token, &[(id(&tee), 1)]).await;
    let adas = app.place_order(&ada.access_token, &[(id(&tee), 2)]).await;

    // Delivery is in seq order: had Grace's order reached Ada, it would come first.
    let first = ada_ws.next_event().await;
    assert_eq!(
        (first["type"].as_str(), first["data"]["id"].as_str()),
        (Some("order.created"), adas["id"].as_str())
    );
    assert_eq!(first["topic"], "orders");
    assert_eq!(first["data"], adas);
    let seen_by_staff = [staff_ws.next_event().await, staff_ws.next_event().await];
    assert_eq!(seen_by_staff[0]["data"]["id"], graces["id"]);
    assert_eq!(seen_by_staff[1]["data"]["id"], adas["id"]);
    assert!(seen_by_staff[0]["seq"].as_i64() < seen_by_staff[1]["seq"].as_i64());
    assert!(seen_by_staff[1]["at"].as_str().unwrap().ends_with('Z'));
}

async fn notifications_reach_only_their_recipient(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.user_with_role("admin@example.com", Role::Admin).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let ada = app.customer("ada@example.com").await;
    let grace = app.customer("grace@example.com").await;
    let mut staff_ws = app.ws(&staff.access_token).await;
    let mut grace_ws = app.ws(&grace.access_token).await;
    staff_ws.subscribe(&["notifications"], None).await;
    grace_ws.subscribe(&["notifications"], None).await;

    let ada_id = app.user_id(&ada.access_token).await.to_string();
    let grace_id = app.user_id(&grace.access_token).await.to_string();
    for (who, title) in [(&ada_id, "for ada"), (&grace_id, "for grace")] {
        app.broadcast(&admin.access_token, title, "b", json!([who]))
            .await;
    }
    app.broadcast(&admin.access_token, "for staff", "b", json!("staff"))
        .await;

    let for_grace = grace_ws.next_event().await;
    assert_eq!(
        (
            for_grace["type"].as_str(),
            for_grace["data"]["title"].as_str()
        ),
        (Some("notification.created"), Some("for grace"))
    );
    // Staff see only their own notifications too: the staff broadcast, not Ada's or Grace's.
    let for_staff = staff_ws.next_event().await;
    assert_eq!(for_staff["data"]["title"], "for staff");
}

async fn low_stock_alerts_reach_only_staff(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let tee = app.product(&staff.access_token, "TEE", 100, 3).await;
    let ada = app.customer("ada@example.com").await;
    let mut ada_ws = app.ws(&ada.access_token).await;
    let mut staff_ws = app.ws(&staff.access_token).await;
    ada_ws.subscribe(&["inventory"], None).await;
    staff_ws.subscribe(&["inventory"], None).await;

    // Threshold 2: taking 2 of 3 crosses it.
    app.adjust_stock_for(&staff.access_token, id(&tee), -2, "damaged")
        .await;
    app.adjust_stock_for(&staff.access_token, id(&tee), 10, "restock")
        .await;

    let staff_saw = [
        staff_ws.next_event().await,
        staff_ws.next_event().await,
        staff_ws.next_event().await,
    ];
    assert_eq!(
        types(&staff_saw),
        [
            "inventory.stock_changed",
            "inventory.low_stock",
            "inventory.stock_changed"
        ]
    );
    let ada_saw = [ada_ws.next_event().await, ada_ws.next_event().await];
    assert_eq!(
        types(&ada_saw),
        ["inventory.stock_changed", "inventory.stock_changed"]
    );
    assert_eq!(
        (
            ada_saw[0]["data"]["delta"].as_i64(),
            ada_saw[1]["data"]["delta"].as_i64()
        ),
        (Some(-2), Some(10))
    );
}

/// Staff with a product, and a WebSocket on `inventory` that has seen one stock change of
/// it: the staff's token, the product's id, the socket and that change's seq.
async fn staff_after_one_stock_change(app: &TestApp) -> (String, String, WsClient, i64) {
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let tee = app.product(&staff.access_token, "TEE", 100, 1000).await;
    let mut ws = app.ws(&staff.access_token).await;
    ws.subscribe(&["inventory"], None).await;
    app.adjust_stock(&staff.access_token, id(&tee), 1).await;
    let last_seen = ws.next_of("inventory.stock_changed").await["seq"]
        .as_i64()
        .unwrap();
    (staff.access_token, id(&tee).to_owned(), ws, last_seen)
}

async fn a_websocket_resumes_with_exactly_the_missed_events_then_live(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (token, tee, ws, last_seen) = staff_after_one_stock_change(&app).await;
    let adjust = |delta: i64| app.adjust_stock(&token, &tee, delta);
    drop(ws);

    for delta in 2..=6 {
        adjust(delta).await;
    }
    let mut resumed = app.ws(&token).await;
    let (replayed, live_from) = resumed.subscribe(&["inventory"], Some(last_seen)).await;
    adjust(7).await;
    // What the hub had delivered when the subscription went live is replayed; anything
    // committed but not yet relayed then arrives live. Together: each missed event once.
    let mut received = replayed.clone();
    while received.last().map(|e| e["data"]["delta"].as_i64()) != Some(Some(7)) {
        received.push(resumed.next_event().await);
    }

    let deltas: Vec<i64> = received
        .iter()
        .map(|e| e["data"]["delta"].as_i64().unwrap())
        .collect();
    assert_eq!(
        deltas,
        [2, 3, 4, 5, 6, 7],
        "exactly the missed events, in order, then live"
    );
    assert!(
        seqs(&received).windows(2).all(|w| w[0] < w[1]),
        "no duplicate"
    );
    assert!(received[0]["seq"].as_i64().unwrap() > last_seen);
    assert!(
        replayed
            .iter()
            .all(|e| e["seq"].as_i64().unwrap() <= live_from)
    );
}

async fn unsubscribing_and_resubscribing_with_since_gets_each_event_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (token, tee, mut ws, last_seen) = staff_after_one_stock_change(&app).await;
    let adjust = |delta: i64| app.adjust_stock(&token, &tee, delta);

    ws.send(json!({"type": "unsubscribe", "topics": ["inventory"]}))
        .await;
    let unsubscribed = ws.next_json().await;
    assert_eq!(unsubscribed["type"], "unsubscribed", "{unsubscribed}");
    assert_eq!(unsubscribed["subscribed"], json!([]));
    adjust(2).await;
    adjust(3).await;
    let (replayed, _) = ws.subscribe(&["inventory"], Some(last_seen)).await;
    adjust(4).await;
    let mut received = replayed;
    while received.last().map(|e| e["data"]["delta"].as_i64()) != Some(Some(4)) {
        received.push(ws.next_event().await);
    }

    let deltas: Vec<i64> = received
        .iter()
        .filter(|e| e["type"] == "inventory.stock_changed")
        .map(|e| e["data"]["delta"].as_i64().unwrap())
        .collect();
    assert_eq!(
        deltas,
        [2, 3, 4],
        "nothing while unsubscribed, then each once"
    );
    assert!(seqs(&received).windows(2).all(|w| w[0] < w[1]));
}

async fn an_sse_stream_resumes_from_last_event_id_then_live(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let mut sse = app.sse(&staff.access_token, "inventory", None).await;
    let tee = app.product(&staff.access_token, "TEE", 100, 1000).await;
    let adjust = |delta: i64| app.adjust_stock(&staff.access_token, id(&tee), delta);
    assert_eq!(sse.next().await.expect("an event").event, "product.created");
    adjust(1).await;
    let first = sse.next().await.expect("an event");
    assert_eq!(first.event, "inventory.stock_changed");
    assert_eq!(first.id, first.data["seq"].to_string());
    drop(sse);

    for delta in 2..=4 {
        adjust(delta).await;
    }
    let mut resumed = app
        .sse(
            &staff.access_token,
            "inventory",
            Some(first.id.parse().unwrap()),
        )
        .await;
    let replayed = [
        resumed.next().await.unwrap(),
        resumed.next().await.unwrap(),
        resumed.next().await.unwrap(),
    ];
    adjust(5).await;
    let live = resumed.next().await.unwrap();

    let deltas: Vec<i64> = replayed
        .iter()
        .map(|e| e.data["data"]["delta"].as_i64().unwrap())
        .collect();
    assert_eq!(deltas, [2, 3, 4]);
    assert_eq!(live.data["data"]["delta"], 5);
    let ids: Vec<i64> = replayed
        .iter()
        .chain([&live])
        .map(|e| e.id.parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    // The query parameter works as the header does (for a first EventSource connection).
    let by_query = app
        .client
        .get(app.url(&format!(
            "/v1/events?topics=inventory&last_event_id={}",
            first.id
        )))
        .bearer_auth(&staff.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(by_query.status(), StatusCode::OK);
}

async fn sse_streams_follow_the_same_audience_rules(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let tee = app.product(&staff.access_token, "TEE", 100, 1000).await;
    let ada = app.customer("ada@example.com").await;
    let grace = app.customer("grace@example.com").await;
    let mut ada_sse = app
        .sse(&ada.access_token, "orders,notifications", None)
        .await;

    app.place_order(&grace.access_token, &[(id(&tee), 1)]).await;
    let adas = app.place_order(&ada.access_token, &[(id(&tee), 1)]).await;
    app.set_status(&staff.access_token, id(&adas), "paid").await;

    let got = [
        ada_sse.next().await.unwrap(),
        ada_sse.next().await.unwrap(),
        ada_sse.next().await.unwrap(),
    ];
    let events: Vec<&str> = got.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        events,
        [
            "order.created",
            "order.status_changed",
            "notification.created"
        ]
    );
    assert_eq!(got[0].data["data"]["id"], adas["id"]);
}

async fn subscribed_comes_once_live_delivery_is_registered(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let mut ws = app.ws(&staff.access_token).await;

    let (replayed, seq) = ws
        .subscribe(&["inventory", "orders", "inventory"], None)
        .await;
    // A change made right after `subscribed` is delivered: registration came first.
    let product = app.product(&staff.access_token, "TEE", 100, 5).await;
    let event = ws.next_event().await;

    assert!(replayed.is_empty());
    assert!(event["seq"].as_i64().unwrap() > seq);
    assert_eq!(
        (event["type"].as_str(), event["data"]["id"].as_str()),
        (Some("product.created"), product["id"].as_str())
    );
    ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.next_json().await, json!({"type": "pong"}));
}

async fn sse_streams_deliver_alike_on_fresh_and_reused_connections(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let tee = app.product(&staff.access_token, "TEE", 100, 1000).await;
    // From after the product's creation.
    let created = app
        .seq_of(&staff.access_token, "inventory", "product.created")
        .await;
    let query = format!("topics=inventory&last_event_id={created}");
    // A stream on a connection of its own is answered by the accept loop, and the hub
    // writes events straight to its socket; one on a connection that served a request
    // first is hyper's, and its events go through a response body.
    let socket = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let mut own = app.raw_sse(socket, &staff.access_token, &query).await;
    let mut hypers = app.sse_after_a_request(&staff.access_token, &query).await;

    for delta in [5, -3, 7, 1] {
        app.adjust_stock(&staff.access_token, id(&tee), delta).await;
    }
    let mut got = [Vec::new(), Vec::new()];
    for (stream, got) in [&mut own, &mut hypers].into_iter().zip(&mut got) {
        for _ in 0..4 {
            got.push(stream.next().await.expect("the stream goes on"));
        }
        let seqs: Vec<i64> = got
            .iter()
            .map(|e| e.data["seq"].as_i64().unwrap())
            .collect();
        assert!(seqs.windows(2).all(|w| w[1] > w[0]), "in order: {seqs:?}");
        for event in got.iter() {
            assert_eq!(event.event, "inventory.stock_changed");
            assert_eq!(event.id, event.data["seq"].to_string());
        }
    }
    // Revoking the sessions ends both streams properly.
    let revoked = app
        .post("/v1/auth/logout-all", &json!({}), Some(&staff.access_token))
        .await;
    assert!(revoked.status().is_success());
    for stream in [own, hypers] {
        let rest = stream.drain().await;
        assert!(rest.events.is_empty(), "{:?}", rest.events);
        assert!(rest.ended_cleanly, "the chunked body ends properly");
        assert_eq!(
            rest.comments.last().map(String::as_str),
            Some("session revoked")
        );
    }
    let [own, hypers] = got;
    let same = |a: &crate::clients::Sse, b: &crate::clients::Sse| {
        (&a.id, &a.event, &a.data) == (&b.id, &b.event, &b.data)
    };
    assert!(own.iter().zip(&hypers).all(|(a, b)| same(a, b)));
}
