use std::collections::HashMap;

use pulih_event::holidays::{day_number, Holidays};
use pulih_event::{validate, Limits, Reference};

use crate::scenario::{Faults, Scenario, JAKARTA};
use crate::{Kind, SimEvent, Simulation};

fn day(s: &str) -> i32 {
    day_number(s).unwrap()
}

fn jakarta(end: &str) -> Simulation {
    let r = Reference::jakarta();
    Simulation::new(Scenario::jakarta(day(end), &r), &r, &Holidays::jakarta())
}

/// Revenue and transactions per (kota, sector) over the days `from..=to`.
fn totals(sim: &mut Simulation, from: i32, to: i32) -> HashMap<(String, String), (u64, u64)> {
    let r = Reference::jakarta();
    let mut out: HashMap<(String, String), (u64, u64)> = HashMap::new();
    for d in from..=to {
        for e in sim.day(d) {
            if e.kind != Kind::Payment {
                continue;
            }
            let p = validate(&e.json, &r, &Limits::default()).unwrap();
            let kota = p.district_code[..5].to_owned();
            let t = out.entry((kota, p.sector.as_str().to_owned())).or_default();
            t.0 += p.amount_idr;
            t.1 += 1;
        }
    }
    out
}

#[test]
fn the_shipped_scenario_is_valid_and_every_event_passes_validation() {
    let r = Reference::jakarta();
    let mut sim = jakarta("2026-11-29");
    assert!(sim.merchant_count() > 1000);
    let mut sectors = std::collections::HashSet::new();
    let mut districts = std::collections::HashSet::new();
    let mut n = 0;
    for d in day("2024-03-01")..day("2024-03-08") {
        for e in sim.day(d) {
            let p = validate(&e.json, &r, &Limits::default())
                .unwrap_or_else(|x| panic!("{x}: {}", String::from_utf8_lossy(&e.json)));
            assert_eq!(p.occurred_at.unix_millis(), e.occurred_ms);
            assert_eq!(p.amount_idr, e.amount_idr);
            assert_eq!(pulih_event::calendar::day_of(e.send_ms), i64::from(d));
            sectors.insert(p.sector);
            districts.insert(p.district_code.clone());
            n += 1;
        }
    }
    assert!(n > 3_000, "a week of Jakarta is more than {n} payments");
    assert!(sectors.len() >= 10, "{} sectors", sectors.len());
    assert!(districts.len() >= 40, "{} districts", districts.len());
}

#[test]
fn a_day_is_the_same_bytes_whatever_was_generated_before() {
    let mut a = jakarta("2026-11-29");
    let mut b = jakarta("2026-11-29");
    let d = day("2023-05-10");
    for x in d - 3..d {
        a.day(x);
    }
    let from_a = a.day(d);
    let from_b = b.day(d);
    assert!(!from_a.is_empty());
    assert_eq!(from_a, from_b);
    let sorted = from_a.windows(2).all(|w| w[0].send_ms <= w[1].send_ms);
    assert!(sorted, "a day's events come in send order");
}

#[test]
fn the_story_the_pandemic_the_lag_and_the_recent_downturn() {
    let end = "2026-11-29";
    let mut sim = jakarta(end);
    let e = day(end);
    let rev = |t: &HashMap<(String, String), (u64, u64)>, kota: &str, s: &str| {
        t.get(&(kota.to_owned(), s.to_owned())).map_or(0, |v| v.0) as f64
    };
    // PSBB: food and accommodation lost more than trade.
    let before = totals(&mut sim, day("2020-01-04"), day("2020-01-31"));
    let psbb = totals(&mut sim, day("2020-04-18"), day("2020-05-15"));
    let city = |t: &HashMap<(String, String), (u64, u64)>, s: &str| {
        ["31.71", "31.72", "31.73", "31.74", "31.75"]
            .iter()
            .map(|k| rev(t, k, s))
            .sum::<f64>()
    };
    let food = city(&psbb, "I") / city(&before, "I");
    let trade = city(&psbb, "G") / city(&before, "G");
    assert!(food < 0.5, "food during PSBB at {food:.2} of January");
    assert!(trade > 0.65, "trade during PSBB at {trade:.2} of January");
    // The downturn: Jakarta Utara's food sector, over the last four weeks
    // against the same weeks a year before, falls far more than the rest
    // of the city's food sector.
    let now = totals(&mut sim, e - 27, e);
    let year_ago = totals(&mut sim, e - 364 - 27, e - 364);
    let utara = rev(&now, "31.72", "I") / rev(&year_ago, "31.72", "I") - 1.0;
    let others = ["31.71", "31.73", "31.74", "31.75"];
    let rest = others.iter().map(|k| rev(&now, k, "I")).sum::<f64>()
        / others.iter().map(|k| rev(&year_ago, k, "I")).sum::<f64>()
        - 1.0;
    assert!(utara < -0.25, "Jakarta Utara food year on year {utara:.3}");
    assert!(rest.abs() < 0.08, "the rest of the city's food {rest:.3}");
    // The lag: before the downturn, Jakarta Utara's food sector stands
    // lower against its 2019 level than the city's.
    let r = Reference::jakarta();
    let s = crate::scenario::Scenario::jakarta(e, &r);
    let before_downturn = s.downturns[0].start - 1;
    let i = pulih_event::Sector::from_letter("I").unwrap();
    assert!(
        sim.level("31.72.03", i, before_downturn)
            < 0.92 * sim.level("31.73.03", i, before_downturn)
    );
}

#[test]
fn lebaran_empties_the_city_and_the_last_days_of_ramadan_fill_the_shops() {
    let mut sim = jakarta("2026-11-29");
    let idul_fitri = day("2023-04-22");
    let count = |sim: &mut Simulation, from: i32, to: i32, sector: &str| {
        let r = Reference::jakarta();
        (from..=to)
            .flat_map(|d| sim.day(d))
            .filter(|e| {
                validate(&e.json, &r, &Limits::default())
                    .unwrap()
                    .sector
                    .as_str()
                    == sector
            })
            .count() as f64
    };
    let normal = count(&mut sim, idul_fitri - 63, idul_fitri - 57, "I");
    let mudik = count(&mut sim, idul_fitri, idul_fitri + 6, "I");
    assert!(
        mudik < 0.6 * normal,
        "food in the Lebaran week: {mudik} against {normal}"
    );
    let shops_normal = count(&mut sim, idul_fitri - 63, idul_fitri - 57, "G");
    let shops_before = count(&mut sim, idul_fitri - 10, idul_fitri - 4, "G");
    assert!(
        shops_before > 1.15 * shops_normal,
        "{shops_before} against {shops_normal}"
    );
}

#[test]
fn an_outage_silences_one_producer_and_a_sudden_stop_one_cell() {
    let r = Reference::jakarta();
    let mut sim = jakarta("2026-11-29");
    let producers: Vec<String> = sim.producers().iter().map(|p| p.to_string()).collect();
    let bank = producers.iter().position(|p| p == "bank").unwrap();
    let per_producer = |events: &[SimEvent]| {
        let mut c = vec![0usize; producers.len()];
        for e in events {
            c[e.producer] += 1;
        }
        c
    };
    let before = per_producer(&sim.day(day("2025-03-03")));
    let during = per_producer(&sim.day(day("2025-03-05")));
    assert!(before[bank] > 50);
    assert_eq!(during[bank], 0, "the bank's feed is down");
    assert!(during.iter().sum::<usize>() > before.iter().sum::<usize>() / 2);

    // Taman Sari's trade, 09:00-17:00 on 2024-10-15, is silent; the same
    // hours a week before are not.
    let in_cell_by_hour = |events: Vec<SimEvent>| {
        let mut hours = [0usize; 24];
        for e in events {
            let p = validate(&e.json, &r, &Limits::default()).unwrap();
            if p.district_code == "31.73.03" && p.sector.as_str() == "G" {
                let local =
                    (e.occurred_ms + pulih_event::calendar::OFFSET_MS).rem_euclid(86_400_000);
                hours[(local / 3_600_000) as usize] += 1;
            }
        }
        hours
    };
    let week_before = in_cell_by_hour(sim.day(day("2024-10-08")));
    let stop = in_cell_by_hour(sim.day(day("2024-10-15")));
    assert!(week_before[9..17].iter().sum::<usize>() > 0);
    assert_eq!(stop[9..17].iter().sum::<usize>(), 0, "{stop:?}");
}

#[test]
fn faults_come_at_their_rates_and_invalid_events_are_rejected() {
    let r = Reference::jakarta();
    let scenario = Scenario::jakarta(day("2026-11-29"), &r)
        .with_faults(Faults {
            duplicates: 0.05,
            out_of_order: 0.05,
            late: 0.02,
            invalid: 0.03,
        })
        .unwrap();
    let mut sim = Simulation::new(scenario, &r, &Holidays::jakarta());
    let mut events = Vec::new();
    for d in day("2025-06-01")..day("2025-06-08") {
        events.extend(sim.day(d));
    }
    events.extend(sim.finish());
    let payments: Vec<&SimEvent> = events.iter().filter(|e| e.kind == Kind::Payment).collect();
    let ids: std::collections::HashSet<&[u8]> =
        payments.iter().map(|e| e.json.as_slice()).collect();
    let n = payments.len() as f64;
    let share = |k: Kind| events.iter().filter(|e| e.kind == k).count() as f64 / n;
    assert!(
        (share(Kind::Duplicate) - 0.05).abs() < 0.01,
        "{}",
        share(Kind::Duplicate)
    );
    assert!(
        (share(Kind::Invalid) - 0.03).abs() < 0.01,
        "{}",
        share(Kind::Invalid)
    );
    for e in events.iter().filter(|e| e.kind == Kind::Duplicate) {
        assert!(
            ids.contains(e.json.as_slice()),
            "a duplicate repeats a payment"
        );
    }
    for e in events.iter().filter(|e| e.kind == Kind::Invalid) {
        assert!(validate(&e.json, &r, &Limits::default()).is_err());
    }
    let late = payments
        .iter()
        .filter(|e| e.send_ms - e.occurred_ms >= 3_600_000)
        .count() as f64;
    assert!((late / n - 0.02).abs() < 0.01, "{}", late / n);
    let out_of_order = events
        .windows(2)
        .filter(|w| w[1].occurred_ms < w[0].occurred_ms)
        .count();
    assert!(
        out_of_order as f64 > 0.03 * n,
        "{out_of_order} sends go back in time"
    );
}

#[test]
fn live_events_follow_the_trade_of_the_hour() {
    let r = Reference::jakarta();
    let sim = jakarta("2026-11-29");
    let d = day("2026-11-25");
    let mut lunch = sim.live(d, 12, "live-test");
    let mut night = sim.live(d, 3, "live-test");
    let at = pulih_event::calendar::day_start_ms(i64::from(d)) + 12 * 3_600_000;
    let food_share = |live: &mut crate::Live| {
        let n = 4000;
        (0..n)
            .filter(|_| {
                let e = sim.live_event(live, at).unwrap();
                validate(&e.json, &r, &Limits::default())
                    .unwrap()
                    .sector
                    .as_str()
                    == "I"
            })
            .count() as f64
            / n as f64
    };
    let (l, n) = (food_share(&mut lunch), food_share(&mut night));
    assert!(l > 0.2, "food at lunch {l}");
    assert!(l > n, "food's share of lunch {l} against 03:00 {n}");
}

#[test]
fn errors_name_the_key() {
    let r = Reference::jakarta();
    let end = day("2026-11-29");
    let cases = [
        ("G = 0.78", "G = -1", "`timeline[2].G`"),
        (
            "qris_acquirer = 0.50",
            "qris_acquirer = 0.60",
            "`producers`",
        ),
        (
            "kota = \"31.72\"\nsector = \"I\"\nstart",
            "kota = \"31.99\"\nsector = \"I\"\nstart",
            "`downturn[0].kota`",
        ),
        (
            "producer = \"bank\"",
            "producer = \"acme\"",
            "`outage[0].producer`",
        ),
        (
            "start = \"-70d\"",
            "start = \"seventy days ago\"",
            "`downturn[0].start`",
        ),
        (
            "duplicates = 0.0",
            "duplicates = 2.0",
            "`faults.duplicates`",
        ),
        (
            "from_hour = 9",
            "from_hour = 25",
            "`sudden_stop[0].from_hour`",
        ),
    ];
    for (from, to, key) in cases {
        assert!(JAKARTA.contains(from), "{from}");
        let text = JAKARTA.replacen(from, to, 1);
        let e = Scenario::parse("s.toml", &text, end, &r)
            .unwrap_err()
            .to_string();
        assert!(e.contains(key), "{e} should name {key}");
    }
    let e = Scenario::parse("s.toml", &format!("{JAKARTA}\nunknown = 1\n"), end, &r).unwrap_err();
    assert!(e.to_string().contains("unknown"), "{e}");
}

#[test]
fn live_events_carry_the_asked_duplicates_and_invalid_copies() {
    let r = Reference::jakarta();
    let d = day("2026-11-25");
    let sim = jakarta("2026-11-29");
    let sim = Simulation::new(
        sim.scenario()
            .clone()
            .with_faults(Faults {
                duplicates: 0.05,
                invalid: 0.02,
                ..Faults::default()
            })
            .unwrap(),
        &r,
        &pulih_event::holidays::Holidays::jakarta(),
    );
    let mut live = sim.live(d, 12, "faults");
    let at = pulih_event::calendar::day_start_ms(i64::from(d)) + 12 * 3_600_000;
    let (mut duplicates, mut invalid) = (0, 0);
    for _ in 0..20_000 {
        let e = sim.live_event(&mut live, at).unwrap();
        for f in sim.live_faults(&mut live, &e) {
            match f.kind {
                Kind::Duplicate => {
                    duplicates += 1;
                    assert_eq!(f.json, e.json, "a retry sends the same bytes");
                }
                Kind::Invalid => {
                    invalid += 1;
                    assert!(validate(&f.json, &r, &Limits::default()).is_err());
                }
                Kind::Payment => panic!("a fault copy is not a payment"),
            }
        }
    }
    assert!(
        (800..1200).contains(&duplicates),
        "{duplicates} duplicates of 20 000"
    );
    assert!((300..500).contains(&invalid), "{invalid} invalid of 20 000");
}
