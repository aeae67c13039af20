//! pulih on a replicated, sharded ClickHouse: the cluster `pulih` that
//! `deploy/local/cluster.sh up` runs on this machine (two shards of two
//! replicas, ClickHouse 18.16 and ZooKeeper), which the test command
//! starts. The migrations run in their cluster form; rows written through
//! the store's Distributed tables land on one shard per cell, on both of
//! its replicas; `FINAL` through a Distributed table is exact; and while
//! a replica is down, its shard refuses writes instead of acknowledging
//! them on one replica.

use std::collections::BTreeSet;
use std::process::Command;

use pulih_store::{Store, StoreConfig};
use pulih_tests::{kafka_config, pulih_toml, repo_root, store_config, unique};

use crate::recovery::run_pulih;

/// The nodes of the local cluster, by HTTP port (deploy/local/cluster.sh).
const NODES: [(&str, u16); 4] = [
    ("s1r1", 8211),
    ("s1r2", 8212),
    ("s2r1", 8221),
    ("s2r2", 8222),
];

fn node(port: u16) -> clickhouse::Client {
    clickhouse::Client::default()
        .with_url(format!("http://127.0.0.1:{port}"))
        .with_validation(false)
}

async fn strings(client: &clickhouse::Client, sql: &str) -> Vec<String> {
    let bytes = client
        .query(sql)
        .fetch_bytes("TabSeparated")
        .unwrap()
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    String::from_utf8(bytes.to_vec())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The node the tests talk to, s1r1.
pub(crate) const URL: &str = "http://127.0.0.1:8211";

/// Store settings for `database` on the local cluster, through the node at
/// `url`, with a quorum of two.
pub(crate) fn cluster_config(url: &str, database: &str) -> StoreConfig {
    StoreConfig {
        url: url.into(),
        database: database.into(),
        user: "default".into(),
        password: String::new(),
        cluster: "pulih".into(),
        insert_quorum: 2,
    }
}

/// Held by a test while it has a node of the cluster down, so that two
/// tests never take down the two replicas of a shard, or the same node, at
/// once.
pub(crate) static NODE_DOWN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs deploy/local/cluster.sh, e.g. `stop-node s1r2`.
pub(crate) fn cluster_sh(args: &[&str]) {
    let out = Command::new(repo_root().join("deploy/local/cluster.sh"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cluster.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Drops a test's databases on every node when it ends, passed or failed.
pub(crate) struct Databases(pub(crate) String);

impl Drop for Databases {
    fn drop(&mut self) {
        let db = &self.0;
        for d in [
            format!("{db}_public"),
            format!("{db}_analytics"),
            db.clone(),
        ] {
            let _ = Command::new("curl")
                .args(["-sf", URL, "--data-binary"])
                .arg(format!("DROP DATABASE IF EXISTS `{d}` ON CLUSTER pulih"))
                .output();
        }
    }
}

#[tokio::test]
async fn migrations_rows_and_a_killed_replica_on_two_shards_of_two_replicas() {
    let database = unique("it_cluster");
    let _cleanup = Databases(database.clone());
    let store = Store::new(&cluster_config(URL, &database));
    let applied = store.migrate().await.unwrap();
    assert_eq!(applied.len(), pulih_store::MIGRATIONS.len());
    // Run again from another node: nothing left to do.
    let again = Store::new(&cluster_config("http://127.0.0.1:8222", &database));
    assert!(again.migrate().await.unwrap().is_empty());

    // Every node has every table; every MergeTree is replicated; each
    // sharded table has its Distributed table over `<name>_local`.
    let tables_sql = format!(
        "SELECT concat(database, '.', name, ' ', engine) AS t FROM system.tables \
         WHERE database IN ('{database}', '{database}_analytics', '{database}_public') ORDER BY t"
    );
    let first = strings(&node(8211), &tables_sql).await;
    for (name, port) in NODES {
        assert_eq!(strings(&node(port), &tables_sql).await, first, "{name}");
    }
    assert!(first.len() > 30, "{first:?}");
    for t in &first {
        let engine = t.rsplit(' ').next().unwrap();
        assert!(
            ["Distributed", "View", "MaterializedView"].contains(&engine)
                || engine.starts_with("Replicated"),
            "{t}"
        );
        if engine == "Distributed" {
            let local = t.replace(" Distributed", "_local ");
            assert!(
                first.iter().any(|u| u.starts_with(&local)),
                "{t} has no {local}"
            );
        }
    }

    // Rows for 40 cells, written through the Distributed table, twice:
    // version 1, then version 2 with other counts.
    let cells: Vec<(String, &str)> = (1..=20)
        .flat_map(|i| {
            [
                (format!("31.7{}.{i:02}", i % 5 + 1), "G"),
                (format!("31.7{}.{i:02}", i % 5 + 1), "I"),
            ]
        })
        .collect();
    let client = store.client();
    let insert = |version: u64, count: u64| {
        let values: Vec<String> = cells
            .iter()
            .map(|(d, s)| format!("('2021-06-01 00:00:00', '{d}', '{s}', {count}, {version})"))
            .collect();
        format!(
            "INSERT INTO activity_1m_by_producer (window_start, district_code, sector, txn_count, version) VALUES {}",
            values.join(", ")
        )
    };
    client.query(&insert(1, 1)).execute().await.unwrap();
    client.query(&insert(2, 7)).execute().await.unwrap();

    // Each cell on one shard, on both of its replicas (once each replica
    // has fetched what the other took); both shards used.
    let sync = |port: u16| {
        let sql = format!("SYSTEM SYNC REPLICA `{database}`.activity_1m_by_producer_local");
        async move { node(port).query(&sql).execute().await.unwrap() }
    };
    for (_, port) in NODES {
        sync(port).await;
    }
    let local = |port| {
        let sql = format!(
            "SELECT concat(district_code, '/', sector, '/', toString(version)) AS r FROM `{database}`.activity_1m_by_producer_local ORDER BY r"
        );
        async move { strings(&node(port), &sql).await }
    };
    let (s1r1, s1r2, s2r1, s2r2) = (
        local(8211).await,
        local(8212).await,
        local(8221).await,
        local(8222).await,
    );
    assert_eq!(s1r1, s1r2, "replicas of shard 1 differ");
    assert_eq!(s2r1, s2r2, "replicas of shard 2 differ");
    assert!(
        !s1r1.is_empty() && !s2r1.is_empty(),
        "one shard got every row"
    );
    assert_eq!(s1r1.len() + s2r1.len(), 2 * cells.len());
    let cell = |row: &String| row.rsplit_once('/').unwrap().0.to_owned();
    let one: BTreeSet<String> = s1r1.iter().map(cell).collect();
    let two: BTreeSet<String> = s2r1.iter().map(cell).collect();
    assert!(one.is_disjoint(&two), "a cell on both shards");

    // FINAL through the Distributed table, from every node: one row per
    // cell, the newer version; the analysts' copy (a materialized view on
    // each node's local rows) agrees.
    for (name, port) in NODES {
        let got = strings(
            &node(port),
            &format!(
                "SELECT count(), sum(txn_count) FROM `{database}`.activity_1m_by_producer FINAL"
            ),
        )
        .await;
        assert_eq!(
            got,
            [format!("{}\t{}", cells.len(), 7 * cells.len())],
            "{name}"
        );
        let analytics = strings(
            &node(port),
            &format!(
                "SELECT count(), sum(txn_count) FROM `{database}_analytics`.activity_1m FINAL"
            ),
        )
        .await;
        assert_eq!(analytics, got, "{name}: analytics");
    }

    // Fingerprints of every cell in two months, then the older month
    // dropped (`aggregate.dedup_retention_days`): gone from both shards'
    // replicas, the newer month untouched. Without a quorum, as the
    // configuration requires for a retention on a cluster: after a DROP
    // PARTITION, ClickHouse 18.16 refuses every sequentially consistent
    // read of a table whose dropped month had a quorum insert.
    let no_quorum = Store::new(&StoreConfig {
        insert_quorum: 1,
        ..cluster_config(URL, &database)
    });
    let (jan, mar) = (1_706_745_540u32, 1_709_251_200u32);
    let seen: Vec<pulih_store::SeenRow> = cells
        .iter()
        .flat_map(|(d, s)| {
            [jan, mar].map(|window_start| pulih_store::SeenRow {
                topic: "t".into(),
                partition: 0,
                district_code: d.clone(),
                sector: (*s).into(),
                producer_id: "bank".into(),
                window_start,
                fingerprints: vec![[7; 16], [8; 16]],
                offsets: vec![1, 2],
                merchants: vec![[9; 32]],
                merchant_offsets: vec![1],
            })
        })
        .collect();
    no_quorum.insert_seen(&seen).await.unwrap();
    let months = |port: u16| {
        let sql = format!(
            "SELECT concat(toString(m), ' ', toString(c)) FROM (SELECT toYYYYMM(window_start) AS m, \
             count() AS c FROM `{database}`.aggregator_counted_by_producer_local GROUP BY m) ORDER BY m"
        );
        async move { strings(&node(port), &sql).await }
    };
    for (_, port) in NODES {
        node(port)
            .query(&format!(
                "SYSTEM SYNC REPLICA `{database}`.aggregator_counted_by_producer_local"
            ))
            .execute()
            .await
            .unwrap();
    }
    let before = [months(8211).await, months(8221).await];
    assert!(
        before.iter().all(|m| m.len() == 2),
        "both months on both shards: {before:?}"
    );
    assert_eq!(no_quorum.prune_seen(202_403).await.unwrap(), vec![202_401]);
    for (name, port) in NODES {
        let after = months(port).await;
        assert_eq!(after.len(), 1, "{name}: {after:?}");
        assert!(after[0].starts_with("202403 "), "{name}: {after:?}");
    }
    assert!(no_quorum.prune_seen(202_403).await.unwrap().is_empty());
    let left: Vec<_> = store
        .seen_in("t", 0, &[mar - mar % 3600])
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.district_code == cells[0].0 && r.sector == cells[0].1)
        .collect();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].merchant_pairs().collect::<Vec<_>>(), [([9; 32], 1)]);

    // A replica killed (SIGKILL): with a quorum of two, an insert with
    // rows for its shard is not acknowledged while it is down. ClickHouse
    // either refuses it at once (TOO_FEW_LIVE_REPLICAS, once ZooKeeper has
    // expired the dead replica's session) or holds it waiting for the
    // quorum (up to insert_quorum_timeout); it succeeds, or succeeds when
    // retried, once the replica is back, and both replicas have the rows.
    let down = NODE_DOWN.lock().await;
    cluster_sh(&["stop-node", "s1r2"]);
    let pending = {
        let client = client.clone();
        let sql = insert(3, 9);
        tokio::spawn(async move { client.query(&sql).execute().await })
    };
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let acknowledged_while_down = pending.is_finished();
    cluster_sh(&["start-node", "s1r2"]);
    drop(down);
    let first = pending.await.unwrap();
    assert!(
        !(acknowledged_while_down && first.is_ok()),
        "acknowledged with one replica of shard 1 down"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let mut result = first;
    while let Err(e) = result {
        assert!(
            std::time::Instant::now() < deadline,
            "still refused after the replica came back: {e}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        result = client.query(&insert(3, 9)).execute().await;
    }
    for (_, port) in NODES {
        sync(port).await;
    }
    let (a, b) = (local(8211).await, local(8212).await);
    assert_eq!(a, b, "replicas of shard 1 differ after the restart");
    assert_eq!(a.len(), 3 * one.len());
    let got = strings(
        &node(8212),
        &format!("SELECT count(), sum(txn_count) FROM `{database}`.activity_1m_by_producer FINAL"),
    )
    .await;
    assert_eq!(got, [format!("{}\t{}", cells.len(), 9 * cells.len())]);
}

/// The same events, counted on one server and on the cluster, give the
/// same windows, the same analysts' metrics and the same public release:
/// every read path of `pulih aggregate`, `pulih rollup` and `pulih alerts`
/// is right across shards.
#[tokio::test]
async fn the_same_events_give_the_same_metrics_on_the_cluster_as_on_one_server() {
    let kafka = kafka_config("cluster_same", 4);
    let single = store_config("cluster_same");
    let cluster = cluster_config(URL, &unique("it_cluster_same"));
    let _cleanup = Databases(cluster.database.clone());
    let dir = repo_root().join("target/test-cluster").join(unique("same"));
    std::fs::create_dir_all(&dir).unwrap();
    let rest =
        "[pseudonymisation]\nsecret = \"0123456789abcdef0123456789abcdef0123456789abcdef\"\n\
                [alerts]\nalertmanager_url = \"\"\nmetrics_addr = \"\"\n";
    let configs: Vec<_> = [("single", &single), ("cluster", &cluster)]
        .into_iter()
        .map(|(name, store)| {
            let path = dir.join(name).join("pulih.toml");
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(
                &path,
                pulih_toml(
                    &kafka,
                    store,
                    "pulih-aggregate",
                    "metrics_addr = \"\"",
                    rest,
                ),
            )
            .unwrap();
            path
        })
        .collect();
    // Two months of the Jakarta scenario, once, into the topic.
    let out = run_pulih(
        &configs[0],
        &["simulate", "--from", "2021-01-01", "--to", "2021-02-28"],
    );
    let sent: u64 = out
        .split_whitespace()
        .find_map(|w| w.strip_prefix("events="))
        .unwrap_or_else(|| panic!("{out}"))
        .parse()
        .unwrap();
    assert!(sent > 10_000, "{out}");
    for (i, config) in configs.iter().enumerate() {
        run_pulih(config, &["migrate"]);
        let out = run_pulih(config, &["aggregate", "--exit-at-end"]);
        assert!(
            out.contains(&format!("aggregated records={sent} ")),
            "{out}"
        );
        if i == 0 {
            run_pulih(config, &["rollup"]);
        } else {
            // The rollup meets a replica that is down (long enough for
            // ZooKeeper to expire its session, so that its shard refuses
            // writes for want of a quorum) and comes back: the round is
            // tried again and succeeds, and what it wrote in the failed
            // tries is not counted twice (the comparison below).
            let down = NODE_DOWN.lock().await;
            cluster_sh(&["stop-node", "s2r1"]);
            tokio::time::sleep(std::time::Duration::from_secs(12)).await;
            let rollup = tokio::task::spawn_blocking({
                let config = config.clone();
                move || run_pulih(&config, &["rollup"])
            });
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            cluster_sh(&["start-node", "s2r1"]);
            drop(down);
            let out = rollup.await.unwrap();
            assert!(out.contains("rolled up"), "{out}");
            let log = std::fs::read_to_string(config.with_file_name("rollup.log")).unwrap();
            assert!(log.contains("Rollup round failed; trying again."), "{log}");
        }
        run_pulih(config, &["alerts", "--once"]);
    }

    let one = node(8123);
    let many = node(8211).with_setting("prefer_localhost_replica", "0");
    let (a, b) = (&single.database, &cluster.database);
    for (what, sql) in [
        (
            "windows",
            "SELECT district_code, sector, window_start, producer_id, txn_count, amount_idr_sum, merchants_active \
             FROM `{db}`.activity_1m_by_producer FINAL ORDER BY district_code, sector, window_start, producer_id",
        ),
        (
            "analysts' copy of the windows",
            "SELECT district_code, sector, window_start, producer_id, txn_count FROM `{db}_analytics`.activity_1m FINAL \
             ORDER BY district_code, sector, window_start, producer_id",
        ),
        (
            "merchant-days",
            "SELECT count(), uniqExact(merchant_key, day) FROM `{db}`.merchant_activity_daily_by_time FINAL",
        ),
        (
            "analysts' metrics",
            "SELECT level, kota_code, district_code, sector, day, txn_count, amount_idr_sum, merchants_open, \
             amount_idr_index, txn_count_chg4w, suppression, incomplete \
             FROM `{db}_analytics`.recovery_daily FINAL ORDER BY level, kota_code, district_code, sector, day",
        ),
        (
            "public release",
            // Not `vintage`: the two releases may fall on either side of a
            // Jakarta midnight.
            "SELECT day, level, kota_code, district_code, sector, provisional, withheld, incomplete, \
             amount_idr_index, txn_count_index, merchants_open_index, amount_idr_yoy_aligned, \
             amount_idr_wow, amount_idr_chg4w, merchants_open_chg4w \
             FROM `{db}_public`.recovery_daily ORDER BY level, kota_code, district_code, sector, day",
        ),
        (
            "producer coverage",
            "SELECT producer_id, day, txn_count, coverage FROM `{db}_analytics`.producer_coverage_daily FINAL \
             ORDER BY producer_id, day",
        ),
        (
            "alerts' rounds",
            "SELECT count() FROM `{db}_analytics`.alert_runs FINAL",
        ),
    ] {
        let mine = strings(&one, &sql.replace("{db}", a)).await;
        let theirs = strings(&many, &sql.replace("{db}", b)).await;
        assert!(!mine.is_empty() && mine[0] != "0", "{what}: nothing on one server");
        assert_eq!(mine.len(), theirs.len(), "{what}: row counts differ");
        let differ = mine.iter().zip(&theirs).find(|(x, y)| x != y);
        assert!(differ.is_none(), "{what}: {differ:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
