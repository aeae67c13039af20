//! `recovery_daily`: reads daily totals per cell from
//! `merchant_activity_daily_by_time`, computes the metrics with `pulih-metrics`,
//! writes the analysts' table and the candidates for the next public
//! release, and makes the public releases (once a day).

use std::collections::{BTreeMap, HashMap, HashSet};

use pulih_metrics::coverage::{self, ProducerDay};
use pulih_metrics::{
    format_day, BaselineTotals, Cell, Day, DayTotals, Input, Level, Metrics, Params, Published,
};
use serde::{Deserialize, Serialize};

use crate::{migrate, quote, Store, StoreError};

/// Days computed per round trip; each round also reads a year of history.
const CHUNK_DAYS: Day = 92;

/// Cell-days one round of the rollup computes at most. A round holds every
/// cell's year of history densely and its results as rows: Jakarta's 924
/// cells compute `CHUNK_DAYS` a round; Indonesia's 153 300 six days, where
/// 92 took more than 14 GB (docs/benchmarks.md, "At the national cell
/// count").
const CELL_DAYS_PER_ROUND: usize = 1_000_000;

/// Cell-days one query of daily totals reads at most: it groups this many
/// (district, sector, day) sets of distinct merchants. Jakarta's 924 cells
/// take a round's `CHUNK_DAYS` in one query; Indonesia's 150 000 take a
/// day a query, since 92 days of them went over ClickHouse's 4 GB for the
/// query (docs/benchmarks.md, "At the national cell count").
const CELL_DAYS_PER_QUERY: usize = 100_000;

/// Days of `districts` kecamatan's cells (21 sectors each) that make at
/// most `cell_days` cell-days: at least one, at most `CHUNK_DAYS`.
fn days_within(cell_days: usize, districts: usize) -> Day {
    let cells = districts.max(1) * pulih_event::Sector::all().count();
    ((cell_days / cells) as Day).clamp(1, CHUNK_DAYS)
}

/// Days one query of daily totals reads for `districts` kecamatan.
fn days_per_query(districts: usize) -> Day {
    days_within(CELL_DAYS_PER_QUERY, districts)
}

/// Days before a day whose merchants count as open on it.
const OPEN_LOOKBACK: Day = 2;

/// Merchant-days one query of daily totals reads at most, counting the two
/// days before its first that merchants open looks back on. ClickHouse
/// holds each of them three times in distinct counts, about 100 bytes a
/// merchant-day: at Jakarta's volume (4 million merchant-days a day) 11
/// days in one query went over its 4 GB for a query (docs/benchmarks.md,
/// "At Jakarta's volume"). A day over the limit on its own is read alone.
const MERCHANT_DAYS_PER_QUERY: u64 = 8_000_000;

/// `ranges` cut into pieces of at most `days` days each whose rows
/// (`rows` per day; a day without an entry has none), with those of the
/// `widen` days before each piece, add up to at most `max_rows`; a day is
/// never cut, so a piece of one day may hold more.
fn cut_by_rows(
    ranges: &[(Day, Day)],
    days: Day,
    widen: Day,
    rows: &BTreeMap<Day, u64>,
    max_rows: u64,
) -> Vec<(Day, Day)> {
    let rows_in = |a: Day, b: Day| -> u64 { rows.range(a..=b).map(|(_, n)| n).sum() };
    let mut out = Vec::new();
    for &(a, b) in ranges {
        let mut start = a;
        while start <= b {
            let mut end = start;
            while end < b && end - start + 1 < days && rows_in(start - widen, end + 1) <= max_rows {
                end += 1;
            }
            out.push((start, end));
            start = end + 1;
        }
    }
    out
}

/// Days one round of the rollup computes for `districts` kecamatan.
fn days_per_round(districts: usize) -> Day {
    days_within(CELL_DAYS_PER_ROUND, districts)
}

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
/// times faster than `argMax` grouping (docs/benchmarks.md). With `linked`
/// (after a rotation of the pseudonymisation secret), each key is replaced
/// by its canonical key (`merchant_key_canonical`) and a merchant's rows
/// under two keys on one day are added up, so it counts once.
fn merchant_days(filter: &str, linked: bool) -> String {
    let rows = format!(
        "SELECT day, district_code, sector, merchant_key, txn_count, amount_idr_sum \
         FROM merchant_activity_daily_by_time FINAL WHERE {filter}"
    );
    if !linked {
        return rows;
    }
    format!(
        "SELECT day, district_code, sector, merchant AS merchant_key, \
         sum(t) AS txn_count, sum(a) AS amount_idr_sum \
         FROM (SELECT day, district_code, sector, if(linked = 1, canonical_key, merchant_key) AS merchant, \
               txn_count AS t, amount_idr_sum AS a \
               FROM ({rows}) \
               ANY LEFT JOIN (SELECT merchant_key, canonical_key, toUInt8(1) AS linked \
                              FROM merchant_key_canonical FINAL) USING merchant_key) \
         GROUP BY day, district_code, sector, merchant"
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
    top1: u64,
    top2: u64,
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
            top_amounts: [r.top1, r.top2],
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
    amount_idr_top1: u64,
    amount_idr_top2: u64,
    incomplete: u8,
    covered_days: u8,
    amount_idr_ma7: Option<f64>,
    txn_count_ma7: Option<f64>,
    merchants_open_ma7: Option<f64>,
    amount_idr_baseline: Option<f64>,
    txn_count_baseline: Option<f64>,
    merchants_open_baseline: Option<f64>,
    amount_idr_index: Option<f64>,
    txn_count_index: Option<f64>,
    merchants_open_index: Option<f64>,
    amount_idr_yoy: Option<f64>,
    txn_count_yoy: Option<f64>,
    merchants_open_yoy: Option<f64>,
    amount_idr_yoy_aligned: Option<f64>,
    txn_count_yoy_aligned: Option<f64>,
    merchants_open_yoy_aligned: Option<f64>,
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

/// One row of `<database>_analytics.release_candidate`, in column order.
#[derive(Debug, Clone, clickhouse::Row, Serialize)]
struct CandidateRow {
    day: u16,
    level: i8,
    kota_code: String,
    district_code: String,
    sector: String,
    withheld: u8,
    incomplete: Option<u8>,
    amount_idr_index: Option<f64>,
    txn_count_index: Option<f64>,
    merchants_open_index: Option<f64>,
    amount_idr_yoy: Option<f64>,
    txn_count_yoy: Option<f64>,
    merchants_open_yoy: Option<f64>,
    amount_idr_yoy_aligned: Option<f64>,
    txn_count_yoy_aligned: Option<f64>,
    merchants_open_yoy_aligned: Option<f64>,
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
            amount_idr_top1: m.totals.top_amounts[0],
            amount_idr_top2: m.totals.top_amounts[1],
            incomplete: u8::from(m.incomplete),
            covered_days: m.covered_days,
            amount_idr_ma7: m.ma7[0],
            txn_count_ma7: m.ma7[1],
            merchants_open_ma7: m.ma7[2],
            amount_idr_baseline: m.baseline[0],
            txn_count_baseline: m.baseline[1],
            merchants_open_baseline: m.baseline[2],
            amount_idr_index: m.index[0],
            txn_count_index: m.index[1],
            merchants_open_index: m.index[2],
            amount_idr_yoy: m.yoy[0],
            txn_count_yoy: m.yoy[1],
            merchants_open_yoy: m.yoy[2],
            amount_idr_yoy_aligned: m.yoy_aligned[0],
            txn_count_yoy_aligned: m.yoy_aligned[1],
            merchants_open_yoy_aligned: m.yoy_aligned[2],
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

impl CandidateRow {
    fn new(p: Published, version: u64, computed_at: u32) -> CandidateRow {
        CandidateRow {
            day: p.day as u16,
            level: p.cell.level as i8,
            kota_code: p.cell.kota,
            district_code: p.cell.district,
            sector: p.cell.sector,
            withheld: u8::from(p.withheld),
            incomplete: p.incomplete.map(u8::from),
            amount_idr_index: p.index[0],
            txn_count_index: p.index[1],
            merchants_open_index: p.index[2],
            amount_idr_yoy: p.yoy[0],
            txn_count_yoy: p.yoy[1],
            merchants_open_yoy: p.yoy[2],
            amount_idr_yoy_aligned: p.yoy_aligned[0],
            txn_count_yoy_aligned: p.yoy_aligned[1],
            merchants_open_yoy_aligned: p.yoy_aligned[2],
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
    /// First and last day of the rows of `merchant_activity_daily_by_time` that
    /// `filter` selects, if any.
    async fn extent(&self, filter: &str) -> Result<Option<(Day, Day)>, StoreError> {
        let e = self
            .client
            .query(&format!(
                "SELECT toUInt16(min(day)) AS first, toUInt16(max(day)) AS last, count() AS rows \
                 FROM merchant_activity_daily_by_time WHERE {filter}"
            ))
            .fetch_one::<Extent>()
            .await
            .map_err(self.err("read the days of merchant_activity_daily_by_time"))?;
        Ok((e.rows > 0).then_some((Day::from(e.first), Day::from(e.last))))
    }

    /// First and last day of `merchant_activity_daily_by_time`, if it has rows.
    pub async fn activity_days(&self) -> Result<Option<(Day, Day)>, StoreError> {
        self.extent("1").await
    }

    /// The first day of `merchant_activity_daily_by_time` with a row written at or
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
        linked: bool,
    ) -> Result<Vec<CellDayRow>, StoreError> {
        let [k, d, s] = group_exprs(level, kota);
        let sql = format!(
            "SELECT toUInt16(day + k) AS d, {k} AS kota, {d} AS district, {s} AS sector, \
             sumIf(txn_count, k = 0) AS txns, sumIf(amount_idr_sum, k = 0) AS amount, \
             uniqExactIf(merchant_key, k = 0) AS active, uniqExact(merchant_key) AS open, \
             arrayReverseSort(groupArrayIf(amount_idr_sum, k = 0))[1] AS top1, \
             arrayReverseSort(groupArrayIf(amount_idr_sum, k = 0))[2] AS top2 \
             FROM ({}) ARRAY JOIN [0, 1, 2] AS k \
             WHERE {} \
             GROUP BY d, kota, district, sector",
            merchant_days(&day_ranges("day", ranges, OPEN_LOOKBACK), linked),
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
        linked: bool,
    ) -> Result<Vec<BaselineRow>, StoreError> {
        let [k, d, s] = group_exprs(level, kota);
        let sql = format!(
            "SELECT {k} AS kota, {d} AS district, {s} AS sector, \
             uniqExact(merchant_key) AS merchants, sum(txn_count) AS txns \
             FROM ({}) GROUP BY kota, district, sector",
            merchant_days(
                &day_ranges("day", &[(params.baseline_start, params.baseline_end)], 0),
                linked
            ),
        );
        self.client
            .query(&sql)
            .fetch_all::<BaselineRow>()
            .await
            .map_err(self.err(format!("read baseline totals per {}", level.name())))
    }

    /// Rows of `merchant_activity_daily_by_time` on each day of `span`
    /// (versions not yet merged included, so at least the merchant-days).
    async fn merchant_days_per_day(
        &self,
        span: (Day, Day),
    ) -> Result<BTreeMap<Day, u64>, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct PerDay {
            d: u16,
            rows: u64,
        }
        let per_day = self
            .client
            .query(&format!(
                "SELECT toUInt16(day) AS d, count() AS rows \
                 FROM merchant_activity_daily_by_time WHERE {} GROUP BY day",
                day_ranges("day", &[span], 0)
            ))
            .fetch_all::<PerDay>()
            .await
            .map_err(self.err("count the merchant-days of each day"))?;
        Ok(per_day
            .into_iter()
            .map(|r| (Day::from(r.d), r.rows))
            .collect())
    }

    /// Fresh daily totals of every level on the days in `ranges`, from
    /// `merchant_activity_daily_by_time`.
    /// `districts` is the number of kecamatan: it sets how many days one
    /// query reads.
    async fn load_fresh(
        &self,
        kota: &str,
        districts: usize,
        ranges: &[(Day, Day)],
        linked: bool,
        days: &mut HashMap<Cell, BTreeMap<Day, DayTotals>>,
    ) -> Result<(), StoreError> {
        let Some(span) = ranges
            .iter()
            .map(|&(a, _)| a - OPEN_LOOKBACK)
            .min()
            .zip(ranges.iter().map(|&(_, b)| b).max())
        else {
            return Ok(());
        };
        let rows = self.merchant_days_per_day(span).await?;
        let pieces = cut_by_rows(
            ranges,
            days_per_query(districts),
            OPEN_LOOKBACK,
            &rows,
            MERCHANT_DAYS_PER_QUERY,
        );
        for range in pieces {
            for level in Level::ALL {
                let rows = self.cell_days(level, kota, &[range], linked).await?;
                add_days(days, level, rows);
            }
        }
        Ok(())
    }

    /// Computes every linked merchant key's canonical key (the oldest key
    /// its links in `merchant_key_link` lead to) into
    /// `merchant_key_canonical`, when links were added since; returns
    /// whether any key is linked.
    async fn refresh_canonical(&self, version: u64) -> Result<bool, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Link {
            merchant_key: [u8; 32],
            previous_key: [u8; 32],
        }
        #[derive(clickhouse::Row, Serialize)]
        struct Canonical {
            merchant_key: [u8; 32],
            canonical_key: [u8; 32],
            version: u64,
        }
        let links = self
            .client
            .query("SELECT merchant_key, previous_key FROM merchant_key_link FINAL")
            .fetch_all::<Link>()
            .await
            .map_err(self.err("read merchant_key_link"))?;
        if links.is_empty() {
            return Ok(false);
        }
        let written = self
            .client
            .query("SELECT count() FROM merchant_key_canonical FINAL")
            .fetch_one::<u64>()
            .await
            .map_err(self.err("read merchant_key_canonical"))?;
        if written == links.len() as u64 {
            return Ok(true);
        }
        let previous: HashMap<[u8; 32], [u8; 32]> = links
            .iter()
            .map(|l| (l.merchant_key, l.previous_key))
            .collect();
        let rows: Vec<Canonical> = links
            .iter()
            .map(|l| {
                // Follow the links back; a cycle (two rotations that reused
                // a secret) stops after as many steps as there are links.
                let mut key = l.merchant_key;
                for _ in 0..previous.len() {
                    match previous.get(&key) {
                        Some(p) if *p != key => key = *p,
                        _ => break,
                    }
                }
                Canonical {
                    merchant_key: l.merchant_key,
                    canonical_key: key,
                    version,
                }
            })
            .collect();
        self.insert_rows("merchant_key_canonical", &rows).await?;
        Ok(true)
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
                 toUInt64(ifNull(merchants_open, 0)) AS open, \
                 amount_idr_top1 AS top1, amount_idr_top2 AS top2 \
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
                "SELECT DISTINCT toUInt16(day) FROM merchant_activity_daily_by_time WHERE {}",
                day_ranges("day", &[(from, to)], 0)
            ))
            .fetch_all::<u16>()
            .await
            .map_err(self.err("read the days of merchant_activity_daily_by_time"))?;
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

    /// The cell-days of `from ..= to` that an earlier rollup found
    /// incomplete (`cell_coverage_daily`).
    async fn load_incomplete(
        &self,
        from: Day,
        to: Day,
    ) -> Result<HashSet<(Cell, Day)>, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Row {
            d: u16,
            level: i8,
            kota_code: String,
            district_code: String,
            sector: String,
        }
        let rows = self
            .client
            .query(&format!(
                "SELECT toUInt16(day) AS d, toInt8(level) AS level, kota_code, district_code, sector \
                 FROM `{}`.cell_coverage_daily FINAL WHERE incomplete = 1 AND {}",
                migrate::analytics_database(&self.database),
                day_ranges("day", &[(from, to)], 0)
            ))
            .fetch_all::<Row>()
            .await
            .map_err(self.err("read earlier coverage from cell_coverage_daily"))?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                let level = Level::ALL.into_iter().find(|l| *l as i8 == r.level)?;
                let cell = Cell::new(level, r.kota_code, r.district_code, r.sector);
                Some((cell, Day::from(r.d)))
            })
            .collect())
    }

    /// Computes each producer's and each cell's coverage on days
    /// `from ..= to`, writes them to `producer_coverage_daily` and
    /// `cell_coverage_daily`, and returns the incomplete cell-days.
    async fn roll_up_coverage(
        &self,
        params: &Params,
        kota_of: &[(String, String)],
        from: Day,
        to: Day,
        version: u64,
        computed_at: u32,
    ) -> Result<HashSet<(Cell, Day)>, StoreError> {
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
                       FROM merchant_activity_daily_by_time FINAL WHERE day >= toDate(?) AND day <= toDate(?)) AS d \
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
        let computed = coverage::cell_coverage(&cells, &outages, from, to, params);
        let incomplete = computed
            .iter()
            .filter(|c| c.incomplete)
            .map(|c| (c.cell.clone(), c.day))
            .collect();
        let cell_rows: Vec<CellRow> = computed
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
            .await?;
        Ok(incomplete)
    }

    /// Each producer's coverage on `day` (`producer_coverage_daily`):
    /// its ratio to its norm, relative to the median producer's (`None`
    /// while it is too small or too new to be judged), and whether it had
    /// an outage.
    pub async fn producer_coverage_on(
        &self,
        day: Day,
    ) -> Result<Vec<(String, Option<f64>, bool)>, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Row {
            producer_id: String,
            coverage: Option<f64>,
            outage: u8,
        }
        let rows = self
            .client
            .query(&format!(
                "SELECT producer_id, coverage, outage FROM `{}`.producer_coverage_daily FINAL \
                 WHERE day = toDate(?) ORDER BY producer_id",
                migrate::analytics_database(&self.database)
            ))
            .bind(format_day(day))
            .fetch_all::<Row>()
            .await
            .map_err(self.err("read producer_coverage_daily"))?;
        Ok(rows
            .into_iter()
            .map(|r| (r.producer_id, r.coverage, r.outage != 0))
            .collect())
    }

    /// Records in the analytics database how far the metrics are complete:
    /// days through `data_through`, those from `provisional_from` on may
    /// still be revised. Written whenever either changes.
    pub async fn record_release(
        &self,
        data_through: Day,
        provisional_from: Day,
    ) -> Result<(), StoreError> {
        let row = [Release {
            released_at: (pulih_event::calendar::now_ms() / 1000) as u32,
            data_through: u16::try_from(data_through).unwrap_or(0),
            provisional_from: u16::try_from(provisional_from).unwrap_or(0),
        }];
        let analytics = migrate::analytics_database(&self.database);
        self.insert_rows_into(&analytics, "releases", &row).await
    }

    /// Writes the calendar to `calendar` in the analytics and public
    /// databases, replacing what an earlier run wrote.
    pub async fn load_calendar(
        &self,
        days: &[pulih_event::holidays::CalendarDay],
    ) -> Result<(), StoreError> {
        #[derive(clickhouse::Row, Serialize)]
        struct Row {
            day: u16,
            holiday: String,
            cuti_bersama: u8,
            ramadan: u8,
            lebaran_day: Option<i16>,
            imlek_day: Option<i16>,
            payday: u8,
            month_end: u8,
            restriction: String,
            version: u64,
        }
        let version = pulih_event::calendar::now_ms() as u64;
        let rows: Vec<Row> = days
            .iter()
            .filter_map(|d| {
                Some(Row {
                    day: u16::try_from(d.day).ok()?,
                    holiday: d.holiday.clone(),
                    cuti_bersama: u8::from(d.cuti_bersama),
                    ramadan: u8::from(d.ramadan),
                    lebaran_day: d.lebaran_day,
                    imlek_day: d.imlek_day,
                    payday: u8::from(d.payday),
                    month_end: u8::from(d.month_end),
                    restriction: d.restriction.clone(),
                    version,
                })
            })
            .collect();
        self.insert_into_analytics_and_public("calendar", &rows)
            .await
    }

    /// Writes reference rows, which are public, to `table` in both the
    /// analytics and the public database.
    async fn insert_into_analytics_and_public<R>(
        &self,
        table: &str,
        rows: &[R],
    ) -> Result<(), StoreError>
    where
        R: clickhouse::RowOwned + clickhouse::RowWrite,
    {
        for database in [
            migrate::analytics_database(&self.database),
            migrate::public_database(&self.database),
        ] {
            self.insert_rows_into(&database, table, rows).await?;
        }
        Ok(())
    }

    /// Writes the names of the reference tables' kecamatan, kota and KBLI
    /// categories to `districts` and `sectors` in the analytics and public
    /// databases, replacing what an earlier run wrote.
    pub async fn load_cell_names(
        &self,
        reference: &pulih_event::Reference,
    ) -> Result<(), StoreError> {
        #[derive(clickhouse::Row, Serialize)]
        struct DistrictRow {
            district_code: String,
            district_name: String,
            kota_code: String,
            kota_name: String,
            version: u64,
        }
        #[derive(clickhouse::Row, Serialize)]
        struct SectorRow {
            sector: String,
            name_id: String,
            name_en: String,
            version: u64,
        }
        let version = pulih_event::calendar::now_ms() as u64;
        let districts: Vec<DistrictRow> = reference
            .districts()
            .iter()
            .map(|d| DistrictRow {
                district_code: d.code.clone(),
                district_name: d.name.clone(),
                kota_code: d.regency_code.clone(),
                kota_name: d.regency_name.clone(),
                version,
            })
            .collect();
        let sectors: Vec<SectorRow> = reference
            .categories()
            .iter()
            .map(|c| SectorRow {
                sector: c.sector.as_str().to_owned(),
                name_id: c.name_id.clone(),
                name_en: c.name_en.clone(),
                version,
            })
            .collect();
        self.insert_into_analytics_and_public("districts", &districts)
            .await?;
        self.insert_into_analytics_and_public("sectors", &sectors)
            .await
    }

    /// The latest public release: its vintage and when it was made.
    pub async fn last_public_release(&self) -> Result<Option<(Day, u32)>, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Last {
            last_vintage: u16,
            last_released_at: u32,
            releases: u64,
        }
        let last = self
            .client
            .query(&format!(
                "SELECT toUInt16(max(vintage)) AS last_vintage, \
                 toUInt32(argMax(released_at, vintage)) AS last_released_at, count() AS releases \
                 FROM `{}`.releases",
                migrate::public_database(&self.database)
            ))
            .fetch_one::<Last>()
            .await
            .map_err(self.err("read the last public release"))?;
        Ok((last.releases > 0).then_some((Day::from(last.last_vintage), last.last_released_at)))
    }

    /// Makes the public release of Jakarta day `vintage`, unless one was
    /// made that day: every candidate row of days through `data_through`
    /// computed since the last release is added to
    /// `<database>_public.recovery_vintages` under this vintage, then the
    /// release is recorded, which makes its rows visible. Returns whether
    /// it released. A release interrupted before it is recorded is made
    /// again, whole, by the next call.
    pub async fn release_public(
        &self,
        vintage: Day,
        data_through: Day,
        provisional_from: Day,
    ) -> Result<bool, StoreError> {
        let last = self.last_public_release().await?;
        if last.is_some_and(|(v, _)| v >= vintage) {
            return Ok(false);
        }
        let since = last.map_or(0, |(_, at)| at);
        let public = migrate::public_database(&self.database);
        let analytics = migrate::analytics_database(&self.database);
        let values = [
            "amount_idr_index, txn_count_index, merchants_open_index",
            "amount_idr_yoy, txn_count_yoy, merchants_open_yoy",
            "amount_idr_yoy_aligned, txn_count_yoy_aligned, merchants_open_yoy_aligned",
            "amount_idr_wow, txn_count_wow, merchants_open_wow",
            "amount_idr_chg4w, txn_count_chg4w, merchants_open_chg4w",
        ]
        .join(", ");
        // The first release carries every day since the start of the data:
        // years of cells. It goes in quarters, so that `FINAL` (partitions
        // are months) never holds more than one in memory at a time.
        #[derive(clickhouse::Row, serde::Deserialize)]
        struct First {
            first: u16,
            rows: u64,
        }
        let first = self
            .client
            .query(&format!(
                "SELECT toUInt16(min(day)) AS first, count() AS rows \
                 FROM `{analytics}`.release_candidate \
                 WHERE day <= toDate(?) AND computed_at >= toDateTime(?)"
            ))
            .bind(format_day(data_through))
            .bind(since)
            .fetch_one::<First>()
            .await
            .map_err(self.err("find the days of the public release"))?;
        let mut from = if first.rows == 0 {
            data_through + 1
        } else {
            Day::from(first.first)
        };
        while from <= data_through {
            let to = (from + CHUNK_DAYS - 1).min(data_through);
            self.client
                .query(&format!(
                    "INSERT INTO `{public}`.recovery_vintages \
                     (day, level, kota_code, district_code, sector, vintage, withheld, incomplete, {values}) \
                     SELECT day, level, kota_code, district_code, sector, toDate(?) AS vintage, withheld, incomplete, {values} \
                     FROM `{analytics}`.release_candidate FINAL \
                     WHERE day >= toDate(?) AND day <= toDate(?) AND computed_at >= toDateTime(?)"
                ))
                .bind(format_day(vintage))
                .bind(format_day(from))
                .bind(format_day(to))
                .bind(since)
                .execute()
                .await
                .map_err(self.err("write the public release"))?;
            from = to + 1;
        }
        #[derive(clickhouse::Row, Serialize)]
        struct PublicRelease {
            vintage: u16,
            released_at: u32,
            data_through: u16,
            provisional_from: u16,
        }
        let row = [PublicRelease {
            vintage: u16::try_from(vintage).unwrap_or(0),
            released_at: (pulih_event::calendar::now_ms() / 1000) as u32,
            data_through: u16::try_from(data_through).unwrap_or(0),
            provisional_from: u16::try_from(provisional_from).unwrap_or(0),
        }];
        self.insert_rows_into(&public, "releases", &row).await?;
        Ok(true)
    }

    /// Recomputes `recovery_daily` for days `from ..= to` (default: all
    /// days with data) in the analytics database, with each cell's
    /// coverage, and the candidates for the next public release: a row for
    /// every cell of `cells` (and every cell with data) each day.
    /// `kota_of` maps each district code to its kota code.
    ///
    /// Days are computed in chunks of at most [`CELL_DAYS_PER_ROUND`]
    /// cell-days, in order, each read once from
    /// `merchant_activity_daily_by_time`; the year of history a chunk needs is
    /// carried over from the chunks before it. A run starting after the
    /// first day with data reads that history from the rows an earlier
    /// rollup wrote, or from `merchant_activity_daily_by_time` when those miss a
    /// day that has merchant-days.
    pub async fn rollup(
        &self,
        params: &Params,
        kota_of: &[(String, String)],
        cells: &[Cell],
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
        let kota = kota_expr(kota_of);
        let history = pulih_metrics::HISTORY_DAYS;
        let linked = self.refresh_canonical(version).await?;

        // The baseline: its days, coverage and distinct merchants, once.
        let baseline_days = (params.baseline_start - 2, params.baseline_end);
        let mut input = Input {
            first_day: first,
            ..Input::default()
        };
        self.load_fresh(
            &kota,
            kota_of.len(),
            &[baseline_days],
            linked,
            &mut input.days,
        )
        .await?;
        if params.baseline_end >= first {
            input.incomplete = self
                .roll_up_coverage(
                    params,
                    kota_of,
                    params.baseline_start.max(first),
                    params.baseline_end,
                    version,
                    computed_at,
                )
                .await?;
        }
        for level in Level::ALL {
            for r in self.baseline_totals(level, &kota, params, linked).await? {
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
                self.load_fresh(&kota, kota_of.len(), &[earlier], linked, &mut input.days)
                    .await?;
            }
            let before = self.load_incomplete(earlier.0, earlier.1).await?;
            input.incomplete.extend(before);
        }

        let round_days = days_per_round(kota_of.len());
        let mut start = from;
        while start <= to {
            let end = (start + round_days - 1).min(to);
            self.load_fresh(
                &kota,
                kota_of.len(),
                &[(start, end)],
                linked,
                &mut input.days,
            )
            .await?;
            let incomplete = self
                .roll_up_coverage(params, kota_of, start, end, version, computed_at)
                .await?;
            input.incomplete.extend(incomplete);
            input.ranges = vec![(start - history, end), baseline_days];
            let rows = pulih_metrics::compute(&input, params, start, end);
            let a: Vec<AnalyticsRow> = rows
                .iter()
                .map(|m| AnalyticsRow::new(m, version, computed_at))
                .collect();
            let p: Vec<CandidateRow> = pulih_metrics::public_rows(&rows, cells, start, end)
                .into_iter()
                .map(|p| CandidateRow::new(p, version, computed_at))
                .collect();
            report.rows += rows.len();
            report.suppressed += rows
                .iter()
                .filter(|m| m.suppression != pulih_metrics::Suppression::None)
                .count();
            self.insert_rows_into(&analytics, "recovery_daily", &a)
                .await?;
            self.insert_rows_into(&analytics, "release_candidate", &p)
                .await?;
            tracing::debug!(
                message = "Rolled up recovery metrics.",
                from = %pulih_metrics::format_day(start),
                to = %pulih_metrics::format_day(end),
                rows = rows.len()
            );
            // Keep what the next chunk needs.
            let keep = end + 1 - history;
            let in_baseline = |d: &Day| (baseline_days.0..=baseline_days.1).contains(d);
            for series in input.days.values_mut() {
                series.retain(|d, _| *d >= keep || in_baseline(d));
            }
            input
                .incomplete
                .retain(|(_, d)| *d >= keep || in_baseline(d));
            start = end + 1;
        }
        Ok(report)
    }
}

#[derive(clickhouse::Row, Serialize)]
struct Release {
    released_at: u32,
    data_through: u16,
    provisional_from: u16,
}

/// The district → kota pairs of a set of reference districts.
pub fn kota_map<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<(String, String)> {
    let map: BTreeMap<&str, &str> = pairs.into_iter().collect();
    map.into_iter().map(|(d, k)| (d.into(), k.into())).collect()
}

#[cfg(test)]
mod query_tests {
    use super::*;

    #[test]
    fn queries_shrink_with_the_cell_count() {
        // Jakarta's 44 kecamatan: a round's days in one query.
        assert_eq!(days_per_query(44), CHUNK_DAYS);
        // 1 000 kecamatan, 21 000 cells: four days.
        assert_eq!(days_per_query(1_000), 4);
        // Indonesia's 7 300: a day, never less.
        assert_eq!(days_per_query(7_300), 1);
        assert_eq!(days_per_query(0), CHUNK_DAYS);
        assert_eq!(days_per_round(44), CHUNK_DAYS);
        assert_eq!(days_per_round(7_300), 6);
        assert_eq!(days_per_round(100_000), 1);
    }

    #[test]
    fn queries_hold_a_bounded_number_of_merchant_days() {
        // Four million merchant-days a day from day 100, none before.
        let rows: BTreeMap<Day, u64> = (100..=120).map(|d| (d, 4_000_000)).collect();
        // With the two days before each piece: day 100 alone reads one day
        // of rows, 100..=101 two; then every day reads three, over the
        // limit of two days' rows, so each is a piece of its own.
        let pieces = cut_by_rows(&[(100, 104)], 92, 2, &rows, 8_000_000);
        assert_eq!(pieces, vec![(100, 101), (102, 102), (103, 103), (104, 104)]);
        // Days without rows before the data go together.
        assert_eq!(
            cut_by_rows(&[(90, 101)], 92, 2, &rows, 8_000_000),
            vec![(90, 101)]
        );
        // The day count still bounds a piece where the rows do not.
        assert_eq!(
            cut_by_rows(&[(1, 10)], 4, 2, &BTreeMap::new(), 8_000_000),
            vec![(1, 4), (5, 8), (9, 10)]
        );
        // A limit no day fits: a day a piece, never none.
        assert_eq!(
            cut_by_rows(&[(100, 102)], 92, 2, &rows, 1),
            vec![(100, 100), (101, 101), (102, 102)]
        );
    }

    #[test]
    fn ranges_are_cut_without_a_gap_or_an_overlap() {
        assert_eq!(
            cut_by_rows(&[(1, 10), (20, 20)], 4, 2, &BTreeMap::new(), 1),
            vec![(1, 4), (5, 8), (9, 10), (20, 20)]
        );
        assert_eq!(
            cut_by_rows(&[(1, 3)], 92, 2, &BTreeMap::new(), 1),
            vec![(1, 3)]
        );
        assert!(cut_by_rows(&[(5, 4)], 1, 2, &BTreeMap::new(), 1).is_empty());
    }
}
