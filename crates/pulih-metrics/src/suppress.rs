//! Complementary suppression for one day.
//!
//! Cells form a tree: city → sector → kota × sector → district × sector, and
//! a parent's totals are the sums of its children's. Two rules, applied
//! until nothing changes:
//!
//! 1. A published parent with exactly one suppressed child would give that
//!    child away (parent minus the published siblings), so the published
//!    sibling with the fewest transactions is suppressed too.
//! 2. A suppressed parent whose children are all published would be given
//!    away by their sum, so its child with the fewest transactions is
//!    suppressed. This carries rule 1 down the tree when the sibling it
//!    picked has children of its own.
//!
//! Cells without a row that day had no transactions in 28 days, which the
//! data model documents, so they count as known zeros: neither published
//! nor suppressed values to protect.

use std::collections::{BTreeMap, HashMap};

use crate::{Cell, Suppression};

/// Takes every cell with a row that day, its suppression so far (small
/// and dominated cells) and its transaction count; returns the cells that must also be
/// withheld (`Suppression::Complementary`), each once.
pub fn complementary<'a>(present: &[(&'a Cell, Suppression, u64)]) -> Vec<&'a Cell> {
    let mut state: HashMap<&'a Cell, (Suppression, u64)> =
        present.iter().map(|&(c, s, t)| (c, (s, t))).collect();
    // Children of each present parent, in a stable order.
    let mut groups: BTreeMap<&'a Cell, Vec<&'a Cell>> = BTreeMap::new();
    for &(c, _, _) in present {
        if let Some(parent) = c.parent() {
            if let Some((p, _)) = state.get_key_value(&parent) {
                groups.entry(*p).or_default().push(c);
            }
        }
    }
    let mut added = Vec::new();
    loop {
        let mut changed = false;
        for (parent, kids) in &groups {
            let parent_suppressed = state[parent].0 != Suppression::None;
            let suppressed = kids
                .iter()
                .filter(|k| state[**k].0 != Suppression::None)
                .count();
            let smallest_published = kids
                .iter()
                .filter(|k| state[**k].0 == Suppression::None)
                .min_by_key(|k| (state[**k].1, **k))
                .copied();
            let target = match (parent_suppressed, suppressed) {
                (false, 1) => Some(smallest_published.unwrap_or(*parent)),
                (true, 0) => smallest_published,
                _ => None,
            };
            if let Some(t) = target {
                state.get_mut(t).expect("present").0 = Suppression::Complementary;
                added.push(t);
                changed = true;
            }
        }
        if !changed {
            return added;
        }
    }
}
