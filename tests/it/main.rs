//! End-to-end tests against the real broker (Tansu) and ClickHouse started
//! by `deploy/local/services.sh up`. Each test uses its own topic, consumer
//! group and database.

mod access;
mod alerts;
mod cluster;
mod e2e;
mod exactly_once;
mod grafana;
mod ingest;
mod public_seed;
mod recovery;
mod store;
mod ui;
