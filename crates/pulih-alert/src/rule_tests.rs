use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use pulih_metrics::{parse_day, Cell, Day, Level, MovingHoliday, Params};

use super::*;

fn day(s: &str) -> Day {
    parse_day(s).unwrap()
}

const FIRST: &str = "2019-01-01";
const LAST: &str = "2021-12-31";
const LEBARAN: [&str; 3] = ["2019-06-05", "2020-05-24", "2021-05-13"];

fn params() -> Params {
    Params {
        moving_holidays: vec![MovingHoliday {
            dates: LEBARAN.iter().map(|d| day(d)).collect(),
            before: 21,
            after: 14,
        }],
        ..Params::standard()
    }
}

fn guards() -> Vec<(Day, Day)> {
    LEBARAN.iter().map(|d| (day(d) - 21, day(d) + 14)).collect()
}

/// xorshift64*: the same noise on every run.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A district × sector cell: its kota, district, sector, daily revenue,
/// merchants, and what multiplies its revenue (and merchants) on a day.
struct Leaf {
    kota: &'static str,
    district: &'static str,
    sector: &'static str,
    revenue: f64,
    merchants: f64,
    noise: f64,
    shape: fn(Day) -> f64,
}

fn steady(_: Day) -> f64 {
    1.0
}

/// Each district's values, and their sums for the kota × sector cells
/// and the city; `incomplete` days are incomplete in every cell.
fn history(leaves: &[Leaf], incomplete: &[Day], withheld: &[(&str, Day)]) -> History {
    let (first, last) = (day(FIRST), day(LAST));
    let mut days: HashMap<Cell, BTreeMap<Day, DayValue>> = HashMap::new();
    let mut rng = Rng(0x5eed);
    for leaf in leaves {
        for d in first..=last {
            let weekly = if (d + 4).rem_euclid(7) >= 5 { 1.3 } else { 1.0 };
            let f = (leaf.shape)(d);
            let noise = 1.0 + leaf.noise * (rng.unit() * 2.0 - 1.0);
            let v = DayValue {
                amount: leaf.revenue * f * weekly * noise,
                txns: leaf.merchants * 3.0 * f * weekly,
                merchants_open: Some((leaf.merchants * f.min(1.0)).round()),
                incomplete: incomplete.contains(&d),
                withheld: withheld.iter().any(|&(c, w)| w == d && c == leaf.district),
            };
            let cells = [
                Cell::new(
                    Level::DistrictSector,
                    leaf.kota.into(),
                    leaf.district.into(),
                    leaf.sector.into(),
                ),
                Cell::new(
                    Level::KotaSector,
                    leaf.kota.into(),
                    String::new(),
                    leaf.sector.into(),
                ),
                Cell::new(Level::City, String::new(), String::new(), String::new()),
            ];
            for (i, cell) in cells.into_iter().enumerate() {
                let e = days.entry(cell).or_default().entry(d).or_insert(DayValue {
                    amount: 0.0,
                    txns: 0.0,
                    merchants_open: Some(0.0),
                    incomplete: v.incomplete,
                    withheld: false,
                });
                e.amount += v.amount;
                e.txns += v.txns;
                e.merchants_open = Some(e.merchants_open.unwrap() + v.merchants_open.unwrap());
                e.withheld |= i == 0 && v.withheld;
            }
        }
    }
    History { first, last, days }
}

/// A 30 % drop of revenue and 10 % of merchants from 2021-06-01, gone
/// from 2021-08-01.
fn downturn(d: Day) -> f64 {
    if (day("2021-06-01")..day("2021-08-01")).contains(&d) {
        0.7
    } else {
        1.0
    }
}

/// Jakarta-like: two kota, three sectors, one district of the food sector
/// in 31.72 with the downturn (`shape`).
fn city(shape: fn(Day) -> f64) -> Vec<Leaf> {
    let mut leaves = Vec::new();
    for (kota, districts) in [
        ("31.71", ["31.71.01", "31.71.02"]),
        ("31.72", ["31.72.01", "31.72.02"]),
    ] {
        for district in districts {
            for sector in ["C", "G", "I"] {
                let hit = kota == "31.72" && sector == "I";
                leaves.push(Leaf {
                    kota,
                    district,
                    sector,
                    revenue: 50_000_000.0,
                    merchants: 40.0,
                    noise: 0.2,
                    shape: if hit { shape } else { steady },
                });
            }
        }
    }
    leaves
}

fn run(h: &History, from: &str, to: &str) -> Vec<Transition> {
    let (settings, params, guards) = (Settings::default(), params(), guards());
    Rule::new(&settings, &params, &guards, h).run(day(from), day(to), &HashMap::new())
}

fn ids(ts: &[Transition]) -> Vec<(String, bool, String)> {
    ts.iter()
        .map(|t| (t.id(), t.firing, pulih_metrics::format_day(t.day)))
        .collect()
}

#[test]
fn a_sector_that_drops_in_one_kota_fires_after_two_weeks_and_clears_after_recovery() {
    let h = history(&city(downturn), &[], &[]);
    let ts = run(&h, "2020-07-01", "2021-12-24");
    let kota = "sector_downturn/kota_sector/31.72/I";
    let fired: Vec<_> = ts.iter().filter(|t| t.firing).collect();
    assert!(!fired.is_empty(), "nothing fired");
    assert!(
        fired
            .iter()
            .all(|t| t.cell.sector == "I" && t.cell.kota == "31.72"),
        "{:?}",
        ids(&ts)
    );
    let k = ts
        .iter()
        .find(|t| t.id() == kota && t.firing)
        .expect("kota alert");
    // The 28-day change reaches -15 % after 15 days of a 30 % drop
    // (2021-06-15); a week later it has held two weekly evaluations.
    // The 28-day change crosses -15 % about two weeks into the drop,
    // give or take the noise; the alert waits for a second weekly
    // evaluation.
    assert!(
        (day("2021-06-14")..=day("2021-06-28")).contains(&k.day),
        "fired on {}",
        pulih_metrics::format_day(k.day)
    );
    assert_eq!(k.weeks, 2);
    let (settings, params, guards) = (Settings::default(), params(), guards());
    let rule = Rule::new(&settings, &params, &guards, &h);
    assert!(rule.assess(&k.cell, k.day - 7).condition);
    assert!(
        !(rule.assess(&k.cell, k.day - 1).condition && rule.assess(&k.cell, k.day - 8).condition)
    );
    let s = k.assessment.stats.unwrap();
    assert!(s.yoy <= -0.15 && s.chg4w <= -0.10, "{s:?}");
    assert!(k.assessment.z.unwrap() <= -2.5);
    let cleared = ts
        .iter()
        .find(|t| t.id() == kota && !t.firing)
        .expect("cleared");
    // Year-on-year is back above -10 % once two thirds of the window
    // have recovered (about 2021-08-19); clearing waits a week more.
    assert!(
        (day("2021-08-22")..=day("2021-08-31")).contains(&cleared.day),
        "cleared on {}",
        pulih_metrics::format_day(cleared.day)
    );
    assert_eq!(cleared.since, k.day);
    // One firing and one clearing per alert: the hysteresis holds.
    for id in ts.iter().map(Transition::id) {
        assert_eq!(
            ts.iter().filter(|t| t.id() == id).count(),
            2,
            "{:?}",
            ids(&ts)
        );
    }
}

#[test]
fn a_drop_of_the_whole_city_is_not_a_sector_downturn() {
    let mut leaves = city(steady);
    for l in &mut leaves {
        l.shape = downturn;
    }
    let h = history(&leaves, &[], &[]);
    assert!(run(&h, "2020-07-01", "2021-12-24").is_empty());
}

#[test]
fn a_sector_dip_that_moves_with_lebaran_each_year_does_not_fire() {
    fn lebaran_dip(d: Day) -> f64 {
        let near = LEBARAN
            .iter()
            .any(|l| (day(l) - 10..=day(l) + 7).contains(&d));
        if near {
            0.5
        } else {
            1.0
        }
    }
    let h = history(&city(lebaran_dip), &[], &[]);
    let ts = run(&h, "2020-01-01", "2021-12-24");
    assert!(ts.is_empty(), "{:?}", ids(&ts));
}

#[test]
fn an_incomplete_day_keeps_every_window_over_it_out_of_evaluation() {
    let incomplete = [day("2021-04-20")];
    let h = history(&city(downturn), &incomplete, &[]);
    let (settings, params, guards) = (Settings::default(), params(), guards());
    let rule = Rule::new(&settings, &params, &guards, &h);
    let cell = Cell::new(Level::KotaSector, "31.72".into(), String::new(), "I".into());
    // Both windows: the 28 days up to the day and the 28 before them.
    for d in day("2021-04-20")..=day("2021-06-14") {
        assert_eq!(
            rule.assess(&cell, d).stats,
            None,
            "{}",
            pulih_metrics::format_day(d)
        );
    }
    assert!(rule.assess(&cell, day("2021-06-15")).stats.is_some());
    // The days a year later compare with it too.
    let later = day("2021-04-20") + 364;
    assert_eq!(rule.assess(&cell, later).stats, None);
    // The downturn still fires, once two weekly evaluations after the
    // gap hold it.
    let ts = run(&h, "2020-07-01", "2021-12-24");
    let k = ts
        .iter()
        .find(|t| t.firing && t.cell == cell)
        .expect("fires");
    assert!(
        k.day >= day("2021-06-22"),
        "{}",
        pulih_metrics::format_day(k.day)
    );
}

#[test]
fn a_withheld_cell_never_alerts() {
    let withheld: Vec<(&str, Day)> = (day("2021-01-01")..=day("2021-12-31"))
        .map(|d| ("31.72.01", d))
        .collect();
    let h = history(&city(downturn), &[], &withheld);
    let ts = run(&h, "2020-07-01", "2021-12-24");
    assert!(
        ts.iter().all(|t| t.cell.district != "31.72.01"),
        "{:?}",
        ids(&ts)
    );
    assert!(ts.iter().any(|t| t.cell.level == Level::KotaSector));
}

#[test]
fn a_small_district_does_not_alert_but_its_kota_does() {
    let mut leaves = city(downturn);
    for l in &mut leaves {
        l.merchants = 12.0;
    }
    let h = history(&leaves, &[], &[]);
    let ts = run(&h, "2020-07-01", "2021-12-24");
    assert!(
        ts.iter().all(|t| t.cell.level == Level::KotaSector),
        "{:?}",
        ids(&ts)
    );
    assert!(!ts.is_empty());
}

#[test]
fn a_noisy_cell_needs_a_bigger_drop() {
    // The same 30 % drop in a cell whose revenue swings ±90 % a day: its
    // past weeks vary more, so the drop is fewer robust deviations out.
    let noisy_leaves = || {
        let mut leaves = city(downturn);
        for l in &mut leaves {
            if l.kota == "31.72" && l.sector == "I" {
                l.noise = 0.9;
            }
        }
        leaves
    };
    let (quiet, noisy) = (
        history(&city(downturn), &[], &[]),
        history(&noisy_leaves(), &[], &[]),
    );
    let (settings, params, guards) = (Settings::default(), params(), guards());
    let cell = Cell::new(Level::KotaSector, "31.72".into(), String::new(), "I".into());
    let z = |h: &History| {
        let rule = Rule::new(&settings, &params, &guards, h);
        let a = rule.assess(&cell, day("2021-06-27"));
        assert!(a.stats.is_some_and(|s| s.yoy <= -0.15), "{a:?}");
        a.z.unwrap()
    };
    let (zq, zn) = (z(&quiet), z(&noisy));
    assert!(zq <= -2.5, "{zq}");
    assert!(zn > zq, "noisy {zn} against quiet {zq}");
}

#[test]
fn the_summary_reads_as_a_sentence() {
    let h = history(&city(downturn), &[], &[]);
    let ts = run(&h, "2020-07-01", "2021-12-24");
    let k = ts
        .iter()
        .find(|t| t.firing && t.cell.level == Level::KotaSector)
        .unwrap();
    let names = Names {
        kota: [("31.72".to_owned(), "Jakarta Utara".to_owned())].into(),
        district: HashMap::new(),
        sector: [(
            "I".to_owned(),
            "Penyediaan Akomodasi dan Makan Minum".to_owned(),
        )]
        .into(),
    };
    let s = summary(k, &names);
    let yoy = (k.assessment.stats.unwrap().yoy * 100.0).round();
    assert!(
        s.starts_with(&format!(
            "Penyediaan Akomodasi dan Makan Minum in Jakarta Utara: revenue \u{2212}{} % year on year, \u{2212}",
            -yoy
        )),
        "{s}"
    );
    assert!(s.contains("points worse than the city; 2 weeks"), "{s}");
}

#[test]
fn every_setting_is_checked() {
    let ok = Settings::default();
    assert_eq!(ok.check(), Ok(()));
    let cases: Vec<(&str, Settings)> = vec![
        (
            "window_days",
            Settings {
                window_days: 3,
                ..ok.clone()
            },
        ),
        (
            "depth_yoy",
            Settings {
                depth_yoy: -1.5,
                ..ok.clone()
            },
        ),
        (
            "relative_points",
            Settings {
                relative_points: f64::NAN,
                ..ok.clone()
            },
        ),
        (
            "significance_z",
            Settings {
                significance_z: 1.0,
                ..ok.clone()
            },
        ),
        (
            "significance_min_weeks",
            Settings {
                significance_min_weeks: 60,
                ..ok.clone()
            },
        ),
        (
            "significance_min_sd",
            Settings {
                significance_min_sd: 0.0,
                ..ok.clone()
            },
        ),
        (
            "diffusion_district_share",
            Settings {
                diffusion_district_share: 1.5,
                ..ok.clone()
            },
        ),
        (
            "duration_weeks",
            Settings {
                duration_weeks: 0,
                ..ok.clone()
            },
        ),
        (
            "clear_yoy",
            Settings {
                clear_yoy: -0.2,
                ..ok.clone()
            },
        ),
        (
            "clear_chg4w",
            Settings {
                clear_chg4w: -0.1,
                ..ok.clone()
            },
        ),
        (
            "critical_yoy",
            Settings {
                critical_yoy: -0.1,
                ..ok.clone()
            },
        ),
    ];
    for (key, s) in cases {
        assert_eq!(s.check().map_err(|e| e.0), Err(key));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    /// Evaluating in two runs, the second starting from the alerts the
    /// first left active, gives what one run gives; and running again
    /// over the same days with the end state raises nothing new.
    #[test]
    fn evaluation_split_anywhere_gives_the_same_changes(split in 0i32..120) {
        let h = history(&city(downturn), &[], &[]);
        let (settings, params, guards) = (Settings::default(), params(), guards());
        let rule = Rule::new(&settings, &params, &guards, &h);
        let (from, to) = (day("2021-05-15"), day("2021-09-10"));
        let whole = rule.run(from, to, &HashMap::new());
        let mid = from + split;
        let first = rule.run(from, mid, &HashMap::new());
        let mut active = HashMap::new();
        for t in &first {
            if t.firing {
                active.insert(t.id(), Active { since: t.since, severity: t.severity });
            } else {
                active.remove(&t.id());
            }
        }
        let mut both = first.clone();
        both.extend(rule.run(mid + 1, to, &active));
        prop_assert_eq!(ids(&whole), ids(&both));
        // The last state again over the last day: nothing new.
        let mut end = HashMap::new();
        for t in &whole {
            if t.firing {
                end.insert(t.id(), Active { since: t.since, severity: t.severity });
            } else {
                end.remove(&t.id());
            }
        }
        let again = rule.run(to, to, &end);
        prop_assert!(again.is_empty(), "{:?}", ids(&again));
    }
}

#[test]
fn every_change_is_a_valid_alert_record_and_alertmanager_alert() {
    let path = format!("{}/../../schemas/alert.v1.json", env!("CARGO_MANIFEST_DIR"));
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&schema)
        .unwrap();
    let h = history(&city(downturn), &[], &[]);
    let ts = run(&h, "2020-07-01", "2021-12-24");
    assert!(ts.len() >= 2);
    for t in &ts {
        let e = crate::message::AlertEvent::new(
            t,
            &Names::default(),
            "pulih_public",
            "",
            1_625_000_000,
        );
        let v = serde_json::to_value(&e).unwrap();
        let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{v}: {errors:?}");
        let back: crate::message::AlertEvent = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
        let am = e.to_alertmanager(1_625_000_000, 1_625_000_240, "pulih");
        assert_eq!(am["labels"]["alertname"], "PulihSectorDownturn");
        assert_eq!(am["labels"]["alert_id"], t.id());
        assert_eq!(am["endsAt"], "2021-06-29T20:57:20Z");
        if t.cell.level == Level::KotaSector {
            assert!(am["labels"].get("district_code").is_none(), "{am}");
        }
    }
    // A sudden stop and its resolution.
    let stop = crate::stop::Stop {
        cell: ("31.72.01".into(), "I".into()),
        // 2021-10-20 11:00 UTC, 18:00 in Jakarta.
        since: i64::from(day("2021-10-20")) * 24 + 11,
        hours: 3,
        usual_txns: 30.0,
        producers: vec!["bank-a".into(), "qris-c".into()],
    };
    let fired = crate::message::AlertEvent::stop(&stop, "31.72", &Names::default(), "p", "", 0);
    assert_eq!(
        fired.values.silent_since.as_deref(),
        Some("2021-10-20T18:00:00+07:00")
    );
    assert_eq!(
        fired.summary,
        "I in 31.72.01, 31.72: no transactions for 3 trading hours since 2021-10-20 18:00 WIB, while bank-a, qris-c keep trading elsewhere"
    );
    let resolved = fired.stop_resolved(i64::from(day("2021-10-20")) * 24 + 17, 60);
    assert_eq!(
        resolved.summary,
        "I in 31.72.01, 31.72: no longer a sudden stop at 2021-10-21 00:00 WIB; silent since 2021-10-20 18:00 WIB"
    );
    assert_eq!(
        (resolved.day.as_str(), resolved.since.as_str()),
        ("2021-10-21", "2021-10-20")
    );
    for e in [&fired, &resolved] {
        let v = serde_json::to_value(e).unwrap();
        let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{v}: {errors:?}");
        assert_eq!(
            e.to_alertmanager(0, 60, "pulih")["labels"]["alertname"],
            "PulihSuddenStop"
        );
    }

    // A withheld value never appears: a change carries only rounded values.
    let e = crate::message::AlertEvent::new(&ts[0], &Names::default(), "p", "", 0);
    let yoy = e.values.revenue_yoy.unwrap();
    assert_eq!(yoy, (yoy * 100.0).round() / 100.0);
}
