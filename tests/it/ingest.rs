//! The HTTP gateway against the real broker: every kind of bad input gets
//! its status and reason code, nothing personal reaches the dead-letter
//! detail, and a request cut off by a stopped broker is retried into
//! exactly-once rows.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pulih_event::{Limits, Pseudonymiser, Reference, Secret, TimePolicy, Timestamp};
use pulih_ingest::gateway::{self, GatewayConfig, Metrics, ProducerAuth};
use pulih_ingest::{Intake, KafkaConfig};
use pulih_tests::{http, kafka_config, read_topic, unique};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const TOKEN: &str = "pulih_test_token_bank_a";
const DISABLED: &str = "pulih_test_token_bank_off";

struct Gw {
    addr: SocketAddr,
    kafka: KafkaConfig,
    metrics: Metrics,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Gw {
    async fn start(kafka: KafkaConfig, tune: impl FnOnce(&mut GatewayConfig)) -> Gw {
        kafka.ensure_topic().await.expect("broker reachable");
        let dlq = KafkaConfig {
            topic: format!("{}.dlq", kafka.topic),
            ..kafka.clone()
        };
        dlq.ensure_topic().await.unwrap();
        let pseudonymiser = Pseudonymiser::new(
            "k1",
            &Secret::new("gateway-test-secret-0123456789abcdef0123"),
        )
        .unwrap();
        let intake = Intake::new(
            kafka.clone(),
            Arc::new(Reference::jakarta()),
            pseudonymiser,
            Limits::default(),
        )
        .unwrap()
        .with_time_policy(TimePolicy::default());
        let mut config = GatewayConfig {
            max_body_bytes: 1 << 20,
            max_decompressed_bytes: 4 << 20,
            max_records: 1000,
            dlq_topic: dlq.topic.clone(),
            dlq_raw_max_bytes: 256,
            rate_limit_per_sec: 0,
            rate_limit_burst: 0,
            ack_timeout: Duration::from_secs(10),
            producers: vec![
                ProducerAuth {
                    id: "bank-a".into(),
                    token_sha256: Sha256::digest(TOKEN.as_bytes()).into(),
                    enabled: true,
                },
                ProducerAuth {
                    id: "bank-off".into(),
                    token_sha256: Sha256::digest(DISABLED.as_bytes()).into(),
                    enabled: false,
                },
            ],
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(60),
            max_connections: 4096,
            renew_producer_after: Duration::from_secs(30),
        };
        tune(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let metrics = Metrics::new();
        let served = metrics.clone();
        let task = tokio::spawn(async move {
            gateway::serve(listener, intake, config, served, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Gw {
            addr,
            kafka,
            metrics,
            stop: Some(tx),
            task,
        }
    }

    async fn post(&self, ctype: &str, body: &[u8]) -> (u16, String, Value) {
        self.post_with(
            &[
                ("content-type", ctype),
                ("authorization", &format!("Bearer {TOKEN}")),
            ],
            body,
        )
        .await
    }

    async fn post_with(&self, headers: &[(&str, &str)], body: &[u8]) -> (u16, String, Value) {
        let (status, head, body) = http(self.addr, "POST", "/v1/events", headers, body).await;
        let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
        (status, head, v)
    }

    /// The dead letters, each checked to be a `pulih_event::DeadLetter`
    /// of the gateway (unknown fields are refused).
    fn dead_letters(&self) -> Vec<Value> {
        read_topic(&self.kafka.brokers, &format!("{}.dlq", self.kafka.topic))
            .iter()
            .map(|m| {
                let letter: pulih_event::DeadLetter = serde_json::from_slice(m).unwrap();
                assert_eq!(letter.stage, pulih_event::dead_letter::Stage::Gateway);
                serde_json::from_slice(m).unwrap()
            })
            .collect()
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = self.task.await;
    }
}

fn now_iso(offset_ms: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    Timestamp::from_unix_millis(now + offset_ms).to_string()
}

fn event(id: &str) -> Value {
    json!({
        "event_id": id,
        "occurred_at": now_iso(0),
        "merchant_id": "merchant-0001",
        "district_code": "31.74.09",
        "sector": "I",
        "amount_idr": 25000,
        "channel": "qris",
        "merchant_size": "micro",
    })
}

fn line(v: &Value) -> String {
    serde_json::to_string(v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_record_gets_its_reason_and_the_good_ones_land() {
    let gw = Gw::start(kafka_config("gw-bad", 2), |_| {}).await;
    let with = |k: &str, v: Value| {
        let mut e = event(&unique("e"));
        e[k] = v;
        line(&e)
    };
    let mut personal = event("p-1");
    personal["customer_name"] = json!("Budi Santoso");
    let mut phone = event("p-2");
    phone["phone"] = json!("081234567890");
    let cases: Vec<(String, Option<&str>)> = vec![
        (line(&event("ok-1")), None),
        ("{\"event_id\": \"x\", oops".into(), Some("invalid_json")),
        (line(&personal), Some("unknown_field")),
        (line(&phone), Some("unknown_field")),
        (with("amount_idr", json!("25000")), Some("wrong_type")),
        (
            line(&event("dup")).replacen('{', "{\"sector\":\"G\",", 1),
            Some("duplicate_field"),
        ),
        (
            with("occurred_at", json!("2026-11-28T10:00:00.000")),
            Some("bad_timestamp"),
        ),
        (
            with("district_code", json!("31.76.01")),
            Some("unknown_district"),
        ),
        (
            {
                let mut e = event(&unique("k"));
                e["kbli_code"] = json!("47111");
                e["sector"] = json!("I");
                line(&e)
            },
            Some("kbli_sector_mismatch"),
        ),
        (
            with("occurred_at", json!(now_iso(10 * 60_000))),
            Some("in_future"),
        ),
        (
            with("occurred_at", json!(now_iso(-8 * 86_400_000))),
            Some("too_old"),
        ),
        (line(&event("ok-2")), None),
    ];
    let mut body = cases
        .iter()
        .map(|(l, _)| l.clone())
        .collect::<Vec<_>>()
        .join("\n")
        .into_bytes();
    // Invalid UTF-8 on a line of its own.
    body.extend_from_slice(b"\n{\"event_id\":\"\xff\xfe\"}\n");
    let (status, _, v) = gw.post("application/x-ndjson", &body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["accepted"], 2, "{v}");
    assert_eq!(v["rejected"], cases.len() - 2 + 1, "{v}");
    let rejections = v["rejections"].as_array().unwrap();
    for (i, (_, want)) in cases.iter().enumerate() {
        let got = rejections
            .iter()
            .find(|r| r["index"] == i)
            .map(|r| r["reason"].as_str().unwrap());
        assert_eq!(got, *want, "line {i}: {v}");
    }
    assert_eq!(rejections.last().unwrap()["reason"], "invalid_utf8");
    let text = v.to_string();
    assert!(
        text.contains("customer_name") && text.contains("phone"),
        "{text}"
    );
    assert!(
        !text.contains("Budi") && !text.contains("0812"),
        "no personal value in the answer: {text}"
    );

    let landed = read_topic(&gw.kafka.brokers, &gw.kafka.topic);
    assert_eq!(
        landed.len(),
        2,
        "only the valid records reach the payments topic"
    );
    for m in &landed {
        let r: Value = serde_json::from_slice(m).unwrap();
        assert_eq!(
            r["producer_id"], "bank-a",
            "the producer comes from the token"
        );
        assert!(r.get("merchant_id").is_none());
    }
    let letters = gw.dead_letters();
    assert_eq!(letters.len(), cases.len() - 2 + 1);
    for l in &letters {
        assert_eq!(l["producer_id"], "bank-a");
        let d = l["detail"].as_str().unwrap();
        assert!(
            !d.contains("Budi") && !d.contains("0812"),
            "no personal value in a dead-letter detail: {d}"
        );
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_refused_with_their_status() {
    let gw = Gw::start(kafka_config("gw-refuse", 1), |c| {
        c.max_records = 5;
        c.rate_limit_per_sec = 10;
        c.rate_limit_burst = 10;
    })
    .await;
    let auth = format!("Bearer {TOKEN}");
    let one = line(&event(&unique("e")));
    // Authentication.
    let (s, head, _) = gw
        .post_with(&[("content-type", "application/json")], one.as_bytes())
        .await;
    assert_eq!(s, 401);
    assert!(head
        .to_ascii_lowercase()
        .contains("www-authenticate: bearer"));
    for bad in ["Bearer wrong", "Basic Zm9vOmJhcg==", "Bearer"] {
        let (s, _, _) = gw
            .post_with(&[("authorization", bad)], one.as_bytes())
            .await;
        assert_eq!(s, 401, "{bad}");
    }
    let off = format!("Bearer {DISABLED}");
    let (s, _, v) = gw
        .post_with(&[("authorization", &off)], one.as_bytes())
        .await;
    assert_eq!((s, v["error"].as_str()), (403, Some("forbidden")));
    // Empty body.
    let (s, _, v) = gw.post_with(&[("authorization", &auth)], b"").await;
    assert_eq!((s, v["error"].as_str()), (400, Some("empty_body")));
    // A declared 2 GB body is refused before it is read.
    let (s, _, _) = gw
        .post_with(
            &[("authorization", &auth), ("content-length", "2147483648")],
            b"{",
        )
        .await;
    assert_eq!(s, 413);
    // A gzip bomb: 4 MiB of spaces in a few KiB.
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut e, &vec![b' '; 5 << 20]).unwrap();
    let bomb = e.finish().unwrap();
    let (s, _, v) = gw
        .post_with(
            &[("authorization", &auth), ("content-encoding", "gzip")],
            &bomb,
        )
        .await;
    assert_eq!((s, v["error"].as_str()), (413, Some("too_large")), "{v}");
    // Gzip that is fine.
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut e, one.as_bytes()).unwrap();
    let (s, _, v) = gw
        .post_with(
            &[("authorization", &auth), ("content-encoding", "gzip")],
            &e.finish().unwrap(),
        )
        .await;
    assert_eq!((s, v["accepted"].as_u64()), (200, Some(1)), "{v}");
    // Too many records in one request.
    let six = (0..6)
        .map(|_| line(&event(&unique("e"))))
        .collect::<Vec<_>>()
        .join("\n");
    let (s, _, v) = gw.post("application/x-ndjson", six.as_bytes()).await;
    assert_eq!((s, v["error"].as_str()), (413, Some("too_many_records")));
    // All invalid: 422 with the per-record list.
    let (s, _, v) = gw.post("application/json", b"[{\"a\":1},{\"b\":2}]").await;
    assert_eq!(s, 422);
    assert_eq!(v["rejections"].as_array().unwrap().len(), 2);
    // Unsupported media type.
    let (s, _, _) = gw.post("text/csv", b"a,b").await;
    assert_eq!(s, 415);
    // The rate limit: 10 records/s with a burst of 10.
    let five = (0..5)
        .map(|_| line(&event(&unique("e"))))
        .collect::<Vec<_>>()
        .join("\n");
    let mut limited = None;
    for _ in 0..4 {
        let (s, head, _) = gw.post("application/x-ndjson", five.as_bytes()).await;
        if s == 429 {
            limited = Some(head);
            break;
        }
    }
    let head = limited.expect("a producer over its limit gets 429");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );
    // Operations endpoints.
    assert_eq!(http(gw.addr, "GET", "/healthz", &[], b"").await.0, 200);
    assert_eq!(http(gw.addr, "GET", "/readyz", &[], b"").await.0, 200);
    let (s, _, m) = http(gw.addr, "GET", "/metrics", &[], b"").await;
    let m = String::from_utf8(m).unwrap();
    assert_eq!(s, 200);
    assert!(
        m.contains("pulih_ingest_requests_total{status=\"401\"}"),
        "{m}"
    );
    assert!(
        m.contains("pulih_ingest_records_total{outcome=\"accepted\",reason=\"\"}"),
        "{m}"
    );
    // Every gateway metric the alerting rules and dashboards use is exported.
    let (used, missing) = pulih_tests::rule_metrics_missing("pulih_ingest", &m);
    assert!(
        !used.is_empty() && missing.is_empty(),
        "{missing:?} not in\n{m}"
    );
    let undocumented = pulih_tests::undocumented_metrics(&m);
    assert!(
        undocumented.is_empty(),
        "not in docs/operations.md: {undocumented:?}"
    );
    gw.stop().await;
}

/// The broker stops before a request's records are acknowledged: the
/// gateway answers 503, and once the broker is back the client's retry
/// lands every record exactly once in ClickHouse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_broker_gives_503_and_the_retry_lands_exactly_once() {
    let mut broker = pulih_tests::PrivateKafka::start("gw-broker");
    let kafka = KafkaConfig {
        brokers: broker.brokers(),
        topic: unique("it.gwstop"),
        partitions: 2,
        replication_factor: 1,
        topic_config: Default::default(),
        options: Default::default(),
    };
    let gw = Gw::start(kafka.clone(), |c| {
        c.ack_timeout = Duration::from_secs(3);
        c.renew_producer_after = Duration::from_secs(2);
    })
    .await;
    let batch = |tag: &str, n: usize| {
        (0..n)
            .map(|i| line(&event(&format!("{tag}-{i}"))))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let first = batch("first", 20);
    let (s, _, v) = gw.post("application/x-ndjson", first.as_bytes()).await;
    assert_eq!((s, v["accepted"].as_u64()), (200, Some(20)), "{v}");

    broker.kill();
    let second = batch("second", 30);
    let (s, head, v) = gw.post("application/x-ndjson", second.as_bytes()).await;
    assert_eq!((s, v["error"].as_str()), (503, Some("unavailable")), "{v}");
    assert!(head.to_ascii_lowercase().contains("retry-after"), "{head}");
    assert_eq!(gw.metrics.producer_renewals.get(), 0);
    // Every acknowledgement has failed for longer than renew_producer_after:
    // the next failure replaces the producer, and the retries below go
    // through the new one.
    let (s, _, v) = gw.post("application/x-ndjson", second.as_bytes()).await;
    assert_eq!((s, v["error"].as_str()), (503, Some("unavailable")), "{v}");
    assert_eq!(gw.metrics.producer_renewals.get(), 1);

    broker.resume();
    let mut retried = None;
    for _ in 0..30 {
        let (s, _, v) = gw.post("application/x-ndjson", second.as_bytes()).await;
        if s == 200 {
            retried = Some(v);
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let v = retried.expect("the retry succeeds once the broker is back");
    assert_eq!(v["accepted"], 30);
    gw.stop().await;

    let store = pulih_store::Store::new(&pulih_tests::store_config("gwstop"));
    store.migrate().await.expect("ClickHouse reachable");
    let dlq = KafkaConfig {
        topic: format!("{}.agg-dlq", kafka.topic),
        ..kafka.clone()
    };
    dlq.ensure_topic().await.unwrap();
    let stats = pulih_tests::aggregate_to_end(
        &kafka,
        &dlq.topic,
        "it-gwstop",
        pulih_stream::core::CoreConfig::default(),
        false,
        &store,
    )
    .await;
    let total: u64 = store
        .activity_rows()
        .await
        .unwrap()
        .iter()
        .map(|r| r.txn_count)
        .sum();
    assert_eq!(total, 50, "every event once: {stats:?}");
    assert_eq!(stats.applied, 50, "{stats:?}");
    assert_eq!(stats.records, 50 + stats.duplicates, "{stats:?}");
}

/// `pulih produce` loads a gzipped NDJSON history through the same checks,
/// without the age limit, and reports what it rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_loads_old_events_from_a_gzip_file() {
    let kafka = kafka_config("produce", 1);
    kafka.ensure_topic().await.expect("broker reachable");
    let dir = pulih_tests::repo_root()
        .join("target/test-services")
        .join(unique("produce"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("history.ndjson.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&file).unwrap(),
        flate2::Compression::fast(),
    );
    for i in 0..3 {
        let mut e = event(&format!("old-{i}"));
        e["occurred_at"] = json!("2020-01-06T10:00:00.000+07:00");
        std::io::Write::write_all(&mut gz, format!("{}\n", line(&e)).as_bytes()).unwrap();
    }
    std::io::Write::write_all(&mut gz, b"{\"event_id\":\"bad\",\"phone\":\"0812\"}\n").unwrap();
    gz.finish().unwrap();
    let produce = |flags: &[&str]| {
        let out = std::process::Command::new(pulih_tests::pulih_bin())
            .args(["produce", "--producer", "bank-a", "--file"])
            .arg(&file)
            .args(flags)
            .env("PULIH_KAFKA__BROKERS", &kafka.brokers)
            .env("PULIH_KAFKA__TOPIC", &kafka.topic)
            .env(
                "PULIH_PSEUDONYMISATION__SECRET",
                "produce-test-secret-0123456789abcdef0123",
            )
            .env("PULIH_LOG", "error")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stdout} {stderr}");
        (stdout, stderr)
    };
    // Older than the de-duplication retention (35 days by default): sent
    // again, they would count again, so only with --may-count-again.
    let (stdout, stderr) = produce(&[]);
    assert!(stdout.contains("produced events=0 rejected=4"), "{stdout}");
    assert!(
        stdout.contains("rejected reason=beyond_dedup_retention count=3"),
        "{stdout}"
    );
    assert!(stderr.contains("--may-count-again"), "{stderr}");
    assert!(read_topic(&kafka.brokers, &kafka.topic).is_empty());
    let (stdout, stderr) = produce(&["--may-count-again"]);
    assert!(stdout.contains("produced events=3 rejected=1"), "{stdout}");
    assert!(
        stdout.contains("rejected reason=unknown_field count=1"),
        "{stdout}"
    );
    assert!(stderr.contains("count again"), "{stderr}");
    assert_eq!(read_topic(&kafka.brokers, &kafka.topic).len(), 3);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A producer queue too small for the request: 503 with Retry-After,
/// never a partial 2xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_producer_queue_gives_503() {
    let mut kafka = kafka_config("gw-full", 1);
    kafka
        .options
        .insert("queue.buffering.max.messages".into(), "10".into());
    let gw = Gw::start(kafka, |_| {}).await;
    let body = (0..200)
        .map(|i| line(&event(&format!("full-{i}"))))
        .collect::<Vec<_>>()
        .join("\n");
    let (s, head, v) = gw.post("application/x-ndjson", body.as_bytes()).await;
    assert_eq!((s, v["error"].as_str()), (503, Some("unavailable")), "{v}");
    assert!(head.to_ascii_lowercase().contains("retry-after"), "{head}");
    // Once the queue has drained, a request that fits goes through.
    let mut answer = None;
    for _ in 0..50 {
        let (s, _, v) = gw
            .post("application/x-ndjson", line(&event("fits-1")).as_bytes())
            .await;
        if s != 503 {
            answer = Some((s, v));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s, v) = answer.expect("the queue drains");
    assert_eq!((s, v["accepted"].as_u64()), (200, Some(1)), "{v}");
    gw.stop().await;
}

/// The promise: an event that got a 2xx, or that `pulih produce` reported
/// loaded, is counted. A 30-hour-old event through the gateway and a
/// one-year-old backfill into a topic whose watermark is already at today
/// both land in `activity_1m_by_producer` and `merchant_activity_daily_by_time`, and a running
/// `pulih rollup --every` picks the backfilled day up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2xx_is_counted_and_a_backfill_corrects_a_past_day_of_a_live_topic() {
    const HOUR_MS: i64 = 3_600_000;
    let kafka = kafka_config("promise", 2);
    let store_config = pulih_tests::store_config("promise");
    let store = pulih_store::Store::new(&store_config);
    store.migrate().await.expect("ClickHouse reachable");
    let dlq = format!("{}.dlq", kafka.topic);
    let gw = Gw::start(kafka.clone(), |_| {}).await;
    let mut live = event("live-1");
    live["merchant_id"] = json!("merchant-live");
    let mut old = event("old-30h");
    old["occurred_at"] = json!(now_iso(-30 * HOUR_MS));
    old["merchant_id"] = json!("merchant-30h");
    let (status, _, v) = gw
        .post(
            "application/x-ndjson",
            format!("{}\n{}\n", line(&live), line(&old)).as_bytes(),
        )
        .await;
    assert_eq!((status, v["accepted"].as_u64()), (200, Some(2)), "{v}");
    gw.stop().await;

    let core = pulih_stream::core::CoreConfig::default();
    let stats =
        pulih_tests::aggregate_to_end(&kafka, &dlq, "it-promise", core, false, &store).await;
    assert_eq!(
        (stats.applied + stats.late, stats.too_old),
        (2, 0),
        "{stats:?}"
    );

    // The rollup service runs from here on.
    let dir = pulih_tests::repo_root()
        .join("target/test-services")
        .join(unique("promise"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("pulih.toml");
    let rollup_port = pulih_tests::free_port();
    std::fs::write(
        &config,
        pulih_tests::pulih_toml(
            &kafka,
            &store_config,
            "it-promise",
            "",
            &format!("[metrics]\nrollup_metrics_addr = \"127.0.0.1:{rollup_port}\"\n"),
        ),
    )
    .unwrap();
    let mut rollup = pulih_tests::KillOnDrop(
        std::process::Command::new(pulih_tests::pulih_bin())
            .arg("--config")
            .arg(&config)
            .args(["rollup", "--every", "1"])
            .env("PULIH_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("rollup.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let client = store.client().clone();
    let analytics = format!("{}_analytics", store_config.database);
    let city_txns = |day: String| {
        let client = client.clone();
        let analytics = analytics.clone();
        async move {
            client
                .query(&format!(
                    "SELECT toUInt64(ifNull(sum(txn_count), 0)) FROM `{analytics}`.recovery_daily FINAL \
                     WHERE level = 'city' AND day = '{day}'"
                ))
                .fetch_one::<u64>()
                .await
                .unwrap_or(0)
        }
    };
    let jakarta_day = |offset_ms: i64| now_iso(offset_ms + 7 * HOUR_MS)[..10].to_owned();
    let wait_for = |day: String, want: u64| {
        let city_txns = &city_txns;
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                let got = city_txns(day.clone()).await;
                if got == want {
                    return;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{day}: {got} transactions rolled up, not {want}, within 60 s"
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    };
    wait_for(jakarta_day(-30 * HOUR_MS), 1).await;

    // A year-old history, loaded with `pulih produce` into the live topic.
    let file = dir.join("history.ndjson");
    let mut history = String::new();
    for i in 0..3 {
        let mut e = event(&format!("year-old-{i}"));
        e["occurred_at"] = json!(now_iso(-365 * 24 * HOUR_MS + i * 1_000));
        e["merchant_id"] = json!(format!("merchant-year-{i}"));
        history.push_str(&format!("{}\n", line(&e)));
    }
    std::fs::write(&file, history).unwrap();
    let out = std::process::Command::new(pulih_tests::pulih_bin())
        .arg("--config")
        .arg(&config)
        .args([
            "produce",
            "--may-count-again",
            "--producer",
            "bank-a",
            "--file",
        ])
        .arg(&file)
        .env(
            "PULIH_PSEUDONYMISATION__SECRET",
            "gateway-test-secret-0123456789abcdef0123",
        )
        .env("PULIH_LOG", "error")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("produced events=3 rejected=0"), "{stdout}");
    let stats =
        pulih_tests::aggregate_to_end(&kafka, &dlq, "it-promise", core, false, &store).await;
    assert_eq!((stats.late, stats.too_old), (3, 0), "{stats:?}");

    let rows = store.activity_rows().await.unwrap();
    assert_eq!(rows.iter().map(|r| r.txn_count).sum::<u64>(), 5, "{rows:?}");
    let days = store.daily_rows().await.unwrap();
    let mut merchant_days: Vec<(u16, u64)> = days.iter().map(|d| (d.day, d.txn_count)).collect();
    merchant_days.sort_unstable();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let day_of =
        |offset_ms: i64| (now_ms + offset_ms + 7 * HOUR_MS).div_euclid(24 * HOUR_MS) as u16;
    let year_ago = day_of(-365 * 24 * HOUR_MS);
    assert_eq!(
        merchant_days.iter().filter(|(d, _)| *d == year_ago).count(),
        3,
        "three merchant-days a year ago: {merchant_days:?}"
    );
    assert!(
        merchant_days
            .iter()
            .any(|(d, _)| *d == day_of(-30 * HOUR_MS)),
        "the 30-hour-old event's merchant-day: {merchant_days:?}"
    );
    wait_for(jakarta_day(-365 * 24 * HOUR_MS), 3).await;
    assert!(
        rollup.try_wait().unwrap().is_none(),
        "the rollup still runs"
    );
    let _ = rollup.kill();
    let _ = rollup.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A topic pulih creates gets the configured topic settings.
#[tokio::test]
async fn a_new_topic_gets_the_configured_topic_settings() {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;
    let mut kafka = pulih_tests::kafka_config("topic_config", 2);
    kafka.topic_config = [("retention.ms", "1209600000"), ("cleanup.policy", "delete")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    kafka.ensure_topic().await.unwrap();
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .create()
        .unwrap();
    let described = admin
        .describe_configs(
            [&ResourceSpecifier::Topic(&kafka.topic)],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    let resource = described.into_iter().next().unwrap().unwrap();
    let value = |name: &str| {
        resource
            .entries
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    assert_eq!(
        value("retention.ms").as_deref(),
        Some("1209600000"),
        "{:?}",
        resource.entries
    );
    assert_eq!(value("cleanup.policy").as_deref(), Some("delete"));
}

/// Opens a connection and sends `bytes`, then holds it.
async fn hold(addr: SocketAddr, bytes: &[u8]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    if !bytes.is_empty() {
        s.write_all(bytes).await.unwrap();
    }
    s
}

/// What the server sends on a held connection until it closes it, or
/// None if it is still open after `within`.
async fn closed_within(s: &mut tokio::net::TcpStream, within: Duration) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    tokio::time::timeout(within, s.read_to_end(&mut got))
        .await
        .ok()
        .map(|_| String::from_utf8_lossy(&got).into_owned())
}

/// One valid event posted on a new connection: its status and how long
/// the answer took.
async fn timed_post(gw: &Gw, id: &str) -> (u16, Duration) {
    let started = std::time::Instant::now();
    let (status, _, _) = gw
        .post("application/x-ndjson", line(&event(id)).as_bytes())
        .await;
    (status, started.elapsed())
}

/// Slowloris. 500 connections that send half a request header, 100 that
/// send nothing, and 20 that send a valid token and then their body a
/// trickle at a time cannot hold the gateway: the first two kinds are
/// closed once the header timeout passes, the third gets 408 once the
/// body timeout passes, and meanwhile every legitimate request is
/// answered at once. With the connection cap reached by idle clients, a
/// legitimate request waits at most for the header timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_cannot_hold_the_gateway() {
    const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
    const BODY_TIMEOUT: Duration = Duration::from_secs(3);
    let gw = Gw::start(kafka_config("slowloris", 1), |c| {
        c.header_read_timeout = HEADER_TIMEOUT;
        c.body_read_timeout = BODY_TIMEOUT;
        c.max_connections = 1000;
    })
    .await;
    let (status, _) = timed_post(&gw, "warm-up").await;
    assert_eq!(status, 200);

    let started = std::time::Instant::now();
    let mut half_headers = Vec::new();
    for _ in 0..500 {
        half_headers.push(
            hold(
                gw.addr,
                b"POST /v1/events HTTP/1.1\r\nhost: x\r\ncontent-ty",
            )
            .await,
        );
    }
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(hold(gw.addr, b"").await);
    }
    let body = line(&event("slow-body"));
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: application/x-ndjson\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let mut slow_bodies = Vec::new();
    for _ in 0..20 {
        let mut h = head.clone().into_bytes();
        h.extend_from_slice(&body.as_bytes()[..10]);
        slow_bodies.push(hold(gw.addr, &h).await);
    }

    // Legitimate requests meanwhile: answered at once.
    let mut slowest = Duration::ZERO;
    for i in 0..10 {
        let (status, took) = timed_post(&gw, &format!("legit-{i}")).await;
        assert_eq!(status, 200, "legitimate request {i}");
        slowest = slowest.max(took);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        slowest < Duration::from_millis(1000),
        "a legitimate request took {slowest:?} beside 620 slow clients"
    );

    // Every slow client is cut off once its timeout passes.
    let margin = Duration::from_secs(3);
    for s in half_headers.iter_mut().chain(idle.iter_mut()) {
        let left = (HEADER_TIMEOUT + margin).saturating_sub(started.elapsed());
        let answer = closed_within(s, left).await;
        assert!(
            answer.is_some(),
            "a slow header held its connection for {:?}",
            started.elapsed()
        );
    }
    for s in slow_bodies.iter_mut() {
        let left = (BODY_TIMEOUT + margin).saturating_sub(started.elapsed());
        let answer = closed_within(s, left)
            .await
            .expect("a slow body held its connection");
        assert!(
            answer.starts_with("HTTP/1.1 408") && answer.contains("\"body_timeout\""),
            "{answer}"
        );
    }
    let (_, _, page) = http(gw.addr, "GET", "/metrics", &[], b"").await;
    let page = String::from_utf8(page).unwrap();
    let timeouts = page
        .lines()
        .find_map(|l| {
            l.strip_prefix("pulih_ingest_connections_closed_total{how=\"header_timeout\"} ")
        })
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(timeouts >= 600, "{page}");

    // Nothing of the slow bodies was accepted: only the legitimate events
    // reached the topic.
    let landed = read_topic(&gw.kafka.brokers, &gw.kafka.topic);
    assert_eq!(landed.len(), 11, "warm-up and 10 legitimate events");
    gw.stop().await;

    // With the cap reached by idle clients, a legitimate request waits for
    // a slot, at most about the header timeout.
    let gw = Gw::start(kafka_config("slowloris_cap", 1), |c| {
        c.header_read_timeout = HEADER_TIMEOUT;
        c.max_connections = 20;
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(hold(gw.addr, b"").await);
    }
    let (status, took) = timed_post(&gw, "after-the-idle").await;
    assert_eq!(status, 200);
    assert!(
        took < 2 * HEADER_TIMEOUT + Duration::from_secs(1),
        "a legitimate request waited {took:?} behind 40 idle clients with a cap of 20"
    );
    drop(idle);
    gw.stop().await;
}

/// `pulih simulate --output gateway` with several requests in flight
/// lands every event it makes exactly as `--output ndjson` writes them:
/// the same event ids, each as often (duplicates included), none refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_posts_with_requests_in_flight_and_lands_every_event() {
    let kafka = kafka_config("sim-in-flight", 1);
    let producers = ["bank", "ewallet", "qris_acquirer"];
    let token = |p: &str| format!("pulih_test_token_{p}");
    let gw = Gw::start(kafka.clone(), |c| {
        c.producers = producers
            .iter()
            .map(|p| ProducerAuth {
                id: (*p).into(),
                token_sha256: Sha256::digest(token(p).as_bytes()).into(),
                enabled: true,
            })
            .collect();
    })
    .await;
    let dir = pulih_tests::repo_root()
        .join("target/test-services")
        .join(unique("sim-in-flight"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("pulih.toml");
    let mut toml = format!(
        "[simulate]\ngateway_url = \"http://{}\"\n[simulate.tokens]\n",
        gw.addr
    );
    for p in producers {
        toml += &format!("{p} = \"{}\"\n", token(p));
    }
    std::fs::write(&config, toml).unwrap();
    // Both runs reckon days from the same instant; the gateway takes
    // events up to seven days old.
    let as_of = Timestamp::from_unix_millis(pulih_event::calendar::now_ms()).to_string();
    let simulate = |output: Vec<String>| {
        let (config, as_of) = (config.clone(), as_of.clone());
        tokio::task::spawn_blocking(move || {
            let o = std::process::Command::new(pulih_tests::pulih_bin())
                .env("PULIH_CONFIG", &config)
                .env("PULIH_LOG", "error")
                .args(["simulate", "--as-of", &as_of])
                .args([
                    "--from",
                    "-5d",
                    "--to",
                    "-1d",
                    "--late",
                    "0",
                    "--invalid",
                    "0",
                ])
                .args(["--duplicates", "0.05"])
                .args(output)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            assert!(
                o.status.success(),
                "{text} {}",
                String::from_utf8_lossy(&o.stderr)
            );
            text
        })
    };
    let files = dir.join("ndjson");
    let written = simulate(vec![
        "--output".into(),
        "ndjson".into(),
        "--dir".into(),
        files.display().to_string(),
    ])
    .await
    .unwrap();
    let posted = simulate(vec![
        "--output".into(),
        "gateway".into(),
        "--in-flight".into(),
        "4".into(),
    ])
    .await
    .unwrap();
    let tally = |t: &str| t.split(" seconds=").next().unwrap().to_owned();
    assert_eq!(
        tally(&posted),
        tally(&written),
        "the same events, all accepted"
    );
    assert!(posted.contains(" rejected=0 "), "{posted}");

    let id = |line: &[u8]| -> String {
        let v: Value = serde_json::from_slice(line).unwrap();
        v["event_id"].as_str().unwrap().to_owned()
    };
    let mut expected: Vec<String> = Vec::new();
    for p in producers {
        let text = std::fs::read(files.join(format!("{p}.ndjson"))).unwrap();
        expected.extend(
            text.split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(id),
        );
    }
    let mut landed: Vec<String> = read_topic(&kafka.brokers, &kafka.topic)
        .iter()
        .map(|m| id(m))
        .collect();
    // At least 16 requests of 500 events: four in flight had work to do.
    assert!(expected.len() > 8_000, "{}", expected.len());
    expected.sort_unstable();
    landed.sort_unstable();
    assert!(
        landed == expected,
        "{} landed, {} sent",
        landed.len(),
        expected.len()
    );
    assert!(gw.dead_letters().is_empty());
    gw.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
