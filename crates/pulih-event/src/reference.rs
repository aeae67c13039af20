//! Reference data: the districts (kecamatan) events may name and the KBLI 2020
//! categories with the two-digit divisions each one covers.
//!
//! Both tables are tab-separated files under `schemas/reference/`; the ones
//! shipped for Jakarta are compiled in, and [`Reference::load`] reads a
//! replacement district table for another city.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use crate::Sector;

const JAKARTA_DISTRICTS: &str = include_str!("../../../schemas/reference/districts.tsv");
const KBLI_CATEGORIES: &str = include_str!("../../../schemas/reference/kbli2020_categories.tsv");

/// One kecamatan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct District {
    /// Kemendagri code, `NN.NN.NN`.
    pub code: String,
    pub name: String,
    /// Kemendagri code of its kota or kabupaten, `NN.NN`.
    pub regency_code: String,
    pub regency_name: String,
}

/// One KBLI 2020 category.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Category {
    pub sector: Sector,
    pub name_id: String,
    pub name_en: String,
    /// Inclusive ranges of two-digit divisions (golongan pokok).
    pub divisions: Vec<(u8, u8)>,
}

/// The loaded reference tables.
#[derive(Debug, Clone)]
pub struct Reference {
    districts: Vec<District>,
    /// The codes (all of the form `NN.NN.NN`, eight bytes) as big-endian
    /// integers, sorted, with their index.
    by_code8: Vec<(u64, usize)>,
    categories: Vec<Category>,
    /// Category of each two-digit division, `None` where no division exists.
    division_sector: [Option<Sector>; 100],
}

/// A reference file that could not be read or understood.
#[derive(Debug)]
pub struct ReferenceError {
    pub source_name: String,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ReferenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.source_name, self.message)
        } else {
            write!(f, "{}:{}: {}", self.source_name, self.line, self.message)
        }
    }
}

impl std::error::Error for ReferenceError {}

impl Reference {
    /// The tables shipped for Jakarta: 44 kecamatan, 21 KBLI categories.
    pub fn jakarta() -> Reference {
        Self::from_sources("districts.tsv", JAKARTA_DISTRICTS)
            .expect("the shipped reference tables are checked by this crate's tests")
    }

    /// Loads a district table from `path` (same format as
    /// `schemas/reference/districts.tsv`) with the shipped KBLI table.
    pub fn load(path: &Path) -> Result<Reference, ReferenceError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ReferenceError {
            source_name: name.clone(),
            line: 0,
            message: format!("cannot read district reference file: {e}"),
        })?;
        Self::from_sources(&name, &text)
    }

    /// Builds the tables from the text of a district file.
    pub fn from_sources(
        districts_name: &str,
        districts_text: &str,
    ) -> Result<Reference, ReferenceError> {
        let districts = parse_districts(districts_name, districts_text)?;
        let categories = parse_categories("kbli2020_categories.tsv", KBLI_CATEGORIES)?;
        let mut division_sector = [None; 100];
        for c in &categories {
            for &(lo, hi) in &c.divisions {
                for d in lo..=hi {
                    division_sector[usize::from(d)] = Some(c.sector);
                }
            }
        }
        let mut by_code8: Vec<(u64, usize)> = districts
            .iter()
            .enumerate()
            .filter_map(|(i, d)| Some((u64::from_be_bytes(d.code.as_bytes().try_into().ok()?), i)))
            .collect();
        by_code8.sort_unstable();
        Ok(Reference {
            districts,
            by_code8,
            categories,
            division_sector,
        })
    }

    pub fn districts(&self) -> &[District] {
        &self.districts
    }

    pub fn district(&self, code: &str) -> Option<&District> {
        self.district8(code.as_bytes().try_into().ok()?)
    }

    /// [`Reference::district`] of a code of eight bytes (the contract's
    /// form), without hashing: the gateway and the aggregator look one up
    /// per event.
    pub fn district8(&self, code: &[u8; 8]) -> Option<&District> {
        let key = u64::from_be_bytes(*code);
        let i = self.by_code8.binary_search_by_key(&key, |&(k, _)| k).ok()?;
        Some(&self.districts[self.by_code8[i].1])
    }

    pub fn categories(&self) -> &[Category] {
        &self.categories
    }

    /// The category a five-digit KBLI code belongs to, `None` if its division
    /// does not exist or it is not five ASCII digits.
    pub fn kbli_sector(&self, kbli_code: &str) -> Option<Sector> {
        let b = kbli_code.as_bytes();
        if b.len() != 5 || !b.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.division_sector[usize::from((b[0] - b'0') * 10 + (b[1] - b'0'))]
    }
}

fn data_lines<'a>(text: &'a str, header: &str) -> impl Iterator<Item = (usize, &'a str)> + 'a {
    let header = header.to_owned();
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
        .filter(move |(_, l)| !l.is_empty() && !l.starts_with('#') && *l != header)
}

fn parse_districts(name: &str, text: &str) -> Result<Vec<District>, ReferenceError> {
    let err = |line, message: String| ReferenceError {
        source_name: name.to_owned(),
        line,
        message,
    };
    let mut out: Vec<District> = Vec::new();
    let mut seen = HashMap::new();
    for (n, line) in data_lines(text, "code\tname\tregency_code\tregency_name") {
        let cols: Vec<&str> = line.split('\t').collect();
        let [code, dname, regency_code, regency_name] = cols[..] else {
            return Err(err(
                n,
                format!("expected 4 tab-separated columns, found {}", cols.len()),
            ));
        };
        if !is_code(code, 3) {
            return Err(err(
                n,
                format!("district code {code:?} is not of the form NN.NN.NN"),
            ));
        }
        if !is_code(regency_code, 2) || !code.starts_with(&format!("{regency_code}.")) {
            return Err(err(
                n,
                format!("regency code {regency_code:?} is not the NN.NN prefix of {code}"),
            ));
        }
        if dname.trim().is_empty() || regency_name.trim().is_empty() {
            return Err(err(n, "names must not be empty".into()));
        }
        if let Some(first) = seen.insert(code.to_owned(), n) {
            return Err(err(
                n,
                format!("district code {code} already given on line {first}"),
            ));
        }
        out.push(District {
            code: code.to_owned(),
            name: dname.trim().to_owned(),
            regency_code: regency_code.to_owned(),
            regency_name: regency_name.trim().to_owned(),
        });
    }
    if out.is_empty() {
        return Err(err(0, "no districts in file".into()));
    }
    Ok(out)
}

fn parse_categories(name: &str, text: &str) -> Result<Vec<Category>, ReferenceError> {
    let err = |line, message: String| ReferenceError {
        source_name: name.to_owned(),
        line,
        message,
    };
    let mut out = Vec::new();
    for (n, line) in data_lines(text, "category\tdivisions\tname_id\tname_en") {
        let cols: Vec<&str> = line.split('\t').collect();
        let [letter, divisions, name_id, name_en] = cols[..] else {
            return Err(err(
                n,
                format!("expected 4 tab-separated columns, found {}", cols.len()),
            ));
        };
        let sector = Sector::from_letter(letter)
            .ok_or_else(|| err(n, format!("{letter:?} is not a category letter A-U")))?;
        let divisions = divisions
            .split(',')
            .map(|r| {
                let (lo, hi) = r.split_once('-').unwrap_or((r, r));
                match (lo.parse::<u8>(), hi.parse::<u8>()) {
                    (Ok(lo), Ok(hi)) if lo <= hi && hi < 100 => Ok((lo, hi)),
                    _ => Err(err(n, format!("bad division range {r:?}"))),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.push(Category {
            sector,
            name_id: name_id.into(),
            name_en: name_en.into(),
            divisions,
        });
    }
    Ok(out)
}

/// `parts` groups of two ASCII digits joined by dots.
pub(crate) fn is_code(s: &str, parts: usize) -> bool {
    s.len() == parts * 3 - 1
        && s.bytes().enumerate().all(|(i, b)| {
            if i % 3 == 2 {
                b == b'.'
            } else {
                b.is_ascii_digit()
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn districts_are_found_by_their_eight_bytes_as_by_their_code() {
        let r = Reference::jakarta();
        for d in r.districts() {
            let code: [u8; 8] = d.code.as_bytes().try_into().unwrap();
            assert_eq!(r.district8(&code).map(|x| &x.code), Some(&d.code));
            assert_eq!(r.district(&d.code).map(|x| &x.code), Some(&d.code));
        }
        for missing in [b"31.76.01", b"00.00.00", b"99.99.99", b"31.71.0 "] {
            assert!(r.district8(missing).is_none());
            assert!(r.district(std::str::from_utf8(missing).unwrap()).is_none());
        }
        assert!(crate::Sector::from_byte(b'U').is_some());
        assert!(crate::Sector::from_byte(b'V').is_none());
        assert!(crate::Sector::from_byte(b'a').is_none());
    }

    #[test]
    fn jakarta_has_44_districts_in_6_regencies() {
        let r = Reference::jakarta();
        assert_eq!(r.districts().len(), 44);
        let mut regencies: Vec<_> = r
            .districts()
            .iter()
            .map(|d| d.regency_code.as_str())
            .collect();
        regencies.dedup();
        assert_eq!(
            regencies,
            ["31.01", "31.71", "31.72", "31.73", "31.74", "31.75"]
        );
        assert_eq!(r.district("31.74.09").unwrap().name, "Jagakarsa");
        assert_eq!(
            r.district("31.71.01").unwrap().regency_name,
            "Kota Administrasi Jakarta Pusat"
        );
        assert!(r.district("31.76.01").is_none());
    }

    #[test]
    fn kbli_has_21_categories_covering_distinct_divisions() {
        let r = Reference::jakarta();
        let letters: String = r.categories().iter().map(|c| c.sector.as_str()).collect();
        assert_eq!(letters, "ABCDEFGHIJKLMNOPQRSTU");
        assert_eq!(r.kbli_sector("47111").map(Sector::as_str), Some("G"));
        assert_eq!(r.kbli_sector("56101").map(Sector::as_str), Some("I"));
        assert_eq!(r.kbli_sector("01111").map(Sector::as_str), Some("A"));
        assert_eq!(r.kbli_sector("99000").map(Sector::as_str), Some("U"));
        for missing in [
            "04000", "34000", "40000", "44000", "48000", "54000", "57000", "67000", "76000",
            "83000", "89000", "00000",
        ] {
            assert_eq!(r.kbli_sector(missing), None, "{missing}");
        }
        assert_eq!(r.kbli_sector("4711"), None);
        assert_eq!(r.kbli_sector("4711a"), None);
    }

    #[test]
    fn bad_district_files_name_the_line() {
        let e = Reference::from_sources(
            "x.tsv",
            "# c\n31.01.01\tA\t31.01\tB\n31.01.01\tA\t31.01\tB\n",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "x.tsv:3: district code 31.01.01 already given on line 2"
        );
        let e = Reference::from_sources("x.tsv", "31.01.1\tA\t31.01\tB\n").unwrap_err();
        assert!(e.to_string().starts_with("x.tsv:1: district code"), "{e}");
        let e = Reference::from_sources("x.tsv", "31.01.01\tA\t31.02\tB\n").unwrap_err();
        assert!(e.to_string().contains("regency code"), "{e}");
        let e = Reference::from_sources("x.tsv", "31.01.01,A,31.01,B\n").unwrap_err();
        assert!(e.to_string().contains("4 tab-separated columns"), "{e}");
        assert!(Reference::from_sources("x.tsv", "# nothing\n").is_err());
        let e = Reference::load(Path::new("/nonexistent/d.tsv")).unwrap_err();
        assert!(
            e.to_string().starts_with("/nonexistent/d.tsv: cannot read"),
            "{e}"
        );
    }

    /// The map's boundaries (`schemas/reference/kecamatan.geojson`, made by
    /// `convert_boundaries.py`) are the reference's kecamatan, with points
    /// as GeoJSON wants them: longitude first.
    #[test]
    fn the_boundaries_are_the_reference_districts_in_lng_lat() {
        let text = include_str!("../../../schemas/reference/kecamatan.geojson");
        let g: serde_json::Value = serde_json::from_str(text).unwrap();
        let r = Reference::jakarta();
        let features = g["features"].as_array().unwrap();
        let mut codes: Vec<(&str, &str)> = features
            .iter()
            .map(|f| {
                let p = &f["properties"];
                (p["code"].as_str().unwrap(), p["name"].as_str().unwrap())
            })
            .collect();
        codes.sort_unstable();
        let mut expected: Vec<(&str, &str)> = r
            .districts()
            .iter()
            .map(|d| (d.code.as_str(), d.name.as_str()))
            .collect();
        expected.sort_unstable();
        assert_eq!(codes, expected);
        for f in features {
            for polygon in f["geometry"]["coordinates"].as_array().unwrap() {
                for ring in polygon.as_array().unwrap() {
                    let ring = ring.as_array().unwrap();
                    assert!(
                        ring.len() >= 4,
                        "{}: a ring of {} points",
                        f["properties"]["code"],
                        ring.len()
                    );
                    for p in ring {
                        let (lng, lat) = (p[0].as_f64().unwrap(), p[1].as_f64().unwrap());
                        assert!(
                            (106.3..107.1).contains(&lng) && (-6.5..-5.1).contains(&lat),
                            "{lng},{lat}"
                        );
                    }
                }
            }
        }
    }
}
