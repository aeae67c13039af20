//! ClickHouse storage for pulih: the versioned migrations in
//! `schemas/clickhouse/`, the writer the aggregator upserts window rows
//! with, and the queries the CLI reports from.
//!
//! It uses the official `clickhouse` crate over HTTP with schema validation
//! turned off, because ClickHouse 18.16 (the server the tests run against)
//! lacks `RowBinaryWithNamesAndTypes`; the row structs here therefore must
//! match the column order of their tables, which the integration tests check.

mod migrate;

pub use migrate::{MigrateError, Migration, MigrationStatus, MIGRATIONS};

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `http://host:8123`
    pub url: String,
    pub database: String,
    pub user: String,
    pub password: String,
}

/// A failed ClickHouse call, with the address so the operator knows where
/// to look.
#[derive(Debug)]
pub struct StoreError {
    pub url: String,
    pub action: String,
    pub source: clickhouse::error::Error,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ClickHouse at {}: {} failed: {}",
            self.url, self.action, self.source
        )?;
        if matches!(self.source, clickhouse::error::Error::Network(_)) {
            write!(f, " (is the server running? `deploy/local/services.sh up` starts one on 127.0.0.1:8123)")?;
        }
        Ok(())
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// One row of `activity_1m`, in column order.
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, Serialize, Deserialize)]
pub struct ActivityRow {
    /// Seconds since the epoch, UTC.
    pub window_start: u32,
    pub district_code: String,
    pub sector: String,
    pub txn_count: u64,
    pub amount_idr_sum: u64,
    pub merchants_active: u32,
    pub is_final: u8,
    pub version: u64,
    pub updated_at: u32,
}

/// Totals over `activity_1m FINAL`.
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, Deserialize)]
pub struct SectorTotal {
    pub sector: String,
    pub windows: u64,
    pub txn_count: u64,
    pub amount_idr_sum: u64,
}

/// A connection to the pulih database.
#[derive(Clone)]
pub struct Store {
    client: clickhouse::Client,
    url: String,
    database: String,
}

impl Store {
    pub fn new(config: &StoreConfig) -> Store {
        let client = clickhouse::Client::default()
            .with_url(&config.url)
            .with_user(&config.user)
            .with_password(&config.password)
            .with_database(&config.database)
            .with_validation(false);
        Store {
            client,
            url: config.url.clone(),
            database: config.database.clone(),
        }
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    pub fn client(&self) -> &clickhouse::Client {
        &self.client
    }

    fn err(
        &self,
        action: impl Into<String>,
    ) -> impl FnOnce(clickhouse::error::Error) -> StoreError + '_ {
        let action = action.into();
        move |source| StoreError {
            url: self.url.clone(),
            action,
            source,
        }
    }

    /// `SELECT 1`: the server answers and the credentials are good.
    pub async fn ping(&self) -> Result<(), StoreError> {
        // The database may not exist yet; ask without it.
        self.client
            .clone()
            .with_database("default")
            .query("SELECT 1")
            .fetch_one::<u8>()
            .await
            .map(drop)
            .map_err(self.err("ping"))
    }

    /// Upserts window rows into `activity_1m`.
    pub async fn insert_activity(&self, rows: &[ActivityRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut insert = self
            .client
            .insert::<ActivityRow>("activity_1m")
            .await
            .map_err(self.err("insert into activity_1m"))?;
        for row in rows {
            insert
                .write(row)
                .await
                .map_err(self.err("insert into activity_1m"))?;
        }
        insert
            .end()
            .await
            .map_err(self.err("insert into activity_1m"))
    }

    /// Per-sector totals of the final view of `activity_1m`.
    pub async fn sector_totals(&self) -> Result<Vec<SectorTotal>, StoreError> {
        self.client
            .query(
                "SELECT sector, count() AS windows, sum(txn_count) AS txn_count, sum(amount_idr_sum) AS amount_idr_sum \
                 FROM activity_1m FINAL GROUP BY sector ORDER BY sector",
            )
            .fetch_all::<SectorTotal>()
            .await
            .map_err(self.err("read activity_1m"))
    }

    /// Every row of the final view of `activity_1m`, ordered by key.
    pub async fn activity_rows(&self) -> Result<Vec<ActivityRow>, StoreError> {
        self.client
            .query(
                "SELECT window_start, district_code, sector, txn_count, amount_idr_sum, merchants_active, is_final, version, updated_at \
                 FROM activity_1m FINAL ORDER BY district_code, sector, window_start",
            )
            .fetch_all::<ActivityRow>()
            .await
            .map_err(self.err("read activity_1m"))
    }
}
