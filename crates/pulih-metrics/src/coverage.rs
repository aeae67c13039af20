//! Coverage: whether each producer's feed was complete on a day. A
//! producer whose feed stops (an outage at a bank or an acquirer) makes
//! its merchants' revenue drop to zero, which must not read as a collapse
//! in sales. Each producer's transactions on a day are compared with its
//! own norm: the median of the same weekday over the previous
//! [`NORM_WEEKS`] weeks (so weekly cycles do not count as gaps, and an
//! earlier outage does not lower the norm), and that ratio with the median
//! of every judged producer's ratio that day, so that a day when the whole
//! city trades less (Lebaran, a restriction) is no outage of anyone. A day
//! below `coverage_outage_below` of that, for a norm of at least
//! `coverage_min_txns` transactions, is an **outage** of that producer.
//! With a single producer nothing can be told apart: its feed stopping
//! looks like the city stopping, and no day is an outage.
//!
//! A cell-day is **incomplete** when producers in outage carry at least
//! `coverage_incomplete_share` of the transactions the cell expects that
//! day (each producer's own norm in that cell, summed): its numbers then
//! miss part of its activity, whatever they show.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::{Cell, Day, Level, Params};

/// Weeks of the same weekday the norm averages.
pub const NORM_WEEKS: Day = 4;

/// Days before the first computed day that the norm reads.
pub const NORM_HISTORY: Day = 7 * NORM_WEEKS;

/// One producer's activity on one Jakarta day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerDay {
    pub producer: String,
    pub day: Day,
    pub txns: u64,
    pub amount: u64,
}

/// A producer's coverage on a day.
#[derive(Debug, Clone, PartialEq)]
pub struct Coverage {
    pub producer: String,
    pub day: Day,
    pub txns: u64,
    pub amount: u64,
    /// Median transactions on the same weekday over the previous weeks;
    /// `None` below `coverage_min_txns` (too little history to judge).
    pub norm_txns: Option<f64>,
    /// `txns / norm_txns`, divided by the median of that ratio over every
    /// judged producer that day.
    pub ratio: Option<f64>,
    pub outage: bool,
}

/// Coverage of every producer active in `days` on each day `from ..= to`;
/// `days` must hold the [`NORM_HISTORY`] days before `from` too. A producer
/// with neither activity nor a norm on a day has no row for it.
pub fn coverage(days: &[ProducerDay], from: Day, to: Day, params: &Params) -> Vec<Coverage> {
    let mut series: BTreeMap<&str, BTreeMap<Day, (u64, u64)>> = BTreeMap::new();
    for d in days {
        let v = series
            .entry(d.producer.as_str())
            .or_default()
            .entry(d.day)
            .or_insert((0, 0));
        v.0 += d.txns;
        v.1 += d.amount;
    }
    let mut out = Vec::new();
    for (producer, s) in &series {
        let txns_by_day: BTreeMap<Day, u64> = s.iter().map(|(d, v)| (*d, v.0)).collect();
        for day in from..=to {
            let (txns, amount) = s.get(&day).copied().unwrap_or((0, 0));
            let norm = norm(&txns_by_day, day);
            let norm = (norm >= params.coverage_min_txns as f64).then_some(norm);
            if txns == 0 && norm.is_none() {
                continue;
            }
            out.push(Coverage {
                producer: (*producer).to_owned(),
                day,
                txns,
                amount,
                norm_txns: norm,
                ratio: norm.map(|n| txns as f64 / n),
                outage: false,
            });
        }
    }
    // Each day's market: the median ratio of the judged producers.
    let mut by_day: BTreeMap<Day, Vec<f64>> = BTreeMap::new();
    for c in &out {
        if let Some(r) = c.ratio {
            by_day.entry(c.day).or_default().push(r);
        }
    }
    let market: BTreeMap<Day, f64> = by_day
        .into_iter()
        .map(|(d, mut v)| {
            v.sort_by(f64::total_cmp);
            let n = v.len();
            (d, (v[(n - 1) / 2] + v[n / 2]) / 2.0)
        })
        .collect();
    for c in &mut out {
        let m = market.get(&c.day).copied().unwrap_or(0.0);
        c.ratio = c.ratio.map(|r| if m > 0.0 { r / m } else { 1.0 });
        c.outage = c.ratio.is_some_and(|r| r < params.coverage_outage_below);
    }
    out
}

/// The median of the same weekday in the [`NORM_WEEKS`] weeks before `day`.
fn norm(series: &BTreeMap<Day, u64>, day: Day) -> f64 {
    let mut weeks: Vec<u64> = (1..=NORM_WEEKS)
        .map(|w| series.get(&(day - 7 * w)).copied().unwrap_or(0))
        .collect();
    weeks.sort_unstable();
    // The median of four.
    (weeks[1] + weeks[2]) as f64 / 2.0
}

/// One producer's transactions in one district × sector cell on one day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerCellDay {
    pub producer: String,
    pub kota: String,
    pub district: String,
    pub sector: String,
    pub day: Day,
    pub txns: u64,
}

/// How much of a cell's expected activity producers in outage carry on a
/// day.
#[derive(Debug, Clone, PartialEq)]
pub struct CellCoverage {
    pub cell: Cell,
    pub day: Day,
    /// The producers' norms in this cell, summed.
    pub expected_txns: f64,
    /// The share of `expected_txns` that producers in outage carry.
    pub missing_share: f64,
    pub incomplete: bool,
}

/// Coverage of every cell (all four levels) with an expected activity on
/// each day `from ..= to`, given the producers' `outages` (producer, day).
/// `days` must hold the [`NORM_HISTORY`] days before `from` too.
pub fn cell_coverage(
    days: &[ProducerCellDay],
    outages: &HashSet<(String, Day)>,
    from: Day,
    to: Day,
    params: &Params,
) -> Vec<CellCoverage> {
    let mut series: HashMap<(&str, Cell), BTreeMap<Day, u64>> = HashMap::new();
    for d in days {
        let cell = Cell::new(
            Level::DistrictSector,
            d.kota.clone(),
            d.district.clone(),
            d.sector.clone(),
        );
        *series
            .entry((d.producer.as_str(), cell))
            .or_default()
            .entry(d.day)
            .or_insert(0) += d.txns;
    }
    // (cell, day) -> (expected, missing), summed up the hierarchy.
    let mut totals: BTreeMap<(Cell, Day), (f64, f64)> = BTreeMap::new();
    for ((producer, cell), s) in &series {
        for day in from..=to {
            let expected = norm(s, day);
            if expected == 0.0 {
                continue;
            }
            let missing = if outages.contains(&((*producer).to_owned(), day)) {
                expected
            } else {
                0.0
            };
            let mut c = Some(cell.clone());
            while let Some(cell) = c {
                c = cell.parent();
                let t = totals.entry((cell, day)).or_insert((0.0, 0.0));
                t.0 += expected;
                t.1 += missing;
            }
        }
    }
    totals
        .into_iter()
        .map(|((cell, day), (expected, missing))| {
            let share = missing / expected;
            CellCoverage {
                cell,
                day,
                expected_txns: expected,
                missing_share: share,
                incomplete: share >= params.coverage_incomplete_share,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `per_day(day)` transactions for each day of `0..days`, skipping
    /// the days in `gap`.
    fn feed(
        producer: &str,
        days: Day,
        gap: std::ops::Range<Day>,
        per_day: impl Fn(Day) -> u64,
    ) -> Vec<ProducerDay> {
        (0..days)
            .filter(|d| !gap.contains(d))
            .map(|day| ProducerDay {
                producer: producer.to_owned(),
                day,
                txns: per_day(day),
                amount: per_day(day) * 10_000,
            })
            .collect()
    }

    #[test]
    fn a_feed_that_stops_is_an_outage_on_exactly_those_days() {
        let p = Params::standard();
        let mut days = feed("bank-a", 42, 32..35, |_| 100);
        days.extend(feed("bank-b", 42, 0..0, |_| 80));
        let c = coverage(&days, 28, 41, &p);
        let outages: Vec<(String, Day)> = c
            .iter()
            .filter(|c| c.outage)
            .map(|c| (c.producer.clone(), c.day))
            .collect();
        assert_eq!(
            outages,
            vec![
                ("bank-a".into(), 32),
                ("bank-a".into(), 33),
                ("bank-a".into(), 34)
            ]
        );
        let back = c
            .iter()
            .find(|c| c.producer == "bank-a" && c.day == 39)
            .unwrap();
        assert_eq!(back.ratio, Some(1.0), "the outage does not lower the norm");
        assert_eq!(back.norm_txns, Some(100.0));
    }

    #[test]
    fn weekly_cycles_and_new_producers_are_not_outages() {
        let p = Params::standard();
        // Sundays (day % 7 == 3 for these day numbers) at a fifth.
        let mut days = feed("bank-a", 42, 0..0, |d| if d % 7 == 3 { 20 } else { 100 });
        // A producer that started on day 30: no norm yet.
        days.extend(feed("bank-new", 42, 0..30, |_| 500));
        let c = coverage(&days, 28, 41, &p);
        assert!(c.iter().all(|c| !c.outage), "{c:?}");
        let new: Vec<_> = c.iter().filter(|c| c.producer == "bank-new").collect();
        assert_eq!(new.len(), 12);
        assert!(new.iter().all(|c| c.norm_txns.is_none()));
    }

    #[test]
    fn a_day_when_every_producer_trades_less_is_no_outage() {
        let p = Params::standard();
        // Lebaran: every feed at a fifth for three days.
        let quiet = |d: Day| if (32..35).contains(&d) { 20 } else { 100 };
        let mut days = feed("bank-a", 42, 0..0, quiet);
        days.extend(feed("bank-b", 42, 0..0, |d| quiet(d) * 2));
        days.extend(feed("qris-c", 42, 0..0, |d| quiet(d) / 2));
        let c = coverage(&days, 28, 41, &p);
        assert!(c.iter().all(|c| !c.outage), "{c:?}");
        assert!(c.iter().all(|c| c.ratio == Some(1.0)));
        // A single producer's gap cannot be told from the city's.
        let alone = feed("bank-a", 42, 32..35, |_| 100);
        assert!(coverage(&alone, 28, 41, &p).iter().all(|c| !c.outage));
    }

    #[test]
    fn a_small_producer_is_not_judged() {
        let p = Params::standard();
        let days = feed("tiny", 42, 35..38, |_| 3);
        assert!(coverage(&days, 28, 41, &p).iter().all(|c| !c.outage));
    }

    #[test]
    fn a_cell_is_incomplete_by_the_share_its_producers_in_outage_carry() {
        let mut p = Params::standard();
        p.coverage_incomplete_share = 0.1;
        let mut days = Vec::new();
        // District A: bank-a 90 %, bank-b 10 % of the activity; district B:
        // bank-a only. Same sector, same kota.
        for day in 0..35 {
            for (producer, district, txns) in [
                ("bank-a", "31.72.01", 90),
                ("bank-b", "31.72.01", 10),
                ("bank-a", "31.72.02", 50),
            ] {
                days.push(ProducerCellDay {
                    producer: producer.into(),
                    kota: "31.72".into(),
                    district: district.into(),
                    sector: "G".into(),
                    day,
                    txns,
                });
            }
        }
        let outages: HashSet<(String, Day)> = [("bank-b".to_owned(), 30)].into();
        let c = cell_coverage(&days, &outages, 28, 34, &p);
        let at = |level: Level, district: &str, day: Day| {
            c.iter()
                .find(|c| c.cell.level == level && c.cell.district == district && c.day == day)
                .unwrap()
        };
        let a = at(Level::DistrictSector, "31.72.01", 30);
        assert_eq!(
            (a.expected_txns, a.missing_share, a.incomplete),
            (100.0, 0.1, true)
        );
        assert!(!at(Level::DistrictSector, "31.72.02", 30).incomplete);
        // The kota expects 150, of which 10 are missing: under 10 %.
        let kota = at(Level::KotaSector, "", 30);
        assert!((kota.missing_share - 10.0 / 150.0).abs() < 1e-12 && !kota.incomplete);
        assert!(c
            .iter()
            .filter(|c| c.day != 30)
            .all(|c| c.missing_share == 0.0));
        assert_eq!(c.len(), 7 * 5, "two districts, kota, sector, city: 7 days");
    }
}
