//! Recovery metrics, as pure functions of daily totals.
//!
//! This crate owns the definitions published by pulih, after the
//! Opportunity Insights Economic Tracker: per Jakarta-local day and cell
//! (district × sector, kota × sector, sector, city), revenue, transactions
//! and merchants open (distinct merchants with a transaction in the
//! trailing 3 days); their 7-day moving averages; indices against a
//! baseline period; year-on-year, week-over-week and 4-week changes; the
//! suppression (small cells, dominance, complementary cells) that decides
//! what may be published, and the public row (rounded indices and changes
//! only, for every reference cell); and each producer's coverage
//! (`coverage`), which tells an outage from a downturn: days of incomplete
//! coverage are left out of the 7-day averages. It does no I/O:
//! `pulih-store` reads the daily totals from ClickHouse and writes the rows
//! this crate computes. The definitions are spelled out in
//! `docs/data-model.md`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

pub mod coverage;
mod suppress;

pub use suppress::complementary;

/// A day, counted from 1970-01-01 (ClickHouse's `Date`).
pub type Day = i32;

/// Offset of the year-on-year change: 52 weeks, so weekdays line up.
pub const YEAR_LAG: Day = 364;
/// The longest lag of the holiday-aligned comparison: a moving holiday's
/// date a year before, less its date this year (Imlek moves up to 384
/// days between years, Lebaran about 354).
pub const MAX_ALIGNED_LAG: Day = 390;
/// A 7-day average needs at least this many days of complete coverage;
/// days of incomplete coverage are left out of it, not counted as zeros.
pub const MIN_COVERED_DAYS: u8 = 4;
/// Published indices and changes are rounded to this many decimals.
pub const PUBLIC_DECIMALS: i32 = 2;
/// A cell has a row on day `d` when it had a transaction in `d-27 ..= d`.
pub const ROW_LOOKBACK: Day = 27;
/// Days of history a computation for day `d` reads: the 7-day window one
/// year back, and the row rule and suppression of those days.
pub const HISTORY_DAYS: Day = MAX_ALIGNED_LAG + 6 + ROW_LOOKBACK + 2;

/// `YYYY-MM-DD` to a day number.
pub fn parse_day(s: &str) -> Result<Day, String> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date =
        time::Date::parse(s, format).map_err(|e| format!("{s:?} is not a YYYY-MM-DD date: {e}"))?;
    Ok(date.to_julian_day() - 2_440_588)
}

/// A day number as `YYYY-MM-DD`.
pub fn format_day(day: Day) -> String {
    match time::Date::from_julian_day(day + 2_440_588) {
        Ok(d) => format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day()),
        Err(_) => format!("day {day}"),
    }
}

/// The geographic and sectoral grain of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    DistrictSector = 1,
    KotaSector = 2,
    Sector = 3,
    City = 4,
}

impl Level {
    pub const ALL: [Level; 4] = [
        Level::DistrictSector,
        Level::KotaSector,
        Level::Sector,
        Level::City,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Level::DistrictSector => "district_sector",
            Level::KotaSector => "kota_sector",
            Level::Sector => "sector",
            Level::City => "city",
        }
    }
}

/// One cell: empty strings for the parts its level does not have.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cell {
    pub level: Level,
    pub kota: String,
    pub district: String,
    pub sector: String,
}

impl Cell {
    pub fn new(level: Level, kota: String, district: String, sector: String) -> Cell {
        Cell {
            level,
            kota,
            district,
            sector,
        }
    }

    /// The cell one level up, whose totals include this one's.
    pub fn parent(&self) -> Option<Cell> {
        let (level, kota, district, sector) = match self.level {
            Level::DistrictSector => (Level::KotaSector, &*self.kota, "", &*self.sector),
            Level::KotaSector => (Level::Sector, "", "", &*self.sector),
            Level::Sector => (Level::City, "", "", ""),
            Level::City => return None,
        };
        Some(Cell {
            level,
            kota: kota.into(),
            district: district.into(),
            sector: sector.into(),
        })
    }
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}[{}/{}/{}]",
            self.level.name(),
            self.kota,
            self.district,
            self.sector
        )
    }
}

/// A cell's totals for one day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DayTotals {
    pub amount_idr: u64,
    pub txns: u64,
    /// Distinct merchants with a transaction that day.
    pub merchants_active: u32,
    /// Distinct merchants with a transaction that day or the two before.
    pub merchants_open: u32,
    /// The revenue of the two merchants with the most that day, largest
    /// first (0 where there are fewer), for the dominance rule.
    pub top_amounts: [u64; 2],
}

/// A cell's totals over the whole baseline period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BaselineTotals {
    /// Distinct merchants over the period.
    pub merchants: u32,
    pub txns: u64,
}

/// A holiday whose date moves between years (Lebaran, Imlek), with the
/// days around it that the holiday-aligned comparison matches with the
/// same days around the previous year's date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovingHoliday {
    /// Its date in each year, in order.
    pub dates: Vec<Day>,
    /// Days before and after the date that are aligned.
    pub before: Day,
    pub after: Day,
}

/// Configurable definitions.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub baseline_start: Day,
    pub baseline_end: Day,
    /// A day's cell with fewer distinct merchants is suppressed.
    pub min_merchants: u32,
    /// A day's cell with fewer transactions is suppressed.
    pub min_txns: u64,
    /// The p% dominance rule on revenue: a cell-day is suppressed when its
    /// revenue less its two largest merchants' is below this share of the
    /// largest merchant's (the second largest could then estimate the
    /// largest within p %).
    pub dominance_p: f64,
    /// A producer is judged for outages only when its norm (median of the
    /// same weekday over the previous four weeks) reaches this many
    /// transactions a day.
    pub coverage_min_txns: u64,
    /// A producer below this share of its norm on a day has an outage.
    pub coverage_outage_below: f64,
    /// A cell-day is incomplete when producers in outage carry at least
    /// this share of the transactions it expects.
    pub coverage_incomplete_share: f64,
    /// The holidays the year-on-year comparison aligns on; the first whose
    /// window holds a day decides its comparison day.
    pub moving_holidays: Vec<MovingHoliday>,
}

impl Params {
    /// The Opportunity Insights baseline (four weeks of January 2020) and
    /// thresholds of 3 merchants and 5 transactions.
    pub fn standard() -> Params {
        Params {
            baseline_start: parse_day("2020-01-04").expect("valid date"),
            baseline_end: parse_day("2020-01-31").expect("valid date"),
            min_merchants: 3,
            min_txns: 5,
            dominance_p: 0.1,
            coverage_min_txns: 20,
            coverage_outage_below: 0.5,
            coverage_incomplete_share: 0.1,
            moving_holidays: Vec::new(),
        }
    }

    /// The day `d` is compared with a year earlier: the same day relative
    /// to the previous year's date of a moving holiday when `d` is in its
    /// window, else 364 days (52 weeks) earlier.
    pub fn aligned_day(&self, d: Day) -> Day {
        for h in &self.moving_holidays {
            let Some(&date) = h
                .dates
                .iter()
                .find(|&&x| x - h.before <= d && d <= x + h.after)
            else {
                continue;
            };
            let previous = h
                .dates
                .iter()
                .rev()
                .find(|&&p| (300..=MAX_ALIGNED_LAG).contains(&(date - p)));
            if let Some(&p) = previous {
                return d - date + p;
            }
        }
        d - YEAR_LAG
    }

    fn small(&self, merchants: u32, txns: u64) -> bool {
        merchants < self.min_merchants || txns < self.min_txns
    }

    /// Whether the largest merchant dominates a day's revenue.
    fn dominated(&self, t: &DayTotals) -> bool {
        let [first, second] = t.top_amounts;
        let rest = t.amount_idr.saturating_sub(first).saturating_sub(second);
        (rest as f64) < self.dominance_p * first as f64
    }

    fn suppression(&self, t: &DayTotals) -> Suppression {
        if self.small(t.merchants_active, t.txns) {
            Suppression::SmallCell
        } else if self.dominated(t) {
            Suppression::Dominance
        } else {
            Suppression::None
        }
    }
}

/// What the computation reads: daily totals of every cell over the days the
/// caller fetched, and baseline totals.
#[derive(Debug, Clone, Default)]
pub struct Input {
    /// First day with any data at all; earlier days are unknown, not zero.
    pub first_day: Day,
    /// Inclusive day ranges the totals cover; a day in a range without an
    /// entry had no transactions.
    pub ranges: Vec<(Day, Day)>,
    pub days: HashMap<Cell, BTreeMap<Day, DayTotals>>,
    pub baseline: HashMap<Cell, BaselineTotals>,
    /// Cell-days whose coverage is incomplete (`coverage::cell_coverage`):
    /// producers in outage carry part of their activity, so their totals
    /// are left out of 7-day averages and baselines.
    pub incomplete: HashSet<(Cell, Day)>,
}

impl Input {
    fn covers(&self, day: Day) -> bool {
        day >= self.first_day && self.ranges.iter().any(|&(a, b)| a <= day && day <= b)
    }

    /// Whether measure `m` of day `day` is known: merchants open also
    /// needs the two days before.
    fn knows(&self, m: Measure, day: Day) -> bool {
        match m {
            Measure::MerchantsOpen => self.covers(day) && day - 2 >= self.first_day,
            _ => self.covers(day),
        }
    }
}

impl DayTotals {
    fn measure(&self, m: Measure) -> f64 {
        match m {
            Measure::Amount => self.amount_idr as f64,
            Measure::Txns => self.txns as f64,
            Measure::MerchantsOpen => f64::from(self.merchants_open),
        }
    }
}

/// The three measures every row carries, in this order in the arrays below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    Amount = 0,
    Txns = 1,
    MerchantsOpen = 2,
}

pub const MEASURES: [Measure; 3] = [Measure::Amount, Measure::Txns, Measure::MerchantsOpen];

/// Why a row's values are withheld from publication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Suppression {
    None = 0,
    /// Too few merchants or transactions that day.
    SmallCell = 1,
    /// Withheld so that a small cell cannot be recovered by subtraction.
    Complementary = 2,
    /// One merchant dominates the revenue (the p% rule).
    Dominance = 3,
}

/// Which derived values may be published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Publishable {
    /// All seven days of the window are published.
    pub ma7: bool,
    /// `ma7`, and the baseline has enough merchants and transactions.
    pub index: bool,
    /// `ma7` today and 364 days earlier.
    pub yoy: bool,
    /// `ma7` today and on the holiday-aligned day a year earlier.
    pub yoy_aligned: bool,
    /// `ma7` today and 7 days earlier.
    pub wow: bool,
    /// `ma7` today and 28 days earlier.
    pub chg4w: bool,
}

/// Everything computed for one cell and day, unsuppressed.
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    pub day: Day,
    pub cell: Cell,
    pub totals: DayTotals,
    /// `None` while the trailing 3 days reach before the first day of data.
    pub merchants_open: Option<u32>,
    /// Mean over the days of the trailing 7 whose coverage is complete,
    /// when there are at least [`MIN_COVERED_DAYS`] of them.
    pub ma7: [Option<f64>; 3],
    /// Days of the trailing 7 with complete coverage.
    pub covered_days: u8,
    /// This day's coverage is incomplete.
    pub incomplete: bool,
    /// Daily mean over the baseline period's days of complete coverage.
    pub baseline: [Option<f64>; 3],
    pub index: [Option<f64>; 3],
    /// `ma7` against `ma7` 364 days earlier, less 1.
    pub yoy: [Option<f64>; 3],
    /// `ma7` against `ma7` on the holiday-aligned day a year earlier
    /// ([`Params::aligned_day`]), less 1.
    pub yoy_aligned: [Option<f64>; 3],
    pub wow: [Option<f64>; 3],
    pub chg4w: [Option<f64>; 3],
    pub suppression: Suppression,
    pub publishable: Publishable,
}

/// What may leave the platform for one cell and day: indices and changes,
/// rounded to [`PUBLIC_DECIMALS`] decimals, never a level (docs/data-model.md,
/// "What is published"). Every cell of the reference tables has one every
/// day, traded or not, so a row's existence says nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub day: Day,
    pub cell: Cell,
    /// The day's values are withheld: too few merchants or transactions,
    /// one merchant dominating, protecting another cell, or no trade in 28
    /// days; the public cannot tell which.
    pub withheld: bool,
    /// The day's coverage is incomplete; `None` when withheld.
    pub incomplete: Option<bool>,
    pub index: [Option<f64>; 3],
    pub yoy: [Option<f64>; 3],
    pub yoy_aligned: [Option<f64>; 3],
    pub wow: [Option<f64>; 3],
    pub chg4w: [Option<f64>; 3],
}

/// `v` rounded to [`PUBLIC_DECIMALS`] decimals.
pub fn round_public(v: f64) -> f64 {
    let scale = 10f64.powi(PUBLIC_DECIMALS);
    (v * scale).round() / scale
}

impl Published {
    /// The row of a cell with nothing to publish that day.
    pub fn withheld(cell: Cell, day: Day) -> Published {
        Published {
            day,
            cell,
            withheld: true,
            incomplete: None,
            index: [None; 3],
            yoy: [None; 3],
            yoy_aligned: [None; 3],
            wow: [None; 3],
            chg4w: [None; 3],
        }
    }
}

impl Metrics {
    /// The public row: every value that may not be published set to `None`,
    /// the rest rounded.
    pub fn published(&self) -> Published {
        let open = self.suppression == Suppression::None;
        let keep = |ok: bool, v: [Option<f64>; 3]| {
            if ok {
                v.map(|x| x.map(round_public))
            } else {
                [None; 3]
            }
        };
        let p = self.publishable;
        Published {
            day: self.day,
            cell: self.cell.clone(),
            withheld: !open,
            incomplete: open.then_some(self.incomplete),
            index: keep(p.index, self.index),
            yoy: keep(p.yoy, self.yoy),
            yoy_aligned: keep(p.yoy_aligned, self.yoy_aligned),
            wow: keep(p.wow, self.wow),
            chg4w: keep(p.chg4w, self.chg4w),
        }
    }
}

/// Every cell of the reference tables: each district × sector, kota ×
/// sector and sector, and the city, from the district → kota pairs and the
/// sector codes.
pub fn reference_cells(kota_of: &[(String, String)], sectors: &[String]) -> Vec<Cell> {
    let mut cells = BTreeSet::new();
    cells.insert(Cell::new(
        Level::City,
        String::new(),
        String::new(),
        String::new(),
    ));
    for sector in sectors {
        cells.insert(Cell::new(
            Level::Sector,
            String::new(),
            String::new(),
            sector.clone(),
        ));
        for (district, kota) in kota_of {
            cells.insert(Cell::new(
                Level::KotaSector,
                kota.clone(),
                String::new(),
                sector.clone(),
            ));
            cells.insert(Cell::new(
                Level::DistrictSector,
                kota.clone(),
                district.clone(),
                sector.clone(),
            ));
        }
    }
    cells.into_iter().collect()
}

/// The public rows of days `from ..= to`: one for every cell in `cells`
/// and every cell of `rows`, each day; withheld where `rows` has none.
pub fn public_rows(rows: &[Metrics], cells: &[Cell], from: Day, to: Day) -> Vec<Published> {
    let mut out: BTreeMap<(Day, &Cell), Published> = BTreeMap::new();
    for d in from..=to {
        for c in cells {
            out.insert((d, c), Published::withheld(c.clone(), d));
        }
    }
    for r in rows.iter().filter(|r| (from..=to).contains(&r.day)) {
        out.insert((r.day, &r.cell), r.published());
    }
    out.into_values().collect()
}

/// One cell's dense series over the computed days.
struct Series {
    totals: Vec<DayTotals>,
    exists: Vec<bool>,
}

fn ratio(num: Option<f64>, den: Option<f64>) -> Option<f64> {
    match (num, den) {
        (Some(n), Some(d)) if d > 0.0 => Some(n / d),
        _ => None,
    }
}

fn change(now: Option<f64>, then: Option<f64>) -> Option<f64> {
    ratio(now, then).map(|r| r - 1.0)
}

/// Computes the rows of days `from ..= to` for every cell that has a row
/// then: a cell has a row on a day when it had a transaction in the 28 days
/// up to it. `input` must cover `from - HISTORY_DAYS ..= to` and the
/// baseline period (where data exists) for the results to be complete.
pub fn compute(input: &Input, params: &Params, from: Day, to: Day) -> Vec<Metrics> {
    if to < from {
        return Vec::new();
    }
    // The dense range: every day a result may look at, from the first day
    // with data (nothing before it is known or published).
    let d0 = (from - HISTORY_DAYS).max(input.first_day).min(from);
    let len = (to - d0 + 1) as usize;
    let idx = |d: Day| -> Option<usize> { (d0..=to).contains(&d).then(|| (d - d0) as usize) };

    let cells: BTreeSet<&Cell> = input.days.keys().collect();
    let mut series: HashMap<&Cell, Series> = HashMap::new();
    for cell in &cells {
        let mut totals = vec![DayTotals::default(); len];
        for (&d, t) in input.days[*cell].range(d0..=to) {
            totals[(d - d0) as usize] = *t;
        }
        let mut exists = vec![false; len];
        let mut last_active: Option<usize> = None;
        for i in 0..len {
            if totals[i].txns > 0 {
                last_active = Some(i);
            }
            exists[i] = last_active.is_some_and(|a| i - a <= ROW_LOOKBACK as usize);
        }
        series.insert(*cell, Series { totals, exists });
    }

    // Suppression of every day in the dense range, per cell.
    let mut suppression: HashMap<&Cell, Vec<Suppression>> = HashMap::new();
    for (cell, s) in &series {
        let v = s.totals.iter().map(|t| params.suppression(t)).collect();
        suppression.insert(*cell, v);
    }
    for i in 0..len {
        let present: Vec<(&Cell, Suppression, u64)> = cells
            .iter()
            .filter(|c| series[**c].exists[i])
            .map(|c| (*c, suppression[*c][i], series[*c].totals[i].txns))
            .collect();
        for cell in complementary(&present) {
            if let Some(v) = suppression.get_mut(cell) {
                v[i] = Suppression::Complementary;
            }
        }
    }

    let published = |cell: &Cell, d: Day| -> bool {
        idx(d).is_some_and(|i| series[cell].exists[i] && suppression[cell][i] == Suppression::None)
    };
    let value = |cell: &Cell, m: Measure, d: Day| -> Option<f64> {
        let i = idx(d)?;
        input.knows(m, d).then(|| series[cell].totals[i].measure(m))
    };
    // Incomplete days by cell, looked up without building a key per day.
    let mut incomplete: HashMap<&Cell, HashSet<Day>> = HashMap::new();
    for (cell, d) in &input.incomplete {
        incomplete.entry(cell).or_default().insert(*d);
    }
    let covered = |cell: &Cell, d: Day| incomplete.get(cell).is_none_or(|s| !s.contains(&d));
    // The mean over the covered days of the 7 up to `d`; unknown when a day
    // is, or when fewer than MIN_COVERED_DAYS are covered.
    let ma7 = |cell: &Cell, m: Measure, d: Day| -> Option<f64> {
        let (mut sum, mut n) = (0.0, 0u8);
        for k in 0..7 {
            let v = value(cell, m, d - k)?;
            if covered(cell, d - k) {
                sum += v;
                n += 1;
            }
        }
        (n >= MIN_COVERED_DAYS).then(|| sum / f64::from(n))
    };
    let ma7_published = |cell: &Cell, d: Day| (0..7).all(|k| published(cell, d - k));

    // Baselines need totals of their own, outside the dense range: the mean
    // over the period's covered days, when at least half of them are.
    let baseline_days = params.baseline_end - params.baseline_start + 1;
    let baseline_mean = |cell: &Cell, m: Measure| -> Option<f64> {
        if baseline_days <= 0 {
            return None;
        }
        let days = input.days.get(cell);
        let (mut sum, mut n) = (0.0, 0);
        for d in params.baseline_start..=params.baseline_end {
            if !input.knows(m, d) {
                return None;
            }
            if covered(cell, d) {
                let t = days.and_then(|s| s.get(&d)).copied().unwrap_or_default();
                sum += t.measure(m);
                n += 1;
            }
        }
        (2 * n >= baseline_days).then(|| sum / f64::from(n))
    };

    let mut out = Vec::new();
    for cell in &cells {
        let s = &series[*cell];
        let baseline = MEASURES.map(|m| baseline_mean(cell, m));
        let baseline_ok = input
            .baseline
            .get(*cell)
            .is_some_and(|b| !params.small(b.merchants, b.txns));
        for d in from..=to {
            let i = (d - d0) as usize;
            if !s.exists[i] {
                continue;
            }
            let ma7_now = MEASURES.map(|m| ma7(cell, m, d));
            let aligned = params.aligned_day(d);
            let ma7_ok = ma7_published(cell, d);
            let index_ok = ma7_ok && baseline_ok;
            out.push(Metrics {
                day: d,
                cell: (*cell).clone(),
                totals: s.totals[i],
                merchants_open: value(cell, Measure::MerchantsOpen, d)
                    .map(|_| s.totals[i].merchants_open),
                ma7: ma7_now,
                covered_days: (0..7).filter(|k| covered(cell, d - k)).count() as u8,
                incomplete: !covered(cell, d),
                baseline,
                index: MEASURES.map(|m| ratio(ma7_now[m as usize], baseline[m as usize])),
                yoy: MEASURES.map(|m| change(ma7_now[m as usize], ma7(cell, m, d - YEAR_LAG))),
                yoy_aligned: MEASURES.map(|m| change(ma7_now[m as usize], ma7(cell, m, aligned))),
                wow: MEASURES.map(|m| change(ma7_now[m as usize], ma7(cell, m, d - 7))),
                chg4w: MEASURES.map(|m| change(ma7_now[m as usize], ma7(cell, m, d - 28))),
                suppression: suppression[*cell][i],
                publishable: Publishable {
                    ma7: ma7_ok,
                    index: index_ok,
                    yoy: ma7_ok && ma7_published(cell, d - YEAR_LAG),
                    yoy_aligned: ma7_ok && ma7_published(cell, aligned),
                    wow: ma7_ok && ma7_published(cell, d - 7),
                    chg4w: ma7_ok && ma7_published(cell, d - 28),
                },
            });
        }
    }
    out
}

#[cfg(test)]
mod tests;
