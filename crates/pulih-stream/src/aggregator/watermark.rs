//! The operator watermark rule, as a pure function of the partitions'
//! clocks (`docs/semantics.md`, "Watermark").

/// What the rule needs to know of one partition this process owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionClock {
    /// The partition's own watermark; `None` before its first record.
    pub watermark_ms: Option<i64>,
    /// No record for `idle_timeout`, or read to its end.
    pub idle: bool,
}

/// The operator watermark: the minimum of the partition watermarks over the
/// partitions that are not idle, so an idle partition does not hold the
/// others back; with every partition idle, the highest one leads. `None`
/// while no partition has seen a record.
pub fn operator_watermark(parts: impl IntoIterator<Item = PartitionClock>) -> Option<i64> {
    let mut active_min: Option<i64> = None;
    let mut any_max: Option<i64> = None;
    for p in parts {
        let Some(w) = p.watermark_ms else { continue };
        any_max = Some(any_max.map_or(w, |m| m.max(w)));
        if !p.idle {
            active_min = Some(active_min.map_or(w, |m| m.min(w)));
        }
    }
    active_min.or(any_max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(watermark_ms: Option<i64>, idle: bool) -> PartitionClock {
        PartitionClock { watermark_ms, idle }
    }

    #[test]
    fn the_slowest_active_partition_holds_the_others_back() {
        let w = operator_watermark([
            clock(Some(5_000), false),
            clock(Some(2_000), false),
            clock(Some(9_000), false),
        ]);
        assert_eq!(w, Some(2_000));
    }

    #[test]
    fn an_idle_partition_does_not_hold_the_others_back() {
        let w = operator_watermark([clock(Some(5_000), false), clock(Some(1_000), true)]);
        assert_eq!(w, Some(5_000));
    }

    #[test]
    fn with_every_partition_idle_the_highest_leads() {
        let w = operator_watermark([clock(Some(5_000), true), clock(Some(7_000), true)]);
        assert_eq!(w, Some(7_000));
    }

    #[test]
    fn partitions_without_records_are_left_out() {
        assert_eq!(
            operator_watermark([clock(None, false), clock(Some(3_000), true)]),
            Some(3_000)
        );
        assert_eq!(operator_watermark([clock(None, false)]), None);
        assert_eq!(operator_watermark([]), None);
    }
}
