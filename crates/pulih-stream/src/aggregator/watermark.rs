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
/// others back. With every partition idle, the highest partition watermark
/// leads, and processing time takes over from event time: the watermark is
/// at least `processing_ms` (the wall clock) minus the allowed lateness, so
/// when input stops, the last windows and the day's merchant-days become
/// final anyway. (Event time never runs ahead of the Kafka timestamp, the
/// wall clock of the gateway that accepted the event, so this is the
/// watermark the next event would bring.) An active partition that has not
/// seen a record yet holds every other back (`None`: each partition keeps
/// its own watermark) until it is idle: it may hold the oldest records of
/// all, as when an aggregator catches up on a filled topic and the fetcher
/// reaches that partition last.
pub fn operator_watermark(
    parts: impl IntoIterator<Item = PartitionClock>,
    processing_ms: i64,
    allowed_lateness_ms: i64,
) -> Option<i64> {
    let mut active_min: Option<i64> = None;
    let mut any_max: Option<i64> = None;
    let mut owned = 0;
    let mut idle = 0;
    let mut unknown = false;
    for p in parts {
        owned += 1;
        if p.idle {
            idle += 1;
        }
        let Some(w) = p.watermark_ms else {
            unknown |= !p.idle;
            continue;
        };
        any_max = Some(any_max.map_or(w, |m| m.max(w)));
        if !p.idle {
            active_min = Some(active_min.map_or(w, |m| m.min(w)));
        }
    }
    if owned > 0 && idle == owned {
        let by_clock = processing_ms.saturating_sub(allowed_lateness_ms);
        return Some(any_max.map_or(by_clock, |m| m.max(by_clock)));
    }
    if unknown {
        return None;
    }
    active_min
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;
    const LATENESS: i64 = 120_000;

    fn clock(watermark_ms: Option<i64>, idle: bool) -> PartitionClock {
        PartitionClock { watermark_ms, idle }
    }

    fn operator(parts: &[PartitionClock]) -> Option<i64> {
        operator_watermark(parts.iter().copied(), NOW, LATENESS)
    }

    #[test]
    fn the_slowest_active_partition_holds_the_others_back() {
        let w = operator(&[
            clock(Some(5_000), false),
            clock(Some(2_000), false),
            clock(Some(9_000), false),
        ]);
        assert_eq!(w, Some(2_000));
    }

    #[test]
    fn an_idle_partition_does_not_hold_the_others_back() {
        let w = operator(&[clock(Some(5_000), false), clock(Some(1_000), true)]);
        assert_eq!(w, Some(5_000));
    }

    #[test]
    fn with_every_partition_idle_processing_time_takes_over() {
        let w = operator(&[clock(Some(5_000), true), clock(Some(7_000), true)]);
        assert_eq!(w, Some(NOW - LATENESS));
        // A partition watermark ahead of the clock (the clock of this host
        // is behind the gateway's) is not pulled back.
        let ahead = NOW + 60_000;
        let w = operator(&[clock(Some(ahead), true), clock(None, true)]);
        assert_eq!(w, Some(ahead));
    }

    #[test]
    fn an_active_partition_without_records_holds_the_others_back() {
        assert_eq!(
            operator(&[clock(None, false), clock(Some(3_000), true)]),
            None
        );
        assert_eq!(operator(&[clock(None, false)]), None);
        assert_eq!(
            operator(&[clock(Some(4_000), false), clock(None, false)]),
            None
        );
        assert_eq!(operator(&[]), None);
    }

    #[test]
    fn a_partition_without_records_is_left_out_once_idle() {
        assert_eq!(
            operator(&[clock(Some(4_000), false), clock(None, true)]),
            Some(4_000)
        );
    }
}
