//! The cluster variant of the migrations, generated from the same files.
//!
//! With `clickhouse.cluster` set, `pulih migrate` runs every statement of
//! `schemas/clickhouse/` through [`statements`] instead of running it as
//! written. Each table gets one of two layouts ([`layout`]):
//!
//! - **Sharded**, for tables that grow with the city: the rows live in
//!   `<table>_local`, a `Replicated*MergeTree` at
//!   `/clickhouse/tables/{shard}/<database>.<table>` with replica
//!   `{replica}`, and `<table>` is a `Distributed` table over them, sharded
//!   by a hash of the cell part of the sorting key. `FINAL` on a
//!   Distributed table merges copies within each shard only; since every
//!   copy of a row has the same cell, all its copies are on one shard, so
//!   `FINAL` through `<table>` is exact. Readers and writers keep using
//!   `<table>`.
//! - **Everywhere**, for small tables (checkpoints, releases, reference
//!   data): one `Replicated*MergeTree` at `/clickhouse/tables/all/...`
//!   whose replicas are every node of the cluster, read locally.
//!
//! Every `CREATE`, `DROP` and `CREATE DATABASE` runs `ON CLUSTER`. A
//! statement this module does not know how to carry to a cluster is an
//! error, so a new migration cannot silently stay single-node.

use std::fmt;

/// How a table is laid out on a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Sharded by this expression over the table's columns.
    Sharded(&'static str),
    /// A full replica on every node.
    Everywhere,
}

const CELL: &str = "cityHash64(district_code, sector)";
const METRIC_CELL: &str = "cityHash64(kota_code, district_code, sector)";

/// The layout of each table: (database, table), with `""`, `"analytics"`
/// or `"public"` for the configured database and its two siblings.
pub fn layout(database: &str, table: &str) -> Option<Layout> {
    use Layout::*;
    Some(match (database, table) {
        ("", "activity_1m") | ("analytics", "activity_1m") => Sharded(CELL),
        ("", "activity_1m_by_time")
        | ("", "activity_1m_by_producer")
        | ("", "merchant_activity_daily")
        | ("", "merchant_activity_daily_by_time") => Sharded(CELL),
        ("", "aggregator_seen")
        | ("", "aggregator_fingerprints")
        | ("", "aggregator_counted")
        | ("", "aggregator_counted_by_time")
        | ("", "aggregator_counted_by_producer") => Sharded(CELL),
        ("", "payments") => Sharded("cityHash64(producer_id, event_id)"),
        ("", "aggregator_checkpoint")
        | ("", "aggregator_dedup")
        | ("", "aggregator_layout")
        | ("", "aggregator_watermark")
        | ("", "aggregator_producer_clock")
        | ("", "merchant_producer")
        | ("", "merchant_key_link")
        | ("", "merchant_key_canonical")
        | ("", "schema_migrations") => Everywhere,
        ("analytics", "recovery_daily")
        | ("analytics", "recovery_daily_first_release")
        | ("analytics", "release_candidate")
        | ("analytics", "cell_coverage_daily")
        | ("public", "recovery_daily")
        | ("public", "recovery_vintages") => Sharded(METRIC_CELL),
        ("analytics", "producer_coverage_daily")
        | ("analytics", "releases")
        | ("analytics", "calendar")
        | ("analytics", "districts")
        | ("analytics", "sectors")
        | ("analytics", "alert_events")
        | ("analytics", "alert_runs")
        | ("public", "releases")
        | ("public", "calendar")
        | ("public", "districts")
        | ("public", "sectors")
        | ("public", "alerts") => Everywhere,
        _ => return None,
    })
}

/// A statement that cannot be carried to a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterError(pub String);

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ClusterError {}

/// A table name as a migration writes it: `{analytics}.x`, `{public}.x` or
/// a bare `x` in the configured database.
struct Name<'a> {
    /// `""`, `"analytics"` or `"public"`.
    kind: &'static str,
    table: &'a str,
}

impl<'a> Name<'a> {
    fn parse(token: &'a str) -> Result<Name<'a>, ClusterError> {
        let (kind, table) = if let Some(t) = token.strip_prefix("{analytics}.") {
            ("analytics", t)
        } else if let Some(t) = token.strip_prefix("{public}.") {
            ("public", t)
        } else if let Some(t) = token.strip_prefix("{database}.") {
            ("", t)
        } else {
            ("", token)
        };
        if table.is_empty() || !table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(ClusterError(format!(
                "cannot read a table name from {token:?}"
            )));
        }
        Ok(Name { kind, table })
    }

    fn database(&self, database: &str) -> String {
        match self.kind {
            "analytics" => crate::migrate::analytics_database(database),
            "public" => crate::migrate::public_database(database),
            _ => database.to_owned(),
        }
    }

    fn qualified(&self, database: &str, suffix: &str) -> String {
        format!("`{}`.`{}{suffix}`", self.database(database), self.table)
    }

    fn layout(&self) -> Result<Layout, ClusterError> {
        layout(self.kind, self.table).ok_or_else(|| {
            ClusterError(format!(
                "table {}{} has no cluster layout: add it to pulih_store::cluster::layout",
                if self.kind.is_empty() {
                    String::new()
                } else {
                    format!("{{{}}}.", self.kind)
                },
                self.table
            ))
        })
    }
}

/// The engine clause `ENGINE = X` or `ENGINE = X(args)` of a statement: its
/// byte range, the engine name and its arguments.
fn engine(stmt: &str) -> Result<(std::ops::Range<usize>, &str, Option<&str>), ClusterError> {
    let start = stmt
        .find("ENGINE = ")
        .ok_or_else(|| ClusterError("no `ENGINE = ` clause".into()))?;
    let rest = &stmt[start + "ENGINE = ".len()..];
    let name_len = rest
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(rest.len());
    let name = &rest[..name_len];
    if !name.ends_with("MergeTree") {
        return Err(ClusterError(format!(
            "engine {name} has no replicated form"
        )));
    }
    let after = &rest[name_len..];
    if let Some(args) = after.strip_prefix('(') {
        let close = args
            .find(')')
            .ok_or_else(|| ClusterError(format!("unclosed arguments of {name}")))?;
        let end = start + "ENGINE = ".len() + name_len + 1 + close + 1;
        let args = args[..close].trim();
        Ok((start..end, name, (!args.is_empty()).then_some(args)))
    } else {
        Ok((start..start + "ENGINE = ".len() + name_len, name, None))
    }
}

fn replicated(name: &str, args: Option<&str>, path: &str, replica: &str) -> String {
    match args {
        Some(a) => format!("ENGINE = Replicated{name}('{path}', '{replica}', {a})"),
        None => format!("ENGINE = Replicated{name}('{path}', '{replica}')"),
    }
}

/// The statements that carry one migration statement (as written, with
/// placeholders) to the cluster `cluster`, for the configured `database`.
pub fn statements(stmt: &str, database: &str, cluster: &str) -> Result<Vec<String>, ClusterError> {
    let on = format!("ON CLUSTER `{cluster}`");
    let words: Vec<&str> = stmt.split_whitespace().collect();
    let fail =
        |why: String| ClusterError(format!("{why} in: {}", stmt.lines().next().unwrap_or("")));
    match words.as_slice() {
        ["CREATE", "DATABASE", "IF", "NOT", "EXISTS", db, ..] => Ok(vec![format!(
            "CREATE DATABASE IF NOT EXISTS {} {on}",
            crate::migrate::render(db, database)
        )]),
        ["DROP", "TABLE", "IF", "EXISTS", name, ..] => {
            let name = Name::parse(name.trim_end_matches(';'))?;
            let mut out = vec![format!(
                "DROP TABLE IF EXISTS {} {on}",
                name.qualified(database, "")
            )];
            if let Layout::Sharded(_) = name.layout()? {
                out.push(format!(
                    "DROP TABLE IF EXISTS {} {on}",
                    name.qualified(database, "_local")
                ));
            }
            Ok(out)
        }
        ["CREATE", "VIEW", "IF", "NOT", "EXISTS", name, "AS", ..] => {
            let name = Name::parse(name)?;
            let body = &stmt[stmt.find(" AS").ok_or_else(|| fail("no AS".into()))?..];
            Ok(vec![format!(
                "CREATE VIEW IF NOT EXISTS {} {on}{}",
                name.qualified(database, ""),
                crate::migrate::render(body, database)
            )])
        }
        ["INSERT", "INTO", ..] => {
            // Runs once, into the Distributed or everywhere-replicated
            // table; the store inserts into Distributed tables
            // synchronously on a cluster.
            Ok(vec![crate::migrate::render(stmt, database)])
        }
        ["CREATE", kind @ ("TABLE" | "MATERIALIZED"), ..] => {
            let view = *kind == "MATERIALIZED";
            let at = if view { 6 } else { 5 };
            let expected: &[&str] = if view {
                &["CREATE", "MATERIALIZED", "VIEW", "IF", "NOT", "EXISTS"]
            } else {
                &["CREATE", "TABLE", "IF", "NOT", "EXISTS"]
            };
            if words.len() <= at || words[..at] != *expected {
                return Err(fail("expected CREATE ... IF NOT EXISTS <name>".into()));
            }
            let raw_name = words[at];
            let name = Name::parse(raw_name.trim_end_matches('('))?;
            let layout = name.layout()?;
            let (range, engine_name, args) = engine(stmt).map_err(|e| fail(e.0))?;
            let db = name.database(database);
            let (local_suffix, path, replica) = match layout {
                Layout::Sharded(_) => (
                    "_local",
                    format!("/clickhouse/tables/{{shard}}/{db}.{}", name.table),
                    "{replica}",
                ),
                Layout::Everywhere => (
                    "",
                    format!("/clickhouse/tables/all/{db}.{}", name.table),
                    "{shard}-{replica}",
                ),
            };
            // The head up to the name, the name with ON CLUSTER, the body
            // with the replicated engine.
            let name_at = stmt
                .find(raw_name.trim_end_matches('('))
                .ok_or_else(|| fail("no name".into()))?;
            let after_name = name_at + raw_name.trim_end_matches('(').len();
            let mut body = String::new();
            body.push_str(&stmt[after_name..range.start]);
            body.push_str(&replicated(engine_name, args, &path, replica));
            body.push_str(&stmt[range.end..]);
            if view {
                // The view reads the local table of its sharded source, so
                // each node folds the rows inserted on it.
                let from = body
                    .rfind("FROM ")
                    .ok_or_else(|| fail("a materialized view without FROM".into()))?;
                let source = body[from + 5..].split_whitespace().next().unwrap_or("");
                let source_name = Name::parse(source)?;
                if !matches!(source_name.layout()?, Layout::Sharded(_))
                    || !matches!(layout, Layout::Sharded(_))
                {
                    return Err(fail(
                        "a materialized view must read and be a sharded table".into(),
                    ));
                }
                let local_source = format!("{}_local", source);
                body = format!(
                    "{}{}{}",
                    &body[..from + 5],
                    local_source,
                    &body[from + 5 + source.len()..]
                );
            }
            let head = if view {
                "CREATE MATERIALIZED VIEW IF NOT EXISTS"
            } else {
                "CREATE TABLE IF NOT EXISTS"
            };
            let mut out = vec![format!(
                "{head} {} {on}{}",
                name.qualified(database, local_suffix),
                crate::migrate::render(&body, database)
            )];
            if let Layout::Sharded(key) = layout {
                out.push(format!(
                    "CREATE TABLE IF NOT EXISTS {} {on} AS {} ENGINE = Distributed(`{cluster}`, `{db}`, `{}_local`, {key})",
                    name.qualified(database, ""),
                    name.qualified(database, "_local"),
                    name.table
                ));
            }
            Ok(out)
        }
        _ => Err(fail("no cluster form for this statement".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::MIGRATIONS;

    #[test]
    fn every_migration_statement_has_a_cluster_form() {
        for m in MIGRATIONS {
            for stmt in m.statements() {
                let out = statements(&stmt, "pulih", "pulih")
                    .unwrap_or_else(|e| panic!("{}: {e}", m.name));
                assert!(!out.is_empty());
                for s in &out {
                    if !s.starts_with("INSERT") {
                        assert!(s.contains("ON CLUSTER `pulih`"), "{}: {s}", m.name);
                    }
                    // No placeholder is left, and no table stays
                    // unreplicated.
                    for p in ["{database}", "{analytics}", "{public}"] {
                        assert!(!s.contains(p), "{}: {s}", m.name);
                    }
                    if s.contains("MergeTree") {
                        assert!(s.contains("ENGINE = Replicated"), "{}: {s}", m.name);
                    }
                }
            }
        }
    }

    #[test]
    fn a_sharded_table_is_a_replicated_local_table_under_a_distributed_one() {
        let out = statements(
            "CREATE TABLE IF NOT EXISTS activity_1m\n(\n    window_start DateTime,\n    version UInt64\n)\nENGINE = ReplacingMergeTree(version)\nORDER BY (district_code, sector, window_start)",
            "city",
            "c",
        )
        .unwrap();
        assert_eq!(out.len(), 2);
        assert!(out[0].starts_with(
            "CREATE TABLE IF NOT EXISTS `city`.`activity_1m_local` ON CLUSTER `c`\n("
        ));
        assert!(out[0].contains(
            "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/city.activity_1m', '{replica}', version)\nORDER BY"
        ));
        assert_eq!(
            out[1],
            "CREATE TABLE IF NOT EXISTS `city`.`activity_1m` ON CLUSTER `c` AS `city`.`activity_1m_local` \
             ENGINE = Distributed(`c`, `city`, `activity_1m_local`, cityHash64(district_code, sector))"
        );
    }

    #[test]
    fn a_small_table_is_replicated_to_every_node() {
        let out = statements(
            "CREATE TABLE IF NOT EXISTS {public}.releases\n(\n    vintage Date\n)\nENGINE = ReplacingMergeTree\nORDER BY vintage",
            "city",
            "c",
        )
        .unwrap();
        assert_eq!(
            out,
            ["CREATE TABLE IF NOT EXISTS `city_public`.`releases` ON CLUSTER `c`\n(\n    vintage Date\n)\n\
              ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/city_public.releases', '{shard}-{replica}')\nORDER BY vintage"]
        );
    }

    #[test]
    fn the_materialized_view_folds_the_local_rows_of_its_source() {
        let m = MIGRATIONS
            .iter()
            .find(|m| m.name == "0004_recovery_metrics.sql")
            .unwrap();
        let stmt = m
            .statements()
            .into_iter()
            .find(|s| s.starts_with("CREATE MATERIALIZED VIEW"))
            .unwrap();
        let out = statements(&stmt, "city", "c").unwrap();
        assert!(out[0].starts_with("CREATE MATERIALIZED VIEW IF NOT EXISTS `city_analytics`.`activity_1m_local` ON CLUSTER `c`"));
        assert!(
            out[0].ends_with("FROM `city`.activity_1m_local"),
            "{}",
            out[0]
        );
        assert!(out[1].contains("ENGINE = Distributed(`c`, `city_analytics`, `activity_1m_local`"));
    }

    #[test]
    fn what_cannot_be_carried_is_refused_by_name() {
        let e = statements(
            "CREATE TABLE IF NOT EXISTS mystery (a UInt8) ENGINE = MergeTree ORDER BY a",
            "d",
            "c",
        )
        .unwrap_err();
        assert!(e.0.contains("mystery has no cluster layout"), "{e}");
        let e = statements("ALTER TABLE activity_1m ADD COLUMN x UInt8", "d", "c").unwrap_err();
        assert!(e.0.contains("no cluster form"), "{e}");
        let e = statements(
            "CREATE TABLE IF NOT EXISTS activity_1m (a UInt8) ENGINE = Log",
            "d",
            "c",
        )
        .unwrap_err();
        assert!(e.0.contains("engine Log has no replicated form"), "{e}");
    }
}
