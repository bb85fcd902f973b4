//! Live delivery to clients: the hub, WebSocket and SSE endpoints, stream tickets, replay.

pub mod auth;
pub mod frames;
pub mod hub;
pub mod mailbox;
pub mod replay;
pub mod sse;
pub mod wire;
pub mod ws;

use std::sync::Arc;
use std::time::Duration;

use crate::events::bus::BusHealth;
use crate::events::relay::RelayStats;
use hub::Hub;

/// Settings of the live side.
#[derive(Debug, Clone)]
pub struct RealtimeConfig {
    /// WebSocket pings this often…
    pub ping_interval: Duration,
    /// …and a peer silent for this long is dropped.
    pub idle_timeout: Duration,
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
    /// `memory` or `redis`.
    pub bus_kind: &'static str,
    pub relay: Arc<RelayStats>,
    pub config: RealtimeConfig,
}
