//! Intake of payment events into Kafka.
//!
//! [`Intake`] is the one path by which an event enters the platform: it
//! validates the raw bytes against the contract, pseudonymises the merchant
//! id for the authenticated producer, and produces the record to
//! `pulih.payments.v1` keyed by `district_code|sector` with an idempotent
//! producer (`acks=all`). The HTTP gateway ([`gateway`], `pulih ingest`),
//! the backfill loader (`pulih produce`) and the simulator all use it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub mod gateway;

use pulih_event::record::{write_cell_key, write_record};
use pulih_event::{
    check_time, validate, validate_general, validate_in_place, Limits, PaymentEvent, PaymentRecord,
    Pseudonymiser, Reference, Rejection, TimePolicy,
};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::util::Timeout;
use rdkafka::ClientConfig;

/// The Kafka producer of an intake: librdkafka's, with a thread of its own
/// that hands each delivery report to the [`Acks`] its record was sent with.
pub type KafkaProducer = ThreadedProducer<AckContext>;

/// The producer's context: each record carries the [`Acks`] group it was
/// sent with, and its delivery report (success or failure) settles it.
pub struct AckContext;

impl ClientContext for AckContext {}

impl ProducerContext for AckContext {
    type DeliveryOpaque = Arc<AckGroup>;

    fn delivery(&self, result: &DeliveryResult<'_>, group: Arc<AckGroup>) {
        if let Err((error, _)) = result {
            let mut first = group.failure.lock().unwrap_or_else(|e| e.into_inner());
            first.get_or_insert_with(|| error.clone());
        }
        group.settle();
    }
}

/// A record for the producer, with the group it is acknowledged in.
type Record<'a> = BaseRecord<'a, str, [u8], Arc<AckGroup>>;

/// The state shared by an [`Acks`] handle and its records in flight.
pub struct AckGroup {
    /// Records queued and not yet reported on, plus one while the group is
    /// open (until [`Acks::wait`]), so that it cannot complete before the
    /// last record of the group is queued.
    pending: AtomicUsize,
    /// The first failure reported.
    failure: Mutex<Option<KafkaError>>,
    done: tokio::sync::Notify,
}

impl AckGroup {
    fn settle(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            // A stored permit if nobody waits yet: `wait` sees it.
            self.done.notify_one();
        }
    }
}

/// The delivery acknowledgements of a group of records (one request's, or
/// one record's): one notification when the broker has answered for every
/// record of the group, instead of a future per record.
pub struct Acks(Arc<AckGroup>);

impl Default for Acks {
    fn default() -> Acks {
        Acks::new()
    }
}

impl Acks {
    pub fn new() -> Acks {
        Acks(Arc::new(AckGroup {
            pending: AtomicUsize::new(1),
            failure: Mutex::new(None),
            done: tokio::sync::Notify::new(),
        }))
    }

    /// Sends one record as a member of this group: the record is queued,
    /// or not counted.
    fn send(&self, producer: &KafkaProducer, record: Record<'_>) -> Result<(), KafkaError> {
        self.0.pending.fetch_add(1, Ordering::AcqRel);
        producer.send(record).map_err(|(error, _)| {
            // Not queued: no report will come for it. The open count keeps
            // this from reaching zero.
            self.0.pending.fetch_sub(1, Ordering::AcqRel);
            error
        })
    }

    fn record<'a>(&self, topic: &'a str) -> Record<'a> {
        BaseRecord::with_opaque_to(topic, self.0.clone())
    }

    /// Queues any payload to any topic with `producer`, as a member of this
    /// group, without waiting (a full queue is an error).
    pub fn send_raw(
        &self,
        producer: &KafkaProducer,
        topic: &str,
        key: &str,
        payload: &[u8],
    ) -> Result<(), KafkaError> {
        self.send(producer, self.record(topic).key(key).payload(payload))
    }

    /// Closes the group and waits until every record sent with it has been
    /// reported on: `Ok` if the broker acknowledged all of them, else the
    /// first failure. A producer dropped with records in flight reports
    /// them as failed (librdkafka purges its queues).
    pub async fn wait(self) -> Result<(), KafkaError> {
        self.0.settle();
        if self.0.pending.load(Ordering::Acquire) != 0 {
            self.0.done.notified().await;
        }
        match self
            .0
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// Kafka connection settings shared by producers and admin calls.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub brokers: String,
    pub topic: String,
    /// Partitions to create the topic with if it does not exist.
    pub partitions: i32,
    /// Copies of each partition to create the topic with (3 on a
    /// production cluster; the local broker has one).
    pub replication_factor: i32,
    /// Topic-level settings to create the topic with, e.g.
    /// `min.insync.replicas` or `retention.ms` (docs/operations.md, "Kafka
    /// topics").
    pub topic_config: BTreeMap<String, String>,
    /// Raw librdkafka settings, applied last.
    pub options: BTreeMap<String, String>,
}

/// A Kafka call that failed, with the broker address.
#[derive(Debug)]
pub struct KafkaFailure {
    pub brokers: String,
    pub action: &'static str,
    pub source: KafkaError,
}

impl std::fmt::Display for KafkaFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Kafka at {}: {} failed: {} (is the broker running? `deploy/local/services.sh up` starts one on 127.0.0.1:9092)",
            self.brokers, self.action, self.source
        )
    }
}

impl std::error::Error for KafkaFailure {}

impl KafkaConfig {
    fn client_config(&self) -> ClientConfig {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.options {
            cc.set(k, v);
        }
        cc
    }

    pub(crate) fn fail(
        &self,
        action: &'static str,
    ) -> impl FnOnce(KafkaError) -> KafkaFailure + '_ {
        move |source| KafkaFailure {
            brokers: self.brokers.clone(),
            action,
            source,
        }
    }

    /// Creates the topic with `partitions` partitions, `replication_factor`
    /// copies of each and `topic_config`, unless it exists.
    pub async fn ensure_topic(&self) -> Result<(), KafkaFailure> {
        let admin: AdminClient<DefaultClientContext> = self
            .client_config()
            .create()
            .map_err(self.fail("create admin client"))?;
        let mut topic = NewTopic::new(
            &self.topic,
            self.partitions,
            TopicReplication::Fixed(self.replication_factor),
        );
        for (key, value) in &self.topic_config {
            topic = topic.set(key, value);
        }
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = admin
            .create_topics([&topic], &opts)
            .await
            .map_err(self.fail("create topic"))?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(self.fail("create topic")(KafkaError::AdminOp(code))),
            }
        }
        Ok(())
    }

    /// An idempotent producer (`acks=all`): a record acknowledged is durable
    /// and written once, even when the client retries.
    pub fn producer(&self) -> Result<KafkaProducer, KafkaFailure> {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", &self.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5");
        for (k, v) in &self.options {
            cc.set(k, v);
        }
        KafkaProducer::from_config_and_context(&cc, AckContext)
            .map_err(self.fail("create producer"))
    }
}

/// Validates, pseudonymises and produces events for one producer.
#[derive(Clone)]
pub struct Intake {
    kafka: KafkaConfig,
    /// Shared by the clones; replaced whole by [`Intake::renew_producer`].
    producer: Arc<std::sync::RwLock<Arc<KafkaProducer>>>,
    reference: Arc<Reference>,
    pseudonymiser: Pseudonymiser,
    limits: Limits,
    time: TimePolicy,
}

/// The result of offering one event.
pub enum Offer {
    /// Queued for Kafka; wait on the [`Acks`] for the acknowledgement.
    Queued(Acks),
    Rejected(Rejection),
}

impl Intake {
    pub fn new(
        kafka: KafkaConfig,
        reference: Arc<Reference>,
        pseudonymiser: Pseudonymiser,
        limits: Limits,
    ) -> Result<Intake, KafkaFailure> {
        let producer = Arc::new(std::sync::RwLock::new(Arc::new(kafka.producer()?)));
        Ok(Intake {
            kafka,
            producer,
            reference,
            pseudonymiser,
            limits,
            time: TimePolicy {
                max_future_ms: TimePolicy::default().max_future_ms,
                max_age_ms: None,
                dedup_retention_ms: None,
            },
        })
    }

    /// The producer in use (a cheap handle on it).
    fn producer(&self) -> Arc<KafkaProducer> {
        self.producer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the Kafka producer with a new one, for every clone of this
    /// intake. For a producer that keeps failing while the broker answers:
    /// an idempotent producer whose state the broker lost (a broker
    /// restarted without it) can fail every record from then on. Records
    /// the old one still holds are delivered or fail as they would; their
    /// requests were, or will be, answered accordingly, and the clients'
    /// retries go through the new one (same event ids: counted once).
    pub fn renew_producer(&self) -> Result<(), KafkaFailure> {
        let fresh = Arc::new(self.kafka.producer()?);
        *self.producer.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    /// Sets the time checks (by default: at most 5 minutes ahead, any age).
    /// Without an age limit the intake is a backfill: its records are
    /// marked `backfill`, and the aggregator counts them whatever their age.
    pub fn with_time_policy(mut self, time: TimePolicy) -> Intake {
        self.time = time;
        self
    }

    /// Validates `raw`, checks its time against `now_ms` and pseudonymises
    /// it: the record to produce, or why not.
    pub fn check(
        &self,
        producer_id: &str,
        raw: &[u8],
        now_ms: i64,
    ) -> Result<PaymentRecord, Rejection> {
        let event = validate(raw, &self.reference, &self.limits)?;
        self.record_of(event, producer_id, now_ms)
    }

    /// The time check and the record of a validated event.
    fn record_of(
        &self,
        event: PaymentEvent,
        producer_id: &str,
        now_ms: i64,
    ) -> Result<PaymentRecord, Rejection> {
        check_time(&event, now_ms, &self.time)?;
        let mut record = PaymentRecord::from_event(event, producer_id, &self.pseudonymiser);
        record.backfill = self.backfill();
        Ok(record)
    }

    /// Whether this intake's records are a backfill: it has no age limit.
    fn backfill(&self) -> bool {
        self.time.max_age_ms.is_none()
    }

    /// A handle on the producer in use, for a run of [`Sender::accept`]s.
    pub fn sender(&self) -> Sender {
        Sender {
            intake: self.clone(),
            producer: self.producer(),
            buf: Vec::with_capacity(512),
            key: String::with_capacity(16),
        }
    }

    /// The Kafka record of an accepted event: its timestamp is the time
    /// the event was accepted at, which the aggregator checks the age
    /// against again.
    fn record<'a>(
        &'a self,
        acks: &Acks,
        key: &'a str,
        payload: &'a [u8],
        accepted_ms: i64,
    ) -> Record<'a> {
        acks.record(&self.kafka.topic)
            .key(key)
            .payload(payload)
            .timestamp(accepted_ms)
    }

    /// Messages queued and not yet acknowledged.
    pub fn in_flight(&self) -> i32 {
        self.producer().in_flight_count()
    }

    /// The topic metadata, fetched now (blocking, at most `timeout`).
    pub fn fetch_metadata(&self, timeout: Duration) -> Result<usize, KafkaFailure> {
        self.producer()
            .client()
            .fetch_metadata(Some(&self.kafka.topic), timeout)
            .map(|m| m.topics().first().map_or(0, |t| t.partitions().len()))
            .map_err(self.kafka.fail("fetch metadata"))
    }

    pub fn kafka(&self) -> &KafkaConfig {
        &self.kafka
    }

    /// Validates `raw` and, if it is valid, queues its record. Waits while
    /// the producer queue is full.
    pub async fn offer(&self, producer_id: &str, raw: &[u8]) -> Result<Offer, KafkaFailure> {
        let acks = Acks::new();
        let now = pulih_event::calendar::now_ms();
        Ok(
            match self
                .sender()
                .accept_waiting(&acks, producer_id, raw, now)
                .await?
            {
                Accepted::Queued => Offer::Queued(acks),
                Accepted::Rejected(rejection) => Offer::Rejected(rejection),
            },
        )
    }

    /// A [`Loader`] of events into this intake's topic.
    pub fn loader(&self) -> Loader {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(Acks, u64)>(1_000);
        let brokers = self.kafka.brokers.clone();
        let counter = tokio::spawn(async move {
            let mut acknowledged = 0u64;
            while let Some((group, records)) = rx.recv().await {
                delivered(group, &brokers).await?;
                acknowledged += records;
            }
            Ok(acknowledged)
        });
        Loader {
            sender: self.sender(),
            group: Acks::new(),
            in_group: 0,
            queued: 0,
            tx,
            counter: Some(counter),
        }
    }

    /// Waits until everything queued is acknowledged (or `timeout` passes).
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaFailure> {
        self.producer()
            .flush(Timeout::After(timeout))
            .map_err(self.kafka.fail("flush producer"))
    }
}

/// Queues records with one producer handle, each into an [`Acks`] group,
/// without waiting: a full producer queue is an error (`QueueFull`), for
/// callers that answer "retry later" instead.
pub struct Sender {
    intake: Intake,
    producer: Arc<KafkaProducer>,
    /// The record's JSON, reused from record to record (librdkafka copies it).
    buf: Vec<u8>,
    /// The record's Kafka key, likewise.
    key: String,
}

/// What became of one raw event offered with [`Sender::accept`].
pub enum Accepted {
    Queued,
    Rejected(Rejection),
}

impl Sender {
    /// Does what [`Intake::check`] and then [`Sender::send`] do, without
    /// building the event or the record when the event takes the
    /// validator's fast path: the Kafka record is written straight from
    /// the raw bytes' fields (`pulih_event::record::write_record`, held to
    /// the record [`Intake::check`] builds by a property test). An `Err`
    /// is a record valid but not queued.
    pub fn accept(
        &mut self,
        acks: &Acks,
        producer_id: &str,
        raw: &[u8],
        accepted_ms: i64,
    ) -> Result<Accepted, KafkaError> {
        let intake = &self.intake;
        let Some(event) = validate_in_place(raw, &intake.reference, &intake.limits) else {
            // Not for the fast path: the general one says what it is.
            let checked = validate_general(raw, &intake.reference, &intake.limits)
                .and_then(|event| intake.record_of(event, producer_id, accepted_ms));
            return match checked {
                Ok(record) => self
                    .send(acks, &record, accepted_ms)
                    .map(|()| Accepted::Queued),
                Err(rejection) => Ok(Accepted::Rejected(rejection)),
            };
        };
        if let Err(rejection) = intake
            .time
            .check(event.occurred_at.unix_millis(), accepted_ms)
        {
            return Ok(Accepted::Rejected(rejection));
        }
        self.buf.clear();
        write_record(
            &mut self.buf,
            &event,
            producer_id,
            &intake.pseudonymiser,
            intake.backfill(),
        );
        self.key.clear();
        write_cell_key(&mut self.key, event.district_code, event.sector);
        let fr = intake.record(acks, &self.key, &self.buf, accepted_ms);
        acks.send(&self.producer, fr).map(|()| Accepted::Queued)
    }

    /// Queues a record accepted at `accepted_ms` (the clock its time was
    /// checked against).
    pub fn send(
        &mut self,
        acks: &Acks,
        record: &PaymentRecord,
        accepted_ms: i64,
    ) -> Result<(), KafkaError> {
        let key = record.kafka_key();
        self.buf.clear();
        record.write_json(&mut self.buf);
        let fr = self.intake.record(acks, &key, &self.buf, accepted_ms);
        acks.send(&self.producer, fr)
    }

    /// [`Sender::accept`], waiting while the producer queue is full.
    pub async fn accept_waiting(
        &mut self,
        acks: &Acks,
        producer_id: &str,
        raw: &[u8],
        accepted_ms: i64,
    ) -> Result<Accepted, KafkaFailure> {
        loop {
            match self.accept(acks, producer_id, raw, accepted_ms) {
                Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(e) => return Err(self.intake.kafka.fail("produce")(e)),
                Ok(accepted) => return Ok(accepted),
            }
        }
    }

    /// Queues any payload to any topic (the dead-letter topic).
    pub fn send_raw(
        &self,
        acks: &Acks,
        topic: &str,
        key: &str,
        payload: &[u8],
    ) -> Result<(), KafkaError> {
        acks.send_raw(&self.producer, topic, key, payload)
    }
}

/// Records acknowledged as one group by a [`Loader`].
pub const LOAD_GROUP: u64 = 1_000;

/// Queues events one after the other without waiting for each (`pulih
/// produce`, the simulator): a task of its own awaits their
/// acknowledgements, in groups of [`LOAD_GROUP`] records, and counts them.
pub struct Loader {
    sender: Sender,
    /// The records queued since the last group went to the counter.
    group: Acks,
    in_group: u64,
    queued: u64,
    tx: tokio::sync::mpsc::Sender<(Acks, u64)>,
    /// Taken when its result is read.
    counter: Option<tokio::task::JoinHandle<Result<u64, KafkaFailure>>>,
}

impl Loader {
    /// Validates `raw` and queues its record, waiting while the producer
    /// queue is full. An error is Kafka's, or the first record the broker
    /// refused.
    pub async fn offer(&mut self, producer_id: &str, raw: &[u8]) -> Result<Accepted, KafkaFailure> {
        let now = pulih_event::calendar::now_ms();
        let accepted = self
            .sender
            .accept_waiting(&self.group, producer_id, raw, now)
            .await?;
        if let Accepted::Queued = accepted {
            self.queued += 1;
            self.in_group += 1;
            if self.in_group == LOAD_GROUP {
                let full = (
                    std::mem::take(&mut self.group),
                    std::mem::take(&mut self.in_group),
                );
                if self.tx.send(full).await.is_err() {
                    // The counter stopped at a failed delivery: its result says which.
                    counted(&mut self.counter, &self.sender.intake.kafka).await?;
                }
            }
        }
        Ok(accepted)
    }

    /// Records queued so far.
    pub fn queued(&self) -> u64 {
        self.queued
    }

    /// Waits for every acknowledgement: how many records the broker
    /// acknowledged (all those queued), or the first it refused.
    pub async fn finish(mut self) -> Result<u64, KafkaFailure> {
        if self.in_group > 0 {
            // A send error means the counter stopped; its result says why.
            let _ = self.tx.send((self.group, self.in_group)).await;
        }
        drop(self.tx);
        counted(&mut self.counter, &self.sender.intake.kafka).await
    }
}

/// The result of a [`Loader`]'s counter task.
async fn counted(
    counter: &mut Option<tokio::task::JoinHandle<Result<u64, KafkaFailure>>>,
    kafka: &KafkaConfig,
) -> Result<u64, KafkaFailure> {
    let canceled = || Err(kafka.fail("deliver record")(KafkaError::Canceled));
    match counter.take() {
        Some(task) => task.await.unwrap_or_else(|_| canceled()),
        None => canceled(),
    }
}

/// Awaits the deliveries of a group: `Ok` once the broker acknowledged them.
pub async fn delivered(acks: Acks, brokers: &str) -> Result<(), KafkaFailure> {
    acks.wait().await.map_err(|source| KafkaFailure {
        brokers: brokers.into(),
        action: "deliver record",
        source,
    })
}
