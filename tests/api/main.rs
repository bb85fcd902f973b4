//! Integration tests: the real app on a random port, spoken to over HTTP.
//!
//! Every test runs twice, on SQLite and on PostgreSQL (when `TEST_DATABASE_URL` is set),
//! each run on a database of its own, so the tests run in parallel.

mod helpers;

mod accounts;
mod admin;
mod asyncapi;
mod audit;
mod auth_hardening;
mod browser;
mod cli;
mod clients;
mod dashboard;
mod devices;
mod docs;
mod edge;
mod errors;
mod headers;
mod health;
mod live;
mod live_cluster;
mod live_faults;
mod live_protocol;
mod mail;
mod notifications;
mod orders;
mod outbox;
mod position;
mod products;

mod partitions;
mod proxy;
mod push;
mod push_providers;
mod redis_cluster;
mod shards;
mod shutdown;
mod smtp;
mod token_cache;
mod websocket;
