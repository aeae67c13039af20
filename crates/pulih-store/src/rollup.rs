//! `recovery_daily`: reads daily totals per cell from
//! `merchant_activity_daily`, computes the metrics with `pulih-metrics`, and
//! writes the analysts' and the public table.

use std::collections::{BTreeMap, HashMap, HashSet};

use pulih_metrics::coverage::{self, ProducerDay};
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

/// The latest version of each merchant-day on the days `filter` selects.
/// `FINAL` is safe here because `day` is part of the sorting key (every
/// version of a row has the same day), and on ClickHouse 18.16 it was four
/// times faster than `argMax` grouping (docs/benchmarks.md).
fn merchant_days(filter: &str) -> String {
    format!(
        "SELECT day, district_code, sector, merchant_key, txn_count, amount_idr_sum \
         FROM merchant_activity_daily FINAL WHERE {filter}"
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

/// Adds one level's daily totals to `days`; later rows replace earlier ones.
fn add_days(
    days: &mut HashMap<Cell, BTreeMap<Day, DayTotals>>,
    level: Level,
    rows: Vec<CellDayRow>,
) {
    for r in rows {
        let totals = DayTotals {
            amount_idr: r.amount,
            txns: r.txns,
            merchants_active: r.active as u32,
            merchants_open: r.open as u32,
        };
        days.entry(Cell::new(level, r.kota, r.district, r.sector))
            .or_default()
            .insert(Day::from(r.day), totals);
    }
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
    /// First and last day of the rows of `merchant_activity_daily` that
    /// `filter` selects, if any.
    async fn extent(&self, filter: &str) -> Result<Option<(Day, Day)>, StoreError> {
        let e = self
            .client
            .query(&format!(
                "SELECT toUInt16(min(day)) AS first, toUInt16(max(day)) AS last, count() AS rows \
                 FROM merchant_activity_daily WHERE {filter}"
            ))
            .fetch_one::<Extent>()
            .await
            .map_err(self.err("read the days of merchant_activity_daily"))?;
        Ok((e.rows > 0).then_some((Day::from(e.first), Day::from(e.last))))
    }

    /// First and last day of `merchant_activity_daily`, if it has rows.
    pub async fn activity_days(&self) -> Result<Option<(Day, Day)>, StoreError> {
        self.extent("1").await
    }

    /// The first day of `merchant_activity_daily` with a row written at or
    /// after `since` (seconds since the epoch), if any.
    pub async fn first_day_changed_since(&self, since: u32) -> Result<Option<Day>, StoreError> {
        let filter = format!("updated_at >= toDateTime({since})");
        Ok(self.extent(&filter).await?.map(|(first, _)| first))
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

    /// Fresh daily totals of every level on the days in `ranges`, from
    /// `merchant_activity_daily`.
    async fn load_fresh(
        &self,
        kota: &str,
        ranges: &[(Day, Day)],
        days: &mut HashMap<Cell, BTreeMap<Day, DayTotals>>,
    ) -> Result<(), StoreError> {
        for level in Level::ALL {
            add_days(days, level, self.cell_days(level, kota, ranges).await?);
        }
        Ok(())
    }

    /// Daily totals of days `from ..= to` as an earlier rollup wrote them
    /// to `recovery_daily`, if it wrote every day of them that has
    /// merchant-days; `false` (and nothing added) if it did not, as after
    /// a rollup of a shorter range.
    async fn load_history(
        &self,
        from: Day,
        to: Day,
        days: &mut HashMap<Cell, BTreeMap<Day, DayTotals>>,
    ) -> Result<bool, StoreError> {
        let mut found = HashMap::new();
        for level in Level::ALL {
            let sql = format!(
                "SELECT toUInt16(day) AS d, kota_code AS kota, district_code AS district, sector, \
                 txn_count AS txns, amount_idr_sum AS amount, toUInt64(merchants_active) AS active, \
                 toUInt64(ifNull(merchants_open, 0)) AS open \
                 FROM `{}`.recovery_daily FINAL WHERE level = '{}' AND {}",
                migrate::analytics_database(&self.database),
                level.name(),
                day_ranges("day", &[(from, to)], 0)
            );
            let rows = self
                .client
                .query(&sql)
                .fetch_all::<CellDayRow>()
                .await
                .map_err(self.err("read earlier days from recovery_daily"))?;
            add_days(&mut found, level, rows);
        }
        // Every day with merchant-days has a city row.
        let city = Cell::new(Level::City, String::new(), String::new(), String::new());
        let written = found.get(&city);
        let active = self
            .client
            .query(&format!(
                "SELECT DISTINCT toUInt16(day) FROM merchant_activity_daily WHERE {}",
                day_ranges("day", &[(from, to)], 0)
            ))
            .fetch_all::<u16>()
            .await
            .map_err(self.err("read the days of merchant_activity_daily"))?;
        let complete = active
            .iter()
            .all(|d| written.is_some_and(|w| w.contains_key(&Day::from(*d))));
        if complete {
            for (cell, series) in found {
                days.entry(cell).or_default().extend(series);
            }
        }
        Ok(complete)
    }

    /// Computes each producer's and each cell's coverage on days
    /// `from ..= to` and writes them to `producer_coverage_daily` and
    /// `cell_coverage_daily`.
    async fn roll_up_coverage(
        &self,
        params: &Params,
        kota_of: &[(String, String)],
        from: Day,
        to: Day,
        version: u64,
        computed_at: u32,
    ) -> Result<(), StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Fetched {
            producer_id: String,
            district_code: String,
            sector: String,
            day: u16,
            txns: u64,
            amount: u64,
        }
        #[derive(clickhouse::Row, Serialize)]
        struct CoverageRow {
            day: u16,
            producer_id: String,
            txn_count: u64,
            amount_idr_sum: u64,
            norm_txn_count: Option<f64>,
            coverage: Option<f64>,
            outage: u8,
            version: u64,
            computed_at: u32,
        }
        // Each producer's activity per district x sector cell and day.
        let fetched = self
            .client
            .query(
                "SELECT p.producer_id AS producer_id, d.district_code AS district_code, d.sector AS sector, \
                 d.day AS day, toUInt64(sum(d.txn_count)) AS txns, toUInt64(sum(d.amount_idr_sum)) AS amount \
                 FROM (SELECT day, district_code, sector, merchant_key, txn_count, amount_idr_sum \
                       FROM merchant_activity_daily FINAL WHERE day >= toDate(?) AND day <= toDate(?)) AS d \
                 ANY INNER JOIN (SELECT merchant_key, producer_id FROM merchant_producer FINAL) AS p \
                 USING merchant_key GROUP BY producer_id, district_code, sector, day",
            )
            .bind(pulih_metrics::format_day(from - coverage::NORM_HISTORY))
            .bind(pulih_metrics::format_day(to))
            .fetch_all::<Fetched>()
            .await
            .map_err(self.err("read producer activity"))?;
        let days: Vec<ProducerDay> = fetched
            .iter()
            .map(|f| ProducerDay {
                producer: f.producer_id.clone(),
                day: Day::from(f.day),
                txns: f.txns,
                amount: f.amount,
            })
            .collect();
        let rows: Vec<CoverageRow> = coverage::coverage(&days, from, to, params)
            .into_iter()
            .map(|c| CoverageRow {
                day: u16::try_from(c.day).unwrap_or(0),
                producer_id: c.producer,
                txn_count: c.txns,
                amount_idr_sum: c.amount,
                norm_txn_count: c.norm_txns,
                coverage: c.ratio,
                outage: u8::from(c.outage),
                version,
                computed_at,
            })
            .collect();
        let analytics = migrate::analytics_database(&self.database);
        self.insert_rows_into(&analytics, "producer_coverage_daily", &rows)
            .await?;

        #[derive(clickhouse::Row, Serialize)]
        struct CellRow {
            day: u16,
            level: i8,
            kota_code: String,
            district_code: String,
            sector: String,
            expected_txn_count: f64,
            missing_share: f64,
            incomplete: u8,
            version: u64,
            computed_at: u32,
        }
        let outages: HashSet<(String, Day)> = rows
            .iter()
            .filter(|r| r.outage == 1)
            .map(|r| (r.producer_id.clone(), Day::from(r.day)))
            .collect();
        let kota: HashMap<&str, &str> = kota_of
            .iter()
            .map(|(d, k)| (d.as_str(), k.as_str()))
            .collect();
        let cells: Vec<coverage::ProducerCellDay> = fetched
            .into_iter()
            .map(|f| coverage::ProducerCellDay {
                kota: kota
                    .get(f.district_code.as_str())
                    .copied()
                    .unwrap_or("")
                    .to_owned(),
                producer: f.producer_id,
                district: f.district_code,
                sector: f.sector,
                day: Day::from(f.day),
                txns: f.txns,
            })
            .collect();
        let cell_rows: Vec<CellRow> = coverage::cell_coverage(&cells, &outages, from, to, params)
            .into_iter()
            .map(|c| CellRow {
                day: u16::try_from(c.day).unwrap_or(0),
                level: c.cell.level as i8,
                kota_code: c.cell.kota,
                district_code: c.cell.district,
                sector: c.cell.sector,
                expected_txn_count: c.expected_txns,
                missing_share: c.missing_share,
                incomplete: u8::from(c.incomplete),
                version,
                computed_at,
            })
            .collect();
        self.insert_rows_into(&analytics, "cell_coverage_daily", &cell_rows)
            .await
    }

    /// Records a release in the analytics and public databases: complete
    /// days through `data_through` are published, and those from
    /// `provisional_from` on may still be revised.
    pub async fn record_release(
        &self,
        data_through: Day,
        provisional_from: Day,
    ) -> Result<(), StoreError> {
        #[derive(clickhouse::Row, Serialize)]
        struct Release {
            released_at: u32,
            data_through: u16,
            provisional_from: u16,
        }
        let row = [Release {
            released_at: (pulih_event::calendar::now_ms() / 1000) as u32,
            data_through: u16::try_from(data_through).unwrap_or(0),
            provisional_from: u16::try_from(provisional_from).unwrap_or(0),
        }];
        for database in [
            migrate::analytics_database(&self.database),
            migrate::public_database(&self.database),
        ] {
            self.insert_rows_into(&database, "releases", &row).await?;
        }
        Ok(())
    }

    /// Recomputes `recovery_daily` for days `from ..= to` (default: all
    /// days with data) in the analytics and public databases. `kota_of`
    /// maps each district code to its kota code.
    ///
    /// Days are computed in chunks, in order, each read once from
    /// `merchant_activity_daily`; the year of history a chunk needs is
    /// carried over from the chunks before it. A run starting after the
    /// first day with data reads that history from the rows an earlier
    /// rollup wrote, or from `merchant_activity_daily` when those miss a
    /// day that has merchant-days.
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
        if from > to {
            return Ok(report);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let version = now.as_millis() as u64;
        let computed_at = now.as_secs() as u32;
        let analytics = migrate::analytics_database(&self.database);
        let public = migrate::public_database(&self.database);
        let kota = kota_expr(kota_of);
        let history = pulih_metrics::HISTORY_DAYS;

        // The baseline: its days and distinct merchants, once.
        let baseline_days = (params.baseline_start - 2, params.baseline_end);
        let mut input = Input {
            first_day: first,
            ..Input::default()
        };
        self.load_fresh(&kota, &[baseline_days], &mut input.days)
            .await?;
        for level in Level::ALL {
            for r in self.baseline_totals(level, &kota, params).await? {
                input.baseline.insert(
                    Cell::new(level, r.kota, r.district, r.sector),
                    BaselineTotals {
                        merchants: r.merchants as u32,
                        txns: r.txns,
                    },
                );
            }
        }
        if from > first {
            let earlier = (from - history, from - 1);
            if !self
                .load_history(earlier.0, earlier.1, &mut input.days)
                .await?
            {
                self.load_fresh(&kota, &[earlier], &mut input.days).await?;
            }
        }

        let mut start = from;
        while start <= to {
            let end = (start + CHUNK_DAYS - 1).min(to);
            self.load_fresh(&kota, &[(start, end)], &mut input.days)
                .await?;
            input.ranges = vec![(start - history, end), baseline_days];
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
            self.roll_up_coverage(params, kota_of, start, end, version, computed_at)
                .await?;
            // The first release of each public value is kept (a revision
            // of the day later does not replace it).
            self.client
                .query(&format!(
                    "INSERT INTO `{analytics}`.recovery_daily_first_release \
                     SELECT *, bitNot(version) FROM `{public}`.recovery_daily FINAL \
                     WHERE day >= toDate(?) AND day <= toDate(?)"
                ))
                .bind(pulih_metrics::format_day(start))
                .bind(pulih_metrics::format_day(end))
                .execute()
                .await
                .map_err(self.err("keep the first release"))?;
            tracing::debug!(
                message = "Rolled up recovery metrics.",
                from = %pulih_metrics::format_day(start),
                to = %pulih_metrics::format_day(end),
                rows = rows.len()
            );
            // Keep what the next chunk needs.
            let keep = end + 1 - history;
            for series in input.days.values_mut() {
                series.retain(|d, _| *d >= keep || (baseline_days.0..=baseline_days.1).contains(d));
            }
            start = end + 1;
        }
        Ok(report)
    }
}

/// The district → kota pairs of a set of reference districts.
pub fn kota_map<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<(String, String)> {
    let map: BTreeMap<&str, &str> = pairs.into_iter().collect();
    map.into_iter().map(|(d, k)| (d.into(), k.into())).collect()
}
