//! ClickHouse storage for pulih: the versioned migrations in
//! `schemas/clickhouse/`, the writer the aggregator upserts window rows
//! with, and the queries the CLI reports from.
//!
//! It uses the official `clickhouse` crate over HTTP with schema validation
//! turned off, because ClickHouse 18.16 (the server the tests run against)
//! lacks `RowBinaryWithNamesAndTypes`; the row structs here therefore must
//! match the column order of their tables, which the integration tests check.

mod alerts;
pub mod cluster;
mod migrate;
mod rollup;

pub use migrate::{
    analytics_database, public_database, MigrateError, Migration, MigrationStatus, MIGRATIONS,
};
pub use rollup::{kota_map, RollupReport};

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
    /// The ClickHouse cluster (`remote_servers`) to run on; empty for one
    /// server. On a cluster the migrations run in their cluster form
    /// ([`cluster`]) and inserts into Distributed tables are synchronous.
    pub cluster: String,
    /// On a cluster: how many replicas of a shard must have an insert
    /// before ClickHouse acknowledges it (`insert_quorum`); 1 turns the
    /// quorum off. Reads then refuse a replica that lacks an acknowledged
    /// insert (`select_sequential_consistency`). Unused on one server.
    pub insert_quorum: u32,
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

/// ClickHouse error codes that the same call can never get past by being
/// retried: a missing database, table or column, a malformed query or a
/// row that does not fit the table, a refused account.
const FATAL_CODES: &[u32] = &[
    16,  // NO_SUCH_COLUMN_IN_TABLE
    27,  // CANNOT_PARSE_INPUT_ASSERTION_FAILED
    47,  // UNKNOWN_IDENTIFIER
    53,  // TYPE_MISMATCH
    60,  // UNKNOWN_TABLE
    62,  // SYNTAX_ERROR
    81,  // UNKNOWN_DATABASE
    117, // INCORRECT_DATA
    164, // READONLY
    192, // UNKNOWN_USER
    193, // WRONG_PASSWORD
    194, // REQUIRED_PASSWORD
    291, // DATABASE_ACCESS_DENIED
    497, // ACCESS_DENIED
    516, // AUTHENTICATION_FAILED
];

impl StoreError {
    /// Whether retrying the same call can succeed. Network failures,
    /// timeouts and a server that is overloaded or restarting can pass; a
    /// missing table or column, a refused account, a malformed query or a
    /// row the table's schema does not match cannot. (Vector's ClickHouse
    /// sink draws the same line.)
    pub fn is_retryable(&self) -> bool {
        use clickhouse::error::Error;
        match &self.source {
            Error::BadResponse(text) => {
                error_code(text).is_none_or(|code| !FATAL_CODES.contains(&code))
            }
            Error::SchemaMismatch(_) | Error::InvalidParams(_) | Error::Unsupported(_) => false,
            _ => true,
        }
    }
}

/// The number after `Code: ` in a ClickHouse error response.
fn error_code(text: &str) -> Option<u32> {
    let rest = &text[text.find("Code: ")? + 6..];
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    rest[..digits].parse().ok()
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// One row of `activity_1m_by_producer`, in column order.
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, Serialize, Deserialize)]
pub struct ActivityRow {
    /// Seconds since the epoch, UTC.
    pub window_start: u32,
    pub district_code: String,
    pub sector: String,
    /// The producer whose events the row counts; empty in rows written
    /// before migration 0025, which count every producer of their window.
    pub producer_id: String,
    pub txn_count: u64,
    pub amount_idr_sum: u64,
    pub amount_idr_min: u64,
    pub amount_idr_max: u64,
    pub merchants_active: u32,
    pub txn_qris: u64,
    pub txn_debit_card: u64,
    pub txn_credit_card: u64,
    pub txn_ewallet: u64,
    pub txn_bank_transfer: u64,
    pub txn_other: u64,
    pub txn_micro: u64,
    pub txn_small: u64,
    pub txn_medium: u64,
    pub is_final: u8,
    pub source_partition: i32,
    pub source_offset: i64,
    /// Empty in open rows written since migration 0022: the window's
    /// merchants are in `aggregator_counted_by_producer` ([`SeenRow::merchants`]).
    /// Final rows, and older rows, carry all of them here, sorted.
    pub merchant_keys: Vec<[u8; 32]>,
    pub version: u64,
    pub updated_at: u32,
}

impl ActivityRow {
    /// Transactions per channel, in the order of `Channel::ALL`.
    pub fn txn_by_channel(&self) -> [u64; 6] {
        [
            self.txn_qris,
            self.txn_debit_card,
            self.txn_credit_card,
            self.txn_ewallet,
            self.txn_bank_transfer,
            self.txn_other,
        ]
    }

    /// Transactions per merchant size, in the order of `MerchantSize::ALL`.
    pub fn txn_by_size(&self) -> [u64; 3] {
        [self.txn_micro, self.txn_small, self.txn_medium]
    }
}

/// The columns of `activity_1m_by_producer`, in the order of [`ActivityRow`].
pub const ACTIVITY_COLUMNS: &[&str] = &[
    "window_start",
    "district_code",
    "sector",
    "producer_id",
    "txn_count",
    "amount_idr_sum",
    "amount_idr_min",
    "amount_idr_max",
    "merchants_active",
    "txn_qris",
    "txn_debit_card",
    "txn_credit_card",
    "txn_ewallet",
    "txn_bank_transfer",
    "txn_other",
    "txn_micro",
    "txn_small",
    "txn_medium",
    "is_final",
    "source_partition",
    "source_offset",
    "merchant_keys",
    "version",
    "updated_at",
];

/// One row of `merchant_activity_daily_by_time`, in column order.
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, Serialize, Deserialize)]
pub struct DailyRow {
    /// Days since 1970-01-01, in Asia/Jakarta time.
    pub day: u16,
    pub district_code: String,
    pub sector: String,
    pub merchant_key: [u8; 32],
    pub txn_count: u64,
    pub amount_idr_sum: u64,
    pub is_final: u8,
    pub source_partition: i32,
    pub source_offset: i64,
    pub version: u64,
    pub updated_at: u32,
}

/// The columns of `merchant_activity_daily_by_time`, in the order of [`DailyRow`].
pub const DAILY_COLUMNS: &[&str] = &[
    "day",
    "district_code",
    "sector",
    "merchant_key",
    "txn_count",
    "amount_idr_sum",
    "is_final",
    "source_partition",
    "source_offset",
    "version",
    "updated_at",
];

/// One row of `payments`, in column order.
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, Serialize, Deserialize)]
pub struct PaymentRow {
    pub producer_id: String,
    pub event_id: String,
    /// Seconds since the epoch, UTC.
    pub occurred_at: u32,
    /// The milliseconds of `occurred_at`.
    pub occurred_ms: u16,
    /// Days since 1970-01-01, in Asia/Jakarta time.
    pub day: u16,
    pub merchant_key: [u8; 32],
    pub merchant_key_id: String,
    pub district_code: String,
    pub sector: String,
    /// Empty when the producer sent none.
    pub kbli_code: String,
    pub amount_idr: u64,
    pub channel: String,
    pub merchant_size: String,
    /// The Kafka timestamp: when the gateway accepted the event.
    pub accepted_at: u32,
    pub source_partition: i32,
    pub source_offset: i64,
}

/// One row of `aggregator_checkpoint`.
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, Serialize, Deserialize)]
pub struct CheckpointRow {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
    pub max_event_ms: i64,
    pub max_ts_ms: i64,
    pub group_id: String,
    pub updated_at: u32,
}

/// One row of `aggregator_watermark`: a partition's event time is
/// complete up to `watermark_ms`.
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, Serialize, Deserialize)]
pub struct WatermarkRow {
    pub topic: String,
    pub partition: i32,
    pub watermark_ms: i64,
    pub updated_at: u32,
}

/// One row of `merchant_producer`: the producer a merchant key belongs to.
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, Serialize, Deserialize)]
pub struct MerchantProducerRow {
    pub merchant_key: [u8; 32],
    pub producer_id: String,
    pub first_seen: u32,
}

/// One row of `merchant_key_link`: a merchant's key and its key under the
/// pseudonymisation secret being retired.
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, Serialize, Deserialize)]
pub struct MerchantLinkRow {
    pub merchant_key: [u8; 32],
    pub previous_key: [u8; 32],
    pub first_seen: u32,
}

/// One row of `aggregator_counted_by_producer` (`aggregator_counted` before
/// migration 0023): the events and the merchants newly counted in a window
/// in one flush.
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, Serialize, Deserialize)]
pub struct SeenRow {
    pub topic: String,
    pub partition: i32,
    pub district_code: String,
    pub sector: String,
    /// As [`ActivityRow::producer_id`].
    pub producer_id: String,
    pub window_start: u32,
    /// XXH3-128 of (producer_id, event_id), big-endian.
    pub fingerprints: Vec<[u8; 16]>,
    /// Offset of each event's first occurrence in the partition, in the
    /// order of `fingerprints`.
    pub offsets: Vec<i64>,
    /// Merchant keys new to the window.
    pub merchants: Vec<[u8; 32]>,
    /// Offset of the record that brought each merchant, in the order of
    /// `merchants`; -1 for the merchants of a row another partition wrote
    /// (or written before migration 0022), taken over.
    pub merchant_offsets: Vec<i64>,
}

impl SeenRow {
    /// The (fingerprint, first offset) pairs; a row whose arrays differ
    /// in length (not written by pulih) yields the common prefix.
    pub fn pairs(&self) -> impl Iterator<Item = ([u8; 16], i64)> + '_ {
        self.fingerprints
            .iter()
            .copied()
            .zip(self.offsets.iter().copied())
    }

    /// The (merchant, offset) pairs, as [`SeenRow::pairs`].
    pub fn merchant_pairs(&self) -> impl Iterator<Item = ([u8; 32], i64)> + '_ {
        self.merchants
            .iter()
            .copied()
            .zip(self.merchant_offsets.iter().copied())
    }
}

/// What a restore reads for one Kafka partition (see docs/semantics.md):
/// the rows of its windows still open on their producers' clocks and of
/// its merchant-days still open at its checkpoint's watermark, and what
/// was counted in those windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreScope {
    pub partition: i32,
    /// Merchant-days of the Jakarta days that end after this (seconds)
    /// are restored.
    pub open_after_s: i64,
    /// Per producer id (empty for rows written before migration 0025),
    /// its windows that end after the given time (seconds) are restored;
    /// those of producers not listed are not.
    pub windows_open_after: Vec<(String, i64)>,
}

/// One row of `aggregator_producer_clock`: a producer's clock in a
/// partition at a checkpoint (or after it), written before the checkpoint.
/// The empty producer id holds the partition's floor in `watermark_ms`.
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, Serialize, Deserialize)]
pub struct ClockRow {
    pub topic: String,
    pub partition: i32,
    pub producer_id: String,
    pub next_offset: i64,
    /// `i64::MIN` before the producer's first record.
    pub max_event_ms: i64,
    pub last_ts_ms: i64,
    pub watermark_ms: i64,
    pub updated_at: u32,
}

/// The open state of the partitions of a restore, as the store holds it.
#[derive(Debug, Clone, Default)]
pub struct Restored {
    pub activity: Vec<ActivityRow>,
    pub daily: Vec<DailyRow>,
    pub seen: Vec<SeenRow>,
}

/// Totals over `activity_1m_by_producer FINAL`.
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
    cluster: String,
}

impl Store {
    pub fn new(config: &StoreConfig) -> Store {
        let mut client = clickhouse::Client::default()
            .with_url(&config.url)
            .with_user(&config.user)
            .with_password(&config.password)
            .with_database(&config.database)
            .with_validation(false);
        if !config.cluster.is_empty() {
            // A Distributed insert returns once every shard has its rows,
            // not when they are queued on this node. A Distributed read
            // asks every shard over the network, this node's included:
            // ClickHouse 18.16 drops the version column of a FINAL read
            // it serves from the local shard directly ("Cannot find
            // column version in source stream").
            client = client
                .with_setting("insert_distributed_sync", "1")
                .with_setting("prefer_localhost_replica", "0");
            if config.insert_quorum > 1 {
                // An insert is acknowledged once `insert_quorum` replicas
                // of each shard have it, so a checkpoint, written after
                // the rows it covers, is never durable before them; and a
                // read from a replica that lacks an acknowledged insert
                // fails (and is retried) instead of answering from the
                // past (docs/semantics.md, "A cluster").
                client = client
                    .with_setting("insert_quorum", config.insert_quorum.to_string())
                    .with_setting("insert_quorum_timeout", "60000")
                    .with_setting("select_sequential_consistency", "1");
            }
        }
        Store {
            client,
            url: config.url.clone(),
            database: config.database.clone(),
            cluster: config.cluster.clone(),
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
        // The database may not exist yet; ask in `system`, which every
        // account may read.
        self.client
            .clone()
            .with_database("system")
            .query("SELECT 1")
            .fetch_one::<u8>()
            .await
            .map(drop)
            .map_err(self.err("ping"))
    }

    async fn insert_rows<R>(&self, table: &str, rows: &[R]) -> Result<(), StoreError>
    where
        R: clickhouse::RowOwned + clickhouse::RowWrite,
    {
        self.insert_rows_into(&self.database, table, rows).await
    }

    async fn insert_rows_into<R>(
        &self,
        database: &str,
        table: &str,
        rows: &[R],
    ) -> Result<(), StoreError>
    where
        R: clickhouse::RowOwned + clickhouse::RowWrite,
    {
        if rows.is_empty() {
            return Ok(());
        }
        let action = format!("insert into {database}.{table}");
        let mut insert = self
            .client
            .clone()
            .with_database(database)
            .insert::<R>(table)
            .await
            .map_err(self.err(action.clone()))?;
        for row in rows {
            insert.write(row).await.map_err(self.err(action.clone()))?;
        }
        insert.end().await.map_err(self.err(action))
    }

    /// Upserts window rows into `activity_1m_by_producer`.
    pub async fn insert_activity(&self, rows: &[ActivityRow]) -> Result<(), StoreError> {
        self.insert_rows("activity_1m_by_producer", rows).await
    }

    /// Inserts raw records into `payments`.
    pub async fn insert_payments(&self, rows: &[PaymentRow]) -> Result<(), StoreError> {
        self.insert_rows("payments", rows).await
    }

    /// Upserts rows into `merchant_activity_daily_by_time`.
    pub async fn insert_daily(&self, rows: &[DailyRow]) -> Result<(), StoreError> {
        self.insert_rows("merchant_activity_daily_by_time", rows)
            .await
    }

    /// Appends the fingerprints and merchants of counted events to
    /// `aggregator_counted_by_producer`.
    pub async fn insert_seen(&self, rows: &[SeenRow]) -> Result<(), StoreError> {
        self.insert_rows("aggregator_counted_by_producer", rows)
            .await
    }

    /// Records the producers of merchant keys in `merchant_producer`.
    pub async fn insert_merchant_producers(
        &self,
        rows: &[MerchantProducerRow],
    ) -> Result<(), StoreError> {
        self.insert_rows("merchant_producer", rows).await
    }

    /// Records links between merchant keys across a rotation of the
    /// pseudonymisation secret (`merchant_key_link`).
    pub async fn insert_merchant_links(&self, rows: &[MerchantLinkRow]) -> Result<(), StoreError> {
        self.insert_rows("merchant_key_link", rows).await
    }

    /// Records producers' clocks in `aggregator_producer_clock`.
    pub async fn insert_clocks(&self, rows: &[ClockRow]) -> Result<(), StoreError> {
        self.insert_rows("aggregator_producer_clock", rows).await
    }

    /// The latest clock of every producer of `partition` of `topic`, and
    /// its floor (the empty producer id).
    pub async fn clocks(&self, topic: &str, partition: i32) -> Result<Vec<ClockRow>, StoreError> {
        self.client
            .query(
                "SELECT topic, partition, producer_id, max(next_offset), argMax(max_event_ms, next_offset), \
                 argMax(last_ts_ms, next_offset), argMax(watermark_ms, next_offset), max(updated_at) \
                 FROM aggregator_producer_clock WHERE topic = ? AND partition = ? \
                 GROUP BY topic, partition, producer_id ORDER BY producer_id",
            )
            .bind(topic)
            .bind(partition)
            .fetch_all::<ClockRow>()
            .await
            .map_err(self.err("read aggregator_producer_clock"))
    }

    /// Records how far partitions are complete in `aggregator_watermark`.
    pub async fn insert_watermarks(&self, rows: &[WatermarkRow]) -> Result<(), StoreError> {
        self.insert_rows("aggregator_watermark", rows).await
    }

    /// How far `topic`'s event time is complete: the lowest watermark over
    /// its partitions (milliseconds), once every partition the layout
    /// records has one; `None` before that.
    pub async fn complete_through(&self, topic: &str) -> Result<Option<i64>, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Progress {
            partitions: u64,
            watermark_ms: i64,
            expected: i32,
        }
        let p = self
            .client
            .query(
                "SELECT count() AS partitions, min(w) AS watermark_ms, \
                 (SELECT argMin(partition_count, recorded_at) FROM aggregator_layout WHERE topic = ?) AS expected \
                 FROM (SELECT partition, max(watermark_ms) AS w FROM aggregator_watermark \
                 WHERE topic = ? GROUP BY partition)",
            )
            .bind(topic)
            .bind(topic)
            .fetch_one::<Progress>()
            .await
            .map_err(self.err("read aggregator_watermark"))?;
        Ok((p.expected > 0 && p.partitions >= p.expected as u64).then_some(p.watermark_ms))
    }

    /// Records checkpoints in `aggregator_checkpoint`.
    pub async fn insert_checkpoints(&self, rows: &[CheckpointRow]) -> Result<(), StoreError> {
        self.insert_rows("aggregator_checkpoint", rows).await
    }

    /// The partition count recorded for `topic`: the one already there,
    /// or `partition_count` when this is the first run on the topic.
    pub async fn record_layout(
        &self,
        topic: &str,
        partition_count: i32,
    ) -> Result<i32, StoreError> {
        let recorded = || async {
            self.client
                .query(
                    "SELECT argMin(partition_count, recorded_at) FROM aggregator_layout \
                     WHERE topic = ? GROUP BY topic",
                )
                .bind(topic)
                .fetch_optional::<i32>()
                .await
                .map_err(self.err("read aggregator_layout"))
        };
        if let Some(count) = recorded().await? {
            return Ok(count);
        }
        #[derive(clickhouse::Row, Serialize, Deserialize)]
        struct Layout {
            topic: String,
            partition_count: i32,
            recorded_at: u32,
        }
        let now = (pulih_event::calendar::now_ms() / 1000) as u32;
        self.insert_rows(
            "aggregator_layout",
            &[Layout {
                topic: topic.to_owned(),
                partition_count,
                recorded_at: now,
            }],
        )
        .await?;
        // Two first runs at once: the earliest row wins for both.
        Ok(recorded().await?.unwrap_or(partition_count))
    }

    /// The latest checkpoint of a partition, if any.
    pub async fn checkpoint(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Option<CheckpointRow>, StoreError> {
        self.client
            .query(
                "SELECT topic, partition, argMax(next_offset, next_offset), argMax(max_event_ms, next_offset), \
                 argMax(max_ts_ms, next_offset), argMax(group_id, next_offset), argMax(updated_at, next_offset) \
                 FROM aggregator_checkpoint WHERE topic = ? AND partition = ? GROUP BY topic, partition",
            )
            .bind(topic)
            .bind(partition)
            .fetch_optional::<CheckpointRow>()
            .await
            .map_err(self.err("read aggregator_checkpoint"))
    }

    /// The lowest watermark over the latest checkpoints of `topic`'s
    /// partitions (highest event time, milliseconds), once every partition
    /// the layout records has one: a partition without a checkpoint
    /// restores all its rows, however old.
    pub async fn checkpointed_event_time(&self, topic: &str) -> Result<Option<i64>, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Progress {
            partitions: u64,
            t: i64,
            expected: i32,
        }
        let p = self
            .client
            .query(
                "SELECT count() AS partitions, min(t) AS t, \
                 (SELECT argMin(partition_count, recorded_at) FROM aggregator_layout WHERE topic = ?) AS expected \
                 FROM (SELECT partition, argMax(max_event_ms, next_offset) AS t \
                 FROM aggregator_checkpoint WHERE topic = ? GROUP BY partition)",
            )
            .bind(topic)
            .bind(topic)
            .fetch_one::<Progress>()
            .await
            .map_err(self.err("read aggregator_checkpoint"))?;
        let every = p.expected > 0 && p.partitions >= p.expected as u64;
        Ok(Some(p.t).filter(|&t| every && t != i64::MIN && t != 0))
    }

    /// Drops the monthly partitions of `aggregator_counted_by_producer` before
    /// `before_month` (`YYYYMM`); returns the months dropped. The months
    /// are read through the table (on a cluster, the Distributed table:
    /// any shard's rows); on a cluster each is dropped from
    /// `aggregator_counted_by_producer_local` on every shard, `ON CLUSTER`.
    pub async fn prune_seen(&self, before_month: u32) -> Result<Vec<u32>, StoreError> {
        let mut months: Vec<u32> = self
            .client
            .query(
                "SELECT DISTINCT toYYYYMM(window_start) FROM aggregator_counted_by_producer \
                 WHERE toYYYYMM(window_start) < ?",
            )
            .bind(before_month)
            .fetch_all()
            .await
            .map_err(self.err("list aggregator_counted_by_producer months"))?;
        months.sort_unstable();
        let drop = |month: u32| {
            if self.cluster.is_empty() {
                format!("ALTER TABLE aggregator_counted_by_producer DROP PARTITION {month}")
            } else {
                format!(
                    "ALTER TABLE `{}`.aggregator_counted_by_producer_local ON CLUSTER `{}` DROP PARTITION {month}",
                    self.database, self.cluster
                )
            }
        };
        for &month in &months {
            self.client
                .query(&drop(month))
                .execute()
                .await
                .map_err(self.err("drop an aggregator_counted_by_producer partition"))?;
        }
        Ok(months)
    }

    /// The open state of several partitions of `topic`, in one scan of
    /// each table: the latest rows of the windows and merchant-days each
    /// partition's scope keeps open, and what those partitions counted in
    /// windows that could be open. Every filter is in `WHERE`, on the
    /// partition that wrote a row (a cell's rows all come from the one
    /// partition its key maps to, since `aggregator_layout` fixes the
    /// count) and on the window's start or the day, which lead the
    /// months the tables are partitioned by; the versions of a row are
    /// merged with `FINAL`, so nothing is held in a hash table.
    pub async fn restore_open(
        &self,
        topic: &str,
        scopes: &[RestoreScope],
        window_secs: i64,
    ) -> Result<Restored, StoreError> {
        let Some(from_s) = scopes.iter().map(|s| s.open_after_s).min() else {
            return Ok(Restored::default());
        };
        let open_after = |partition: i32| {
            scopes
                .iter()
                .find(|s| s.partition == partition)
                .map(|s| s.open_after_s)
        };
        let window_open_after = |partition: i32, producer: &str| {
            scopes
                .iter()
                .find(|s| s.partition == partition)
                .and_then(|s| s.windows_open_after.iter().find(|(p, _)| p == producer))
                .map(|(_, after)| *after)
        };
        let partitions = scopes
            .iter()
            .map(|s| s.partition.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        // The windows that could be open: per partition, each producer's
        // rows that start after its watermark less a window. The producer
        // leads the sorting key, so each condition reads that producer's
        // granules of those minutes only.
        let windows_open = scopes
            .iter()
            .flat_map(|s| {
                s.windows_open_after.iter().map(move |(producer, after)| {
                    format!(
                        "({{p}} = {} AND producer_id = '{}' AND window_start > toDateTime({}))",
                        s.partition,
                        escape(producer),
                        (after - window_secs).max(0)
                    )
                })
            })
            .collect::<Vec<_>>();
        let windows_open = if windows_open.is_empty() {
            "0".to_owned()
        } else {
            windows_open.join(" OR ")
        };
        let offset = pulih_event::calendar::OFFSET_SECS;
        let first_day = (from_s + offset).div_euclid(86_400).max(0);
        // Named in each query, for `system.query_log`.
        let database = &self.database;

        // `FINAL` merges the versions of each row as it reads, in key
        // order, where a `GROUP BY` would hold every open row in a hash
        // table (1.3 GB for Jakarta's merchant-days by evening,
        // docs/benchmarks.md). Filtering before or after the merge gives
        // the same rows here: every version of a row has the same window or
        // day, and the same writing partition.
        // A final row's merchants' keys are not read: the merchants of a
        // window since migration 0022 are in `aggregator_counted_by_producer`,
        // read below, and reading the keys of every final row the scan passes
        // was most of what the restore held in memory.
        let columns = ACTIVITY_COLUMNS
            .iter()
            .map(|&c| match c {
                "merchant_keys" => "CAST([] AS Array(FixedString(32))) AS merchant_keys",
                c => c,
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "/* pulih restore of {database} */ SELECT {columns} FROM activity_1m_by_producer FINAL \
             WHERE {}",
            windows_open.replace("{p}", "source_partition")
        );
        let mut activity = self
            .client
            .query(&sql)
            .with_setting("log_queries", "1")
            .fetch_all::<ActivityRow>()
            .await
            .map_err(self.err("restore from activity_1m_by_producer"))?;
        activity.retain(|r| {
            window_open_after(r.source_partition, &r.producer_id)
                .is_some_and(|after| i64::from(r.window_start) + window_secs > after)
        });

        let sql = format!(
            "/* pulih restore of {database} */ SELECT {} FROM merchant_activity_daily_by_time FINAL \
             WHERE day >= toDate(?) AND source_partition IN ({partitions})",
            DAILY_COLUMNS.join(", ")
        );
        let mut daily = self
            .client
            .query(&sql)
            .with_setting("log_queries", "1")
            .bind(iso_date(first_day))
            .fetch_all::<DailyRow>()
            .await
            .map_err(self.err("restore from merchant_activity_daily_by_time"))?;
        daily.retain(|r| {
            open_after(r.source_partition)
                .is_some_and(|after| (i64::from(r.day) + 1) * 86_400 - offset > after)
        });

        let sql = format!(
            "/* pulih restore of {database} */ SELECT topic, partition, district_code, sector, producer_id, window_start, fingerprints, offsets, \
             merchants, merchant_offsets FROM aggregator_counted_by_producer WHERE topic = ? \
             AND ({})",
            windows_open.replace("{p}", "partition")
        );
        let seen = self
            .client
            .query(&sql)
            .with_setting("log_queries", "1")
            .bind(topic)
            .fetch_all::<SeenRow>()
            .await
            .map_err(self.err("restore from aggregator_counted_by_producer"))?;
        Ok(Restored {
            activity,
            daily,
            seen,
        })
    }

    /// The latest rows that `partition` wrote of every window that starts
    /// in the given hours (their first seconds).
    pub async fn activity_in(
        &self,
        partition: i32,
        hours: &[u32],
    ) -> Result<Vec<ActivityRow>, StoreError> {
        if hours.is_empty() {
            return Ok(Vec::new());
        }
        let within = hours_within(hours);
        self.latest_in(
            "activity_1m_by_producer",
            ACTIVITY_COLUMNS,
            4,
            partition,
            &within,
        )
        .await
    }

    /// What `partition` counted in the windows that start in the given
    /// hours (their first seconds).
    pub async fn seen_in(
        &self,
        topic: &str,
        partition: i32,
        hours: &[u32],
    ) -> Result<Vec<SeenRow>, StoreError> {
        if hours.is_empty() {
            return Ok(Vec::new());
        }
        let within = hours_within(hours);
        let sql = format!(
            "SELECT topic, partition, district_code, sector, producer_id, window_start, fingerprints, offsets, \
             merchants, merchant_offsets FROM aggregator_counted_by_producer WHERE topic = ? \
             AND ({within}) AND partition = {partition}"
        );
        self.client
            .query(&sql)
            .bind(topic)
            .fetch_all::<SeenRow>()
            .await
            .map_err(self.err("read aggregator_counted_by_producer"))
    }

    /// The latest rows that `partition` wrote of every merchant-day of the
    /// given days.
    pub async fn daily_in(
        &self,
        partition: i32,
        days: &[u16],
    ) -> Result<Vec<DailyRow>, StoreError> {
        if days.is_empty() {
            return Ok(Vec::new());
        }
        let within = ranges(days, 1, |a, b| {
            format!(
                "day >= toDate('{}') AND day < toDate('{}')",
                iso_date(a as i64),
                iso_date(b as i64)
            )
        });
        self.latest_in(
            "merchant_activity_daily_by_time",
            DAILY_COLUMNS,
            4,
            partition,
            &within,
        )
        .await
    }

    /// The latest version of each row of `table` (its key the first
    /// `keys` of `columns`) that `partition` wrote, of those `within`
    /// selects.
    async fn latest_in<R>(
        &self,
        table: &str,
        columns: &[&str],
        keys: usize,
        partition: i32,
        within: &str,
    ) -> Result<Vec<R>, StoreError>
    where
        R: clickhouse::RowOwned + clickhouse::RowRead,
    {
        let select = latest_select(table, columns, keys);
        let key = columns[..keys].join(", ");
        let sql =
            format!("{select} WHERE source_partition = {partition} AND ({within}) GROUP BY {key}");
        self.client
            .query(&sql)
            .fetch_all::<R>()
            .await
            .map_err(self.err(&format!("read {table}")))
    }

    /// Transactions counted so far in one (district, sector) cell, in the
    /// windows that start at `since_s` (Unix seconds) or later: the
    /// granules of those windows only, however long the cell's history.
    pub async fn cell_txn_count(
        &self,
        district: &str,
        sector: &str,
        since_s: u32,
    ) -> Result<u64, StoreError> {
        self.client
            .query(
                "SELECT toUInt64(sum(txn_count)) FROM activity_1m_by_producer FINAL \
                 WHERE window_start >= toDateTime(?, 'UTC') AND district_code = ? AND sector = ?",
            )
            .bind(since_s)
            .bind(district)
            .bind(sector)
            .fetch_one::<u64>()
            .await
            .map_err(self.err("read activity_1m_by_producer"))
    }

    /// Every row of the final view of `merchant_activity_daily_by_time`, ordered by key.
    pub async fn daily_rows(&self) -> Result<Vec<DailyRow>, StoreError> {
        self.client
            .query(&format!(
                "SELECT {} FROM merchant_activity_daily_by_time FINAL ORDER BY district_code, sector, day, merchant_key",
                DAILY_COLUMNS.join(", ")
            ))
            .fetch_all::<DailyRow>()
            .await
            .map_err(self.err("read merchant_activity_daily_by_time"))
    }

    /// Per-sector totals of the final view of `activity_1m_by_producer`.
    pub async fn sector_totals(&self) -> Result<Vec<SectorTotal>, StoreError> {
        self.client
            .query(
                "SELECT sector, count() AS windows, sum(txn_count) AS txn_count, sum(amount_idr_sum) AS amount_idr_sum \
                 FROM activity_1m_by_producer FINAL GROUP BY sector ORDER BY sector",
            )
            .fetch_all::<SectorTotal>()
            .await
            .map_err(self.err("read activity_1m_by_producer"))
    }

    /// Every row of the final view of `activity_1m_by_producer`, ordered by key.
    pub async fn activity_rows(&self) -> Result<Vec<ActivityRow>, StoreError> {
        self.client
            .query(&format!(
                "SELECT {} FROM activity_1m_by_producer FINAL ORDER BY district_code, sector, window_start, producer_id",
                ACTIVITY_COLUMNS.join(", ")
            ))
            .fetch_all::<ActivityRow>()
            .await
            .map_err(self.err("read activity_1m_by_producer"))
    }
}

/// `s` in a single-quoted SQL string.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "\\'")
}

/// The event time one read-back range of windows covers (the core's
/// `HOUR_MS`), in seconds.
const HOUR_SECS: u64 = 3_600;

/// A condition that selects the windows that start in the given hours
/// (their first seconds).
fn hours_within(hours: &[u32]) -> String {
    ranges(hours, HOUR_SECS, |a, b| {
        format!("window_start >= toDateTime({a}) AND window_start < toDateTime({b})")
    })
}

/// A condition that selects the given starts of ranges of `step` each:
/// runs of consecutive starts are joined into one `range(from, to)`, the
/// runs by `OR`, so that ClickHouse reads only the granules of each run.
fn ranges<T: Copy + Into<u64>>(
    starts: &[T],
    step: u64,
    range: impl Fn(u64, u64) -> String,
) -> String {
    let mut starts: Vec<u64> = starts.iter().map(|&s| s.into()).collect();
    starts.sort_unstable();
    starts.dedup();
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for s in starts {
        match runs.last_mut() {
            Some((_, to)) if *to == s => *to = s + step,
            _ => runs.push((s, s + step)),
        }
    }
    runs.into_iter()
        .map(|(a, b)| format!("({})", range(a, b)))
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// `SELECT` of the latest version of each key: the first `keys` columns
/// are the grouping key, the rest are taken with `argMax(.., version)`.
/// (Used instead of `FINAL` + `WHERE`, whose filtering order differs
/// between ClickHouse releases.)
fn latest_select(table: &str, columns: &[&str], keys: usize) -> String {
    let cols: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i < keys {
                (*c).to_owned()
            } else if *c == "version" {
                "max(version)".to_owned()
            } else {
                format!("argMax({c}, version)")
            }
        })
        .collect();
    format!("SELECT {} FROM {table}", cols.join(", "))
}

/// A ClickHouse string literal.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// `YYYY-MM-DD` of a day number (days since 1970-01-01).
pub fn iso_date(days: i64) -> String {
    let (y, m, d) = pulih_event::calendar::civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates() {
        assert_eq!(iso_date(0), "1970-01-01");
        assert_eq!(iso_date(19_782), "2024-02-29");
        assert_eq!(iso_date(19_783), "2024-03-01");
        assert_eq!(iso_date(11_016), "2000-02-29");
    }

    #[test]
    fn quotes_literals() {
        assert_eq!(quote("31.74.09"), "'31.74.09'");
        assert_eq!(quote("a'b\\c"), "'a\\'b\\\\c'");
    }
}

#[cfg(test)]
mod error_tests {
    use super::*;

    fn bad_response(text: &str) -> StoreError {
        StoreError {
            url: "http://x".into(),
            action: "insert".into(),
            source: clickhouse::error::Error::BadResponse(text.into()),
        }
    }

    #[test]
    fn missing_tables_and_refused_accounts_are_not_retried() {
        assert_eq!(
            error_code(
                "Code: 60, e.displayText() = DB::Exception: Table x.payments doesn't exist."
            ),
            Some(60)
        );
        assert!(!bad_response(
            "Code: 60, e.displayText() = DB::Exception: Table x.payments doesn't exist."
        )
        .is_retryable());
        assert!(
            !bad_response("Code: 516. DB::Exception: default: Authentication failed")
                .is_retryable()
        );
        assert!(bad_response("Code: 252. DB::Exception: Too many parts (300).").is_retryable());
        assert!(bad_response("Service Unavailable").is_retryable());
        let network = StoreError {
            url: "http://x".into(),
            action: "insert".into(),
            source: clickhouse::error::Error::TimedOut,
        };
        assert!(network.is_retryable());
    }
}
