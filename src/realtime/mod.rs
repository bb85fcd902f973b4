//! The live engine: the hub (who is connected, and the fan-out of each event to them),
//! mailboxes, pre-encoded frames, replay from the outbox, and the live protocol's
//! messages. The endpoints that drive it are in [`crate::live`].

pub mod frames;
pub mod hub;
pub mod mailbox;
pub mod presence;
pub mod protocol;
pub mod replay;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;

use crate::events::Topic;
use crate::events::bus::BusHealth;
use crate::events::relay::RelayStats;
use hub::Hub;

/// The two kinds of live connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    EventStream,
}

impl Transport {
    pub const ALL: [Transport; 2] = [Transport::WebSocket, Transport::EventStream];

    /// The `transport` label of the metrics.
    pub fn label(self) -> &'static str {
        match self {
            Transport::WebSocket => "ws",
            Transport::EventStream => "sse",
        }
    }

    /// What a connection of this transport is sent of a frame, when the hub writes it.
    pub fn bytes(self, frame: &frames::PreparedEvent) -> &bytes::Bytes {
        match self {
            Transport::WebSocket => &frame.ws_frame,
            Transport::EventStream => &frame.sse_chunk,
        }
    }
}

/// The topics a client names (a WebSocket `subscribe` or an SSE `?topics=`), each once, in
/// order; or, for a name that is not one, what to tell the client.
pub fn parse_topics<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Vec<Topic>, String> {
    let mut topics = Vec::new();
    for name in names {
        match Topic::subscribable(name) {
            Some(topic) if !topics.contains(&topic) => topics.push(topic),
            Some(_) => {}
            None => {
                return Err(format!(
                    "unknown topic {name:?}; topics are orders, inventory, notifications"
                ));
            }
        }
    }
    Ok(topics)
}

/// The runtime that writes to live connections, apart from the one that serves requests.
///
/// Why: one event for everyone wakes one task per connection, and a runtime runs woken
/// tasks in turn. Sharing it, every database round trip of a REST request (and so the
/// commit of the next change) waited behind thousands of socket writes: on one core at
/// 100,000 deliveries/s that was most of the commit-to-receipt latency. On threads of
/// their own, the OS shares the CPU between requests and fan-out instead.
pub fn live_runtime() -> &'static tokio::runtime::Handle {
    static LIVE: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    LIVE.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .thread_name("tidings-live")
            .enable_all()
            .build()
            .expect("the live runtime starts")
    })
    .handle()
}

/// Runs the task of a live connection (a WebSocket's, or an event stream's on a socket of
/// its own) on the [`live_runtime`], tracked by `tasks`: shutdown waits for every tracked
/// task to have written its close and ended (see `Application::run_until_stopped`).
pub fn spawn_connection(tasks: &TaskTracker, task: impl Future<Output = ()> + Send + 'static) {
    live_runtime().spawn(tasks.track_future(task));
}

/// Settings of the live side.
#[derive(Debug, Clone)]
pub struct RealtimeConfig {
    /// WebSocket pings this often…
    pub ping_interval: Duration,
    /// …and a peer silent for this long is dropped.
    pub idle_timeout: Duration,
    /// A write waits at most this long for a client that takes no bytes.
    pub write_timeout: Duration,
    /// Largest client message accepted (close 1009 beyond).
    pub max_message_bytes: usize,
    /// An SSE comment this often keeps proxies from closing the stream.
    pub sse_heartbeat: Duration,
    /// The `retry:` hint sent to EventSource clients.
    pub sse_retry: Duration,
    /// Connections closed at once during shutdown, and the pause between batches.
    pub drain_batch: usize,
    pub drain_pause: Duration,
}

/// The live side of one instance.
#[derive(Debug, Clone)]
pub struct Realtime {
    pub hub: Arc<Hub>,
    pub bus_health: BusHealth,
    /// `memory`, `redis` or `redis-cluster`.
    pub bus_kind: &'static str,
    /// Faults injected into the bus's publishing: for tests only (see `BusFaults`).
    pub bus_faults: Arc<crate::events::bus::BusFaults>,
    pub relay: Arc<RelayStats>,
    /// Who is connected here and what their apps acknowledged, for the delivery worker.
    pub presence: Arc<presence::Presence>,
    /// What the delivery worker has done (it runs on the pipeline's thread).
    pub push: Arc<crate::push::worker::WorkerStats>,
    pub config: RealtimeConfig,
    /// Every live connection's task (or, for an event stream hyper serves, its body),
    /// whichever path it came by: shutdown closes their mailboxes, then waits for them.
    pub tasks: TaskTracker,
}
