//! The partitioned bus (`TIDINGS_BUS_PARTITIONS` > 0), on a Redis Cluster of the test's own
//! and on the single Redis of `TEST_REDIS_URL`: per-user events reach only the instances
//! holding their user, broadcasts reach all, and every client gets every event once, in
//! order, across messages lost on purpose, a master killed during writes, a user
//! connecting on an instance that did not follow their lane, and a lane dropped after its
//! last user left.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tidings::domain::Role;
use tidings::events::bus::{lane_channel, partition_of};

use crate::clients::{WsClient, eventually, seqs};
use crate::helpers::{Backend, TestApp, Tokens};
use crate::postgres_tests;
use crate::redis_cluster::RedisCluster;

postgres_tests!(
    per_user_events_reach_only_the_instances_holding_their_user,
    messages_lost_on_purpose_are_read_from_the_database_once_in_order,
    messages_lost_on_purpose_on_one_redis_are_read_from_the_database_once_in_order,
    a_master_killed_during_partitioned_writes_loses_and_repeats_nothing,
    a_user_connecting_where_their_lane_was_not_followed_misses_nothing_on_one_redis,
    a_foreign_clock_on_the_bus_does_not_stall_delivery,
    a_lane_is_dropped_after_its_last_user_left_and_followed_again_on_their_return,
    a_lane_is_dropped_after_its_last_user_left_on_a_redis_cluster,
);

/// The lanes of the tests' users.
const PARTITIONS: u32 = 8;

/// How long a cluster may take to form, or to notice a change.
const PATIENCE: Duration = Duration::from_secs(60);

fn id(v: &Value) -> &str {
    v["id"].as_str().unwrap()
}

/// An app with a partitioned bus on `redis_url` (the test's default Redis if `None`), with
/// no safety-net polls: only the bus, or a gap it shows, delivers.
async fn app_with_lanes(redis_url: Option<String>, backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |c| {
        if let Some(url) = redis_url {
            c.redis_url = Some(url);
        }
        c.bus_partitions = PARTITIONS;
        c.relay_poll = Duration::from_secs(3600);
    })
    .await
}

/// Waits until the app's bus is up.
async fn wait_up(app: &TestApp) {
    eventually(PATIENCE, || async {
        let ready: Value = app.get("/readyz", None).await.json().await.unwrap();
        if ready["checks"]["bus"]["status"] == "up" {
            Ok(())
        } else {
            Err(format!("the bus did not come up: {ready}"))
        }
    })
    .await
}

/// A counter of the app's `/metrics`.
async fn counter(app: &TestApp, name: &str) -> u64 {
    let metrics = app.metrics().await.text().await.unwrap();
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("the metrics have {name}"))
}

async fn user_lane_events(app: &TestApp) -> u64 {
    counter(app, "tidings_hub_user_lane_events_total").await
}

/// Customers with ids in different lanes, one per email, none in the lane of `besides`
/// (a user whose connection makes an instance follow their lane too).
async fn customers_in_different_lanes(
    app: &TestApp,
    emails: &[&str],
    besides: &Tokens,
) -> Vec<Tokens> {
    let taken = partition_of(app.user_id(&besides.access_token).await, PARTITIONS);
    let mut found: Vec<(Tokens, u32)> = Vec::new();
    let mut n = 0;
    for email in emails {
        loop {
            n += 1;
            let tokens = app.customer(&format!("{n}.{email}")).await;
            let lane = partition_of(app.user_id(&tokens.access_token).await, PARTITIONS);
            if lane != taken && found.iter().all(|(_, other)| *other != lane) {
                found.push((tokens, lane));
                break;
            }
        }
    }
    found.into_iter().map(|(tokens, _)| tokens).collect()
}

/// Events from `client` until `done` says enough; fails on one of a kind not expected.
async fn until(client: &mut WsClient, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut received = Vec::new();
    while !done(&received) {
        received.push(client.next_event().await);
    }
    received
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

fn deltas(events: &[Value]) -> Vec<i64> {
    of_type(events, "inventory.stock_changed")
        .iter()
        .map(|e| e["data"]["delta"].as_i64().unwrap())
        .collect()
}

fn assert_once_in_order(events: &[Value]) {
    let all = seqs(events);
    assert!(
        all.windows(2).all(|w| w[0] < w[1]),
        "each once, in seq order: {all:?}"
    );
}

async fn per_user_events_reach_only_the_instances_holding_their_user(backend: Backend) {
    let cluster = RedisCluster::start(3, 0).await;
    let a = app_with_lanes(Some(cluster.url()), backend).await;
    let b = a.another_instance().await;
    let c = a.another_instance().await;
    for app in [&a, &b, &c] {
        wait_up(app).await;
    }
    let staff = a.user_with_role("staff@example.com", Role::Staff).await;
    let tee = a.product(&staff.access_token, "TEE", 100, 1000).await;
    let [ada, bob] = <[Tokens; 2]>::try_from(
        customers_in_different_lanes(&a, &["ada@example.com", "bob@example.com"], &staff).await,
    )
    .ok()
    .unwrap();
    // Ada on a, Bob on b, staff on c.
    let mut ada_ws = a.ws(&ada.access_token).await;
    ada_ws.subscribe(&["orders", "inventory"], None).await;
    let mut bob_ws = b.ws(&bob.access_token).await;
    bob_ws.subscribe(&["orders", "inventory"], None).await;
    let mut staff_ws = c.ws(&staff.access_token).await;
    staff_ws.subscribe(&["orders"], None).await;
    let before = [
        user_lane_events(&a).await,
        user_lane_events(&b).await,
        user_lane_events(&c).await,
    ];

    // Ada orders through every instance; each order also changes the stock (a broadcast).
    let mut placed = Vec::new();
    for app in [&a, &b, &c, &a, &b, &c] {
        placed.push(app.place_order(&ada.access_token, &[(id(&tee), 1)]).await);
    }
    let orders = |events: &[Value]| of_type(events, "order.created").len();
    let at_ada = until(&mut ada_ws, |e| orders(e) == 6 && deltas(e).len() == 6).await;
    let at_staff = until(&mut staff_ws, |e| orders(e) == 6).await;
    let at_bob = until(&mut bob_ws, |e| deltas(e).len() == 6).await;

    for events in [&at_ada, &at_staff] {
        let ids: Vec<&str> = of_type(events, "order.created")
            .iter()
            .map(|e| id(&e["data"]))
            .collect();
        assert_eq!(ids, placed.iter().map(id).collect::<Vec<_>>());
        assert_once_in_order(events);
    }
    assert_eq!(deltas(&at_bob), [-1; 6], "the broadcast reached b");
    assert_eq!(orders(&at_bob), 0, "Ada's orders are not Bob's");
    assert_once_in_order(&at_bob);
    let after = [
        user_lane_events(&a).await,
        user_lane_events(&b).await,
        user_lane_events(&c).await,
    ];
    assert!(after[0] - before[0] >= 6, "a follows Ada's lane: {after:?}");
    assert_eq!(after[1], before[1], "b (Bob's lane only) got none of Ada's");
    assert_eq!(
        after[2], before[2],
        "c (staff) follows neither Ada's lane nor Bob's"
    );
}

async fn messages_lost_on_purpose_are_read_from_the_database_once_in_order(backend: Backend) {
    let cluster = RedisCluster::start(3, 0).await;
    messages_lost_on_purpose(app_with_lanes(Some(cluster.url()), backend).await).await;
}

async fn messages_lost_on_purpose_on_one_redis_are_read_from_the_database_once_in_order(
    backend: Backend,
) {
    let a = app_with_lanes(None, backend).await;
    if a.config.redis_url.is_some() {
        messages_lost_on_purpose(a).await;
    }
}

/// Writes through `a` and another instance, with the relay's messages lost on purpose.
async fn messages_lost_on_purpose(a: TestApp) {
    let b = a.another_instance().await;
    wait_up(&a).await;
    wait_up(&b).await;
    let staff = a.user_with_role("staff@example.com", Role::Staff).await;
    let tee = a.product(&staff.access_token, "TEE", 100, 1000).await;
    let ada = a.customer("ada@example.com").await;
    let mut staff_ws = a.ws(&staff.access_token).await;
    staff_ws.subscribe(&["inventory", "orders"], None).await;
    let mut ada_ws = b.ws(&ada.access_token).await;
    ada_ws.subscribe(&["inventory", "orders"], None).await;
    let reads_before = counter(&b, "tidings_hub_catch_up_reads_total").await;

    // Each write is one batch; the relay (whichever instance leads) loses some of its
    // messages: a data message, a clock, every message of an order's batch.
    for delta in 1..=12i64 {
        for app in [&a, &b] {
            let faults = &app.state.realtime.bus_faults;
            match delta % 4 {
                0 => faults.drop_next_data(1),
                1 => faults.drop_next_clocks(1),
                2 => {
                    faults.drop_next_data(3);
                    faults.drop_next_clocks(1);
                }
                _ => {}
            }
        }
        if delta % 4 == 2 {
            a.place_order(&ada.access_token, &[(id(&tee), 1)]).await;
        }
        assert_eq!(
            a.adjust_stock(&staff.access_token, id(&tee), delta)
                .await
                .status(),
            StatusCode::OK
        );
    }
    let positive = |e: &[Value]| deltas(e).iter().filter(|d| **d > 0).count() == 12;
    let at_staff = until(&mut staff_ws, positive).await;
    let at_ada = until(&mut ada_ws, positive).await;

    for events in [&at_staff, &at_ada] {
        let added: Vec<i64> = deltas(events).into_iter().filter(|d| *d > 0).collect();
        assert_eq!(added, (1..=12).collect::<Vec<_>>());
        assert_eq!(of_type(events, "order.created").len(), 3);
        assert_once_in_order(events);
    }
    assert!(
        counter(&b, "tidings_hub_catch_up_reads_total").await > reads_before,
        "what was lost was read from the database"
    );
}

async fn a_master_killed_during_partitioned_writes_loses_and_repeats_nothing(backend: Backend) {
    let mut cluster = RedisCluster::start(3, 0).await;
    let a = app_with_lanes(Some(cluster.url()), backend).await;
    let b = a.another_instance().await;
    wait_up(&a).await;
    wait_up(&b).await;
    let staff = a.user_with_role("staff@example.com", Role::Staff).await;
    let tee = a.product(&staff.access_token, "TEE", 100, 1000).await;
    let ada = a.customer("ada@example.com").await;
    let mut staff_ws = a.ws(&staff.access_token).await;
    staff_ws.subscribe(&["inventory", "orders"], None).await;
    let mut ada_ws = b.ws(&ada.access_token).await;
    ada_ws.subscribe(&["inventory", "orders"], None).await;
    let lane = format!(
        "u:{}",
        partition_of(a.user_id(&ada.access_token).await, PARTITIONS)
    );
    let owner = cluster
        .master_of(&lane_channel(&a.config.redis_channel, &lane), 0)
        .await
        .expect("a master");

    // Ada's orders through both instances, with her lane's master killed midway.
    let writes = {
        let (a_url, b_url) = (a.url(""), b.url(""));
        let (token, product) = (ada.access_token.clone(), id(&tee).to_owned());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            for n in 0..30 {
                let base = if n % 2 == 0 { &a_url } else { &b_url };
                let response = client
                    .post(format!("{base}/v1/orders"))
                    .bearer_auth(&token)
                    .json(&serde_json::json!({"items": [{"product_id": product, "quantity": 1}]}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::CREATED);
            }
        })
    };
    let orders = |events: &[Value]| of_type(events, "order.created").len();
    let mut at_ada = until(&mut ada_ws, |e| orders(e) >= 8).await;
    cluster.kill(owner).await;
    writes.await.unwrap();
    // Each order's batch holds its stock change too.
    let (ada_orders, ada_deltas) = (orders(&at_ada), deltas(&at_ada).len());
    at_ada.extend(
        until(&mut ada_ws, |e| {
            orders(e) + ada_orders == 30 && deltas(e).len() + ada_deltas == 30
        })
        .await,
    );
    let at_staff = until(&mut staff_ws, |e| orders(e) == 30 && deltas(e).len() == 30).await;

    for events in [&at_ada, &at_staff] {
        assert_eq!(orders(events), 30);
        assert_eq!(deltas(events), [-1; 30]);
        assert_once_in_order(events);
    }
    cluster.run(owner).await;
    cluster.wait_until_ok().await;
}

async fn a_user_connecting_where_their_lane_was_not_followed_misses_nothing_on_one_redis(
    backend: Backend,
) {
    // The test's default Redis: one node, classic pub/sub.
    let a = app_with_lanes(None, backend).await;
    if a.config.redis_url.is_none() {
        return;
    }
    let b = a.another_instance().await;
    wait_up(&a).await;
    wait_up(&b).await;
    let staff = a.user_with_role("staff@example.com", Role::Staff).await;
    let tee = a.product(&staff.access_token, "TEE", 100, 1000).await;
    let ada = a.customer("ada@example.com").await;
    let mut on_a = a.ws(&ada.access_token).await;
    on_a.subscribe(&["orders"], None).await;

    // A stream of Ada's orders; midway she connects on b, which holds nobody of her lane,
    // resuming from before the stream.
    let writes = {
        let a_url = a.url("");
        let (token, product) = (ada.access_token.clone(), id(&tee).to_owned());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            for _ in 0..30 {
                let response = client
                    .post(format!("{a_url}/v1/orders"))
                    .bearer_auth(&token)
                    .json(&serde_json::json!({"items": [{"product_id": product, "quantity": 1}]}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::CREATED);
            }
        })
    };
    let mut at_a = until(&mut on_a, |e| e.len() == 10).await;
    let since = at_a[0]["seq"].as_i64().unwrap() - 1;
    let mut on_b = b.ws(&ada.access_token).await;
    let (mut at_b, _) = on_b.subscribe(&["orders"], Some(since)).await;
    writes.await.unwrap();
    at_a.extend(until(&mut on_a, |e| e.len() == 20).await);
    let live = until(&mut on_b, |e| e.len() + at_b.len() == 30).await;
    at_b.extend(live);

    assert_eq!(seqs(&at_b), seqs(&at_a), "on b, every event once, in order");
    assert_once_in_order(&at_b);
}

async fn a_foreign_clock_on_the_bus_does_not_stall_delivery(backend: Backend) {
    let app = app_with_lanes(None, backend).await;
    let Some(url) = app.config.redis_url.clone() else {
        return;
    };
    wait_up(&app).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let mut ws = app.ws(&staff.access_token).await;
    ws.subscribe(&["inventory"], None).await;

    // A clock and data of seqs this database never had, as another deployment on the same
    // channels would send.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let base = &app.config.redis_channel;
    let foreign = [
        (
            "all",
            r#"{"d":{"f":999990,"u":999999,"c":"all","n":{"all":1},"p":[],"e":[]}}"#,
        ),
        ("clock", r#"{"k":{"u":999999,"p":[]}}"#),
    ];
    for (lane, payload) in foreign {
        let receivers: i64 = redis::cmd("PUBLISH")
            .arg(lane_channel(base, lane))
            .arg(payload)
            .query_async(&mut connection)
            .await
            .unwrap();
        assert_eq!(receivers, 1, "the instance follows {lane}");
    }
    let product = app.product(&staff.access_token, "TEE", 100, 5).await;

    assert_eq!(
        ws.next_event().await["data"]["id"],
        product["id"],
        "the foreign batch is dropped, real ones flow"
    );
    let before = counter(&app, "tidings_hub_catch_up_reads_total").await;
    let second = app.product(&staff.access_token, "MUG", 100, 5).await;
    assert_eq!(ws.next_event().await["data"]["id"], second["id"]);
    let reads = counter(&app, "tidings_hub_catch_up_reads_total").await - before;
    assert!(reads < 5, "{reads} database reads for one event");
}

/// How long the lane tests keep a lane nobody holds.
const LINGER: Duration = Duration::from_millis(300);

/// Where a test's bus runs, to ask it who subscribes to a channel.
enum Redis<'a> {
    One(String),
    Cluster(&'a RedisCluster),
}

impl Redis<'_> {
    /// Connections subscribed to `channel` (on a cluster, on the master of its slot).
    async fn subscribers(&self, channel: &str) -> i64 {
        match self {
            Redis::One(url) => {
                let client = redis::Client::open(url.as_str()).unwrap();
                let mut connection = client.get_multiplexed_async_connection().await.unwrap();
                let (_, n): (String, i64) = redis::cmd("PUBSUB")
                    .arg("NUMSUB")
                    .arg(channel)
                    .query_async(&mut connection)
                    .await
                    .unwrap();
                n
            }
            Redis::Cluster(cluster) => {
                let master = cluster.master_of(channel, 0).await.expect("a master");
                cluster.shard_subscribers(master, channel).await
            }
        }
    }
}

/// The channel of the lane of the user of `tokens`.
async fn lane_of(app: &TestApp, tokens: &Tokens) -> String {
    let lane = format!(
        "u:{}",
        partition_of(app.user_id(&tokens.access_token).await, PARTITIONS)
    );
    lane_channel(&app.config.redis_channel, &lane)
}

/// Waits until `app` follows `lanes` lanes (`tidings_hub_lanes_followed`).
async fn wait_lanes(app: &TestApp, lanes: u64) {
    eventually(PATIENCE, || async {
        match counter(app, "tidings_hub_lanes_followed").await {
            followed if followed == lanes => Ok(()),
            followed => Err(format!("{followed} lanes followed, not {lanes}")),
        }
    })
    .await
}

/// Waits until `channel` has `n` subscribers.
async fn wait_subscribers(redis: &Redis<'_>, channel: &str, n: i64) {
    eventually(PATIENCE, || async {
        match redis.subscribers(channel).await {
            subscribers if subscribers == n => Ok(()),
            subscribers => Err(format!("{channel} has {subscribers} subscribers, not {n}")),
        }
    })
    .await
}

async fn a_lane_is_dropped_after_its_last_user_left_and_followed_again_on_their_return(
    backend: Backend,
) {
    let app = app_with_short_linger(None, backend).await;
    if let Some(url) = app.config.redis_url.clone() {
        a_lane_dropped_and_followed_again(app, Redis::One(url)).await;
    }
}

async fn a_lane_is_dropped_after_its_last_user_left_on_a_redis_cluster(backend: Backend) {
    let cluster = RedisCluster::start(3, 0).await;
    let app = app_with_short_linger(Some(cluster.url()), backend).await;
    a_lane_dropped_and_followed_again(app, Redis::Cluster(&cluster)).await;
}

/// An app with lanes (see [`app_with_lanes`]) that drops a lane [`LINGER`] after its last
/// user left.
async fn app_with_short_linger(redis_url: Option<String>, backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |c| {
        if let Some(url) = redis_url {
            c.redis_url = Some(url);
        }
        c.bus_partitions = PARTITIONS;
        c.bus_lane_linger = LINGER;
        c.relay_poll = Duration::from_secs(3600);
    })
    .await
}

/// Ada leaves `app`, her lane is dropped, her orders are placed while she is away, and she
/// comes back resuming from her last event; Bob, of another lane, stays throughout.
async fn a_lane_dropped_and_followed_again(app: TestApp, redis: Redis<'_>) {
    wait_up(&app).await;
    let staff = app.user_with_role("staff@example.com", Role::Staff).await;
    let tee = app.product(&staff.access_token, "TEE", 100, 1000).await;
    let [ada, bob] = <[Tokens; 2]>::try_from(
        customers_in_different_lanes(&app, &["ada@example.com", "bob@example.com"], &staff).await,
    )
    .ok()
    .unwrap();
    let (ada_lane, bob_lane) = (lane_of(&app, &ada).await, lane_of(&app, &bob).await);
    let mut bob_ws = app.ws(&bob.access_token).await;
    bob_ws.subscribe(&["orders"], None).await;
    let mut ada_ws = app.ws(&ada.access_token).await;
    ada_ws.subscribe(&["orders"], None).await;
    // `all`, Bob's lane and Ada's.
    wait_lanes(&app, 3).await;
    wait_subscribers(&redis, &ada_lane, 1).await;
    app.place_order(&ada.access_token, &[(id(&tee), 1)]).await;
    let last_seen = ada_ws.next_of("order.created").await["seq"]
        .as_i64()
        .unwrap();
    let mut bob_orders = vec![app.place_order(&bob.access_token, &[(id(&tee), 1)]).await];

    // Ada leaves: after the linger her lane is no longer followed, Bob's is.
    drop(ada_ws);
    wait_lanes(&app, 2).await;
    wait_subscribers(&redis, &ada_lane, 0).await;
    assert_eq!(redis.subscribers(&bob_lane).await, 1);
    // Her orders while she is away, Bob's among them.
    let mut missed = Vec::new();
    for _ in 0..3 {
        missed.push(app.place_order(&ada.access_token, &[(id(&tee), 1)]).await);
        bob_orders.push(app.place_order(&bob.access_token, &[(id(&tee), 1)]).await);
    }

    // Back, resuming after the last event she saw.
    let mut ada_ws = app.ws(&ada.access_token).await;
    let (replayed, _) = ada_ws.subscribe(&["orders"], Some(last_seen)).await;
    wait_subscribers(&redis, &ada_lane, 1).await;
    let live = app.place_order(&ada.access_token, &[(id(&tee), 1)]).await;
    bob_orders.push(app.place_order(&bob.access_token, &[(id(&tee), 1)]).await);
    let replayed_orders = of_type(&replayed, "order.created").len();
    let mut at_ada = replayed;
    at_ada.extend(
        until(&mut ada_ws, |e| {
            replayed_orders + of_type(e, "order.created").len() == 4
        })
        .await,
    );

    let ids = |events: &[Value]| -> Vec<String> {
        of_type(events, "order.created")
            .iter()
            .map(|e| id(&e["data"]).to_owned())
            .collect()
    };
    let mut expected: Vec<String> = missed.iter().map(|o| id(o).to_owned()).collect();
    expected.push(id(&live).to_owned());
    assert_eq!(
        ids(&at_ada),
        expected,
        "the missed orders, then the live one"
    );
    assert_once_in_order(&at_ada);
    assert!(seqs(&at_ada)[0] > last_seen);
    let at_bob = until(&mut bob_ws, |e| of_type(e, "order.created").len() == 5).await;
    assert_eq!(
        ids(&at_bob),
        bob_orders
            .iter()
            .map(|o| id(o).to_owned())
            .collect::<Vec<_>>(),
        "Bob's orders, none missed, none of Ada's"
    );
    assert_once_in_order(&at_bob);
    wait_lanes(&app, 3).await;
}
