//! The scenario file (`deploy/scenarios/*.toml`): who trades, how the
//! pandemic moved each sector, and which faults to inject. Parsed and
//! checked here; every error names the key.

use std::collections::BTreeMap;

use pulih_event::holidays::day_number;
use pulih_event::{Reference, Sector};
use serde::Deserialize;

/// The scenario shipped with pulih: Jakarta 2019 to today.
pub const JAKARTA: &str = include_str!("../../../deploy/scenarios/jakarta.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: String,
    start: String,
    seed: u64,
    population: Population,
    producers: BTreeMap<String, f64>,
    #[serde(default)]
    timeline: Vec<RawPoint>,
    #[serde(default)]
    lag: Vec<RawLag>,
    #[serde(default)]
    downturn: Vec<RawDownturn>,
    #[serde(default)]
    sudden_stop: Vec<RawStop>,
    #[serde(default)]
    outage: Vec<RawOutage>,
    #[serde(default)]
    faults: Faults,
}

/// `[population]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Population {
    pub merchants: u32,
    pub micro: f64,
    pub small: f64,
    pub medium: f64,
    pub closing_per_month: f64,
    pub opening_per_month: f64,
    pub transactions_micro: f64,
    pub transactions_small: f64,
    pub transactions_medium: f64,
    pub qris_share_start: f64,
    pub qris_share_end: f64,
}

/// `[faults]`: shares of events.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    #[serde(default)]
    pub duplicates: f64,
    #[serde(default)]
    pub out_of_order: f64,
    #[serde(default)]
    pub late: f64,
    #[serde(default)]
    pub invalid: f64,
}

#[derive(Debug, Clone, Deserialize)]
struct RawPoint {
    date: String,
    #[serde(flatten)]
    levels: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLag {
    #[serde(default)]
    kota: Option<String>,
    #[serde(default)]
    district: Option<String>,
    sector: String,
    points: Vec<(String, f64)>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDownturn {
    #[serde(default)]
    kota: Option<String>,
    #[serde(default)]
    district: Option<String>,
    sector: String,
    start: String,
    ramp_days: u32,
    depth: f64,
    #[serde(default)]
    recover: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStop {
    district: String,
    sector: String,
    day: String,
    from_hour: u32,
    hours: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutage {
    producer: String,
    start: String,
    days: u32,
}

/// Where a lag or a downturn applies: a kota's or one district's cells of a sector.
#[derive(Debug, Clone, PartialEq)]
pub struct Area {
    /// A kota code (`31.72`) or a district code (`31.72.01`).
    pub code: String,
    pub sector: Sector,
}

impl Area {
    /// Whether the district `district` (its code) lies in the area.
    pub fn holds(&self, district: &str, sector: Sector) -> bool {
        sector == self.sector
            && (district == self.code
                || (district.starts_with(&self.code)
                    && district.as_bytes().get(self.code.len()) == Some(&b'.')))
    }
}

/// A checked scenario, its dates resolved against the last simulated day.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub start: i32,
    pub end: i32,
    pub seed: u64,
    pub population: Population,
    /// Producer ids and their shares, summing to 1.
    pub producers: Vec<(String, f64)>,
    /// Key dates with a level per sector (index `Sector::index()`).
    pub timeline: Vec<(i32, [f64; 21])>,
    pub lags: Vec<(Area, Vec<(i32, f64)>)>,
    pub downturns: Vec<Downturn>,
    pub sudden_stops: Vec<SuddenStop>,
    pub outages: Vec<Outage>,
    pub faults: Faults,
}

#[derive(Debug, Clone)]
pub struct Downturn {
    pub area: Area,
    pub start: i32,
    pub ramp_days: u32,
    pub depth: f64,
    pub recover: Option<i32>,
}

#[derive(Debug, Clone)]
pub struct SuddenStop {
    pub district: String,
    pub sector: Sector,
    pub day: i32,
    pub from_hour: u32,
    pub hours: u32,
}

#[derive(Debug, Clone)]
pub struct Outage {
    pub producer: String,
    pub start: i32,
    pub days: u32,
}

/// A problem in a scenario file, naming the file and key.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioError(pub String);

impl std::fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ScenarioError {}

impl Scenario {
    /// Parses and checks the scenario `text` (read from `source`), with
    /// relative dates counted back from `end`, the last simulated day.
    pub fn parse(
        source: &str,
        text: &str,
        end: i32,
        reference: &Reference,
    ) -> Result<Scenario, ScenarioError> {
        let err = |key: &str, msg: String| ScenarioError(format!("{source}: `{key}`: {msg}"));
        let raw: Raw = toml::from_str(text)
            .map_err(|e| ScenarioError(format!("{source}: {}", e.to_string().trim_end())))?;
        let date = |key: &str, s: &str| -> Result<i32, ScenarioError> {
            if let Some(n) = s.strip_prefix('-').and_then(|r| r.strip_suffix('d')) {
                if let Ok(n) = n.parse::<u32>() {
                    return Ok(end - n as i32);
                }
            }
            day_number(s).ok_or_else(|| err(key, format!("`{s}` is neither YYYY-MM-DD nor -Nd")))
        };
        let share = |key: &str, v: f64| -> Result<f64, ScenarioError> {
            if (0.0..=1.0).contains(&v) {
                Ok(v)
            } else {
                Err(err(key, format!("{v} is not a share between 0 and 1")))
            }
        };
        let positive = |key: &str, v: f64| -> Result<f64, ScenarioError> {
            if v.is_finite() && v > 0.0 && v <= 100.0 {
                Ok(v)
            } else {
                Err(err(key, format!("{v} must be above 0 (and at most 100)")))
            }
        };
        let sector = |key: &str, s: &str| {
            Sector::from_letter(s)
                .ok_or_else(|| err(key, format!("`{s}` is not a KBLI 2020 category A..U")))
        };
        let area = |key: &str, kota: &Option<String>, district: &Option<String>, s: &str| {
            let code = match (kota, district) {
                (Some(k), None) => {
                    let prefix = format!("{k}.");
                    if !reference
                        .districts()
                        .iter()
                        .any(|d| d.code.starts_with(&prefix))
                    {
                        return Err(err(
                            &format!("{key}.kota"),
                            format!("no district of the reference lies in `{k}`"),
                        ));
                    }
                    k.clone()
                }
                (None, Some(d)) => {
                    if reference.district(d).is_none() {
                        return Err(err(
                            &format!("{key}.district"),
                            format!("`{d}` is not a district of the reference"),
                        ));
                    }
                    d.clone()
                }
                _ => {
                    return Err(err(key, "give exactly one of `kota` and `district`".into()));
                }
            };
            Ok(Area {
                code,
                sector: sector(&format!("{key}.sector"), s)?,
            })
        };

        if raw.name.is_empty()
            || raw.name.len() > 32
            || !raw
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(err("name", "must be 1-32 of [A-Za-z0-9_-]".into()));
        }
        let start = date("start", &raw.start)?;
        if start > end {
            return Err(err(
                "start",
                "is after the last simulated day (--to)".into(),
            ));
        }
        let p = &raw.population;
        if p.merchants == 0 || p.merchants > 10_000_000 {
            return Err(err("population.merchants", "must be 1..=10000000".into()));
        }
        for (key, v) in [
            ("population.micro", p.micro),
            ("population.small", p.small),
            ("population.medium", p.medium),
            ("population.closing_per_month", p.closing_per_month),
            ("population.opening_per_month", p.opening_per_month),
            ("population.qris_share_start", p.qris_share_start),
            ("population.qris_share_end", p.qris_share_end),
        ] {
            share(key, v)?;
        }
        if ((p.micro + p.small + p.medium) - 1.0).abs() > 1e-6 {
            return Err(err(
                "population.micro",
                "micro, small and medium must sum to 1".into(),
            ));
        }
        for (key, v) in [
            ("population.transactions_micro", p.transactions_micro),
            ("population.transactions_small", p.transactions_small),
            ("population.transactions_medium", p.transactions_medium),
        ] {
            positive(key, v)?;
        }

        let mut producers = Vec::new();
        for (id, v) in &raw.producers {
            let key = format!("producers.{id}");
            if !pulih_event::is_producer_id(id) {
                return Err(err(&key, "a producer id is 1-64 of [A-Za-z0-9_-]".into()));
            }
            producers.push((id.clone(), share(&key, *v)?));
        }
        let total: f64 = producers.iter().map(|p| p.1).sum();
        if producers.is_empty() || (total - 1.0).abs() > 1e-6 {
            return Err(err("producers", "shares must sum to 1".into()));
        }

        let mut timeline = Vec::new();
        for (i, point) in raw.timeline.iter().enumerate() {
            let key = format!("timeline[{i}]");
            let day = date(&format!("{key}.date"), &point.date)?;
            if timeline.last().is_some_and(|&(d, _)| d >= day) {
                return Err(err(&format!("{key}.date"), "dates must increase".into()));
            }
            let all = positive(
                &format!("{key}.all"),
                *point
                    .levels
                    .get("all")
                    .ok_or_else(|| err(&key, "needs `all`".into()))?,
            )?;
            let mut levels = [all; 21];
            for (k, v) in &point.levels {
                if k == "all" {
                    continue;
                }
                let s = sector(&format!("{key}.{k}"), k)?;
                levels[s.index()] = positive(&format!("{key}.{k}"), *v)?;
            }
            timeline.push((day, levels));
        }
        if timeline.is_empty() {
            timeline.push((start, [1.0; 21]));
        }

        let mut lags = Vec::new();
        for (i, l) in raw.lag.iter().enumerate() {
            let key = format!("lag[{i}]");
            let a = area(&key, &l.kota, &l.district, &l.sector)?;
            let mut points = Vec::new();
            for (j, (d, v)) in l.points.iter().enumerate() {
                let k = format!("{key}.points[{j}]");
                let day = date(&k, d)?;
                if points.last().is_some_and(|&(p, _)| p >= day) {
                    return Err(err(&k, "dates must increase".into()));
                }
                points.push((day, positive(&k, *v)?));
            }
            if points.is_empty() {
                return Err(err(
                    &format!("{key}.points"),
                    "needs at least one point".into(),
                ));
            }
            lags.push((a, points));
        }

        let mut downturns = Vec::new();
        for (i, d) in raw.downturn.iter().enumerate() {
            let key = format!("downturn[{i}]");
            let start = date(&format!("{key}.start"), &d.start)?;
            let recover = match &d.recover {
                Some(r) => Some(date(&format!("{key}.recover"), r)?),
                None => None,
            };
            if recover.is_some_and(|r| r <= start) {
                return Err(err(
                    &format!("{key}.recover"),
                    "must be after `start`".into(),
                ));
            }
            let depth = share(&format!("{key}.depth"), d.depth)?;
            if depth >= 1.0 {
                return Err(err(&format!("{key}.depth"), "must be below 1".into()));
            }
            downturns.push(Downturn {
                area: area(&key, &d.kota, &d.district, &d.sector)?,
                start,
                ramp_days: d.ramp_days.max(1),
                depth,
                recover,
            });
        }

        let mut sudden_stops = Vec::new();
        for (i, s) in raw.sudden_stop.iter().enumerate() {
            let key = format!("sudden_stop[{i}]");
            if reference.district(&s.district).is_none() {
                return Err(err(
                    &format!("{key}.district"),
                    format!("`{}` is not a district of the reference", s.district),
                ));
            }
            if s.from_hour > 23 {
                return Err(err(&format!("{key}.from_hour"), "must be 0..=23".into()));
            }
            if s.hours == 0 || s.hours > 24 * 14 {
                return Err(err(&format!("{key}.hours"), "must be 1..=336".into()));
            }
            sudden_stops.push(SuddenStop {
                district: s.district.clone(),
                sector: sector(&format!("{key}.sector"), &s.sector)?,
                day: date(&format!("{key}.day"), &s.day)?,
                from_hour: s.from_hour,
                hours: s.hours,
            });
        }

        let mut outages = Vec::new();
        for (i, o) in raw.outage.iter().enumerate() {
            let key = format!("outage[{i}]");
            if !producers.iter().any(|(p, _)| p == &o.producer) {
                return Err(err(
                    &format!("{key}.producer"),
                    format!("`{}` is not in [producers]", o.producer),
                ));
            }
            if o.days == 0 {
                return Err(err(&format!("{key}.days"), "must be at least 1".into()));
            }
            outages.push(Outage {
                producer: o.producer.clone(),
                start: date(&format!("{key}.start"), &o.start)?,
                days: o.days,
            });
        }

        let faults = check_faults(raw.faults).map_err(|(k, m)| err(&format!("faults.{k}"), m))?;
        Ok(Scenario {
            name: raw.name,
            start,
            end,
            seed: raw.seed,
            population: raw.population,
            producers,
            timeline,
            lags,
            downturns,
            sudden_stops,
            outages,
            faults,
        })
    }

    /// The shipped Jakarta scenario, ending on `end`.
    pub fn jakarta(end: i32, reference: &Reference) -> Scenario {
        Scenario::parse("deploy/scenarios/jakarta.toml", JAKARTA, end, reference)
            .expect("the shipped scenario is valid (tested)")
    }

    /// Replaces the event-level fault rates.
    pub fn with_faults(mut self, faults: Faults) -> Result<Scenario, ScenarioError> {
        self.faults =
            check_faults(faults).map_err(|(k, m)| ScenarioError(format!("--{k}: {m}")))?;
        Ok(self)
    }
}

fn check_faults(f: Faults) -> Result<Faults, (&'static str, String)> {
    for (key, v) in [
        ("duplicates", f.duplicates),
        ("out_of_order", f.out_of_order),
        ("late", f.late),
        ("invalid", f.invalid),
    ] {
        if !(0.0..=0.5).contains(&v) {
            return Err((key, format!("{v} is not a share between 0 and 0.5")));
        }
    }
    Ok(f)
}
