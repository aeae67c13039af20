//! The sector-downturn rule (docs/alerting.md): a pure function of the
//! stored daily totals, evaluated once per complete day.
//!
//! For a kota × sector or a large enough district × sector cell, on day
//! `d`, with `R(w)` the revenue over the 28 days `w` and `a(t)` the
//! holiday-aligned day a year before `t` ([`Params::aligned_day`]):
//!
//! * **depth**: `R(d-27..d) / R(a(d-27..d)) - 1 <= depth_yoy` and the
//!   4-week change `R(d-27..d) / R(d-55..d-28) - 1 <= depth_chg4w`; when
//!   either window touches a guard window (Lebaran, Imlek, year-end) the
//!   4-week change is taken net of the reference year's over the same
//!   holiday-relative days;
//! * **relative**: the cell's year-on-year change at least
//!   `relative_points` points below the city's (all sectors);
//! * **significance**: that difference at least `significance_z` robust
//!   standard deviations (MAD × 1.4826) below its median over the cell's
//!   past `significance_weeks` weekly values outside guard windows;
//! * **diffusion**: merchants open (28-day mean, aligned) down at least
//!   `diffusion_merchants_yoy`, or at least `diffusion_district_share` of
//!   the kota's districts with revenue down `diffusion_district_yoy` in
//!   the sector;
//! * **duration**: all of it on `duration_weeks` consecutive weekly
//!   evaluations (`d`, `d-7`, ...);
//! * **clearing**: `clear_weeks` consecutive weekly evaluations with
//!   year-on-year at least `clear_yoy` and 4-week change at least
//!   `clear_chg4w`.
//!
//! A cell is evaluated on `d` only when every day of both windows and of
//! their year-earlier days has data and complete coverage, and its row on
//! `d` is published (not withheld). Nothing here reads a clock.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use pulih_metrics::{format_day, Cell, Day, Level, Params};

/// The rule's name in alert identities and labels.
pub const SECTOR_DOWNTURN: &str = "sector_downturn";

/// Every number of the rule, with the defaults of docs/alerting.md; the
/// `[alerts.rule]` table of the configuration, by the same names.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Days of each comparison window.
    pub window_days: Day,
    /// A district × sector cell is evaluated only with at least this mean
    /// of merchants open over its reference window ...
    pub min_merchants_open: f64,
    /// ... and at least this many transactions a week in it.
    pub min_weekly_transactions: f64,
    pub depth_yoy: f64,
    pub depth_chg4w: f64,
    /// Points (of percent) below the city's year-on-year change.
    pub relative_points: f64,
    pub significance_z: f64,
    pub significance_weeks: u32,
    /// Fewer past weekly values than this: not significant.
    pub significance_min_weeks: u32,
    /// The robust standard deviation is at least this (a fraction), so a
    /// perfectly steady history does not make every wobble significant.
    pub significance_min_sd: f64,
    pub diffusion_merchants_yoy: f64,
    pub diffusion_district_share: f64,
    pub diffusion_district_yoy: f64,
    pub duration_weeks: u32,
    pub clear_yoy: f64,
    pub clear_chg4w: f64,
    pub clear_weeks: u32,
    /// At or below this year-on-year change an alert is `critical`, above
    /// it `warning`.
    pub critical_yoy: f64,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            window_days: 28,
            min_merchants_open: 30.0,
            min_weekly_transactions: 500.0,
            depth_yoy: -0.15,
            depth_chg4w: -0.10,
            relative_points: 7.5,
            significance_z: -2.5,
            significance_weeks: 52,
            significance_min_weeks: 26,
            significance_min_sd: 0.01,
            diffusion_merchants_yoy: -0.05,
            diffusion_district_share: 0.5,
            diffusion_district_yoy: -0.10,
            duration_weeks: 2,
            clear_yoy: -0.10,
            clear_chg4w: -0.05,
            clear_weeks: 2,
            critical_yoy: -0.30,
        }
    }
}

impl Settings {
    /// Days of history before the first evaluated day that an evaluation
    /// reads: the earlier weekly evaluations of the duration test, the
    /// past weeks of the significance test, and the windows of each.
    pub fn lookback(&self) -> Day {
        let weeks =
            self.duration_weeks.max(self.clear_weeks) as Day - 1 + self.significance_weeks as Day;
        7 * weeks + pulih_metrics::MAX_ALIGNED_LAG + 2 * self.window_days
    }

    /// Checks every setting; the error names the offending one (its key
    /// under `[alerts]`).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let change = |key: &'static str, v: f64| {
            if v.is_finite() && v > -1.0 && v < 1.0 {
                Ok(())
            } else {
                Err((key, format!("{v} is not a change between -1 and 1")))
            }
        };
        let positive = |key: &'static str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err((key, format!("{v} must be a number of at least 0")))
            }
        };
        let weeks = |key: &'static str, v: u32, max: u32| {
            if (1..=max).contains(&v) {
                Ok(())
            } else {
                Err((key, format!("{v} must be between 1 and {max}")))
            }
        };
        if !(7..=91).contains(&self.window_days) {
            return Err((
                "window_days",
                format!("{} must be between 7 and 91", self.window_days),
            ));
        }
        positive("min_merchants_open", self.min_merchants_open)?;
        positive("min_weekly_transactions", self.min_weekly_transactions)?;
        change("depth_yoy", self.depth_yoy)?;
        change("depth_chg4w", self.depth_chg4w)?;
        positive("relative_points", self.relative_points)?;
        if !(self.significance_z.is_finite() && self.significance_z <= 0.0) {
            return Err((
                "significance_z",
                format!("{} must be 0 or below", self.significance_z),
            ));
        }
        weeks("significance_weeks", self.significance_weeks, 156)?;
        weeks(
            "significance_min_weeks",
            self.significance_min_weeks,
            self.significance_weeks,
        )?;
        if !(self.significance_min_sd.is_finite() && self.significance_min_sd > 0.0) {
            return Err((
                "significance_min_sd",
                format!("{} must be above 0", self.significance_min_sd),
            ));
        }
        change("diffusion_merchants_yoy", self.diffusion_merchants_yoy)?;
        if !(self.diffusion_district_share > 0.0 && self.diffusion_district_share <= 1.0) {
            return Err((
                "diffusion_district_share",
                format!(
                    "{} must be above 0 and at most 1",
                    self.diffusion_district_share
                ),
            ));
        }
        change("diffusion_district_yoy", self.diffusion_district_yoy)?;
        weeks("duration_weeks", self.duration_weeks, 12)?;
        change("clear_yoy", self.clear_yoy)?;
        change("clear_chg4w", self.clear_chg4w)?;
        weeks("clear_weeks", self.clear_weeks, 12)?;
        change("critical_yoy", self.critical_yoy)?;
        // Hysteresis: the clearing thresholds must lie above the firing
        // ones, or an alert could fire and clear on the same values.
        if self.clear_yoy <= self.depth_yoy {
            return Err((
                "clear_yoy",
                format!(
                    "{} must be above depth_yoy ({})",
                    self.clear_yoy, self.depth_yoy
                ),
            ));
        }
        if self.clear_chg4w <= self.depth_chg4w {
            return Err((
                "clear_chg4w",
                format!(
                    "{} must be above depth_chg4w ({})",
                    self.clear_chg4w, self.depth_chg4w
                ),
            ));
        }
        if self.critical_yoy > self.depth_yoy {
            return Err((
                "critical_yoy",
                format!(
                    "{} must be at or below depth_yoy ({})",
                    self.critical_yoy, self.depth_yoy
                ),
            ));
        }
        Ok(())
    }
}

/// A cell's stored values for one day (`pulih_analytics.recovery_daily`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DayValue {
    pub amount: f64,
    pub txns: f64,
    /// `None` where the store does not know it (the first days of data).
    pub merchants_open: Option<f64>,
    /// Producers in outage carry part of the cell's activity that day.
    pub incomplete: bool,
    /// The day's public row is withheld.
    pub withheld: bool,
}

impl DayValue {
    /// A day without a stored row: no trade for 28 days, so withheld.
    pub const NONE: DayValue = DayValue {
        amount: 0.0,
        txns: 0.0,
        merchants_open: Some(0.0),
        incomplete: false,
        withheld: true,
    };
}

/// The daily values of every cell over `first..=last`; a day in the range
/// without a value had no trade. Kota × sector and district × sector cells
/// are evaluated against the city cell; sector cells (the whole city) only
/// have statistics, for the per-sector gauges.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub first: Day,
    pub last: Day,
    pub days: HashMap<Cell, BTreeMap<Day, DayValue>>,
}

/// A window's sums, dense: index `d - first`.
struct Series {
    vals: Vec<DayValue>,
}

/// The 28-day statistics of a cell on a day.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Revenue over the window against the aligned days a year before.
    pub yoy: f64,
    /// Against the 28 days before; net of the reference year's when a
    /// window touches a guard window.
    pub chg4w: f64,
    /// Mean merchants open against the aligned days a year before.
    pub merchants_yoy: Option<f64>,
    /// Mean merchants open and transactions a week in the reference window.
    pub reference_merchants_open: Option<f64>,
    pub reference_weekly_txns: f64,
    /// A day of either window is in a guard window.
    pub guarded: bool,
}

/// Everything the rule found for one cell and day.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    pub cell: Cell,
    pub day: Day,
    /// `None`: not evaluated (too small, incomplete or missing days,
    /// withheld, or no comparison).
    pub stats: Option<Stats>,
    /// Year-on-year change less the city's, in points.
    pub relative_points: Option<f64>,
    /// Robust z-score of the relative change; computed only when depth
    /// and relative hold.
    pub z: Option<f64>,
    /// Districts of the kota down in the sector, of those evaluated.
    pub districts_down: Option<(u32, u32)>,
    pub condition: bool,
    pub clear: bool,
}

/// Severity of a downturn alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Warning,
    Critical,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// A state change of one alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub rule: &'static str,
    pub cell: Cell,
    pub firing: bool,
    /// The evaluation day that made the change.
    pub day: Day,
    /// The day the alert fired (this one when firing).
    pub since: Day,
    pub severity: Severity,
    pub assessment: Assessment,
    /// Consecutive weekly evaluations the condition (firing) or the
    /// clearing condition (resolved) has held.
    pub weeks: u32,
}

impl Transition {
    /// The alert's stable identity: rule, level, kota/district, sector.
    pub fn id(&self) -> String {
        alert_id(self.rule, &self.cell)
    }
}

/// The stable identity of an alert of `rule` on `cell`.
pub fn alert_id(rule: &str, cell: &Cell) -> String {
    match cell.level {
        Level::DistrictSector => format!(
            "{rule}/{}/{}/{}/{}",
            cell.level.name(),
            cell.kota,
            cell.district,
            cell.sector
        ),
        _ => format!("{rule}/{}/{}/{}", cell.level.name(), cell.kota, cell.sector),
    }
}

/// An alert firing before the evaluated days.
#[derive(Debug, Clone, PartialEq)]
pub struct Active {
    pub since: Day,
    pub severity: Severity,
}

/// The rule over one history.
pub struct Rule<'a> {
    settings: &'a Settings,
    params: &'a Params,
    guards: &'a [(Day, Day)],
    first: Day,
    index: HashMap<Cell, usize>,
    series: Vec<Series>,
    city: Cell,
    /// District cells of each (kota, sector).
    districts: HashMap<(String, String), Vec<Cell>>,
    memo: RefCell<HashMap<(usize, Day), Option<Stats>>>,
}

impl<'a> Rule<'a> {
    /// `guards` are inclusive day ranges (Lebaran H-21..H+14, Imlek ± 7,
    /// year-end) in which no alert fires on the plain 4-week change.
    pub fn new(
        settings: &'a Settings,
        params: &'a Params,
        guards: &'a [(Day, Day)],
        history: &History,
    ) -> Rule<'a> {
        let len = (history.last - history.first + 1).max(0) as usize;
        let mut index = HashMap::new();
        let mut series = Vec::new();
        let mut districts: HashMap<(String, String), Vec<Cell>> = HashMap::new();
        for (cell, days) in &history.days {
            let mut vals = vec![DayValue::NONE; len];
            for (&d, v) in days.range(history.first..=history.last) {
                vals[(d - history.first) as usize] = *v;
            }
            index.insert(cell.clone(), series.len());
            series.push(Series { vals });
            if cell.level == Level::DistrictSector {
                districts
                    .entry((cell.kota.clone(), cell.sector.clone()))
                    .or_default()
                    .push(cell.clone());
            }
        }
        for v in districts.values_mut() {
            v.sort();
        }
        Rule {
            settings,
            params,
            guards,
            first: history.first,
            index,
            series,
            city: Cell::new(Level::City, String::new(), String::new(), String::new()),
            districts,
            memo: RefCell::new(HashMap::new()),
        }
    }

    /// The cells the rule evaluates: every kota × sector and district ×
    /// sector cell with data, in order.
    pub fn cells(&self) -> Vec<Cell> {
        let mut cells: Vec<Cell> = self
            .index
            .keys()
            .filter(|c| matches!(c.level, Level::KotaSector | Level::DistrictSector))
            .cloned()
            .collect();
        cells.sort();
        cells
    }

    /// The cells of the per-sector gauges: kota × sector, and sector (the
    /// whole city).
    pub fn gauge_cells(&self) -> Vec<Cell> {
        let mut cells: Vec<Cell> = self
            .index
            .keys()
            .filter(|c| matches!(c.level, Level::KotaSector | Level::Sector))
            .cloned()
            .collect();
        cells.sort();
        cells
    }

    fn guarded(&self, d: Day) -> bool {
        self.guards.iter().any(|&(a, b)| a <= d && d <= b)
    }

    fn value(&self, s: &Series, d: Day) -> Option<DayValue> {
        let i = d - self.first;
        if i < 0 {
            return None;
        }
        s.vals.get(i as usize).copied()
    }

    /// The sums of revenue, transactions and merchants open over `days`;
    /// `None` when a day is unknown or incomplete.
    fn sums(&self, s: &Series, days: impl Iterator<Item = Day>) -> Option<(f64, f64, Option<f64>)> {
        let (mut amount, mut txns, mut open) = (0.0, 0.0, Some(0.0));
        for d in days {
            let v = self.value(s, d)?;
            if v.incomplete {
                return None;
            }
            amount += v.amount;
            txns += v.txns;
            open = match (open, v.merchants_open) {
                (Some(a), Some(b)) => Some(a + b),
                _ => None,
            };
        }
        Some((amount, txns, open))
    }

    /// The statistics of `cell` on `d`, or `None` when a day they need is
    /// missing or incomplete or a comparison has nothing to compare with.
    pub fn stats(&self, cell: &Cell, d: Day) -> Option<Stats> {
        let i = *self.index.get(cell)?;
        let key = (i, d);
        if let Some(s) = self.memo.borrow().get(&key) {
            return *s;
        }
        let s = self.compute_stats(&self.series[i], d);
        self.memo.borrow_mut().insert(key, s);
        s
    }

    fn compute_stats(&self, s: &Series, d: Day) -> Option<Stats> {
        let w = self.settings.window_days;
        let now = d - w + 1..=d;
        let before = d - 2 * w + 1..=d - w;
        let (amount, _, open) = self.sums(s, now.clone())?;
        let (amount_before, _, _) = self.sums(s, before.clone())?;
        let aligned = |r: std::ops::RangeInclusive<Day>| r.map(|t| self.params.aligned_day(t));
        let (ref_amount, ref_txns, ref_open) = self.sums(s, aligned(now))?;
        if ref_amount <= 0.0 || amount_before <= 0.0 {
            return None;
        }
        let yoy = amount / ref_amount - 1.0;
        // A holiday in either window: compare the change with the
        // reference year's over the same holiday-relative days.
        let guarded = (d - 2 * w + 1..=d).any(|t| self.guarded(t));
        let chg4w = if guarded {
            let (ref_before, _, _) = self.sums(s, aligned(before))?;
            if ref_before <= 0.0 {
                return None;
            }
            (amount / amount_before) / (ref_amount / ref_before) - 1.0
        } else {
            amount / amount_before - 1.0
        };
        let merchants_yoy = match (open, ref_open) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b - 1.0),
            _ => None,
        };
        Some(Stats {
            yoy,
            chg4w,
            merchants_yoy,
            reference_merchants_open: ref_open.map(|o| o / f64::from(w)),
            reference_weekly_txns: ref_txns * 7.0 / f64::from(w),
            guarded,
        })
    }

    /// The cell's year-on-year change less the city's, in points.
    fn relative(&self, cell: &Cell, d: Day) -> Option<f64> {
        let own = self.stats(cell, d)?;
        let city = self.stats(&self.city, d)?;
        Some((own.yoy - city.yoy) * 100.0)
    }

    fn eligible(&self, cell: &Cell, d: Day, stats: &Stats) -> bool {
        let published = self
            .index
            .get(cell)
            .and_then(|&i| self.value(&self.series[i], d))
            .is_some_and(|v| !v.withheld);
        let big = match cell.level {
            Level::DistrictSector => {
                stats
                    .reference_merchants_open
                    .is_some_and(|m| m >= self.settings.min_merchants_open)
                    && stats.reference_weekly_txns >= self.settings.min_weekly_transactions
            }
            _ => true,
        };
        published && big
    }

    /// Robust z-score of the relative change on `d` against the cell's
    /// past weekly values on days outside guard windows.
    fn z(&self, cell: &Cell, d: Day, now: f64) -> Option<f64> {
        let mut past: Vec<f64> = (1..=self.settings.significance_weeks as Day)
            .map(|k| d - 7 * k)
            .filter(|&t| !self.guarded(t))
            .filter_map(|t| self.relative(cell, t))
            .collect();
        if past.len() < self.settings.significance_min_weeks as usize {
            return None;
        }
        let median = median_of(&mut past);
        let mut deviations: Vec<f64> = past.iter().map(|v| (v - median).abs()).collect();
        let sd =
            (median_of(&mut deviations) * 1.4826).max(self.settings.significance_min_sd * 100.0);
        Some((now - median) / sd)
    }

    fn districts_down(&self, cell: &Cell, d: Day) -> Option<(u32, u32)> {
        let cells = self
            .districts
            .get(&(cell.kota.clone(), cell.sector.clone()))?;
        let (mut down, mut of) = (0u32, 0u32);
        for c in cells {
            if let Some(s) = self.stats(c, d) {
                of += 1;
                if s.yoy <= self.settings.diffusion_district_yoy {
                    down += 1;
                }
            }
        }
        (of > 0).then_some((down, of))
    }

    /// The rule on one cell and day.
    pub fn assess(&self, cell: &Cell, d: Day) -> Assessment {
        let st = &self.settings;
        let mut a = Assessment {
            cell: cell.clone(),
            day: d,
            stats: None,
            relative_points: None,
            z: None,
            districts_down: None,
            condition: false,
            clear: false,
        };
        let Some(stats) = self.stats(cell, d).filter(|s| self.eligible(cell, d, s)) else {
            return a;
        };
        a.stats = Some(stats);
        a.relative_points = self.relative(cell, d);
        a.clear = stats.yoy >= st.clear_yoy && stats.chg4w >= st.clear_chg4w;
        let depth = stats.yoy <= st.depth_yoy && stats.chg4w <= st.depth_chg4w;
        let Some(relative) = a.relative_points.filter(|r| *r <= -st.relative_points) else {
            return a;
        };
        if !depth {
            return a;
        }
        a.z = self.z(cell, d, relative);
        let significant = a.z.is_some_and(|z| z <= st.significance_z);
        a.districts_down = self.districts_down(cell, d);
        let diffusion = stats
            .merchants_yoy
            .is_some_and(|m| m <= st.diffusion_merchants_yoy)
            || a.districts_down.is_some_and(|(down, of)| {
                f64::from(down) >= st.diffusion_district_share * f64::from(of)
            });
        a.condition = significant && diffusion;
        a
    }

    /// How many consecutive weekly evaluations up to `d` satisfy `test`,
    /// up to `limit`.
    fn weeks_holding(
        &self,
        cell: &Cell,
        d: Day,
        limit: u32,
        test: impl Fn(&Assessment) -> bool,
    ) -> u32 {
        let mut n = 0;
        while n < limit && test(&self.assess(cell, d - 7 * n as Day)) {
            n += 1;
        }
        n
    }

    /// Runs the state machine of every cell over `from..=to`, starting
    /// from the alerts `active` before `from` (by identity), and returns
    /// the state changes in day order. The same history, days and active
    /// set give the same changes.
    pub fn run(&self, from: Day, to: Day, active: &HashMap<String, Active>) -> Vec<Transition> {
        let st = self.settings;
        let mut out = Vec::new();
        for cell in self.cells() {
            let id = alert_id(SECTOR_DOWNTURN, &cell);
            let mut state = active.get(&id).cloned();
            for d in from..=to {
                let a = self.assess(&cell, d);
                match &state {
                    None if a.condition => {
                        let weeks =
                            1 + self.weeks_holding(&cell, d - 7, st.duration_weeks - 1, |a| {
                                a.condition
                            });
                        if weeks < st.duration_weeks {
                            continue;
                        }
                        let severity = match a.stats {
                            Some(s) if s.yoy <= st.critical_yoy => Severity::Critical,
                            _ => Severity::Warning,
                        };
                        state = Some(Active { since: d, severity });
                        out.push(Transition {
                            rule: SECTOR_DOWNTURN,
                            cell: cell.clone(),
                            firing: true,
                            day: d,
                            since: d,
                            severity,
                            assessment: a,
                            weeks,
                        });
                    }
                    Some(active) if a.clear => {
                        let weeks =
                            1 + self.weeks_holding(&cell, d - 7, st.clear_weeks - 1, |a| a.clear);
                        if weeks < st.clear_weeks {
                            continue;
                        }
                        out.push(Transition {
                            rule: SECTOR_DOWNTURN,
                            cell: cell.clone(),
                            firing: false,
                            day: d,
                            since: active.since,
                            severity: active.severity,
                            assessment: a,
                            weeks,
                        });
                        state = None;
                    }
                    _ => {}
                }
            }
        }
        out.sort_by_key(|t| (t.day, t.id()));
        out
    }
}

fn median_of(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The names a summary uses.
#[derive(Debug, Clone, Default)]
pub struct Names {
    pub kota: HashMap<String, String>,
    pub district: HashMap<String, String>,
    pub sector: HashMap<String, String>,
}

impl Names {
    pub(crate) fn place(&self, cell: &Cell) -> String {
        let kota = self
            .kota
            .get(&cell.kota)
            .cloned()
            .unwrap_or(cell.kota.clone());
        match cell.level {
            Level::DistrictSector => {
                let district = self
                    .district
                    .get(&cell.district)
                    .cloned()
                    .unwrap_or(cell.district.clone());
                format!("{district}, {kota}")
            }
            _ => kota,
        }
    }

    pub(crate) fn sector(&self, cell: &Cell) -> String {
        self.sector
            .get(&cell.sector)
            .cloned()
            .unwrap_or(cell.sector.clone())
    }
}

fn percent(v: f64) -> String {
    // + 0.0 turns a rounded -0 into 0.
    let p = (v * 100.0).round() + 0.0;
    if p < 0.0 {
        format!("\u{2212}{} %", -p)
    } else {
        format!("+{p} %")
    }
}

/// The sentence a person reads, e.g. "Penyediaan Akomodasi dan Makan
/// Minum in Jakarta Utara: revenue −22 % year on year, −14 % over 4 weeks,
/// 9 points worse than the city; 2 weeks".
pub fn summary(t: &Transition, names: &Names) -> String {
    let head = format!("{} in {}", names.sector(&t.cell), names.place(&t.cell));
    let Some(s) = t.assessment.stats else {
        return head;
    };
    let vs_city = t.assessment.relative_points.map_or(String::new(), |r| {
        let r = r.round() + 0.0;
        let points = |n: f64| {
            if n == 1.0 {
                "1 point".to_owned()
            } else {
                format!("{n} points")
            }
        };
        if r <= 0.0 {
            format!(", {} worse than the city", points(-r + 0.0))
        } else {
            format!(", {} better than the city", points(r))
        }
    });
    let weeks = if t.weeks == 1 {
        "1 week".to_owned()
    } else {
        format!("{} weeks", t.weeks)
    };
    let body = format!(
        "revenue {} year on year, {} over 4 weeks{vs_city}",
        percent(s.yoy),
        percent(s.chg4w)
    );
    if t.firing {
        format!("{head}: {body}; {weeks}")
    } else {
        format!(
            "{head} recovered: {body}; firing since {}, clear for {weeks}",
            format_day(t.since)
        )
    }
}

#[cfg(test)]
#[path = "rule_tests.rs"]
mod tests;
