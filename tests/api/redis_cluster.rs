//! The bus on a Redis Cluster of the test's own (sharded pub/sub): instances on it deliver
//! through the bus, a master that dies loses and repeats nothing, and the subscriber
//! follows a failover to the new master.

use std::process::Stdio;
use std::time::Duration;

use redis::Value as RedisValue;
use reqwest::StatusCode;
use serde_json::Value;
use tidings::config::Config;
use tidings::domain::Role;
use tidings::events::Event;
use tidings::events::bus::cluster::key_slot;
use tidings::events::bus::{Bus, Message, partition_channel};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clients::{WsClient, seqs};
use crate::helpers::{Backend, TestApp};
use crate::postgres_tests;

postgres_tests!(
    instances_on_a_redis_cluster_deliver_through_sharded_pub_sub,
    a_master_killed_during_writes_loses_and_repeats_nothing,
    the_subscriber_follows_a_failover_to_the_new_master,
    the_subscriber_follows_its_channels_slot_to_another_master,
    a_frozen_master_is_noticed_and_events_come_from_the_database_until_it_answers,
    partition_channels_added_at_runtime_spread_over_the_masters,
    instances_started_before_their_cluster_deliver_once_it_is_up,
    a_single_redis_follows_channels_added_and_removed_at_runtime,
);

/// How long a cluster may take to form, or to notice a change.
const CLUSTER_PATIENCE: Duration = Duration::from_secs(60);

/// A port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `redis-server` of the cluster.
struct Node {
    port: u16,
    bus_port: u16,
    child: Option<Child>,
}

/// A Redis Cluster on free ports: its masters, and a replica of each if asked; every
/// process is killed when it is dropped.
pub(crate) struct RedisCluster {
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
}

impl RedisCluster {
    /// `masters` masters, each with `replicas` replicas, and every node agreeing that the
    /// cluster is ok.
    pub(crate) async fn start(masters: usize, replicas: usize) -> RedisCluster {
        let mut cluster = RedisCluster::planned(masters * (1 + replicas));
        cluster.create(replicas).await;
        cluster
    }

    /// `nodes` free ports, with nothing running on them yet.
    fn planned(nodes: usize) -> RedisCluster {
        RedisCluster {
            dir: tempfile::tempdir().unwrap(),
            nodes: (0..nodes)
                .map(|_| Node {
                    port: free_port(),
                    bus_port: free_port(),
                    child: None,
                })
                .collect(),
        }
    }

    /// Starts every node and makes them a cluster, `replicas` replicas per master.
    async fn create(&mut self, replicas: usize) {
        for i in 0..self.nodes.len() {
            self.run(i).await;
        }
        let mut create = std::process::Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &self.nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null());
        let status = tokio::task::spawn_blocking(move || create.status())
            .await
            .unwrap()
            .expect(
                "redis-cli runs (apt-get install redis-tools, or redis-server, which brings it)",
            );
        assert!(status.success(), "redis-cli --cluster create failed");
        self.wait_until_ok().await;
    }

    /// Starts node `i` (again), on its port and with its cluster configuration file, so a
    /// node restarted comes back as the cluster knew it.
    pub(crate) async fn run(&mut self, i: usize) {
        let node = &self.nodes[i];
        let child = Command::new("redis-server")
            .args([
                "--port",
                &node.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &node.bus_port.to_string(),
                "--cluster-config-file",
                &self
                    .dir
                    .path()
                    .join(format!("nodes-{}.conf", node.port))
                    .to_string_lossy(),
                // Fast failure detection, so that a failover happens within the test.
                "--cluster-node-timeout",
                "2000",
                "--dir",
                &self.dir.path().to_string_lossy(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server runs (apt-get install redis-server)");
        let client = redis::Client::open(self.node_url(i)).unwrap();
        let deadline = Instant::now() + CLUSTER_PATIENCE;
        while client.get_multiplexed_async_connection().await.is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on {}",
                node.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.nodes[i].child = Some(child);
    }

    fn node_url(&self, i: usize) -> String {
        format!("redis://127.0.0.1:{}", self.nodes[i].port)
    }

    /// Every node, as `REDIS_URL` lists a cluster's nodes.
    pub(crate) fn url(&self) -> String {
        (0..self.nodes.len())
            .map(|i| self.node_url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A query to node `i`.
    async fn query(&self, i: usize, command: &redis::Cmd) -> redis::RedisResult<RedisValue> {
        let client = redis::Client::open(self.node_url(i))?;
        let mut connection = client.get_multiplexed_async_connection().await?;
        command.query_async(&mut connection).await
    }

    /// Waits until every running node says `cluster_state:ok`.
    pub(crate) async fn wait_until_ok(&self) {
        let deadline = Instant::now() + CLUSTER_PATIENCE;
        loop {
            let mut ok = true;
            for i in self.running() {
                let info = self.query(i, redis::cmd("CLUSTER").arg("INFO")).await;
                let state = match info {
                    Ok(RedisValue::BulkString(text)) => {
                        String::from_utf8_lossy(&text).contains("cluster_state:ok")
                    }
                    Ok(RedisValue::VerbatimString { text, .. }) => {
                        text.contains("cluster_state:ok")
                    }
                    _ => false,
                };
                ok &= state;
            }
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "the cluster did not become ok");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].child.is_some())
            .collect()
    }

    /// The node that is the master of `channel`'s slot, as node `asked` sees it.
    pub(crate) async fn master_of(&self, channel: &str, asked: usize) -> Option<usize> {
        let slot = i64::from(key_slot(channel.as_bytes()));
        let slots = self
            .query(asked, redis::cmd("CLUSTER").arg("SLOTS"))
            .await
            .ok()?;
        let RedisValue::Array(ranges) = slots else {
            return None;
        };
        ranges.iter().find_map(|range| match range {
            RedisValue::Array(range) => match (&range[0], &range[1], &range[2]) {
                (RedisValue::Int(start), RedisValue::Int(end), RedisValue::Array(master))
                    if (*start..=*end).contains(&slot) =>
                {
                    let RedisValue::Int(port) = master[1] else {
                        return None;
                    };
                    self.nodes.iter().position(|n| i64::from(n.port) == port)
                }
                _ => None,
            },
            _ => None,
        })
    }

    /// How many connections are subscribed to the sharded channel on node `i`.
    pub(crate) async fn shard_subscribers(&self, i: usize, channel: &str) -> i64 {
        let answer = self
            .query(i, redis::cmd("PUBSUB").arg("SHARDNUMSUB").arg(channel))
            .await
            .unwrap();
        match answer {
            RedisValue::Array(pair) => match pair.get(1) {
                Some(RedisValue::Int(n)) => *n,
                _ => panic!("PUBSUB SHARDNUMSUB answered {pair:?}"),
            },
            RedisValue::Map(pairs) => match pairs.first() {
                Some((_, RedisValue::Int(n))) => *n,
                _ => panic!("PUBSUB SHARDNUMSUB answered {pairs:?}"),
            },
            other => panic!("PUBSUB SHARDNUMSUB answered {other:?}"),
        }
    }

    /// Node `i`'s cluster id.
    async fn id(&self, i: usize) -> String {
        match self
            .query(i, redis::cmd("CLUSTER").arg("MYID"))
            .await
            .unwrap()
        {
            RedisValue::BulkString(id) => String::from_utf8(id).unwrap(),
            other => panic!("CLUSTER MYID answered {other:?}"),
        }
    }

    /// Moves an empty slot from master `from` to master `to`, as `redis-cli --cluster
    /// reshard` does (importing, migrating, then the new owner told to every master).
    async fn move_slot(&self, slot: u16, from: usize, to: usize) {
        let (from_id, to_id) = (self.id(from).await, self.id(to).await);
        let setslot = |state: &str, id: &str| {
            let mut command = redis::cmd("CLUSTER");
            command.arg("SETSLOT").arg(slot).arg(state).arg(id);
            command
        };
        for (node, command) in [
            (to, setslot("IMPORTING", &from_id)),
            (from, setslot("MIGRATING", &to_id)),
            (to, setslot("NODE", &to_id)),
            (from, setslot("NODE", &to_id)),
        ] {
            assert_eq!(
                self.query(node, &command).await.unwrap(),
                RedisValue::Okay,
                "{command:?} on {node}"
            );
        }
        for node in self.running() {
            if node != from && node != to {
                let _ = self.query(node, &setslot("NODE", &to_id)).await;
            }
        }
    }

    /// Stops node `i` (SIGSTOP, `-CONT` to go on): its connections stay open and nothing
    /// answers, as with a node that hangs.
    fn signal(&self, i: usize, signal: &str) {
        let pid = self.nodes[i]
            .child
            .as_ref()
            .and_then(Child::id)
            .expect("running");
        let status = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Kills node `i` (SIGKILL): its connections close at once.
    pub(crate) async fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            child.kill().await.unwrap();
        }
    }
}

fn id(v: &Value) -> &str {
    v["id"].as_str().unwrap()
}

fn deltas(events: &[Value]) -> Vec<i64> {
    events
        .iter()
        .filter(|e| e["type"] == "inventory.stock_changed")
        .map(|e| e["data"]["delta"].as_i64().unwrap())
        .collect()
}

/// An app on the cluster, with no safety-net polls: while the bus is up, nothing but the
/// bus or a gap makes its hub read the database.
async fn app_on(cluster: &RedisCluster, backend: Backend) -> TestApp {
    app_on_with(cluster, backend, |_| {}).await
}

/// An app as [`app_on`] makes, on the one channel (`TIDINGS_BUS_PARTITIONS` 0 even under
/// `TEST_BUS_PARTITIONS`): for the tests that watch that channel's master.
async fn app_on_the_channel(cluster: &RedisCluster, backend: Backend) -> TestApp {
    app_on_with(cluster, backend, |c| c.bus_partitions = 0).await
}

async fn app_on_with(
    cluster: &RedisCluster,
    backend: Backend,
    tweak: impl FnOnce(&mut Config),
) -> TestApp {
    let url = cluster.url();
    TestApp::spawn_with(backend, |c| {
        c.redis_url = Some(url);
        c.relay_poll = Duration::from_secs(3600);
        tweak(c);
    })
    .await
}

/// The app's `/readyz` bus check.
async fn bus(app: &TestApp) -> Value {
    let ready: Value = app.get("/readyz", None).await.json().await.unwrap();
    ready["checks"]["bus"].clone()
}

/// Waits until the app's bus is `status` (`up` or `degraded`).
async fn wait_for_bus(app: &TestApp, status: &str) {
    let deadline = Instant::now() + CLUSTER_PATIENCE;
    loop {
        let bus = bus(app).await;
        if bus["status"] == status {
            assert_eq!(bus["kind"], "redis-cluster");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the bus did not become {status}: {bus}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The hub's reads of the database (gaps, or the bus down), from `/metrics`.
async fn catch_up_reads(app: &TestApp) -> u64 {
    let metrics = app.metrics().await.text().await.unwrap();
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("tidings_hub_catch_up_reads_total "))
        .and_then(|n| n.trim().parse().ok())
        .expect("the metrics count the hub's catch-up reads")
}

async fn instances_on_a_redis_cluster_deliver_through_sharded_pub_sub(backend: Backend) {
    let cluster = RedisCluster::start(3, 0).await;
    let a = app_on_the_channel(&cluster, backend).await;
    let b = a.another_instance().await;
    wait_for_bus(&a, "up").await;
    wait_for_bus(&b, "up").await;
    let channel = a.config.redis_channel.clone();
    let owner = cluster.master_of(&channel, 0).await.expect("a master");
    assert_eq!(
        cluster.shard_subscribers(owner, &channel).await,
        2,
        "both instances SSUBSCRIBEd on the master of the channel's slot"
    );
    let staff = a.user_with_role("staff@example.com", Role::Staff).await;
    let tee = a.product(&staff.access_token, "TEE", 100, 1000).await;
    let mut on_b = b.ws(&staff.access_token).await;
    on_b.subscribe(&["inventory"], None).await;
    let reads_before = catch_up_reads(&b).await;

    for delta in 1..=10 {
        assert_eq!(
            a.adjust_stock(&staff.access_token, id(&tee), delta)
                .await
                .status(),
            StatusCode::OK
        );
    }
    let mut received = Vec::new();
    while deltas(&received).last() != Some(&10) {
        received.push(on_b.next_event().await);
    }

    assert_eq!(deltas(&received), (1..=10).collect::<Vec<i64>>());
    assert!(seqs(&received).windows(2).all(|w| w[0] < w[1]));
    assert_eq!(
        catch_up_reads(&b).await,
        reads_before,
        "the bus delivered them: b's hub never read the database"
    );
    assert_eq!(bus(&b).await["status"], "up");
}

async fn a_master_killed_during_writes_loses_and_repeats_nothing(backend: Backend) {
    let mut cluster = RedisCluster::start(3, 0).await;
    let a = app_on_the_channel(&cluster, backend).await;
    let b = a.another_instance().await;
    wait_for_bus(&a, "up").await;
    wait_for_bus(&b, "up").await;
    let channel = a.config.redis_channel.clone();
    let owner = cluster.master_of(&channel, 0).await.expect("a master");
    let staff = a.user_with_role("staff@example.com", Role::Staff).await;
    let tee = a.product(&staff.access_token, "TEE", 100, 1000).await;
    let mut on_a = a.ws(&staff.access_token).await;
    on_a.subscribe(&["inventory"], None).await;
    let mut on_b = b.ws(&staff.access_token).await;
    on_b.subscribe(&["inventory"], None).await;

    // A stream of writes through both instances, with the channel's master killed midway.
    let writes = {
        let (a_url, b_url) = (a.url(""), b.url(""));
        let (token, product) = (staff.access_token.clone(), id(&tee).to_owned());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            for delta in 1..=40i64 {
                let base = if delta % 2 == 0 { &a_url } else { &b_url };
                let response = client
                    .post(format!("{base}/v1/products/{product}/stock-adjustments"))
                    .bearer_auth(&token)
                    .json(&serde_json::json!({"delta": delta, "reason": "count"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::OK);
            }
        })
    };
    let mut received_a = Vec::new();
    while deltas(&received_a).len() < 10 {
        received_a.push(on_a.next_event().await);
    }
    cluster.kill(owner).await;
    wait_for_bus(&a, "degraded").await;
    writes.await.unwrap();
    let mut received_b = Vec::new();
    while deltas(&received_a).last() != Some(&40) {
        received_a.push(on_a.next_event().await);
    }
    while deltas(&received_b).last() != Some(&40) {
        received_b.push(on_b.next_event().await);
    }

    for received in [&received_a, &received_b] {
        assert_eq!(
            deltas(received),
            (1..=40).collect::<Vec<i64>>(),
            "every event once, in order"
        );
        let all = seqs(received);
        assert!(
            all.windows(2).all(|w| w[1] == w[0] + 1),
            "contiguous: {all:?}"
        );
    }
    // The master back (as the cluster knew it), the bus is up again and carries events.
    cluster.run(owner).await;
    cluster.wait_until_ok().await;
    wait_for_bus(&a, "up").await;
    wait_for_bus(&b, "up").await;
    let reads_before = catch_up_reads(&b).await;
    a.adjust_stock(&staff.access_token, id(&tee), 41).await;
    while deltas(&received_b).last() != Some(&41) {
        received_b.push(on_b.next_event().await);
    }
    assert_eq!(
        catch_up_reads(&b).await,
        reads_before,
        "delivered by the bus again"
    );
}

async fn the_subscriber_follows_a_failover_to_the_new_master(backend: Backend) {
    let cluster = RedisCluster::start(3, 1).await;
    let a = app_on_the_channel(&cluster, backend).await;
    let b = a.another_instance().await;
    wait_for_bus(&a, "up").await;
    wait_for_bus(&b, "up").await;
    let channel = a.config.redis_channel.clone();
    let old = cluster.master_of(&channel, 0).await.expect("a master");
    let replica = {
        let mut found = None;
        for i in 0..cluster.nodes.len() {
            let role = cluster.query(i, &redis::cmd("ROLE")).await.unwrap();
            if let RedisValue::Array(role) = role
                && matches!(&role[0], RedisValue::BulkString(r) if r == b"slave")
                && matches!(&role[2], RedisValue::Int(port) if *port == i64::from(cluster.nodes[old].port))
            {
                found = Some(i);
            }
        }
        found.expect("the master has a replica")
    };
    let staff = a.user_with_role("staff@example.com", Role::Staff).await;
    let tee = a.product(&staff.access_token, "TEE", 100, 1000).await;
    let mut on_b = b.ws(&staff.access_token).await;
    on_b.subscribe(&["inventory"], None).await;
    a.adjust_stock(&staff.access_token, id(&tee), 1).await;
    let received = vec![on_b.next_of("inventory.stock_changed").await];

    // The replica takes over; the old master ends its shard subscriptions (sunsubscribe).
    let answer = cluster
        .query(replica, redis::cmd("CLUSTER").arg("FAILOVER"))
        .await
        .unwrap();
    assert_eq!(answer, RedisValue::Okay);
    let deadline = Instant::now() + CLUSTER_PATIENCE;
    let mut asked_at = Instant::now();
    while cluster.master_of(&channel, old).await != Some(replica) {
        assert!(Instant::now() < deadline, "the failover did not happen");
        // A manual failover that does not complete (the replica not caught up within
        // Redis's 5 s) is abandoned by Redis: ask again, as an operator would.
        if asked_at.elapsed() > Duration::from_secs(6) {
            let _ = cluster
                .query(replica, redis::cmd("CLUSTER").arg("FAILOVER"))
                .await;
            asked_at = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let moved = Moved {
        cluster: &cluster,
        channel: &channel,
        from: old,
        to: replica,
    };
    moved
        .is_followed((&a, &b), (&staff.access_token, id(&tee)), on_b, received)
        .await;
}

/// The bus's channel moved from master `from` to `to` (a failover, a slot migration).
struct Moved<'a> {
    cluster: &'a RedisCluster,
    channel: &'a str,
    from: usize,
    to: usize,
}

impl Moved<'_> {
    /// Stock changes 2 to 4 of `product` made through `a` after the move reach `b`'s client
    /// `on_b`, which `received` change 1 before it: once each, in order. Both instances
    /// subscribe on the new master, none stays on the old, and once they have, the bus
    /// delivers change 5 (no database read).
    async fn is_followed(
        &self,
        (a, b): (&TestApp, &TestApp),
        (staff, product): (&str, &str),
        mut on_b: WsClient,
        mut received: Vec<Value>,
    ) {
        for delta in 2..=4 {
            a.adjust_stock(staff, product, delta).await;
        }
        let deadline = Instant::now() + CLUSTER_PATIENCE;
        while self.cluster.shard_subscribers(self.to, self.channel).await != 2 {
            assert!(
                Instant::now() < deadline,
                "the instances did not subscribe on the channel's new master"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        wait_for_bus(b, "up").await;
        while deltas(&received).last() != Some(&4) {
            received.push(on_b.next_event().await);
        }
        let reads_before = catch_up_reads(b).await;
        a.adjust_stock(staff, product, 5).await;
        while deltas(&received).last() != Some(&5) {
            received.push(on_b.next_event().await);
        }

        assert_eq!(deltas(&received), (1..=5).collect::<Vec<i64>>());
        let all = seqs(&received);
        assert!(
            all.windows(2).all(|w| w[1] == w[0] + 1),
            "contiguous: {all:?}"
        );
        assert_eq!(
            catch_up_reads(b).await,
            reads_before,
            "after the move the bus delivers"
        );
        assert_eq!(
            self.cluster
                .shard_subscribers(self.from, self.channel)
                .await,
            0
        );
    }
}

/// A batch as the relay publishes it, with a seq of the test's choosing.
fn batch(seq: i64) -> Vec<Event> {
    serde_json::from_value(serde_json::json!([{
        "seq": seq, "topic": "inventory", "type": "product.created",
        "audience": {"kind": "everyone"}, "at": "2026-12-07T00:00:00Z", "data": {"id": "p"}
    }]))
    .unwrap()
}

/// Publishes `seq` on `channel` until the bus hands it over: a subscription just made
/// may not be in place when the first message goes out. Repeats of earlier rounds that
/// arrive meanwhile are skipped.
async fn round_trip(bus: &mut Bus, channel: &str, seq: i64) {
    let deadline = Instant::now() + CLUSTER_PATIENCE;
    loop {
        // Not yet connected to publish is one more reason to try again.
        let _ = bus.publisher.publish_on(channel, batch(seq)).await;
        let until = Instant::now() + Duration::from_millis(200);
        while let Ok(Some(got)) = tokio::time::timeout_at(until, bus.batches.recv()).await {
            let Message::Batch(got) = got else {
                panic!("a batch was published, {got:?} came")
            };
            if got[0].seq == seq {
                return;
            }
            assert!(got[0].seq < seq, "{} arrived on {channel}", got[0].seq);
        }
        assert!(Instant::now() < deadline, "nothing came back on {channel}");
    }
}

async fn partition_channels_added_at_runtime_spread_over_the_masters(_: Backend) {
    let cluster = RedisCluster::start(3, 0).await;
    let stop = CancellationToken::new();
    let base = format!("tidings:test:{}", uuid::Uuid::new_v4().simple());
    let mut bus = Bus::redis(&cluster.url(), false, &base, 0, stop.clone())
        .await
        .unwrap();
    assert_eq!(bus.kind, "redis-cluster");
    bus.health.up().await;
    round_trip(&mut bus, &base, 1).await;

    let partitions: Vec<String> = (0..8).map(|p| partition_channel(&base, p)).collect();
    for channel in &partitions {
        assert!(bus.channels.add(channel));
    }
    let mut owners = std::collections::BTreeSet::new();
    for (seq, channel) in (2..).zip(&partitions) {
        let owner = cluster.master_of(channel, 0).await.expect("a master");
        let deadline = Instant::now() + CLUSTER_PATIENCE;
        while cluster.shard_subscribers(owner, channel).await != 1 {
            assert!(
                Instant::now() < deadline,
                "{channel} is not subscribed on its master"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        owners.insert(owner);
        round_trip(&mut bus, channel, seq).await;
    }
    assert!(
        owners.len() > 1,
        "the partitions spread over the masters: {owners:?}"
    );
    assert!(bus.health.is_up());

    let removed = &partitions[0];
    assert!(bus.channels.remove(removed));
    let owner = cluster.master_of(removed, 0).await.unwrap();
    let deadline = Instant::now() + CLUSTER_PATIENCE;
    while cluster.shard_subscribers(owner, removed).await != 0 {
        assert!(Instant::now() < deadline, "{removed} is still subscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The others stay.
    round_trip(&mut bus, &partitions[1], 100).await;
    assert!(bus.health.is_up());
    stop.cancel();
}

async fn a_single_redis_follows_channels_added_and_removed_at_runtime(_: Backend) {
    let redis = crate::live_cluster::OwnRedis::start().await;
    let stop = CancellationToken::new();
    let base = format!("tidings:test:{}", uuid::Uuid::new_v4().simple());
    let mut bus = Bus::redis(&redis.url(), false, &base, 0, stop.clone())
        .await
        .unwrap();
    assert_eq!(bus.kind, "redis");
    bus.health.up().await;
    round_trip(&mut bus, &base, 1).await;

    let partition = partition_channel(&base, 1);
    assert!(bus.channels.add(&partition));
    round_trip(&mut bus, &partition, 2).await;
    assert!(bus.channels.remove(&base));
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let deadline = Instant::now() + CLUSTER_PATIENCE;
    loop {
        let receivers: i64 = redis::cmd("PUBLISH")
            .arg(&base)
            .arg("not a batch")
            .query_async(&mut connection)
            .await
            .unwrap();
        if receivers == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{base} is still subscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    round_trip(&mut bus, &partition, 3).await;
    assert!(bus.health.is_up());
    assert_eq!(bus.channels.list(), [partition]);
    stop.cancel();
}

async fn the_subscriber_follows_its_channels_slot_to_another_master(backend: Backend) {
    let cluster = RedisCluster::start(3, 0).await;
    let a = app_on_the_channel(&cluster, backend).await;
    let b = a.another_instance().await;
    wait_for_bus(&a, "up").await;
    wait_for_bus(&b, "up").await;
    let channel = a.config.redis_channel.clone();
    let from = cluster.master_of(&channel, 0).await.expect("a master");
    let to = (from + 1) % 3;
    let staff = a.user_with_role("staff@example.com", Role::Staff).await;
    let tee = a.product(&staff.access_token, "TEE", 100, 1000).await;
    let mut on_b = b.ws(&staff.access_token).await;
    on_b.subscribe(&["inventory"], None).await;
    a.adjust_stock(&staff.access_token, id(&tee), 1).await;
    let received = vec![on_b.next_of("inventory.stock_changed").await];

    // The old owner ends the subscriptions (sunsubscribe) as it gives the slot up.
    cluster
        .move_slot(key_slot(channel.as_bytes()), from, to)
        .await;
    let moved = Moved {
        cluster: &cluster,
        channel: &channel,
        from,
        to,
    };
    moved
        .is_followed((&a, &b), (&staff.access_token, id(&tee)), on_b, received)
        .await;
}

async fn instances_started_before_their_cluster_deliver_once_it_is_up(backend: Backend) {
    let mut cluster = RedisCluster::planned(3);
    let a = app_on(&cluster, backend).await;
    let b = a.another_instance().await;
    assert_eq!(bus(&b).await["status"], "degraded");
    let staff = a.user_with_role("staff@example.com", Role::Staff).await;
    let tee = a.product(&staff.access_token, "TEE", 100, 1000).await;
    let mut on_b = b.ws(&staff.access_token).await;
    on_b.subscribe(&["inventory"], None).await;
    a.adjust_stock(&staff.access_token, id(&tee), 1).await;
    let mut received = vec![on_b.next_of("inventory.stock_changed").await];

    cluster.create(0).await;
    wait_for_bus(&a, "up").await;
    wait_for_bus(&b, "up").await;
    let reads_before = catch_up_reads(&b).await;
    a.adjust_stock(&staff.access_token, id(&tee), 2).await;
    while deltas(&received).last() != Some(&2) {
        received.push(on_b.next_event().await);
    }

    assert_eq!(deltas(&received), [1, 2]);
    assert_eq!(
        catch_up_reads(&b).await,
        reads_before,
        "the publisher connected too: the bus delivered"
    );
}

async fn a_frozen_master_is_noticed_and_events_come_from_the_database_until_it_answers(
    backend: Backend,
) {
    let cluster = RedisCluster::start(3, 0).await;
    let a = app_on_the_channel(&cluster, backend).await;
    wait_for_bus(&a, "up").await;
    let channel = a.config.redis_channel.clone();
    let owner = cluster.master_of(&channel, 0).await.expect("a master");
    let staff = a.user_with_role("staff@example.com", Role::Staff).await;
    let tee = a.product(&staff.access_token, "TEE", 100, 1000).await;
    let mut ws = a.ws(&staff.access_token).await;
    ws.subscribe(&["inventory"], None).await;

    cluster.signal(owner, "-STOP");
    // The subscriber notices by its pings, before the cluster itself does (its node
    // timeout is 2 s).
    wait_for_bus(&a, "degraded").await;
    for delta in 1..=3 {
        a.adjust_stock(&staff.access_token, id(&tee), delta).await;
    }
    let mut received = Vec::new();
    while deltas(&received).last() != Some(&3) {
        received.push(ws.next_event().await);
    }
    cluster.signal(owner, "-CONT");
    cluster.wait_until_ok().await;
    wait_for_bus(&a, "up").await;
    a.adjust_stock(&staff.access_token, id(&tee), 4).await;
    while deltas(&received).last() != Some(&4) {
        received.push(ws.next_event().await);
    }

    assert_eq!(deltas(&received), [1, 2, 3, 4]);
    let all = seqs(&received);
    assert!(
        all.windows(2).all(|w| w[1] == w[0] + 1),
        "contiguous: {all:?}"
    );
}
