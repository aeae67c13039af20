//! The shipped ClickHouse accounts (deploy/clickhouse/users.d/pulih-roles.xml)
//! on a private server: each can do its job and is refused the rest.

use pulih_metrics::{parse_day, Params};
use pulih_store::{ActivityRow, DailyRow, Store, StoreConfig};
use pulih_tests::{repo_root, PrivateClickHouse};
use sha2::{Digest, Sha256};

const WRITER: (&str, &str) = ("pulih_writer", "writer-secret");
const ANALYST: (&str, &str) = ("pulih_analyst", "analyst-secret");
const PUBLIC: (&str, &str) = ("pulih_public", "public-secret");

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

#[tokio::test]
async fn each_account_can_do_its_job_and_nothing_more() {
    let roles = repo_root().join("deploy/clickhouse/users.d/pulih-roles.xml");
    let (w, a, p) = (digest(WRITER.1), digest(ANALYST.1), digest(PUBLIC.1));
    let ch = PrivateClickHouse::start_with_users(
        "ch_roles",
        &[&roles],
        &[
            ("PULIH_CH_WRITER_SHA256", &w),
            ("PULIH_CH_ANALYST_SHA256", &a),
            ("PULIH_CH_PUBLIC_SHA256", &p),
        ],
    );

    // The writer migrates, writes what the aggregator writes, and rolls up.
    let store = Store::new(&StoreConfig {
        url: ch.url(),
        database: "pulih".into(),
        user: WRITER.0.into(),
        password: WRITER.1.into(),
    });
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
        "activity_1m reaches the analytics copy"
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
    for table in ["activity_1m", "merchant_activity_daily", "aggregator_seen"] {
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
        "pulih.activity_1m",
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
