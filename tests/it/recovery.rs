//! Recovery metrics on a seeded history: two and a half years of payments
//! (a baseline, the 2020 shock, a recovery) loaded through the backfill path
//! (`pulih produce` → Kafka → `pulih aggregate` → `pulih rollup`), then every
//! metric checked against a computation from the events themselves, and
//! every query of docs/data-model.md run on ClickHouse 18.16 and on chDB.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use pulih_metrics::{format_day, parse_day, Day};
use pulih_tests::{
    free_port, http, kafka_config, pulih_bin, pulih_toml, repo_root, store_config, unique,
};
use serde_json::{json, Value};

/// Kota → its districts with activity; 31.72.04 (in the reference, in
/// Jakarta Utara) never has any.
const DISTRICTS: [&str; 5] = ["31.71.01", "31.71.02", "31.72.01", "31.72.02", "31.72.03"];
const SECTORS: [&str; 2] = ["G", "I"];
/// Merchants per (district, sector), in the order above; the cells of two
/// merchants are always small, so their parents need complementary cells.
const MERCHANTS: [[u32; 2]; 5] = [[6, 4], [2, 3], [5, 4], [4, 2], [3, 5]];
const FIRST: &str = "2019-01-01";
const LAST: &str = "2021-06-30";
/// Lebaran 2020: no payments anywhere.
const GAP: (&str, &str) = ("2020-05-23", "2020-05-25");
/// Idul Fitri each year (schemas/reference/calendar.tsv): a week of less
/// trade around it, as Jakarta empties for the mudik; it moves 11 days
/// earlier each year.
const LEBARAN: [&str; 3] = ["2019-06-05", "2020-05-24", "2021-05-13"];
const IMLEK: [&str; 3] = ["2019-02-05", "2020-01-25", "2021-02-12"];

/// The day a year earlier that day `d` is compared with when aligned on
/// Lebaran (21 days before to 14 after) and Imlek (7 either side).
fn aligned(d: Day) -> Day {
    for (dates, before, after) in [(LEBARAN, 21, 14), (IMLEK, 7, 7)] {
        let dates = dates.map(|s| parse_day(s).unwrap());
        for (i, x) in dates.iter().enumerate() {
            if i > 0 && x - before <= d && d <= x + after {
                return d - x + dates[i - 1];
            }
        }
    }
    d - 364
}
/// 31.72.03 is closed through April 2020.
const CLOSED: (&str, &str, &str) = ("31.72.03", "2020-04-01", "2020-04-30");

const MIN_MERCHANTS: usize = 3;
const MIN_TXNS: u64 = 5;

struct Event {
    id: String,
    day: Day,
    merchant: String,
    district: &'static str,
    sector: &'static str,
    amount: u64,
}

/// xorshift64*: the same history on every run and machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Activity relative to normal: the shock from mid-March 2020, a trough
/// until early June, then a recovery to 90 % by March 2021; to 60 % only
/// for a lagging cell (`slow`).
fn level(d: Day, slow: bool) -> f64 {
    let target = if slow { 0.6 } else { 0.9 };
    let (shock, trough_end, recovered) = (
        parse_day("2020-03-15").unwrap(),
        parse_day("2020-06-07").unwrap(),
        parse_day("2021-03-01").unwrap(),
    );
    let weekend = if (d + 4).rem_euclid(7) >= 5 { 1.2 } else { 1.0 };
    let mudik = if LEBARAN
        .iter()
        .any(|l| (parse_day(l).unwrap() - d).abs() <= 3)
    {
        0.6
    } else {
        1.0
    };
    let base = if d < shock {
        1.0
    } else if d <= trough_end {
        0.3
    } else if d < recovered {
        0.3 + (target - 0.3) * f64::from(d - trough_end) / f64::from(recovered - trough_end)
    } else {
        target
    };
    (base * weekend * mudik).min(1.0)
}

fn history() -> Vec<Event> {
    let mut rng = Rng(0x5eed_2020);
    let gap = (parse_day(GAP.0).unwrap(), parse_day(GAP.1).unwrap());
    let closed = (parse_day(CLOSED.1).unwrap(), parse_day(CLOSED.2).unwrap());
    let mut out = Vec::new();
    for d in parse_day(FIRST).unwrap()..=parse_day(LAST).unwrap() {
        if (gap.0..=gap.1).contains(&d) {
            continue;
        }
        for (i, district) in DISTRICTS.iter().enumerate() {
            if *district == CLOSED.0 && (closed.0..=closed.1).contains(&d) {
                continue;
            }
            for (j, sector) in SECTORS.iter().enumerate() {
                // Accommodation and food in Jakarta Utara lags behind.
                let slow = district.starts_with("31.72") && *sector == "I";
                for m in 0..MERCHANTS[i][j] {
                    if rng.below(1000) as f64 >= 800.0 * level(d, slow) {
                        continue;
                    }
                    for _ in 0..1 + rng.below(3) {
                        out.push(Event {
                            id: format!("e{}", out.len()),
                            day: d,
                            merchant: format!("m-{}-{sector}-{m}", district.replace('.', "_")),
                            district,
                            sector,
                            amount: 5_000 * (1 + rng.below(40)),
                        });
                    }
                }
            }
        }
    }
    out
}

/// The NDJSON line of an event: mid-morning Jakarta time, 07:00 + a few
/// seconds per event of the day.
fn line(e: &Event, second: u64) -> String {
    let t = format!(
        "{}T{:02}:{:02}:{:02}.000+07:00",
        format_day(e.day),
        7 + second / 3600,
        second / 60 % 60,
        second % 60
    );
    json!({
        "event_id": e.id,
        "occurred_at": t,
        "merchant_id": e.merchant,
        "district_code": e.district,
        "sector": e.sector,
        "amount_idr": e.amount,
        "channel": "qris",
        "merchant_size": "micro",
    })
    .to_string()
}

// ---------------------------------------------------------------- expected

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key {
    level: &'static str,
    kota: String,
    district: String,
    sector: String,
}

/// The four cells an event counts in.
fn cells_of(e: &Event) -> [Key; 4] {
    let kota = e.district[..5].to_owned();
    let k = |level, kota: &str, district: &str, sector: &str| Key {
        level,
        kota: kota.into(),
        district: district.into(),
        sector: sector.into(),
    };
    [
        k("district_sector", &kota, e.district, e.sector),
        k("kota_sector", &kota, "", e.sector),
        k("sector", "", "", e.sector),
        k("city", "", "", ""),
    ]
}

#[derive(Default, Clone)]
struct Tally {
    txns: u64,
    amount: u64,
    merchants: BTreeSet<String>,
    /// Revenue per merchant.
    by_merchant: BTreeMap<String, u64>,
}

impl Tally {
    /// The p% rule with p = 10 %: the revenue less the two largest
    /// merchants' is under a tenth of the largest's.
    fn dominated(&self) -> bool {
        let mut v: Vec<u64> = self.by_merchant.values().copied().collect();
        v.sort_unstable_by(|a, b| b.cmp(a));
        let (first, second) = (
            v.first().copied().unwrap_or(0),
            v.get(1).copied().unwrap_or(0),
        );
        ((self.amount - first - second) as f64) < 0.1 * first as f64
    }
}

/// Metrics computed straight from the events, the slow obvious way.
struct Truth {
    first: Day,
    last: Day,
    days: HashMap<Key, HashMap<Day, Tally>>,
    baseline: (Day, Day),
    /// Merchants open per cell and day, counted once.
    open: HashMap<Key, HashMap<Day, usize>>,
}

impl Truth {
    fn new(events: &[Event]) -> Truth {
        let mut days: HashMap<Key, HashMap<Day, Tally>> = HashMap::new();
        for e in events {
            for k in cells_of(e) {
                let t = days.entry(k).or_default().entry(e.day).or_default();
                t.txns += 1;
                t.amount += e.amount;
                t.merchants.insert(e.merchant.clone());
                *t.by_merchant.entry(e.merchant.clone()).or_default() += e.amount;
            }
        }
        let mut truth = Truth {
            first: events.iter().map(|e| e.day).min().unwrap(),
            last: events.iter().map(|e| e.day).max().unwrap(),
            days,
            baseline: (
                parse_day("2020-01-04").unwrap(),
                parse_day("2020-01-31").unwrap(),
            ),
            open: HashMap::new(),
        };
        let cells: BTreeSet<Key> = truth.days.keys().cloned().collect();
        for k in cells {
            for d in truth.first..=truth.last {
                let mut all = BTreeSet::new();
                for x in d - 2..=d {
                    all.extend(truth.tally(&k, x).merchants.iter());
                }
                let n = all.len();
                truth.open.entry(k.clone()).or_default().insert(d, n);
            }
        }
        truth
    }

    fn tally(&self, k: &Key, d: Day) -> &Tally {
        static EMPTY: Tally = Tally {
            txns: 0,
            amount: 0,
            merchants: BTreeSet::new(),
            by_merchant: BTreeMap::new(),
        };
        self.days.get(k).and_then(|m| m.get(&d)).unwrap_or(&EMPTY)
    }

    fn has_row(&self, k: &Key, d: Day) -> bool {
        d >= self.first && d <= self.last && (d - 27..=d).any(|x| self.tally(k, x).txns > 0)
    }

    fn open(&self, k: &Key, d: Day) -> Option<f64> {
        if d - 2 < self.first || d > self.last {
            return None;
        }
        Some(self.open[k][&d] as f64)
    }

    /// Measure 0 revenue, 1 transactions, 2 merchants open, on one day.
    fn value(&self, k: &Key, m: usize, d: Day) -> Option<f64> {
        if d < self.first || d > self.last {
            return None;
        }
        let t = self.tally(k, d);
        match m {
            0 => Some(t.amount as f64),
            1 => Some(t.txns as f64),
            _ => self.open(k, d),
        }
    }

    fn ma7(&self, k: &Key, m: usize, d: Day) -> Option<f64> {
        let mut s = 0.0;
        for x in d - 6..=d {
            s += self.value(k, m, x)?;
        }
        Some(s / 7.0)
    }

    fn baseline(&self, k: &Key, m: usize) -> Option<f64> {
        let (a, b) = self.baseline;
        let mut s = 0.0;
        for x in a..=b {
            s += self.value(k, m, x)?;
        }
        Some(s / f64::from(b - a + 1))
    }

    fn index(&self, k: &Key, m: usize, d: Day) -> Option<f64> {
        div(self.ma7(k, m, d), self.baseline(k, m))
    }

    fn baseline_small(&self, k: &Key) -> bool {
        let (a, b) = self.baseline;
        let mut merchants = BTreeSet::new();
        let mut txns = 0;
        for x in a..=b {
            let t = self.tally(k, x);
            txns += t.txns;
            merchants.extend(t.merchants.iter());
        }
        merchants.len() < MIN_MERCHANTS || txns < MIN_TXNS
    }
}

fn div(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0),
        _ => false,
    }
}

// ------------------------------------------------------------- the store

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Null => None,
        Value::Number(n) => n.as_f64(),
        Value::String(s) => Some(s.parse().expect("a number")),
        other => panic!("not a number: {other}"),
    }
}

async fn rows(client: &clickhouse::Client, sql: &str) -> Vec<Value> {
    let bytes = client
        .query(sql)
        .fetch_bytes("JSONEachRow")
        .unwrap()
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    std::str::from_utf8(&bytes)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn key_of(r: &Value) -> (Key, Day) {
    let level = match r["level"].as_str().unwrap() {
        "district_sector" => "district_sector",
        "kota_sector" => "kota_sector",
        "sector" => "sector",
        "city" => "city",
        other => panic!("level {other}"),
    };
    let s = |c: &str| r[c].as_str().unwrap().to_owned();
    (
        Key {
            level,
            kota: s("kota_code"),
            district: s("district_code"),
            sector: s("sector"),
        },
        parse_day(r["day"].as_str().unwrap()).unwrap(),
    )
}

fn parent(k: &Key) -> Option<Key> {
    let (level, kota, sector) = match k.level {
        "district_sector" => ("kota_sector", k.kota.clone(), k.sector.clone()),
        "kota_sector" => ("sector", String::new(), k.sector.clone()),
        "sector" => ("city", String::new(), String::new()),
        _ => return None,
    };
    Some(Key {
        level,
        kota,
        district: String::new(),
        sector,
    })
}

const MEASURES: [&str; 3] = ["amount_idr", "txn_count", "merchants_open"];

/// Runs the binary to completion (at most five minutes) and returns its
/// standard output; its log goes to `<config dir>/<command>.log`.
pub(crate) fn run_pulih(config: &Path, args: &[&str]) -> String {
    let log_path = config.with_file_name(format!("{}.log", args[0]));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(pulih_bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .env(
            "PULIH_LOG",
            std::env::var("PULIH_TEST_LOG").unwrap_or_else(|_| "warn,rdkafka=warn".into()),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "pulih {args:?} still running after 5 minutes; log: {}",
                log_path.display()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(
        status.success(),
        "pulih {args:?}: {stdout}\n{}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
    stdout
}

/// The ```sql blocks of a Markdown file.
fn sql_blocks(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for l in markdown.lines() {
        match (&mut current, l.trim_end()) {
            (None, "```sql") => current = Some(String::new()),
            (Some(c), "```") => {
                out.push(c.trim().to_owned());
                current = None;
            }
            (Some(c), l) => {
                c.push_str(l);
                c.push('\n');
            }
            _ => {}
        }
    }
    out
}

/// The docs name the default databases; a test runs them in its own.
fn in_database(sql: &str, db: &str) -> String {
    sql.replace("pulih_public.", &format!("{db}_public."))
        .replace("pulih_analytics.", &format!("{db}_analytics."))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_history_gives_the_metrics_computed_from_the_events() {
    let events = history();
    let truth = Truth::new(&events);
    assert!(events.len() > 20_000, "{} events", events.len());

    // Load it the way a provider backfills: an NDJSON file through `pulih produce`.
    let kafka = kafka_config("recovery", 2);
    kafka.ensure_topic().await.expect("broker reachable");
    let store_config = store_config("recovery");
    let db = store_config.database.clone();
    let dir: PathBuf = repo_root()
        .join("target/test-services")
        .join(unique("recovery"));
    std::fs::create_dir_all(&dir).unwrap();
    // The pseudonymisation secret is rotated in the middle of the run: up
    // to noon of 2021-01-01 under k1, then under k2 with k1 as the previous
    // secret (the link period) until noon of 2021-01-10, then under k2
    // alone (docs/operations.md). Days on both sides of a change and the
    // two changing days themselves hold merchants under two keys.
    let noon = |d: &str| {
        let d = parse_day(d).unwrap();
        let day: Vec<usize> = (0..events.len()).filter(|&i| events[i].day == d).collect();
        day[day.len() / 2]
    };
    let (rotate, settle) = (noon("2021-01-01"), noon("2021-01-10"));
    let mut parts = [String::new(), String::new(), String::new()];
    let mut per_day: HashMap<Day, u64> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        let n = per_day.entry(e.day).or_default();
        let part = &mut parts[usize::from(i >= rotate) + usize::from(i >= settle)];
        part.push_str(&line(e, *n));
        part.push('\n');
        *n += 1;
    }
    let (k1, k2) = (
        "recovery-test-secret-0123456789abcdef0123",
        "recovery-test-secret-rotated-fedcba987654",
    );
    let secrets = [
        format!("[pseudonymisation]\nkey_id = \"k1\"\nsecret = \"{k1}\""),
        format!(
            "[pseudonymisation]\nkey_id = \"k2\"\nsecret = \"{k2}\"\nprevious_key_id = \"k1\"\nprevious_secret = \"{k1}\""
        ),
        format!("[pseudonymisation]\nkey_id = \"k2\"\nsecret = \"{k2}\""),
    ];
    let group = unique("it-recovery");
    let config_with = |i: usize| {
        let config = dir.join(format!("pulih-{i}.toml"));
        std::fs::write(
            &config,
            pulih_toml(
                &kafka,
                &store_config,
                &group,
                "emit_interval_ms = 200\nmetrics_addr = \"\"",
                &secrets[i],
            ),
        )
        .unwrap();
        config
    };
    let config = config_with(0);
    run_pulih(&config, &["migrate"]);
    let mut produced_total = 0;
    for (i, part) in parts.iter().enumerate() {
        let file = dir.join(format!("history-{i}.ndjson"));
        std::fs::write(&file, part).unwrap();
        let produced = run_pulih(
            &config_with(i),
            &[
                "produce",
                "--may-count-again",
                "--producer",
                "bank-a",
                "--file",
                file.to_str().unwrap(),
            ],
        );
        let n = part.lines().count();
        assert!(
            produced.contains(&format!("produced events={n} rejected=0")),
            "{produced}"
        );
        produced_total += n;
    }
    assert_eq!(produced_total, events.len());
    run_pulih(&config, &["aggregate", "--exit-at-end"]);
    // Merchants trading on both sides of the rotation have two keys; the
    // link period linked every one that traded in it.
    let count = |sql: String| {
        let client = clickhouse::Client::default()
            .with_url(&store_config.url)
            .with_validation(false);
        async move { client.query(&sql).fetch_one::<u64>().await.unwrap() }
    };
    let merchants = events
        .iter()
        .map(|e| &e.merchant)
        .collect::<BTreeSet<_>>()
        .len() as u64;
    let keys = count(format!(
        "SELECT uniqExact(merchant_key) FROM `{db}`.merchant_activity_daily_by_time"
    ))
    .await;
    let links = count(format!(
        "SELECT count() FROM `{db}`.merchant_key_link FINAL"
    ))
    .await;
    assert!(keys > merchants, "{keys} keys for {merchants} merchants");
    assert!(
        links > 0 && keys - links == merchants,
        "{keys} keys, {links} links, {merchants} merchants"
    );
    // Four ways to the same rows: a first partial run (its history read
    // from merchant_activity_daily_by_time), a second one that needs more history
    // than the first wrote, a full run, and a partial run after it (its
    // history read from the rows already rolled up).
    let client = clickhouse::Client::default()
        .with_url(&store_config.url)
        .with_database(&db)
        .with_validation(false);
    let values = |from: &str| {
        format!(
            "SELECT * FROM `{db}_analytics`.recovery_daily FINAL \
             WHERE day >= '{from}' ORDER BY level, kota_code, district_code, sector, day"
        )
    };
    let partial = run_pulih(&config, &["rollup", "--from", "2021-05-01"]);
    assert!(
        partial.contains("rolled up 2021-05-01..2021-06-30"),
        "{partial}"
    );
    // Every column but when the row was written.
    let unstamped = |mut v: Vec<Value>| {
        for r in &mut v {
            let r = r.as_object_mut().unwrap();
            r.remove("version");
            r.remove("computed_at");
        }
        v
    };
    let before = unstamped(rows(&client, &values("2021-05-01")).await);
    assert!(before.len() > 500, "{} rows", before.len());
    // The first run wrote only part of the year of history this one needs:
    // that part must not be taken for the whole.
    run_pulih(&config, &["rollup", "--from", "2021-06-01"]);
    assert!(
        unstamped(rows(&client, &values("2021-05-01")).await) == before,
        "a partial rollup after a shorter one gives the same rows"
    );
    let rolled = run_pulih(&config, &["rollup"]);
    assert!(
        rolled.contains(&format!("rolled up {FIRST}..{LAST}")),
        "{rolled}"
    );

    run_pulih(&config, &["rollup", "--from", "2021-06-01"]);
    assert!(
        unstamped(rows(&client, &values("2021-05-01")).await) == before,
        "a partial rollup gives the rows of a full one"
    );
    // One public release a day: the first run made today's, of the days it
    // computed; the next day's carries everything computed since.
    let releases = client
        .query(&format!(
            "SELECT toString(vintage) FROM `{db}_public`.releases ORDER BY vintage"
        ))
        .fetch_all::<String>()
        .await
        .unwrap();
    let today = pulih_event::calendar::day_of(pulih_event::calendar::now_ms()) as Day;
    assert_eq!(
        releases,
        vec![format_day(today)],
        "three later rounds the same day made no release"
    );
    let first_vintage = rows(
        &client,
        &format!("SELECT min(day) AS first, max(day) AS last FROM `{db}_public`.recovery_daily"),
    )
    .await;
    assert_eq!(first_vintage[0]["first"], "2021-05-01");
    let store = pulih_store::Store::new(&store_config);
    let last = parse_day(LAST).unwrap();
    assert!(store.release_public(today + 1, last, last).await.unwrap());
    let analytics = rows(
        &client,
        &format!("SELECT * FROM `{db}_analytics`.recovery_daily FINAL"),
    )
    .await;
    // Every reference cell, every day, whatever it traded.
    let cells_days = rows(
        &client,
        &format!(
            "SELECT count() AS n, uniqExact(level, kota_code, district_code, sector) AS cells, \
             uniqExact(day) AS days, uniqExact(vintage) AS vintages FROM `{db}_public`.recovery_daily"
        ),
    )
    .await;
    let reference = pulih_event::Reference::jakarta();
    let n_cells = 1 + 21 * (1 + 6 + reference.districts().len());
    let n_days = (last - parse_day(FIRST).unwrap() + 1) as usize;
    assert_eq!(num(&cells_days[0]["cells"]), Some(n_cells as f64));
    assert_eq!(num(&cells_days[0]["days"]), Some(n_days as f64));
    assert_eq!(num(&cells_days[0]["n"]), Some((n_cells * n_days) as f64));
    // Every row was computed again since the first release: all show the
    // second, and the first stays in recovery_vintages.
    assert_eq!(num(&cells_days[0]["vintages"]), Some(1.0));
    let kept = rows(
        &client,
        &format!("SELECT uniqExact(vintage) AS v, min(day) AS first FROM `{db}_public`.recovery_vintages WHERE vintage = toDate('{}')", format_day(today)),
    )
    .await;
    assert_eq!(kept[0]["first"], "2021-05-01", "the first release is kept");
    // The cells with any activity, compared value by value below.
    let public = rows(
        &client,
        &format!(
            "SELECT * FROM `{db}_public`.recovery_daily WHERE (level, kota_code, district_code, sector) IN \
             (SELECT level, kota_code, district_code, sector FROM `{db}_analytics`.recovery_daily)"
        ),
    )
    .await;
    let by_key: HashMap<(Key, Day), &Value> = analytics.iter().map(|r| (key_of(r), r)).collect();
    let public_by_key: HashMap<(Key, Day), &Value> =
        public.iter().map(|r| (key_of(r), r)).collect();

    // The rows: every cell with activity in the 28 days up to a day, and
    // no others; nothing for the district without payments.
    let cells: BTreeSet<Key> = truth.days.keys().cloned().collect();
    let mut expected_rows = BTreeSet::new();
    for k in &cells {
        for d in truth.first..=truth.last {
            if truth.has_row(k, d) {
                expected_rows.insert((k.clone(), d));
            }
        }
    }
    let got_rows: BTreeSet<(Key, Day)> = by_key.keys().cloned().collect();
    assert_eq!(got_rows.len(), expected_rows.len());
    assert!(got_rows == expected_rows, "row sets differ");
    let traded: BTreeSet<&Key> = by_key.keys().map(|(k, _)| k).collect();
    assert_eq!(public_by_key.len(), traded.len() * n_days);
    assert!(!got_rows.iter().any(|(k, _)| k.district == "31.72.04"));

    // Every value of every row, against the events.
    let mut complementary = 0;
    let mut small = 0;
    let mut dominance = 0;
    for ((k, d), r) in &by_key {
        let (k, d) = (k, *d);
        let t = truth.tally(k, d);
        let what = format!("{k:?} {}", format_day(d));
        assert_eq!(num(&r["amount_idr_sum"]), Some(t.amount as f64), "{what}");
        assert_eq!(num(&r["txn_count"]), Some(t.txns as f64), "{what}");
        assert_eq!(
            num(&r["merchants_active"]),
            Some(t.merchants.len() as f64),
            "{what}"
        );
        assert_eq!(num(&r["merchants_open"]), truth.open(k, d), "{what}");
        for (m, name) in MEASURES.iter().enumerate() {
            let col = |c: &str| num(&r[format!("{name}_{c}")]);
            let ma7 = truth.ma7(k, m, d);
            assert!(
                close(col("ma7"), ma7),
                "{what} {name}_ma7 {:?} {ma7:?}",
                col("ma7")
            );
            assert!(
                close(col("baseline"), truth.baseline(k, m)),
                "{what} {name}_baseline"
            );
            assert!(
                close(col("index"), truth.index(k, m, d)),
                "{what} {name}_index"
            );
            let yoy = div(ma7, truth.ma7(k, m, d - 364)).map(|x| x - 1.0);
            assert!(close(col("yoy"), yoy), "{what} {name}_yoy");
            let yoy_aligned = div(ma7, truth.ma7(k, m, aligned(d))).map(|x| x - 1.0);
            assert!(
                close(col("yoy_aligned"), yoy_aligned),
                "{what} {name}_yoy_aligned"
            );
            let wow = div(ma7, truth.ma7(k, m, d - 7)).map(|x| x - 1.0);
            assert!(close(col("wow"), wow), "{what} {name}_wow");
            let chg4w = div(ma7, truth.ma7(k, m, d - 28)).map(|x| x - 1.0);
            assert!(close(col("chg4w"), chg4w), "{what} {name}_chg4w");
        }
        let is_small = t.merchants.len() < MIN_MERCHANTS || t.txns < MIN_TXNS;
        match r["suppression"].as_str().unwrap() {
            "small_cell" => {
                assert!(is_small, "{what} suppressed as small");
                small += 1;
            }
            "dominance" => {
                assert!(!is_small && t.dominated(), "{what} suppressed as dominated");
                dominance += 1;
            }
            "none" => assert!(
                !is_small && !t.dominated(),
                "{what} small or dominated but published"
            ),
            "complementary" => {
                assert!(!is_small && !t.dominated(), "{what}");
                complementary += 1;
            }
            other => panic!("suppression {other}"),
        }
    }
    assert!(
        small > 1_000 && complementary > 100 && dominance > 100,
        "small {small}, dominance {dominance}, complementary {complementary}"
    );

    // Publication: nothing small or complementary leaves; a derived value
    // is published only when every day it is computed from is.
    let published = |k: &Key, d: Day| {
        by_key
            .get(&(k.clone(), d))
            .is_some_and(|r| r["suppression"] == "none")
    };
    let window = |k: &Key, d: Day| (d - 6..=d).all(|x| published(k, x));
    let round = |v: Option<f64>| v.map(pulih_metrics::round_public);
    for ((k, d), r) in &public_by_key {
        let what = format!("{k:?} {}", format_day(*d));
        let Some(a) = by_key.get(&(k.clone(), *d)) else {
            // No trade in 28 days: withheld like any small cell.
            assert_eq!(num(&r["withheld"]), Some(1.0), "{what}");
            continue;
        };
        let open = a["suppression"] == "none";
        assert_eq!(
            num(&r["withheld"]),
            Some(if open { 0.0 } else { 1.0 }),
            "{what}"
        );
        let incomplete = if open { num(&a["incomplete"]) } else { None };
        assert_eq!(num(&r["incomplete"]), incomplete, "{what}");
        // The release above says provisional from its last day.
        let provisional = if *d >= last { 1.0 } else { 0.0 };
        assert_eq!(num(&r["provisional"]), Some(provisional), "{what}");
        for name in MEASURES {
            let rules = [
                ("index", window(k, *d) && !truth.baseline_small(k)),
                ("yoy", window(k, *d) && window(k, *d - 364)),
                ("yoy_aligned", window(k, *d) && window(k, aligned(*d))),
                ("wow", window(k, *d) && window(k, *d - 7)),
                ("chg4w", window(k, *d) && window(k, *d - 28)),
            ];
            for (c, ok) in rules {
                let col = format!("{name}_{c}");
                let want = if ok {
                    round(num(&a[col.as_str()]))
                } else {
                    None
                };
                assert_eq!(num(&r[col.as_str()]), want, "{what} {col}");
            }
        }
    }

    // Complementary suppression: on every day, no published parent has
    // exactly one withheld child, and no withheld parent is the sum of
    // published children.
    let mut children: BTreeMap<(Key, Day), Vec<bool>> = BTreeMap::new();
    for (k, d) in by_key.keys() {
        if let Some(p) = parent(k) {
            children.entry((p, *d)).or_default().push(published(k, *d));
        }
    }
    for ((p, d), kids) in &children {
        let withheld = kids.iter().filter(|ok| !**ok).count();
        if published(p, *d) {
            assert_ne!(
                withheld,
                1,
                "{p:?} {} gives its small child away",
                format_day(*d)
            );
        } else {
            assert!(
                withheld >= 1,
                "{p:?} {} is the sum of its children",
                format_day(*d)
            );
        }
    }

    // The story the data tells, and its edge cases.
    let city = Key {
        level: "city",
        kota: String::new(),
        district: String::new(),
        sector: String::new(),
    };
    let at = |d: &str, c: &str| num(&public_by_key[&(city.clone(), parse_day(d).unwrap())][c]);
    assert!(at("2020-01-20", "txn_count_index").unwrap() > 0.9);
    assert!(
        at("2020-04-20", "txn_count_index").unwrap() < 0.45,
        "the shock"
    );
    assert!(
        at("2021-04-20", "txn_count_index").unwrap() > 0.75,
        "the recovery"
    );
    assert!(
        at("2021-04-20", "txn_count_yoy").unwrap() > 1.0,
        "against April 2020"
    );
    assert!(at("2020-04-01", "txn_count_chg4w").unwrap() < -0.4);
    // The Lebaran gap: rows stay, withheld, and the 7-day values after it
    // are not published until a full clean week has passed.
    assert_eq!(at("2020-05-24", "withheld"), Some(1.0));
    assert_eq!(at("2020-05-30", "txn_count_index"), None);
    assert!(at("2020-06-01", "txn_count_index").is_some());
    // 52 weeks after the leap day lands on it.
    let leap = parse_day("2021-02-27").unwrap();
    assert_eq!(format_day(leap - 364), "2020-02-29");
    assert_eq!(
        at("2021-02-27", "amount_idr_yoy"),
        round(div(truth.ma7(&city, 0, leap), truth.ma7(&city, 0, leap - 364)).map(|x| x - 1.0))
    );
    // Before a year of history exists, there is no year-on-year change.
    assert_eq!(at("2019-12-20", "txn_count_yoy"), None);
    // Lebaran moves 12 days earlier from 2019 to 2020. A week after it in
    // 2020, 52 weeks earlier is 2019's quiet Lebaran week, so the plain
    // year-on-year change reads a rebound that is not there; aligned on
    // Lebaran, the same days after 2019's Lebaran are compared instead.
    // (Both share 2020's numerator: the ratio is 2019's two 7-day averages.)
    let value = |d: &str, column: &str| {
        num(&by_key[&(city.clone(), parse_day(d).unwrap())][column]).unwrap()
    };
    for d in ["2020-06-03", "2020-06-04", "2020-06-05", "2020-06-06"] {
        let (plain, holiday_aligned) =
            (value(d, "txn_count_yoy"), value(d, "txn_count_yoy_aligned"));
        assert!(
            (1.0 + plain) / (1.0 + holiday_aligned) > 1.1,
            "{d}: {plain:.3} against 52 weeks, {holiday_aligned:.3} aligned on Lebaran"
        );
    }
    // Away from Lebaran and Imlek the two are the same.
    assert_eq!(
        value("2020-07-15", "txn_count_yoy"),
        value("2020-07-15", "txn_count_yoy_aligned")
    );

    // The cookbook: every query of docs/data-model.md on this data, here
    // and on current ClickHouse (chDB) from an export of the same tables.
    let doc = std::fs::read_to_string(repo_root().join("docs/data-model.md")).unwrap();
    let queries = sql_blocks(&doc);
    assert!(
        queries.len() >= 10,
        "{} queries in docs/data-model.md",
        queries.len()
    );
    for q in &queries {
        let got = rows(&client, &in_database(q, &db)).await;
        assert!(!got.is_empty(), "no rows on ClickHouse 18.16 from:\n{q}");
    }
    let export = dir.join("export");
    std::fs::create_dir_all(&export).unwrap();
    for (database, table) in [
        ("analytics", "recovery_daily"),
        ("public", "recovery_vintages"),
        ("analytics", "activity_1m"),
        ("analytics", "releases"),
        ("public", "releases"),
        ("public", "calendar"),
        ("analytics", "producer_coverage_daily"),
        ("analytics", "cell_coverage_daily"),
        ("public", "districts"),
    ] {
        let data = client
            .query(&format!("SELECT * FROM `{db}_{database}`.{table} FINAL"))
            .fetch_bytes("TabSeparated")
            .unwrap()
            .collect()
            .await
            .unwrap();
        std::fs::write(export.join(format!("pulih_{database}.{table}.tsv")), data).unwrap();
    }
    let chdb = Command::new("python3")
        .arg(repo_root().join("schemas/clickhouse/check_with_chdb.py"))
        .arg("--cookbook")
        .arg(repo_root().join("docs/data-model.md"))
        .arg("--data")
        .arg(&export)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&chdb.stdout);
    assert!(
        chdb.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&chdb.stderr)
    );
    assert!(out.contains(&format!("{} queries", queries.len())), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `pulih rollup --every` keeps running and picks up days that arrive
/// after it started, new ones and backfilled old ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollup_every_picks_up_new_days() {
    let kafka = kafka_config("rollup_every", 1);
    let store_config = store_config("rollup_every");
    let store = pulih_store::Store::new(&store_config);
    store.migrate().await.unwrap();
    let dir: PathBuf = repo_root()
        .join("target/test-services")
        .join(unique("rollup_every"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("pulih.toml");
    let metrics_port = free_port();
    // Old days: release without waiting for yesterday to be complete.
    let metrics = format!(
        "[metrics]\nrollup_metrics_addr = \"127.0.0.1:{metrics_port}\"\npublic_release_hour = 0\n"
    );
    std::fs::write(
        &config,
        pulih_toml(&kafka, &store_config, "unused", "", &metrics),
    )
    .unwrap();
    let day_rows = |day: &str| -> Vec<pulih_store::DailyRow> {
        (0..4u8)
            .map(|m| pulih_store::DailyRow {
                day: parse_day(day).unwrap() as u16,
                district_code: "31.72.01".into(),
                sector: "G".into(),
                merchant_key: [m; 32],
                txn_count: 2,
                amount_idr_sum: 50_000,
                is_final: 1,
                source_partition: 0,
                source_offset: i64::from(m),
                version: 3,
                // When the aggregator would have written it: now.
                updated_at: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs() as u32,
            })
            .collect()
    };
    // The aggregator of the topic's one partition has passed the end of
    // 2021-03-01 (Jakarta): that day is complete.
    store.record_layout(&kafka.topic, 1).await.unwrap();
    let complete_through = |day: &str| {
        let store = store.clone();
        let topic = kafka.topic.clone();
        let end = pulih_event::calendar::day_end_ms(i64::from(parse_day(day).unwrap()));
        async move {
            store
                .insert_watermarks(&[pulih_store::WatermarkRow {
                    topic,
                    partition: 0,
                    watermark_ms: end,
                    updated_at: 0,
                }])
                .await
                .unwrap()
        }
    };
    complete_through("2021-03-01").await;
    store.insert_daily(&day_rows("2021-03-01")).await.unwrap();
    let log = std::fs::File::create(dir.join("rollup.log")).unwrap();
    let mut child = pulih_tests::KillOnDrop(
        Command::new(pulih_bin())
            .arg("--config")
            .arg(&config)
            .args(["rollup", "--every", "1"])
            .env("PULIH_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let client = clickhouse::Client::default()
        .with_url(&store_config.url)
        .with_validation(false);
    let city_txns = |day: &'static str| {
        let client = client.clone();
        let db = store_config.database.clone();
        async move {
            client
                .query(&format!(
                    "SELECT toUInt64(ifNull(sum(txn_count), 0)) FROM `{db}_analytics`.recovery_daily FINAL \
                     WHERE level = 'city' AND day = '{day}'"
                ))
                .fetch_one::<u64>()
                .await
                .unwrap()
        }
    };
    let wait_for = |day: &'static str, want: u64| {
        let city_txns = &city_txns;
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while city_txns(day).await != want {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no rollup of {day} within 30 s"
                );
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    };
    wait_for("2021-03-01", 8).await;
    let release = || {
        let client = client.clone();
        let db = store_config.database.clone();
        async move {
            client
                .query(&format!(
                    "SELECT toString(argMax(data_through, released_at)), toString(argMax(provisional_from, released_at)) \
                     FROM `{db}_analytics`.releases"
                ))
                .fetch_one::<(String, String)>()
                .await
                .unwrap()
        }
    };
    // The first round made today's public release. A late merchant-day
    // revises the analysts' day, and the public one stays as released:
    // one vintage a day, so two polls never differ by one payment.
    let public_rows = || {
        let client = client.clone();
        let db = store_config.database.clone();
        async move {
            let bytes = client
                .query(&format!(
                    "SELECT * FROM `{db}_public`.recovery_vintages ORDER BY level, kota_code, district_code, sector, day, vintage"
                ))
                .fetch_bytes("TSV")
                .unwrap()
                .collect()
                .await
                .unwrap();
            String::from_utf8(bytes.to_vec()).unwrap()
        }
    };
    // The round's release follows its rows.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let released = loop {
        let text = public_rows().await;
        if !text.is_empty() {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no public release within 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(
        released.lines().count(),
        1 + 21 * (1 + 6 + pulih_event::Reference::jakarta().districts().len()),
        "every reference cell, for the one complete day"
    );
    assert!(released.contains("2021-03-01\tcity\t\t\t\t"), "{released}");
    let mut late = day_rows("2021-03-01");
    late.truncate(1);
    late[0].merchant_key = [9; 32];
    store.insert_daily(&late).await.unwrap();
    wait_for("2021-03-01", 10).await;
    assert_eq!(public_rows().await, released, "no second release today");
    // A day the aggregator has not finished is not published, however
    // many rounds pass.
    store.insert_daily(&day_rows("2021-03-02")).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(
        city_txns("2021-03-02").await,
        0,
        "a partial day is not computed"
    );
    assert_eq!(
        release().await,
        ("2021-03-01".to_owned(), "2021-02-23".to_owned()),
        "complete through 2021-03-01, the last 7 days provisional"
    );
    complete_through("2021-03-02").await;
    wait_for("2021-03-02", 8).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while release().await.0 != "2021-03-02" {
        assert!(
            std::time::Instant::now() < deadline,
            "no release of 2021-03-02"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // A backfill of an older day is rolled up too, without a restart.
    store.insert_daily(&day_rows("2021-02-01")).await.unwrap();
    wait_for("2021-02-01", 8).await;
    assert!(child.try_wait().unwrap().is_none(), "still running");
    // A round's rows are visible before its counters move: scrape until the
    // round that wrote the backfilled day has been counted.
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], metrics_port));
    let scrape_value = |text: &str, name: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let text = loop {
        let (status, _, body) = http(addr, "GET", "/metrics", &[], b"").await;
        let text = String::from_utf8(body).unwrap();
        assert_eq!(status, 200, "{text}");
        let succeeded = scrape_value(&text, "pulih_rollup_rounds_total{outcome=\"succeeded\"}");
        if succeeded.is_some_and(|n| n >= 3.0) {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "fewer than 3 successful rounds counted within 30 s:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let value = |name: &str| -> f64 {
        scrape_value(&text, name).unwrap_or_else(|| panic!("{name} missing from\n{text}"))
    };
    assert_eq!(value("pulih_rollup_rounds_total{outcome=\"failed\"}"), 0.0);
    // The newest day is 2021-03-02, whose Jakarta midnight is 17:00 UTC
    // the day before.
    assert_eq!(
        value("pulih_rollup_latest_day_timestamp_seconds"),
        1_614_618_000.0
    );
    assert!(value("pulih_rollup_rows_total") > 0.0);
    assert_eq!(value("pulih_rollup_public_releases_total"), 1.0);
    // Every rollup metric the alerting rules and dashboards use is exported,
    // but those of producers: no merchant here has a known producer
    // (alerts.rs checks them on a history with producers).
    let (used, missing) = pulih_tests::rule_metrics_missing("pulih_rollup", &text);
    assert!(used.len() >= 5, "{used:?}");
    assert_eq!(
        missing,
        [
            "pulih_rollup_producer_coverage_ratio",
            "pulih_rollup_producer_outage"
        ],
        "not in\n{text}"
    );
    let undocumented = pulih_tests::undocumented_metrics(&text);
    assert!(
        undocumented.is_empty(),
        "not in docs/operations.md: {undocumented:?}"
    );
    assert_eq!(public_rows().await, released, "still today's release only");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - value("pulih_rollup_last_success_timestamp_seconds")).abs() < 60.0);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// One producer of three stops for 3 days: its coverage flags exactly those
/// days as an outage, the other two producers' days stay covered, the
/// cell its merchants are in is incomplete on those days only, and nothing
/// reads as a collapse: the 7-day averages leave those days out.
#[tokio::test]
async fn an_outage_of_one_producer_is_flagged_on_its_days() {
    let store_config = store_config("coverage");
    let store = pulih_store::Store::new(&store_config);
    store.migrate().await.unwrap();
    let first = parse_day("2021-03-01").unwrap();
    let stop = first + 30..first + 33;
    let producers = ["bank-a", "bank-b", "qris-c"];
    let mut mapping = Vec::new();
    let mut daily = Vec::new();
    for (p, producer) in producers.iter().enumerate() {
        for m in 0..10u8 {
            let key = [p as u8 * 16 + m; 32];
            mapping.push(pulih_store::MerchantProducerRow {
                merchant_key: key,
                producer_id: (*producer).to_owned(),
                first_seen: 0,
            });
            for day in first..first + 42 {
                if p == 2 && stop.contains(&day) {
                    continue;
                }
                daily.push(pulih_store::DailyRow {
                    day: day as u16,
                    district_code: "31.72.01".into(),
                    sector: "G".into(),
                    merchant_key: key,
                    txn_count: 3,
                    amount_idr_sum: 60_000,
                    is_final: 1,
                    source_partition: 0,
                    source_offset: 1,
                    version: 3,
                    updated_at: 0,
                });
            }
        }
    }
    store.insert_merchant_producers(&mapping).await.unwrap();
    store.insert_daily(&daily).await.unwrap();
    let kota = pulih_store::kota_map([("31.72.01", "31.72")]);
    let cells = pulih_metrics::reference_cells(&kota, &["G".to_owned()]);
    store
        .rollup(
            &pulih_metrics::Params::standard(),
            &kota,
            &cells,
            None,
            None,
        )
        .await
        .unwrap();
    let last = first + 41;
    let today = pulih_event::calendar::day_of(pulih_event::calendar::now_ms()) as Day;
    assert!(store.release_public(today, last, last).await.unwrap());
    let outages = store
        .client()
        .query(&format!(
            "SELECT producer_id, toString(day) FROM `{}_analytics`.producer_coverage_daily FINAL \
             WHERE outage = 1 ORDER BY producer_id, day",
            store_config.database
        ))
        .fetch_all::<(String, String)>()
        .await
        .unwrap();
    let want: Vec<(String, String)> = stop
        .clone()
        .map(|d| ("qris-c".to_owned(), format_day(d)))
        .collect();
    assert_eq!(outages, want);
    // Judged every day once four weeks of history exist: 3 producers × 14.
    let judged = store
        .client()
        .query(&format!(
            "SELECT count() FROM `{}_analytics`.producer_coverage_daily FINAL \
             WHERE day >= '2021-03-29' AND coverage IS NOT NULL",
            store_config.database
        ))
        .fetch_one::<u64>()
        .await
        .unwrap();
    assert_eq!(judged, 42);
    // The cell its merchants are in misses a third of what it expects on
    // those days, at every level up to the city; no other day is
    // incomplete.
    let incomplete = store
        .client()
        .query(&format!(
            "SELECT toString(level), toString(day), round(missing_share, 4) \
             FROM `{}_analytics`.cell_coverage_daily FINAL WHERE incomplete = 1 ORDER BY day, level",
            store_config.database
        ))
        .fetch_all::<(String, String, f64)>()
        .await
        .unwrap();
    let want: Vec<(String, String, f64)> = stop
        .clone()
        .flat_map(|d| {
            ["district_sector", "kota_sector", "sector", "city"]
                .map(|level| (level.to_owned(), format_day(d), 0.3333))
        })
        .collect();
    assert_eq!(incomplete, want);

    // Every level, every day from the first with a week-over-week change:
    // the 7-day averages hold steady through the outage, and the public
    // rows mark its days.
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct Public {
        d: u16,
        incomplete: Option<u8>,
        amount_idr_wow: Option<f64>,
        txn_count_wow: Option<f64>,
        merchants_open_wow: Option<f64>,
    }
    let public = store
        .client()
        .query(&format!(
            "SELECT toUInt16(day) AS d, incomplete, amount_idr_wow, txn_count_wow, merchants_open_wow \
             FROM `{}_public`.recovery_daily WHERE withheld = 0 AND day >= toDate('{}') ORDER BY day, level",
            store_config.database,
            format_day(first + 13)
        ))
        .fetch_all::<Public>()
        .await
        .unwrap();
    assert_eq!(public.len(), 4 * 29, "every level, every day from the 14th");
    for r in &public {
        let d = Day::from(r.d);
        assert_eq!(
            r.incomplete,
            Some(u8::from(stop.contains(&d))),
            "{}",
            format_day(d)
        );
        for wow in [r.amount_idr_wow, r.txn_count_wow] {
            assert_eq!(wow, Some(0.0), "{}: not a collapse", format_day(d));
        }
        // Merchants open counts the two days before: it recovers on the
        // third day after the outage, and the outage days are left out.
        assert!(
            r.merchants_open_wow.is_none_or(|w| w == 0.0),
            "{}",
            format_day(d)
        );
    }
}
