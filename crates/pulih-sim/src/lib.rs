//! A seeded generator of a believable Jakarta: a panel of MSMEs paid
//! through a few producers, trading through the calendar (paydays, Ramadan,
//! Lebaran, Imlek, the year-end) and through a scenario of the pandemic and
//! after, with faults injected on request. docs/simulator.md documents the
//! model and where each weight comes from.
//!
//! - `scenario`: the scenario file (`deploy/scenarios/*.toml`), checked,
//!   with errors that name the key;
//! - `city`: where merchants are, what they sell, and how the calendar
//!   moves their trade;
//! - `generate`: the merchants and, day by day, their payments in send
//!   order (late, out-of-order, duplicate and invalid sends included).
//!
//! It owns no I/O: `pulih simulate` sends what it makes through the same
//! validation and pseudonymisation as real events, to Kafka, the gateway or
//! NDJSON files. The same seed, scenario and days give the same bytes.
//!
//! `rand` (with `SmallRng`) is the one dependency beyond the contract and
//! the file format: a seeded, fast, non-cryptographic generator is what a
//! simulator needs.

pub mod city;
pub mod generate;
pub mod scenario;

#[cfg(test)]
mod tests;

pub use generate::{Kind, Live, SimEvent, Simulation};
pub use scenario::{Faults, Scenario, ScenarioError};

use pulih_event::Timestamp;

/// RFC 3339 in Asia/Jakarta (UTC+7, no daylight saving), milliseconds.
pub fn jakarta_time(t: Timestamp) -> String {
    pulih_event::calendar::format_local(t)
}
