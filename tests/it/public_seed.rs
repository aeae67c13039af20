//! A public release to read: what `pulih rollup` and `pulih alerts` leave
//! in `pulih_public`, written directly as the writer account so that the
//! page and dashboard tests know every value.
//!
//! Days 2020-01-01..2021-06-30 for the city, three sectors city-wide and
//! per kota, and per kecamatan. Kepulauan Seribu's cells are withheld (too
//! few merchants), as is every other kecamatan's manufacturing. The last
//! release (vintage 2021-07-01) carries every day; an earlier release and a
//! release still being written carry [`PLANTED`] wherever they have a
//! value, so a reader that does not take each row's latest released
//! vintage shows it.

use pulih_event::Reference;
use pulih_tests::PrivateClickHouse;
use serde::Serialize;

use crate::access::WRITER;

/// The index every superseded or unreleased row carries.
pub(crate) const PLANTED: f64 = 9.99;

#[derive(clickhouse::Row, Serialize)]
struct Vintage {
    day: u16,
    level: i8,
    kota_code: String,
    district_code: String,
    sector: String,
    vintage: u16,
    withheld: u8,
    incomplete: Option<u8>,
    amount_idr_index: Option<f64>,
    txn_count_index: Option<f64>,
    merchants_open_index: Option<f64>,
    amount_idr_yoy_aligned: Option<f64>,
    amount_idr_chg4w: Option<f64>,
}

#[derive(clickhouse::Row, Serialize)]
struct Release {
    vintage: u16,
    released_at: u32,
    data_through: u16,
    provisional_from: u16,
}

#[derive(clickhouse::Row, Serialize)]
struct Alert {
    alert_id: String,
    state: i8,
    level: i8,
    kota_code: String,
    district_code: String,
    sector: String,
    severity: i8,
    day: u16,
    since: u16,
    summary: String,
    raised_at: u32,
}

pub(crate) fn day(s: &str) -> u16 {
    pulih_metrics::parse_day(s).unwrap() as u16
}

/// A revenue index with a pandemic's shape: 1.0 in January 2020, down to
/// 0.4 in April, back above 1 by mid-2021; `tilt` spreads cells apart.
fn index(d: u16, tilt: f64) -> f64 {
    let t = f64::from(d - day("2020-01-01"));
    let shape = if t < 90.0 {
        1.0 - 0.6 * (t / 90.0).powi(3)
    } else {
        0.4 + 0.7 * ((t - 90.0) / 456.0).min(1.0)
    };
    ((shape * tilt) * 100.0).round() / 100.0
}

/// The first and last day of the seeded release.
pub(crate) const FIRST: &str = "2020-01-01";
pub(crate) const LAST: &str = "2021-06-30";

/// Writes the release into `pulih_public` of `ch` (migrated first).
pub(crate) async fn seed(ch: &PrivateClickHouse) {
    let writer = clickhouse::Client::default()
        .with_url(ch.url())
        .with_user(WRITER.0)
        .with_password(WRITER.1)
        .with_database("pulih_public")
        .with_validation(false);
    let reference = Reference::jakarta();
    let (first, last) = (day(FIRST), day(LAST));
    // The release before (a week earlier), the last one, and one being
    // written.
    let (earlier, vintage, unreleased) = (last - 6, last + 1, last + 2);
    let mut kota: Vec<String> = reference
        .districts()
        .iter()
        .map(|d| d.regency_code.clone())
        .collect();
    kota.dedup();
    let mut rows = Vec::new();
    for d in first..=last {
        let mut push =
            |level: i8, k: &str, district: &str, sector: &str, withheld: bool, tilt: f64| {
                let value = |v: f64| (!withheld).then_some(v);
                let row = |vintage: u16, planted: bool| {
                    let v = |x: f64| value(if planted { PLANTED } else { x });
                    Vintage {
                        day: d,
                        level,
                        kota_code: k.into(),
                        district_code: district.into(),
                        sector: sector.into(),
                        vintage,
                        withheld: u8::from(withheld),
                        // A producer's outage on one day of a week in May.
                        incomplete: (!withheld).then_some(u8::from(d == day("2021-05-12"))),
                        amount_idr_index: v(index(d, tilt)),
                        txn_count_index: v(index(d, 0.9 * tilt)),
                        merchants_open_index: v(index(d, 0.5 + tilt / 2.0)),
                        amount_idr_yoy_aligned: None,
                        amount_idr_chg4w: (d >= first + 35)
                            .then(|| {
                                let before = index(d - 28, tilt);
                                v(((index(d, tilt) / before - 1.0) * 100.0).round() / 100.0)
                            })
                            .flatten(),
                    }
                };
                rows.push(row(vintage, false));
                if d + 7 <= last && d + 60 >= last {
                    rows.push(row(earlier, true));
                }
                if d + 7 > last {
                    rows.push(row(unreleased, true));
                }
            };
        push(4, "", "", "", false, 1.0);
        for s in ["C", "G", "I"] {
            push(3, "", "", s, false, 1.0);
            for k in &kota {
                push(2, k, "", s, k == "31.01", 1.05);
            }
        }
        for (i, district) in reference.districts().iter().enumerate() {
            let tilt = 0.75 + 0.5 * i as f64 / 44.0;
            for s in ["C", "G", "I"] {
                let withheld = district.regency_code == "31.01" || (s == "C" && i % 2 == 0);
                push(1, &district.regency_code, &district.code, s, withheld, tilt);
            }
        }
    }
    let mut insert = writer.insert::<Vintage>("recovery_vintages").await.unwrap();
    for r in &rows {
        insert.write(r).await.unwrap();
    }
    insert.end().await.unwrap();
    let mut insert = writer.insert::<Release>("releases").await.unwrap();
    for (v, released_at) in [(earlier, 1_624_510_800), (vintage, 1_625_115_600)] {
        insert
            .write(&Release {
                vintage: v,
                released_at,
                data_through: v - 1,
                provisional_from: v - 7,
            })
            .await
            .unwrap();
    }
    insert.end().await.unwrap();
    // A downturn in Jakarta Utara's food sector, firing, and one in Jakarta
    // Barat's trade that fired in May and resolved.
    let alert = |kota: &str, sector: &str, state: i8, on: &str, since: &str, summary: &str| Alert {
        alert_id: format!("sector_downturn/kota_sector/{kota}/{sector}"),
        state,
        level: 2,
        kota_code: kota.into(),
        district_code: String::new(),
        sector: sector.into(),
        severity: 1,
        day: day(on),
        since: day(since),
        summary: summary.into(),
        raised_at: 0,
    };
    let food = "Penyediaan Akomodasi dan Penyediaan Makan Minum in Kota Administrasi Jakarta Utara: \
                revenue \u{2212}22 % year on year, \u{2212}14 % over 4 weeks, 9 points worse than the city; 2 weeks";
    let trade = "Perdagangan Besar dan Eceran in Kota Administrasi Jakarta Barat: \
                 revenue \u{2212}18 % year on year, \u{2212}12 % over 4 weeks, 8 points worse than the city; 2 weeks";
    let mut insert = writer.insert::<Alert>("alerts").await.unwrap();
    for a in [
        alert("31.72", "I", 1, "2021-06-10", "2021-06-10", food),
        alert("31.73", "G", 1, "2021-05-01", "2021-05-01", trade),
        alert("31.73", "G", 2, "2021-05-20", "2021-05-01", trade),
    ] {
        insert.write(&a).await.unwrap();
    }
    insert.end().await.unwrap();
}
