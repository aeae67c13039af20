//! The Indonesian calendar: national holidays, cuti bersama, Ramadan and
//! the Jakarta restriction periods (`schemas/reference/calendar.tsv`, with
//! its sources in its header), and the per-day table derived from it that
//! the metrics, the alerts and the dashboards read: which days are
//! holidays, how far each day is from Lebaran and Imlek, payday windows and
//! month ends.

use std::collections::BTreeMap;
use std::path::Path;

use crate::reference::ReferenceError;

const JAKARTA_CALENDAR: &str = include_str!("../../../schemas/reference/calendar.tsv");

/// Days around Lebaran (1 Syawal) that carry their distance to it.
pub const LEBARAN_REACH: i32 = 45;
/// Days around Imlek that carry their distance to it.
pub const IMLEK_REACH: i32 = 21;

/// What a line of the calendar file describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Holiday,
    CutiBersama,
    Ramadan,
    Restriction,
}

impl Kind {
    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "holiday" => Kind::Holiday,
            "cuti_bersama" => Kind::CutiBersama,
            "ramadan" => Kind::Ramadan,
            "restriction" => Kind::Restriction,
            _ => return None,
        })
    }
}

/// One line: a day or an inclusive range of Jakarta days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Days since 1970-01-01.
    pub from: i32,
    pub to: i32,
    pub kind: Kind,
    pub key: String,
    pub name: String,
    /// `official`, `announced`, `estimated` or `approximate`.
    pub status: String,
}

/// One Jakarta day of the derived table (`<database>_analytics.calendar`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CalendarDay {
    pub day: i32,
    /// Names of the day's national holidays, joined by " / "; empty if none.
    pub holiday: String,
    pub cuti_bersama: bool,
    pub ramadan: bool,
    /// Days from the nearest Lebaran (0 = 1 Syawal), within
    /// [`LEBARAN_REACH`].
    pub lebaran_day: Option<i16>,
    /// Days from the nearest Imlek, within [`IMLEK_REACH`].
    pub imlek_day: Option<i16>,
    /// The 25th to the 1st: when most salaries are paid.
    pub payday: bool,
    /// The last day of its month.
    pub month_end: bool,
    /// The Jakarta restriction in force (its key), empty if none.
    pub restriction: String,
}

/// The loaded calendar.
#[derive(Debug, Clone)]
pub struct Holidays {
    entries: Vec<Entry>,
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date.
pub fn day_number(s: &str) -> Option<i32> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(s, format).ok()?;
    Some(date.to_julian_day() - 2_440_588)
}

/// The date of a day number.
pub fn date_of(day: i32) -> Option<time::Date> {
    time::Date::from_julian_day(day + 2_440_588).ok()
}

impl Holidays {
    /// The calendar shipped for Jakarta, 2019 through 2027.
    pub fn jakarta() -> Holidays {
        Holidays::parse("schemas/reference/calendar.tsv", JAKARTA_CALENDAR)
            .expect("the shipped calendar is valid (tested)")
    }

    /// Reads a calendar file of the same format.
    pub fn load(path: &Path) -> Result<Holidays, ReferenceError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ReferenceError {
            source_name: name.clone(),
            line: 0,
            message: format!("cannot read: {e}"),
        })?;
        Holidays::parse(&name, &text)
    }

    pub fn parse(name: &str, text: &str) -> Result<Holidays, ReferenceError> {
        let err = |line, message: String| ReferenceError {
            source_name: name.to_owned(),
            line,
            message,
        };
        let header = "from\tto\tkind\tkey\tname\tstatus";
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let (n, line) = (i + 1, line.trim_end_matches('\r'));
            if line.is_empty() || line.starts_with('#') || line == header {
                continue;
            }
            let cols: Vec<&str> = line.split('\t').collect();
            let [from, to, kind, key, ename, status] = cols[..] else {
                return Err(err(
                    n,
                    format!("expected 6 tab-separated columns, found {}", cols.len()),
                ));
            };
            let day = |s: &str| {
                day_number(s).ok_or_else(|| err(n, format!("{s:?} is not a YYYY-MM-DD date")))
            };
            let (from, to) = (day(from)?, day(to)?);
            if to < from {
                return Err(err(n, "`to` is before `from`".into()));
            }
            let kind = Kind::parse(kind).ok_or_else(|| err(n, format!("unknown kind {kind:?}")))?;
            if !["official", "announced", "estimated", "approximate"].contains(&status) {
                return Err(err(n, format!("unknown status {status:?}")));
            }
            if key.is_empty() || ename.trim().is_empty() {
                return Err(err(n, "key and name must not be empty".into()));
            }
            entries.push(Entry {
                from,
                to,
                kind,
                key: key.to_owned(),
                name: ename.trim().to_owned(),
                status: status.to_owned(),
            });
        }
        if entries.is_empty() {
            return Err(err(0, "no entries in file".into()));
        }
        Ok(Holidays { entries })
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The days of the national holiday `key` (e.g. `idul_fitri`, `imlek`),
    /// in order.
    pub fn dates(&self, key: &str) -> Vec<i32> {
        let mut v: Vec<i32> = self
            .entries
            .iter()
            .filter(|e| e.kind == Kind::Holiday && e.key == key)
            .map(|e| e.from)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// One row per day from 1 January of the first year the file names to
    /// 31 December of the last.
    pub fn days(&self) -> Vec<CalendarDay> {
        let first = self.entries.iter().map(|e| e.from).min().unwrap_or(0);
        let last = self.entries.iter().map(|e| e.to).max().unwrap_or(0);
        let (Some(a), Some(b)) = (date_of(first), date_of(last)) else {
            return Vec::new();
        };
        let start = day_number(&format!("{:04}-01-01", a.year())).unwrap_or(first);
        let end = day_number(&format!("{:04}-12-31", b.year())).unwrap_or(last);
        let mut out: BTreeMap<i32, CalendarDay> = (start..=end)
            .map(|d| {
                let date = date_of(d).expect("in range");
                let next = date_of(d + 1).expect("in range");
                let row = CalendarDay {
                    day: d,
                    payday: date.day() >= 25 || date.day() == 1,
                    month_end: next.month() != date.month(),
                    ..CalendarDay::default()
                };
                (d, row)
            })
            .collect();
        for e in &self.entries {
            for d in e.from..=e.to {
                let Some(row) = out.get_mut(&d) else { continue };
                match e.kind {
                    Kind::Holiday => {
                        if !row.holiday.is_empty() {
                            row.holiday.push_str(" / ");
                        }
                        row.holiday.push_str(&e.name);
                    }
                    Kind::CutiBersama => row.cuti_bersama = true,
                    Kind::Ramadan => row.ramadan = true,
                    Kind::Restriction => row.restriction = e.key.clone(),
                }
            }
        }
        let nearest = |anchors: &[i32], d: i32, reach: i32| {
            anchors
                .iter()
                .map(|a| d - a)
                .filter(|x| x.abs() <= reach)
                .min_by_key(|x| x.abs())
                .map(|x| x as i16)
        };
        let (lebaran, imlek) = (self.dates("idul_fitri"), self.dates("imlek"));
        for row in out.values_mut() {
            row.lebaran_day = nearest(&lebaran, row.day, LEBARAN_REACH);
            row.imlek_day = nearest(&imlek, row.day, IMLEK_REACH);
        }
        out.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> i32 {
        day_number(s).unwrap()
    }

    #[test]
    fn the_shipped_calendar_covers_2019_to_2027() {
        let h = Holidays::jakarta();
        let lebaran = h.dates("idul_fitri");
        assert_eq!(lebaran.len(), 9, "one Idul Fitri a year: {lebaran:?}");
        assert_eq!(lebaran[1], day("2020-05-24"));
        // Lebaran moves about 11 days earlier each year.
        for w in lebaran.windows(2) {
            assert!((353..=356).contains(&(w[1] - w[0])), "{w:?}");
        }
        let imlek = h.dates("imlek");
        assert_eq!(imlek.len(), 9);
        for w in imlek.windows(2) {
            assert!((353..=385).contains(&(w[1] - w[0])), "{w:?}");
        }
        let days = h.days();
        assert_eq!(days.first().unwrap().day, day("2019-01-01"));
        assert_eq!(days.last().unwrap().day, day("2027-12-31"));
        assert_eq!(days.len(), 3287);
        let at = |s: &str| days.iter().find(|d| d.day == day(s)).unwrap();
        assert_eq!(at("2020-05-24").lebaran_day, Some(0));
        assert_eq!(at("2020-05-20").lebaran_day, Some(-4));
        assert!(at("2020-05-20").ramadan);
        assert!(!at("2020-05-24").ramadan);
        assert_eq!(at("2020-05-24").holiday, "Hari Raya Idul Fitri");
        assert_eq!(at("2021-05-13").holiday.split(" / ").count(), 2);
        assert!(at("2020-12-31").cuti_bersama);
        assert_eq!(at("2021-07-10").restriction, "ppkm_darurat");
        assert_eq!(at("2020-01-25").imlek_day, Some(0));
        assert!(at("2021-02-28").month_end && at("2021-02-28").payday);
        assert!(at("2021-03-01").payday && !at("2021-03-02").payday);
        assert_eq!(at("2019-09-01").lebaran_day, None);
    }

    #[test]
    fn a_bad_line_is_named() {
        for (text, want) in [
            ("2020-01-01\t2020-01-01\tholiday\tx\tX", "6 tab-separated"),
            (
                "2020-13-01\t2020-01-01\tholiday\tx\tX\tofficial",
                "not a YYYY-MM-DD",
            ),
            ("2020-01-02\t2020-01-01\tholiday\tx\tX\tofficial", "before"),
            (
                "2020-01-01\t2020-01-01\tfestival\tx\tX\tofficial",
                "unknown kind",
            ),
            (
                "2020-01-01\t2020-01-01\tholiday\tx\tX\tguessed",
                "unknown status",
            ),
        ] {
            let e = Holidays::parse("cal.tsv", &format!("# c\n{text}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("cal.tsv:2: ") && e.contains(want), "{e}");
        }
    }
}
