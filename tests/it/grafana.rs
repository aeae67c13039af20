//! The Grafana dashboards (deploy/grafana/), checked without Grafana by
//! deploy/grafana/check_dashboards.py: valid against the foundation SDK's
//! schema, their PromQL accepted by promtool, and every ClickHouse query,
//! with the plugin's macros and the template variables expanded, run as the
//! public account the data source uses on a seeded release, on ClickHouse
//! 18.16 and on current ClickHouse (chDB), each returning the columns its
//! panel shows and both the same answer. The metric names the PromQL uses
//! are checked against each service's `/metrics` page by the tests that
//! run it (`pulih_tests::rule_metrics_missing`).

use std::process::Command;

use pulih_tests::{pulih_bin, repo_root, unique};

use crate::access::{with_roles, PUBLIC, WRITER};
use crate::public_seed::{seed, FIRST, LAST, PLANTED};

#[tokio::test]
async fn every_dashboard_query_runs_on_both_clickhouse_versions_with_its_panels_columns() {
    let ch = with_roles("ch_grafana");
    let dir = repo_root()
        .join("target/test-grafana")
        .join(unique("grafana"));
    std::fs::create_dir_all(&dir).unwrap();
    // `pulih migrate` as the writer: the tables, the calendar and the cell
    // names the dashboards' variables and tables read.
    let config = dir.join("pulih.toml");
    std::fs::write(
        &config,
        format!(
            "[clickhouse]\nurl = \"{}\"\ndatabase = \"pulih\"\nuser = \"{}\"\npassword = \"{}\"\n",
            ch.url(),
            WRITER.0,
            WRITER.1
        ),
    )
    .unwrap();
    let out = Command::new(pulih_bin())
        .arg("--config")
        .arg(&config)
        .arg("migrate")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("cell names: 44 districts, 21 sectors"),
        "{stdout}"
    );
    seed(&ch).await;

    // The same tables for chDB.
    let writer = clickhouse::Client::default()
        .with_url(ch.url())
        .with_user(WRITER.0)
        .with_password(WRITER.1)
        .with_validation(false);
    let export = dir.join("export");
    std::fs::create_dir_all(&export).unwrap();
    for table in [
        "recovery_vintages",
        "releases",
        "alerts",
        "districts",
        "sectors",
    ] {
        let data = writer
            .query(&format!("SELECT * FROM pulih_public.{table}"))
            .fetch_bytes("TabSeparated")
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert!(!data.is_empty(), "pulih_public.{table} is empty");
        std::fs::write(export.join(format!("pulih_public.{table}.tsv")), data).unwrap();
    }

    let out = Command::new("python3")
        .arg(repo_root().join("deploy/grafana/check_dashboards.py"))
        .args(["--clickhouse", &ch.url()])
        .args(["--user", PUBLIC.0, "--password", PUBLIC.1])
        .args(["--database", "pulih_public"])
        .arg("--chdb-data")
        .arg(&export)
        .args(["--from", FIRST, "--to", LAST])
        .args(["--forbidden-value", &PLANTED.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "grafana: 2 dashboards valid",
        "PromQL expressions pass promtool",
        "ClickHouse queries returned their panels' columns on ClickHouse 18.16",
        "ClickHouse queries returned their panels' columns on ClickHouse 2",
    ] {
        assert!(stdout.contains(line), "no {line:?} in\n{stdout}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
