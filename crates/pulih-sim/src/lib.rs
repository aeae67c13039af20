//! A deterministic generator of synthetic payment events.
//!
//! A fixed population of merchants is spread over the districts of the
//! reference table; each has a sector (weighted towards retail trade and
//! food stalls, as among Jakarta's UMKM), a size class, a typical ticket and
//! a favourite payment channel. Events pick a merchant at random, an amount
//! around its typical ticket, and the event time given by the caller. The
//! same seed gives the same events. It owns no I/O: the CLI feeds its
//! output through the same validation and pseudonymisation as real events.
//!
//! `rand` (with `SmallRng`) is the one dependency beyond the contract: a
//! seeded, fast, non-cryptographic generator is what a simulator needs.

use pulih_event::{Channel, MerchantSize, Reference, Sector, Timestamp};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Relative weight of each KBLI category A..U among the simulated merchants.
const SECTOR_WEIGHTS: [u32; 21] = [
    2, 0, 12, 0, 1, 2, 45, 5, 20, 3, 1, 1, 2, 2, 0, 2, 2, 2, 6, 0, 0,
];

/// One simulated merchant.
#[derive(Debug, Clone)]
struct Merchant {
    id: String,
    district: usize,
    sector: Sector,
    kbli: Option<&'static str>,
    size: MerchantSize,
    ticket_idr: u64,
    channel: Channel,
}

/// Generates events for a fixed population of merchants.
pub struct Simulator {
    rng: SmallRng,
    districts: Vec<String>,
    merchants: Vec<Merchant>,
    run_id: String,
    next_seq: u64,
}

fn sample_kbli(sector: Sector) -> Option<&'static str> {
    match sector.as_str() {
        "C" => Some("10792"), // bakery products
        "G" => Some("47111"), // retail, mostly food
        "I" => Some("56101"), // restaurants
        "S" => Some("96111"), // barbers and salons
        _ => None,
    }
}

impl Simulator {
    /// `merchants` merchants over the reference's districts. `run_id`
    /// (letters, digits, `-`, `_`) prefixes event ids so runs never collide.
    pub fn new(reference: &Reference, merchants: usize, seed: u64, run_id: &str) -> Simulator {
        let mut rng = SmallRng::seed_from_u64(seed);
        let districts: Vec<String> = reference
            .districts()
            .iter()
            .map(|d| d.code.clone())
            .collect();
        let total: u32 = SECTOR_WEIGHTS.iter().sum();
        let merchants = (0..merchants.max(1))
            .map(|i| {
                let mut pick = rng.gen_range(0..total);
                let sector_index = SECTOR_WEIGHTS
                    .iter()
                    .position(|&w| {
                        if pick < w {
                            true
                        } else {
                            pick -= w;
                            false
                        }
                    })
                    .unwrap_or(6);
                let sector = Sector::all()
                    .nth(sector_index)
                    .unwrap_or(Sector::from_letter("G").unwrap());
                let size = match rng.gen_range(0..100) {
                    0..=84 => MerchantSize::Micro,
                    85..=96 => MerchantSize::Small,
                    _ => MerchantSize::Medium,
                };
                let base: u64 = match size {
                    MerchantSize::Micro => 25_000,
                    MerchantSize::Small => 120_000,
                    MerchantSize::Medium => 600_000,
                };
                let channel = match rng.gen_range(0..100) {
                    0..=54 => Channel::Qris,
                    55..=74 => Channel::Ewallet,
                    75..=84 => Channel::DebitCard,
                    85..=89 => Channel::CreditCard,
                    90..=97 => Channel::BankTransfer,
                    _ => Channel::Other,
                };
                Merchant {
                    id: format!("sim-m{i:07}"),
                    district: rng.gen_range(0..districts.len()),
                    sector,
                    kbli: sample_kbli(sector).filter(|_| rng.gen_bool(0.5)),
                    size,
                    ticket_idr: base * rng.gen_range(5..=20) / 10,
                    channel,
                }
            })
            .collect();
        Simulator {
            rng,
            districts,
            merchants,
            run_id: run_id.to_owned(),
            next_seq: 0,
        }
    }

    /// The next event as JSON bytes of `schemas/payment_event.v1.json`, at
    /// `occurred_at` expressed in Jakarta time (+07:00).
    pub fn next_event(&mut self, occurred_at: Timestamp) -> Vec<u8> {
        let m = &self.merchants[self.rng.gen_range(0..self.merchants.len())];
        // Amount: the typical ticket times a factor in [0.2, 3.0), at least Rp 1 000.
        let factor = self.rng.gen_range(20..300u64);
        let amount = (m.ticket_idr * factor / 100).max(1_000) / 100 * 100;
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut event = serde_json::json!({
            "event_id": format!("{}-{seq}", self.run_id),
            "occurred_at": jakarta_time(occurred_at),
            "merchant_id": m.id,
            "district_code": self.districts[m.district],
            "sector": m.sector.as_str(),
            "amount_idr": amount,
            "channel": m.channel.as_str(),
            "merchant_size": m.size.as_str(),
        });
        if let Some(k) = m.kbli {
            event["kbli_code"] = k.into();
        }
        serde_json::to_vec(&event).expect("JSON values always serialise")
    }
}

/// RFC 3339 in Asia/Jakarta (UTC+7, no daylight saving), milliseconds.
pub fn jakarta_time(t: Timestamp) -> String {
    pulih_event::calendar::format_local(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulih_event::{validate, Limits};

    #[test]
    fn every_event_is_valid_and_seeded_runs_repeat() {
        let r = Reference::jakarta();
        let mut a = Simulator::new(&r, 500, 7, "run1");
        let mut b = Simulator::new(&r, 500, 7, "run1");
        let t0 = Timestamp::from_unix_millis(1_709_251_200_000);
        let mut sectors = std::collections::HashSet::new();
        for i in 0..5_000 {
            let t = Timestamp::from_unix_millis(t0.unix_millis() + i * 37);
            let ev = a.next_event(t);
            assert_eq!(ev, b.next_event(t));
            let parsed = validate(&ev, &r, &Limits::default())
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&ev)));
            assert_eq!(parsed.occurred_at, t);
            sectors.insert(parsed.sector);
        }
        assert!(
            sectors.len() >= 8,
            "a realistic mix of sectors, got {}",
            sectors.len()
        );
    }

    #[test]
    fn jakarta_time_is_utc_plus_seven() {
        let t = Timestamp::parse_rfc3339("2024-03-01T20:15:02.123Z").unwrap();
        assert_eq!(jakarta_time(t), "2024-03-02T03:15:02.123+07:00");
        assert_eq!(Timestamp::parse_rfc3339(&jakarta_time(t)), Some(t));
    }
}
