//! Time in Asia/Jakarta, where the platform's days are counted: UTC+7 all
//! year (no daylight saving), so a Jakarta day `D` (days since 1970-01-01)
//! is `[D 00:00+07:00, D+1 00:00+07:00)`. One home for the offset, day
//! arithmetic and the clock, used by the aggregator, the store's SQL, the
//! rollup and the simulator.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::Timestamp;

/// Asia/Jakarta's offset from UTC.
pub const OFFSET_MS: i64 = 7 * 3_600_000;
/// The same, in seconds, for SQL.
pub const OFFSET_SECS: i64 = OFFSET_MS / 1000;
pub const DAY_MS: i64 = 86_400_000;

/// The Jakarta day of a Unix time in milliseconds.
pub fn day_of(unix_ms: i64) -> i64 {
    (unix_ms + OFFSET_MS).div_euclid(DAY_MS)
}

/// Jakarta midnight starting `day`, Unix milliseconds.
pub fn day_start_ms(day: i64) -> i64 {
    day * DAY_MS - OFFSET_MS
}

/// Jakarta midnight ending `day`, Unix milliseconds.
pub fn day_end_ms(day: i64) -> i64 {
    day_start_ms(day + 1)
}

/// RFC 3339 in Jakarta time with milliseconds, e.g.
/// `2021-03-01T09:30:00.250+07:00`.
pub fn format_local(t: Timestamp) -> String {
    let local = Timestamp::from_unix_millis(t.unix_millis() + OFFSET_MS).to_string();
    // `local` is UTC-formatted (`...Z`): relabel it with the offset.
    format!("{}+07:00", local.trim_end_matches('Z'))
}

/// The wall clock, Unix milliseconds (0 before 1970).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The day number (days since 1970-01-01) of a proleptic Gregorian date,
/// `None` if there is no such day (month 1 to 12, day within the month),
/// by Howard Hinnant's days-from-civil algorithm.
pub fn days_from_civil(year: i64, month: i64, day: i64) -> Option<i64> {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if !(1..=days_in_month).contains(&day) {
        return None;
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// The proleptic Gregorian (year, month, day) of a day number (days since
/// 1970-01-01), by Howard Hinnant's civil-from-days algorithm.
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_turn_at_jakarta_midnight() {
        // 2021-02-28T17:00:00Z is 2021-03-01 00:00 in Jakarta.
        let midnight = 1_614_531_600_000;
        assert_eq!(day_of(midnight) - day_of(midnight - 1), 1);
        assert_eq!(day_start_ms(day_of(midnight)), midnight);
        assert_eq!(day_end_ms(day_of(midnight - 1)), midnight);
        assert_eq!(
            format_local(Timestamp::from_unix_millis(midnight + 250)),
            "2021-03-01T00:00:00.250+07:00"
        );
    }
}
