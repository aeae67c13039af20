//! The Kafka-consuming aggregator: `pulih.payments.v1` in, `activity_1m` out.
//!
//! Loop: receive records and fold them into the [`Windows`] core; every
//! `emit_interval` upsert the windows that changed, then commit the offsets
//! of everything folded so far. Offsets are committed only after the insert
//! succeeded, so a crash never loses an event. When ClickHouse fails, the
//! insert is retried with capped exponential backoff and nothing is consumed
//! meanwhile.
//!
//! Known limits of this version: window state lives in memory only, so after
//! a restart an open window is rebuilt from the committed offset onwards and
//! its row can be overwritten with a partial count; and the watermark is
//! global to the process rather than per partition. Both are addressed by
//! the exactly-once design in `docs/semantics.md`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pulih_event::PaymentRecord;
use pulih_store::{ActivityRow, Store};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::window::{Fold, WindowConfig, WindowRow, Windows};

/// Settings of one aggregator process.
#[derive(Debug, Clone)]
pub struct AggregatorConfig {
    pub brokers: String,
    pub topic: String,
    pub group_id: String,
    pub window: WindowConfig,
    pub emit_interval: Duration,
    /// Stop once every assigned partition has been read to its end (for
    /// batch runs and tests with a single process).
    pub exit_at_end: bool,
    /// Raw librdkafka settings, applied last.
    pub kafka_options: BTreeMap<String, String>,
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunStats {
    pub records: u64,
    pub applied: u64,
    pub late: u64,
    pub undecodable: u64,
    pub rows_written: u64,
    pub flushes: u64,
}

/// Why the aggregator stopped.
#[derive(Debug)]
pub enum AggregateError {
    Kafka { brokers: String, source: KafkaError },
}

impl std::fmt::Display for AggregateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AggregateError::Kafka { brokers, source } => write!(
                f,
                "Kafka at {brokers}: {source} (is the broker running? `deploy/local/services.sh up` starts one on 127.0.0.1:9092)"
            ),
        }
    }
}

impl std::error::Error for AggregateError {}

/// Logs client errors through `tracing`, except reaching the end of a
/// partition, which `exit_at_end` asks for and is not an error.
pub struct Context;

impl ClientContext for Context {
    fn error(&self, error: KafkaError, reason: &str) {
        let eof = matches!(error, KafkaError::PartitionEOF(_))
            || matches!(error, KafkaError::Global(RDKafkaErrorCode::PartitionEOF));
        if !eof {
            tracing::error!(message = "Kafka client error.", %error, reason);
        }
    }
}

impl ConsumerContext for Context {}

type Consumer_ = StreamConsumer<Context>;

fn consumer(config: &AggregatorConfig) -> Result<Consumer_, AggregateError> {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &config.brokers)
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set(
            "enable.partition.eof",
            if config.exit_at_end { "true" } else { "false" },
        );
    for (k, v) in &config.kafka_options {
        cc.set(k, v);
    }
    cc.create_with_context(Context)
        .map_err(|source| AggregateError::Kafka {
            brokers: config.brokers.clone(),
            source,
        })
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Converts core rows to table rows. `version` is the emit time in
/// microseconds, so a later emission of a window always wins.
pub fn to_activity_rows(rows: &[WindowRow], version: u64) -> Vec<ActivityRow> {
    let updated_at = (version / 1_000_000) as u32;
    rows.iter()
        .filter_map(|r| {
            let start = u32::try_from(r.key.window_start_ms.div_euclid(1000)).ok()?;
            Some(ActivityRow {
                window_start: start,
                district_code: r.key.district_code.clone(),
                sector: r.key.sector.as_str().to_owned(),
                txn_count: r.txn_count,
                amount_idr_sum: r.amount_idr_sum,
                merchants_active: r.merchants_active,
                is_final: u8::from(r.is_final),
                version,
                updated_at,
            })
        })
        .collect()
}

/// Runs until `shutdown` resolves (or, with `exit_at_end`, until the input
/// is exhausted), flushing and committing before it returns.
pub async fn run(
    config: AggregatorConfig,
    store: Store,
    shutdown: impl Future<Output = ()>,
) -> Result<RunStats, AggregateError> {
    let consumer = consumer(&config)?;
    consumer
        .subscribe(&[&config.topic])
        .map_err(|source| AggregateError::Kafka {
            brokers: config.brokers.clone(),
            source,
        })?;
    tracing::info!(message = "Aggregator started.", topic = %config.topic, group = %config.group_id);

    let mut windows = Windows::new(config.window);
    let mut stats = RunStats::default();
    // Next offset to commit per partition, for records folded but not yet committed.
    let mut pending: HashMap<i32, i64> = HashMap::new();
    let mut at_end: HashSet<i32> = HashSet::new();
    let mut tick = tokio::time::interval(config.emit_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);

    loop {
        tokio::select! {
            _ = &mut shutdown => {
                tracing::info!(message = "Shutting down: flushing open windows.");
                break;
            }
            _ = tick.tick() => {
                flush(&consumer, &config, &store, &mut windows, &mut pending, &mut stats, false).await;
                if config.exit_at_end && is_at_end(&consumer, &at_end) {
                    break;
                }
            }
            msg = consumer.recv() => match msg {
                Ok(m) => {
                    at_end.remove(&m.partition());
                    stats.records += 1;
                    pending.insert(m.partition(), m.offset() + 1);
                    match m.payload().map(PaymentRecord::from_json) {
                        Some(Ok(record)) => match windows.fold(&record) {
                            Fold::Applied => stats.applied += 1,
                            Fold::Late => {
                                stats.late += 1;
                                tracing::warn!(message = "Late record not counted: its window is already final.",
                                    partition = m.partition(), offset = m.offset(), occurred_at = %record.occurred_at);
                            }
                            Fold::BadMerchantKey => {
                                stats.undecodable += 1;
                                tracing::warn!(message = "Record with a malformed merchant_key skipped.", partition = m.partition(), offset = m.offset());
                            }
                        },
                        Some(Err(error)) => {
                            stats.undecodable += 1;
                            tracing::warn!(message = "Undecodable record skipped.", partition = m.partition(), offset = m.offset(), %error);
                        }
                        None => {
                            stats.undecodable += 1;
                            tracing::warn!(message = "Record without payload skipped.", partition = m.partition(), offset = m.offset());
                        }
                    }
                }
                Err(KafkaError::PartitionEOF(p)) => {
                    at_end.insert(p);
                }
                Err(error) => {
                    tracing::warn!(message = "Kafka consumer error.", %error);
                }
            }
        }
    }
    flush(
        &consumer,
        &config,
        &store,
        &mut windows,
        &mut pending,
        &mut stats,
        false,
    )
    .await;
    tracing::info!(
        message = "Aggregator stopped.",
        records = stats.records,
        applied = stats.applied,
        late = stats.late,
        undecodable = stats.undecodable,
        rows_written = stats.rows_written
    );
    Ok(stats)
}

fn is_at_end(consumer: &Consumer_, at_end: &HashSet<i32>) -> bool {
    let Ok(assignment) = consumer.assignment() else {
        return false;
    };
    let parts = assignment.elements();
    !parts.is_empty() && parts.iter().all(|e| at_end.contains(&e.partition()))
}

/// Upserts changed windows (retrying until it succeeds), then commits.
async fn flush(
    consumer: &Consumer_,
    config: &AggregatorConfig,
    store: &Store,
    windows: &mut Windows,
    pending: &mut HashMap<i32, i64>,
    stats: &mut RunStats,
    all_final: bool,
) {
    let rows = to_activity_rows(&windows.take_changes(all_final), now_micros());
    let mut backoff = Duration::from_millis(100);
    loop {
        match store.insert_activity(&rows).await {
            Ok(()) => break,
            Err(error) => {
                tracing::warn!(message = "Failed to write window rows; retrying.", %error, rows = rows.len(), backoff_ms = backoff.as_millis() as u64);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    stats.rows_written += rows.len() as u64;
    stats.flushes += u64::from(!rows.is_empty());
    if pending.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for (&p, &next) in pending.iter() {
        if let Err(error) = tpl.add_partition_offset(&config.topic, p, Offset::Offset(next)) {
            tracing::warn!(message = "Cannot build offset commit.", %error);
        }
    }
    match consumer.commit(&tpl, CommitMode::Sync) {
        Ok(()) => pending.clear(),
        // Kept in `pending`: committed with the next flush.
        Err(error) => {
            tracing::warn!(message = "Offset commit failed; will retry on the next flush.", %error)
        }
    }
}
