//! The simulated city: where merchants are, what they sell, how big they
//! are, and how a day's calendar moves their trade. Every weight is
//! documented with its source in docs/simulator.md.

use pulih_event::holidays::CalendarDay;
use pulih_event::{Channel, MerchantSize, Sector};

/// Share of merchants by kota, from the population of each kota in the
/// 2020 census (BPS, Hasil Sensus Penduduk 2020 Provinsi DKI Jakarta,
/// Berita Resmi Statistik No. 5/01/31/Th. XXIII, 22 January 2021), in
/// thousands. Within a kota, merchants are spread evenly over its
/// kecamatan.
pub const KOTA_POPULATION: [(&str, f64); 6] = [
    ("31.01", 27.7),   // Kepulauan Seribu
    ("31.71", 1056.9), // Jakarta Pusat
    ("31.72", 1779.0), // Jakarta Utara
    ("31.73", 2434.5), // Jakarta Barat
    ("31.74", 2226.8), // Jakarta Selatan
    ("31.75", 3037.1), // Jakarta Timur
];

/// Share of merchants by KBLI 2020 category A..U, in per cent: the mix of
/// micro and small businesses in the 2016 Economic Census listing (trade
/// first, then food and accommodation, manufacturing and other services),
/// rounded; see docs/simulator.md.
pub const SECTOR_SHARE: [f64; 21] = [
    0.5, 0.0, 8.0, 0.0, 0.5, 1.0, 40.0, 3.0, 25.0, 2.0, 1.0, 1.0, 2.0, 3.0, 0.0, 2.0, 2.0, 2.0,
    7.0, 0.0, 0.0,
];

/// Median ticket of a micro merchant per category, IDR.
pub fn median_ticket(sector: Sector) -> f64 {
    match sector.as_str() {
        "I" => 28_000.0,
        "G" => 45_000.0,
        "C" => 60_000.0,
        "S" => 40_000.0,
        "R" => 55_000.0,
        "H" => 35_000.0,
        "P" => 150_000.0,
        "Q" => 120_000.0,
        "M" | "N" | "J" => 200_000.0,
        _ => 80_000.0,
    }
}

/// How much larger a ticket is by merchant size.
pub fn size_ticket_factor(size: MerchantSize) -> f64 {
    match size {
        MerchantSize::Micro => 1.0,
        MerchantSize::Small => 1.8,
        MerchantSize::Medium => 3.0,
    }
}

/// A representative five-digit KBLI code per category, sent by half the
/// merchants.
pub fn kbli_code(sector: Sector) -> Option<&'static str> {
    Some(match sector.as_str() {
        "C" => "10792", // bakery products
        "G" => "47111", // retail, mostly food
        "I" => "56102", // warung makan
        "S" => "96111", // barbers and salons
        "R" => "93299", // other recreation
        "H" => "49431", // motorcycle taxis
        _ => return None,
    })
}

const HOURS_FOOD: [f64; 24] = [
    0.2, 0.1, 0.05, 0.05, 0.1, 0.4, 1.2, 1.8, 1.5, 1.0, 1.4, 3.0, 3.6, 2.4, 1.2, 1.2, 1.8, 2.6,
    3.2, 3.0, 2.2, 1.4, 0.8, 0.4,
];
/// Food in Ramadan: sahur before dawn, then buka puasa at sunset.
const HOURS_FOOD_RAMADAN: [f64; 24] = [
    0.2, 0.2, 1.0, 1.6, 0.8, 0.1, 0.1, 0.2, 0.3, 0.3, 0.4, 0.6, 0.7, 0.7, 0.8, 1.4, 2.6, 4.6, 5.2,
    3.6, 2.4, 1.4, 0.8, 0.4,
];
const HOURS_SHOP: [f64; 24] = [
    0.1, 0.05, 0.05, 0.05, 0.2, 0.6, 1.2, 1.8, 2.0, 2.0, 2.0, 2.0, 2.0, 1.9, 1.8, 1.9, 2.2, 2.6,
    2.8, 2.6, 2.0, 1.2, 0.5, 0.2,
];
const HOURS_LEISURE: [f64; 24] = [
    0.2, 0.1, 0.0, 0.0, 0.0, 0.0, 0.1, 0.3, 0.8, 1.5, 2.0, 2.2, 2.2, 2.2, 2.2, 2.4, 2.6, 2.8, 3.0,
    3.0, 2.6, 1.8, 1.0, 0.5,
];
const HOURS_OFFICE: [f64; 24] = [
    0.05, 0.0, 0.0, 0.0, 0.0, 0.1, 0.4, 1.2, 2.2, 2.6, 2.6, 2.4, 2.0, 2.2, 2.4, 2.2, 1.8, 1.2, 0.8,
    0.6, 0.4, 0.2, 0.1, 0.05,
];

/// Relative trade per hour of the Jakarta day.
pub fn hour_profile(sector: Sector, ramadan: bool) -> &'static [f64; 24] {
    match sector.as_str() {
        "I" if ramadan => &HOURS_FOOD_RAMADAN,
        "I" => &HOURS_FOOD,
        "G" | "C" | "S" => &HOURS_SHOP,
        "R" => &HOURS_LEISURE,
        _ => &HOURS_OFFICE,
    }
}

/// Relative trade by weekday, Monday first.
fn weekday_factor(sector: Sector, weekday: usize) -> f64 {
    const FOOD: [f64; 7] = [0.92, 0.92, 0.95, 0.97, 1.05, 1.2, 1.15];
    const SHOP: [f64; 7] = [0.96, 0.95, 0.96, 0.98, 1.02, 1.1, 1.05];
    const LEISURE: [f64; 7] = [0.7, 0.7, 0.75, 0.8, 1.0, 1.6, 1.6];
    const OFFICE: [f64; 7] = [1.05, 1.05, 1.05, 1.05, 1.0, 0.75, 0.45];
    let table = match sector.as_str() {
        "I" => &FOOD,
        "G" => &SHOP,
        "R" => &LEISURE,
        _ => &OFFICE,
    };
    table[weekday % 7]
}

/// Whether a sector's trade follows office days (quiet on holidays).
fn office_like(sector: Sector) -> bool {
    matches!(
        sector.as_str(),
        "C" | "F" | "J" | "K" | "L" | "M" | "N" | "P"
    )
}

/// How the calendar moves one sector's trade on one day, and the share of
/// merchants open that day (mudik empties the city around Lebaran).
pub fn calendar_effect(sector: Sector, day: &CalendarDay, weekday: usize) -> (f64, f64) {
    let s = sector.as_str();
    let mut f = weekday_factor(sector, weekday);
    let mut open = 1.0;
    if day.payday {
        f *= match s {
            "G" => 1.12,
            "I" => 1.08,
            _ => 1.04,
        };
    }
    if day.ramadan {
        f *= match s {
            "I" => 0.92,
            "G" => 1.06,
            _ => 1.0,
        };
    }
    let lebaran = day.lebaran_day.map(i32::from);
    match lebaran {
        // The last ten days of Ramadan: clothes, gifts, hampers.
        Some(-10..=-4) => {
            f *= match s {
                "G" => 1.35,
                "I" => 1.1,
                _ => 1.0,
            }
        }
        // Mudik: the city empties.
        Some(-3..=-1) => f *= if s == "G" { 1.05 } else { 0.8 },
        Some(0..=1) => {
            f *= 0.3;
            open = 0.45;
        }
        Some(2..=6) => {
            f *= 0.55;
            open = 0.6;
        }
        Some(d @ 7..=13) => f *= 0.6 + 0.05 * f64::from(d - 6),
        _ => {}
    }
    let in_lebaran_period = lebaran.is_some_and(|d| (-3..=13).contains(&d));
    let holiday = (!day.holiday.is_empty() || day.cuti_bersama) && !in_lebaran_period;
    match day.imlek_day {
        Some(0..=1) => f *= 0.88,
        Some(-7..=-1) if s == "G" => f *= 1.04,
        _ => {}
    }
    if holiday {
        f *= if office_like(sector) {
            0.55
        } else {
            match s {
                "I" => 1.05,
                "R" => 1.25,
                _ => 0.97,
            }
        };
    }
    // The year-end: Christmas to New Year's Eve.
    if let Some(date) = pulih_event::holidays::date_of(day.day) {
        if date.month() == time::Month::December && date.day() >= 24 {
            f *= match s {
                "I" => 1.08,
                "R" => 1.3,
                "G" => 1.06,
                _ => 1.0,
            };
        }
    }
    (f, open)
}

/// A payment channel for a merchant of `size` when a share `qris` of
/// micro merchants' payments go through QRIS.
pub fn channel(size: MerchantSize, qris: f64, u: f64) -> Channel {
    let q = qris
        * match size {
            MerchantSize::Micro => 1.0,
            MerchantSize::Small => 0.75,
            MerchantSize::Medium => 0.5,
        };
    if u < q {
        return Channel::Qris;
    }
    let rest = (u - q) / (1.0 - q).max(1e-9);
    match rest {
        r if r < 0.35 => Channel::Ewallet,
        r if r < 0.65 => Channel::DebitCard,
        r if r < 0.80 => Channel::CreditCard,
        r if r < 0.95 => Channel::BankTransfer,
        _ => Channel::Other,
    }
}
