use std::collections::{BTreeMap, HashMap, HashSet};

use proptest::prelude::*;

use super::*;

fn day(s: &str) -> Day {
    parse_day(s).unwrap()
}

/// Totals of `merchants` merchants with equal revenue.
fn totals(amount: u64, txns: u64, merchants: u32) -> DayTotals {
    let each = amount.checked_div(u64::from(merchants)).unwrap_or(0);
    DayTotals {
        amount_idr: amount,
        txns,
        merchants_active: merchants,
        merchants_open: merchants,
        top_amounts: [each, if merchants > 1 { each } else { 0 }],
    }
}

/// Districts `(kota, district)` with daily totals per sector; every upper
/// level is the sum, merchants being distinct per district.
fn rollup(
    leaves: &[((&str, &str, &str), Day, DayTotals)],
) -> HashMap<Cell, BTreeMap<Day, DayTotals>> {
    let mut out: HashMap<Cell, BTreeMap<Day, DayTotals>> = HashMap::new();
    for &((kota, district, sector), d, t) in leaves {
        let mut cell = Some(Cell::new(
            Level::DistrictSector,
            kota.into(),
            district.into(),
            sector.into(),
        ));
        while let Some(c) = cell {
            let e = out.entry(c.clone()).or_default().entry(d).or_default();
            e.amount_idr += t.amount_idr;
            e.txns += t.txns;
            e.merchants_active += t.merchants_active;
            e.merchants_open += t.merchants_open;
            let mut top = [
                e.top_amounts[0],
                e.top_amounts[1],
                t.top_amounts[0],
                t.top_amounts[1],
            ];
            top.sort_unstable_by(|a, b| b.cmp(a));
            e.top_amounts = [top[0], top[1]];
            cell = c.parent();
        }
    }
    out
}

/// The input for `leaves` from `first` to `last`, every cell with a
/// baseline of 4 merchants and 280 transactions.
fn history(leaves: &[((&str, &str, &str), Day, DayTotals)], first: Day, last: Day) -> Input {
    let days = rollup(leaves);
    let baseline = BaselineTotals {
        merchants: 4,
        txns: 280,
    };
    Input {
        first_day: first,
        ranges: vec![(first, last)],
        baseline: days.keys().map(|c| (c.clone(), baseline)).collect(),
        days,
        incomplete: HashSet::new(),
    }
}

/// The rows of day `d` when `leaves` is all the data there is.
fn one_day(leaves: &[((&str, &str, &str), Day, DayTotals)], d: Day) -> Vec<Metrics> {
    let input = Input {
        first_day: d,
        ranges: vec![(d - HISTORY_DAYS, d)],
        days: rollup(leaves),
        baseline: HashMap::new(),
        incomplete: HashSet::new(),
    };
    compute(&input, &Params::standard(), d, d)
}

fn suppression_of(rows: &[Metrics], level: Level, kota: &str, district: &str) -> Suppression {
    rows.iter()
        .find(|r| r.cell.level == level && r.cell.kota == kota && r.cell.district == district)
        .unwrap()
        .suppression
}

#[test]
fn days_parse_and_format_across_a_leap_day() {
    assert_eq!(day("1970-01-01"), 0);
    assert_eq!(day("2020-02-29") + 1, day("2020-03-01"));
    assert_eq!(format_day(day("2024-02-29")), "2024-02-29");
    // 52 weeks before a day is the same weekday, leap year or not.
    assert_eq!(format_day(day("2021-02-28") - YEAR_LAG), "2020-03-01");
    assert_eq!((day("2021-02-28") - day("2020-03-01")) % 7, 0);
    assert!(parse_day("2020-02-30").is_err());
    assert!(parse_day("20200101").is_err());
}

#[test]
fn constant_activity_is_index_one_and_no_change() {
    let params = Params::standard();
    let mut leaves = Vec::new();
    for d in day("2019-12-01")..=day("2020-03-31") {
        leaves.push((("31.71", "31.71.01", "G"), d, totals(1_000, 10, 4)));
    }
    let input = history(&leaves, day("2019-12-01"), day("2020-03-31"));
    let rows = compute(&input, &params, day("2020-03-01"), day("2020-03-31"));
    assert_eq!(rows.len(), 31 * 4);
    for r in &rows {
        assert_eq!(r.suppression, Suppression::None, "{}", r.cell);
        assert_eq!(r.index, [Some(1.0); 3]);
        assert_eq!(r.wow, [Some(0.0); 3]);
        assert_eq!(r.chg4w, [Some(0.0); 3]);
        // No data a year earlier: nothing to compare with.
        assert_eq!(r.yoy, [None; 3]);
        let p = r.published();
        assert_eq!(p.index, [Some(1.0); 3]);
        assert_eq!(p.incomplete, Some(false));
    }
}

#[test]
fn a_parent_with_one_small_child_gives_up_the_next_smallest() {
    let d = day("2020-05-01");
    let leaves = [
        (("31.71", "31.71.01", "G"), d, totals(500, 2, 1)), // small
        (("31.71", "31.71.02", "G"), d, totals(900, 9, 3)),
        (("31.71", "31.71.03", "G"), d, totals(800, 8, 3)),
        (("31.72", "31.72.01", "G"), d, totals(800, 8, 3)),
        (("31.72", "31.72.02", "G"), d, totals(800, 9, 3)),
    ];
    let rows = one_day(&leaves, d);
    let get = |level, kota, district| suppression_of(&rows, level, kota, district);
    let ds = Level::DistrictSector;
    assert_eq!(get(ds, "31.71", "31.71.01"), Suppression::SmallCell);
    assert_eq!(get(ds, "31.71", "31.71.03"), Suppression::Complementary);
    assert_eq!(get(ds, "31.71", "31.71.02"), Suppression::None);
    assert_eq!(get(Level::KotaSector, "31.71", ""), Suppression::None);
    assert_eq!(get(ds, "31.72", "31.72.01"), Suppression::None);
    let small = rows.iter().find(|r| r.cell.district == "31.71.01").unwrap();
    assert!(small.published().withheld);
    assert_eq!(small.published().incomplete, None);
}

#[test]
fn a_suppressed_parent_with_published_children_loses_one() {
    // Sector G: kota 31.71 is small in total only through one district;
    // at sector level 31.71 is the single suppressed child, so its sibling
    // kota 31.72 is withheld, and then one of 31.72's districts.
    let d = day("2020-05-01");
    let leaves = [
        (("31.71", "31.71.01", "G"), d, totals(500, 2, 1)),
        (("31.72", "31.72.01", "G"), d, totals(800, 8, 3)),
        (("31.72", "31.72.02", "G"), d, totals(700, 9, 3)),
        (("31.73", "31.73.01", "G"), d, totals(900, 30, 9)),
    ];
    let rows = one_day(&leaves, d);
    let get = |level, kota, district| suppression_of(&rows, level, kota, district);
    assert_eq!(get(Level::KotaSector, "31.71", ""), Suppression::SmallCell);
    assert_eq!(
        get(Level::KotaSector, "31.72", ""),
        Suppression::Complementary
    );
    assert_eq!(
        get(Level::DistrictSector, "31.72", "31.72.01"),
        Suppression::Complementary
    );
    assert_eq!(
        get(Level::DistrictSector, "31.72", "31.72.02"),
        Suppression::None
    );
    assert_eq!(get(Level::KotaSector, "31.73", ""), Suppression::None);
}

#[test]
fn rows_follow_activity_for_28_days() {
    let d = day("2021-06-01");
    let leaves = [(("31.71", "31.71.01", "G"), d, totals(500, 20, 5))];
    let input = Input {
        first_day: d - 400,
        ranges: vec![(d - 400, d + 40)],
        days: rollup(&leaves),
        baseline: HashMap::new(),
        incomplete: HashSet::new(),
    };
    let rows = compute(&input, &Params::standard(), d - 3, d + 40);
    let days: Vec<Day> = rows
        .iter()
        .filter(|r| r.cell.level == Level::City)
        .map(|r| r.day)
        .collect();
    assert_eq!(days, (d..=d + 27).collect::<Vec<_>>());
    let after = rows.iter().find(|r| r.day == d + 1).unwrap();
    assert_eq!(
        after.suppression,
        Suppression::SmallCell,
        "a day without activity is small"
    );
}

#[test]
fn year_on_year_compares_the_7_day_averages_52_weeks_apart() {
    let mut params = Params::standard();
    params.min_merchants = 1;
    params.min_txns = 1;
    let mut leaves = Vec::new();
    // 2019-12-01 onwards, 10 txns a day; from 2020-12-01, 15 a day.
    for d in day("2019-12-01")..=day("2021-03-31") {
        let txns = if d >= day("2020-12-01") { 15 } else { 10 };
        leaves.push((("31.71", "31.71.01", "G"), d, totals(txns * 100, txns, 4)));
    }
    let input = history(&leaves, day("2019-12-01"), day("2021-03-31"));
    let d = day("2021-03-01");
    let rows = compute(&input, &params, d, d);
    let r = &rows[0];
    assert_eq!(r.index[Measure::Txns as usize], Some(1.5));
    assert_eq!(r.yoy[Measure::Txns as usize], Some(0.5));
    assert_eq!(r.yoy[Measure::MerchantsOpen as usize], Some(0.0));
    assert!(r.publishable.yoy);
    // A year earlier lies before the data: no comparison.
    let early = compute(&input, &params, day("2020-06-01"), day("2020-06-01"));
    assert_eq!(early[0].yoy, [None; 3]);
    assert_eq!(early[0].index[Measure::Txns as usize], Some(1.0));
}

#[test]
fn one_dominant_merchant_withholds_the_cell() {
    let d = day("2020-05-01");
    // One medium merchant and two stalls: the stalls' revenue (1 500) is
    // under 10 % of the medium merchant's (20 000).
    let dominated = DayTotals {
        amount_idr: 21_500,
        txns: 12,
        merchants_active: 3,
        merchants_open: 3,
        top_amounts: [20_000, 1_000],
    };
    // The same merchant among peers: the rest is 10 % of it or more.
    let spread = DayTotals {
        amount_idr: 24_000,
        txns: 12,
        merchants_active: 4,
        merchants_open: 4,
        top_amounts: [20_000, 2_000],
    };
    let leaves = [
        (("31.71", "31.71.01", "G"), d, dominated),
        (("31.71", "31.71.02", "G"), d, spread),
        (("31.71", "31.71.03", "G"), d, totals(9_000, 9, 3)),
    ];
    let rows = one_day(&leaves, d);
    let get = |district| suppression_of(&rows, Level::DistrictSector, "31.71", district);
    assert_eq!(get("31.71.01"), Suppression::Dominance);
    assert_eq!(get("31.71.02"), Suppression::None);
    // The parent would give the dominated cell away: one more is withheld.
    assert_eq!(get("31.71.03"), Suppression::Complementary);
    assert!(
        rows.iter()
            .find(|r| r.cell.district == "31.71.01")
            .unwrap()
            .published()
            .withheld
    );
}

/// Three producers' worth of activity, one of which is missing on three
/// days that coverage marks incomplete.
#[test]
fn an_outage_is_left_out_of_the_averages_not_read_as_a_collapse() {
    let params = Params::standard();
    let (first, last) = (day("2019-12-01"), day("2020-03-31"));
    let gap = day("2020-03-10")..=day("2020-03-12");
    let mut leaves = Vec::new();
    for d in first..=last {
        // Two thirds of the activity on the outage days.
        let t = if gap.contains(&d) {
            totals(600, 6, 4)
        } else {
            totals(900, 9, 6)
        };
        leaves.push((("31.71", "31.71.01", "G"), d, t));
    }
    let mut input = history(&leaves, first, last);
    let cells: Vec<Cell> = input.days.keys().cloned().collect();
    let rows_without = compute(&input, &params, day("2020-03-01"), last);
    for c in &cells {
        for d in gap.clone() {
            input.incomplete.insert((c.clone(), d));
        }
    }
    let rows = compute(&input, &params, day("2020-03-01"), last);
    let city = |rows: &[Metrics], d: Day| {
        rows.iter()
            .find(|r| r.cell.level == Level::City && r.day == d)
            .unwrap()
            .clone()
    };
    // Without coverage, the outage drags the 7-day average down.
    let naive = city(&rows_without, day("2020-03-12"));
    assert!(naive.wow[0].unwrap() < -0.1, "{:?}", naive.wow);
    for d in day("2020-03-08")..=day("2020-03-20") {
        let r = city(&rows, d);
        assert_eq!(r.incomplete, gap.contains(&d));
        let missing = gap.clone().filter(|g| (d - 6..=d).contains(g)).count() as u8;
        assert_eq!(r.covered_days, 7 - missing);
        for m in MEASURES {
            let i = m as usize;
            assert_eq!(
                r.ma7[i].map(|v| (v * 1e9).round() / 1e9),
                Some(r.baseline[i].unwrap()),
                "{} {m:?}: the covered days are as usual",
                format_day(d)
            );
            assert_eq!(r.wow[i].map(|v| (v * 1e9).round()), Some(0.0));
        }
    }
}

#[test]
fn every_reference_cell_has_a_public_row_every_day() {
    let kota_of = vec![
        ("31.71.01".to_owned(), "31.71".to_owned()),
        ("31.71.02".to_owned(), "31.71".to_owned()),
        ("31.72.01".to_owned(), "31.72".to_owned()),
    ];
    let sectors = vec!["G".to_owned(), "I".to_owned()];
    let cells = reference_cells(&kota_of, &sectors);
    // 6 district x sector, 4 kota x sector, 2 sectors, the city.
    assert_eq!(cells.len(), 13);
    let d = day("2020-05-01");
    // One merchant trades on one day in one cell.
    let leaves = [(("31.71", "31.71.01", "G"), d, totals(50_000, 1, 1))];
    let input = Input {
        first_day: d - 10,
        ranges: vec![(d - 10 - HISTORY_DAYS, d + 40)],
        days: rollup(&leaves),
        baseline: HashMap::new(),
        incomplete: HashSet::new(),
    };
    let rows = compute(&input, &Params::standard(), d - 10, d + 40);
    let public = public_rows(&rows, &cells, d - 10, d + 40);
    assert_eq!(public.len(), 13 * 51);
    // Its row looks exactly like every other cell's, on every day.
    for p in &public {
        assert_eq!(p, &Published::withheld(p.cell.clone(), p.day));
    }
}

#[test]
fn public_values_are_rounded_to_hundredths() {
    assert_eq!(round_public(0.876_543), 0.88);
    assert_eq!(round_public(-0.114_9), -0.11);
    let mut params = Params::standard();
    params.min_merchants = 1;
    let mut leaves = Vec::new();
    for d in day("2019-12-01")..=day("2020-03-31") {
        let txns = 10 + (d % 3) as u64;
        leaves.push((("31.71", "31.71.01", "G"), d, totals(txns * 1_234, txns, 4)));
    }
    let input = history(&leaves, day("2019-12-01"), day("2020-03-31"));
    for r in compute(&input, &params, day("2020-03-01"), day("2020-03-31")) {
        let p = r.published();
        for v in p.index.iter().chain(&p.wow).chain(&p.chg4w).flatten() {
            assert!(((v * 100.0).round() - v * 100.0).abs() < 1e-9, "{v}");
        }
        assert!(p.index[0].is_some());
    }
}

/// A random day of district totals over two kotas and two sectors.
fn districts() -> impl Strategy<Value = Vec<((&'static str, &'static str, &'static str), DayTotals)>>
{
    let cells = [
        ("31.71", "31.71.01"),
        ("31.71", "31.71.02"),
        ("31.71", "31.71.03"),
        ("31.72", "31.72.01"),
        ("31.72", "31.72.02"),
        ("31.73", "31.73.01"),
    ];
    let one = (0u64..12, 0u32..5, prop::bool::weighted(0.8));
    prop::collection::vec(one, cells.len() * 2).prop_map(move |v| {
        v.into_iter()
            .enumerate()
            .filter(|(_, (_, _, present))| *present)
            .map(|(i, (txns, merchants, _))| {
                let (kota, district) = cells[i % cells.len()];
                let sector = if i < cells.len() { "G" } else { "I" };
                let merchants = merchants.min(txns as u32);
                (
                    (kota, district, sector),
                    totals(txns * 1_000, txns, merchants),
                )
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever the totals: nothing small is published, no published
    /// parent has exactly one withheld child, no withheld parent has all
    /// children published, and 7-day values are published only when all
    /// seven days are.
    #[test]
    fn suppression_leaves_nothing_to_subtract(days in prop::collection::vec(districts(), 8)) {
        let params = Params::standard();
        let start = day("2022-03-01");
        let mut leaves = Vec::new();
        for (k, cells) in days.iter().enumerate() {
            for &(cell, t) in cells {
                leaves.push((cell, start + k as Day, t));
            }
        }
        let end = start + days.len() as Day - 1;
        let input = Input {
            first_day: start,
            ranges: vec![(start, end)],
            days: rollup(&leaves),
            baseline: HashMap::new(),
            incomplete: HashSet::new(),
        };
        let rows = compute(&input, &params, start, end);
        let at: HashMap<(Cell, Day), &Metrics> = rows.iter().map(|r| ((r.cell.clone(), r.day), r)).collect();
        for r in &rows {
            let p = r.published();
            if !p.withheld {
                prop_assert!(r.totals.merchants_active >= 3 && r.totals.txns >= 5, "{} published small", r.cell);
            } else {
                prop_assert_eq!(p.index, [None; 3]);
                prop_assert_eq!(p.wow, [None; 3]);
                prop_assert_eq!(p.incomplete, None);
            }
            if r.publishable.ma7 {
                for k in 0..7 {
                    let q = at.get(&(r.cell.clone(), r.day - k));
                    prop_assert!(q.is_some_and(|q| q.suppression == Suppression::None));
                }
            }
            let kids: Vec<&&Metrics> = rows
                .iter()
                .filter(|c| c.day == r.day && c.cell.parent().as_ref() == Some(&r.cell))
                .collect::<Vec<_>>()
                .iter()
                .map(|c| at.get(&(c.cell.clone(), c.day)).unwrap())
                .collect();
            let withheld = kids.iter().filter(|k| k.suppression != Suppression::None).count();
            if r.suppression == Suppression::None {
                prop_assert_ne!(withheld, 1, "{} on day {} has one withheld child", r.cell, r.day);
            } else if !kids.is_empty() {
                prop_assert!(withheld >= 1, "{} withheld but its children sum to it", r.cell);
            }
        }
    }
}

#[test]
fn the_aligned_comparison_follows_lebaran_between_years() {
    let mut params = Params::standard();
    params.min_merchants = 1;
    params.min_txns = 1;
    let lebaran = [day("2020-05-24"), day("2021-05-13")];
    params.moving_holidays = vec![MovingHoliday {
        dates: lebaran.to_vec(),
        before: 21,
        after: 14,
    }];
    // Inside the window: the same day relative to the previous Lebaran.
    assert_eq!(params.aligned_day(day("2021-05-15")), day("2020-05-26"));
    assert_eq!(params.aligned_day(day("2021-04-22")), day("2020-05-03"));
    // Outside it, or with no Lebaran a year earlier: 52 weeks.
    assert_eq!(
        params.aligned_day(day("2021-06-01")),
        day("2021-06-01") - 364
    );
    assert_eq!(
        params.aligned_day(day("2020-05-24")),
        day("2020-05-24") - 364
    );
    // Activity halves for the three days from each Lebaran: the aligned
    // comparison sets dip against dip and sees no change, where 52 weeks
    // earlier sees a dip in one year or the other.
    let mut leaves = Vec::new();
    for d in day("2019-12-01")..=day("2021-07-31") {
        let dip = lebaran.iter().any(|l| (*l..*l + 3).contains(&d));
        let txns = if dip { 5 } else { 10 };
        leaves.push((("31.71", "31.71.01", "G"), d, totals(txns * 100, txns, 4)));
    }
    let input = history(&leaves, day("2019-12-01"), day("2021-07-31"));
    let rows = compute(&input, &params, day("2021-04-22"), day("2021-05-27"));
    let txn = Measure::Txns as usize;
    let (mut swings, mut aligned_swings) = (0, 0);
    for r in rows.iter().filter(|r| r.cell.level == Level::City) {
        assert_eq!(r.yoy_aligned[txn], Some(0.0), "{}", format_day(r.day));
        assert!(r.publishable.yoy_aligned);
        if r.yoy[txn].is_some_and(|v| v.abs() > 0.05) {
            swings += 1;
        }
        if r.yoy_aligned[txn].is_some_and(|v| v.abs() > 0.05) {
            aligned_swings += 1;
        }
    }
    assert!(swings >= 14, "two false swings of a week each: {swings}");
    assert_eq!(aligned_swings, 0);
}
