//! Two instances of the real binary behind real nginx running the project's own
//! configuration (`deploy/nginx.conf`), on PostgreSQL and Redis: live delivery through the
//! proxy, and restarts that lose nothing. With 500 clients connected (WebSocket and SSE)
//! and writes going on, one instance is stopped with SIGTERM: its clients are closed with
//! 1001 in paced batches, reconnect through nginx to the other instance, resume, and
//! receive every event exactly once. Then the other is killed (SIGKILL): the same. Each
//! instance started again takes new connections.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::clients::PATIENCE;
use crate::helpers::{Backend, create_database, drop_database, with_database};
use crate::proxy_tests;

proxy_tests!(two_instances_behind_nginx_lose_nothing_across_sigterm_sigkill_and_restarts);

const WEBSOCKETS: usize = 400;
const STREAMS: usize = 100;
const CLIENTS: usize = WEBSOCKETS + STREAMS;
/// Ten clients a user: within the per-user limit of one instance (16) when every client
/// is on one instance.
const USERS: usize = 50;
const DRAIN_BATCH: usize = 50;
const DRAIN_PAUSE: Duration = Duration::from_millis(100);
/// How long a whole step (every client reconnected, every event delivered) may take.
const STEP: Duration = Duration::from_secs(60);

async fn two_instances_behind_nginx_lose_nothing_across_sigterm_sigkill_and_restarts(
    backend: Backend,
) {
    let Backend::Postgres(admin_url) = backend else {
        unreachable!("proxy tests run on PostgreSQL")
    };
    let redis = std::env::var("TEST_REDIS_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .expect("the proxy test needs Redis: set TEST_REDIS_URL");
    let database = Database::create(&admin_url).await;
    let data = tempfile::tempdir().unwrap();
    let settings = vec![
        ("DATABASE_URL", database.url.clone()),
        ("REDIS_URL", redis),
        (
            "TIDINGS_REDIS_CHANNEL",
            format!("tidings:test:{}", database.name),
        ),
        // A key for this run only: the instances share it, as production's must.
        (
            "TIDINGS_JWT_SECRET",
            format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            ),
        ),
        // What deploy/nginx.conf asks of the instances behind it.
        ("TIDINGS_TRUST_FORWARDED_FOR", "true".into()),
        ("TIDINGS_MAX_PENDING_PER_IP", "0".into()),
        ("TIDINGS_DRAIN_BATCH", DRAIN_BATCH.to_string()),
        (
            "TIDINGS_DRAIN_PAUSE",
            format!("{}ms", DRAIN_PAUSE.as_millis()),
        ),
        ("TIDINGS_DB_MAX_CONNECTIONS", "4".into()),
        ("TIDINGS_DATA_DIR", data.path().display().to_string()),
    ];
    let mut a = Instance::start("a", &settings, "127.0.0.1:0").await;
    let mut b = Instance::start("b", &settings, "127.0.0.1:0").await;
    let nginx = Nginx::start(&[&a.address, &b.address]).await;
    let proxy = nginx.address.clone();
    let http = reqwest::Client::new();

    let customers = user_tokens(&settings, "proxied", "customer", USERS).await;
    let staff = user_tokens(&settings, "proxied-staff", "staff", 1)
        .await
        .remove(0);
    let product = http
        .post(format!("http://{proxy}/v1/products"))
        .bearer_auth(&staff)
        .json(
            &json!({"sku": "PROXY", "name": "Proxied", "unit_amount": 100,
                      "currency": "EUR", "stock": 0, "low_stock_threshold": 0}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(product.status(), StatusCode::CREATED);
    let product: Value = product.json().await.unwrap();
    let product_id = product["id"].as_str().unwrap().to_owned();
    // Every client resumes from here: whatever is numbered later reaches each of them.
    let start = database.last_seq().await;

    let shared = Arc::new(Shared {
        proxy: proxy.clone(),
        phase: AtomicU32::new(0),
        opened: watch::channel(0).0,
        ended: watch::channel(0).0,
    });
    let mut clients = Vec::new();
    for n in 0..CLIENTS {
        let token = customers[n % USERS].clone();
        let transport = if n < WEBSOCKETS {
            Transport::WebSocket
        } else {
            Transport::EventStream
        };
        clients.push(Client::spawn(&shared, transport, token, start, n));
    }
    within(STEP, "every client connected", async {
        reaches(&shared.opened, CLIENTS).await;
    })
    .await;

    // Writes go on from now to the end: a stock change every 20 ms, through the proxy.
    let (stop_writing, writing) = watch::channel(false);
    let writer = tokio::spawn(write_stock_changes(
        http.clone(),
        shared.clone(),
        staff.clone(),
        product_id.clone(),
        writing,
    ));
    // Delivery through the proxy, to every client on either transport.
    within(STEP, "events delivered to every client", async {
        for client in &clients {
            reaches(&client.events, 3).await;
        }
    })
    .await;
    let on_a = a.connections().await;
    let on_b = b.connections().await;
    assert_eq!(on_a + on_b, CLIENTS, "every client is on one instance");
    assert!(on_a > 0 && on_b > 0, "nginx spread them: {on_a} and {on_b}");

    // SIGTERM: a's clients are closed with 1001 (their streams ended) in paced batches,
    // and reconnect through nginx to b.
    shared.phase.store(1, Ordering::Release);
    let terminated = Instant::now();
    a.signal("TERM");
    shared
        .within("a's clients closed and every client open again", async {
            reaches(&shared.ended, on_a).await;
            let reopened = CLIENTS + on_a;
            reaches(&shared.opened, reopened).await;
        })
        .await;
    let status = within(STEP, "a exits", a.child.wait()).await.unwrap();
    assert!(status.success(), "a stopped with {status}");
    let endings = endings_of(&clients, 1);
    assert_eq!(endings.len(), on_a, "exactly a's clients were closed");
    for ended in &endings {
        match ended.transport {
            Transport::WebSocket => assert_eq!(ended.how, How::Closed(1001), "Going Away"),
            Transport::EventStream => assert_eq!(ended.how, How::Ended, "the stream's end"),
        }
    }
    let batches = on_a.div_ceil(DRAIN_BATCH) as u32;
    let last = endings.iter().map(|e| e.at).max().unwrap();
    assert!(
        last - terminated >= DRAIN_PAUSE * (batches - 1),
        "{on_a} connections in batches of {DRAIN_BATCH} were closed within {:?}: not paced",
        last - terminated
    );
    assert_eq!(b.connections().await, CLIENTS, "every client is on b");

    // Started again, a is ready; then b is killed: its clients lose their connections
    // without a word, and reconnect through nginx to a.
    a.restart(&settings).await;
    shared.phase.store(2, Ordering::Release);
    b.child.start_kill().unwrap();
    b.child.wait().await.unwrap();
    shared
        .within("b's clients cut off and every client open again", async {
            reaches(&shared.ended, on_a + CLIENTS).await;
            let reopened = 2 * CLIENTS + on_a;
            reaches(&shared.opened, reopened).await;
        })
        .await;
    let endings = endings_of(&clients, 2);
    assert_eq!(endings.len(), CLIENTS, "every client was on b");
    assert_eq!(a.connections().await, CLIENTS, "every client is on a");

    // Started again, b takes new connections: newcomers (who replay everything from the
    // start) are sent to it, the instance with the fewest (least_conn).
    b.restart(&settings).await;
    within(STEP, "a newcomer on b", async {
        let mut n = CLIENTS;
        while b.connections().await == 0 {
            let client = Client::spawn(
                &shared,
                Transport::WebSocket,
                customers[n % USERS].clone(),
                start,
                n,
            );
            reaches(&client.events, 1).await;
            clients.push(client);
            n += 1;
            // Newcomers arrive one at a time, as users do.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;

    // The end: every committed event reached every client once, in order, whichever
    // instances it went through.
    stop_writing.send(true).unwrap();
    let written = writer.await.unwrap();
    let stock = http
        .get(format!("http://{proxy}/v1/products/{product_id}"))
        .bearer_auth(&staff)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["stock"]
        .as_i64()
        .unwrap();
    within(
        STEP,
        "the last stock change delivered to every client",
        async {
            for client in &clients {
                client
                    .stock
                    .subscribe()
                    .wait_for(|s| *s == stock)
                    .await
                    .unwrap();
            }
        },
    )
    .await;
    let expected = database.inventory_seqs_after(start).await;
    assert!(
        written.by_phase.iter().all(|&n| n > 0),
        "writes went on through each step: {written:?}"
    );
    assert!(
        expected.len() as u64 >= written.succeeded,
        "{} writes succeeded, only {} events: {written:?}",
        written.succeeded,
        expected.len()
    );
    let mut deliveries = 0;
    for (n, client) in clients.iter().enumerate() {
        let tally = client.tally.lock();
        assert!(tally.faults.is_empty(), "client {n}: {:?}", tally.faults);
        assert!(
            tally.seqs == expected,
            "client {n} ({:?}) received {} events, {} expected; first difference at {:?}",
            client.transport,
            tally.seqs.len(),
            expected.len(),
            tally.seqs.iter().zip(&expected).position(|(a, b)| a != b)
        );
        deliveries += tally.seqs.len();
    }
    assert_eq!(deliveries, clients.len() * expected.len());
    eprintln!(
        "proxy: {} clients ({on_a} moved on SIGTERM, {CLIENTS} on SIGKILL) received {} \
         events each, {deliveries} deliveries, each once and in order; {} writes succeeded, \
         {} failed while instances stopped: {:?}; {:?} per step",
        clients.len(),
        expected.len(),
        written.succeeded,
        written.failed.len(),
        written.failed,
        written.by_phase
    );
    for client in clients {
        client.task.abort();
    }
    drop((a, b, nginx));
}

/// Waits until `counter` is at least `n`.
async fn reaches(counter: &watch::Sender<usize>, n: usize) {
    counter
        .subscribe()
        .wait_for(|count| *count >= n)
        .await
        .expect("the counter is held by the test");
}

/// Awaits `what`, failing the test with `step` if it takes longer than `limit`.
async fn within<T>(limit: Duration, step: &str, what: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, what)
        .await
        .unwrap_or_else(|_| panic!("{step}: not within {limit:?}"))
}

impl Shared {
    /// [`within`], saying how far the clients got if it fails.
    async fn within<T>(&self, step: &str, what: impl Future<Output = T>) -> T {
        match tokio::time::timeout(STEP, what).await {
            Ok(done) => done,
            Err(_) => panic!(
                "{step}: not within {STEP:?}; {} connections opened, {} ended in all",
                *self.opened.borrow(),
                *self.ended.borrow()
            ),
        }
    }
}

/// A database of this test's own on the PostgreSQL of `TEST_DATABASE_URL`.
struct Database {
    admin_url: String,
    name: String,
    url: String,
}

impl Database {
    async fn create(admin_url: &str) -> Database {
        let name = format!("tidings_test_{}", uuid::Uuid::new_v4().simple());
        create_database(admin_url, &name).await;
        Database {
            admin_url: admin_url.to_owned(),
            url: with_database(admin_url, &name),
            name,
        }
    }

    async fn connect(&self) -> sqlx::PgConnection {
        use sqlx::Connection;
        sqlx::PgConnection::connect(&self.url).await.unwrap()
    }

    async fn last_seq(&self) -> i64 {
        sqlx::query_scalar("select coalesce(max(seq), 0) from events")
            .fetch_one(&mut self.connect().await)
            .await
            .unwrap()
    }

    /// Every numbered event of the inventory topic after `seq`, in order.
    async fn inventory_seqs_after(&self, seq: i64) -> Vec<i64> {
        sqlx::query_scalar(
            "select seq from events where topic = 'inventory' and seq > $1 order by seq",
        )
        .bind(seq)
        .fetch_all(&mut self.connect().await)
        .await
        .unwrap()
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        drop_database(self.admin_url.clone(), self.name.clone());
    }
}

/// `tidings user tokens`: `count` users of `role`, and an access token for each.
async fn user_tokens(
    settings: &[(&str, String)],
    prefix: &str,
    role: &str,
    count: usize,
) -> Vec<String> {
    let output = tidings(settings)
        .args(["user", "tokens", "--prefix", prefix, "--role", role])
        .args(["--count", &count.to_string()])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tokens: Vec<String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| line.rsplit(' ').next().unwrap().to_owned())
        .collect();
    assert_eq!(tokens.len(), count);
    tokens
}

/// The `tidings` binary with these settings and nothing else of this environment.
fn tidings(settings: &[(&str, String)]) -> Command {
    let mut command = crate::cli::tidings();
    command.envs(settings.iter().map(|(k, v)| (k, v)));
    command
}

/// The last lines a child wrote, to show when the test fails.
type Tail = Arc<Mutex<VecDeque<String>>>;

/// Keeps reading a child's output (a full pipe would stop it), holding its last lines.
fn keep_reading(output: impl AsyncRead + Unpin + Send + 'static) -> Tail {
    let tail = Tail::default();
    let last = tail.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(output).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut last = last.lock();
            if last.len() == 30 {
                last.pop_front();
            }
            last.push_back(line);
        }
    });
    tail
}

/// Prints a child's last lines if the test is failing.
fn show_if_failing(name: &str, tail: &Tail) {
    if std::thread::panicking() {
        let lines = Vec::from(tail.lock().clone());
        eprintln!("{name}'s last lines:\n{}", lines.join("\n"));
    }
}

/// A `tidings` server process.
struct Instance {
    name: &'static str,
    child: Child,
    address: String,
    tail: Tail,
}

impl Drop for Instance {
    fn drop(&mut self) {
        show_if_failing(&format!("instance {}", self.name), &self.tail);
    }
}

impl Instance {
    async fn start(name: &'static str, settings: &[(&str, String)], listen: &str) -> Instance {
        let mut child = tidings(settings)
            .env("TIDINGS_LISTEN", listen)
            .env("TIDINGS_LOG_FORMAT", "json")
            .env("RUST_LOG", "info,sqlx=warn,tower_http=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let address = within(PATIENCE, "the instance starts", async {
            loop {
                let line = lines
                    .next_line()
                    .await
                    .unwrap()
                    .unwrap_or_else(|| panic!("instance {name} exited before listening"));
                let entry: Value = serde_json::from_str(&line).expect("JSON log lines");
                if let Some(address) = entry["address"].as_str() {
                    break address.to_owned();
                }
            }
        })
        .await;
        let tail = keep_reading(lines.into_inner());
        Instance {
            name,
            child,
            address,
            tail,
        }
    }

    /// The same instance started again on its address, once it has exited.
    async fn restart(&mut self, settings: &[(&str, String)]) {
        assert!(
            self.child.try_wait().unwrap().is_some(),
            "{} is still running",
            self.name
        );
        let again = Instance::start(self.name, settings, &self.address).await;
        assert_eq!(again.address, self.address);
        *self = again;
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("a running instance").to_string();
        let sent = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// The live connections it holds, as its `/readyz` reports them (asked directly, not
    /// through nginx).
    async fn connections(&self) -> usize {
        let ready: Value = reqwest::get(format!("http://{}/readyz", self.address))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ready["checks"]["relay"]["connections"]
            .as_u64()
            .unwrap_or_else(|| panic!("no connection count in {ready}")) as usize
    }
}

/// nginx running `deploy/nginx.conf` in front of `upstreams`.
struct Nginx {
    child: Child,
    address: String,
    tail: Tail,
    access: Tail,
    _dir: tempfile::TempDir,
}

impl Nginx {
    async fn start(upstreams: &[&str]) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx.conf");
        // The project's file itself, with this test's pair of includes beside it.
        std::os::unix::fs::symlink(&config, dir.path().join("nginx.conf")).unwrap();
        std::fs::create_dir(dir.path().join("tidings")).unwrap();
        let servers: String = upstreams
            .iter()
            // As deploy/nginx.conf says upstream lines should be.
            .map(|address| format!("server {address} max_fails=0;\n"))
            .collect();
        std::fs::write(dir.path().join("tidings/upstream.conf"), servers).unwrap();
        let address = free_address();
        std::fs::write(
            dir.path().join("tidings/listen.conf"),
            format!("listen {address};\n"),
        )
        .unwrap();
        let prefix: PathBuf = dir.path().to_owned();
        let global = format!("daemon off; pid {}/nginx.pid;", prefix.display());
        let mut child = Command::new("/usr/sbin/nginx")
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(prefix.join("nginx.conf"))
            .args(["-e", "stderr", "-g", &global])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nginx runs");
        let tail = keep_reading(child.stderr.take().unwrap());
        let access = keep_reading(child.stdout.take().unwrap());
        let nginx = Nginx {
            child,
            address,
            tail,
            access,
            _dir: dir,
        };
        within(PATIENCE, "nginx answers", async {
            // Nothing to await but nginx's socket: ask until it answers.
            loop {
                if let Ok(response) = reqwest::get(format!("http://{}/livez", nginx.address)).await
                {
                    assert_eq!(response.status(), StatusCode::OK);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        nginx
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        show_if_failing("nginx (error log)", &self.tail);
        show_if_failing("nginx (access log)", &self.access);
        // SIGTERM to the master, which stops its workers (SIGKILL would leave them).
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
}

fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

#[derive(Debug)]
struct Written {
    succeeded: u64,
    /// Writes that succeeded before the SIGTERM, after it, after the SIGKILL.
    by_phase: [u64; 3],
    /// The status (or 0: no answer) of each write that failed.
    failed: Vec<u16>,
}

/// Adds 1 to a product's stock every 20 ms until told to stop. A write may fail while an
/// instance stops (nginx never passes on a POST that reached one); every write that
/// committed has its event, which is what the clients are checked against.
async fn write_stock_changes(
    http: reqwest::Client,
    shared: Arc<Shared>,
    staff: String,
    product_id: String,
    mut stop: watch::Receiver<bool>,
) -> Written {
    let mut written = Written {
        succeeded: 0,
        by_phase: [0; 3],
        failed: Vec::new(),
    };
    let proxy = &shared.proxy;
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    loop {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return written,
            _ = pace.tick() => {}
        }
        let response = http
            .post(format!(
                "http://{proxy}/v1/products/{product_id}/stock-adjustments"
            ))
            .bearer_auth(&staff)
            .json(&json!({"delta": 1, "reason": "restock"}))
            .send()
            .await;
        match response {
            Ok(response) if response.status() == StatusCode::OK => {
                written.succeeded += 1;
                written.by_phase[shared.phase.load(Ordering::Acquire) as usize] += 1;
            }
            Ok(response) => written.failed.push(response.status().as_u16()),
            Err(_) => written.failed.push(0),
        }
    }
}

struct Shared {
    proxy: String,
    /// The step of the test: each connection's end is counted in the step it happened in.
    phase: AtomicU32,
    /// Connections opened (subscribed, or the stream's head read), over all clients.
    opened: watch::Sender<usize>,
    /// Connections ended, over all clients.
    ended: watch::Sender<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Transport {
    WebSocket,
    EventStream,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum How {
    /// A WebSocket Close with this code.
    Closed(u16),
    /// An event stream's end.
    Ended,
    /// The connection broke off.
    Cut,
}

#[derive(Debug, Clone, Copy)]
struct Ending {
    transport: Transport,
    how: How,
    phase: u32,
    at: Instant,
}

#[derive(Default)]
struct Tally {
    /// Every event's seq, as received.
    seqs: Vec<i64>,
    endings: Vec<Ending>,
    /// What must not happen: an event twice or out of order, a `reset`, an error.
    faults: Vec<String>,
}

/// A client that stays connected through the proxy, reconnects when it loses its
/// connection, and resumes after the last event it received.
struct Client {
    transport: Transport,
    tally: Arc<Mutex<Tally>>,
    /// Events received so far.
    events: watch::Sender<usize>,
    /// The stock of the last `inventory.stock_changed` received.
    stock: watch::Sender<i64>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    fn spawn(
        shared: &Arc<Shared>,
        transport: Transport,
        token: String,
        since: i64,
        n: usize,
    ) -> Client {
        let tally = Arc::new(Mutex::new(Tally::default()));
        let events = watch::channel(0).0;
        let stock = watch::channel(-1).0;
        let mut session = Session {
            shared: shared.clone(),
            token,
            last: since,
            tally: tally.clone(),
            events: events.clone(),
            stock: stock.clone(),
        };
        let task = tokio::spawn(async move {
            let mut refused = 0;
            loop {
                let how = match transport {
                    Transport::WebSocket => session.websocket().await,
                    Transport::EventStream => session.event_stream().await,
                };
                match how {
                    Some(how) => {
                        session.ended(transport, how);
                        refused = 0;
                    }
                    None => refused += 1,
                }
                // A client waits a little before it reconnects, longer after each refusal,
                // and not all at the same instant.
                let wait = (10 + (n % 50) as u64) << refused.min(4);
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
        });
        Client {
            transport,
            tally,
            events,
            stock,
            task,
        }
    }
}

struct Session {
    shared: Arc<Shared>,
    token: String,
    /// The seq of the last event received: where the next connection resumes.
    last: i64,
    tally: Arc<Mutex<Tally>>,
    events: watch::Sender<usize>,
    stock: watch::Sender<i64>,
}

impl Session {
    /// One WebSocket connection, from its opening to its end (`None`: it did not open).
    async fn websocket(&mut self) -> Option<How> {
        let mut request = format!("ws://{}/v1/ws", self.shared.proxy)
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {}", self.token).parse().unwrap(),
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(request).await.ok()?;
        let subscribe = json!({"type": "subscribe", "topics": ["inventory"], "since": self.last});
        ws.send(Message::Text(subscribe.to_string().into()))
            .await
            .ok()?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    let message: Value = serde_json::from_str(&text).unwrap();
                    match message["type"].as_str() {
                        Some("subscribed") => self.shared.opened.send_modify(|n| *n += 1),
                        _ if message.get("seq").is_some() => self.received(&message),
                        _ => self.fault(format!("unexpected: {text}")),
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map_or(1005, |f| u16::from(f.code));
                    // Read on, so that tungstenite answers the Close.
                    while let Ok(Some(Ok(_))) = tokio::time::timeout(PATIENCE, ws.next()).await {}
                    return Some(How::Closed(code));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Some(How::Cut),
            }
        }
    }

    /// One event stream, from its request to its end (`None`: it did not open).
    async fn event_stream(&mut self) -> Option<How> {
        let response = reqwest::Client::new()
            .get(format!(
                "http://{}/v1/events?topics=inventory",
                self.shared.proxy
            ))
            .bearer_auth(&self.token)
            .header("last-event-id", self.last.to_string())
            .send()
            .await
            .ok()?;
        if response.status() != StatusCode::OK {
            return None;
        }
        // The head is written once the stream is registered.
        self.shared.opened.send_modify(|n| *n += 1);
        let mut events = response.bytes_stream().eventsource();
        loop {
            match events.next().await {
                Some(Ok(event)) if event.event == "reset" => {
                    self.fault(format!("reset: {}", event.data));
                }
                Some(Ok(event)) => {
                    let message: Value = serde_json::from_str(&event.data).unwrap();
                    if event.id.parse::<i64>().ok() != message["seq"].as_i64() {
                        self.fault(format!("id {} for {}", event.id, event.data));
                    }
                    self.received(&message);
                }
                Some(Err(_)) => return Some(How::Cut),
                None => return Some(How::Ended),
            }
        }
    }

    fn received(&mut self, event: &Value) {
        let seq = event["seq"].as_i64().unwrap();
        if seq <= self.last {
            self.fault(format!("seq {seq} after {}", self.last));
            return;
        }
        self.last = seq;
        self.tally.lock().seqs.push(seq);
        self.events.send_modify(|n| *n += 1);
        if event["type"] == "inventory.stock_changed" {
            let stock = event["data"]["stock"].as_i64().unwrap();
            self.stock.send_replace(stock);
        }
    }

    fn ended(&mut self, transport: Transport, how: How) {
        let ending = Ending {
            transport,
            how,
            phase: self.shared.phase.load(Ordering::Acquire),
            at: Instant::now(),
        };
        self.tally.lock().endings.push(ending);
        self.shared.ended.send_modify(|n| *n += 1);
    }

    fn fault(&mut self, fault: String) {
        self.tally.lock().faults.push(fault);
    }
}

/// The connections that ended during `phase`, over all clients.
fn endings_of(clients: &[Client], phase: u32) -> Vec<Ending> {
    clients
        .iter()
        .flat_map(|c| c.tally.lock().endings.clone())
        .filter(|e| e.phase == phase)
        .collect()
}
