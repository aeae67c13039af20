//! Layered configuration: built-in defaults (`default.toml`) → config file →
//! environment (`PULIH_SECTION__KEY`). Unknown keys are errors, and every
//! error names the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use pulih_event::Secret;
use serde::Deserialize;

const DEFAULTS: &str = include_str!("default.toml");

/// Days of fingerprints kept when `aggregate.dedup_retention_days` is not
/// set: five weeks, so a backfill or a day re-sent within a month of the
/// events it repeats is still counted once.
pub const DEFAULT_DEDUP_RETENTION_DAYS: u32 = 35;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub kafka: Kafka,
    pub clickhouse: ClickHouse,
    pub pseudonymisation: Pseudonymisation,
    pub reference: ReferenceFiles,
    pub aggregate: Aggregate,
    pub simulate: Simulate,
    pub ui: Ui,
    pub ingest: Ingest,
    pub metrics: Metrics,
    pub alerts: Alerts,
    pub time: Time,
}

/// `pulih alerts` (docs/alerting.md): delivery, the sector-downturn rule
/// (`[alerts.rule]`, `pulih_alert::Settings`) and its guard windows.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alerts {
    pub topic: String,
    pub alertmanager_url: String,
    pub resend_secs: u32,
    pub first_run_days: i32,
    pub metrics_addr: String,
    pub rows_url: String,
    pub rule: pulih_alert::Settings,
    pub sudden_stop: pulih_alert::stop::StopSettings,
    pub lebaran_before_days: i32,
    pub lebaran_after_days: i32,
    pub imlek_days: i32,
    pub year_end_days: i32,
}

/// The time policy the gateway, `pulih produce` and the aggregator share.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Time {
    pub max_age_secs: u32,
    pub max_future_secs: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    pub baseline_start: String,
    pub baseline_end: String,
    pub min_merchants: u32,
    pub min_transactions: u64,
    pub dominance_p: f64,
    pub coverage_min_transactions: u64,
    pub coverage_outage_below: f64,
    pub coverage_incomplete_share: f64,
    pub refresh_days: u32,
    pub public_release_hour: u32,
    pub rollup_metrics_addr: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ingest {
    pub listen: String,
    pub max_body_bytes: usize,
    pub max_decompressed_bytes: usize,
    pub max_records: usize,
    pub dlq_raw_max_bytes: usize,
    pub rate_limit_per_sec: u32,
    pub rate_limit_burst: u32,
    pub ack_timeout_secs: u32,
    pub header_read_timeout_secs: u32,
    pub body_read_timeout_secs: u32,
    pub max_connections: u32,
    pub renew_producer_after_secs: u32,
    #[serde(default)]
    pub producers: BTreeMap<String, IngestProducer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestProducer {
    /// SHA-256 of the bearer token, 64 hex digits (`pulih token new`).
    pub token_sha256: String,
    #[serde(default = "enabled_default")]
    pub enabled: bool,
}

fn enabled_default() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kafka {
    pub brokers: String,
    pub topic: String,
    pub dlq_topic: String,
    pub partitions: i32,
    pub replication_factor: i32,
    #[serde(default)]
    pub topic_config: BTreeMap<String, String>,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouse {
    pub url: String,
    pub database: String,
    pub user: String,
    pub password: Secret,
    pub cluster: String,
    pub insert_quorum: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pseudonymisation {
    pub key_id: String,
    pub secret: Secret,
    pub previous_key_id: String,
    pub previous_secret: Secret,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceFiles {
    pub districts_file: PathBuf,
    pub calendar_file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Aggregate {
    pub group_id: String,
    pub instance: u32,
    pub instances: u32,
    pub window_secs: u32,
    pub allowed_lateness_secs: u32,
    /// Unset: [`Config::dedup_retention_days`] picks the default.
    #[serde(default)]
    pub dedup_retention_days: Option<u32>,
    pub idle_timeout_secs: u32,
    pub emit_interval_ms: u32,
    pub daily_emit_interval_ms: u32,
    pub metrics_addr: String,
    pub archive_payments: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Simulate {
    pub scenario: PathBuf,
    pub gateway_url: String,
    #[serde(default)]
    pub tokens: std::collections::BTreeMap<String, Secret>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ui {
    pub listen: String,
    pub clickhouse_user: String,
    pub clickhouse_password: Secret,
}

/// A configuration problem, naming the key or file concerned.
/// The long-running commands, and `migrate`, as `pulih check-config`
/// names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Service {
    Ingest,
    Aggregate,
    Rollup,
    Alerts,
    Ui,
    Migrate,
}

#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "configuration error: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

fn key_error(key: &str, msg: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("`{key}`: {msg}"))
}

impl Config {
    /// Loads defaults, then `file` (which must exist if given), then the
    /// environment, and checks the values.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        // Only PULIH_SECTION__KEY variables are configuration; others such
        // as PULIH_CONFIG, PULIH_LOG or the service script's settings are not.
        Self::load_from(
            file,
            Env::prefixed("PULIH_")
                .filter(|k| k.as_str().contains("__"))
                .split("__"),
        )
    }

    pub fn load_from(file: Option<&Path>, env: Env) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Toml::string(DEFAULTS));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            fig = fig.merge(Toml::file_exact(path));
        }
        fig = fig.merge(env);
        let config: Config = fig.extract().map_err(|e| {
            let mut msg = e.to_string();
            if !e.path.is_empty() {
                msg = format!("`{}`: {}", e.path.join("."), e.kind);
            }
            ConfigError(msg)
        })?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let url = &self.clickhouse.url;
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        if !rest.is_some_and(|r| {
            !r.is_empty() && !r.starts_with('/') && !r.contains(char::is_whitespace)
        }) {
            return Err(key_error(
                "clickhouse.url",
                format!("{url:?} is not an http:// or https:// URL with a host"),
            ));
        }
        if self.kafka.brokers.trim().is_empty() {
            return Err(key_error(
                "kafka.brokers",
                "must name at least one host:port",
            ));
        }
        for b in self.kafka.brokers.split(',') {
            let ok = b
                .trim()
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !ok {
                return Err(key_error(
                    "kafka.brokers",
                    format!("{b:?} is not host:port"),
                ));
            }
        }
        if !(1..=10_000).contains(&self.kafka.partitions) {
            return Err(key_error("kafka.partitions", "must be from 1 to 10000"));
        }
        if !(1..=16).contains(&self.kafka.replication_factor) {
            return Err(key_error(
                "kafka.replication_factor",
                "must be from 1 to 16 (3 on a production cluster)",
            ));
        }
        if let Some(key) = self.kafka.topic_config.keys().find(|k| k.trim().is_empty()) {
            return Err(key_error(
                "kafka.topic_config",
                format!("{key:?} is not a topic setting"),
            ));
        }
        if self.kafka.topic.is_empty() {
            return Err(key_error("kafka.topic", "must not be empty"));
        }
        if self.clickhouse.database.is_empty()
            || !self
                .clickhouse
                .database
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(key_error(
                "clickhouse.database",
                "must be letters, digits and _",
            ));
        }
        if !self
            .clickhouse
            .cluster
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(key_error(
                "clickhouse.cluster",
                "must be letters, digits and _ (a cluster of the server's remote_servers), or empty",
            ));
        }
        if !(1..=10).contains(&self.clickhouse.insert_quorum) {
            return Err(key_error(
                "clickhouse.insert_quorum",
                "must be from 1 (no quorum) to 10 replicas",
            ));
        }
        if self.aggregate.window_secs == 0 || 86_400 % self.aggregate.window_secs != 0 {
            return Err(key_error(
                "aggregate.window_secs",
                "must divide a day (60, 300, 3600, ...)",
            ));
        }
        if self.time.max_age_secs == 0 {
            return Err(key_error(
                "time.max_age_secs",
                "must be positive: every live event would be refused",
            ));
        }
        if self.aggregate.instances == 0 {
            return Err(key_error("aggregate.instances", "must be at least 1"));
        }
        if self.aggregate.instance >= self.aggregate.instances {
            return Err(key_error(
                "aggregate.instance",
                format!(
                    "must be below aggregate.instances ({}): instances are numbered from 0",
                    self.aggregate.instances
                ),
            ));
        }
        if self.aggregate.emit_interval_ms == 0 {
            return Err(key_error("aggregate.emit_interval_ms", "must be positive"));
        }
        if self.aggregate.daily_emit_interval_ms < self.aggregate.emit_interval_ms {
            return Err(key_error(
                "aggregate.daily_emit_interval_ms",
                format!(
                    "must be at least aggregate.emit_interval_ms ({}): merchant-days are written with a flush",
                    self.aggregate.emit_interval_ms
                ),
            ));
        }
        if self.aggregate.idle_timeout_secs == 0 {
            return Err(key_error("aggregate.idle_timeout_secs", "must be positive"));
        }
        let retention = self.dedup_retention_days();
        let floor = self.dedup_retention_floor();
        if retention != 0 && retention < floor {
            return Err(key_error(
                "aggregate.dedup_retention_days",
                format!(
                    "must be 0 (keep every fingerprint) or at least {floor} (time.max_age_secs plus aggregate.allowed_lateness_secs, plus two days): events up to time.max_age_secs old are accepted, a re-sent one must still find its fingerprint, and a window still open must find its merchants"
                ),
            ));
        }
        if retention != 0
            && !self.clickhouse.cluster.is_empty()
            && self.clickhouse.insert_quorum > 1
        {
            return Err(key_error(
                "aggregate.dedup_retention_days",
                "must be 0 on a cluster with clickhouse.insert_quorum above 1: dropping a month of fingerprints leaves ClickHouse's record of that month's last quorum insert behind, and ClickHouse then refuses every read of the fingerprints that asks for sequential consistency (docs/semantics.md, \"Retention on a cluster\")",
            ));
        }
        for (key, addr) in [
            ("aggregate.metrics_addr", &self.aggregate.metrics_addr),
            (
                "metrics.rollup_metrics_addr",
                &self.metrics.rollup_metrics_addr,
            ),
        ] {
            if !addr.is_empty() && addr.parse::<std::net::SocketAddr>().is_err() {
                return Err(key_error(
                    key,
                    "must be host:port with an IP address, e.g. 127.0.0.1:9464, or empty to serve no metrics",
                ));
            }
        }
        if self.kafka.dlq_topic.is_empty() || self.kafka.dlq_topic == self.kafka.topic {
            return Err(key_error(
                "kafka.dlq_topic",
                "must be set and differ from kafka.topic",
            ));
        }
        if self.ui.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(key_error(
                "ui.listen",
                "must be host:port with an IP address, e.g. 127.0.0.1:8091",
            ));
        }
        if self.ui.clickhouse_user.is_empty() {
            return Err(key_error("ui.clickhouse_user", "must not be empty"));
        }
        if !self.simulate.gateway_url.starts_with("http://") {
            return Err(key_error(
                "simulate.gateway_url",
                "must be an http:// URL (the gateway behind its TLS proxy)",
            ));
        }
        self.metric_params()?;
        self.alert_settings()?;
        self.stop_settings()?;
        self.alert_guards()?;
        let a = &self.alerts;
        if a.topic.is_empty() || a.topic == self.kafka.topic || a.topic == self.kafka.dlq_topic {
            return Err(key_error(
                "alerts.topic",
                "must be set and differ from kafka.topic and kafka.dlq_topic",
            ));
        }
        if !a.alertmanager_url.is_empty()
            && pulih_alert::alertmanager::Alertmanager::new(
                &a.alertmanager_url,
                std::time::Duration::from_secs(10),
            )
            .is_err()
        {
            return Err(key_error(
                "alerts.alertmanager_url",
                format!(
                    "{:?} is not an http:// URL (empty: post to no Alertmanager)",
                    a.alertmanager_url
                ),
            ));
        }
        if !(1..=3660).contains(&a.first_run_days) {
            return Err(key_error("alerts.first_run_days", "must be from 1 to 3660"));
        }
        if !(10..=3600).contains(&a.resend_secs) {
            return Err(key_error("alerts.resend_secs", "must be from 10 to 3600"));
        }
        if !a.metrics_addr.is_empty() && a.metrics_addr.parse::<std::net::SocketAddr>().is_err() {
            return Err(key_error(
                "alerts.metrics_addr",
                "must be host:port with an IP address, e.g. 127.0.0.1:9466, or empty to serve no metrics",
            ));
        }
        Ok(())
    }

    /// The sector-downturn rule's settings of `[alerts]`, checked.
    pub fn alert_settings(&self) -> Result<pulih_alert::Settings, ConfigError> {
        let s = self.alerts.rule.clone();
        s.check()
            .map_err(|(key, msg)| key_error(&format!("alerts.rule.{key}"), msg))?;
        Ok(s)
    }

    /// The sudden-stop rule's settings of `[alerts.sudden_stop]`, checked.
    pub fn stop_settings(&self) -> Result<pulih_alert::stop::StopSettings, ConfigError> {
        let s = self.alerts.sudden_stop.clone();
        s.check()
            .map_err(|(key, msg)| key_error(&format!("alerts.sudden_stop.{key}"), msg))?;
        Ok(s)
    }

    /// The guard windows of the rule: Lebaran, Imlek and the year's end
    /// in every year of the calendar, as inclusive day ranges.
    pub fn alert_guards(&self) -> Result<Vec<(i32, i32)>, ConfigError> {
        let a = &self.alerts;
        for (key, v) in [
            ("alerts.lebaran_before_days", a.lebaran_before_days),
            ("alerts.lebaran_after_days", a.lebaran_after_days),
            ("alerts.imlek_days", a.imlek_days),
            ("alerts.year_end_days", a.year_end_days),
        ] {
            if !(0..=60).contains(&v) {
                return Err(key_error(key, format!("{v} must be from 0 to 60 days")));
            }
        }
        let h = self.holidays()?;
        let mut guards = Vec::new();
        for d in h.dates("idul_fitri") {
            guards.push((d - a.lebaran_before_days, d + a.lebaran_after_days));
        }
        for d in h.dates("imlek") {
            guards.push((d - a.imlek_days, d + a.imlek_days));
        }
        for year in 2000..=2100 {
            let jan1 = pulih_metrics::parse_day(&format!("{year}-01-01"))
                .map_err(|e| key_error("alerts.year_end_days", e))?;
            guards.push((jan1 - a.year_end_days, jan1 + a.year_end_days - 1));
        }
        Ok(guards)
    }

    /// The metric definitions of `[metrics]`.
    pub fn metric_params(&self) -> Result<pulih_metrics::Params, ConfigError> {
        let m = &self.metrics;
        let start = pulih_metrics::parse_day(&m.baseline_start)
            .map_err(|e| key_error("metrics.baseline_start", e))?;
        let end = pulih_metrics::parse_day(&m.baseline_end)
            .map_err(|e| key_error("metrics.baseline_end", e))?;
        if end < start {
            return Err(key_error(
                "metrics.baseline_end",
                format!(
                    "{} is before metrics.baseline_start {}",
                    m.baseline_end, m.baseline_start
                ),
            ));
        }
        let days = end - start + 1;
        if days % 7 != 0 {
            return Err(key_error(
                "metrics.baseline_end",
                format!(
                    "the baseline must be whole weeks, so that every weekday weighs the same; {} to {} is {days} days",
                    m.baseline_start, m.baseline_end
                ),
            ));
        }
        if m.min_merchants == 0 {
            return Err(key_error(
                "metrics.min_merchants",
                "must be at least 1: a cell of one merchant may never be published",
            ));
        }
        for (key, share, of) in [
            (
                "metrics.coverage_outage_below",
                m.coverage_outage_below,
                "the producer's norm",
            ),
            (
                "metrics.coverage_incomplete_share",
                m.coverage_incomplete_share,
                "the cell's expected transactions",
            ),
        ] {
            if !(share > 0.0 && share <= 1.0) {
                return Err(key_error(
                    key,
                    format!("must be a share of {of}, in (0, 1]; got {share}"),
                ));
            }
        }
        if !(m.dominance_p > 0.0 && m.dominance_p <= 1.0) {
            return Err(key_error(
                "metrics.dominance_p",
                format!(
                    "{} is not a share in (0, 1]: the p% rule needs a p, e.g. 0.1 for 10 %",
                    m.dominance_p
                ),
            ));
        }
        if m.public_release_hour > 23 {
            return Err(key_error(
                "metrics.public_release_hour",
                format!("{} is not an hour of the day (0-23)", m.public_release_hour),
            ));
        }
        if m.coverage_min_transactions == 0 {
            return Err(key_error(
                "metrics.coverage_min_transactions",
                "must be at least 1: a producer without a norm cannot have an outage",
            ));
        }
        Ok(pulih_metrics::Params {
            baseline_start: start,
            baseline_end: end,
            min_merchants: m.min_merchants,
            min_txns: m.min_transactions,
            dominance_p: m.dominance_p,
            coverage_min_txns: m.coverage_min_transactions,
            coverage_outage_below: m.coverage_outage_below,
            coverage_incomplete_share: m.coverage_incomplete_share,
            moving_holidays: self.moving_holidays()?,
        })
    }

    /// Lebaran (H-21 .. H+14: Ramadan's last weeks, the exodus and the
    /// return) and Imlek (± 7 days), which the holiday-aligned year-on-year
    /// comparison aligns on.
    fn moving_holidays(&self) -> Result<Vec<pulih_metrics::MovingHoliday>, ConfigError> {
        let h = self.holidays()?;
        Ok(vec![
            pulih_metrics::MovingHoliday {
                dates: h.dates("idul_fitri"),
                before: 21,
                after: 14,
            },
            pulih_metrics::MovingHoliday {
                dates: h.dates("imlek"),
                before: 7,
                after: 7,
            },
        ])
    }

    /// The pseudonymiser, for commands that produce events.
    pub fn pseudonymiser(&self) -> Result<pulih_event::Pseudonymiser, ConfigError> {
        if self.pseudonymisation.secret.expose().is_empty() {
            return Err(key_error(
                "pseudonymisation.secret",
                "is not set; set it in the config file or PULIH_PSEUDONYMISATION__SECRET (generate one with `python3 -c 'import secrets; print(secrets.token_hex(32))'`)",
            ));
        }
        let p = &self.pseudonymisation;
        let current = pulih_event::Pseudonymiser::new(&p.key_id, &p.secret)
            .map_err(|e| key_error("pseudonymisation", e))?;
        if p.previous_secret.expose().is_empty() {
            if !p.previous_key_id.is_empty() {
                return Err(key_error(
                    "pseudonymisation.previous_secret",
                    "is not set, but previous_key_id is: set both during a rotation, neither after it",
                ));
            }
            return Ok(current);
        }
        if p.previous_secret == p.secret {
            return Err(key_error(
                "pseudonymisation.previous_secret",
                "is the current secret: a rotation needs a new one",
            ));
        }
        let previous = pulih_event::Pseudonymiser::new(&p.previous_key_id, &p.previous_secret)
            .map_err(|e| key_error("pseudonymisation.previous_key_id", e))?;
        current
            .with_previous(previous)
            .map_err(|e| key_error("pseudonymisation.previous_key_id", e))
    }

    pub fn reference(&self) -> Result<pulih_event::Reference, ConfigError> {
        if self.reference.districts_file.as_os_str().is_empty() {
            return Ok(pulih_event::Reference::jakarta());
        }
        pulih_event::Reference::load(&self.reference.districts_file)
            .map_err(|e| key_error("reference.districts_file", e))
    }

    /// The calendar of holidays and restrictions: `reference.calendar_file`,
    /// or the shipped one.
    pub fn holidays(&self) -> Result<pulih_event::holidays::Holidays, ConfigError> {
        if self.reference.calendar_file.as_os_str().is_empty() {
            return Ok(pulih_event::holidays::Holidays::jakarta());
        }
        pulih_event::holidays::Holidays::load(&self.reference.calendar_file)
            .map_err(|e| key_error("reference.calendar_file", e))
    }

    /// The gateway's settings, with every producer's token hash checked.
    pub fn gateway(&self) -> Result<pulih_ingest::gateway::GatewayConfig, ConfigError> {
        let i = &self.ingest;
        let mut producers = Vec::new();
        for (id, p) in &i.producers {
            let key = format!("ingest.producers.{id}.token_sha256");
            let mut digest = [0u8; 32];
            if p.token_sha256.len() != 64
                || hex::decode_to_slice(&p.token_sha256, &mut digest).is_err()
            {
                return Err(key_error(
                    &key,
                    "must be the 64-hex-digit SHA-256 of the token, as printed by `pulih token new`",
                ));
            }
            if !pulih_event::is_producer_id(id) {
                return Err(key_error(
                    &format!("ingest.producers.{id}"),
                    "producer ids are 1-64 characters of [A-Za-z0-9_-]",
                ));
            }
            producers.push(pulih_ingest::gateway::ProducerAuth {
                id: id.clone(),
                token_sha256: digest,
                enabled: p.enabled,
            });
        }
        for (k, v) in [
            ("ingest.max_body_bytes", i.max_body_bytes),
            ("ingest.max_decompressed_bytes", i.max_decompressed_bytes),
            ("ingest.max_records", i.max_records),
            ("ingest.dlq_raw_max_bytes", i.dlq_raw_max_bytes),
        ] {
            if v == 0 {
                return Err(key_error(k, "must be positive"));
            }
        }
        for (k, v) in [
            ("ingest.ack_timeout_secs", i.ack_timeout_secs),
            (
                "ingest.header_read_timeout_secs",
                i.header_read_timeout_secs,
            ),
            ("ingest.body_read_timeout_secs", i.body_read_timeout_secs),
            ("ingest.max_connections", i.max_connections),
            (
                "ingest.renew_producer_after_secs",
                i.renew_producer_after_secs,
            ),
        ] {
            if v == 0 {
                return Err(key_error(k, "must be positive"));
            }
        }
        Ok(pulih_ingest::gateway::GatewayConfig {
            max_body_bytes: i.max_body_bytes,
            max_decompressed_bytes: i.max_decompressed_bytes,
            max_records: i.max_records,
            dlq_topic: self.kafka.dlq_topic.clone(),
            dlq_raw_max_bytes: i.dlq_raw_max_bytes,
            rate_limit_per_sec: i.rate_limit_per_sec,
            rate_limit_burst: i.rate_limit_burst,
            ack_timeout: std::time::Duration::from_secs(u64::from(i.ack_timeout_secs)),
            producers,
            header_read_timeout: std::time::Duration::from_secs(u64::from(
                i.header_read_timeout_secs,
            )),
            body_read_timeout: std::time::Duration::from_secs(u64::from(i.body_read_timeout_secs)),
            max_connections: i.max_connections as usize,
            renew_producer_after: std::time::Duration::from_secs(u64::from(
                i.renew_producer_after_secs,
            )),
        })
    }

    pub fn listen_addr(&self) -> Result<std::net::SocketAddr, ConfigError> {
        self.ingest.listen.parse().map_err(|_| {
            key_error(
                "ingest.listen",
                "must be host:port with an IP address, e.g. 127.0.0.1:8080",
            )
        })
    }

    /// The least `aggregate.dedup_retention_days` allows: the age limit
    /// plus the allowed lateness, in days, plus two.
    fn dedup_retention_floor(&self) -> u32 {
        let secs =
            u64::from(self.time.max_age_secs) + u64::from(self.aggregate.allowed_lateness_secs);
        u32::try_from(secs.div_ceil(86_400) + 2).unwrap_or(u32::MAX)
    }

    /// Days of de-duplication fingerprints kept behind the checkpoints
    /// (0: all): `aggregate.dedup_retention_days`, or by default
    /// [`DEFAULT_DEDUP_RETENTION_DAYS`] (at least the floor the age limit
    /// sets), except on a cluster with an insert quorum, where dropping
    /// them is not possible (docs/semantics.md, "Retention on a cluster").
    pub fn dedup_retention_days(&self) -> u32 {
        match self.aggregate.dedup_retention_days {
            Some(days) => days,
            None if !self.clickhouse.cluster.is_empty() && self.clickhouse.insert_quorum > 1 => 0,
            None => DEFAULT_DEDUP_RETENTION_DAYS.max(self.dedup_retention_floor()),
        }
    }

    pub fn time_policy(&self, backfill: bool) -> pulih_event::TimePolicy {
        pulih_event::TimePolicy {
            max_future_ms: i64::from(self.time.max_future_secs) * 1000,
            max_age_ms: (!backfill).then_some(i64::from(self.time.max_age_secs) * 1000),
            dedup_retention_ms: None,
        }
    }

    pub fn store(&self) -> pulih_store::StoreConfig {
        pulih_store::StoreConfig {
            url: self.clickhouse.url.clone(),
            database: self.clickhouse.database.clone(),
            user: self.clickhouse.user.clone(),
            password: self.clickhouse.password.expose().to_owned(),
            cluster: self.clickhouse.cluster.clone(),
            insert_quorum: self.clickhouse.insert_quorum,
        }
    }

    /// Everything `service` reads from the configuration, checked as it
    /// would be at its start, without connecting to anything: `pulih
    /// check-config` and the deployment files' checks. Returns what the
    /// service would connect to and listen on, one line each.
    pub fn check_for(&self, service: Service) -> Result<Vec<String>, ConfigError> {
        self.reference()?;
        self.holidays()?;
        self.metric_params()?;
        self.alert_settings()?;
        self.stop_settings()?;
        self.alert_guards()?;
        let ch = &self.clickhouse;
        let mut out = vec![format!(
            "clickhouse: {} database {} as {}{}",
            ch.url,
            ch.database,
            ch.user,
            match ch.cluster.as_str() {
                "" => String::new(),
                c => format!(" on cluster {c} (insert_quorum {})", ch.insert_quorum),
            }
        )];
        let kafka = format!(
            "kafka: {} topic {} (dead letters {})",
            self.kafka.brokers, self.kafka.topic, self.kafka.dlq_topic
        );
        let listen = |what: &str, addr: &str| match addr {
            "" => format!("{what}: off"),
            a => format!("{what}: http://{a}"),
        };
        match service {
            Service::Ingest => {
                self.pseudonymiser()?;
                let gateway = self.gateway()?;
                out.clear();
                out.push(kafka);
                out.push(listen("listen", &self.listen_addr()?.to_string()));
                out.push(format!(
                    "producers: {}",
                    gateway
                        .producers
                        .iter()
                        .filter(|p| p.enabled)
                        .map(|p| p.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            Service::Aggregate => {
                let a = &self.aggregate;
                out.push(kafka);
                out.push(format!(
                    "instance {} of {} (group {})",
                    a.instance, a.instances, a.group_id
                ));
                out.push(listen("metrics", &a.metrics_addr));
            }
            Service::Rollup => out.push(listen("metrics", &self.metrics.rollup_metrics_addr)),
            Service::Alerts => {
                out.push(format!(
                    "kafka: {} topic {}",
                    self.kafka.brokers, self.alerts.topic
                ));
                out.push(match self.alerts.alertmanager_url.as_str() {
                    "" => "alertmanager: none".to_owned(),
                    u => format!("alertmanager: {u}"),
                });
                out.push(listen("metrics", &self.alerts.metrics_addr));
            }
            Service::Ui => {
                out[0] = format!(
                    "clickhouse: {} database {}_public as {}",
                    ch.url, ch.database, self.ui.clickhouse_user
                );
                out.push(listen("listen", &self.ui.listen));
            }
            Service::Migrate => {}
        }
        Ok(out)
    }

    pub fn kafka(&self) -> pulih_ingest::KafkaConfig {
        pulih_ingest::KafkaConfig {
            brokers: self.kafka.brokers.clone(),
            topic: self.kafka.topic.clone(),
            partitions: self.kafka.partitions,
            replication_factor: self.kafka.replication_factor,
            topic_config: self.kafka.topic_config.clone(),
            options: self.kafka.options.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `text` to a file of its own (tests run in parallel), loads it
    /// and deletes it.
    fn load_toml(text: &str) -> Result<Config, ConfigError> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("pulih-config-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pulih.toml");
        std::fs::write(&path, text).unwrap();
        let config = Config::load_from(Some(&path), Env::prefixed("PULIH_TEST_NOTHING_"));
        let _ = std::fs::remove_dir_all(&dir);
        config
    }

    #[test]
    fn the_alert_rule_defaults_are_the_documented_ones_and_checked_by_key() {
        let c = Config::load_from(None, Env::prefixed("PULIH_TEST_NOTHING_")).unwrap();
        assert_eq!(
            c.alert_settings().unwrap(),
            pulih_alert::Settings::default()
        );
        let e = load_toml("[alerts.rule]\nclear_yoy = -0.2\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("`alerts.rule.clear_yoy`: -0.2 must be above"),
            "{e}"
        );
        let e = load_toml("[alerts.rule]\ndepth = -0.2\n").unwrap_err();
        assert!(e.to_string().contains("depth"), "{e}");
        let e = load_toml("[alerts]\nimlek_days = 90\n").unwrap_err();
        assert!(e.to_string().contains("`alerts.imlek_days`: 90"), "{e}");
    }

    #[test]
    fn a_service_is_checked_for_what_it_reads() {
        let c = Config::load_from(None, Env::prefixed("PULIH_TEST_NOTHING_")).unwrap();
        // The gateway needs the secret; the aggregator does not.
        let e = c.check_for(Service::Ingest).unwrap_err().to_string();
        assert!(e.contains("`pseudonymisation.secret`"), "{e}");
        let lines = c.check_for(Service::Aggregate).unwrap();
        assert!(
            lines.contains(&"instance 0 of 1 (group pulih-aggregate)".to_owned()),
            "{lines:?}"
        );
        let c = load_toml(&format!(
            "[pseudonymisation]\nsecret = \"{}\"\n[ingest.producers.bank-a]\ntoken_sha256 = \"{}\"\n",
            "s".repeat(32),
            "0".repeat(63)
        ))
        .unwrap();
        let e = c.check_for(Service::Ingest).unwrap_err().to_string();
        assert!(e.contains("`ingest.producers.bank-a.token_sha256`"), "{e}");
        let c = load_toml("[ui]\nclickhouse_user = \"pulih_public\"\n").unwrap();
        assert_eq!(
            c.check_for(Service::Ui).unwrap(),
            [
                "clickhouse: http://127.0.0.1:8123 database pulih_public as pulih_public",
                "listen: http://127.0.0.1:8091"
            ]
        );
    }

    #[test]
    fn defaults_load() {
        let c = Config::load_from(None, Env::prefixed("PULIH_TEST_NOTHING_")).unwrap();
        assert_eq!(c.kafka.topic, "pulih.payments.v1");
        assert_eq!(c.clickhouse.database, "pulih");
        assert!(c
            .pseudonymiser()
            .unwrap_err()
            .to_string()
            .contains("`pseudonymisation.secret`"));
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure returns figment::Error
    fn environment_overrides_and_unrelated_variables_are_ignored() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("PULIH_CLICKHOUSE__DATABASE", "from_env");
            jail.set_env("PULIH_LOG", "debug");
            jail.set_env("PULIH_KAFKA_STORAGE", "sqlite");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.clickhouse.database, "from_env");
            jail.set_env("PULIH_KAFKA__BROKERZ", "x:1");
            let e = Config::load(None).unwrap_err().to_string();
            assert!(e.contains("brokerz"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn metric_settings_are_checked_at_load() {
        let c = load_toml("[metrics]\nmin_merchants = 10\n").unwrap();
        assert_eq!(c.metric_params().unwrap().min_merchants, 10);
        for (toml, key) in [
            (
                "baseline_start = \"2020-02-30\"",
                "`metrics.baseline_start`",
            ),
            ("baseline_end = \"2019-12-31\"", "`metrics.baseline_end`"),
            ("baseline_end = \"2020-02-02\"", "whole weeks"),
            ("min_merchants = 0", "`metrics.min_merchants`"),
            ("dominance_p = 0", "`metrics.dominance_p`"),
            ("public_release_hour = 24", "`metrics.public_release_hour`"),
            ("dominance_p = 10", "`metrics.dominance_p`"),
            (
                "coverage_outage_below = 1.5",
                "`metrics.coverage_outage_below`",
            ),
            (
                "coverage_outage_below = 0",
                "`metrics.coverage_outage_below`",
            ),
            (
                "coverage_min_transactions = 0",
                "`metrics.coverage_min_transactions`",
            ),
            (
                "rollup_metrics_addr = \"localhost:9465\"",
                "`metrics.rollup_metrics_addr`",
            ),
        ] {
            let e = load_toml(&format!("[metrics]\n{toml}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{toml}: {e}");
        }
    }

    #[test]
    fn errors_name_the_key() {
        let e = load_toml("[kafka]\nbrokerz = \"x:1\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("brokerz"), "{e}");
        let e = load_toml("[clickhouse]\nurl = \"localhost:8123\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`clickhouse.url`"), "{e}");
        let e = load_toml("[clickhouse]\ncluster = \"pulih; DROP\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`clickhouse.cluster`"), "{e}");
        let e = load_toml("[kafka]\nreplication_factor = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`kafka.replication_factor`"), "{e}");
        let e = load_toml("[clickhouse]\ninsert_quorum = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`clickhouse.insert_quorum`"), "{e}");
        let e = load_toml("[aggregate]\nwindow_secs = \"sixty\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("aggregate.window_secs"), "{e}");
        let e = load_toml("[aggregate]\nwindow_secs = 7\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`aggregate.window_secs`"), "{e}");
        let e = load_toml("[kafka]\nbrokers = \"localhost\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`kafka.brokers`"), "{e}");
        let e = load_toml("[aggregate]\nmetrics_addr = \"localhost:9464\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`aggregate.metrics_addr`"), "{e}");
        // Seven days of age and two minutes of lateness: 8 days, plus two.
        let e = load_toml("[aggregate]\ndedup_retention_days = 9\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`aggregate.dedup_retention_days`"), "{e}");
        assert!(e.contains("at least 10"), "{e}");
        assert!(load_toml("[aggregate]\ndedup_retention_days = 10\n").is_ok());
        let e =
            load_toml("[aggregate]\ndedup_retention_days = 10\nallowed_lateness_secs = 172800\n")
                .unwrap_err()
                .to_string();
        assert!(e.contains("at least 11"), "{e}");
        let on_cluster = "[clickhouse]\ncluster = \"pulih\"\ninsert_quorum = 2\n[aggregate]\ndedup_retention_days = 10\n";
        let e = load_toml(on_cluster).unwrap_err().to_string();
        assert!(e.contains("`aggregate.dedup_retention_days`"), "{e}");
        assert!(e.contains("insert_quorum"), "{e}");
        assert!(load_toml(&on_cluster.replace("insert_quorum = 2", "insert_quorum = 1")).is_ok());
        // Unset, the retention is bounded, at least by the floor, except
        // on a cluster with a quorum, where months cannot be dropped.
        assert_eq!(load_toml("").unwrap().dedup_retention_days(), 35);
        assert_eq!(
            load_toml("[time]\nmax_age_secs = 5184000\n")
                .unwrap()
                .dedup_retention_days(),
            63
        );
        assert_eq!(
            load_toml("[clickhouse]\ncluster = \"pulih\"\ninsert_quorum = 2\n")
                .unwrap()
                .dedup_retention_days(),
            0
        );
        assert_eq!(
            load_toml("[aggregate]\ndedup_retention_days = 0\n")
                .unwrap()
                .dedup_retention_days(),
            0
        );
        let e = load_toml("[aggregate]\ndaily_emit_interval_ms = 500\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`aggregate.daily_emit_interval_ms`"), "{e}");
        assert!(e.contains("emit_interval_ms (1000)"), "{e}");
        let e = load_toml("[aggregate]\ndedup_horizon_secs = 3600\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("dedup_horizon_secs"), "{e}");
        let e = load_toml("[time]\nmax_age_secs = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`time.max_age_secs`"), "{e}");
        let e = load_toml("[ingest]\nmax_age_secs = 60\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_age_secs"), "{e}");
        let e = load_toml("[aggregate]\ninstances = 3\ninstance = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`aggregate.instance`"), "{e}");
        let e = load_toml("[aggregate]\ninstances = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`aggregate.instances`"), "{e}");
        let e = load_toml("[kafka]\ndlq_topic = \"pulih.payments.v1\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`kafka.dlq_topic`"), "{e}");
        let e = load_toml("[reference]\ndistricts_file = \"/nonexistent.tsv\"\n")
            .unwrap()
            .reference()
            .unwrap_err()
            .to_string();
        assert!(e.contains("`reference.districts_file`"), "{e}");
        let e = load_toml("[pseudonymisation]\nsecret = \"short\"\n")
            .unwrap()
            .pseudonymiser()
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least 32 bytes"), "{e}");
        let secret = "secret = \"0123456789abcdef0123456789abcdef\"";
        for (rotation, key) in [
            (
                "previous_key_id = \"k0\"",
                "`pseudonymisation.previous_secret`",
            ),
            (
                "previous_secret = \"0123456789abcdef0123456789abcdef\"\nprevious_key_id = \"k0\"",
                "`pseudonymisation.previous_secret`",
            ),
            (
                "previous_secret = \"fedcba9876543210fedcba9876543210\"\nprevious_key_id = \"k1\"",
                "`pseudonymisation.previous_key_id`",
            ),
        ] {
            let e = load_toml(&format!("[pseudonymisation]\n{secret}\n{rotation}\n"))
                .unwrap()
                .pseudonymiser()
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{rotation}: {e}");
        }
        let rotating = load_toml(&format!(
            "[pseudonymisation]\n{secret}\nkey_id = \"k2\"\nprevious_key_id = \"k1\"\nprevious_secret = \"fedcba9876543210fedcba9876543210\"\n"
        ))
        .unwrap()
        .pseudonymiser()
        .unwrap();
        assert_eq!(rotating.previous().unwrap().key_id(), "k1");
        let e = Config::load_from(
            Some(Path::new("/nonexistent/pulih.toml")),
            Env::prefixed("X_"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("/nonexistent/pulih.toml does not exist"), "{e}");
        let e = load_toml("[kafka\n").unwrap_err().to_string();
        assert!(e.contains("pulih.toml"), "{e}");
    }
}
