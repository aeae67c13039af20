//! Exactly-once results against the real broker and ClickHouse: a known
//! event set with out-of-order, late, too-late and duplicate events goes
//! through `pulih aggregate` processes that are killed with SIGKILL, moved
//! between group members, and cut off from ClickHouse; the final rows must
//! equal aggregates computed here without the core, field by field.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pulih_event::{Limits, Pseudonymiser, Reference, Secret, Timestamp};
use pulih_ingest::{delivered, Acks, Intake, KafkaConfig, Offer};
use pulih_store::{Store, StoreConfig};
use pulih_tests::{
    free_port, kafka_config, pulih_bin, pulih_toml, repo_root, store_config, unique,
    PrivateClickHouse, SlowProxy,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::json;

/// 2024-03-01T16:55:00Z: Jakarta midnight (17:00Z) falls five minutes in.
const T0_MS: i64 = 1_709_312_100_000;
const DAY_MS: i64 = 86_400_000;

#[derive(Clone)]
struct Ev {
    /// The producer that sends it (`bank-x` unless a test says).
    producer: &'static str,
    id: String,
    district: &'static str,
    sector: &'static str,
    merchant: String,
    /// Milliseconds after T0.
    at_ms: i64,
    amount: u64,
    channel: &'static str,
    size: &'static str,
    too_old: bool,
}

const CELLS: [(&str, &str); 8] = [
    ("31.74.09", "I"),
    ("31.71.01", "G"),
    ("31.01.02", "A"),
    ("31.75.06", "G"),
    ("31.72.01", "C"),
    ("31.73.05", "S"),
    ("31.74.01", "G"),
    ("31.71.03", "I"),
];
const CHANNELS: [&str; 6] = [
    "qris",
    "debit_card",
    "credit_card",
    "ewallet",
    "bank_transfer",
    "other",
];
const SIZES: [&str; 3] = ["micro", "small", "medium"];

fn ev(tag: &str, i: usize, at_ms: i64) -> Ev {
    let (district, sector) = CELLS[i % CELLS.len()];
    Ev {
        producer: "bank-x",
        id: format!("{tag}-{i}"),
        district,
        sector,
        merchant: format!("merchant-{}-{}", i % CELLS.len(), (i * 7) % 8),
        at_ms,
        amount: 1_000 + (i as u64 * 7_919) % 900_000,
        channel: CHANNELS[(i / 6) % 6],
        size: SIZES[(i / 5) % 3],
        too_old: false,
    }
}

fn iso(ms: i64) -> String {
    Timestamp::from_unix_millis(ms).to_string()
}

fn body(e: &Ev) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "event_id": e.id,
        "occurred_at": iso(T0_MS + e.at_ms),
        "merchant_id": e.merchant,
        "district_code": e.district,
        "sector": e.sector,
        "amount_idr": e.amount,
        "channel": e.channel,
        "merchant_size": e.size,
    }))
    .unwrap()
}

/// Out of order within two minutes, over minutes [from, from + 5).
fn batch(tag: &str, n: usize, from_min: i64) -> Vec<Ev> {
    (0..n)
        .map(|i| {
            let jitter = ((i * 7_919) % 120_000) as i64;
            let at = from_min * 60_000 + ((i as i64 * 300_000) / n as i64 + jitter).min(299_999);
            ev(tag, i, at)
        })
        .collect()
}

/// Late (behind the watermark), duplicates of `earlier`, too old (sent
/// around the intake, without the backfill mark, so older than the age
/// limit at their Kafka timestamp), and new events.
fn batch3(earlier: &[Ev]) -> Vec<Ev> {
    let mut out = Vec::new();
    for i in 0..60 {
        out.push(ev("late", i, ((i * 997) % 60_000) as i64));
    }
    for e in earlier.iter().step_by(10) {
        out.push(e.clone());
    }
    for i in 0..12 {
        let mut e = ev("old", i, -3 * DAY_MS + i as i64 * 1_000);
        e.too_old = true;
        out.push(e);
    }
    out.extend(batch("b3", 120, 10));
    out
}

type WindowValues = (u64, u64, u64, u64, u32, [u64; 6], [u64; 3]);
type DayKey = (u16, String, String, [u8; 32]);

/// A window row's key: (district, sector, window start, producer).
type WindowKey = (String, String, u32, String);

struct Expected {
    windows: BTreeMap<WindowKey, WindowValues>,
    days: BTreeMap<DayKey, (u64, u64)>,
}

/// The rows one clean run must give, computed directly from the events.
fn expected(sent: &[Ev], pseudonymiser: &Pseudonymiser) -> Expected {
    let mut seen = BTreeSet::new();
    type Acc = (u64, u64, u64, u64, BTreeSet<String>, [u64; 6], [u64; 3]);
    let mut w: BTreeMap<WindowKey, Acc> = BTreeMap::new();
    let mut days = BTreeMap::new();
    for e in sent {
        if !seen.insert((e.producer, e.id.clone())) || e.too_old {
            continue;
        }
        let t = T0_MS + e.at_ms;
        let key = (
            e.district.to_owned(),
            e.sector.to_owned(),
            (t.div_euclid(60_000) * 60) as u32,
            e.producer.to_owned(),
        );
        let a = w
            .entry(key)
            .or_insert((0, 0, u64::MAX, 0, BTreeSet::new(), [0; 6], [0; 3]));
        a.0 += 1;
        a.1 += e.amount;
        a.2 = a.2.min(e.amount);
        a.3 = a.3.max(e.amount);
        a.4.insert(e.merchant.clone());
        a.5[CHANNELS.iter().position(|c| *c == e.channel).unwrap()] += 1;
        a.6[SIZES.iter().position(|c| *c == e.size).unwrap()] += 1;
        let mut merchant = [0u8; 32];
        hex::decode_to_slice(
            pseudonymiser.merchant_key(e.producer, &e.merchant),
            &mut merchant,
        )
        .unwrap();
        let day = (t + 7 * 3_600_000).div_euclid(DAY_MS) as u16;
        let d = days
            .entry((day, e.district.to_owned(), e.sector.to_owned(), merchant))
            .or_insert((0u64, 0u64));
        d.0 += 1;
        d.1 += e.amount;
    }
    Expected {
        windows: w
            .into_iter()
            .map(|(k, a)| (k, (a.0, a.1, a.2, a.3, a.4.len() as u32, a.5, a.6)))
            .collect(),
        days,
    }
}

struct Run {
    kafka: KafkaConfig,
    store_config: StoreConfig,
    store: Store,
    intake: Intake,
    pseudonymiser: Pseudonymiser,
    group: String,
    dir: PathBuf,
    sent: Vec<Ev>,
    /// More `[kafka.options]` lines for the processes spawned next.
    kafka_options: String,
    /// Environment of the processes spawned next.
    env: Vec<(String, String)>,
}

impl Run {
    async fn new(name: &str, partitions: i32, clickhouse_url: Option<String>) -> Run {
        let mut store_config = store_config(name);
        if let Some(url) = clickhouse_url {
            store_config.url = url;
        }
        Run::with_store(name, partitions, store_config).await
    }

    /// A run on the local cluster (deploy/local/cluster.sh), with a quorum
    /// of two; its databases are dropped on every node when the guard goes.
    async fn on_cluster(name: &str, partitions: i32) -> (Run, crate::cluster::Databases) {
        let store_config =
            crate::cluster::cluster_config(crate::cluster::URL, &store_config(name).database);
        let guard = crate::cluster::Databases(store_config.database.clone());
        (Run::with_store(name, partitions, store_config).await, guard)
    }

    async fn with_store(name: &str, partitions: i32, store_config: StoreConfig) -> Run {
        let kafka = kafka_config(name, partitions);
        kafka
            .ensure_topic()
            .await
            .expect("broker reachable: run deploy/local/services.sh up");
        let store = Store::new(&store_config);
        store
            .migrate()
            .await
            .expect("ClickHouse reachable: run deploy/local/services.sh up");
        let pseudonymiser = Pseudonymiser::new(
            "k1",
            &Secret::new("exactly-once-test-secret-0123456789abcdef"),
        )
        .unwrap();
        let intake = Intake::new(
            kafka.clone(),
            Arc::new(Reference::jakarta()),
            pseudonymiser.clone(),
            Limits::default(),
        )
        .unwrap();
        let dir = repo_root().join("target/test-services").join(unique(name));
        std::fs::create_dir_all(&dir).unwrap();
        Run {
            kafka,
            store_config,
            store,
            intake,
            pseudonymiser,
            group: unique(&format!("it-{name}")),
            dir,
            sent: Vec::new(),
            kafka_options: String::new(),
            env: Vec::new(),
        }
    }

    /// Sends events through the intake, which has no age limit here and so
    /// marks them as a backfill, except the `too_old` ones: those are
    /// produced straight to the topic, unmarked, as a client that bypassed
    /// the gateway would.
    async fn offer(&mut self, events: &[Ev]) {
        let mut futures = Vec::new();
        let sender = self.intake.sender();
        for e in events {
            if e.too_old {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as i64;
                let mut record = self.intake.check(e.producer, &body(e), now).unwrap();
                record.backfill = false;
                let acks = Acks::new();
                sender
                    .send_raw(
                        &acks,
                        &self.kafka.topic,
                        &record.kafka_key(),
                        &record.to_json(),
                    )
                    .unwrap();
                futures.push(acks);
                continue;
            }
            match self.intake.offer(e.producer, &body(e)).await.unwrap() {
                Offer::Queued(f) => futures.push(f),
                Offer::Rejected(r) => panic!("event {} rejected: {r}", e.id),
            }
        }
        drop(sender);
        for f in futures {
            delivered(f, &self.kafka.brokers).await.unwrap();
        }
        self.sent.extend_from_slice(events);
    }

    /// Sends events as a gateway whose clock reads `accepted_ms` would:
    /// checked against that time, not marked as a backfill, and stamped
    /// with it as their Kafka timestamp.
    async fn offer_stamped(&mut self, events: &[Ev], accepted_ms: i64) {
        let acks = Acks::new();
        let mut sender = self.intake.sender();
        for e in events {
            let mut record = self
                .intake
                .check(e.producer, &body(e), accepted_ms)
                .unwrap();
            record.backfill = false;
            sender.send(&acks, &record, accepted_ms).unwrap();
        }
        drop(sender);
        delivered(acks, &self.kafka.brokers).await.unwrap();
        self.sent.extend_from_slice(events);
    }

    /// Starts `pulih aggregate` in its own process, as the only instance.
    fn spawn(&self, name: &str, exit_at_end: bool, metrics_port: Option<u16>) -> Proc {
        self.spawn_hanging(name, exit_at_end, metrics_port, None)
    }

    /// Starts `pulih aggregate` as instance `instance` of `instances`.
    fn spawn_instance(&self, name: &str, instance: u32, instances: u32, metrics_port: u16) -> Proc {
        self.spawn_with(
            name,
            false,
            Some(metrics_port),
            None,
            &format!("instance = {instance}\ninstances = {instances}"),
        )
    }

    /// Like `spawn`, with the process hanging at a flush step
    /// (`PULIH_TEST_HANG_AT`) so it can be killed exactly there.
    fn spawn_hanging(
        &self,
        name: &str,
        exit_at_end: bool,
        metrics_port: Option<u16>,
        hang_at: Option<&str>,
    ) -> Proc {
        self.spawn_with(name, exit_at_end, metrics_port, hang_at, "")
    }

    fn spawn_with(
        &self,
        name: &str,
        exit_at_end: bool,
        metrics_port: Option<u16>,
        hang_at: Option<&str>,
        aggregate: &str,
    ) -> Proc {
        let config = self.dir.join(format!("{name}.toml"));
        let metrics = metrics_port.map_or(String::new(), |p| format!("127.0.0.1:{p}"));
        std::fs::write(
            &config,
            pulih_toml(
                &self.kafka,
                &self.store_config,
                &self.group,
                &format!(
                    "emit_interval_ms = 100\ndaily_emit_interval_ms = 300\nmetrics_addr = \"{metrics}\"\narchive_payments = true\n{aggregate}"
                ),
                "",
            )
            .replace(
                "[kafka.options]\n",
                &format!("[kafka.options]\n{}", self.kafka_options),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let mut cmd = Command::new(pulih_bin());
        cmd.arg("--config").arg(&config).arg("aggregate");
        if exit_at_end {
            cmd.arg("--exit-at-end");
        }
        if let Some(h) = hang_at {
            cmd.env("PULIH_TEST_HANG_AT", h);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.env("PULIH_LOG", "info,rdkafka=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map(Proc)
            .expect("start pulih aggregate")
    }

    /// Waits until the process's log says it hangs at its fault point.
    async fn wait_hanging(&self, name: &str) {
        let log = self.dir.join(format!("{name}.log"));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("Hanging at a fault point") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not reach its fault point; see {}",
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sum of the checkpointed offsets over all partitions.
    async fn progress(&self) -> i64 {
        let mut sum = 0;
        for p in 0..self.kafka.partitions {
            if let Ok(Some(c)) = self.store.checkpoint(&self.kafka.topic, p).await {
                sum += c.next_offset;
            }
        }
        sum
    }

    async fn wait_progress(&self, at_least: i64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.progress().await < at_least {
            assert!(
                Instant::now() < deadline,
                "no progress to {at_least} within {timeout:?}; logs in {}",
                self.dir.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn windows(&self) -> BTreeMap<WindowKey, WindowValues> {
        self.store
            .activity_rows()
            .await
            .unwrap()
            .into_iter()
            .map(|r| {
                (
                    (
                        r.district_code.clone(),
                        r.sector.clone(),
                        r.window_start,
                        r.producer_id.clone(),
                    ),
                    (
                        r.txn_count,
                        r.amount_idr_sum,
                        r.amount_idr_min,
                        r.amount_idr_max,
                        r.merchants_active,
                        r.txn_by_channel(),
                        r.txn_by_size(),
                    ),
                )
            })
            .collect()
    }

    async fn days(&self) -> BTreeMap<DayKey, (u64, u64)> {
        self.store
            .daily_rows()
            .await
            .unwrap()
            .into_iter()
            .map(|r| {
                (
                    (r.day, r.district_code, r.sector, r.merchant_key),
                    (r.txn_count, r.amount_idr_sum),
                )
            })
            .collect()
    }

    /// Waits until the rows equal the expected ones (values only).
    async fn wait_converged(&self, timeout: Duration) {
        let want = expected(&self.sent, &self.pseudonymiser);
        let deadline = Instant::now() + timeout;
        loop {
            if self.windows().await == want.windows {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "rows did not converge within {timeout:?}; logs in {}",
                self.dir.display()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Runs one process to the end of the topic, then checks every row.
    /// It keeps the run's consumer group, as an operator's restart would.
    async fn finish_and_check(&mut self) {
        let status = self
            .spawn("final", true, None)
            .wait_exit(Duration::from_secs(120))
            .await;
        assert!(
            status.success(),
            "final run failed; logs in {}",
            self.dir.display()
        );
        let want = expected(&self.sent, &self.pseudonymiser);
        let rows = self.store.activity_rows().await.unwrap();
        assert!(
            rows.iter().all(|r| r.is_final == 1),
            "every window is final"
        );
        // Read to the end with every partition idle, the topic is complete
        // up to the wall clock less the lateness: every partition recorded
        // a watermark past the last event's day.
        let through = self
            .store
            .complete_through(&self.kafka.topic)
            .await
            .unwrap()
            .expect("every partition recorded how far it is complete");
        let last = self.sent.iter().map(|e| T0_MS + e.at_ms).max().unwrap();
        assert!(
            pulih_event::calendar::day_of(through) > pulih_event::calendar::day_of(last),
            "complete through {through}, last event {last}"
        );
        let got = self.windows().await;
        assert_eq!(rows.len(), got.len(), "one row per window after FINAL");
        for (k, v) in &want.windows {
            assert_eq!(got.get(k), Some(v), "window {k:?}");
        }
        assert_eq!(got.len(), want.windows.len());
        assert_eq!(self.days().await, want.days);
        // Every merchant counted has its producer recorded, once.
        let producers = self
            .store
            .client()
            .query(
                "SELECT producer_id, count() FROM merchant_producer FINAL \
                 WHERE merchant_key IN (SELECT merchant_key FROM merchant_activity_daily_by_time) \
                 GROUP BY producer_id",
            )
            .fetch_all::<(String, u64)>()
            .await
            .unwrap();
        let mut merchants: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
        for e in self.sent.iter().filter(|e| !e.too_old) {
            merchants
                .entry(e.producer.to_owned())
                .or_default()
                .insert(&e.merchant);
        }
        let merchants: Vec<(String, u64)> = merchants
            .into_iter()
            .map(|(p, m)| (p, m.len() as u64))
            .collect();
        let mut producers = producers;
        producers.sort();
        assert_eq!(producers, merchants);
        // The archive holds each counted event once.
        let counted: BTreeSet<&str> = self
            .sent
            .iter()
            .filter(|e| !e.too_old)
            .map(|e| e.id.as_str())
            .collect();
        let archived = self
            .store
            .client()
            .query("SELECT event_id FROM payments FINAL ORDER BY event_id")
            .fetch_all::<String>()
            .await
            .unwrap();
        assert_eq!(archived.len(), counted.len(), "one payments row per event");
        assert!(archived
            .iter()
            .map(String::as_str)
            .eq(counted.iter().copied()));
        let too_old = self.sent.iter().filter(|e| e.too_old).count();
        assert!(
            dead_letters(
                &self.kafka.brokers,
                &format!("{}.dlq", self.kafka.topic),
                "too_old"
            ) >= too_old,
            "every too-late record is dead-lettered"
        );
    }
}

/// A `pulih aggregate` process, killed when the test ends (or fails).
struct Proc(Child);

impl Proc {
    /// Waits for the process to exit on its own, at most `limit`.
    async fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.0.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "pulih aggregate still runs after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kill9(p: &mut Proc) {
    let _ = p.0.kill(); // SIGKILL
    let _ = p.0.wait();
}

fn interrupt(p: &mut Proc) {
    stop_with(p, "INT");
}

/// Sends `signal` (INT: Ctrl-C; TERM: what Kubernetes and Docker send) and
/// waits for the aggregator to flush and exit successfully.
fn stop_with(p: &mut Proc, signal: &str) {
    let child = &mut p.0;
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "aggregator did not stop on SIG{signal}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "aggregator on SIG{signal}: {status}");
}

/// Dead letters with the given reason on the topic.
fn dead_letters(brokers: &str, topic: &str, reason: &str) -> usize {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("dlq-reader"))
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let parts = md.topics()[0].partitions().len();
    let mut tpl = TopicPartitionList::new();
    for p in 0..parts {
        tpl.add_partition_offset(topic, p as i32, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut eof = BTreeSet::new();
    let mut n = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while eof.len() < parts && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let letter: pulih_event::DeadLetter =
                    serde_json::from_slice(rdkafka::Message::payload(&m).unwrap()).unwrap();
                assert_eq!(letter.stage, pulih_event::dead_letter::Stage::Aggregate);
                assert!(letter
                    .source
                    .is_some_and(|s| format!("{}.dlq", s.topic) == topic));
                if letter.reason == reason {
                    n += 1;
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                eof.insert(p);
            }
            _ => {}
        }
    }
    n
}

/// kill -9 at four different points of a flush, each followed by a
/// restart that must finish the work exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_five_points_and_restarted_gives_the_clean_result() {
    let mut run = Run::new("kill9", 3, None).await;
    kill_at_five_points(&mut run).await;
}

/// The same on the cluster: two shards of two replicas, a quorum of two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_cluster_killed_at_five_points_and_restarted_gives_the_clean_result() {
    let (mut run, _databases) = Run::on_cluster("kill9c", 3).await;
    kill_at_five_points(&mut run).await;
}

/// On the cluster, a ClickHouse replica killed (SIGKILL) mid-run and
/// started again 15 s later: its shard does not acknowledge writes without
/// a quorum, so the aggregator waits or retries, and the result is exactly
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_cluster_a_replica_killed_mid_run_gives_the_clean_result() {
    let (mut run, _databases) = Run::on_cluster("replica", 3).await;
    let mut a = run.spawn("a", false, None);
    let b1 = batch("b1", 300, 0);
    run.offer(&b1).await;
    run.wait_progress(100, Duration::from_secs(60)).await;

    let down = crate::cluster::NODE_DOWN.lock().await;
    crate::cluster::cluster_sh(&["stop-node", "s2r1"]);
    run.offer(&batch("b2", 300, 5)).await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    crate::cluster::cluster_sh(&["start-node", "s2r1"]);
    drop(down);

    run.offer(&batch3(&b1)).await;
    run.wait_converged(Duration::from_secs(150)).await;
    interrupt(&mut a);
    run.finish_and_check().await;
}

async fn kill_at_five_points(run: &mut Run) {
    let b1 = batch("b1", 300, 0);
    run.offer(&b1).await;
    let kills = [
        // Fingerprints written, nothing else.
        ("a1", "after_seen:1", None),
        // Rows written, no checkpoint: the restart replays and skips them.
        ("a2", "after_activity:1", Some(batch("b2", 300, 5))),
        // The producers' clocks written, not the checkpoint: the restart
        // takes clocks from after the checkpoint it resumes from.
        ("a3c", "after_clocks:1", Some(batch("b2c", 300, 9))),
        // Checkpoint written, Kafka offsets not committed.
        ("a3", "after_checkpoint:1", None),
        // Late, duplicate and too-late records: dead letters sent, no checkpoint.
        ("a4", "after_dead_letters:1", Some(batch3(&b1))),
    ];
    for (name, point, more) in kills {
        if let Some(events) = more {
            run.offer(&events).await;
        }
        let mut a = run.spawn_hanging(name, false, None, Some(point));
        run.wait_hanging(name).await;
        kill9(&mut a);
    }
    run.finish_and_check().await;
}

/// kill -9 at random moments of a running process, three times. Each
/// process is started, then its events are sent 10 every 100 ms; it is
/// killed once it has checkpointed past where the one before it stopped
/// (so it restored, consumed and flushed) and a delay drawn from a seed
/// (0-600 ms) has passed, while events still arrive and its flushes
/// (every 100 ms, merchant-days every 300 ms) are cut wherever the kill
/// lands. The seed is printed; `PULIH_TEST_SEED=<n>` replays it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_three_times_at_random_moments_gives_the_clean_result() {
    let seed = test_seed();
    eprintln!("killed_three_times_at_random_moments: PULIH_TEST_SEED={seed}");
    let mut rng = Lcg(seed);
    let mut run = Run::new("kill9r", 3, None).await;
    let b1 = batch("b1", 300, 0);
    let rounds = [
        ("a1", b1.clone()),
        ("a2", batch("b2", 300, 5)),
        ("a3", batch3(&b1)),
    ];
    for (name, events) in rounds {
        let before = run.progress().await;
        let mut a = Some(run.spawn(name, false, None));
        let delay = Duration::from_millis(rng.below(600));
        let mut passed: Option<Instant> = None;
        let mut chunks = events.chunks(10);
        loop {
            let chunk = chunks.next();
            if let Some(chunk) = chunk {
                run.offer(chunk).await;
            }
            tokio::time::sleep(Duration::from_millis(if chunk.is_some() {
                100
            } else {
                20
            }))
            .await;
            if a.is_none() {
                if chunk.is_none() {
                    break;
                }
                continue;
            }
            if passed.is_none() && run.progress().await > before {
                passed = Some(Instant::now());
            }
            if passed.is_some_and(|t| t.elapsed() >= delay) {
                let sent_after = chunks.len();
                kill9(a.as_mut().unwrap());
                a = None;
                eprintln!(
                    "{name}: killed {} ms after its checkpoint passed {before}, {sent_after} chunks of 10 still to send",
                    delay.as_millis()
                );
            }
        }
    }
    run.finish_and_check().await;
}

/// The seed of a randomised test: `PULIH_TEST_SEED` when set, else the
/// clock's nanoseconds.
fn test_seed() -> u64 {
    std::env::var("PULIH_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

/// A 64-bit linear congruential generator (Knuth's MMIX constants).
struct Lcg(u64);

impl Lcg {
    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// Two instances split four partitions; one is killed and restarted with
/// the same identity while events keep coming. Its partitions come back
/// with it, both say they are ready, and both keep counting exactly once;
/// SIGTERM stops them cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_while_one_is_killed_and_restarted() {
    let mut run = Run::new("instances", 4, None).await;
    two_instances_one_killed(&mut run).await;
}

/// The same on the ClickHouse cluster: two processes writing the same
/// shards (their quorum inserts take turns), one killed and restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_cluster_two_instances_while_one_is_killed_and_restarted() {
    let (mut run, _databases) = Run::on_cluster("instancesc", 4).await;
    two_instances_one_killed(&mut run).await;
}

async fn two_instances_one_killed(run: &mut Run) {
    let b1 = batch("b1", 300, 0);
    let (port_a, port_b) = (free_port(), free_port());
    let mut a = run.spawn_instance("a", 0, 2, port_a);
    let mut b = run.spawn_instance("b", 1, 2, port_b);
    run.offer(&b1).await;
    run.wait_progress(150, Duration::from_secs(60)).await;
    kill9(&mut a);
    run.offer(&batch("b2", 300, 5)).await;
    let mut a = run.spawn_instance("a-again", 0, 2, port_a);
    run.offer(&batch3(&b1)).await;
    run.wait_converged(Duration::from_secs(90)).await;
    for (port, owned) in [(port_a, "0"), (port_b, "1")] {
        let m = metrics(port).await;
        assert!(
            m.lines().any(|l| l == "pulih_aggregate_owned_partitions 2")
                && m.lines()
                    .any(|l| l == "pulih_aggregate_assigned_partitions 2")
                && m.lines().any(|l| l == "pulih_aggregate_topic_partitions 4"),
            "instance {owned}: {m}"
        );
        // Ready again within a few flushes: on the cluster, a quorum insert
        // can fail for a moment while another test restarts a replica, and
        // readiness says so until the retry succeeds.
        let mut readyz = String::new();
        for _ in 0..60 {
            readyz = get(port, "/readyz").await;
            if readyz.starts_with("HTTP/1.1 200 OK") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert!(
            readyz.starts_with("HTTP/1.1 200 OK"),
            "instance {owned}: {readyz}"
        );
    }
    // Stopped as Kubernetes stops a pod: both flush and exit cleanly.
    stop_with(&mut a, "TERM");
    stop_with(&mut b, "TERM");
    run.finish_and_check().await;
}

/// The operator's bad day: one aggregator, killed with SIGKILL a few
/// seconds after each start, seven times in a row, always restarted with
/// the same group and instance. Every restart must take its partitions
/// back and count what arrived meanwhile within `RESTART_BOUND`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_after_seven_kills_with_the_same_identity_resumes() {
    const RESTART_BOUND: Duration = Duration::from_secs(30);
    let seed = test_seed();
    eprintln!("restarted_after_seven_kills: PULIH_TEST_SEED={seed}");
    let mut rng = Lcg(seed);
    let mut run = Run::new("restart", 4, None).await;
    let port = free_port();
    let mut restarts = Vec::new();
    for round in 0..8 {
        let events = batch(&format!("r{round}"), 120, round * 3);
        run.offer(&events).await;
        let started = Instant::now();
        let mut a = run.spawn_instance(&format!("a{round}"), 0, 1, port);
        // Resumed: every event sent so far is counted, within the bound.
        run.wait_converged(RESTART_BOUND).await;
        restarts.push(started.elapsed());
        if round < 7 {
            // Kill it between 0.5 and 4 s after it caught up.
            let ms = 500 + rng.below(3_500);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            kill9(&mut a);
        } else {
            let m = metrics(port).await;
            assert!(
                m.lines()
                    .any(|l| l == "pulih_aggregate_assigned_partitions 4"),
                "{m}"
            );
            interrupt(&mut a);
        }
    }
    eprintln!("from each start until every event was counted: {restarts:?}");
    run.finish_and_check().await;
}

/// With the default retention (`aggregate.dedup_retention_days` unset:
/// 35 days), an aggregator drops what was counted in the months wholly
/// more than 35 days behind every partition's checkpoint when it starts,
/// keeps the months after, and its counts stay exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_retention_drops_what_was_counted_in_months_past_it() {
    let mut run = Run::new("retention", 2, None).await;
    run.offer(&batch("ret", 60, 0)).await;
    // Every partition checkpoints events of 2024-03-01.
    run.finish_and_check().await;
    let months = |run: &Run| {
        let client = run.store.client().clone();
        async move {
            client
                .query(
                    "SELECT DISTINCT toYYYYMM(window_start) AS m FROM aggregator_counted_by_producer \
                     ORDER BY m",
                )
                .fetch_all::<u32>()
                .await
                .unwrap()
        }
    };
    let counted = months(&run).await;
    assert!(counted.contains(&202_403), "{counted:?}");
    // What an aggregator counted in November 2023 (more than 35 days
    // before, dropped) and in February 2024 (within 35 days, kept).
    let entry = |window_start: u32| pulih_store::SeenRow {
        topic: run.kafka.topic.clone(),
        partition: 0,
        district_code: "31.74.09".into(),
        sector: "G".into(),
        producer_id: "bank".into(),
        window_start,
        fingerprints: vec![[7; 16]],
        offsets: vec![0],
        merchants: vec![[7; 32]],
        merchant_offsets: vec![0],
    };
    run.store
        .insert_seen(&[entry(1_700_000_000), entry(1_707_523_200)])
        .await
        .unwrap();
    assert!(months(&run).await.contains(&202_311));
    let mut a = run.spawn("pruning", false, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while months(&run).await.contains(&202_311) {
        assert!(
            Instant::now() < deadline,
            "November 2023 not dropped within 60 s: {:?}; logs in {}",
            months(&run).await,
            run.dir.display()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    interrupt(&mut a);
    let kept = months(&run).await;
    assert!(
        kept.contains(&202_402) && kept.contains(&202_403),
        "{kept:?}"
    );
    run.finish_and_check().await;
}

/// An outage is not idleness. The aggregator's clock is set 20 s before
/// midnight in Jakarta, and events stamped with that clock keep arriving
/// every 500 ms, with 2 s of allowed lateness and a 2 s idle timeout.
/// ClickHouse is stopped just as a late record needs its window read back,
/// for 20 s (ten times the idle timeout) while the clock crosses
/// midnight, and then resumed. Paused, no partition is idle, so the
/// processing-time watermark does not run past the records waiting in
/// Kafka: the backlog is counted on time, the late record is the only one
/// counted late, and the day is recorded complete only after its last
/// events are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clickhouse_outage_across_midnight_is_not_idleness() {
    let mut clickhouse = PrivateClickHouse::start("notidle");
    let mut run = Run::new("notidle", 3, Some(clickhouse.url())).await;
    let real = pulih_event::calendar::now_ms();
    let midnight = pulih_event::calendar::day_end_ms(pulih_event::calendar::day_of(real));
    let offset = midnight - 20_000 - real;
    let clock = move || pulih_event::calendar::now_ms() + offset;
    run.env
        .push(("PULIH_TEST_CLOCK_OFFSET_MS".to_owned(), offset.to_string()));
    let port = free_port();
    let mut a = run.spawn_with("a", false, Some(port), None, "allowed_lateness_secs = 2");
    let mut n = 0;
    send_live(&mut run, clock, &mut n, 5).await;
    run.wait_progress(n as i64, Duration::from_secs(30)).await;

    clickhouse.kill();
    let late = ev("late", 0, clock() - T0_MS - 3_600_000);
    run.offer_stamped(&[late], clock()).await;
    let stalled = async {
        while metric(&metrics(port).await, "pulih_aggregate_stalled") != Some(1.0) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(15), stalled)
        .await
        .expect("the aggregator reports that it is stalled");
    send_live(&mut run, clock, &mut n, 20).await;
    assert!(clock() > midnight, "the outage crossed midnight");
    clickhouse.resume();
    send_live(&mut run, clock, &mut n, 5).await;

    run.wait_converged(Duration::from_secs(60)).await;
    let m = metrics(port).await;
    assert_eq!(
        metric(&m, "pulih_aggregate_records_total{outcome=\"late\"}"),
        Some(1.0),
        "only the late record is late\n{m}"
    );
    assert_eq!(metric(&m, "pulih_aggregate_stalled"), Some(0.0));
    interrupt(&mut a);
}

/// Sends 10 events every 500 ms for `secs`, each made and stamped at the
/// time `clock` reads, as a gateway with that clock would.
async fn send_live(run: &mut Run, clock: impl Fn() -> i64, n: &mut usize, secs: u64) {
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        let now = clock();
        let chunk: Vec<Ev> = (0..10)
            .map(|i| {
                *n += 1;
                ev("n", *n, now - T0_MS - (i * 37) % 400)
            })
            .collect();
        run.offer_stamped(&chunk, now).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every read-back finishes. A producer's history loaded newest first
/// (12 000 events, each a minute before the last, so nearly every one is
/// late and its window must be read back) through a ClickHouse that takes
/// 1.5 s to answer each request, with flushes 10 s apart so that the
/// first flush of the aggregator that finds it finds it all pending: one read-back of everything
/// would need about 25 requests, longer than a store call may take, and
/// retrying it whole would never end. Read back in bounded batches, each with a
/// deadline that grows with it, the backlog is counted and the lag falls
/// to zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_order_backfill_through_a_slow_clickhouse_is_read_back() {
    let proxy = SlowProxy::start("127.0.0.1:8123", Duration::from_millis(1_500)).await;
    let mut run = Run::new("slowrb", 2, None).await;
    run.store_config.url = proxy.url();
    // Flushes 10 s apart: the first one finds the whole history pending.
    for key in ["EMIT_INTERVAL_MS", "DAILY_EMIT_INTERVAL_MS"] {
        run.env
            .push((format!("PULIH_AGGREGATE__{key}"), "10000".to_owned()));
    }
    let n = 12_000;
    let events: Vec<Ev> = (0..n).map(|i| ev("bf", i, -(i as i64) * 60_000)).collect();
    // The newest first, checkpointed, so the watermark is past the rest;
    // the rest is loaded while no aggregator runs, so the next one reads
    // it all before its first flush.
    run.offer(&events[..10]).await;
    let port = free_port();
    let mut a = run.spawn("a", false, Some(port));
    run.wait_progress(10, Duration::from_secs(120)).await;
    interrupt(&mut a);
    run.offer(&events[10..]).await;
    let started = Instant::now();
    let mut a = run.spawn("b", false, Some(port));
    run.wait_converged(Duration::from_secs(400)).await;
    let m = metrics(port).await;
    eprintln!("counted in {:?}", started.elapsed());
    assert_eq!(
        metric(&m, "pulih_aggregate_consumer_lag_records"),
        Some(0.0),
        "{m}"
    );
    let late = metric(&m, "pulih_aggregate_records_total{outcome=\"late\"}").unwrap_or(0.0);
    assert!(late >= (n - 10) as f64, "{late} late of {n}");
    interrupt(&mut a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_stopped_for_20_seconds_mid_run() {
    let mut clickhouse = PrivateClickHouse::start("outage");
    let mut run = Run::new("outage", 3, Some(clickhouse.url())).await;
    let metrics_port = free_port();
    let mut a = run.spawn("a", false, Some(metrics_port));
    let b1 = batch("b1", 300, 0);
    run.offer(&b1).await;
    run.wait_progress(100, Duration::from_secs(60)).await;

    clickhouse.kill();
    let down = Instant::now();
    run.offer(&batch("b2", 300, 5)).await;
    let stalled = async {
        loop {
            let m = metrics(metrics_port).await;
            if m.lines().any(|l| l == "pulih_aggregate_stalled 1") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(15), stalled)
        .await
        .expect("the aggregator reports that it is stalled");
    let readyz = get(metrics_port, "/readyz").await;
    assert!(
        readyz.starts_with("HTTP/1.1 503 ") && readyz.contains("consumption is paused"),
        "{readyz}"
    );
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(down.elapsed())).await;
    clickhouse.resume();

    run.offer(&batch3(&b1)).await;
    run.wait_converged(Duration::from_secs(90)).await;
    let m = metrics(metrics_port).await;
    assert!(m.lines().any(|l| l == "pulih_aggregate_stalled 0"), "{m}");
    let readyz = get(metrics_port, "/readyz").await;
    assert!(readyz.starts_with("HTTP/1.1 200 OK"), "{readyz}");
    // Every aggregator metric the alerting rules and dashboards use is exported.
    let (used, missing) = pulih_tests::rule_metrics_missing("pulih_aggregate", &m);
    assert!(
        used.len() >= 5 && missing.is_empty(),
        "{missing:?} not in\n{m}"
    );
    let undocumented = pulih_tests::undocumented_metrics(&m);
    assert!(
        undocumented.is_empty(),
        "not in docs/operations.md: {undocumented:?}"
    );
    interrupt(&mut a);
    run.finish_and_check().await;
}

async fn metrics(port: u16) -> String {
    get(port, "/metrics").await
}

/// The whole HTTP response to `GET path`, or nothing if no one listens.
async fn get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return String::new();
    };
    let _ = s
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .await;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    out
}

/// The value of one unlabelled series on a `/metrics` page.
fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Re-sending is safe however late it comes. The same events sent again 2
/// hours and 3 days later (in Kafka time, as a gateway stamps them) are not
/// counted again, nor after a kill -9 and restart; nor are 10 000 events
/// sent twice after a record stamped a day ahead (a gateway whose clock
/// jumped), which closes every window of its partition at once. Meanwhile the fingerprints held in memory are
/// only those of open windows and of the hours read back: once input
/// stops and the windows close, only the latter are left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resent_hours_or_days_later_or_after_a_clock_jump_is_counted_once() {
    const HOUR_MS: i64 = 3_600_000;
    let mut run = Run::new("resend", 2, None).await;
    let port = free_port();
    let mut a = run.spawn("a", false, Some(port));
    let first = batch("r1", 1_000, 0);
    run.offer_stamped(&first, T0_MS + 300_000).await;
    let mut resent = first[..500].to_vec();
    resent.extend(batch("r2", 500, 120));
    run.offer_stamped(&resent, T0_MS + 2 * HOUR_MS + 300_000)
        .await;
    let mut resent = first.clone();
    resent.extend(batch("r3", 500, 3 * 1_440));
    run.offer_stamped(&resent, T0_MS + 3 * DAY_MS + 300_000)
        .await;
    run.wait_converged(Duration::from_secs(120)).await;
    let dup = "pulih_aggregate_records_total{outcome=\"duplicate\"}";
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&metrics(port).await, dup) != Some(1_500.0) {
        assert!(Instant::now() < deadline, "1 500 duplicates");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A restart with the same identity: what it remembers comes from
    // ClickHouse. Killed once its checkpoints cover every record so far,
    // so that the restart re-reads none of them: records it re-read would
    // count among the duplicates below (their fingerprints are stored
    // before the checkpoint), which made the count depend on when the
    // kill came.
    run.wait_progress(run.sent.len() as i64, Duration::from_secs(60))
        .await;
    kill9(&mut a);
    let mut a = run.spawn("b", false, Some(port));
    run.offer_stamped(&first[..200], T0_MS + 3 * DAY_MS + 600_000)
        .await;
    run.offer_stamped(&[ev("jump", 0, 4 * DAY_MS)], T0_MS + 4 * DAY_MS)
        .await;
    let many = batch("r4", 10_000, 3 * 1_440 + 10);
    run.offer_stamped(&many, T0_MS + 3 * DAY_MS + 900_000).await;
    run.offer_stamped(&many, T0_MS + 3 * DAY_MS + 960_000).await;
    run.wait_converged(Duration::from_secs(180)).await;

    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let page = metrics(port).await;
        // Once the windows close, what stays in memory is what the
        // read-backs brought: the hours of `first` (1 000 events) and of
        // `many` (10 000), on each of the two partitions, and their
        // windows.
        let gauge = |name: &str| metric(&page, name).unwrap_or(f64::MAX);
        let hours = gauge("pulih_aggregate_covered_hours");
        if metric(&page, dup) == Some(10_200.0)
            && gauge("pulih_aggregate_dedup_entries") <= 11_000.0
            && gauge("pulih_aggregate_resident_windows") <= 60.0 * CELLS.len() as f64 * hours
            && hours <= 4.0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "want 10 200 duplicates since the restart, and in memory once the windows close no more than the fingerprints and windows of the hours read back:\n{}",
            page.lines()
                .filter(|l| {
                    l.contains("records_total")
                        || l.contains("dedup_entries")
                        || l.contains("resident_windows")
                        || l.contains("covered_hours")
                })
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    interrupt(&mut a);
    run.finish_and_check().await;
}

/// When input stops, the last windows become final anyway: with every
/// partition idle (2 s here), processing time moves the watermark to the
/// wall clock minus the allowed lateness (2 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_windows_become_final_when_input_stops() {
    let mut run = Run::new("idle", 2, None).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // A minute window that ended at least 3 s ago; the events end 10 s
    // before its end, so event time alone never closes it.
    let mut end = now.div_euclid(60_000) * 60_000;
    if end > now - 3_000 {
        end -= 60_000;
    }
    let events: Vec<Ev> = (0..40)
        .map(|i| ev("idle", i, end - T0_MS - 50_000 + i as i64 * 1_000))
        .collect();
    run.offer(&events).await;
    let started = Instant::now();
    let mut a = run.spawn_with("a", false, None, None, "allowed_lateness_secs = 2");
    run.wait_converged(Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = run.store.activity_rows().await.unwrap();
        if !rows.is_empty() && rows.iter().all(|r| r.is_final == 1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "windows still open 30 s after the input stopped: {:?}",
            rows.iter()
                .map(|r| (r.window_start, r.is_final))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "every window final {:?} after the aggregator started",
        started.elapsed()
    );
    interrupt(&mut a);
}

/// Retrying cannot bring back a dropped table: the aggregator stops with one
/// line that names it, instead of stalling with the records unflushed. And
/// it refuses to start on a database whose migrations are not applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_table_stops_the_aggregator_with_one_clear_line() {
    let mut run = Run::new("fatal", 1, None).await;
    // The archive (on in these tests) is written first in every flush.
    run.store
        .client()
        .query("DROP TABLE payments")
        .execute()
        .await
        .unwrap();
    run.offer(&batch("f", 30, 0)).await;
    let status = run
        .spawn("a", false, None)
        .wait_exit(Duration::from_secs(60))
        .await;
    assert!(!status.success());
    let log = std::fs::read_to_string(run.dir.join("a.log")).unwrap();
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("pulih: ")
            && last.contains("payments")
            && last.contains("retrying cannot help")
            && last.contains("pulih migrate"),
        "{last}"
    );

    let fresh = unique("it_fatal_fresh");
    let out = Command::new(pulih_bin())
        .arg("--config")
        .arg(run.dir.join("a.toml"))
        .args(["aggregate", "--exit-at-end"])
        .env("PULIH_CLICKHOUSE__DATABASE", &fresh)
        .env("PULIH_LOG", "error")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("`{fresh}` lacks migrations 0001_activity_1m.sql"))
            && stderr.contains("run `pulih migrate` first"),
        "{stderr}"
    );
}

/// A dead letter the broker never acknowledges (its topic does not exist,
/// so every delivery times out) keeps the checkpoint before its record: the
/// aggregator stalls instead of moving on. Once the topic exists, the dead
/// letter lands and every row is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkpoint_never_passes_an_unacknowledged_dead_letter() {
    let mut run = Run::new("dlq", 1, None).await;
    run.offer(&batch("g", 20, 0)).await;
    let mut old = ev("old", 0, -3 * DAY_MS);
    old.too_old = true;
    run.offer(&[old]).await; // offset 20
    run.offer(&batch("h", 20, 5)).await;
    let missing = format!("{}.dlq", run.kafka.topic);
    let metrics = pulih_stream::metrics::Metrics::new();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = pulih_stream::aggregator::AggregatorConfig {
        brokers: run.kafka.brokers.clone(),
        topic: run.kafka.topic.clone(),
        dlq_topic: missing.clone(),
        group_id: run.group.clone(),
        instance: 0,
        instances: 1,
        core: pulih_stream::core::CoreConfig::default(),
        emit_interval: Duration::from_millis(100),
        daily_emit_interval: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(2),
        exit_at_end: false,
        kafka_options: [("message.timeout.ms".to_owned(), "3000".to_owned())].into(),
        archive_payments: true,
        dedup_retention_days: 0,
    };
    let task = tokio::spawn(pulih_stream::aggregator::run(
        config,
        run.store.clone(),
        Arc::new(Reference::jakarta()),
        metrics.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    while metrics.stalled.get() != 1 {
        assert!(
            Instant::now() < deadline,
            "no stall while the dead letter is not acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        run.progress().await <= 20,
        "the checkpoint passed the record whose dead letter was lost"
    );
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(120), task).await;
    // The topic appears; a restart delivers the dead letter and finishes.
    KafkaConfig {
        topic: missing,
        ..run.kafka.clone()
    }
    .ensure_topic()
    .await
    .unwrap();
    run.finish_and_check().await;
}

/// The first aggregator on a topic records its partition count; a later
/// start that finds another count (the topic was resized, so cells moved)
/// refuses to run and names both counts. Tansu cannot add partitions, so
/// the resize is simulated by an older layout row with another count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resized_topic_is_refused_at_start() {
    let mut run = Run::new("layout", 2, None).await;
    run.offer(&batch("l", 20, 0)).await;
    let limit = Duration::from_secs(60);
    let first = run.spawn("first", true, None).wait_exit(limit).await;
    assert!(first.success());
    let client = run.store.client();
    let recorded = client
        .query("SELECT partition_count FROM aggregator_layout WHERE topic = ?")
        .bind(&run.kafka.topic)
        .fetch_all::<i32>()
        .await
        .unwrap();
    assert_eq!(recorded, vec![2]);
    client
        .query("INSERT INTO aggregator_layout VALUES (?, 3, toDateTime('2020-01-01 00:00:00'))")
        .bind(&run.kafka.topic)
        .execute()
        .await
        .unwrap();
    let second = run.spawn("second", true, None).wait_exit(limit).await;
    assert!(!second.success());
    let log = std::fs::read_to_string(run.dir.join("second.log")).unwrap();
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.contains("has 2 partitions, but 3 when its aggregation started")
            && last.contains("Changing the partition count"),
        "{last}"
    );
}

/// A record must sit in the partition its key maps to (CRC32 of
/// `district|sector`, as the intake's producer partitions), or its cell
/// would have rows in two partitions. The same record produced into both
/// partitions is counted once, from the right one; the copy in the other,
/// and a record without a key, are dead-lettered as `wrong_partition`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_in_the_wrong_partition_are_dead_lettered() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let mut run = Run::new("misplaced", 2, None).await;
    run.offer(&batch("m", 20, 0)).await;
    let e = ev("twice", 0, 30_000);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let record = run.intake.check("bank-x", &body(&e), now).unwrap();
    let (key, payload) = (record.kafka_key(), record.to_json());
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &run.kafka.brokers)
        .create()
        .unwrap();
    for partition in [0, 1] {
        let r = FutureRecord::to(&run.kafka.topic)
            .key(&key)
            .payload(&payload)
            .partition(partition);
        producer.send(r, Duration::from_secs(10)).await.unwrap();
    }
    let mut keyless = ev("keyless", 1, 31_000);
    keyless.id = "keyless-1".into();
    let keyless_payload = run
        .intake
        .check("bank-x", &body(&keyless), now)
        .unwrap()
        .to_json();
    let r = FutureRecord::<(), [u8]>::to(&run.kafka.topic)
        .payload(&keyless_payload)
        .partition(0);
    producer.send(r, Duration::from_secs(10)).await.unwrap();
    run.sent.push(e);
    run.finish_and_check().await;
    assert_eq!(
        dead_letters(
            &run.kafka.brokers,
            &format!("{}.dlq", run.kafka.topic),
            "wrong_partition"
        ),
        2
    );
}

/// A producer that joins with its history while another sends live
/// traffic (docs/semantics.md, "A clock per producer"): two days of it, a
/// record every two minutes in time order, ending two days before the live
/// events. Its records find their windows on its own clock and are
/// counted as on time, not read back as late; killed with -9 halfway
/// through the history and restarted with the same identity, the
/// aggregator resumes the history on the clock it checkpointed, and the
/// rows are those of a clean run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_producers_history_is_counted_on_its_own_clock_through_a_kill() {
    let mut run = Run::new("joining", 3, None).await;
    let late =
        |m: &str| metric(m, "pulih_aggregate_records_total{outcome=\"late\"}").unwrap_or(0.0);
    let (port_a, port_b) = (free_port(), free_port());
    let mut a = run.spawn("a", false, Some(port_a));
    run.offer(&batch("live1", 300, 0)).await;
    run.wait_progress(300, Duration::from_secs(60)).await;
    let history: Vec<Ev> = (0..1_440)
        .map(|i| Ev {
            producer: "joining-bank",
            ..ev("h", i, -4 * DAY_MS + i as i64 * 120_000)
        })
        .collect();
    run.offer(&history[..720]).await;
    run.offer(&batch("live2", 300, 5)).await;
    run.wait_converged(Duration::from_secs(120)).await;
    let before = late(&metrics(port_a).await);
    assert!(
        before < 10.0,
        "{before} records late, of 720 of the history"
    );
    kill9(&mut a);

    run.offer(&history[720..]).await;
    run.offer(&batch("live3", 300, 10)).await;
    let mut b = run.spawn("b", false, Some(port_b));
    run.wait_converged(Duration::from_secs(120)).await;
    let after = late(&metrics(port_b).await);
    assert!(after < 10.0, "{after} records late after the restart");
    interrupt(&mut b);
    run.finish_and_check().await;
}
