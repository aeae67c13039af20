//! What `pulih alerts` reads and writes: the daily values the rule
//! evaluates (`recovery_daily`), the alerts already raised
//! (`alert_events`) and the evaluation rounds (`alert_runs`).

use std::collections::{HashMap, HashSet};

use pulih_alert::message::AlertEvent;
use pulih_alert::rule::{DayValue, History};
use pulih_alert::stop::{Hour, Hourly};
use pulih_alert::{Active, Severity};
use pulih_metrics::{parse_day, Cell, Day, Level};
use serde::{Deserialize, Serialize};

use crate::{migrate, Store, StoreError};

#[derive(clickhouse::Row, Deserialize)]
struct ValueRow {
    d: u16,
    lvl: i8,
    kota_code: String,
    district_code: String,
    sector: String,
    amount: f64,
    txns: f64,
    open: Option<f64>,
    incomplete: u8,
    withheld: u8,
}

#[derive(clickhouse::Row, Serialize)]
struct EventRow {
    alert_id: String,
    rule: String,
    state: i8,
    level: i8,
    kota_code: String,
    district_code: String,
    sector: String,
    severity: i8,
    day: u16,
    since: u16,
    summary: String,
    revenue_yoy: Option<f64>,
    revenue_chg4w: Option<f64>,
    points_vs_city: Option<f64>,
    z: Option<f64>,
    merchants_open_yoy: Option<f64>,
    weeks: u8,
    guarded: u8,
    raised_at: u32,
    event: String,
}

/// A row of `{public}.alerts`.
#[derive(clickhouse::Row, Serialize)]
struct PublicRow {
    alert_id: String,
    state: i8,
    level: i8,
    kota_code: String,
    district_code: String,
    sector: String,
    severity: i8,
    day: u16,
    since: u16,
    summary: String,
    raised_at: u32,
}

fn level_of(i: i8) -> Option<Level> {
    Level::ALL.into_iter().find(|l| *l as i8 == i)
}

fn day16(s: &str) -> u16 {
    parse_day(s)
        .ok()
        .and_then(|d| u16::try_from(d).ok())
        .unwrap_or(0)
}

impl Store {
    /// The daily values of every cell over `from..=to`
    /// (`recovery_daily FINAL`).
    pub async fn alert_history(&self, from: Day, to: Day) -> Result<History, StoreError> {
        let sql = format!(
            "SELECT toUInt16(day) AS d, toInt8(level) AS lvl, kota_code, district_code, sector, \
             toFloat64(amount_idr_sum) AS amount, toFloat64(txn_count) AS txns, \
             CAST(merchants_open AS Nullable(Float64)) AS open, \
             incomplete, toUInt8(suppression != 'none') AS withheld \
             FROM `{}`.recovery_daily FINAL \
             WHERE day >= toDate({from}) AND day <= toDate({to})",
            migrate::analytics_database(&self.database),
        );
        let rows = self
            .client
            .query(&sql)
            .fetch_all::<ValueRow>()
            .await
            .map_err(self.err("read recovery_daily for the alert rule"))?;
        let mut h = History {
            first: from,
            last: to,
            days: HashMap::new(),
        };
        for r in rows {
            let Some(level) = level_of(r.lvl) else {
                continue;
            };
            let cell = Cell::new(level, r.kota_code, r.district_code, r.sector);
            h.days.entry(cell).or_default().insert(
                Day::from(r.d),
                DayValue {
                    amount: r.amount,
                    txns: r.txns,
                    merchants_open: r.open,
                    incomplete: r.incomplete != 0,
                    withheld: r.withheld != 0,
                },
            );
        }
        Ok(h)
    }

    /// The last day the newest complete-days record of the rollup says
    /// is no longer provisional (`releases`): the last day alerts may
    /// evaluate. `None` before the first rollup.
    pub async fn final_through(&self) -> Result<Option<Day>, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Last {
            provisional: u16,
            n: u64,
        }
        let last = self
            .client
            .query(&format!(
                "SELECT toUInt16(argMax(provisional_from, released_at)) AS provisional, count() AS n \
                 FROM `{}`.releases",
                migrate::analytics_database(&self.database)
            ))
            .fetch_one::<Last>()
            .await
            .map_err(self.err("read the last release of the analytics database"))?;
        Ok((last.n > 0).then_some(Day::from(last.provisional) - 1))
    }

    /// The last day an evaluation round went through.
    pub async fn alerts_evaluated_through(&self) -> Result<Option<Day>, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Last {
            through: u16,
            n: u64,
        }
        let last = self
            .client
            .query(&format!(
                "SELECT toUInt16(max(evaluated_through)) AS through, count() AS n FROM `{}`.alert_runs",
                migrate::analytics_database(&self.database)
            ))
            .fetch_one::<Last>()
            .await
            .map_err(self.err("read alert_runs"))?;
        Ok((last.n > 0).then_some(Day::from(last.through)))
    }

    /// Records an evaluation round through `through`.
    pub async fn record_alert_run(&self, through: Day, transitions: u32) -> Result<(), StoreError> {
        #[derive(clickhouse::Row, Serialize)]
        struct Run {
            evaluated_through: u16,
            evaluated_at: u32,
            transitions: u32,
        }
        let row = [Run {
            evaluated_through: u16::try_from(through).unwrap_or(0),
            evaluated_at: (pulih_event::calendar::now_ms() / 1000) as u32,
            transitions,
        }];
        let analytics = migrate::analytics_database(&self.database);
        self.insert_rows_into(&analytics, "alert_runs", &row).await
    }

    /// Every stored change: (alert id, day, firing).
    pub async fn alert_changes(&self) -> Result<HashSet<(String, Day, bool)>, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Change {
            alert_id: String,
            d: u16,
            firing: u8,
        }
        let rows = self
            .client
            .query(&format!(
                "SELECT alert_id, toUInt16(day) AS d, toUInt8(state = 'firing') AS firing \
                 FROM `{}`.alert_events FINAL",
                migrate::analytics_database(&self.database)
            ))
            .fetch_all::<Change>()
            .await
            .map_err(self.err("read alert_events"))?;
        Ok(rows
            .into_iter()
            .map(|r| (r.alert_id, Day::from(r.d), r.firing != 0))
            .collect())
    }

    /// The alerts whose last change before `before` fired them, with the
    /// record that fired them.
    pub async fn active_alerts(
        &self,
        before: Day,
    ) -> Result<HashMap<String, (Active, AlertEvent)>, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Last {
            event: String,
        }
        let rows = self
            .client
            .query(&format!(
                "SELECT last_event AS event FROM (\
                 SELECT argMax(event, (day, state)) AS last_event, argMax(state, (day, state)) AS last_state \
                 FROM `{}`.alert_events FINAL WHERE day < toDate({before}) GROUP BY alert_id) \
                 WHERE last_state = 'firing'",
                migrate::analytics_database(&self.database)
            ))
            .fetch_all::<Last>()
            .await
            .map_err(self.err("read the active alerts"))?;
        let mut out = HashMap::new();
        for r in rows {
            let Ok(e) = serde_json::from_str::<AlertEvent>(&r.event) else {
                tracing::warn!(message = "Unreadable alert record in alert_events.", event = %r.event);
                continue;
            };
            out.insert(e.alert_id.clone(), (e.active(), e));
        }
        Ok(out)
    }

    /// Writes state changes to `alert_events`.
    pub async fn insert_alert_events(&self, events: &[AlertEvent]) -> Result<(), StoreError> {
        let mut rows = Vec::with_capacity(events.len());
        for e in events {
            let level = Level::ALL
                .into_iter()
                .find(|l| l.name() == e.level)
                .map_or(0, |l| l as i8);
            rows.push(EventRow {
                alert_id: e.alert_id.clone(),
                rule: e.rule.clone(),
                state: if e.firing() { 1 } else { 2 },
                level,
                kota_code: e.kota_code.clone(),
                district_code: e.district_code.clone(),
                sector: e.sector.clone(),
                severity: match e.severity() {
                    Severity::Warning => 1,
                    Severity::Critical => 2,
                },
                day: day16(&e.day),
                since: day16(&e.since),
                summary: e.summary.clone(),
                revenue_yoy: e.values.revenue_yoy,
                revenue_chg4w: e.values.revenue_chg4w,
                points_vs_city: e.values.points_vs_city,
                z: e.values.z,
                merchants_open_yoy: e.values.merchants_open_yoy,
                weeks: e.values.weeks.min(255) as u8,
                guarded: u8::from(e.values.guarded),
                raised_at: u32::try_from(e.raised_at_secs()).unwrap_or(0),
                event: serde_json::to_string(e).unwrap_or_default(),
            });
        }
        // The public copy first: `alert_events` is what the service reads
        // back to know what it raised, so a crash between the two writes
        // raises the change again and completes the public copy.
        let public: Vec<PublicRow> = rows
            .iter()
            .filter(|r| r.rule == "sector_downturn")
            .map(|r| PublicRow {
                alert_id: r.alert_id.clone(),
                state: r.state,
                level: r.level,
                kota_code: r.kota_code.clone(),
                district_code: r.district_code.clone(),
                sector: r.sector.clone(),
                severity: r.severity,
                day: r.day,
                since: r.since,
                summary: r.summary.clone(),
                raised_at: r.raised_at,
            })
            .collect();
        if !public.is_empty() {
            let public_db = migrate::public_database(&self.database);
            self.insert_rows_into(&public_db, "alerts", &public).await?;
        }
        let analytics = migrate::analytics_database(&self.database);
        self.insert_rows_into(&analytics, "alert_events", &rows)
            .await
    }

    /// Hourly counts over hours `from..=to`: transactions per district ×
    /// sector cell (`activity_1m_by_producer FINAL`), and merchants active per
    /// producer and cell (through `merchant_producer`) in the hours of
    /// `merchant_hours` only (ranges within `from..=to`), one query a
    /// range: at Jakarta's volume four weeks of them in one query went
    /// over ClickHouse's 4 GB for a query (docs/benchmarks.md, "At
    /// Jakarta's volume"). The merchants are those the aggregator wrote to
    /// `aggregator_counted_by_producer`, with those rows of older versions
    /// carried in `merchant_keys`; for complete hours only, whose merchants
    /// are all counted in a row.
    pub async fn hourly(
        &self,
        from: Hour,
        to: Hour,
        merchant_hours: &[(Hour, Hour)],
    ) -> Result<Hourly, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Txns {
            district_code: String,
            sector: String,
            h: u32,
            txns: u64,
        }
        #[derive(clickhouse::Row, Deserialize)]
        struct Merchants {
            producer_id: String,
            district_code: String,
            sector: String,
            h: u32,
            merchants: u64,
        }
        let (start, end) = (from * 3600, (to + 1) * 3600);
        let txns = self
            .client
            .query(
                "SELECT district_code, sector, toUInt32(intDiv(toUInt32(window_start), 3600)) AS h, \
                 toUInt64(sum(txn_count)) AS txns FROM activity_1m_by_producer FINAL \
                 WHERE window_start >= toDateTime(?) AND window_start < toDateTime(?) \
                 GROUP BY district_code, sector, h",
            )
            .bind(start)
            .bind(end)
            .fetch_all::<Txns>()
            .await
            .map_err(self.err("read hourly transactions from activity_1m_by_producer"))?;
        let mut merchants: Vec<Merchants> = Vec::new();
        for &(a, b) in merchant_hours {
            let (start, end) = (a.max(from) * 3600, (b.min(to) + 1) * 3600);
            if start >= end {
                continue;
            }
            let part = self
                .client
                .query(
                    "SELECT p.producer_id AS producer_id, a.district_code AS district_code, a.sector AS sector, \
                     a.h AS h, toUInt64(uniqExact(a.k)) AS merchants \
                     FROM (SELECT district_code, sector, toUInt32(intDiv(toUInt32(window_start), 3600)) AS h, \
                           merchant AS k FROM aggregator_counted_by_producer ARRAY JOIN merchants AS merchant \
                           WHERE window_start >= toDateTime(?) AND window_start < toDateTime(?) \
                           UNION ALL \
                           SELECT district_code, sector, toUInt32(intDiv(toUInt32(window_start), 3600)) AS h, \
                           merchant_key AS k FROM activity_1m_by_producer FINAL ARRAY JOIN merchant_keys AS merchant_key \
                           WHERE window_start >= toDateTime(?) AND window_start < toDateTime(?)) AS a \
                     ANY INNER JOIN (SELECT merchant_key AS k, producer_id FROM merchant_producer FINAL) AS p \
                     USING k GROUP BY producer_id, district_code, sector, h",
                )
                .bind(start)
                .bind(end)
                .bind(start)
                .bind(end)
                .fetch_all::<Merchants>()
                .await
                .map_err(self.err("read hourly merchants per producer from activity_1m_by_producer"))?;
            merchants.extend(part);
        }
        let mut out = Hourly {
            first: from,
            last: to,
            ..Hourly::default()
        };
        for r in txns {
            out.txns
                .entry((r.district_code, r.sector))
                .or_default()
                .insert(Hour::from(r.h), r.txns);
        }
        for r in merchants {
            out.merchants
                .entry(r.producer_id)
                .or_default()
                .entry((r.district_code, r.sector))
                .or_default()
                .insert(Hour::from(r.h), r.merchants);
        }
        Ok(out)
    }
}
