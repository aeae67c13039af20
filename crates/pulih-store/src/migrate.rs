//! Versioned migrations from `schemas/clickhouse/`, embedded in the binary.

use sha2::{Digest, Sha256};

use crate::{Store, StoreError};

/// One migration file.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

macro_rules! migration {
    ($version:expr, $file:literal) => {
        Migration {
            version: $version,
            name: $file,
            sql: include_str!(concat!("../../../schemas/clickhouse/", $file)),
        }
    };
}

/// Every migration, in order. Keep in step with `schemas/clickhouse/`.
pub const MIGRATIONS: &[Migration] = &[
    migration!(1, "0001_activity_1m.sql"),
    migration!(2, "0002_merchant_activity_daily.sql"),
    migration!(3, "0003_aggregator_state.sql"),
    migration!(4, "0004_recovery_metrics.sql"),
    migration!(5, "0005_payments.sql"),
    migration!(6, "0006_aggregator_layout.sql"),
    migration!(7, "0007_aggregator_seen.sql"),
    migration!(8, "0008_aggregator_watermark.sql"),
    migration!(9, "0009_releases.sql"),
    migration!(10, "0010_first_release.sql"),
    migration!(11, "0011_merchant_producer.sql"),
    migration!(12, "0012_producer_coverage.sql"),
    migration!(13, "0013_cell_coverage.sql"),
    migration!(14, "0014_public_indices.sql"),
    migration!(15, "0015_calendar.sql"),
    migration!(16, "0016_merchant_key_link.sql"),
    migration!(17, "0017_alerts.sql"),
    migration!(18, "0018_public_alerts.sql"),
    migration!(19, "0019_cell_names.sql"),
    migration!(20, "0020_public_view_on_a_cluster.sql"),
    migration!(21, "0021_aggregator_fingerprints.sql"),
    migration!(22, "0022_aggregator_counted.sql"),
    migration!(23, "0023_aggregator_counted_by_time.sql"),
    migration!(24, "0024_activity_by_time.sql"),
    migration!(25, "0025_rows_by_producer.sql"),
    migration!(26, "0026_aggregator_producer_clock.sql"),
];

/// The database analysts read: the configured one's `_analytics` sibling.
pub fn analytics_database(database: &str) -> String {
    format!("{database}_analytics")
}

/// The database dashboards and the public read: the `_public` sibling.
pub fn public_database(database: &str) -> String {
    format!("{database}_public")
}

/// A statement with `{database}`, `{analytics}` and `{public}` set to the
/// configured database and its siblings.
pub(crate) fn render(stmt: &str, database: &str) -> String {
    let quoted = |name: &str| format!("`{name}`");
    stmt.replace("{database}", &quoted(database))
        .replace("{analytics}", &quoted(&analytics_database(database)))
        .replace("{public}", &quoted(&public_database(database)))
}

/// Where one migration stands in a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationStatus {
    Applied { version: u32, name: String },
    Pending { version: u32, name: String },
}

impl Migration {
    pub fn checksum(&self) -> String {
        hex::encode(Sha256::digest(self.sql.as_bytes()))
    }

    /// The statements with `{database}`, `{analytics}` and `{public}` set
    /// to the configured database and its siblings.
    pub fn statements_for(&self, database: &str) -> Vec<String> {
        self.statements()
            .into_iter()
            .map(|s| render(&s, database))
            .collect()
    }

    /// Statements end with `;` at the end of a line; `--` comment lines are
    /// dropped.
    pub fn statements(&self) -> Vec<String> {
        let body: String = self
            .sql
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .map(|l| format!("{l}\n"))
            .collect();
        let mut out = Vec::new();
        let mut current = String::new();
        for line in body.lines() {
            current.push_str(line);
            current.push('\n');
            if line.trim_end().ends_with(';') {
                let stmt = current.trim().trim_end_matches(';').trim().to_owned();
                if !stmt.is_empty() {
                    out.push(stmt);
                }
                current.clear();
            }
        }
        let rest = current.trim();
        if !rest.is_empty() {
            out.push(rest.to_owned());
        }
        out
    }
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct AppliedRow {
    version: u32,
    name: String,
    checksum: String,
}

impl Store {
    async fn ensure_bookkeeping(&self) -> Result<(), MigrateError> {
        let admin = self.client.clone().with_database("system");
        let on_cluster = if self.cluster.is_empty() {
            String::new()
        } else {
            format!(" ON CLUSTER `{}`", self.cluster)
        };
        admin
            .query(&format!(
                "CREATE DATABASE IF NOT EXISTS `{}`{on_cluster}",
                self.database
            ))
            .execute()
            .await
            .map_err(self.err(format!("create database {}", self.database)))?;
        for stmt in self.in_form(
            "CREATE TABLE IF NOT EXISTS schema_migrations \
             (version UInt32, name String, checksum String, applied_at DateTime('UTC')) \
             ENGINE = MergeTree ORDER BY version",
        )? {
            self.client
                .query(&stmt)
                .execute()
                .await
                .map_err(self.err("create schema_migrations"))?;
        }
        Ok(())
    }

    /// A migration statement as this store runs it: rendered for the
    /// database, or carried to the cluster ([`crate::cluster`]).
    fn in_form(&self, stmt: &str) -> Result<Vec<String>, MigrateError> {
        if self.cluster.is_empty() {
            Ok(vec![render(stmt, &self.database)])
        } else {
            crate::cluster::statements(stmt, &self.database, &self.cluster)
                .map_err(MigrateError::Cluster)
        }
    }

    async fn applied(&self) -> Result<Vec<AppliedRow>, StoreError> {
        self.client
            .query("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
            .fetch_all::<AppliedRow>()
            .await
            .map_err(self.err("read schema_migrations"))
    }

    /// Which migrations are applied and which are pending.
    pub async fn migration_status(&self) -> Result<Vec<MigrationStatus>, MigrateError> {
        self.ensure_bookkeeping().await?;
        let applied = self.applied().await?;
        Ok(MIGRATIONS
            .iter()
            .map(|m| {
                if applied.iter().any(|a| a.version == m.version) {
                    MigrationStatus::Applied {
                        version: m.version,
                        name: m.name.into(),
                    }
                } else {
                    MigrationStatus::Pending {
                        version: m.version,
                        name: m.name.into(),
                    }
                }
            })
            .collect())
    }

    /// Applies pending migrations in order and returns the names applied.
    /// An applied migration whose file changed since is an error.
    pub async fn migrate(&self) -> Result<Vec<&'static str>, MigrateError> {
        self.ensure_bookkeeping().await?;
        let applied = self.applied().await?;
        let mut done = Vec::new();
        for m in MIGRATIONS {
            if let Some(a) = applied.iter().find(|a| a.version == m.version) {
                if a.checksum != m.checksum() {
                    return Err(MigrateError::Changed {
                        version: m.version,
                        name: a.name.clone(),
                    });
                }
                continue;
            }
            let mut rendered = Vec::new();
            for stmt in m.statements() {
                rendered.extend(self.in_form(&stmt)?);
            }
            for stmt in rendered {
                self.client
                    .query(&stmt)
                    .execute()
                    .await
                    .map_err(self.err(format!("migration {}", m.name)))?;
            }
            self.client
                .query("INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, now())")
                .bind(m.version)
                .bind(m.name)
                .bind(m.checksum())
                .execute()
                .await
                .map_err(self.err("record migration"))?;
            tracing::info!(message = "Applied migration.", name = m.name, database = %self.database);
            done.push(m.name);
        }
        Ok(done)
    }
}

/// Why `migrate` stopped.
#[derive(Debug)]
pub enum MigrateError {
    Store(StoreError),
    Changed {
        version: u32,
        name: String,
    },
    /// A statement with no cluster form (`clickhouse.cluster` is set).
    Cluster(crate::cluster::ClusterError),
}

impl From<StoreError> for MigrateError {
    fn from(e: StoreError) -> Self {
        MigrateError::Store(e)
    }
}

impl std::fmt::Display for MigrateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MigrateError::Store(e) => e.fmt(f),
            MigrateError::Cluster(e) => write!(f, "clickhouse.cluster: {e}"),
            MigrateError::Changed { version, name } => write!(
                f,
                "migration {version} ({name}) was changed after it was applied; add a new migration instead of editing an applied one"
            ),
        }
    }
}

impl std::error::Error for MigrateError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_list_matches_the_folder() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/clickhouse");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let names: Vec<&str> = MIGRATIONS.iter().map(|m| m.name).collect();
        assert_eq!(files, names);
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(
                m.version as usize,
                i + 1,
                "{} is numbered without gaps",
                m.name
            );
            assert!(
                m.name.starts_with(&format!("{:04}_", m.version)),
                "{}",
                m.name
            );
            assert!(!m.statements().is_empty());
        }
    }

    #[test]
    fn fills_in_sibling_databases() {
        let m = Migration {
            version: 9,
            name: "x",
            sql: "CREATE TABLE {public}.t AS {database}.s;\nCREATE DATABASE {analytics};\n",
        };
        assert_eq!(
            m.statements_for("it_a"),
            vec![
                "CREATE TABLE `it_a_public`.t AS `it_a`.s",
                "CREATE DATABASE `it_a_analytics`"
            ]
        );
    }

    #[test]
    fn splits_statements_at_line_ends() {
        let m = Migration {
            version: 9,
            name: "x",
            sql: "-- c;\nCREATE TABLE a (s String DEFAULT ';')\nENGINE = Memory;\n\nSELECT 1;\n",
        };
        assert_eq!(
            m.statements(),
            vec![
                "CREATE TABLE a (s String DEFAULT ';')\nENGINE = Memory",
                "SELECT 1"
            ]
        );
    }
}
