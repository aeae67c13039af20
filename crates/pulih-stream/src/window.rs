//! The pure windowing core.
//!
//! Windows are tumbling, in event time, `window_ms` long, aligned to the Unix
//! epoch, and keyed by (district, sector). The watermark is the highest event
//! time seen minus the allowed lateness; a window whose end is at or below
//! the watermark is final, is emitted one last time with `is_final = 1` and is
//! then forgotten. An event for a window that was already forgotten is
//! reported as [`Fold::Late`] and not counted, so the caller can count and
//! route it: the core never drops anything silently.

use std::collections::{BTreeMap, HashSet};

use pulih_event::{PaymentRecord, Sector};

/// Settings of the core.
#[derive(Debug, Clone, Copy)]
pub struct WindowConfig {
    pub window_ms: i64,
    pub allowed_lateness_ms: i64,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            window_ms: 60_000,
            allowed_lateness_ms: 120_000,
        }
    }
}

/// The key of one window.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WindowKey {
    pub district_code: String,
    pub sector: Sector,
    /// Milliseconds since the epoch, a multiple of `window_ms`.
    pub window_start_ms: i64,
}

/// The running aggregate of one window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct WindowAgg {
    txn_count: u64,
    amount_idr_sum: u64,
    /// Exact distinct merchants: the 32-byte HMAC of each merchant key.
    merchants: HashSet<[u8; 32]>,
    dirty: bool,
}

/// A window's current values, as emitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowRow {
    pub key: WindowKey,
    pub txn_count: u64,
    pub amount_idr_sum: u64,
    pub merchants_active: u32,
    pub is_final: bool,
}

/// What became of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fold {
    /// Counted in its window.
    Applied,
    /// Its window was already final and forgotten; not counted.
    Late,
    /// The merchant key is not 64 hex digits; not counted.
    BadMerchantKey,
}

/// Open windows and the watermark.
#[derive(Debug, Clone)]
pub struct Windows {
    config: WindowConfig,
    open: BTreeMap<WindowKey, WindowAgg>,
    max_event_ms: Option<i64>,
}

impl Windows {
    pub fn new(config: WindowConfig) -> Windows {
        assert!(config.window_ms > 0, "window length must be positive");
        Windows {
            config,
            open: BTreeMap::new(),
            max_event_ms: None,
        }
    }

    /// Highest event time seen minus the allowed lateness.
    pub fn watermark_ms(&self) -> Option<i64> {
        self.max_event_ms
            .map(|m| m.saturating_sub(self.config.allowed_lateness_ms))
    }

    pub fn open_windows(&self) -> usize {
        self.open.len()
    }

    fn window_start(&self, t: i64) -> i64 {
        t.div_euclid(self.config.window_ms) * self.config.window_ms
    }

    /// Folds one record into its window.
    pub fn fold(&mut self, record: &PaymentRecord) -> Fold {
        let mut merchant = [0u8; 32];
        if hex::decode_to_slice(&record.merchant_key, &mut merchant).is_err() {
            return Fold::BadMerchantKey;
        }
        let t = record.occurred_at.unix_millis();
        let start = self.window_start(t);
        let end = start.saturating_add(self.config.window_ms);
        if self.watermark_ms().is_some_and(|w| end <= w) {
            // Final and gone: the row in ClickHouse is complete without it.
            let key = WindowKey {
                district_code: record.district_code.clone(),
                sector: record.sector,
                window_start_ms: start,
            };
            if !self.open.contains_key(&key) {
                return Fold::Late;
            }
        }
        let key = WindowKey {
            district_code: record.district_code.clone(),
            sector: record.sector,
            window_start_ms: start,
        };
        let agg = self.open.entry(key).or_default();
        agg.txn_count += 1;
        agg.amount_idr_sum += record.amount_idr;
        agg.merchants.insert(merchant);
        agg.dirty = true;
        self.max_event_ms = Some(self.max_event_ms.map_or(t, |m| m.max(t)));
        Fold::Applied
    }

    /// Rows of every window that changed since the last call, plus every
    /// window that became final (emitted once more with `is_final`, then
    /// forgotten). With `all_final`, every open window is treated as final:
    /// use it when the input is known to be complete.
    pub fn take_changes(&mut self, all_final: bool) -> Vec<WindowRow> {
        let watermark = self.watermark_ms();
        let window_ms = self.config.window_ms;
        let mut rows = Vec::new();
        self.open.retain(|key, agg| {
            let is_final =
                all_final || watermark.is_some_and(|w| key.window_start_ms + window_ms <= w);
            if agg.dirty || is_final {
                rows.push(WindowRow {
                    key: key.clone(),
                    txn_count: agg.txn_count,
                    amount_idr_sum: agg.amount_idr_sum,
                    merchants_active: u32::try_from(agg.merchants.len()).unwrap_or(u32::MAX),
                    is_final,
                });
                agg.dirty = false;
            }
            !is_final
        });
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use pulih_event::{Channel, MerchantSize, Timestamp};

    fn rec(t_ms: i64, district: &str, sector: &str, merchant: u8, amount: u64) -> PaymentRecord {
        PaymentRecord {
            event_id: format!("e{t_ms}-{merchant}"),
            producer_id: "p".into(),
            occurred_at: Timestamp::from_unix_millis(t_ms),
            merchant_key: hex::encode([merchant; 32]),
            merchant_key_id: "k".into(),
            district_code: district.into(),
            sector: Sector::from_letter(sector).unwrap(),
            kbli_code: None,
            amount_idr: amount,
            channel: Channel::Qris,
            merchant_size: MerchantSize::Micro,
        }
    }

    const T0: i64 = 1_709_251_200_000; // 2024-03-01T00:00:00Z

    #[test]
    fn counts_sums_and_distinct_merchants_per_window() {
        let mut w = Windows::new(WindowConfig::default());
        for r in [
            rec(T0 + 1_000, "31.74.09", "I", 1, 10),
            rec(T0 + 59_999, "31.74.09", "I", 1, 20),
            rec(T0 + 30_000, "31.74.09", "I", 2, 30),
            rec(T0 + 60_000, "31.74.09", "I", 2, 40),
            rec(T0 + 5_000, "31.74.09", "G", 3, 50),
        ] {
            assert_eq!(w.fold(&r), Fold::Applied);
        }
        let rows = w.take_changes(false);
        let got: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.key.sector.as_str(),
                    r.key.window_start_ms - T0,
                    r.txn_count,
                    r.amount_idr_sum,
                    r.merchants_active,
                    r.is_final,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("G", 0, 1, 50, 1, false),
                ("I", 0, 3, 60, 2, false),
                ("I", 60_000, 1, 40, 1, false)
            ]
        );
        assert!(w.take_changes(false).is_empty(), "nothing changed since");
    }

    #[test]
    fn windows_become_final_once_the_watermark_passes_and_late_events_are_reported() {
        let mut w = Windows::new(WindowConfig {
            window_ms: 60_000,
            allowed_lateness_ms: 120_000,
        });
        w.fold(&rec(T0, "31.74.09", "I", 1, 10));
        assert_eq!(w.take_changes(false).len(), 1);
        // An event in a later window, 2 min + 1 window after: [T0, T0+60s) ends at or below the watermark.
        w.fold(&rec(T0 + 180_000, "31.74.09", "I", 1, 10));
        let rows = w.take_changes(false);
        assert_eq!(rows.iter().filter(|r| r.is_final).count(), 1);
        assert_eq!(w.open_windows(), 1);
        assert_eq!(w.fold(&rec(T0 + 1, "31.74.09", "I", 1, 10)), Fold::Late);
        // Within the lateness bound still counts.
        assert_eq!(
            w.fold(&rec(T0 + 61_000, "31.74.09", "I", 1, 10)),
            Fold::Applied
        );
    }

    #[test]
    fn bad_merchant_keys_are_reported() {
        let mut w = Windows::new(WindowConfig::default());
        let mut r = rec(T0, "31.74.09", "I", 1, 10);
        r.merchant_key = "zz".into();
        assert_eq!(w.fold(&r), Fold::BadMerchantKey);
        assert_eq!(w.open_windows(), 0);
    }

    fn final_rows(records: &[PaymentRecord]) -> Vec<WindowRow> {
        let mut w = Windows::new(WindowConfig {
            window_ms: 60_000,
            allowed_lateness_ms: 3_600_000,
        });
        let mut out = BTreeMap::new();
        for r in records {
            assert_eq!(w.fold(r), Fold::Applied);
            for row in w.take_changes(false) {
                out.insert(row.key.clone(), row);
            }
        }
        for row in w.take_changes(true) {
            out.insert(row.key.clone(), row);
        }
        out.into_values().collect()
    }

    proptest! {
        /// Any order of the same events, all within the lateness bound, gives
        /// the same final rows, whenever the changes are taken.
        #[test]
        fn order_does_not_matter(
            events in prop::collection::vec((0i64..600_000, 0usize..3, 0usize..3, 0u8..6, 1u64..1_000_000), 1..200),
            seed in any::<u64>(),
        ) {
            let districts = ["31.74.09", "31.71.01", "31.01.02"];
            let sectors = ["G", "I", "C"];
            let records: Vec<_> = events
                .iter()
                .map(|&(t, d, s, m, a)| rec(T0 + t, districts[d], sectors[s], m, a))
                .collect();
            let mut shuffled = records.clone();
            // Fisher-Yates with a small LCG seeded by proptest.
            let mut x = seed | 1;
            for i in (1..shuffled.len()).rev() {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                shuffled.swap(i, (x >> 33) as usize % (i + 1));
            }
            let a = final_rows(&records);
            prop_assert_eq!(&a, &final_rows(&shuffled));
            let total: u64 = a.iter().map(|r| r.txn_count).sum();
            prop_assert_eq!(total, records.len() as u64);
            prop_assert!(a.iter().all(|r| r.is_final));
        }
    }
}
