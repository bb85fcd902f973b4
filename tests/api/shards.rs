//! The hub's fan-out shards (`TIDINGS_HUB_SHARDS`): connections spread over several
//! threads, each writing to its own. Whichever shard holds a client, it gets its events
//! once and in order; a broadcast reaches every connection of every shard; a revocation
//! reaches the connections of its user and no others. (Slow consumers: `live_faults.rs`
//! runs with several shards.)

use serde_json::{Value, json};
use tidings::domain::Role;

use crate::backend_tests;
use crate::clients::{WsClient, seqs};
use crate::helpers::{Backend, TestApp};

backend_tests!(
    every_client_gets_its_events_in_order_whichever_shard_holds_it,
    a_revocation_closes_its_users_connections_and_no_others,
);

const SHARDS: usize = 4;

/// Four shards; and no limit on logins from one address, since filling every shard may
/// take dozens of users (the limit once answered 429 here).
fn with_shards(c: &mut tidings::config::Config) {
    c.hub_shards = Some(SHARDS);
    c.auth_rate_per_ip = 0;
    c.auth_rate_per_email = 0;
}

fn id(v: &Value) -> &str {
    v["id"].as_str().unwrap()
}

/// Connections per shard, from `/metrics`.
async fn per_shard(app: &TestApp) -> Vec<f64> {
    let text = app.metrics().await.text().await.unwrap();
    (0..SHARDS)
        .map(|shard| {
            let name = format!("tidings_hub_shard_connections{{shard=\"{shard}\"}} ");
            text.lines()
                .find_map(|line| line.strip_prefix(&name))
                .unwrap_or_else(|| panic!("{name} is in /metrics"))
                .parse()
                .unwrap()
        })
        .collect()
}

/// Customers, each with a WebSocket subscribed to orders and inventory, added until every
/// shard holds at least one (users are placed by a hash of their id: a handful usually
/// does it, and 64 make a shard left empty all but impossible).
async fn customers_on_every_shard(app: &TestApp) -> Vec<(String, WsClient)> {
    let mut customers = Vec::new();
    for n in 0..64 {
        let tokens = app.customer(&format!("customer{n}@example.com")).await;
        let mut ws = app.ws(&tokens.access_token).await;
        ws.subscribe(&["orders", "inventory"], None).await;
        customers.push((tokens.access_token, ws));
        if customers.len() >= SHARDS && per_shard(app).await.iter().all(|c| *c > 0.0) {
            return customers;
        }
    }
    panic!("64 users left a shard empty: {:?}", per_shard(app).await);
}

async fn every_client_gets_its_events_in_order_whichever_shard_holds_it(backend: Backend) {
    let app = TestApp::spawn_with(backend, with_shards).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let tee = app.product(&staff.access_token, "TEE", 100, 100_000).await;
    let mut customers = customers_on_every_shard(&app).await;
    let mut staff_ws = app.ws(&staff.access_token).await;
    staff_ws.subscribe(&["orders", "inventory"], None).await;

    // Each customer orders twice, interleaved with broadcasts (stock changes for everyone):
    // every shard is handed runs that mix its users' events with others'.
    let mut orders: Vec<Vec<String>> = vec![Vec::new(); customers.len()];
    for round in 0..2 {
        for (i, (token, _)) in customers.iter().enumerate() {
            let order = app.place_order(token, &[(id(&tee), 1)]).await;
            orders[i].push(order["id"].as_str().unwrap().to_owned());
        }
        app.adjust_stock_for(
            &staff.access_token,
            id(&tee),
            5,
            &format!("restock {round}"),
        )
        .await;
    }
    // Each order takes stock (a stock change for everyone), and each round ends with a
    // restock: the inventory events every connection gets.
    let stock_changes = 2 * customers.len() + 2;

    for (i, (_, ws)) in customers.iter_mut().enumerate() {
        let mut events = Vec::new();
        while events
            .iter()
            .filter(|e: &&Value| e["topic"] == "inventory")
            .count()
            < stock_changes
        {
            events.push(ws.next_event().await);
        }
        let seen = seqs(&events);
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "customer {i} got its events out of order or twice: {seen:?}"
        );
        let own: Vec<&str> = events
            .iter()
            .filter(|e| e["type"] == "order.created")
            .map(|e| e["data"]["id"].as_str().unwrap())
            .collect();
        assert_eq!(own, orders[i], "customer {i} got exactly its own orders");
    }
    // Staff (on whichever shard) get every order and every stock change, in order.
    let total = stock_changes + 2 * customers.len();
    let mut seen = Vec::new();
    for _ in 0..total {
        seen.push(staff_ws.next_event().await);
    }
    let seen = seqs(&seen);
    assert!(seen.windows(2).all(|w| w[0] + 1 == w[1]), "{seen:?}");
}

async fn a_revocation_closes_its_users_connections_and_no_others(backend: Backend) {
    let app = TestApp::spawn_with(backend, with_shards).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let tee = app.product(&staff.access_token, "TEE", 100, 1000).await;
    let mut customers = customers_on_every_shard(&app).await;
    // The first customer opens a second connection (on the same shard as the first).
    let (revoked_token, _) = &customers[0];
    let revoked_token = revoked_token.clone();
    let mut second = app.ws(&revoked_token).await;
    second.subscribe(&["inventory"], None).await;

    let out = app
        .post("/v1/auth/logout-all", &json!({}), Some(&revoked_token))
        .await;
    assert!(out.status().is_success(), "{}", out.status());
    for ws in [&mut customers[0].1, &mut second] {
        let (_, code) = ws.drain_until_closed().await;
        assert_eq!(code, Some(4001));
    }
    // Every other connection, on every shard, stays open and live.
    app.adjust_stock_for(&staff.access_token, id(&tee), 1, "after the revocation")
        .await;
    for (_, ws) in &mut customers[1..] {
        let event = ws.next_of("inventory.stock_changed").await;
        assert_eq!(event["data"]["reason"], "after the revocation");
    }
}
