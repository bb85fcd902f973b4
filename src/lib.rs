//! Tidings: a real-time commerce backend.
//!
//! The modules are layers, listed here from the bottom up: a module may use the ones
//! listed before it, never one after (`tests/architecture.rs` keeps it so).
//! ARCHITECTURE.md walks through them and the way of one event.
//!
//! [`Application`] builds the whole server from a [`Config`]; `main` and the integration
//! tests both start it that way, on a listener of their choosing.

// The error every layer returns, rendered as problem+json.
pub mod error;
// Validated values: emails, passwords, roles, SKUs, currencies, text.
pub mod domain;
// The accept loop, its HTTP/1.1 front end for live streams, socket writes, WebSocket frames.
pub mod net;
// The settings, read once at start.
pub mod config;
// Logs and the Prometheus recorder, set up once at start.
pub mod telemetry;
// The database: one pool type over PostgreSQL or SQLite, and the queries of each table.
pub mod store;
// The event model and its way: outbox, relay, bus, the stream read back from the outbox.
pub mod events;
// Email over SMTP: the mailer and the messages' templates.
pub mod mail;
// The operations: accounts, products, orders, notifications, each in one transaction.
pub mod service;
// Push to devices without a live connection: the providers (Web Push), the VAPID key.
pub mod push;
// The live engine: the hub and its fan-out, mailboxes, frames, replay, the protocol.
pub mod realtime;
// What every handler shares: state, extractors, middleware.
pub mod http;
// The live endpoints: WebSocket, Server-Sent Events, stream tickets.
pub mod live;
// The REST routes, the OpenAPI and AsyncAPI documents, the dashboard.
pub mod api;
// The composition root: builds and runs the server, its threads and runtimes.
pub mod app;

pub use app::{Application, router, shutdown_signal};
pub use config::Config;
pub use http::AppState;
