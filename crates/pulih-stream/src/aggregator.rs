//! The Kafka-consuming aggregator: `pulih.payments.v1` in; `activity_1m`
//! and `merchant_activity_daily` out, exactly once (`docs/semantics.md`).
//!
//! One thread owns a `BaseConsumer` and the core's partitions and does all
//! the work in order:
//! - **assign**: each partition is restored from ClickHouse (its checkpoint,
//!   the rows it may still change, the event ids it must remember) and
//!   consumption starts at the checkpoint's offset, not at Kafka's committed
//!   offset;
//! - **records** are decoded and folded; records that cannot be counted (not
//!   decodable, or too late) go to the dead-letter topic;
//! - **flush**, every `emit_interval`: load the rows late records need,
//!   then write dedup entries, merchant-days and windows, make sure the
//!   dead letters are acknowledged, write the checkpoints, and only then
//!   commit the Kafka offsets (which serve monitoring);
//! - **stall**: while a flush fails, consumption is paused, the flush is
//!   retried with capped exponential backoff and `pulih_aggregate_stalled`
//!   is 1; the group membership is kept because the consumer keeps polling;
//! - **revoke**: the partitions are flushed and committed, then forgotten.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pulih_event::Reference;
use pulih_store::{ActivityRow, DailyRow, PaymentRow, Store, StoreError};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde::Serialize;

use crate::core::{self, CoreConfig, Flush, Outcome, Partition};
use crate::decode::decode;
use crate::metrics::Metrics;

/// How long one ClickHouse call may take before it is abandoned and retried.
const STORE_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of one aggregator process.
#[derive(Debug, Clone)]
pub struct AggregatorConfig {
    pub brokers: String,
    pub topic: String,
    /// Dead-letter topic for records that cannot be counted.
    pub dlq_topic: String,
    pub group_id: String,
    pub core: CoreConfig,
    pub emit_interval: Duration,
    /// A partition without records for this long stops holding the
    /// operator watermark back.
    pub idle_timeout: Duration,
    /// Stop once every assigned partition has been read to its end, and
    /// treat every window as final (for batch runs and tests).
    pub exit_at_end: bool,
    /// Raw librdkafka settings, applied last.
    pub kafka_options: BTreeMap<String, String>,
    /// Also write every counted record to the `payments` table.
    pub archive_payments: bool,
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunStats {
    pub records: u64,
    pub applied: u64,
    pub late: u64,
    pub replayed: u64,
    pub duplicates: u64,
    pub too_late: u64,
    pub undecodable: u64,
    pub rows_written: u64,
    pub flushes: u64,
}

impl RunStats {
    /// Counts one outcome; returns its metric label.
    fn count(&mut self, outcome: Outcome) -> &'static str {
        let (counter, label) = match outcome {
            Outcome::Applied => (&mut self.applied, "applied"),
            Outcome::Late => (&mut self.late, "late"),
            Outcome::Replayed => (&mut self.replayed, "replayed"),
            Outcome::Duplicate => (&mut self.duplicates, "duplicate"),
            Outcome::TooLate => (&mut self.too_late, "too_late"),
        };
        *counter += 1;
        label
    }
}

/// Why the aggregator stopped.
#[derive(Debug)]
pub enum AggregateError {
    Kafka { brokers: String, source: KafkaError },
    Thread(String),
}

impl std::fmt::Display for AggregateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AggregateError::Kafka { brokers, source } => write!(
                f,
                "Kafka at {brokers}: {source} (is the broker running? `deploy/local/services.sh up` starts one on 127.0.0.1:9092)"
            ),
            AggregateError::Thread(e) => write!(f, "the aggregator thread failed: {e}"),
        }
    }
}

impl std::error::Error for AggregateError {}

/// A record on the dead-letter topic.
#[derive(Debug, Serialize)]
struct DeadLetter<'a> {
    reason: &'a str,
    detail: String,
    topic: &'a str,
    partition: i32,
    offset: i64,
    /// The record as it was, lossy UTF-8.
    record: String,
}

struct Part {
    core: Partition,
    last_record: Instant,
    at_end: bool,
}

/// Everything the consumer thread owns; shared with the rebalance callback,
/// which runs inside `poll` on the same thread.
struct State {
    parts: HashMap<i32, Part>,
    stats: RunStats,
    /// A flush taken from the core but not yet durable.
    pending: Option<(Flush, Vec<DeadRecord>, Vec<PaymentRow>)>,
    /// Dead letters of records folded since the last take.
    dead: Vec<DeadRecord>,
    /// Counted records since the last take, with `archive_payments`.
    payments: Vec<PaymentRow>,
}

/// A dead-letter record to produce: (source partition, JSON payload).
type DeadRecord = (i32, Vec<u8>);

struct Shared {
    config: AggregatorConfig,
    reference: Arc<Reference>,
    store: Store,
    rt: tokio::runtime::Handle,
    metrics: Metrics,
    dlq: ThreadedProducer<DefaultProducerContext>,
    shutdown: Arc<AtomicBool>,
    state: Mutex<State>,
    hang_at: Option<(String, u32)>,
    hang_count: AtomicU32,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs a ClickHouse call to completion or until `STORE_TIMEOUT`. A
    /// call that timed out may still succeed on the server; retrying it is
    /// safe because every write is idempotent (docs/semantics.md).
    fn block_on<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, String> {
        self.block_on_for(STORE_TIMEOUT, f)
    }

    fn block_on_for<T>(
        &self,
        limit: Duration,
        f: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, String> {
        match self.rt.block_on(tokio::time::timeout(limit, f)) {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!(
                "ClickHouse did not answer within {} s",
                limit.as_secs()
            )),
        }
    }

    /// Restores one partition, retrying until ClickHouse answers (or the
    /// process is asked to stop).
    fn restore(&self, partition: i32) -> Option<Partition> {
        let mut backoff = Duration::from_millis(100);
        loop {
            // A restore reads a whole dedup horizon: give it longer.
            match self.block_on_for(STORE_TIMEOUT * 20, self.try_restore(partition)) {
                Ok(p) => return Some(p),
                Err(error) => {
                    self.metrics.store_errors.inc();
                    tracing::warn!(message = "Cannot restore a partition from ClickHouse; retrying.", partition, %error, backoff_ms = backoff.as_millis() as u64);
                }
            }
            if self.shutdown.load(Ordering::Relaxed) {
                return None;
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn try_restore(&self, partition: i32) -> Result<Partition, StoreError> {
        let c = &self.config;
        let checkpoint = self.store.checkpoint(&c.topic, partition).await?;
        let scope = core::restore_scope(partition, &c.core, checkpoint.as_ref());
        let activity = self
            .store
            .restore_activity(scope, c.core.window_ms / 1000)
            .await?;
        let daily = self.store.restore_daily(scope).await?;
        let since = core::dedup_since_ms(&c.core, checkpoint.as_ref());
        let before = checkpoint.as_ref().map_or(0, |c| c.next_offset);
        let dedup = self
            .store
            .dedup_entries(&c.topic, partition, since, before)
            .await?;
        tracing::info!(
            message = "Partition restored.",
            partition,
            next_offset = before,
            windows = activity.len(),
            merchant_days = daily.len(),
            remembered_events = dedup.len()
        );
        Ok(Partition::restore(
            partition,
            c.core,
            checkpoint.as_ref(),
            activity,
            daily,
            dedup,
        ))
    }

    /// Takes a flush from the given partitions (all when `None`) unless one
    /// is already pending, then tries to make it durable once.
    fn try_flush(&self, only: Option<&[i32]>, all_final: bool) -> Result<bool, String> {
        let mut st = self.state();
        if st.pending.is_none() {
            self.advance_watermarks(&mut st);
            let ids: Vec<i32> = match only {
                Some(ids) => ids.to_vec(),
                None => st.parts.keys().copied().collect(),
            };
            // Rows that late records need.
            for id in &ids {
                let Some(part) = st.parts.get_mut(id) else {
                    continue;
                };
                let wanted = part.core.wanted();
                if wanted.is_empty() {
                    continue;
                }
                let windows: Vec<_> = wanted
                    .windows
                    .iter()
                    .map(|k| {
                        (
                            (k.start_ms / 1000) as u32,
                            core::district_str(&k.district).to_owned(),
                            k.sector.as_str().to_owned(),
                        )
                    })
                    .collect();
                let days: Vec<_> = wanted
                    .days
                    .iter()
                    .map(|k| {
                        (
                            k.day as u16,
                            core::district_str(&k.district).to_owned(),
                            k.sector.as_str().to_owned(),
                            k.merchant,
                        )
                    })
                    .collect();
                let (a, d): (Vec<ActivityRow>, Vec<DailyRow>) = self.block_on(async {
                    Ok((
                        self.store.activity_for(&windows).await?,
                        self.store.daily_for(&days).await?,
                    ))
                })?;
                part.core.supply(a, d);
            }
            let now_s = now_secs();
            let mut flush = Flush::default();
            for id in &ids {
                if let Some(part) = st.parts.get_mut(id) {
                    flush.append(part.core.take(
                        &self.config.topic,
                        &self.config.group_id,
                        all_final,
                        now_s,
                    ));
                }
            }
            let dead = std::mem::take(&mut st.dead);
            let payments = std::mem::take(&mut st.payments);
            st.pending = Some((flush, dead, payments));
        }
        let (flush, dead, payments) = st.pending.as_ref().expect("set above");
        if flush.is_empty() && dead.is_empty() && payments.is_empty() {
            st.pending = None;
            return Ok(false);
        }
        let started = Instant::now();
        self.write(flush, dead, payments)?;
        self.metrics
            .flush_seconds
            .observe(started.elapsed().as_secs_f64());
        let rows = (flush.activity.len() + flush.daily.len()) as u64;
        self.metrics
            .rows_written
            .with_label_values(&["activity_1m"])
            .inc_by(flush.activity.len() as u64);
        self.metrics
            .rows_written
            .with_label_values(&["merchant_activity_daily"])
            .inc_by(flush.daily.len() as u64);
        self.metrics
            .rows_written
            .with_label_values(&["payments"])
            .inc_by(payments.len() as u64);
        st.stats.rows_written += rows;
        st.stats.flushes += 1;
        st.pending = None;
        Ok(true)
    }

    /// Makes everything the given partitions folded durable: a flush that
    /// was already pending (it may not cover them) and then a new one.
    fn flush_fully(&self, only: Option<&[i32]>, all_final: bool) -> Result<(), String> {
        let had_pending = self.state().pending.is_some();
        self.try_flush(only, all_final)?;
        if had_pending {
            self.try_flush(only, all_final)?;
        }
        Ok(())
    }

    /// Makes one flush durable, in the order the correctness argument
    /// needs: raw records (idempotent by key, so any time before the
    /// checkpoint), dedup entries and rows, dead letters, then checkpoints.
    fn write(
        &self,
        flush: &Flush,
        dead: &[DeadRecord],
        payments: &[PaymentRow],
    ) -> Result<(), String> {
        self.block_on(self.store.insert_payments(payments))?;
        self.block_on(self.store.insert_dedup(&flush.dedup))?;
        self.fault_point("after_dedup");
        self.block_on(self.store.insert_daily(&flush.daily))?;
        self.fault_point("after_daily");
        self.block_on(self.store.insert_activity(&flush.activity))?;
        self.fault_point("after_activity");
        if !dead.is_empty() {
            for (partition, payload) in dead {
                let key = partition.to_string();
                let mut record = BaseRecord::to(&self.config.dlq_topic)
                    .key(&key)
                    .payload(payload);
                // A full queue: let it drain.
                loop {
                    match self.dlq.send(record) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                            record = r;
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        Err((e, _)) => return Err(format!("dead-letter topic: {e}")),
                    }
                }
            }
            self.dlq
                .flush(Duration::from_secs(30))
                .map_err(|e| format!("dead-letter topic: {e}"))?;
            self.fault_point("after_dead_letters");
        }
        self.block_on(self.store.insert_checkpoints(&flush.checkpoints))?;
        self.fault_point("after_checkpoint");
        Ok(())
    }

    /// Fault injection for crash tests: with `PULIH_TEST_HANG_AT=STEP:N`,
    /// the N-th time (from 1) a flush passes STEP the process logs it and
    /// hangs, so a test can kill -9 it at exactly that point.
    fn fault_point(&self, step: &str) {
        let Some((at, n)) = &self.hang_at else {
            return;
        };
        if at != step {
            return;
        }
        let seen = self.hang_count.fetch_add(1, Ordering::Relaxed) + 1;
        if seen == *n {
            tracing::warn!(
                message = "Hanging at a fault point (PULIH_TEST_HANG_AT).",
                step
            );
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
    }

    /// Operator watermark: the minimum over assigned partitions that have
    /// seen records and are not idle.
    fn advance_watermarks(&self, st: &mut State) {
        let idle = self.config.idle_timeout;
        let operator = st
            .parts
            .values()
            .filter(|p| p.last_record.elapsed() < idle && !p.at_end)
            .filter_map(|p| p.core.partition_watermark_ms())
            .min();
        // With every partition idle, the highest one leads.
        let operator = operator.or_else(|| {
            st.parts
                .values()
                .filter_map(|p| p.core.partition_watermark_ms())
                .max()
        });
        let mut windows = 0;
        let mut days = 0;
        let mut dedup = 0;
        for (id, p) in st.parts.iter_mut() {
            p.core.advance(operator);
            let (w, d, e) = p.core.sizes();
            windows += w;
            days += d;
            dedup += e;
            if p.core.watermark_ms() > i64::MIN {
                self.metrics
                    .partition_watermark_seconds
                    .with_label_values(&[&id.to_string()])
                    .set(p.core.watermark_ms() as f64 / 1000.0);
            }
        }
        if let Some(w) = operator {
            self.metrics.watermark_seconds.set(w as f64 / 1000.0);
        }
        self.metrics.resident_windows.set(windows as i64);
        self.metrics.resident_merchant_days.set(days as i64);
        self.metrics.dedup_entries.set(dedup as i64);
    }

    fn commit(&self, consumer: &BaseConsumer<Ctx>, ids: Option<&[i32]>) {
        let st = self.state();
        let mut tpl = TopicPartitionList::new();
        for (id, p) in &st.parts {
            if ids.is_some_and(|ids| !ids.contains(id)) {
                continue;
            }
            let _ = tpl.add_partition_offset(
                &self.config.topic,
                *id,
                Offset::Offset(p.core.next_offset()),
            );
        }
        drop(st);
        if tpl.count() > 0 {
            if let Err(error) = consumer.commit(&tpl, CommitMode::Async) {
                tracing::debug!(message = "Offset commit failed; the next flush commits again.", %error);
            }
        }
    }
}

/// The consumer context: logs client errors and runs rebalances.
struct Ctx {
    shared: Arc<Shared>,
}

impl ClientContext for Ctx {
    /// librdkafka's statistics (`statistics.interval.ms`): the consumer
    /// lag of the assigned partitions, in records.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let Some(topic) = statistics.topics.get(&self.shared.config.topic) else {
            return;
        };
        let lag: i64 = topic
            .partitions
            .values()
            .filter(|p| p.partition >= 0 && p.consumer_lag >= 0)
            .map(|p| p.consumer_lag)
            .sum();
        self.shared.metrics.consumer_lag.set(lag);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let eof = matches!(error, KafkaError::PartitionEOF(_))
            || matches!(error, KafkaError::Global(RDKafkaErrorCode::PartitionEOF));
        if !eof {
            tracing::error!(message = "Kafka client error.", %error, reason);
        }
    }
}

impl ConsumerContext for Ctx {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let shared = &self.shared;
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let ids: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let mut restored = Vec::new();
                for &id in &ids {
                    let Some(core) = shared.restore(id) else {
                        return;
                    };
                    let offset = core.next_offset();
                    let _ = tpl.set_partition_offset(
                        &shared.config.topic,
                        id,
                        if offset > 0 {
                            Offset::Offset(offset)
                        } else {
                            Offset::Beginning
                        },
                    );
                    restored.push((id, core));
                }
                {
                    let mut st = shared.state();
                    for (id, core) in restored {
                        st.parts.insert(
                            id,
                            Part {
                                core,
                                last_record: Instant::now(),
                                at_end: false,
                            },
                        );
                    }
                    shared
                        .metrics
                        .assigned_partitions
                        .set(st.parts.len() as i64);
                }
                let result = if cooperative {
                    consumer.incremental_assign(tpl).map(drop)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(error) = result {
                    tracing::error!(message = "Cannot take the assigned partitions.", %error);
                }
                tracing::info!(message = "Partitions assigned.", partitions = ?ids);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                // Make what these partitions folded durable, within a bound:
                // if ClickHouse is down, the next owner replays from the
                // last checkpoint instead, which is just as correct.
                let deadline = Instant::now() + Duration::from_secs(30);
                let mut backoff = Duration::from_millis(100);
                loop {
                    match shared.flush_fully(Some(&ids), false) {
                        Ok(()) => break,
                        Err(e) => tracing::warn!(message = "Flush on revoke failed.", error = %e),
                    }
                    if Instant::now() >= deadline || shared.shutdown.load(Ordering::Relaxed) {
                        tracing::warn!(message = "Giving up revoked partitions without a final flush; their next owner replays from the last checkpoint.", partitions = ?ids);
                        break;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                shared.commit(consumer, Some(&ids));
                {
                    let mut st = shared.state();
                    for id in &ids {
                        st.parts.remove(id);
                    }
                    // A flush still pending keeps its rows of these
                    // partitions: writing them later is harmless, since
                    // the next owner's rows carry higher versions and
                    // checkpoints only move forward.
                    shared
                        .metrics
                        .assigned_partitions
                        .set(st.parts.len() as i64);
                }
                let result = if cooperative {
                    consumer.incremental_unassign(tpl).map(drop)
                } else {
                    consumer.unassign()
                };
                if let Err(error) = result {
                    tracing::error!(message = "Cannot release the revoked partitions.", %error);
                }
                tracing::info!(message = "Partitions revoked.", partitions = ?ids);
            }
            other => {
                tracing::error!(message = "Rebalance error.", error = ?other);
                let _ = consumer.unassign();
            }
        }
    }
}

fn now_secs() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

fn kafka_err(config: &AggregatorConfig) -> impl FnOnce(KafkaError) -> AggregateError + '_ {
    move |source| AggregateError::Kafka {
        brokers: config.brokers.clone(),
        source,
    }
}

/// Runs until `shutdown` resolves (or, with `exit_at_end`, until the input
/// is exhausted), flushing before it returns.
pub async fn run(
    config: AggregatorConfig,
    store: Store,
    reference: Arc<Reference>,
    metrics: Metrics,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<RunStats, AggregateError> {
    let stop = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Handle::current();
    let flag = stop.clone();
    let mut worker = tokio::task::spawn_blocking(move || {
        run_blocking(config, store, reference, metrics, rt, flag)
    });
    tokio::select! {
        r = &mut worker => r.map_err(|e| AggregateError::Thread(e.to_string()))?,
        _ = shutdown => {
            stop.store(true, Ordering::Relaxed);
            worker.await.map_err(|e| AggregateError::Thread(e.to_string()))?
        }
    }
}

/// The consumer thread. `rt` runs the ClickHouse calls.
pub fn run_blocking(
    config: AggregatorConfig,
    store: Store,
    reference: Arc<Reference>,
    metrics: Metrics,
    rt: tokio::runtime::Handle,
    shutdown: Arc<AtomicBool>,
) -> Result<RunStats, AggregateError> {
    let mut pc = ClientConfig::new();
    pc.set("bootstrap.servers", &config.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all");
    const CONSUMER_ONLY: [&str; 7] = [
        "session.",
        "heartbeat.",
        "partition.assignment.",
        "group.",
        "auto.offset.",
        "enable.auto.",
        "max.poll.",
    ];
    for (k, v) in &config.kafka_options {
        if !CONSUMER_ONLY.iter().any(|p| k.starts_with(p)) {
            pc.set(k, v);
        }
    }
    let dlq: ThreadedProducer<DefaultProducerContext> = pc.create().map_err(kafka_err(&config))?;

    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &config.brokers)
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        // Only the partitions that move are revoked on a rebalance, so the
        // others keep their state; it also recovers a crashed member's
        // partitions reliably on Tansu.
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("statistics.interval.ms", "1000")
        .set(
            "enable.partition.eof",
            if config.exit_at_end { "true" } else { "false" },
        );
    for (k, v) in &config.kafka_options {
        cc.set(k, v);
    }
    let shared = Arc::new(Shared {
        config: config.clone(),
        reference,
        store,
        rt,
        metrics: metrics.clone(),
        dlq,
        shutdown: shutdown.clone(),
        state: Mutex::new(State {
            parts: HashMap::new(),
            stats: RunStats::default(),
            pending: None,
            dead: Vec::new(),
            payments: Vec::new(),
        }),
        hang_at: std::env::var("PULIH_TEST_HANG_AT").ok().and_then(|v| {
            let (step, n) = v.split_once(':').unwrap_or((v.as_str(), "1"));
            Some((step.to_owned(), n.parse().ok()?))
        }),
        hang_count: AtomicU32::new(0),
    });
    let consumer: BaseConsumer<Ctx> = cc
        .create_with_context(Ctx {
            shared: shared.clone(),
        })
        .map_err(kafka_err(&config))?;
    consumer
        .subscribe(&[&config.topic])
        .map_err(kafka_err(&config))?;
    tracing::info!(message = "Aggregator started.", topic = %config.topic, group = %config.group_id);

    let mut last_flush = Instant::now();
    let mut backoff = Duration::from_millis(100);
    let mut stalled = false;
    let mut last_prune = Instant::now() - Duration::from_secs(3600);
    loop {
        if shutdown.load(Ordering::Relaxed) {
            tracing::info!(message = "Shutting down: flushing.");
            break;
        }
        let wait = if stalled {
            backoff
        } else {
            Duration::from_millis(50)
        };
        match consumer.poll(wait) {
            Some(Ok(m)) => handle(&shared, &m),
            Some(Err(KafkaError::PartitionEOF(p))) => {
                if let Some(part) = shared.state().parts.get_mut(&p) {
                    part.at_end = true;
                }
            }
            Some(Err(error)) => tracing::warn!(message = "Kafka consumer error.", %error),
            None => {}
        }
        let due = if stalled {
            true
        } else {
            last_flush.elapsed() >= config.emit_interval
        };
        if !due {
            continue;
        }
        let at_end = config.exit_at_end && {
            let st = shared.state();
            !st.parts.is_empty() && st.parts.values().all(|p| p.at_end)
        };
        match shared.try_flush(None, false) {
            Ok(_) => {
                if stalled {
                    tracing::info!(message = "ClickHouse writes succeed again; resuming.");
                    set_paused(&consumer, false);
                    shared.metrics.stalled.set(0);
                    stalled = false;
                    backoff = Duration::from_millis(100);
                }
                last_flush = Instant::now();
                shared.commit(&consumer, None);
                if at_end {
                    break;
                }
            }
            Err(error) => {
                shared.metrics.store_errors.inc();
                if !stalled {
                    set_paused(&consumer, true);
                    shared.metrics.stalled.set(1);
                    stalled = true;
                } else {
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                tracing::warn!(message = "Flush failed; consumption paused, retrying.", %error, backoff_ms = backoff.as_millis() as u64);
            }
        }
        if !stalled && last_prune.elapsed() > Duration::from_secs(3600) {
            last_prune = Instant::now();
            prune(&shared);
        }
    }
    // Final flush: everything folded becomes durable (or is replayed by the
    // next owner if ClickHouse stays down).
    let mut backoff = Duration::from_millis(100);
    for _ in 0..20 {
        match shared.flush_fully(None, config.exit_at_end) {
            Ok(()) => break,
            Err(error) => tracing::warn!(message = "Final flush failed; retrying.", %error),
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
    shared.commit(&consumer, None);
    let stats = shared.state().stats.clone();
    tracing::info!(
        message = "Aggregator stopped.",
        records = stats.records,
        applied = stats.applied,
        late = stats.late,
        replayed = stats.replayed,
        duplicates = stats.duplicates,
        too_late = stats.too_late,
        undecodable = stats.undecodable,
        rows_written = stats.rows_written
    );
    Ok(stats)
}

fn set_paused(consumer: &BaseConsumer<Ctx>, paused: bool) {
    let Ok(assignment) = consumer.assignment() else {
        return;
    };
    let result = if paused {
        consumer.pause(&assignment)
    } else {
        consumer.resume(&assignment)
    };
    if let Err(error) = result {
        tracing::warn!(message = "Cannot pause or resume partitions.", paused, %error);
    }
}

/// The `payments` row of a record.
fn payment_row(payload: &[u8], partition: i32, offset: i64, ts_ms: i64) -> Option<PaymentRow> {
    let r = pulih_event::PaymentRecord::from_json(payload).ok()?;
    let mut merchant_key = [0u8; 32];
    hex::decode_to_slice(&r.merchant_key, &mut merchant_key).ok()?;
    let ms = r.occurred_at.unix_millis();
    Some(PaymentRow {
        producer_id: r.producer_id,
        event_id: r.event_id,
        occurred_at: u32::try_from(ms.div_euclid(1000)).ok()?,
        occurred_ms: ms.rem_euclid(1000) as u16,
        day: u16::try_from((ms + core::JAKARTA_OFFSET_MS).div_euclid(86_400_000)).ok()?,
        merchant_key,
        merchant_key_id: r.merchant_key_id,
        district_code: r.district_code,
        sector: r.sector.as_str().to_owned(),
        kbli_code: r.kbli_code.unwrap_or_default(),
        amount_idr: r.amount_idr,
        channel: r.channel.as_str().to_owned(),
        merchant_size: r.merchant_size.as_str().to_owned(),
        accepted_at: u32::try_from(ts_ms.div_euclid(1000)).unwrap_or(0),
        source_partition: partition,
        source_offset: offset,
    })
}

/// Drops dedup partitions that no restore can read any more.
fn prune(shared: &Shared) {
    let horizon_days = shared.config.core.dedup_horizon_ms / 86_400_000 + 2;
    let today = i64::from(now_secs()) / 86_400;
    let before = u16::try_from(today - horizon_days).unwrap_or(0);
    match shared.block_on(shared.store.prune_dedup(before)) {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            message = "Dropped old de-duplication partitions.",
            partitions = n
        ),
        Err(error) => {
            tracing::warn!(message = "Cannot drop old de-duplication partitions.", %error)
        }
    }
}

fn handle(shared: &Shared, m: &BorrowedMessage<'_>) {
    let mut st = shared.state();
    let st = &mut *st;
    let p = m.partition();
    let Some(part) = st.parts.get_mut(&p) else {
        return;
    };
    part.last_record = Instant::now();
    part.at_end = false;
    st.stats.records += 1;
    let payload = m.payload().unwrap_or(&[]);
    match decode(payload, &shared.reference) {
        Ok(event) => {
            let ts = m.timestamp().to_millis().unwrap_or(event.occurred_ms);
            let outcome = part.core.fold(m.offset(), ts, &event);
            let label = st.stats.count(outcome);
            let counted = matches!(
                outcome,
                Outcome::Applied | Outcome::Late | Outcome::Replayed
            );
            if shared.config.archive_payments && counted {
                match payment_row(payload, p, m.offset(), ts) {
                    Some(row) => st.payments.push(row),
                    None => tracing::warn!(
                        message =
                            "Counted record not archived: it does not parse as a payment record.",
                        partition = p,
                        offset = m.offset()
                    ),
                }
            }
            if outcome == Outcome::TooLate {
                st.dead.push((
                    p,
                    dead_letter(
                        shared,
                        m,
                        "too_late",
                        "event time is behind the watermark by more than the correction horizon"
                            .into(),
                    ),
                ));
                shared
                    .metrics
                    .dead_lettered
                    .with_label_values(&["too_late"])
                    .inc();
            }
            shared.metrics.records.with_label_values(&[label]).inc();
        }
        Err(error) => {
            part.core.skip(m.offset());
            st.stats.undecodable += 1;
            tracing::warn!(
                message = "Undecodable record dead-lettered.",
                partition = p,
                offset = m.offset(),
                reason = error.code()
            );
            st.dead
                .push((p, dead_letter(shared, m, error.code(), error.to_string())));
            shared
                .metrics
                .dead_lettered
                .with_label_values(&[error.code()])
                .inc();
            shared
                .metrics
                .records
                .with_label_values(&["undecodable"])
                .inc();
        }
    }
}

fn dead_letter(shared: &Shared, m: &BorrowedMessage<'_>, reason: &str, detail: String) -> Vec<u8> {
    let raw = m.payload().unwrap_or(&[]);
    let raw = &raw[..raw.len().min(64 * 1024)];
    serde_json::to_vec(&DeadLetter {
        reason,
        detail,
        topic: &shared.config.topic,
        partition: m.partition(),
        offset: m.offset(),
        record: String::from_utf8_lossy(raw).into_owned(),
    })
    .unwrap_or_default()
}
