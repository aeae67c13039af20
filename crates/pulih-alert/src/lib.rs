//! Sector-downturn alerting (docs/alerting.md).
//!
//! This crate owns the rule that tells the city a sector in a kota or a
//! district is turning down (`rule`: depth, relative to the city,
//! significance, diffusion, duration, clearing with hysteresis and holiday
//! guards, as a pure function of the stored daily totals, property-tested
//! without I/O), the rule that tells a cell gone silent from a producer's
//! outage (`stop`, on hourly counts), the alert message every channel carries (`message`: the
//! `pulih.alerts.v1` record, `schemas/alert.v1.json`, and the Alertmanager
//! v2 payload), and the Alertmanager client (`alertmanager`). Reading the
//! totals and writing the state changes is `pulih-store`'s; the service loop
//! and the Kafka producer are wired in the `pulih` binary (`pulih alerts`).

pub mod alertmanager;
pub mod message;
pub mod rule;
pub mod stop;

pub use rule::{Active, Assessment, History, Names, Rule, Settings, Severity, Transition};
