//! The alert as every channel carries it: a `pulih.alerts.v1` record
//! (`schemas/alert.v1.json`), a row of `pulih_analytics.alert_events`, and
//! an Alertmanager v2 alert.
//!
//! Values are rounded as the public release rounds them (changes to 0.01),
//! so an alert says no more about a cell than its public row does.

use serde::{Deserialize, Serialize};

use pulih_metrics::{format_day, round_public, Cell, Day, Level};

use crate::rule::{alert_id, summary, Active, Names, Severity, Transition};
use crate::stop::{Hour, Stop, SUDDEN_STOP};

/// The Jakarta (+07:00) day of hour `h`.
pub fn jakarta_day(h: Hour) -> Day {
    (h + 7).div_euclid(24) as Day
}

/// `YYYY-MM-DD HH:00` of hour `h` in Jakarta.
fn jakarta_hour(h: Hour) -> String {
    format!(
        "{} {:02}:00",
        format_day(jakarta_day(h)),
        (h + 7).rem_euclid(24)
    )
}

/// The `schema` field of every record.
pub const SCHEMA: &str = "pulih.alert.v1";
/// The Alertmanager `alertname` of the downturn rule.
pub const ALERTNAME: &str = "PulihSectorDownturn";
/// The Alertmanager `alertname` of the sudden-stop rule.
pub const STOP_ALERTNAME: &str = "PulihSuddenStop";

/// What the rule measured, rounded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Values {
    /// 28-day revenue against the holiday-aligned days a year before, less 1.
    pub revenue_yoy: Option<f64>,
    /// 28-day revenue against the 28 days before, less 1 (net of the
    /// reference year's in a holiday guard window).
    pub revenue_chg4w: Option<f64>,
    /// Year-on-year change less the city's, in points.
    pub points_vs_city: Option<f64>,
    /// Robust z-score of that difference against the cell's past year.
    pub z: Option<f64>,
    pub merchants_open_yoy: Option<f64>,
    /// Districts of the kota down in the sector, of those evaluated.
    pub districts_down: Option<u32>,
    pub districts_evaluated: Option<u32>,
    /// Consecutive weekly evaluations the condition (or, resolved, the
    /// clearing condition) held.
    pub weeks: u32,
    /// The evaluation day is in a holiday guard window.
    pub guarded: bool,
    /// Sudden stops: the first silent trading hour (local time, +07:00).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silent_since: Option<String>,
    /// Sudden stops: silent trading hours when it fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silent_hours: Option<u32>,
    /// Sudden stops: the producers carrying the cell, still trading
    /// elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producers: Option<Vec<String>>,
}

/// One state change of one alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    pub schema: String,
    /// Stable identity: rule/level/kota[/district]/sector.
    pub alert_id: String,
    pub rule: String,
    /// `firing` or `resolved`.
    pub state: String,
    pub level: String,
    pub kota_code: String,
    pub district_code: String,
    pub sector: String,
    pub severity: String,
    /// The Jakarta day whose data made the change (YYYY-MM-DD).
    pub day: String,
    /// The day the alert fired.
    pub since: String,
    pub summary: String,
    pub values: Values,
    /// A query of the cell's public rows, for `pulih_public`.
    pub rows_query: String,
    /// The cell's page, when `alerts.rows_url` is set.
    pub rows_url: Option<String>,
    /// When the service raised the change (RFC 3339, UTC).
    pub raised_at: String,
}

fn round(v: Option<f64>) -> Option<f64> {
    v.map(round_public)
}

/// The SQL that reads the cell's published rows.
pub fn rows_query(cell: &Cell, public_database: &str) -> String {
    let mut conds = format!("level = '{}'", cell.level.name());
    if !cell.kota.is_empty() {
        conds += &format!(" AND kota_code = '{}'", cell.kota);
    }
    if cell.level == Level::DistrictSector {
        conds += &format!(" AND district_code = '{}'", cell.district);
    }
    if !cell.sector.is_empty() {
        conds += &format!(" AND sector = '{}'", cell.sector);
    }
    format!("SELECT * FROM {public_database}.recovery_daily WHERE {conds} ORDER BY day")
}

/// `template` with `{level}`, `{kota}`, `{district}`, `{sector}` and
/// `{day}` replaced.
pub fn rows_url(template: &str, cell: &Cell, day: Day) -> Option<String> {
    if template.is_empty() {
        return None;
    }
    Some(
        template
            .replace("{level}", cell.level.name())
            .replace("{kota}", &cell.kota)
            .replace("{district}", &cell.district)
            .replace("{sector}", &cell.sector)
            .replace("{day}", &format_day(day)),
    )
}

/// RFC 3339 of a Unix time in seconds.
pub fn rfc3339(unix_secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix_secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

impl AlertEvent {
    pub fn new(
        t: &Transition,
        names: &Names,
        public_database: &str,
        url_template: &str,
        raised_at: i64,
    ) -> AlertEvent {
        let a = &t.assessment;
        let s = a.stats;
        AlertEvent {
            schema: SCHEMA.to_owned(),
            alert_id: t.id(),
            rule: t.rule.to_owned(),
            state: if t.firing { "firing" } else { "resolved" }.to_owned(),
            level: t.cell.level.name().to_owned(),
            kota_code: t.cell.kota.clone(),
            district_code: t.cell.district.clone(),
            sector: t.cell.sector.clone(),
            severity: t.severity.name().to_owned(),
            day: format_day(t.day),
            since: format_day(t.since),
            summary: summary(t, names),
            values: Values {
                revenue_yoy: round(s.map(|s| s.yoy)),
                revenue_chg4w: round(s.map(|s| s.chg4w)),
                points_vs_city: a.relative_points.map(|p| p.round()),
                z: a.z.map(|z| (z * 10.0).round() / 10.0),
                merchants_open_yoy: round(s.and_then(|s| s.merchants_yoy)),
                districts_down: a.districts_down.map(|d| d.0),
                districts_evaluated: a.districts_down.map(|d| d.1),
                weeks: t.weeks,
                guarded: s.is_some_and(|s| s.guarded),
                silent_since: None,
                silent_hours: None,
                producers: None,
            },
            rows_query: rows_query(&t.cell, public_database),
            rows_url: rows_url(url_template, &t.cell, t.day),
            raised_at: rfc3339(raised_at),
        }
    }

    /// A sudden stop of `stop` found at hour `at`; `kota` is the kota
    /// code of its district.
    pub fn stop(
        stop: &Stop,
        kota: &str,
        names: &Names,
        public_database: &str,
        url_template: &str,
        raised_at: i64,
    ) -> AlertEvent {
        let cell = Cell::new(
            Level::DistrictSector,
            kota.to_owned(),
            stop.cell.0.clone(),
            stop.cell.1.clone(),
        );
        let since = jakarta_day(stop.since);
        let summary = format!(
            "{} in {}: no transactions for {} trading hours since {} WIB, while {} keep{} trading elsewhere",
            names.sector(&cell),
            names.place(&cell),
            stop.hours,
            jakarta_hour(stop.since),
            stop.producers.join(", "),
            if stop.producers.len() == 1 { "s" } else { "" },
        );
        AlertEvent {
            schema: SCHEMA.to_owned(),
            alert_id: alert_id(SUDDEN_STOP, &cell),
            rule: SUDDEN_STOP.to_owned(),
            state: "firing".to_owned(),
            level: cell.level.name().to_owned(),
            kota_code: cell.kota.clone(),
            district_code: cell.district.clone(),
            sector: cell.sector.clone(),
            severity: Severity::Warning.name().to_owned(),
            day: format_day(since),
            since: format_day(since),
            summary,
            values: Values {
                revenue_yoy: None,
                revenue_chg4w: None,
                points_vs_city: None,
                z: None,
                merchants_open_yoy: None,
                districts_down: None,
                districts_evaluated: None,
                weeks: 0,
                guarded: false,
                silent_since: Some(format!(
                    "{}:00+07:00",
                    jakarta_hour(stop.since).replace(' ', "T")
                )),
                silent_hours: Some(stop.hours),
                producers: Some(stop.producers.clone()),
            },
            rows_query: rows_query(&cell, public_database),
            rows_url: rows_url(url_template, &cell, since),
            raised_at: rfc3339(raised_at),
        }
    }

    /// The change that resolves this firing sudden stop: the cell trades
    /// again (or its producers stopped too) at hour `at`.
    pub fn stop_resolved(&self, at: Hour, raised_at: i64) -> AlertEvent {
        let head = self.summary.split(':').next().unwrap_or_default();
        AlertEvent {
            state: "resolved".to_owned(),
            day: format_day(jakarta_day(at)),
            summary: format!(
                "{head}: no longer a sudden stop at {} WIB; silent since {} WIB",
                jakarta_hour(at),
                self.values
                    .silent_since
                    .as_deref()
                    .unwrap_or_default()
                    .get(..16)
                    .unwrap_or_default()
                    .replace('T', " ")
            ),
            raised_at: rfc3339(raised_at),
            ..self.clone()
        }
    }

    pub fn firing(&self) -> bool {
        self.state == "firing"
    }

    pub fn severity(&self) -> Severity {
        if self.severity == Severity::Critical.name() {
            Severity::Critical
        } else {
            Severity::Warning
        }
    }

    /// When the change was raised, in Unix seconds (0 if unreadable).
    pub fn raised_at_secs(&self) -> i64 {
        time::OffsetDateTime::parse(
            &self.raised_at,
            &time::format_description::well_known::Rfc3339,
        )
        .map_or(0, |t| t.unix_timestamp())
    }

    /// The state a firing record leaves its alert in.
    pub fn active(&self) -> Active {
        Active {
            since: pulih_metrics::parse_day(&self.since).unwrap_or_default(),
            severity: self.severity(),
        }
    }

    /// The Alertmanager v2 alert: labels identify it (and route it),
    /// annotations describe it. An active alert ends at `ends_at` unless
    /// re-sent; a resolved one at the time it was resolved.
    /// `deployment` (the ClickHouse database) tells deployments sharing an
    /// Alertmanager apart.
    pub fn to_alertmanager(
        &self,
        starts_at: i64,
        ends_at: i64,
        deployment: &str,
    ) -> serde_json::Value {
        let alertname = if self.rule == SUDDEN_STOP {
            STOP_ALERTNAME
        } else {
            ALERTNAME
        };
        let mut annotations = serde_json::json!({
            "summary": self.summary,
            "description": format!(
                "{} since {} (evaluated on {}). Rows: {}",
                alertname, self.since, self.day, self.rows_query
            ),
            "rows_query": self.rows_query,
            "runbook_url": "https://github.com/pulih-project/pulih/blob/main/docs/alerting.md#reading-an-alert",
        });
        // Empty labels are left out: a kota-level alert has no district.
        let labels: serde_json::Map<String, serde_json::Value> = [
            ("alertname", alertname),
            ("alert_id", &self.alert_id),
            ("rule", &self.rule),
            ("level", &self.level),
            ("kota_code", &self.kota_code),
            ("district_code", &self.district_code),
            ("sector", &self.sector),
            ("severity", &self.severity),
            ("deployment", deployment),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_owned(), v.into()))
        .collect();
        let mut alert = serde_json::json!({
            "labels": labels,
            "startsAt": rfc3339(starts_at),
            "endsAt": rfc3339(ends_at),
        });
        if let Some(url) = &self.rows_url {
            alert["generatorURL"] = url.clone().into();
            annotations["rows_url"] = url.clone().into();
        }
        alert["annotations"] = annotations;
        alert
    }
}
