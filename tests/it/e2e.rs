//! A known set of events goes through intake → Kafka → aggregator →
//! ClickHouse; the rows must equal aggregates computed here independently.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use pulih_event::{Limits, Pseudonymiser, Reference, Secret};
use pulih_ingest::{delivered, Intake, Offer};
use pulih_store::Store;
use pulih_stream::core::CoreConfig;
use pulih_tests::{aggregate_to_end, kafka_config, store_config};
use serde_json::json;

/// 2024-03-01T00:00:00Z
const T0_S: i64 = 1_709_251_200;

struct Spec {
    district: &'static str,
    sector: &'static str,
    merchant: &'static str,
    /// Seconds after T0.
    at_s: i64,
    amount: u64,
}

fn event(i: usize, s: &Spec) -> Vec<u8> {
    let t = time::OffsetDateTime::from_unix_timestamp(T0_S + s.at_s).unwrap();
    let occurred_at = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.250Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    serde_json::to_vec(&json!({
        "event_id": format!("it-{i}"),
        "occurred_at": occurred_at,
        "merchant_id": s.merchant,
        "district_code": s.district,
        "sector": s.sector,
        "amount_idr": s.amount,
        "channel": "qris",
        "merchant_size": "micro",
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_events_land_as_exact_counts_and_sums() {
    let kafka = kafka_config("e2e", 3);
    kafka
        .ensure_topic()
        .await
        .expect("broker reachable: run deploy/local/services.sh up");
    let store = Store::new(&store_config("e2e"));
    store
        .migrate()
        .await
        .expect("ClickHouse reachable: run deploy/local/services.sh up");

    // Out of order within the lateness bound, several cells, windows and
    // merchants, a merchant paying twice in one window.
    let cells = [
        ("31.74.09", "I"),
        ("31.71.01", "G"),
        ("31.01.02", "A"),
        ("31.75.06", "G"),
    ];
    let merchants = ["m-aaaa0001", "m-aaaa0002", "m-aaaa0003"];
    let mut specs = Vec::new();
    for i in 0..600usize {
        let (district, sector) = cells[i % cells.len()];
        specs.push(Spec {
            district,
            sector,
            merchant: merchants[(i * 7) % merchants.len()],
            // Five minutes of events, visited out of order.
            at_s: ((i * 37) % 300) as i64,
            amount: 1_000 + (i as u64 * 7_919) % 500_000,
        });
    }

    let reference = Arc::new(Reference::jakarta());
    let pseudonymiser = Pseudonymiser::new(
        "k1",
        &Secret::new("integration-test-secret-0123456789abcdef"),
    )
    .unwrap();
    let intake = Intake::new(kafka.clone(), reference, pseudonymiser, Limits::default()).unwrap();
    let mut futures = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        match intake.offer("bank-it", &event(i, s)).await.unwrap() {
            Offer::Queued(f) => futures.push(f),
            Offer::Rejected(r) => panic!("event {i} rejected: {r}"),
        }
    }
    // One invalid event never reaches Kafka.
    let bad = br#"{"event_id":"bad","customer_name":"Budi"}"#;
    assert!(matches!(
        intake.offer("bank-it", bad).await.unwrap(),
        Offer::Rejected(_)
    ));
    for f in futures {
        delivered(f, &kafka.brokers).await.unwrap();
    }

    // Expected rows, computed without the windowing core.
    type Key = (String, String, u32);
    let mut expected: BTreeMap<Key, (u64, u64, BTreeSet<&str>)> = BTreeMap::new();
    for s in &specs {
        let minute = ((T0_S + s.at_s) / 60 * 60) as u32;
        let e = expected
            .entry((s.district.into(), s.sector.into(), minute))
            .or_default();
        e.0 += 1;
        e.1 += s.amount;
        e.2.insert(s.merchant);
    }

    let stats = aggregate_to_end(
        &kafka,
        &format!("{}.dlq", kafka.topic),
        "it-e2e",
        CoreConfig {
            allowed_lateness_ms: 600_000,
            ..CoreConfig::default()
        },
        true,
        &store,
    )
    .await;
    assert_eq!(stats.records, specs.len() as u64);
    assert_eq!(stats.applied, specs.len() as u64);
    assert_eq!(
        stats.late + stats.undecodable + stats.duplicates + stats.too_old,
        0
    );

    let rows = store.activity_rows().await.unwrap();
    let got: BTreeMap<Key, (u64, u64, u32)> = rows
        .iter()
        .map(|r| {
            (
                (r.district_code.clone(), r.sector.clone(), r.window_start),
                (r.txn_count, r.amount_idr_sum, r.merchants_active),
            )
        })
        .collect();
    assert_eq!(rows.len(), got.len(), "one row per window after FINAL");
    let want: BTreeMap<Key, (u64, u64, u32)> = expected
        .into_iter()
        .map(|(k, (n, sum, m))| (k, (n, sum, m.len() as u32)))
        .collect();
    assert_eq!(got, want);
    assert_eq!(want.len(), cells.len() * 5, "4 cells x 5 minutes");

    // archive_payments: every record once in `payments`, as sent.
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct Archived {
        rows: u64,
        events: u64,
        amount: u64,
        ms: u64,
        producers: u64,
    }
    let a = store
        .client()
        .query(
            "SELECT count() AS rows, uniqExact(event_id) AS events, sum(amount_idr) AS amount, \
             toUInt64(sum(occurred_ms)) AS ms, uniqExact(producer_id) AS producers FROM payments FINAL",
        )
        .fetch_one::<Archived>()
        .await
        .unwrap();
    assert_eq!((a.rows, a.events), (600, 600));
    assert_eq!(a.amount, specs.iter().map(|s| s.amount).sum::<u64>());
    assert_eq!((a.ms, a.producers), (600 * 250, 1));
}

/// `pulih simulate --as-of` fixes which events have happened: two runs
/// with the same instant write the same files, whenever they run, and a
/// later instant lets more of yesterday's late events through.
#[test]
fn simulate_as_of_sends_the_same_events_whenever_it_runs() {
    let dir = std::env::temp_dir().join(pulih_tests::unique("pulih-as-of"));
    let run = |as_of: &str, out: &str| {
        let o = std::process::Command::new(pulih_tests::pulih_bin())
            .args(["simulate", "--as-of", as_of, "--from", "-1d", "--to", "-1d"])
            .args(["--late", "0.2", "--output", "ndjson", "--dir"])
            .arg(dir.join(out))
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let mut bytes = Vec::new();
        if let Ok(files) = std::fs::read_dir(dir.join(out)) {
            let mut files: Vec<_> = files.map(|f| f.unwrap().path()).collect();
            files.sort();
            for f in files {
                bytes.extend(std::fs::read(f).unwrap());
            }
        }
        (o.status.success(), text, bytes)
    };
    // Yesterday's late events arrive up to twelve hours into today (Jakarta
    // time): at the start of today some are still to come.
    let today = pulih_event::calendar::day_of(pulih_event::calendar::now_ms());
    let start = pulih_event::calendar::day_start_ms(today);
    let at = |ms: i64| pulih_event::Timestamp::from_unix_millis(ms).to_string();
    let early = at(start + 3_600_000);
    let (ok, text, first) = run(&early, "a");
    assert!(ok, "{text}");
    let held = |t: &str| -> u64 {
        t.split_whitespace()
            .find_map(|w| w.strip_prefix("held="))
            .and_then(|n| n.parse().ok())
            .unwrap()
    };
    assert!(held(&text) > 0, "{text}");
    let (_, again_text, again) = run(&early, "b");
    assert_eq!(held(&again_text), held(&text));
    assert!(!first.is_empty() && first == again, "the same bytes");
    let (_, later_text, later) = run(&at(start + 13 * 3_600_000), "c");
    assert_eq!(held(&later_text), 0, "{later_text}");
    assert!(later.len() > first.len());

    let (ok, text, _) = run("2026-11-30T12:00:00Z", "d");
    assert!(!ok && text.contains("--as-of"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}
