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

/// What is known of one partition's input, for [`is_idle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Input {
    /// The broker said the partition was read to its end, and no record
    /// came since.
    pub at_end: bool,
    /// No record came for `idle_timeout`.
    pub quiet: bool,
    /// The offset the partition reads next.
    pub next_offset: i64,
    /// The broker's latest high watermark of the partition (the offset
    /// after its last record); -1 while unknown.
    pub hi_offset: i64,
    /// Consumption is paused: a flush or a read-back fails.
    pub paused: bool,
}

/// A partition is idle, and lets processing time close windows, only when
/// its input has really stopped: read to its end or quiet for the idle
/// timeout, with no record known to wait on the broker (a fetch that
/// stalls on a leader failover leaves the lag visible) and not paused
/// because ClickHouse fails (records keep arriving meanwhile). An outage
/// is not idleness: were it taken for one, every open window would close on
/// the wall clock and the backlog would be counted as late, and a day could
/// be recorded complete before its last events are read.
pub fn is_idle(input: Input) -> bool {
    let lagging = input.hi_offset > input.next_offset;
    !input.paused && !lagging && (input.at_end || input.quiet)
}

/// The operator watermark: the minimum of the partition watermarks over the
/// partitions that are not idle, so an idle partition does not hold the
/// others back. With every partition idle, the highest partition watermark
/// leads, and processing time takes over from event time: the watermark is
/// at least `processing_ms` (the wall clock) minus the allowed lateness, so
/// when input stops, the last windows and the day's merchant-days become
/// final anyway. (Event time never runs ahead of the Kafka timestamp, the
/// wall clock of the gateway that accepted the event, so this is the
/// watermark the next event would bring.) Before any partition has a
/// watermark (a new topic, no checkpoint) there is none: there is nothing
/// to close, and the first records, perhaps a producer's history sent
/// before any live traffic, are not late for want of one. An active
/// partition that has not
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
        return any_max.map(|m| m.max(by_clock));
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

    fn input(at_end: bool, quiet: bool, next_offset: i64, hi_offset: i64, paused: bool) -> Input {
        Input {
            at_end,
            quiet,
            next_offset,
            hi_offset,
            paused,
        }
    }

    #[test]
    fn a_partition_is_idle_when_read_to_its_end_or_quiet() {
        assert!(is_idle(input(true, false, 10, 10, false)));
        assert!(is_idle(input(false, true, 10, 10, false)));
        assert!(is_idle(input(false, true, 10, -1, false)), "lag unknown");
        assert!(!is_idle(input(false, false, 10, 10, false)), "records came");
    }

    #[test]
    fn a_partition_with_records_waiting_on_the_broker_is_not_idle() {
        // A fetch that stalls (a leader failover): quiet, but behind.
        assert!(!is_idle(input(false, true, 10, 25, false)));
        // The end was reached, and records came since.
        assert!(!is_idle(input(true, false, 10, 11, false)));
    }

    #[test]
    fn a_paused_partition_is_never_idle() {
        // ClickHouse fails: consumption is paused, records keep arriving,
        // and however long it lasts the partition is not idle.
        assert!(!is_idle(input(true, true, 10, 10, true)));
        assert!(!is_idle(input(false, true, 10, -1, true)));
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
    fn before_any_record_processing_time_closes_nothing() {
        assert_eq!(operator(&[clock(None, true), clock(None, true)]), None);
        assert_eq!(
            operator(&[clock(None, true), clock(Some(3_000), true)]),
            Some(NOW - LATENESS)
        );
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
