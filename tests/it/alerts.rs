//! Sector-downturn alerts on a seeded Jakarta (docs/alerting.md, "The
//! backtest scenario"): nearly three years of merchant-days with weekly and
//! payday cycles, a Lebaran that moves each year and hits restaurants
//! hardest, a 3-day outage of one producer, a noisy cell, a suppressed cell
//! that collapses, and one real downturn: accommodation and food (I) in
//! Jakarta Utara (31.72) from June to mid-August 2021. The merchant-days go
//! into ClickHouse, `recovery_daily` is computed by the rollup, and then
//! the `pulih` binary is run: `pulih alerts backtest`, and `pulih alerts`
//! delivering to Kafka, ClickHouse and the real Alertmanager of
//! deploy/local/services.sh, whose webhook this test receives.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pulih_metrics::{format_day, parse_day, Day, MovingHoliday, Params};
use pulih_store::{DailyRow, MerchantProducerRow, Store};
use pulih_tests::{
    free_port, kafka_config, pulih_toml, read_topic, repo_root, rule_metrics_missing, store_config,
    undocumented_metrics, unique,
};
use serde_json::Value;

use crate::recovery::run_pulih;

const FIRST: &str = "2019-01-01";
const LAST: &str = "2021-10-20";
/// Merchants per district and sector (C, G, I).
const CELLS: [(&str, [u32; 3]); 6] = [
    ("31.71.01", [10, 15, 14]),
    ("31.71.02", [8, 12, 12]),
    ("31.72.01", [9, 14, 40]),
    ("31.72.02", [8, 10, 12]),
    ("31.72.03", [7, 9, 10]),
    ("31.73.01", [2, 6, 10]),
];
const SECTORS: [&str; 3] = ["C", "G", "I"];
const DOWNTURN: (&str, &str) = ("2021-06-01", "2021-08-15");
const OUTAGE: (&str, &str) = ("2021-03-10", "2021-03-12");
/// The port the webhook receivers of deploy/alertmanager/alertmanager.yml
/// post to.
const WEBHOOK_PORT: u16 = 9099;

/// xorshift64*: the same history on every run and machine.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn day(s: &str) -> Day {
    parse_day(s).unwrap()
}

fn in_range(d: Day, (a, b): (&str, &str)) -> bool {
    day(a) <= d && d <= day(b)
}

fn kota(district: &str) -> &str {
    &district[..5]
}

/// The merchant-days and each merchant's producer: bank-b carries every
/// third merchant.
fn scenario(lebaran: &[Day]) -> (Vec<DailyRow>, Vec<MerchantProducerRow>) {
    let mut rng = Rng(0xa1e7_2021);
    let mut rows = Vec::new();
    let mut producers = Vec::new();
    let mut n = 0u32;
    for (district, counts) in CELLS {
        for (s, &count) in counts.iter().enumerate() {
            let sector = SECTORS[s];
            let noisy = district == "31.73.01" && sector == "G";
            let small = district == "31.73.01" && sector == "C";
            let hit = kota(district) == "31.72" && sector == "I";
            for m in 0..count {
                n += 1;
                let mut key = [0u8; 32];
                key[..4].copy_from_slice(&n.to_be_bytes());
                let bank_b = n.is_multiple_of(3);
                producers.push(MerchantProducerRow {
                    merchant_key: key,
                    producer_id: if bank_b { "bank-b" } else { "bank-a" }.into(),
                    first_seen: 0,
                });
                let ticket = 40_000.0 + 20_000.0 * s as f64;
                for d in day(FIRST)..=day(LAST) {
                    if bank_b && in_range(d, OUTAGE) {
                        continue;
                    }
                    let p = if noisy { 0.6 } else { 0.92 };
                    if rng.unit() > p {
                        continue;
                    }
                    let downturn = hit && in_range(d, DOWNTURN);
                    // 15 % of the sector's merchants in the kota close.
                    if downturn && m * 100 < count * 15 {
                        continue;
                    }
                    let date = time::Date::from_julian_day(d + 2_440_588).unwrap();
                    let mut f = 1.0;
                    if (d + 4).rem_euclid(7) >= 5 {
                        f *= 1.2;
                    }
                    if date.day() >= 25 || date.day() == 1 {
                        f *= 1.25;
                    }
                    for &h in lebaran {
                        if (h - 3..=h + 3).contains(&d) {
                            f *= 0.5;
                        }
                        if sector == "I" && (h - 10..=h + 10).contains(&d) {
                            f *= 0.6;
                        }
                    }
                    if downturn {
                        f *= 0.7;
                    }
                    if small && d >= day(DOWNTURN.0) {
                        f *= 0.2;
                    }
                    let noise = if noisy {
                        0.1 + 2.9 * rng.unit()
                    } else {
                        0.7 + 0.6 * rng.unit()
                    };
                    let txns = 1 + (rng.unit() * 3.0) as u64;
                    rows.push(DailyRow {
                        day: d as u16,
                        district_code: district.into(),
                        sector: sector.into(),
                        merchant_key: key,
                        txn_count: txns,
                        amount_idr_sum: (ticket * txns as f64 * f * noise) as u64,
                        is_final: 1,
                        source_partition: 0,
                        source_offset: 1,
                        version: 1,
                        updated_at: 0,
                    });
                }
            }
        }
    }
    (rows, producers)
}

/// The UTC hour (from the epoch) at which Jakarta day `d` starts.
fn local_midnight(d: Day) -> i64 {
    i64::from(d) * 24 - 7
}

/// One hour of a cell in `activity_1m_by_producer`: `txns` transactions by the
/// merchants numbered `merchants` (their keys as in `scenario`).
fn activity(
    hour: i64,
    district: &str,
    sector: &str,
    txns: u64,
    merchants: &[u32],
) -> pulih_store::ActivityRow {
    let keys: Vec<[u8; 32]> = merchants
        .iter()
        .map(|n| {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&n.to_be_bytes());
            key
        })
        .collect();
    pulih_store::ActivityRow {
        window_start: (hour * 3600) as u32,
        district_code: district.into(),
        sector: sector.into(),
        producer_id: "bank".into(),
        txn_count: txns,
        amount_idr_sum: txns * 50_000,
        amount_idr_min: 50_000,
        amount_idr_max: 50_000,
        merchants_active: keys.len() as u32,
        txn_qris: txns,
        txn_debit_card: 0,
        txn_credit_card: 0,
        txn_ewallet: 0,
        txn_bank_transfer: 0,
        txn_other: 0,
        txn_micro: txns,
        txn_small: 0,
        txn_medium: 0,
        is_final: 1,
        source_partition: 0,
        source_offset: 1,
        merchant_keys: keys,
        version: 1,
        updated_at: 0,
    }
}

/// Four weeks of trading hours (08:00 to 21:00 in Jakarta) up to Jakarta
/// day `last`, for two cells of bank-a's merchants (1-6 and 7-12, as
/// `scenario` numbers them: bank-b carries every third) and two of
/// bank-b's (3, 6, 9 and 12, 15, 18); on `last` from 18:00, 31.72.01 × I
/// and both of bank-b's cells are silent. The merchants of the G cells
/// are in counted entries, as `pulih aggregate` writes them; those of the
/// others in their rows, as older versions wrote them.
fn hours(last: Day) -> (Vec<pulih_store::ActivityRow>, Vec<pulih_store::SeenRow>) {
    let cells: [(&str, &str, [u32; 3], bool); 4] = [
        ("31.72.01", "I", [1, 2, 4], true),
        ("31.72.02", "G", [5, 7, 8], false),
        ("31.73.01", "C", [3, 6, 9], true),
        ("31.73.01", "G", [12, 15, 18], true),
    ];
    let (mut rows, mut seen) = (Vec::new(), Vec::new());
    for d in last - 28..=last {
        for local in 8..21 {
            let hour = local_midnight(d) + local;
            for (district, sector, merchants, stops) in &cells {
                if d == last && local >= 18 && *stops {
                    continue;
                }
                let mut row = activity(hour, district, sector, 10, merchants);
                if *sector == "G" {
                    let merchants = std::mem::take(&mut row.merchant_keys);
                    seen.push(pulih_store::SeenRow {
                        topic: "t".into(),
                        partition: 0,
                        district_code: row.district_code.clone(),
                        sector: row.sector.clone(),
                        producer_id: row.producer_id.clone(),
                        window_start: row.window_start,
                        fingerprints: Vec::new(),
                        offsets: Vec::new(),
                        merchant_offsets: vec![1; merchants.len()],
                        merchants,
                    });
                }
                rows.push(row);
            }
        }
    }
    (rows, seen)
}

/// Webhook notifications Alertmanager posted, with their path.
type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// A webhook receiver on 127.0.0.1:`port`: answers 200 to every POST and
/// keeps its JSON body.
async fn webhook(port: u16) -> Received {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("webhook port {port}: {e}"));
    let received: Received = Arc::default();
    let out = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let out = out.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if buf.len() < end + 4 + len {
                        continue;
                    }
                    let path = head
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or_default()
                        .to_owned();
                    if let Ok(v) = serde_json::from_slice(&buf[end + 4..end + 4 + len]) {
                        out.lock().unwrap().push((path, v));
                    }
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                    return;
                }
            });
        }
    });
    received
}

/// Waits up to 60 s for a notification to `path` holding an alert with
/// `alert_id`, `deployment` and `status`.
async fn notified(
    received: &Received,
    path: &str,
    alert_id: &str,
    deployment: &str,
    status: &str,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        {
            let got = received.lock().unwrap();
            for (p, v) in got.iter() {
                let hit = v["alerts"].as_array().into_iter().flatten().find(|a| {
                    a["labels"]["alert_id"] == alert_id
                        && a["labels"]["deployment"] == deployment
                        && a["status"] == status
                });
                if p == path {
                    if let Some(a) = hit {
                        return a.clone();
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no {status} notification of {alert_id} on {path} within 60 s; received: {got:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs a `pulih` service until its `/metrics` on 127.0.0.1:`port` has
/// `ready` (at most 60 s), checks that its `/readyz` says so too, stops it
/// and returns the page.
async fn scrape_service(config: &std::path::Path, args: &[&str], port: u16, ready: &str) -> String {
    let mut service = pulih_tests::KillOnDrop(
        std::process::Command::new(pulih_tests::pulih_bin())
            .arg("--config")
            .arg(config)
            .args(args)
            .env("PULIH_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let page = loop {
        if let Ok(s) = tokio::net::TcpStream::connect(addr).await {
            drop(s);
            let (_, _, body) = pulih_tests::http(addr, "GET", "/metrics", &[], b"").await;
            let page = String::from_utf8(body).unwrap();
            if page.contains(ready) {
                let (status, _, body) = pulih_tests::http(addr, "GET", "/readyz", &[], b"").await;
                assert_eq!(
                    (status, body.as_slice()),
                    (200, &b"ready\n"[..]),
                    "pulih {args:?}: /readyz after a successful round"
                );
                break Some(page);
            }
        }
        if Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let _ = service.kill();
    let _ = service.wait();
    page.unwrap_or_else(|| panic!("pulih {args:?}: no {ready} on /metrics within 60 s"))
}

/// The rows of the backtest's Markdown table: alert, severity, fired,
/// cleared, summary.
fn table(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .filter(|l| l.starts_with("| sector_downturn/"))
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_owned())
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_the_real_downturn_fires_and_clears_through_alertmanager() {
    let store_config = store_config("alerts");
    let store = Store::new(&store_config);
    store.migrate().await.unwrap();
    let holidays = pulih_event::holidays::Holidays::jakarta();
    let lebaran = holidays.dates("idul_fitri");
    let (rows, producers) = scenario(&lebaran);
    store.insert_merchant_producers(&producers).await.unwrap();
    for chunk in rows.chunks(100_000) {
        store.insert_daily(chunk).await.unwrap();
    }
    // The rollup with the shipped calendar's moving holidays, as `pulih
    // rollup` computes it.
    let params = Params {
        moving_holidays: vec![
            MovingHoliday {
                dates: lebaran.clone(),
                before: 21,
                after: 14,
            },
            MovingHoliday {
                dates: holidays.dates("imlek"),
                before: 7,
                after: 7,
            },
        ],
        ..Params::standard()
    };
    let kota = pulih_store::kota_map(CELLS.iter().map(|(d, _)| (*d, kota(d))));
    let sectors: Vec<String> = SECTORS.iter().map(|s| (*s).to_owned()).collect();
    let cells = pulih_metrics::reference_cells(&kota, &sectors);
    let started = Instant::now();
    store
        .rollup(&params, &kota, &cells, None, None)
        .await
        .unwrap();
    eprintln!(
        "rollup of the scenario: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Complete through LAST; its last 7 days provisional.
    store
        .record_release(day(LAST), day(LAST) - 6)
        .await
        .unwrap();
    let final_day = day(LAST) - 7;

    let kafka = kafka_config("alerts", 1);
    let topic = unique("alerts");
    let metrics_port = free_port();
    let rollup_port = free_port();
    let dir = std::env::temp_dir().join(unique("pulih-alerts"));
    std::fs::create_dir_all(&dir).unwrap();
    let config: PathBuf = dir.join("pulih.toml");
    std::fs::write(
        &config,
        pulih_toml(
            &kafka,
            &store_config,
            "alerts",
            "",
            &format!(
                "[alerts]\ntopic = \"{topic}\"\nalertmanager_url = \"http://127.0.0.1:9093\"\n\
                 resend_secs = 10\nmetrics_addr = \"127.0.0.1:{metrics_port}\"\n\
                 rows_url = \"http://127.0.0.1:8090/cell?level={{level}}&kota={{kota}}&district={{district}}&sector={{sector}}\"\n\
                 [metrics]\nrollup_metrics_addr = \"127.0.0.1:{rollup_port}\"\n"
            ),
        ),
    )
    .unwrap();

    // The backtest: exactly the downturn, fired in June and cleared in
    // September; nothing on the Lebarans, paydays, the outage, the noisy
    // cell or the suppressed one.
    let out = run_pulih(&config, &["alerts", "backtest", "--from", "2020-01-01"]);
    eprintln!("{out}");
    let rows = table(&out);
    let kota_alert = "sector_downturn/kota_sector/31.72/I";
    let district_alert = "sector_downturn/district_sector/31.72/31.72.01/I";
    assert!(
        rows.iter()
            .all(|r| r[0] == kota_alert || r[0] == district_alert),
        "{out}"
    );
    let k = rows
        .iter()
        .find(|r| r[0] == kota_alert)
        .unwrap_or_else(|| panic!("{out}"));
    let (fired, cleared) = (day(&k[2]), day(&k[3]));
    assert!(
        (day("2021-06-12")..=day("2021-06-30")).contains(&fired),
        "{out}"
    );
    assert!(
        (day("2021-08-25")..=day("2021-09-30")).contains(&cleared),
        "{out}"
    );
    assert_eq!(rows.iter().filter(|r| r[0] == kota_alert).count(), 1);
    // docs/alerting.md shows this very table.
    let doc = std::fs::read_to_string(repo_root().join("docs/alerting.md")).unwrap();
    for line in out.lines().filter(|l| l.starts_with("| sector_downturn/")) {
        assert!(
            doc.contains(line),
            "docs/alerting.md lacks the backtest row\n{line}"
        );
    }

    // The rollup service tells the operators of the outage: recomputing
    // the days up to one of its days, its gauges show the producer.
    store.record_layout(&kafka.topic, 1).await.unwrap();
    store
        .insert_watermarks(&[pulih_store::WatermarkRow {
            topic: kafka.topic.clone(),
            partition: 0,
            watermark_ms: pulih_event::calendar::day_end_ms(i64::from(day(LAST))),
            updated_at: 0,
        }])
        .await
        .unwrap();
    let page = scrape_service(
        &config,
        &[
            "rollup",
            "--from",
            "2021-03-05",
            "--to",
            "2021-03-11",
            "--every",
            "60",
        ],
        rollup_port,
        "pulih_rollup_rounds_total{outcome=\"succeeded\"} 1",
    )
    .await;
    for line in [
        "pulih_rollup_producer_outage{producer=\"bank-a\"} 0",
        "pulih_rollup_producer_outage{producer=\"bank-b\"} 1",
    ] {
        assert!(
            page.lines().any(|l| l == line),
            "{line} missing from\n{page}"
        );
    }
    let ratio = |producer: &str| -> f64 {
        let prefix = format!("pulih_rollup_producer_coverage_ratio{{producer=\"{producer}\"}} ");
        page.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no coverage of {producer} in\n{page}"))
            .parse()
            .unwrap()
    };
    assert!(ratio("bank-b") < 0.5 && ratio("bank-a") > 0.9, "{page}");
    let (used, missing) = rule_metrics_missing("pulih_rollup", &page);
    assert!(
        used.len() >= 5 && missing.is_empty(),
        "rules use {used:?}; not exported: {missing:?}"
    );
    assert_eq!(undocumented_metrics(&page), Vec::<String>::new());

    // The service, delivering: the downturn fires ...
    let received = webhook(WEBHOOK_PORT).await;
    let db = store_config.database.as_str();
    let out = run_pulih(
        &config,
        &[
            "alerts",
            "--once",
            "--from",
            "2021-06-01",
            "--to",
            "2021-07-10",
        ],
    );
    assert!(out.contains(&format!("firing {kota_alert}")), "{out}");
    let a = notified(&received, "/analysts", kota_alert, db, "firing").await;
    assert_eq!(a["labels"]["severity"].as_str(), Some(k[1].as_str()));
    assert_eq!(a["labels"]["kota_code"], "31.72");
    let summary = a["annotations"]["summary"].as_str().unwrap();
    assert!(
        summary
            .starts_with("Penyediaan Akomodasi dan Penyediaan Makan Minum in Kota Administrasi Jakarta Utara: revenue \u{2212}"),
        "{summary}"
    );
    assert!(summary.ends_with("; 2 weeks"), "{summary}");
    assert!(a["generatorURL"]
        .as_str()
        .unwrap()
        .contains("kota=31.72&district=&sector=I"));

    // ... is kept active while the service runs (and its gauges and
    // metrics are on /metrics) ...
    let page = scrape_service(
        &config,
        &["alerts", "--to", "2021-07-10"],
        metrics_port,
        "pulih_alerts_rounds_total{outcome=\"succeeded\"} 1",
    )
    .await;
    for line in [
        &format!("pulih_alerts_active{{severity=\"{}\"}} 1", k[1]),
        "pulih_alerts_alertmanager_posts_total{outcome=\"succeeded\"} 1",
    ] {
        assert!(
            page.lines().any(|l| l == line),
            "{line} missing from\n{page}"
        );
    }
    assert!(
        page.lines()
            .any(|l| l
                .starts_with("pulih_alerts_sector_revenue_yoy{kota=\"31.72\",sector=\"I\"} -0.")),
        "{page}"
    );
    assert!(page.contains("pulih_alerts_sector_revenue_yoy{kota=\"all\",sector=\"G\"}"));
    // A withheld cell has no gauge.
    assert!(!page.contains("kota=\"31.73\",sector=\"C\""), "{page}");
    let (used, missing) = rule_metrics_missing("pulih_alerts", &page);
    assert!(
        !used.is_empty() && missing.is_empty(),
        "rules use {used:?}; not exported: {missing:?}"
    );
    assert_eq!(undocumented_metrics(&page), Vec::<String>::new());

    // ... and resolves once the sector has recovered. The same round
    // looks at the last complete hour, the end of LAST: the restaurants of
    // 31.72.01 went silent at 18:00 while bank-a trades elsewhere (a
    // sudden stop); bank-b's cells went silent together (an outage, not a
    // stop).
    let (rows, seen) = hours(day(LAST));
    store.insert_activity(&rows).await.unwrap();
    store.insert_seen(&seen).await.unwrap();
    let out = run_pulih(&config, &["alerts", "--once"]);
    assert!(out.contains(&format!("resolved {kota_alert}")), "{out}");
    notified(&received, "/analysts", kota_alert, db, "resolved").await;
    let stop_alert = "sudden_stop/district_sector/31.72/31.72.01/I";
    assert!(out.contains(&format!("firing {stop_alert}")), "{out}");
    assert!(
        out.contains("sudden stops at 2021-10-20T16:00:00Z: 1 silent cell(s)"),
        "{out}"
    );
    let a = notified(&received, "/analysts", stop_alert, db, "firing").await;
    assert_eq!(a["labels"]["alertname"], "PulihSuddenStop");
    assert_eq!(
        a["annotations"]["summary"],
        "Penyediaan Akomodasi dan Penyediaan Makan Minum in Penjaringan, Kota Administrasi Jakarta Utara: \
         no transactions for 3 trading hours since 2021-10-20 18:00 WIB, while bank-a keeps trading elsewhere"
    );
    // An hour later it trades again: resolved.
    let next = local_midnight(day(LAST) + 1);
    store
        .insert_activity(&[activity(next, "31.72.01", "I", 3, &[1])])
        .await
        .unwrap();
    store
        .insert_watermarks(&[pulih_store::WatermarkRow {
            topic: kafka.topic.clone(),
            partition: 0,
            watermark_ms: (next + 2) * 3_600_000,
            updated_at: 0,
        }])
        .await
        .unwrap();
    let out = run_pulih(&config, &["alerts", "--once"]);
    assert!(out.contains(&format!("resolved {stop_alert}")), "{out}");
    notified(&received, "/analysts", stop_alert, db, "resolved").await;

    // Evaluating the same days again raises nothing new.
    let out = run_pulih(
        &config,
        &[
            "alerts",
            "--once",
            "--from",
            "2021-06-01",
            "--to",
            &format_day(final_day),
        ],
    );
    assert!(out.contains(" 0 change(s)"), "{out}");

    // Every change is on the topic once, valid against its schema, and in
    // alert_events; the two agree.
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("schemas/alert.v1.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&schema)
        .unwrap();
    let mut on_topic = BTreeMap::new();
    for m in read_topic(&kafka.brokers, &topic) {
        let v: Value = serde_json::from_slice(&m).unwrap();
        let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{v}: {errors:?}");
        let key = (
            v["alert_id"].as_str().unwrap().to_owned(),
            v["day"].as_str().unwrap().to_owned(),
            v["state"].as_str().unwrap().to_owned(),
        );
        assert!(on_topic.insert(key, v).is_none(), "a change sent twice");
    }
    let stored = store
        .client()
        .query(&format!(
            "SELECT alert_id, toString(day), toString(state) FROM `{db}_analytics`.alert_events FINAL ORDER BY alert_id, day"
        ))
        .fetch_all::<(String, String, String)>()
        .await
        .unwrap();
    let topic_keys: Vec<(String, String, String)> = on_topic.keys().cloned().collect();
    let mut stored_sorted = stored.clone();
    stored_sorted.sort();
    assert_eq!(topic_keys, stored_sorted);
    assert!(stored
        .iter()
        .any(|(id, _, s)| id == kota_alert && s == "firing"));
    assert!(stored
        .iter()
        .any(|(id, _, s)| id == kota_alert && s == "resolved"));

    // The public copy holds the downturns' changes, and no sudden stop.
    let public = store
        .client()
        .query(&format!(
            "SELECT alert_id, toString(day), toString(state) FROM `{db}_public`.alerts FINAL ORDER BY alert_id, day"
        ))
        .fetch_all::<(String, String, String)>()
        .await
        .unwrap();
    let downturns: Vec<(String, String, String)> = stored_sorted
        .iter()
        .filter(|(id, _, _)| id.starts_with("sector_downturn/"))
        .cloned()
        .collect();
    assert!(!downturns.is_empty());
    assert_eq!(public, downturns);

    // A new deployment in the middle of the downturn, when its 4-week
    // change has flattened: the alerts active then are raised, each from
    // the day it fired, and nothing that fired and cleared before.
    for t in ["alert_runs", "alert_events"] {
        store
            .client()
            .query(&format!("TRUNCATE TABLE `{db}_analytics`.{t}"))
            .execute()
            .await
            .unwrap();
    }
    let out = run_pulih(&config, &["alerts", "--once", "--to", "2021-08-01"]);
    assert!(
        out.contains("first evaluation: replayed 2021-02-01..2021-08-01: 2 alert(s) active"),
        "{out}"
    );
    let stored = store
        .client()
        .query(&format!(
            "SELECT alert_id, toString(day), toString(state) FROM `{db}_analytics`.alert_events FINAL ORDER BY alert_id"
        ))
        .fetch_all::<(String, String, String)>()
        .await
        .unwrap();
    let expected: Vec<(String, String, String)> =
        [(district_alert, "2021-06-23"), (kota_alert, "2021-06-25")]
            .iter()
            .map(|(id, d)| (id.to_string(), d.to_string(), "firing".to_owned()))
            .collect();
    assert_eq!(stored, expected);
    let _ = std::fs::remove_dir_all(&dir);
}
