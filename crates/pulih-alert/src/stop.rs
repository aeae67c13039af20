//! The sudden-stop rule (docs/alerting.md): a district × sector cell that
//! normally trades goes silent for some of its trading hours while the
//! producers that carry it keep trading in their other cells. When the
//! producers go silent too, it is an outage: the operators' coverage
//! rules see it, and this rule stays quiet.
//!
//! Hours are counted from the Unix epoch (`unix seconds / 3600`), and the
//! rule is a pure function of hourly counts: transactions per cell, and
//! merchants active per producer and cell.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The rule's name in alert identities and labels.
pub const SUDDEN_STOP: &str = "sudden_stop";

/// An hour, counted from the Unix epoch.
pub type Hour = i64;

/// Hours in a week: the same hour a week before is `h - WEEK`.
pub const WEEK: Hour = 168;

/// The numbers of the rule (`[alerts.sudden_stop]`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopSettings {
    /// Consecutive silent trading hours before the alert fires.
    pub hours: u32,
    /// An hour is a trading hour of a cell when the median of its
    /// transactions in the same hour of the past `weeks` weeks is at least
    /// this.
    pub min_hourly_transactions: f64,
    pub weeks: u32,
    /// Each of the cell's producers must keep, in every silent hour, at
    /// least this share of its usual merchants active in its other cells.
    pub producer_share: f64,
}

impl Default for StopSettings {
    fn default() -> StopSettings {
        StopSettings {
            hours: 3,
            min_hourly_transactions: 5.0,
            weeks: 4,
            producer_share: 0.5,
        }
    }
}

impl StopSettings {
    /// Checks every setting; the error names the offending one.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !(1..=48).contains(&self.hours) {
            return Err(("hours", format!("{} must be from 1 to 48", self.hours)));
        }
        if !(self.min_hourly_transactions.is_finite() && self.min_hourly_transactions >= 1.0) {
            return Err((
                "min_hourly_transactions",
                format!("{} must be at least 1", self.min_hourly_transactions),
            ));
        }
        if !(2..=12).contains(&self.weeks) {
            return Err(("weeks", format!("{} must be from 2 to 12", self.weeks)));
        }
        if !(self.producer_share > 0.0 && self.producer_share <= 1.0) {
            return Err((
                "producer_share",
                format!("{} must be above 0 and at most 1", self.producer_share),
            ));
        }
        Ok(())
    }

    /// Hours of history before the evaluated hour the rule reads.
    pub fn lookback(&self) -> Hour {
        Hour::from(self.weeks) * WEEK + 48
    }

    /// The hours whose merchants per producer the rule reads when it
    /// evaluates hour `at`: the two days up to it and the same hours of
    /// each of the `weeks` weeks before, where [`Hourly::stopped`] looks
    /// for silent hours and their usual levels. The producers of a cell
    /// are those with merchants in it in these hours.
    pub fn merchant_hours(&self, at: Hour) -> Vec<(Hour, Hour)> {
        (0..=Hour::from(self.weeks))
            .map(|k| (at - 48 - k * WEEK, at - k * WEEK))
            .collect()
    }
}

/// A district × sector cell: (district code, sector).
pub type StopCell = (String, String);

/// Hourly counts over `first..=last`; an hour without a count had none.
#[derive(Debug, Clone, Default)]
pub struct Hourly {
    pub first: Hour,
    pub last: Hour,
    /// Transactions of each cell per hour.
    pub txns: HashMap<StopCell, BTreeMap<Hour, u64>>,
    /// Merchants active per producer, cell and hour, in the hours of
    /// [`StopSettings::merchant_hours`] (others may be absent).
    pub merchants: HashMap<String, HashMap<StopCell, BTreeMap<Hour, u64>>>,
}

/// A cell found silent.
#[derive(Debug, Clone, PartialEq)]
pub struct Stop {
    pub cell: StopCell,
    /// The first silent trading hour.
    pub since: Hour,
    /// Silent trading hours up to the evaluated one.
    pub hours: u32,
    /// Median transactions of the cell in those hours, summed.
    pub usual_txns: f64,
    /// The producers that carry the cell, each still trading elsewhere.
    pub producers: Vec<String>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

impl Hourly {
    fn cell_txns(&self, cell: &StopCell, h: Hour) -> u64 {
        self.txns
            .get(cell)
            .and_then(|s| s.get(&h))
            .copied()
            .unwrap_or(0)
    }

    /// The median of `f` over the same hour of the past `weeks` weeks,
    /// `None` when one of them is before the data.
    fn usual(&self, h: Hour, weeks: u32, f: impl Fn(Hour) -> f64) -> Option<f64> {
        let past: Vec<Hour> = (1..=Hour::from(weeks)).map(|k| h - k * WEEK).collect();
        if past.iter().any(|&p| p < self.first) {
            return None;
        }
        Some(median(past.into_iter().map(f).collect()))
    }

    /// Merchants of `producer` active in `h` in every cell but `cell`.
    fn elsewhere(&self, producer: &str, cell: &StopCell, h: Hour) -> f64 {
        self.merchants.get(producer).map_or(0.0, |cells| {
            cells
                .iter()
                .filter(|(c, _)| *c != cell)
                .map(|(_, s)| s.get(&h).copied().unwrap_or(0) as f64)
                .sum()
        })
    }

    /// The producers with merchants in `cell` over the `weeks` weeks
    /// before `before`.
    fn producers_of(&self, cell: &StopCell, before: Hour, weeks: u32) -> Vec<String> {
        let from = before - Hour::from(weeks) * WEEK;
        let set: BTreeSet<&String> = self
            .merchants
            .iter()
            .filter(|(_, cells)| {
                cells
                    .get(cell)
                    .is_some_and(|s| s.range(from..before).any(|(_, &m)| m > 0))
            })
            .map(|(p, _)| p)
            .collect();
        set.into_iter().cloned().collect()
    }

    /// The cell, if it is silent at hour `at` as the rule defines it.
    pub fn stopped(&self, cell: &StopCell, at: Hour, st: &StopSettings) -> Option<Stop> {
        let mut silent: Vec<(Hour, f64)> = Vec::new();
        let mut h = at;
        // Back from `at`: silent trading hours count, silent quiet hours
        // are skipped, any trade ends the run. A day and a half at most.
        while h > at - 36 && h >= self.first {
            if self.cell_txns(cell, h) > 0 {
                break;
            }
            let usual = self.usual(h, st.weeks, |p| self.cell_txns(cell, p) as f64)?;
            if usual >= st.min_hourly_transactions {
                silent.push((h, usual));
            }
            h -= 1;
        }
        if silent.len() < st.hours as usize {
            return None;
        }
        let since = silent.last().map(|s| s.0)?;
        let producers = self.producers_of(cell, since, st.weeks);
        if producers.is_empty() {
            return None;
        }
        for p in &producers {
            for &(h, _) in &silent {
                let usual = self.usual(h, st.weeks, |q| self.elsewhere(p, cell, q))?;
                if usual <= 0.0 || self.elsewhere(p, cell, h) < st.producer_share * usual {
                    return None;
                }
            }
        }
        Some(Stop {
            cell: cell.clone(),
            since,
            hours: silent.len() as u32,
            usual_txns: silent.iter().map(|s| s.1).sum(),
            producers,
        })
    }

    /// Every cell silent at `at`, in order.
    pub fn stops(&self, at: Hour, st: &StopSettings) -> Vec<Stop> {
        let mut cells: Vec<&StopCell> = self.txns.keys().collect();
        cells.sort();
        cells
            .into_iter()
            .filter_map(|c| self.stopped(c, at, st))
            .collect()
    }

    /// Whether the cell traded in hour `h`.
    pub fn traded(&self, cell: &StopCell, h: Hour) -> bool {
        self.cell_txns(cell, h) > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(d: &str) -> StopCell {
        (d.to_owned(), "I".to_owned())
    }

    /// Four weeks and two days of a cell trading 10 an hour from 08:00 to
    /// 21:00 (hours of the day as UTC here), carried by bank-a, which also
    /// carries a second cell trading the same hours.
    fn steady(weeks: i64) -> Hourly {
        let mut h = Hourly {
            first: 0,
            last: weeks * WEEK + 48,
            ..Hourly::default()
        };
        for t in h.first..=h.last {
            if (8..21).contains(&(t % 24)) {
                for c in ["31.72.01", "31.72.02"] {
                    h.txns.entry(cell(c)).or_default().insert(t, 10);
                    h.merchants
                        .entry("bank-a".into())
                        .or_default()
                        .entry(cell(c))
                        .or_default()
                        .insert(t, 4);
                }
            }
        }
        h
    }

    fn silence(h: &mut Hourly, c: &str, hours: std::ops::RangeInclusive<Hour>, producer_too: bool) {
        for t in hours {
            h.txns.get_mut(&cell(c)).unwrap().remove(&t);
            for (_, cells) in h.merchants.iter_mut() {
                for (k, s) in cells.iter_mut() {
                    if k == &cell(c) || producer_too {
                        s.remove(&t);
                    }
                }
            }
            if producer_too {
                for s in h.txns.values_mut() {
                    s.remove(&t);
                }
            }
        }
    }

    #[test]
    fn a_cell_silent_for_three_trading_hours_while_its_producer_trades_stops() {
        let mut h = steady(4);
        let day = 4 * WEEK;
        // 11:00 to 13:00 of the last day: three trading hours.
        silence(&mut h, "31.72.01", day + 11..=day + 13, false);
        let st = StopSettings::default();
        assert_eq!(
            h.stopped(&cell("31.72.01"), day + 12, &st),
            None,
            "two hours"
        );
        let s = h
            .stopped(&cell("31.72.01"), day + 13, &st)
            .expect("stopped");
        assert_eq!((s.since, s.hours, s.usual_txns), (day + 11, 3, 30.0));
        assert_eq!(s.producers, ["bank-a"]);
        assert_eq!(h.stops(day + 13, &st).len(), 1);
        // It trades again: no stop.
        assert_eq!(h.stopped(&cell("31.72.01"), day + 14, &st), None);
    }

    #[test]
    fn night_hours_neither_count_nor_break_a_silence() {
        let mut h = steady(4);
        let day = 4 * WEEK;
        // 19:00 to 20:00, the night, then 08:00 of the next day.
        silence(&mut h, "31.72.01", day + 19..=day + 24 + 8, false);
        let st = StopSettings::default();
        let s = h
            .stopped(&cell("31.72.01"), day + 24 + 8, &st)
            .expect("stopped");
        assert_eq!((s.since, s.hours), (day + 19, 3));
        // At 03:00 only the two evening hours count.
        assert_eq!(h.stopped(&cell("31.72.01"), day + 24 + 3, &st), None);
    }

    #[test]
    fn an_outage_of_the_producer_is_not_a_sudden_stop() {
        let mut h = steady(4);
        let day = 4 * WEEK;
        silence(&mut h, "31.72.01", day + 11..=day + 15, true);
        let st = StopSettings::default();
        assert_eq!(h.stops(day + 15, &st), vec![]);
    }

    #[test]
    fn a_cell_that_rarely_trades_or_lacks_history_is_never_stopped() {
        let st = StopSettings::default();
        // Three weeks of history: the usual needs four.
        let mut h = steady(3);
        silence(&mut h, "31.72.01", 3 * WEEK + 11..=3 * WEEK + 15, false);
        assert_eq!(h.stops(3 * WEEK + 15, &st), vec![]);
        // Four transactions an hour is below the 5 of a trading hour.
        let mut h = steady(4);
        for s in h.txns.values_mut() {
            for v in s.values_mut() {
                *v = 4;
            }
        }
        silence(&mut h, "31.72.01", 4 * WEEK + 11..=4 * WEEK + 15, false);
        assert_eq!(h.stops(4 * WEEK + 15, &st), vec![]);
    }

    /// `h` with its merchants kept only in the hours the rule reads at `at`.
    fn merchants_read_at(h: &Hourly, at: Hour, st: &StopSettings) -> Hourly {
        let hours = st.merchant_hours(at);
        let mut out = h.clone();
        for cells in out.merchants.values_mut() {
            for s in cells.values_mut() {
                s.retain(|t, _| hours.iter().any(|&(a, b)| (a..=b).contains(t)));
            }
        }
        out
    }

    #[test]
    fn the_merchants_of_the_hours_it_reads_decide_as_all_of_them() {
        let st = StopSettings::default();
        let day = 4 * WEEK;
        let mut cases = Vec::new();
        let mut h = steady(4);
        silence(&mut h, "31.72.01", day + 11..=day + 13, false);
        cases.push(h);
        let mut h = steady(4);
        silence(&mut h, "31.72.01", day + 19..=day + 24 + 8, false);
        cases.push(h);
        let mut h = steady(4);
        silence(&mut h, "31.72.01", day + 11..=day + 15, true);
        cases.push(h);
        // The producer also silent in the cell on the same hours of the
        // past weeks: it must still be found as the cell's producer.
        let mut h = steady(4);
        silence(&mut h, "31.72.01", day + 11..=day + 13, false);
        for k in 1..=4 {
            let hours = day - k * WEEK + 22..=day - k * WEEK + 24 + 7;
            silence(&mut h, "31.72.02", hours, false);
        }
        cases.push(h);
        let mut stops = 0;
        for h in &cases {
            for at in day..=h.last {
                let narrow = merchants_read_at(h, at, &st);
                let all = h.stops(at, &st);
                stops += all.len();
                assert_eq!(narrow.stops(at, &st), all, "at {at}");
            }
        }
        assert!(stops > 0, "the cases stop somewhere");
    }

    #[test]
    fn every_setting_is_checked() {
        let ok = StopSettings::default();
        assert_eq!(ok.check(), Ok(()));
        for (key, s) in [
            (
                "hours",
                StopSettings {
                    hours: 0,
                    ..ok.clone()
                },
            ),
            (
                "min_hourly_transactions",
                StopSettings {
                    min_hourly_transactions: 0.5,
                    ..ok.clone()
                },
            ),
            (
                "weeks",
                StopSettings {
                    weeks: 1,
                    ..ok.clone()
                },
            ),
            (
                "producer_share",
                StopSettings {
                    producer_share: 0.0,
                    ..ok.clone()
                },
            ),
        ] {
            assert_eq!(s.check().map_err(|e| e.0), Err(key));
        }
    }
}
