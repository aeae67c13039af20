use pulih_store::{MigrationStatus, Store, StoreConfig, MIGRATIONS};
use pulih_tests::store_config;

#[tokio::test]
async fn migrate_is_idempotent_and_recorded() {
    let store = Store::new(&store_config("migrate"));
    assert!(matches!(
        store.migration_status().await.unwrap()[0],
        MigrationStatus::Pending { .. }
    ));
    let first = store.migrate().await.unwrap();
    assert_eq!(first.len(), MIGRATIONS.len());
    assert!(
        store.migrate().await.unwrap().is_empty(),
        "second run applies nothing"
    );
    let status = store.migration_status().await.unwrap();
    assert!(
        status
            .iter()
            .all(|s| matches!(s, MigrationStatus::Applied { .. })),
        "{status:?}"
    );
    // The table is there and empty.
    assert!(store.activity_rows().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_stopped_server_gives_an_error_naming_the_address() {
    let store = Store::new(&StoreConfig {
        url: "http://127.0.0.1:1".into(),
        database: "pulih".into(),
        user: "default".into(),
        password: String::new(),
        cluster: String::new(),
        insert_quorum: 1,
    });
    let e = store.ping().await.unwrap_err().to_string();
    assert!(e.contains("http://127.0.0.1:1"), "{e}");
    assert!(e.contains("services.sh up"), "{e}");
}

#[tokio::test]
async fn fingerprints_are_read_by_window_and_old_months_dropped() {
    let store = Store::new(&store_config("prune"));
    store.migrate().await.unwrap();
    let row = |window_start: u32, partition: i32, offsets: &[i64]| pulih_store::SeenRow {
        topic: "t".into(),
        partition,
        district_code: "31.74.09".into(),
        sector: "G".into(),
        producer_id: "bank".into(),
        window_start,
        fingerprints: offsets.iter().map(|&o| [o as u8; 16]).collect(),
        offsets: offsets.to_vec(),
        merchants: offsets.iter().map(|&o| [o as u8 + 100; 32]).collect(),
        merchant_offsets: offsets.to_vec(),
    };
    // 2024-01-31T23:59:00Z, 2024-02-29T00:00:00Z and 2024-03-01T00:00:00Z.
    let (jan, feb, mar) = (1_706_745_540, 1_709_164_800, 1_709_251_200);
    let rows = [
        row(jan, 0, &[0]),
        row(feb, 0, &[1]),
        row(mar, 0, &[2, 3]),
        row(mar, 0, &[5]),
        row(mar, 1, &[4]),
    ];
    store.insert_seen(&rows).await.unwrap();
    // A replayed flush writes the same fingerprints again: harmless.
    store.insert_seen(&rows[2..3]).await.unwrap();
    // The hours of those windows.
    let key = |t: u32| t - t % 3600;
    let mut got = store.seen_in("t", 0, &[key(mar), key(jan)]).await.unwrap();
    got.sort_by_key(|r| r.offsets.clone());
    got.dedup();
    assert_eq!(
        got,
        vec![rows[0].clone(), rows[2].clone(), rows[3].clone()],
        "partition 0's rows of January's and March's windows, the copy folded away"
    );
    assert_eq!(
        store.seen_in("t", 1, &[key(mar)]).await.unwrap(),
        vec![rows[4].clone()],
        "partition 1's"
    );
    assert_eq!(
        store.prune_seen(202_403).await.unwrap(),
        vec![202_401, 202_402]
    );
    assert!(store
        .seen_in("t", 0, &[key(jan), key(feb)])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.seen_in("t", 0, &[key(mar)]).await.unwrap().len(),
        3,
        "March untouched: partition 0's two rows and the copy"
    );
    assert!(store.seen_in("u", 0, &[key(mar)]).await.unwrap().is_empty());
    assert!(store.prune_seen(202_403).await.unwrap().is_empty());

    // Pruning follows the lowest checkpoint of the topic.
    assert_eq!(store.checkpointed_event_time("t").await.unwrap(), None);
    let cp = |partition: i32, next_offset: i64, max_event_ms: i64| pulih_store::CheckpointRow {
        topic: "t".into(),
        partition,
        next_offset,
        max_event_ms,
        max_ts_ms: max_event_ms,
        group_id: "g".into(),
        updated_at: 1,
    };
    assert_eq!(store.record_layout("t", 3).await.unwrap(), 3);
    store
        .insert_checkpoints(&[cp(0, 5, 3_000), cp(0, 9, 9_000), cp(1, 4, 7_000)])
        .await
        .unwrap();
    assert_eq!(
        store.checkpointed_event_time("t").await.unwrap(),
        None,
        "partition 2 has no checkpoint yet: it restores all its rows"
    );
    store.insert_checkpoints(&[cp(2, 1, 8_000)]).await.unwrap();
    assert_eq!(
        store.checkpointed_event_time("t").await.unwrap(),
        Some(7_000)
    );
}

/// A topic is complete up to the lowest partition watermark, once every
/// partition the layout records has one; a lower watermark written later
/// (a restarted process) takes nothing back.
#[tokio::test]
async fn completeness_waits_for_every_partition_and_never_goes_back() {
    let store = Store::new(&store_config("complete"));
    store.migrate().await.unwrap();
    assert_eq!(store.complete_through("t").await.unwrap(), None);
    assert_eq!(store.record_layout("t", 2).await.unwrap(), 2);
    let w = |partition: i32, watermark_ms: i64| pulih_store::WatermarkRow {
        topic: "t".into(),
        partition,
        watermark_ms,
        updated_at: 1,
    };
    store.insert_watermarks(&[w(0, 5_000)]).await.unwrap();
    assert_eq!(
        store.complete_through("t").await.unwrap(),
        None,
        "partition 1 has none"
    );
    store
        .insert_watermarks(&[w(1, 9_000), w(0, 7_000)])
        .await
        .unwrap();
    assert_eq!(store.complete_through("t").await.unwrap(), Some(7_000));
    store.insert_watermarks(&[w(0, 1_000)]).await.unwrap();
    assert_eq!(store.complete_through("t").await.unwrap(), Some(7_000));
    assert_eq!(store.complete_through("other").await.unwrap(), None);
}

#[tokio::test]
async fn checkpoints_keep_the_highest_offset() {
    let store = Store::new(&store_config("checkpoint"));
    store.migrate().await.unwrap();
    assert_eq!(store.checkpoint("t", 3).await.unwrap(), None);
    let cp = |next_offset: i64| pulih_store::CheckpointRow {
        topic: "t".into(),
        partition: 3,
        next_offset,
        max_event_ms: next_offset * 10,
        max_ts_ms: next_offset * 20,
        group_id: "g".into(),
        updated_at: 1,
    };
    store.insert_checkpoints(&[cp(10), cp(30)]).await.unwrap();
    // A stale flush written late does not move it back.
    store.insert_checkpoints(&[cp(20)]).await.unwrap();
    assert_eq!(store.checkpoint("t", 3).await.unwrap(), Some(cp(30)));
    assert_eq!(store.checkpoint("t", 4).await.unwrap(), None);
}

/// A read-back of many hours and days (a partition far behind the
/// others, a backfill) returns every row of its partition in them and
/// nothing else: not another partition's, not another day's, not one an
/// hour past a run of hours.
#[tokio::test]
async fn hours_and_days_are_read_back_whole() {
    let store = Store::new(&store_config("readback"));
    store.migrate().await.unwrap();
    // 2 500 merchant-days over 50 days of partition 0, and a day of each
    // of partitions 0 and 1 that is not asked for, or not of partition 0.
    let rows: Vec<pulih_store::DailyRow> = (0..2_600u32)
        .map(|i| pulih_store::DailyRow {
            day: 18_000 + (i / 50) as u16,
            district_code: format!("31.{:02}.{:02}", i % 50 / 10, i % 10),
            sector: "G".into(),
            merchant_key: {
                let mut k = [0u8; 32];
                k[..4].copy_from_slice(&i.to_be_bytes());
                k
            },
            txn_count: u64::from(i),
            amount_idr_sum: 1_000,
            is_final: 1,
            source_partition: i32::from(i >= 2_550),
            source_offset: i64::from(i),
            version: 2 * (u64::from(i) + 1) + 1,
            updated_at: 0,
        })
        .collect();
    store.insert_daily(&rows).await.unwrap();
    // Days 18 000-18 019 and 18 030-18 051: two runs, and a day with rows
    // of partition 1 only.
    let days: Vec<u16> = (18_000..18_020).chain(18_030..18_052).collect();
    let mut got = store.daily_in(0, &days).await.unwrap();
    got.sort_by_key(|r| r.txn_count);
    let want: Vec<_> = rows
        .iter()
        .filter(|r| r.source_partition == 0 && days.contains(&r.day))
        .cloned()
        .collect();
    assert_eq!(got.len(), 2_050);
    assert_eq!(got, want);
    let hours: Vec<u32> = (0..500).map(|h| h * 3_600).collect();
    assert!(store.activity_in(0, &hours).await.unwrap().is_empty());
    assert!(store.seen_in("t", 0, &hours).await.unwrap().is_empty());
}

/// Upgrading from one row per fingerprint (`aggregator_seen`, through
/// `aggregator_fingerprints` and `aggregator_counted` to
/// `aggregator_counted_by_time` and `aggregator_counted_by_producer`) carries
/// every fingerprint over, by window,
/// with its lowest offset; and the migrations, run again from their start
/// as after an interruption, lose nothing.
#[tokio::test]
async fn the_fingerprints_of_the_old_table_are_carried_over() {
    let store = Store::new(&store_config("seen_upgrade"));
    store.migrate().await.unwrap();
    let ch = store.client();
    let [by_window, counted, by_time, _, by_producer] = &MIGRATIONS[20..25] else {
        unreachable!()
    };
    assert_eq!(by_window.name, "0021_aggregator_fingerprints.sql");
    assert_eq!(counted.name, "0022_aggregator_counted.sql");
    assert_eq!(by_time.name, "0023_aggregator_counted_by_time.sql");
    assert_eq!(by_producer.name, "0025_rows_by_producer.sql");
    // The old table, as 0007 made it, holding what an older version wrote:
    // two windows of partition 0, one of partition 1, a fingerprint
    // written twice (a replay) and once more at a later offset (no
    // aggregator writes that, but the lowest offset must win).
    let old = &by_window.statements()[1];
    assert!(
        old.contains("CREATE TABLE IF NOT EXISTS aggregator_seen"),
        "{old}"
    );
    ch.query(old).execute().await.unwrap();
    ch.query(
        "INSERT INTO aggregator_seen VALUES \
         ('t', 0, '31.74.09', 'G', 1709251200, 'aaaaaaaaaaaaaaaa', 7), \
         ('t', 0, '31.74.09', 'G', 1709251200, 'aaaaaaaaaaaaaaaa', 7), \
         ('t', 0, '31.74.09', 'G', 1709251200, 'bbbbbbbbbbbbbbbb', 9), \
         ('t', 0, '31.74.09', 'G', 1709251260, 'cccccccccccccccc', 12), \
         ('t', 0, '31.74.09', 'G', 1709251260, 'cccccccccccccccc', 30), \
         ('t', 1, '31.74.09', 'G', 1709251200, 'dddddddddddddddd', 3)",
    )
    .execute()
    .await
    .unwrap();
    for run in 0..2 {
        for stmt in by_window
            .statements()
            .iter()
            .chain(&counted.statements())
            .chain(&by_time.statements())
            .chain(&by_producer.statements_for(store.database()))
        {
            ch.query(stmt).execute().await.unwrap();
        }
        let pairs = |p: i32, t: u32| {
            let store = &store;
            async move {
                let mut out: std::collections::BTreeMap<[u8; 16], i64> = Default::default();
                for row in store.seen_in("t", p, &[t - t % 3600]).await.unwrap() {
                    if row.window_start != t {
                        continue;
                    }
                    assert_eq!(row.fingerprints.len(), row.offsets.len());
                    assert!(row.merchants.is_empty() && row.merchant_offsets.is_empty());
                    for (f, o) in row.pairs() {
                        let first = out.entry(f).or_insert(o);
                        *first = (*first).min(o);
                    }
                }
                out.into_iter().collect::<Vec<_>>()
            }
        };
        assert_eq!(
            pairs(0, 1_709_251_200).await,
            vec![([b'a'; 16], 7), ([b'b'; 16], 9)],
            "run {run}"
        );
        assert_eq!(pairs(0, 1_709_251_260).await, vec![([b'c'; 16], 12)]);
        assert_eq!(pairs(1, 1_709_251_200).await, vec![([b'd'; 16], 3)]);
        let left: u64 = ch
            .query(
                "SELECT count() FROM system.tables WHERE database = currentDatabase() \
                    AND name IN ('aggregator_seen', 'aggregator_fingerprints', 'aggregator_counted', \
                    'aggregator_counted_by_time')",
            )
            .fetch_one()
            .await
            .unwrap();
        assert_eq!(left, 0, "the old tables are dropped");
    }
}

/// Migrations 0024 and 0025 carry the windows and merchant-days to the
/// tables sorted by time, then the windows to the table keyed by producer,
/// with every version (the latest wins under FINAL), make the analysts'
/// copy again from the new table, and drop the old tables; run again from
/// their start, as after an interruption, they lose nothing and count
/// nothing twice. The copy then follows inserts into the new table.
#[tokio::test]
async fn windows_and_merchant_days_are_carried_to_the_tables_sorted_by_time() {
    let store = Store::new(&store_config("by_time_upgrade"));
    store.migrate().await.unwrap();
    let ch = store.client();
    let [by_time, by_producer] = &MIGRATIONS[23..25] else {
        unreachable!()
    };
    assert_eq!(by_time.name, "0024_activity_by_time.sql");
    assert_eq!(by_producer.name, "0025_rows_by_producer.sql");
    let mut stmts = by_time.statements_for(store.database());
    // The old tables, as 0001 and 0002 made them, holding what an older
    // version wrote: two versions of one window, another window, two
    // versions of one merchant-day.
    for old in &stmts[2..4] {
        assert!(
            old.contains("CREATE TABLE IF NOT EXISTS activity_1m\n")
                || old.contains("CREATE TABLE IF NOT EXISTS merchant_activity_daily\n"),
            "{old}"
        );
        ch.query(old).execute().await.unwrap();
    }
    stmts.extend(by_producer.statements_for(store.database()));
    ch.query(
        "INSERT INTO activity_1m (window_start, district_code, sector, txn_count, is_final, \
         source_partition, source_offset, version) VALUES \
         (1709251200, '31.74.09', 'G', 3, 0, 0, 10, 22), \
         (1709251200, '31.74.09', 'G', 4, 1, 0, 11, 25), \
         (1709251260, '31.71.01', 'I', 7, 1, 1, 4, 11)",
    )
    .execute()
    .await
    .unwrap();
    ch.query(
        "INSERT INTO merchant_activity_daily (day, district_code, sector, merchant_key, txn_count, \
         is_final, source_partition, source_offset, version) VALUES \
         ('2024-03-01', '31.74.09', 'G', 'kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk', 2, 0, 0, 10, 22), \
         ('2024-03-01', '31.74.09', 'G', 'kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk', 3, 1, 0, 11, 25)",
    )
    .execute()
    .await
    .unwrap();
    let analytics = pulih_store::analytics_database(store.database());
    let number = |sql: String| async move { ch.query(&sql).fetch_one::<u64>().await.unwrap() };
    let copy = format!("SELECT sum(txn_count) FROM `{analytics}`.activity_1m FINAL");
    for run in 0..2 {
        for stmt in &stmts {
            ch.query(stmt).execute().await.unwrap();
        }
        let windows =
            number("SELECT sum(txn_count) FROM activity_1m_by_producer FINAL".into()).await;
        assert_eq!(windows, 11, "run {run}");
        assert_eq!(
            number(copy.clone()).await,
            11,
            "the analysts' copy, run {run}"
        );
        let days =
            number("SELECT sum(txn_count) FROM merchant_activity_daily_by_time FINAL".into()).await;
        assert_eq!(days, 3, "run {run}");
        let left = number(
            "SELECT count() FROM system.tables WHERE database = currentDatabase() \
             AND name IN ('activity_1m', 'merchant_activity_daily', 'activity_1m_by_time')"
                .into(),
        )
        .await;
        assert_eq!(left, 0, "the old tables are dropped");
    }
    // The copy follows the new table.
    ch.query(
        "INSERT INTO activity_1m_by_producer (window_start, district_code, sector, producer_id, \
         txn_count, is_final, source_partition, source_offset, version) VALUES \
         (1709251200, '31.74.09', 'G', '', 5, 1, 0, 12, 27), \
         (1709251200, '31.74.09', 'G', 'bank', 2, 1, 0, 13, 29)",
    )
    .execute()
    .await
    .unwrap();
    // The carried-over row replaced by its new version, and a producer's
    // row of the same window beside it.
    assert_eq!(number(copy).await, 14);
}

/// Rows read by the latest restore query of `database` whose text goes on
/// with `what`, from `system.query_log`. The server logs a query once its
/// answer is sent, so the entry may come a little after the client has the
/// rows.
async fn restore_read_rows(ch: &clickhouse::Client, database: &str, what: &str) -> u64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        ch.query("SYSTEM FLUSH LOGS").execute().await.unwrap();
        let logged: Option<u64> = ch
            .query(
                "SELECT read_rows FROM system.query_log WHERE type = 2 AND query LIKE ? \
                 ORDER BY event_time DESC LIMIT 1",
            )
            .bind(format!("%pulih restore of {database} */ {what}%"))
            .fetch_optional()
            .await
            .unwrap();
        if let Some(read) = logged {
            return read;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the restore's query `{what}` is not in system.query_log after 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// A restore reads the open state of its own partitions only: of a
/// seeded week of windows, merchant-days and counted rows of three
/// partitions, with an older version of every row, the restore of
/// partitions 0 and 2 returns the latest rows of the windows and days
/// still open at each one's watermark, and nothing of partition 1 or of
/// what closed before. A producer of partition 0 whose clock is two days
/// behind (a history being loaded) has its windows of those two days
/// restored, and nothing before them; a producer the scope does not name
/// has nothing restored.
#[tokio::test]
async fn a_restore_reads_only_the_open_state_of_its_partitions() {
    use pulih_store::{ActivityRow, DailyRow, RestoreScope, SeenRow};
    let store = Store::new(&store_config("restore"));
    store.migrate().await.unwrap();
    // 2024-03-07T00:00:00+07:00, the seventh day of the week seeded.
    let day7_s: i64 = 1_709_744_400;
    // 40 cells per partition (partition p writes the cells of kota
    // 31.7{p+1}): a cell's rows of the week fill a fraction of a granule, as
    // a cell's month of windows does at Jakarta's density, so only a sort
    // key with the time before the cell lets a read of the last hours and
    // days skip the rest.
    const CELLS: usize = 40;
    const MERCHANTS: u8 = 50;
    let district = |p: i32, c: usize| format!("31.7{}.{c:02}", p + 1);
    let (mut activity, mut daily, mut seen) = (Vec::new(), Vec::new(), Vec::new());
    for p in 0..3i32 {
        for c in 0..CELLS {
            // Every 10 minutes of the week.
            for i in 0..(7 * 144) {
                let start = day7_s - 6 * 86_400 + i * 600;
                for version in [2, 5] {
                    activity.push(ActivityRow {
                        window_start: start as u32,
                        district_code: district(p, c),
                        sector: "G".into(),
                        producer_id: "bank".into(),
                        txn_count: version,
                        amount_idr_sum: 1,
                        amount_idr_min: 1,
                        amount_idr_max: 1,
                        merchants_active: 1,
                        txn_qris: version,
                        txn_debit_card: 0,
                        txn_credit_card: 0,
                        txn_ewallet: 0,
                        txn_bank_transfer: 0,
                        txn_other: 0,
                        txn_micro: version,
                        txn_small: 0,
                        txn_medium: 0,
                        is_final: (version % 2) as u8,
                        source_partition: p,
                        source_offset: i,
                        merchant_keys: Vec::new(),
                        version,
                        updated_at: 0,
                    });
                }
                for producer in ["bank", "history", "unnamed"] {
                    if producer != "bank" && p != 0 {
                        continue;
                    }
                    if producer != "bank" {
                        let version = 7;
                        activity.push(ActivityRow {
                            producer_id: producer.into(),
                            txn_count: version,
                            txn_qris: version,
                            txn_micro: version,
                            version,
                            ..activity.last().unwrap().clone()
                        });
                    }
                    seen.push(SeenRow {
                        topic: "t".into(),
                        partition: p,
                        district_code: district(p, c),
                        sector: "G".into(),
                        producer_id: producer.into(),
                        window_start: start as u32,
                        fingerprints: vec![[i as u8; 16]],
                        offsets: vec![i],
                        merchants: vec![[p as u8; 32]],
                        merchant_offsets: vec![i],
                    });
                }
            }
            for day in 0..7i64 {
                for m in 0..MERCHANTS {
                    for version in [2, 5] {
                        daily.push(DailyRow {
                            day: ((day7_s + 25_200) / 86_400 - 6 + day) as u16,
                            district_code: district(p, c),
                            sector: "G".into(),
                            merchant_key: [m; 32],
                            txn_count: version,
                            amount_idr_sum: 1,
                            is_final: (version % 2) as u8,
                            source_partition: p,
                            source_offset: day,
                            version,
                            updated_at: 0,
                        });
                    }
                }
            }
        }
    }
    store.insert_activity(&activity).await.unwrap();
    store.insert_daily(&daily).await.unwrap();
    store.insert_seen(&seen).await.unwrap();

    // Partition 0's watermark at 12:00 on day 7, partition 2's at 18:05;
    // the history's clock on partition 0 at 12:00 on day 5.
    let history_after = day7_s - 2 * 86_400 + 12 * 3_600;
    let scopes = [
        RestoreScope {
            partition: 0,
            open_after_s: day7_s + 12 * 3_600,
            windows_open_after: vec![
                ("bank".into(), day7_s + 12 * 3_600),
                ("history".into(), history_after),
            ],
        },
        RestoreScope {
            partition: 2,
            open_after_s: day7_s + 18 * 3_600 + 300,
            windows_open_after: vec![("bank".into(), day7_s + 18 * 3_600 + 300)],
        },
    ];
    let got = store.restore_open("t", &scopes, 600).await.unwrap();
    let open = |p: i32, after: i64| {
        (0..(7 * 144))
            .map(|i| day7_s - 6 * 86_400 + i * 600)
            .filter(move |s| s + 600 > after)
            .flat_map(move |s| (0..CELLS).map(move |c| (p, district(p, c), s as u32)))
    };
    let with = |producer: &'static str| move |(p, d, s): (i32, String, u32)| (p, producer, d, s);
    let mut want: Vec<(i32, &str, String, u32)> = open(0, scopes[0].open_after_s)
        .map(with("bank"))
        .chain(open(2, scopes[1].open_after_s).map(with("bank")))
        .chain(open(0, history_after).map(with("history")))
        .collect();
    want.sort_unstable();
    let mut windows: Vec<(i32, &str, String, u32)> = got
        .activity
        .iter()
        .map(|r| {
            (
                r.source_partition,
                if r.producer_id == "bank" {
                    "bank"
                } else {
                    "history"
                },
                r.district_code.clone(),
                r.window_start,
            )
        })
        .collect();
    windows.sort_unstable();
    assert!(got.activity.iter().all(|r| r.producer_id != "unnamed"));
    assert_eq!(windows, want, "the open windows of partitions 0 and 2");
    assert!(
        got.activity.iter().all(|r| (r.version, r.txn_count)
            == if r.producer_id == "bank" {
                (5, 5)
            } else {
                (7, 7)
            }),
        "the latest version of each"
    );
    // Day 7 only (it ends after both watermarks), every merchant of each
    // cell of partitions 0 and 2.
    assert_eq!(got.daily.len(), 2 * CELLS * usize::from(MERCHANTS));
    assert!(got
        .daily
        .iter()
        .all(|r| i64::from(r.day) == (day7_s + 25_200) / 86_400 && r.version == 5));
    assert!(got.daily.iter().all(|r| r.source_partition != 1));
    // What was counted in windows that may be open: none of partition 1,
    // none of a window that closed before the lower watermark.
    assert!(got.seen.iter().all(|r| r.partition != 1
        && r.producer_id != "unnamed"
        && i64::from(r.window_start) + 600
            > if r.producer_id == "bank" {
                scopes[0].open_after_s
            } else {
                history_after
            }));
    assert_eq!(
        got.seen.len(),
        open(0, scopes[0].open_after_s).count()
            + open(2, scopes[1].open_after_s).count()
            + open(0, history_after).count()
    );
    // And each read little more than the rows of the hours and the day
    // that may be open, of every partition: the granules of the last hours
    // and of day 7, not the week that partitions 0 and 2 wrote.
    let ch = store.client();
    // The rows of the windows after the lower watermark, of all three
    // partitions, and the history's rows after its clock.
    let open_rows = 3 * open(0, scopes[0].open_after_s).count() + open(0, history_after).count();
    for (what, columns, returned, rows_in_range, written) in [
        (
            "SELECT topic",
            "what was counted",
            got.seen.len(),
            open_rows,
            seen.len(),
        ),
        (
            "SELECT window_start",
            "windows",
            got.activity.len(),
            2 * open_rows,
            activity.len(),
        ),
        (
            "SELECT day",
            "merchant-days",
            got.daily.len(),
            daily.len() / 7,
            daily.len(),
        ),
    ] {
        let read = restore_read_rows(ch, store.database(), what).await;
        assert!(
            read >= returned as u64
                && read <= (rows_in_range + 2 * 8_192) as u64
                && read < written as u64 / 3,
            "the restore of {columns} read {read} rows, of {rows_in_range} in the open range \
             and {written} written"
        );
    }
    // Nothing to restore reads nothing.
    let none = store.restore_open("t", &[], 600).await.unwrap();
    assert!(none.activity.is_empty() && none.daily.is_empty() && none.seen.is_empty());
}
