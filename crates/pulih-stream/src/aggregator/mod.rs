//! The Kafka-consuming aggregator: `pulih.payments.v1` in; `activity_1m_by_producer`
//! and `merchant_activity_daily_by_time` out, exactly once (`docs/semantics.md`).
//!
//! One thread owns a `BaseConsumer` and the core's partitions and does all
//! the work in order:
//! - **assign** (`assign.rs`): the process owns the partitions its
//!   instance index gives it; each is restored from ClickHouse (its
//!   checkpoint, the rows it may still change, the event ids it must
//!   remember) and consumed from the checkpoint's offset;
//! - **records** (`records.rs`) are decoded and folded; records that cannot
//!   be counted (not decodable, or too old) go to the dead-letter topic
//!   (`dead_letter.rs`), and counted ones optionally to the raw archive
//!   (`archive.rs`);
//! - **flush** (`flush.rs`), every `emit_interval`: the operator watermark
//!   (`watermark.rs`) closes rows; then load the rows late records need,
//!   write fingerprints and new merchants, merchant-days (those of open
//!   days every `daily_emit_interval`) and windows, make sure the dead
//!   letters are acknowledged, and write the checkpoints;
//! - **stall**: while a flush fails, consumption is paused, the flush is
//!   retried with capped exponential backoff and `pulih_aggregate_stalled`
//!   is 1;
//! - **layout**: the topic's partition count is checked periodically; a
//!   change stops the process (a cell's key would move to another
//!   partition).
//!
//! `fault.rs` holds the fault points the crash tests kill the process at.

mod archive;
mod assign;
mod dead_letter;
mod fault;
mod flush;
mod records;
pub mod watermark;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pulih_event::Reference;
use pulih_store::{MerchantLinkRow, MerchantProducerRow, PaymentRow, Store, StoreError};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;

pub use assign::owned_partitions;

use crate::core::{CoreConfig, Flush, Outcome, Partition, Prehashed};
use crate::metrics::Metrics;
use dead_letter::DeadRecord;
use fault::FaultPoints;

/// How long one ClickHouse call may take before it is abandoned and retried.
const STORE_TIMEOUT: Duration = Duration::from_secs(30);

/// Records of one partition that may wait for read-backs (late records
/// whose windows are not in memory) before a flush reads them back,
/// without waiting for the emit interval: what a flush holds pending is
/// bounded whatever the rate.
const PENDING_CAP: usize = 20_000;

/// Most merchant keys a process remembers having recorded the producer
/// (`merchant_producer`) or the link (`merchant_key_link`) of, each: just
/// under the 2^22-slot hash table's load limit, 138 MB of slots. Past it
/// the set is emptied, and merchants seen again are recorded again (the
/// tables keep one row per key). Jakarta's 4 million merchant-days a day
/// empty it about once a day, each time writing up to that many rows
/// again.
const KNOWN_MERCHANTS_CAP: usize = 3_600_000;

/// How often the topic's partition count is checked against the one the
/// process started with.
const LAYOUT_CHECK_EVERY: Duration = Duration::from_secs(30);

/// Settings of one aggregator process.
#[derive(Debug, Clone)]
pub struct AggregatorConfig {
    pub brokers: String,
    pub topic: String,
    /// Dead-letter topic for records that cannot be counted.
    pub dlq_topic: String,
    /// Names the deployment in the checkpoints it writes; no Kafka consumer
    /// group is joined or committed to.
    pub group_id: String,
    /// This process owns partition `p` when `p % instances == instance`.
    pub instance: u32,
    pub instances: u32,
    pub core: CoreConfig,
    pub emit_interval: Duration,
    /// Changed merchant-days that are still open are written this often
    /// (closed ones at once); the checkpoints wait for them.
    pub daily_emit_interval: Duration,
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
    /// Drop the fingerprints of windows this many days behind the
    /// checkpoints (whole months); 0 keeps them.
    pub dedup_retention_days: u32,
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunStats {
    pub records: u64,
    pub applied: u64,
    pub late: u64,
    pub replayed: u64,
    pub duplicates: u64,
    pub too_old: u64,
    /// Records whose key does not map to their partition.
    pub wrong_partition: u64,
    pub undecodable: u64,
    pub rows_written: u64,
    pub flushes: u64,
}

impl RunStats {
    /// Counts one outcome; returns its metric label (none for a pending
    /// record: it is counted once decided).
    fn count(&mut self, outcome: Outcome) -> Option<&'static str> {
        let (counter, label) = match outcome {
            Outcome::Pending => return None,
            Outcome::Applied => (&mut self.applied, "applied"),
            Outcome::Late => (&mut self.late, "late"),
            Outcome::Replayed => (&mut self.replayed, "replayed"),
            Outcome::Duplicate => (&mut self.duplicates, "duplicate"),
            Outcome::TooOld => (&mut self.too_old, "too_old"),
        };
        *counter += 1;
        Some(label)
    }
}

/// Why the aggregator stopped.
#[derive(Debug)]
pub enum AggregateError {
    Kafka {
        brokers: String,
        source: KafkaError,
    },
    /// The topic's partition count differs from the one recorded when an
    /// aggregator first ran on it, or changed while this one ran.
    PartitionCountChanged {
        topic: String,
        was: i32,
        now: i32,
    },
    /// A ClickHouse call or a dead letter failed in a way retrying cannot
    /// fix.
    Fatal(String),
    Thread(String),
}

impl std::fmt::Display for AggregateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AggregateError::Kafka { brokers, source } => write!(
                f,
                "Kafka at {brokers}: {source} (is the broker running? `deploy/local/services.sh up` starts one on 127.0.0.1:9092)"
            ),
            AggregateError::PartitionCountChanged { topic, was, now } => write!(
                f,
                "topic {topic} has {now} partitions, but {was} when its aggregation started (aggregator_layout): cells now map to other partitions, which would lose or double-count events; stopped (see \"Changing the partition count\" in docs/semantics.md)"
            ),
            AggregateError::Fatal(e) => write!(f, "{e}; stopped, since retrying cannot help"),
            AggregateError::Thread(e) => write!(f, "the aggregator thread failed: {e}"),
        }
    }
}

impl std::error::Error for AggregateError {}

/// A failed step of a flush or a restore, and whether trying it again can
/// succeed.
#[derive(Debug)]
struct Failure {
    message: String,
    retryable: bool,
}

impl Failure {
    fn retryable(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            retryable: true,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

struct Part {
    core: Partition,
    last_record: Instant,
    at_end: bool,
    /// The broker's latest high watermark (librdkafka's statistics); -1
    /// while unknown.
    hi_offset: i64,
}

/// Everything the consumer thread owns; the client callbacks, which run
/// inside `poll` on the same thread, read it too.
struct State {
    parts: HashMap<i32, Part>,
    /// Consumption is paused because a flush or a read-back fails: no
    /// partition is idle meanwhile.
    paused: bool,
    /// A partition holds `PENDING_CAP` records waiting for read-backs:
    /// flush now rather than at the next emit interval.
    flush_now: bool,
    /// The topic's partition count, from the broker at start.
    partition_count: i32,
    stats: RunStats,
    /// A flush taken from the core but not yet durable.
    pending: Option<Taken>,
    /// When a flush last wrote the open merchant-days.
    days_taken: Instant,
    /// Dead letters of records folded since the last take.
    dead: Vec<DeadRecord>,
    /// Counted records since the last take, with `archive_payments`.
    payments: Vec<PaymentRow>,
    /// Raw records of pending records, with `archive_payments`: archived
    /// once counted. By (partition, offset).
    pending_payments: HashMap<(i32, i64), PaymentRow>,
    /// Merchant keys whose producer this process has recorded (or is
    /// about to): one entry per merchant seen, emptied when it reaches
    /// [`KNOWN_MERCHANTS_CAP`].
    producers_known: HashSet<[u8; 32], Prehashed>,
    /// Producers of merchant keys seen first since the last take.
    producers: Vec<MerchantProducerRow>,
    /// Merchant keys whose link to their key under a retired
    /// pseudonymisation secret this process has recorded (or is about to).
    links_known: HashSet<[u8; 32], Prehashed>,
    /// Links of merchant keys seen first since the last take.
    links: Vec<MerchantLinkRow>,
}

/// Everything one flush makes durable, taken at once.
struct Taken {
    flush: Flush,
    dead: Vec<DeadRecord>,
    payments: Vec<PaymentRow>,
    producers: Vec<MerchantProducerRow>,
    links: Vec<MerchantLinkRow>,
}

struct Shared {
    config: AggregatorConfig,
    reference: Arc<Reference>,
    store: Store,
    rt: tokio::runtime::Handle,
    metrics: Metrics,
    dlq: FutureProducer,
    shutdown: Arc<AtomicBool>,
    state: Mutex<State>,
    faults: FaultPoints,
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
    ) -> Result<T, Failure> {
        self.block_on_for(STORE_TIMEOUT, f)
    }

    fn block_on_for<T>(
        &self,
        limit: Duration,
        f: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, Failure> {
        match self.rt.block_on(tokio::time::timeout(limit, f)) {
            Ok(r) => r.map_err(|e| match e.is_retryable() {
                true => Failure::retryable(e.to_string()),
                false => Failure {
                    retryable: false,
                    message: format!("{e} (if a table or column is missing, run `pulih migrate`)"),
                },
            }),
            Err(_) => Err(Failure::retryable(format!(
                "ClickHouse did not answer within {} s",
                limit.as_secs()
            ))),
        }
    }

    fn kafka_error(&self, source: KafkaError) -> AggregateError {
        AggregateError::Kafka {
            brokers: self.config.brokers.clone(),
            source,
        }
    }
}

/// The consumer context: logs client errors and reports consumer lag.
struct Ctx {
    shared: Arc<Shared>,
}

impl ClientContext for Ctx {
    /// librdkafka's statistics (`statistics.interval.ms`): the high
    /// watermark of each assigned partition, against the offset the
    /// partition will read next.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let Some(topic) = statistics.topics.get(&self.shared.config.topic) else {
            return;
        };
        let mut st = self.shared.state();
        let mut total = 0;
        for p in topic.partitions.values() {
            let Some(part) = st.parts.get_mut(&p.partition) else {
                continue;
            };
            if p.hi_offset < 0 {
                continue;
            }
            part.hi_offset = p.hi_offset;
            let lag = (p.hi_offset - part.core.next_offset()).max(0);
            total += lag;
            self.shared
                .metrics
                .partition_lag
                .with_label_values(&[&p.partition.to_string()])
                .set(lag);
        }
        self.shared.metrics.consumer_lag.set(total);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let eof = matches!(error, KafkaError::PartitionEOF(_))
            || matches!(error, KafkaError::Global(RDKafkaErrorCode::PartitionEOF));
        if !eof {
            tracing::error!(message = "Kafka client error.", %error, reason);
        }
    }
}

/// No rebalance callback: partitions are assigned by instance index, never
/// by the group coordinator.
impl ConsumerContext for Ctx {}

fn now_secs() -> u32 {
    (pulih_event::calendar::now_ms() / 1000) as u32
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
    let kafka_err = |source| AggregateError::Kafka {
        brokers: config.brokers.clone(),
        source,
    };
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
    let dlq: FutureProducer = pc.create().map_err(kafka_err)?;

    let mut cc = ClientConfig::new();
    // Partitions are assigned by instance index and positions come from the
    // checkpoints: the group id is set only because librdkafka's assign()
    // needs one. No group is joined and no offset is committed (Tansu 0.6.0
    // leaves offset commits of a group without members unanswered, and they
    // block the connection's other requests).
    cc.set("bootstrap.servers", &config.brokers)
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
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
            paused: false,
            flush_now: false,
            partition_count: 0,
            stats: RunStats::default(),
            pending: None,
            days_taken: Instant::now(),
            dead: Vec::new(),
            payments: Vec::new(),
            pending_payments: HashMap::new(),
            producers_known: HashSet::default(),
            producers: Vec::new(),
            links_known: HashSet::default(),
            links: Vec::new(),
        }),
        faults: FaultPoints::from_env(),
    });
    let consumer: BaseConsumer<Ctx> = cc
        .create_with_context(Ctx {
            shared: shared.clone(),
        })
        .map_err(kafka_err)?;
    tracing::info!(
        message = "Aggregator started.",
        topic = %config.topic,
        instance = config.instance,
        instances = config.instances
    );

    let Some(partition_count) = shared.wait_for_partition_count(&consumer) else {
        return Ok(RunStats::default());
    };
    if !shared.check_layout(partition_count)? {
        return Ok(RunStats::default());
    }
    shared.state().partition_count = partition_count;
    let owned = owned_partitions(partition_count, config.instance, config.instances);
    metrics.topic_partitions.set(i64::from(partition_count));
    metrics.owned_partitions.set(owned.len() as i64);
    if owned.is_empty() {
        tracing::warn!(
            message = "This instance owns no partition: there are more instances than partitions.",
            partitions = partition_count,
            instance = config.instance,
            instances = config.instances
        );
        if config.exit_at_end {
            return Ok(RunStats::default());
        }
    }
    if !shared.take_over(&consumer, &owned)? {
        return Ok(RunStats::default());
    }

    let mut last_flush = Instant::now();
    let mut last_layout_check = Instant::now();
    let mut backoff = Duration::from_millis(100);
    let mut stalled = false;
    let mut last_prune = Instant::now() - Duration::from_secs(3600);
    let mut failure = None;
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
            Some(Ok(m)) => shared.handle(&m),
            Some(Err(KafkaError::PartitionEOF(p))) => {
                if let Some(part) = shared.state().parts.get_mut(&p) {
                    part.at_end = true;
                }
            }
            Some(Err(error)) => tracing::warn!(message = "Kafka consumer error.", %error),
            None => {}
        }
        if last_layout_check.elapsed() >= LAYOUT_CHECK_EVERY {
            last_layout_check = Instant::now();
            match shared.partition_count(&consumer, Duration::from_secs(5)) {
                Ok(now) if now != partition_count => {
                    let e = AggregateError::PartitionCountChanged {
                        topic: config.topic.clone(),
                        was: partition_count,
                        now,
                    };
                    tracing::error!(message = "Stopping.", error = %e);
                    failure = Some(e);
                    break;
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(message = "Cannot check the topic's partition count.", %error)
                }
            }
        }
        let due =
            stalled || last_flush.elapsed() >= config.emit_interval || shared.state().flush_now;
        if !due {
            continue;
        }
        let at_end = config.exit_at_end && {
            let st = shared.state();
            st.parts.values().all(|p| p.at_end)
        };
        match shared.try_flush(false, false) {
            Ok(_) => {
                if stalled {
                    tracing::info!(message = "ClickHouse writes succeed again; resuming.");
                    // Paused partitions were not idle: do not let the
                    // processing-time watermark close what they still hold
                    // back in Kafka, before the fetcher has brought it.
                    let mut st = shared.state();
                    st.paused = false;
                    for part in st.parts.values_mut() {
                        part.last_record = Instant::now();
                        part.at_end = false;
                    }
                    drop(st);
                    set_paused(&consumer, false);
                    shared.metrics.stalled.set(0);
                    stalled = false;
                    backoff = Duration::from_millis(100);
                }
                last_flush = Instant::now();
                if at_end {
                    break;
                }
            }
            Err(error) if !error.retryable => {
                shared.metrics.store_errors.inc();
                tracing::error!(message = "Flush failed and retrying cannot help; stopping.", %error);
                return Err(AggregateError::Fatal(error.message));
            }
            Err(error) => {
                shared.metrics.store_errors.inc();
                if !stalled {
                    shared.state().paused = true;
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
            shared.prune();
        }
    }
    // Final flush: everything folded becomes durable (or is replayed from
    // the last checkpoint by the next run if ClickHouse stays down).
    let mut backoff = Duration::from_millis(100);
    for _ in 0..20 {
        match shared.flush_fully(config.exit_at_end && failure.is_none(), true) {
            Ok(()) => break,
            Err(error) => tracing::warn!(message = "Final flush failed; retrying.", %error),
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let stats = shared.state().stats.clone();
    tracing::info!(
        message = "Aggregator stopped.",
        records = stats.records,
        applied = stats.applied,
        late = stats.late,
        replayed = stats.replayed,
        duplicates = stats.duplicates,
        too_old = stats.too_old,
        wrong_partition = stats.wrong_partition,
        undecodable = stats.undecodable,
        rows_written = stats.rows_written
    );
    Ok(stats)
}

fn set_paused(consumer: &BaseConsumer<Ctx>, paused: bool) {
    use rdkafka::consumer::Consumer;
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
