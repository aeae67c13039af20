//! Event time: strict RFC 3339 parsing and a canonical UTC rendering.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// An instant in UTC with millisecond resolution, as milliseconds since the
/// Unix epoch.
///
/// It is parsed from RFC 3339 with an explicit offset and at least
/// millisecond precision (`2024-03-01T09:15:02.123+07:00`), the same rule as
/// the `occurred_at` pattern in `schemas/payment_event.v1.json`; digits
/// beyond the millisecond are truncated. It is rendered as
/// `2024-03-01T02:15:02.123Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn from_unix_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    pub fn unix_millis(self) -> i64 {
        self.0
    }

    /// Parses the contract's RFC 3339 form; `None` if it is not exactly that.
    pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
        Timestamp::parse_rfc3339_bytes(s.as_bytes())
    }

    /// [`Timestamp::parse_rfc3339`] of bytes, for decoders that have not
    /// made a `str` of them.
    pub fn parse_rfc3339_bytes(b: &[u8]) -> Option<Timestamp> {
        // YYYY-MM-DDTHH:MM:SS.fff (23 bytes) + fraction + offset
        if b.len() < 24 {
            return None;
        }
        let digits = |r: std::ops::Range<usize>| -> Option<u32> {
            b[r].iter().try_fold(0u32, |acc, &c| {
                c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
            })
        };
        let year = digits(0..4)?;
        let month = digits(5..7)?;
        let day = digits(8..10)?;
        let hour = digits(11..13)?;
        let minute = digits(14..16)?;
        let second = digits(17..19)?;
        if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
            return None;
        }
        if b[13] != b':' || b[16] != b':' || b[19] != b'.' {
            return None;
        }
        let frac_len = b[20..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(3..=9).contains(&frac_len) {
            return None;
        }
        let millis = digits(20..23)?;
        let rest = &b[20 + frac_len..];
        let offset_secs: i32 = match rest {
            [b'Z' | b'z'] => 0,
            [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
                let two = |a: u8, b: u8| -> Option<i32> {
                    (a.is_ascii_digit() && b.is_ascii_digit())
                        .then(|| i32::from(a - b'0') * 10 + i32::from(b - b'0'))
                };
                let (oh, om) = (two(*h1, *h2)?, two(*m1, *m2)?);
                if oh > 23 || om > 59 {
                    return None;
                }
                let secs = oh * 3600 + om * 60;
                if *sign == b'-' {
                    -secs
                } else {
                    secs
                }
            }
            _ => return None,
        };
        if hour > 23 || minute > 59 || second > 59 {
            return None;
        }
        let days =
            crate::calendar::days_from_civil(i64::from(year), i64::from(month), i64::from(day))?;
        let secs = ((days * 24 + i64::from(hour)) * 60 + i64::from(minute)) * 60
            + i64::from(second)
            - i64::from(offset_secs);
        Some(Timestamp(secs * 1000 + i64::from(millis)))
    }

    fn to_datetime(self) -> Option<OffsetDateTime> {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000).ok()
    }
}

impl Timestamp {
    /// Appends the [`fmt::Display`] form to `out` without the formatting
    /// machinery: the intake writes one per event.
    pub fn write_to(self, out: &mut Vec<u8>) {
        let (days, ms) = (self.0.div_euclid(86_400_000), self.0.rem_euclid(86_400_000));
        let (year, month, day) = crate::calendar::civil_from_days(days);
        if !(0..=9999).contains(&year) {
            out.extend_from_slice(self.to_string().as_bytes());
            return;
        }
        let mut push = |v: i64, width: usize, after: u8| {
            let mut digits = [b'0'; 4];
            let mut v = v;
            for d in digits[..width].iter_mut().rev() {
                *d = b'0' + (v % 10) as u8;
                v /= 10;
            }
            out.extend_from_slice(&digits[..width]);
            out.push(after);
        };
        push(year, 4, b'-');
        push(month, 2, b'-');
        push(day, 2, b'T');
        push(ms / 3_600_000, 2, b':');
        push(ms / 60_000 % 60, 2, b':');
        push(ms / 1000 % 60, 2, b'.');
        push(ms % 1000, 3, b'Z');
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_datetime() {
            Some(t) if (0..=9999).contains(&t.year()) => write!(
                f,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                t.millisecond()
            ),
            _ => write!(f, "<out of range: {} ms>", self.0),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse_rfc3339(&s)
            .ok_or_else(|| serde::de::Error::custom("timestamp is not RFC 3339 with milliseconds"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::{Date, Month, UtcOffset};

    /// The number `s[r]` spells, if it is all ASCII digits (`parse` alone
    /// would take a sign).
    fn digits(s: &str, r: std::ops::Range<usize>) -> Option<u32> {
        let d = s.get(r)?;
        d.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| d.parse().ok())
            .flatten()
    }

    /// The parser as it was written with the `time` crate, which the
    /// arithmetic above must agree with.
    fn parse_with_time(s: &str) -> Option<Timestamp> {
        let b = s.as_bytes();
        if b.len() < 24 || !s.is_ascii() {
            return None;
        }
        if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
            return None;
        }
        if b[13] != b':' || b[16] != b':' || b[19] != b'.' {
            return None;
        }
        let n = |r| digits(s, r);
        let (year, month, day) = (n(0..4)?, n(5..7)?, n(8..10)?);
        let (hour, minute, second, millis) = (n(11..13)?, n(14..16)?, n(17..19)?, n(20..23)?);
        let fraction = s[20..].bytes().take_while(u8::is_ascii_digit).count();
        if !(3..=9).contains(&fraction) {
            return None;
        }
        let offset_secs = match &s[20 + fraction..] {
            "Z" | "z" => 0,
            o if o.len() == 6 && o.as_bytes()[3] == b':' => {
                let (h, m) = (digits(o, 1..3)? as i32, digits(o, 4..6)? as i32);
                if h > 23 || m > 59 {
                    return None;
                }
                match &o[..1] {
                    "+" => h * 3600 + m * 60,
                    "-" => -(h * 3600 + m * 60),
                    _ => return None,
                }
            }
            _ => return None,
        };
        let month = Month::try_from(u8::try_from(month).ok()?).ok()?;
        let date =
            Date::from_calendar_date(i32::try_from(year).ok()?, month, u8::try_from(day).ok()?)
                .ok()?;
        let offset = UtcOffset::from_whole_seconds(offset_secs).ok()?;
        let local = date
            .with_hms_milli(hour as u8, minute as u8, second as u8, millis as u16)
            .ok()?
            .assume_offset(offset);
        Some(Timestamp(
            i64::try_from(local.unix_timestamp_nanos().div_euclid(1_000_000)).ok()?,
        ))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]

        /// Any date, time, fraction and offset the contract's form can
        /// spell, valid or not (30 February, month 13, hour 24, ten digits
        /// of fraction, offset +24:00), parses to what the `time` crate
        /// makes of it.
        #[test]
        fn dates_are_read_as_the_time_crate_reads_them(
            year in 0u32..10_000, month in 0u32..14, day in 0u32..33,
            hour in 0u32..25, minute in 0u32..61, second in 0u32..61, millis in 0u32..1000,
            beyond_millis in "[0-9]{0,7}",
            offset in prop_oneof![Just("Z".to_owned()), Just("z".to_owned()), (0u32..25, 0u32..61, any::<bool>())
                .prop_map(|(h, m, neg)| format!("{}{h:02}:{m:02}", if neg { '-' } else { '+' }))],
        ) {
            let s = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{millis:03}{beyond_millis}{offset}");
            prop_assert_eq!(Timestamp::parse_rfc3339(&s), parse_with_time(&s), "{}", s);
        }

        /// A valid timestamp with one byte replaced by any other (a
        /// letter for a digit, a digit for a separator, a byte that is
        /// not ASCII) is read as the `time` crate reads it: refused,
        /// unless the new byte is another digit where a digit was, or the
        /// other case of `T` or `Z`.
        #[test]
        fn a_byte_replaced_is_read_as_the_time_crate_reads_it(
            at in 0usize..29, byte in any::<u8>(),
            offset in prop_oneof![Just("Z"), Just("+07:00"), Just("-12:30")],
        ) {
            let mut b = format!("2024-02-29T23:59:59.123456{offset}").into_bytes();
            let at = at % b.len();
            b[at] = byte;
            let parsed = Timestamp::parse_rfc3339_bytes(&b);
            match std::str::from_utf8(&b) {
                Ok(s) => prop_assert_eq!(parsed, parse_with_time(s), "{}", s),
                Err(_) => prop_assert_eq!(parsed, None),
            }
        }
    }

    #[test]
    fn parses_offsets_to_the_same_instant() {
        let a = Timestamp::parse_rfc3339("2024-03-01T09:15:02.123+07:00").unwrap();
        let b = Timestamp::parse_rfc3339("2024-03-01T02:15:02.123Z").unwrap();
        let c = Timestamp::parse_rfc3339("2024-03-01t02:15:02.123456789z").unwrap();
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert_eq!(a.to_string(), "2024-03-01T02:15:02.123Z");
        assert_eq!(a.unix_millis(), 1_709_259_302_123);
    }

    #[test]
    fn rejects_what_the_contract_rejects() {
        for bad in [
            "2024-03-01T09:15:02+07:00",       // no fraction
            "2024-03-01T09:15:02.12+07:00",    // too short a fraction
            "2024-03-01T09:15:02.1234567890Z", // ten digits
            "2024-03-01 09:15:02.123Z",        // space separator
            "2024-03-01T09:15:02.123",         // no offset
            "2024-02-30T09:15:02.123Z",        // no such day
            "2023-02-29T09:15:02.123Z",        // not a leap year
            "2024-03-01T24:00:00.000Z",        // hour 24
            "2024-03-01T23:59:60.000Z",        // leap second
            "2024-03-01T09:15:02.123+0700",    // offset without colon
            "2024-03-01T09:15:02.123+24:00",   // offset out of range
            "２０２４-03-01T09:15:02.123Z",    // non-ASCII digits
            "",
        ] {
            assert_eq!(Timestamp::parse_rfc3339(bad), None, "{bad}");
        }
        assert!(Timestamp::parse_rfc3339("2024-02-29T23:59:59.999-12:30").is_some());
    }

    #[test]
    fn renders_before_the_epoch() {
        let t = Timestamp::parse_rfc3339("1969-12-31T23:59:59.999Z").unwrap();
        assert_eq!(t.unix_millis(), -1);
        assert_eq!(t.to_string(), "1969-12-31T23:59:59.999Z");
    }
}
