//! The shipped ClickHouse accounts (deploy/clickhouse/users.d/pulih-roles.xml)
//! on a private server: each can do its job and is refused the rest.

use pulih_metrics::{parse_day, Params};
use pulih_store::{ActivityRow, DailyRow, Store, StoreConfig};
use pulih_tests::{repo_root, PrivateClickHouse};
use sha2::{Digest, Sha256};

pub(crate) const WRITER: (&str, &str) = ("pulih_writer", "writer-secret");
const ANALYST: (&str, &str) = ("pulih_analyst", "analyst-secret");
pub(crate) const PUBLIC: (&str, &str) = ("pulih_public", "public-secret");

fn digest(password: &str) -> String {
    hex::encode(Sha256::digest(password.as_bytes()))
}

fn client(ch: &PrivateClickHouse, (user, password): (&str, &str)) -> clickhouse::Client {
    clickhouse::Client::default()
        .with_url(ch.url())
        .with_user(user)
        .with_password(password)
        .with_database("system")
        .with_validation(false)
}

async fn count(c: &clickhouse::Client, sql: &str) -> Result<u64, String> {
    c.query(sql)
        .fetch_one::<u64>()
        .await
        .map_err(|e| e.to_string())
}

async fn run(c: &clickhouse::Client, sql: &str) -> Result<(), String> {
    c.query(sql).execute().await.map_err(|e| e.to_string())
}

/// `result` is an error with ClickHouse code `code` (291: access denied to
/// a database, 164: readonly, 47: unknown column, 193: wrong password).
fn refused<T: std::fmt::Debug>(result: Result<T, String>, code: u32, what: &str) {
    match result {
        Ok(v) => panic!("{what}: allowed ({v:?}), should be refused"),
        Err(e) => assert!(
            e.contains(&format!("Code: {code}")),
            "{what}: refused, but not with code {code}: {e}"
        ),
    }
}

/// A private ClickHouse with the shipped accounts.
pub(crate) fn with_roles(name: &str) -> PrivateClickHouse {
    let roles = repo_root().join("deploy/clickhouse/users.d/pulih-roles.xml");
    let (w, a, p) = (digest(WRITER.1), digest(ANALYST.1), digest(PUBLIC.1));
    PrivateClickHouse::start_with_users(
        name,
        &[&roles],
        &[
            ("PULIH_CH_WRITER_SHA256", &w),
            ("PULIH_CH_ANALYST_SHA256", &a),
            ("PULIH_CH_PUBLIC_SHA256", &p),
        ],
    )
}

/// The pipeline's store, as the writer account.
pub(crate) fn writer_store(ch: &PrivateClickHouse) -> Store {
    Store::new(&StoreConfig {
        url: ch.url(),
        database: "pulih".into(),
        user: WRITER.0.into(),
        password: WRITER.1.into(),
        cluster: String::new(),
        insert_quorum: 1,
    })
}

#[tokio::test]
async fn each_account_can_do_its_job_and_nothing_more() {
    let ch = with_roles("ch_roles");
    // The writer migrates, writes what the aggregator writes, and rolls up.
    let store = writer_store(&ch);
    store
        .migrate()
        .await
        .expect("the writer applies the migrations");
    let day = parse_day("2020-01-10").unwrap();
    let keys: Vec<[u8; 32]> = (0..4u8).map(|i| [i + 1; 32]).collect();
    store
        .insert_activity(&[ActivityRow {
            window_start: day as u32 * 86_400,
            district_code: "31.71.01".into(),
            sector: "G".into(),
            producer_id: "bank".into(),
            txn_count: 8,
            amount_idr_sum: 80_000,
            amount_idr_min: 10_000,
            amount_idr_max: 10_000,
            merchants_active: 4,
            txn_qris: 8,
            txn_debit_card: 0,
            txn_credit_card: 0,
            txn_ewallet: 0,
            txn_bank_transfer: 0,
            txn_other: 0,
            txn_micro: 8,
            txn_small: 0,
            txn_medium: 0,
            is_final: 1,
            source_partition: 0,
            source_offset: 7,
            merchant_keys: keys.clone(),
            version: 17,
            updated_at: 0,
        }])
        .await
        .expect("the writer inserts window rows");
    let daily: Vec<DailyRow> = keys
        .iter()
        .map(|k| DailyRow {
            day: day as u16,
            district_code: "31.71.01".into(),
            sector: "G".into(),
            merchant_key: *k,
            txn_count: 2,
            amount_idr_sum: 20_000,
            is_final: 1,
            source_partition: 0,
            source_offset: 7,
            version: 17,
            updated_at: 0,
        })
        .collect();
    store
        .insert_daily(&daily)
        .await
        .expect("the writer inserts merchant-days");
    let kota = pulih_store::kota_map([("31.71.01", "31.71")]);
    let cells = pulih_metrics::reference_cells(&kota, &["G".to_owned()]);
    let report = store
        .rollup(&Params::standard(), &kota, &cells, None, None)
        .await
        .expect("the writer rolls up");
    assert_eq!(report.rows, 4, "one row per level");
    let today = pulih_event::calendar::day_of(pulih_event::calendar::now_ms()) as i32;
    assert!(store
        .release_public(today, day, day)
        .await
        .expect("the writer releases"));
    let writer = client(&ch, WRITER);
    refused(
        count(&writer, "SELECT count() FROM default.one").await,
        291,
        "writer reads a database outside pulih's",
    );

    // The analyst reads aggregates, never merchant keys or raw tables.
    let analyst = client(&ch, ANALYST);
    assert_eq!(
        count(
            &analyst,
            "SELECT sum(txn_count) FROM pulih_analytics.activity_1m FINAL"
        )
        .await,
        Ok(8),
        "activity_1m_by_producer reaches the analytics copy"
    );
    assert_eq!(
        count(
            &analyst,
            "SELECT toUInt64(sum(merchants_active)) FROM pulih_analytics.recovery_daily FINAL WHERE level = 'city'"
        )
        .await,
        Ok(4),
        "the analyst sees unsuppressed metrics"
    );
    assert_eq!(
        count(&analyst, "SELECT count() FROM pulih_public.recovery_daily").await,
        Ok(4)
    );
    refused(
        count(
            &analyst,
            "SELECT count() FROM pulih_analytics.activity_1m WHERE notEmpty(merchant_keys)",
        )
        .await,
        47,
        "analyst reads merchant keys from the analytics copy",
    );
    for table in [
        "activity_1m_by_producer",
        "merchant_activity_daily_by_time",
        "aggregator_counted_by_producer",
    ] {
        refused(
            count(&analyst, &format!("SELECT count() FROM pulih.{table}")).await,
            291,
            &format!("analyst reads pulih.{table}"),
        );
    }
    refused(
        run(
            &analyst,
            "INSERT INTO pulih_analytics.recovery_daily (day) VALUES ('2020-01-01')",
        )
        .await,
        164,
        "analyst inserts",
    );
    refused(
        run(&analyst, "DROP TABLE pulih_public.recovery_daily").await,
        164,
        "analyst drops a table",
    );

    // The public account reads the released indices and nothing else.
    let public = client(&ch, PUBLIC);
    assert_eq!(
        count(
            &public,
            "SELECT count() FROM pulih_public.recovery_daily WHERE withheld = 0"
        )
        .await,
        Ok(4)
    );
    for table in [
        "pulih_analytics.recovery_daily",
        "pulih_analytics.activity_1m",
        "pulih.activity_1m_by_producer",
    ] {
        refused(
            count(&public, &format!("SELECT count() FROM {table}")).await,
            291,
            &format!("public reads {table}"),
        );
    }
    refused(
        run(
            &public,
            "INSERT INTO pulih_public.recovery_vintages (day) VALUES ('2020-01-01')",
        )
        .await,
        164,
        "public inserts",
    );
    refused(
        count(
            &public.clone().with_setting("max_execution_time", "3600"),
            "SELECT count() FROM pulih_public.recovery_daily",
        )
        .await,
        164,
        "public raises its time limit",
    );
    refused(
        count(&client(&ch, (PUBLIC.0, "guess")), "SELECT 1").await,
        193,
        "a wrong password",
    );
}

/// The attacks on published metrics, each run with the public account's
/// rights against a rollup of a month around the baseline: none recovers a
/// withheld value (docs/data-model.md, "What is published").
#[tokio::test]
async fn the_public_account_cannot_recover_withheld_values() {
    let ch = with_roles("ch_attacks");
    let store = writer_store(&ch);
    store.migrate().await.unwrap();
    // Jakarta Pusat, trade (G), 2020-01-01 .. 2020-02-29:
    // - 31.71.01: five merchants a day, one only on 2020-01-15 (a withheld
    //   day inside the baseline month);
    // - 31.71.02: one medium merchant and two stalls (dominated);
    // - 31.71.03: four equal merchants;
    // - 31.71.04: one merchant, on 2020-02-10 only;
    // - 31.71.05: never trades.
    let (first, last) = (
        parse_day("2020-01-01").unwrap(),
        parse_day("2020-02-29").unwrap(),
    );
    let lonely = parse_day("2020-01-15").unwrap();
    let mut daily = Vec::new();
    let row = |day: i32, district: &str, merchant: u8, amount: u64| DailyRow {
        day: day as u16,
        district_code: district.into(),
        sector: "G".into(),
        merchant_key: [merchant; 32],
        txn_count: 2,
        amount_idr_sum: amount,
        is_final: 1,
        source_partition: 0,
        source_offset: 1,
        version: 3,
        updated_at: 0,
    };
    for day in first..=last {
        let five = if day == lonely { 1 } else { 5 };
        for m in 0..five {
            daily.push(row(day, "31.71.01", 10 + m, 40_000 + u64::from(m) * 1_000));
        }
        daily.push(row(day, "31.71.02", 20, 1_000_000));
        daily.push(row(day, "31.71.02", 21, 10_000));
        daily.push(row(day, "31.71.02", 22, 12_000));
        for m in 0..4 {
            daily.push(row(day, "31.71.03", 30 + m, 50_000));
        }
    }
    daily.push(row(
        parse_day("2020-02-10").unwrap(),
        "31.71.04",
        40,
        75_000,
    ));
    store.insert_daily(&daily).await.unwrap();
    let kota = pulih_store::kota_map(
        ["31.71.01", "31.71.02", "31.71.03", "31.71.04", "31.71.05"].map(|d| (d, "31.71")),
    );
    let cells = pulih_metrics::reference_cells(&kota, &["G".to_owned(), "I".to_owned()]);
    store
        .rollup(&Params::standard(), &kota, &cells, None, Some(last))
        .await
        .unwrap();
    let today = pulih_event::calendar::day_of(pulih_event::calendar::now_ms()) as i32;
    assert!(store.release_public(today, last, last - 6).await.unwrap());

    let public = client(&ch, PUBLIC);
    let text = |sql: String| {
        let public = public.clone();
        async move {
            let bytes = public
                .query(&sql)
                .fetch_bytes("TSV")
                .unwrap()
                .collect()
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            String::from_utf8(bytes.to_vec()).unwrap()
        }
    };
    let values: Vec<String> = ["index", "yoy", "yoy_aligned", "wow", "chg4w"]
        .iter()
        .flat_map(|c| ["amount_idr", "txn_count", "merchants_open"].map(|m| format!("{m}_{c}")))
        .collect();

    // The baseline: no level, count or baseline is anywhere public, so
    // `ma7 / index` and sums over the baseline month have nothing to divide.
    for table in ["recovery_daily", "recovery_vintages"] {
        let columns = text(format!("DESCRIBE TABLE pulih_public.{table}")).await;
        for line in columns.lines() {
            let name = line.split('\t').next().unwrap();
            assert!(
                [
                    "day",
                    "level",
                    "kota_code",
                    "district_code",
                    "sector",
                    "vintage",
                    "provisional",
                    "withheld",
                    "incomplete",
                ]
                .contains(&name)
                    || values.iter().any(|v| v == name),
                "pulih_public.{table} publishes {name}"
            );
        }
    }
    refused(
        count(
            &public,
            "SELECT count() FROM pulih_public.recovery_daily WHERE amount_idr_ma7 / amount_idr_index > 0",
        )
        .await,
        47,
        "the baseline as ma7 / index",
    );
    // Every published value is rounded to 0.01, and a withheld row has none.
    let unrounded: Vec<String> = values
        .iter()
        .map(|v| format!("abs({v} * 100 - round({v} * 100)) > 1e-6"))
        .collect();
    assert_eq!(
        count(
            &public,
            &format!(
                "SELECT count() FROM pulih_public.recovery_vintages WHERE {}",
                unrounded.join(" OR ")
            )
        )
        .await,
        Ok(0)
    );
    let any_value: Vec<String> = values.iter().map(|v| format!("{v} IS NOT NULL")).collect();
    assert_eq!(
        count(
            &public,
            &format!(
                "SELECT count() FROM pulih_public.recovery_daily WHERE withheld = 1 AND ({})",
                any_value.join(" OR ")
            )
        )
        .await,
        Ok(0)
    );
    // The withheld day in the baseline month, and every 7-day value over it.
    let district = |code: &str, cols: &str| {
        format!(
            "SELECT day, {cols} FROM pulih_public.recovery_daily \
             WHERE level = 'district_sector' AND district_code = '{code}' AND sector = 'G' ORDER BY day"
        )
    };
    let d01 = text(district(
        "31.71.01",
        "withheld, amount_idr_index, amount_idr_wow",
    ))
    .await;
    for line in d01.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let day = parse_day(f[0]).unwrap();
        if (lonely..lonely + 7).contains(&day) {
            assert_eq!(f[1], if day == lonely { "1" } else { "0" }, "{line}");
            assert_eq!(f[2], "\\N", "{line}: a 7-day value over the withheld day");
            assert_eq!(f[3], "\\N", "{line}");
        }
        if day == parse_day("2020-02-20").unwrap() {
            assert_eq!(f[1], "0", "{line}");
            assert_ne!(f[2], "\\N", "{line}: a later index is published");
        }
    }
    assert!(d01.contains("2020-01-15\t1\t"), "{d01}");
    // Dominance: one medium merchant and two stalls are never published.
    let d02 = text(district("31.71.02", "withheld")).await;
    assert_eq!(d02.lines().count(), 60);
    assert!(d02.lines().all(|l| l.ends_with("\t1")), "{d02}");
    // Existence: the cell of one merchant who traded once reads exactly
    // like the cell that never traded, on every day.
    let all = format!("withheld, incomplete, {}", values.join(", "));
    let once = text(district("31.71.04", &all)).await;
    let never = text(district("31.71.05", &all)).await;
    assert_eq!(once.lines().count(), 60);
    assert_eq!(once, never);
    // One row per cell-day, without FINAL, and only released ones.
    assert_eq!(
        count(
            &public,
            "SELECT count() - uniqExact(level, kota_code, district_code, sector, day) FROM pulih_public.recovery_daily",
        )
        .await,
        Ok(0)
    );
    assert_eq!(
        count(&public, "SELECT count() FROM pulih_public.recovery_daily").await,
        Ok(cells.len() as u64 * 60)
    );
    // Successive versions: a late payment corrects a published day and the
    // rollup runs again; polling the public tables shows nothing new until
    // the next day's release.
    let before = text("SELECT * FROM pulih_public.recovery_vintages ORDER BY level, kota_code, district_code, sector, day, vintage".into()).await;
    let mut late = row(parse_day("2020-02-20").unwrap(), "31.71.03", 33, 51_000);
    late.version = 5;
    store.insert_daily(&[late]).await.unwrap();
    store
        .rollup(
            &Params::standard(),
            &kota,
            &cells,
            Some(last - 14),
            Some(last),
        )
        .await
        .unwrap();
    assert!(!store.release_public(today, last, last - 6).await.unwrap());
    let after = text("SELECT * FROM pulih_public.recovery_vintages ORDER BY level, kota_code, district_code, sector, day, vintage".into()).await;
    assert_eq!(before, after, "a second version of a day the same day");
}
