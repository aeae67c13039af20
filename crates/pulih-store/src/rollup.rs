//! `recovery_daily`: reads daily totals per cell from
//! `merchant_activity_daily`, computes the metrics with `pulih-metrics`, and
//! writes the analysts' and the public table.

use std::collections::HashMap;

use pulih_metrics::{
    format_day, BaselineTotals, Cell, Day, DayTotals, Input, Level, Metrics, Params, Published,
};
use serde::{Deserialize, Serialize};

use crate::{migrate, quote, Store, StoreError};

/// Days computed per round trip; each round also reads a year of history.
const CHUNK_DAYS: Day = 92;

/// The grouping of one level: kota, district and sector expressions.
fn group_exprs(level: Level, kota: &str) -> [String; 3] {
    let blank = "''".to_owned();
    match level {
        Level::DistrictSector => [kota.to_owned(), "district_code".into(), "sector".into()],
        Level::KotaSector => [kota.to_owned(), blank, "sector".into()],
        Level::Sector => [blank.clone(), blank, "sector".into()],
        Level::City => [blank.clone(), blank.clone(), blank],
    }
}

/// `transform(district_code, [...], [...], '')`: each district's kota.
fn kota_expr(kota_of: &[(String, String)]) -> String {
    let (from, to): (Vec<String>, Vec<String>) =
        kota_of.iter().map(|(d, k)| (quote(d), quote(k))).unzip();
    format!(
        "transform(district_code, [{}], [{}], '')",
        from.join(", "),
        to.join(", ")
    )
}

/// The latest version of each merchant-day, restricted by `filter`.
fn merchant_days(filter: &str) -> String {
    format!(
        "SELECT day, district_code, sector, merchant_key, \
         argMax(txn_count, version) AS txn_count, argMax(amount_idr_sum, version) AS amount_idr_sum \
         FROM merchant_activity_daily WHERE {filter} \
         GROUP BY day, district_code, sector, merchant_key"
    )
}

fn day_ranges(column: &str, ranges: &[(Day, Day)], widen: Day) -> String {
    let parts: Vec<String> = ranges
        .iter()
        .map(|&(a, b)| {
            format!(
                "({column} BETWEEN toDate('{}') AND toDate('{}'))",
                format_day(a - widen),
                format_day(b)
            )
        })
        .collect();
    format!("({})", parts.join(" OR "))
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct CellDayRow {
    day: u16,
    kota: String,
    district: String,
    sector: String,
    txns: u64,
    amount: u64,
    active: u64,
    open: u64,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct BaselineRow {
    kota: String,
    district: String,
    sector: String,
    merchants: u64,
    txns: u64,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Extent {
    first: u16,
    last: u16,
    rows: u64,
}

/// One row of `<database>_analytics.recovery_daily`, in column order.
#[derive(Debug, Clone, clickhouse::Row, Serialize)]
struct AnalyticsRow {
    day: u16,
    level: i8,
    kota_code: String,
    district_code: String,
    sector: String,
    amount_idr_sum: u64,
    txn_count: u64,
    merchants_active: u32,
    merchants_open: Option<u32>,
    amount_idr_ma7: Option<f64>,
    txn_count_ma7: Option<f64>,
    merchants_open_ma7: Option<f64>,
    amount_idr_baseline: Option<f64>,
    txn_count_baseline: Option<f64>,
    merchants_open_baseline: Option<f64>,
    amount_idr_index: Option<f64>,
    txn_count_index: Option<f64>,
    merchants_open_index: Option<f64>,
    amount_idr_index_sa: Option<f64>,
    txn_count_index_sa: Option<f64>,
    merchants_open_index_sa: Option<f64>,
    amount_idr_wow: Option<f64>,
    txn_count_wow: Option<f64>,
    merchants_open_wow: Option<f64>,
    amount_idr_chg4w: Option<f64>,
    txn_count_chg4w: Option<f64>,
    merchants_open_chg4w: Option<f64>,
    suppression: i8,
    version: u64,
    computed_at: u32,
}

/// One row of `<database>_public.recovery_daily`, in column order.
#[derive(Debug, Clone, clickhouse::Row, Serialize)]
struct PublicRow {
    day: u16,
    level: i8,
    kota_code: String,
    district_code: String,
    sector: String,
    suppressed: u8,
    amount_idr_sum: Option<u64>,
    txn_count: Option<u64>,
    merchants_open: Option<u32>,
    amount_idr_ma7: Option<f64>,
    txn_count_ma7: Option<f64>,
    merchants_open_ma7: Option<f64>,
    amount_idr_index: Option<f64>,
    txn_count_index: Option<f64>,
    merchants_open_index: Option<f64>,
    amount_idr_index_sa: Option<f64>,
    txn_count_index_sa: Option<f64>,
    merchants_open_index_sa: Option<f64>,
    amount_idr_wow: Option<f64>,
    txn_count_wow: Option<f64>,
    merchants_open_wow: Option<f64>,
    amount_idr_chg4w: Option<f64>,
    txn_count_chg4w: Option<f64>,
    merchants_open_chg4w: Option<f64>,
    version: u64,
    computed_at: u32,
}

impl AnalyticsRow {
    fn new(m: &Metrics, version: u64, computed_at: u32) -> AnalyticsRow {
        AnalyticsRow {
            day: m.day as u16,
            level: m.cell.level as i8,
            kota_code: m.cell.kota.clone(),
            district_code: m.cell.district.clone(),
            sector: m.cell.sector.clone(),
            amount_idr_sum: m.totals.amount_idr,
            txn_count: m.totals.txns,
            merchants_active: m.totals.merchants_active,
            merchants_open: m.merchants_open,
            amount_idr_ma7: m.ma7[0],
            txn_count_ma7: m.ma7[1],
            merchants_open_ma7: m.ma7[2],
            amount_idr_baseline: m.baseline[0],
            txn_count_baseline: m.baseline[1],
            merchants_open_baseline: m.baseline[2],
            amount_idr_index: m.index[0],
            txn_count_index: m.index[1],
            merchants_open_index: m.index[2],
            amount_idr_index_sa: m.index_sa[0],
            txn_count_index_sa: m.index_sa[1],
            merchants_open_index_sa: m.index_sa[2],
            amount_idr_wow: m.wow[0],
            txn_count_wow: m.wow[1],
            merchants_open_wow: m.wow[2],
            amount_idr_chg4w: m.chg4w[0],
            txn_count_chg4w: m.chg4w[1],
            merchants_open_chg4w: m.chg4w[2],
            suppression: m.suppression as i8,
            version,
            computed_at,
        }
    }
}

impl PublicRow {
    fn new(p: Published, version: u64, computed_at: u32) -> PublicRow {
        PublicRow {
            day: p.day as u16,
            level: p.cell.level as i8,
            kota_code: p.cell.kota,
            district_code: p.cell.district,
            sector: p.cell.sector,
            suppressed: u8::from(p.suppressed),
            amount_idr_sum: p.amount_idr_sum,
            txn_count: p.txn_count,
            merchants_open: p.merchants_open,
            amount_idr_ma7: p.ma7[0],
            txn_count_ma7: p.ma7[1],
            merchants_open_ma7: p.ma7[2],
            amount_idr_index: p.index[0],
            txn_count_index: p.index[1],
            merchants_open_index: p.index[2],
            amount_idr_index_sa: p.index_sa[0],
            txn_count_index_sa: p.index_sa[1],
            merchants_open_index_sa: p.index_sa[2],
            amount_idr_wow: p.wow[0],
            txn_count_wow: p.wow[1],
            merchants_open_wow: p.wow[2],
            amount_idr_chg4w: p.chg4w[0],
            txn_count_chg4w: p.chg4w[1],
            merchants_open_chg4w: p.chg4w[2],
            version,
            computed_at,
        }
    }
}

/// What one rollup did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RollupReport {
    /// The days computed, if there was any data.
    pub days: Option<(Day, Day)>,
    pub rows: usize,
    pub suppressed: usize,
}

impl Store {
    /// First and last day of `merchant_activity_daily`, if it has rows.
    pub async fn activity_days(&self) -> Result<Option<(Day, Day)>, StoreError> {
        let e = self
            .client
            .query("SELECT toUInt16(min(day)) AS first, toUInt16(max(day)) AS last, count() AS rows FROM merchant_activity_daily")
            .fetch_one::<Extent>()
            .await
            .map_err(self.err("read the days of merchant_activity_daily"))?;
        Ok((e.rows > 0).then_some((Day::from(e.first), Day::from(e.last))))
    }

    /// Daily totals of every cell of `level` on the days in `ranges`;
    /// merchants open counts the two days before each day too.
    async fn cell_days(
        &self,
        level: Level,
        kota: &str,
        ranges: &[(Day, Day)],
    ) -> Result<Vec<CellDayRow>, StoreError> {
        let [k, d, s] = group_exprs(level, kota);
        let sql = format!(
            "SELECT toUInt16(day + k) AS d, {k} AS kota, {d} AS district, {s} AS sector, \
             sumIf(txn_count, k = 0) AS txns, sumIf(amount_idr_sum, k = 0) AS amount, \
             uniqExactIf(merchant_key, k = 0) AS active, uniqExact(merchant_key) AS open \
             FROM ({}) ARRAY JOIN [0, 1, 2] AS k \
             WHERE {} \
             GROUP BY d, kota, district, sector",
            merchant_days(&day_ranges("day", ranges, 2)),
            day_ranges("(day + k)", ranges, 0),
        );
        self.client
            .query(&sql)
            .fetch_all::<CellDayRow>()
            .await
            .map_err(self.err(format!("read daily totals per {}", level.name())))
    }

    async fn baseline_totals(
        &self,
        level: Level,
        kota: &str,
        params: &Params,
    ) -> Result<Vec<BaselineRow>, StoreError> {
        let [k, d, s] = group_exprs(level, kota);
        let sql = format!(
            "SELECT {k} AS kota, {d} AS district, {s} AS sector, \
             uniqExact(merchant_key) AS merchants, sum(txn_count) AS txns \
             FROM ({}) GROUP BY kota, district, sector",
            merchant_days(&day_ranges(
                "day",
                &[(params.baseline_start, params.baseline_end)],
                0
            )),
        );
        self.client
            .query(&sql)
            .fetch_all::<BaselineRow>()
            .await
            .map_err(self.err(format!("read baseline totals per {}", level.name())))
    }

    /// Everything `compute` needs for days `from ..= to`.
    async fn metrics_input(
        &self,
        params: &Params,
        kota_of: &[(String, String)],
        first_day: Day,
        from: Day,
        to: Day,
    ) -> Result<Input, StoreError> {
        let kota = kota_expr(kota_of);
        let ranges = vec![
            (from - pulih_metrics::HISTORY_DAYS, to),
            (params.baseline_start - 2, params.baseline_end),
        ];
        let mut input = Input {
            first_day,
            ranges: ranges.clone(),
            ..Input::default()
        };
        let cell = |level, kota: String, district: String, sector: String| Cell {
            level,
            kota,
            district,
            sector,
        };
        for level in Level::ALL {
            for r in self.cell_days(level, &kota, &ranges).await? {
                let totals = DayTotals {
                    amount_idr: r.amount,
                    txns: r.txns,
                    merchants_active: r.active as u32,
                    merchants_open: r.open as u32,
                };
                input
                    .days
                    .entry(cell(level, r.kota, r.district, r.sector))
                    .or_default()
                    .insert(Day::from(r.day), totals);
            }
            for r in self.baseline_totals(level, &kota, params).await? {
                input.baseline.insert(
                    cell(level, r.kota, r.district, r.sector),
                    BaselineTotals {
                        merchants: r.merchants as u32,
                        txns: r.txns,
                    },
                );
            }
        }
        Ok(input)
    }

    /// Recomputes `recovery_daily` for days `from ..= to` (default: all
    /// days with data) in the analytics and public databases. `kota_of`
    /// maps each district code to its kota code.
    pub async fn rollup(
        &self,
        params: &Params,
        kota_of: &[(String, String)],
        from: Option<Day>,
        to: Option<Day>,
    ) -> Result<RollupReport, StoreError> {
        let Some((first, last)) = self.activity_days().await? else {
            return Ok(RollupReport::default());
        };
        let from = from.unwrap_or(first).max(first);
        let to = to.unwrap_or(last);
        let mut report = RollupReport {
            days: (from <= to).then_some((from, to)),
            ..RollupReport::default()
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let version = now.as_millis() as u64;
        let computed_at = now.as_secs() as u32;
        let analytics = migrate::analytics_database(&self.database);
        let public = migrate::public_database(&self.database);
        let mut start = from;
        while start <= to {
            let end = (start + CHUNK_DAYS - 1).min(to);
            let input = self
                .metrics_input(params, kota_of, first, start, end)
                .await?;
            let rows = pulih_metrics::compute(&input, params, start, end);
            let a: Vec<AnalyticsRow> = rows
                .iter()
                .map(|m| AnalyticsRow::new(m, version, computed_at))
                .collect();
            let p: Vec<PublicRow> = rows
                .iter()
                .map(|m| PublicRow::new(m.published(), version, computed_at))
                .collect();
            report.rows += rows.len();
            report.suppressed += p.iter().filter(|r| r.suppressed == 1).count();
            self.insert_rows_into(&analytics, "recovery_daily", &a)
                .await?;
            self.insert_rows_into(&public, "recovery_daily", &p).await?;
            tracing::debug!(
                message = "Rolled up recovery metrics.",
                from = %pulih_metrics::format_day(start),
                to = %pulih_metrics::format_day(end),
                rows = rows.len()
            );
            start = end + 1;
        }
        Ok(report)
    }
}

/// The district → kota pairs of a set of reference districts.
pub fn kota_map<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<(String, String)> {
    let map: HashMap<&str, &str> = pairs.into_iter().collect();
    let mut v: Vec<(String, String)> = map.into_iter().map(|(d, k)| (d.into(), k.into())).collect();
    v.sort();
    v
}
