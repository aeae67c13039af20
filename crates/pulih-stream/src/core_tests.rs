//! Tests of the core, including a model of the durable store with the
//! semantics the aggregator relies on (latest version per key wins; the
//! restore and load queries of `pulih-store`), so that crashes, restores and
//! moves of partitions between processes can be replayed exhaustively.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use proptest::prelude::*;
use pulih_event::{Channel, MerchantSize, Sector};
use pulih_store::{ActivityRow, CheckpointRow, ClockRow, DailyRow, SeenRow, WatermarkRow};

use super::*;

const T0: i64 = 1_709_251_200_000; // 2024-03-01T00:00:00Z
/// 2024-03-01T16:55:00Z, five minutes before midnight in Jakarta (UTC+7):
/// generated histories start here, so days close, merchant-days become
/// final and the watermark enters new days while they run.
const NIGHT0: i64 = 1_709_312_100_000;
const DAY_MS: i64 = 86_400_000;
const DISTRICTS: [&[u8; 8]; 3] = [b"31.74.09", b"31.71.01", b"31.01.02"];
const SECTORS: [&str; 3] = ["G", "I", "C"];

fn ev(id: u32, t_ms: i64, cell: usize, merchant: u8, amount: u64) -> Event {
    Event {
        producer: Producer::new("p").unwrap(),
        fingerprint: fingerprint("p", &format!("e{id}")),
        occurred_ms: T0 + t_ms,
        district: *DISTRICTS[cell % 3],
        sector: Sector::from_letter(SECTORS[cell / 3 % 3]).unwrap(),
        merchant: [merchant; 32],
        previous_merchant: None,
        amount,
        channel: Channel::ALL[(id as usize) % 6],
        size: MerchantSize::ALL[(id as usize) % 3],
        backfill: false,
    }
}

fn config(lateness_ms: i64) -> CoreConfig {
    CoreConfig {
        window_ms: 60_000,
        allowed_lateness_ms: lateness_ms,
        max_age_ms: 7 * 86_400_000,
        // Few, so that covered ranges are dropped all the time.
        covered_hours: 1,
        covered_days: 1,
        producer_idle_ms: 30_000,
    }
}

/// The hour (its first millisecond) of a window that starts at `start_s`.
fn hour_start(start_s: u32) -> i64 {
    let ms = i64::from(start_s) * 1000;
    ms - ms.rem_euclid(HOUR_MS)
}

/// A window row's key: (start, district, sector, producer).
type WinKey = (u32, String, String, String);

/// The durable store: latest version per key, as `FINAL` reads it.
#[derive(Default)]
struct Model {
    activity: BTreeMap<WinKey, ActivityRow>,
    daily: BTreeMap<(u16, String, String, [u8; 32]), DailyRow>,
    seen: Vec<SeenRow>,
    /// Every `aggregator_producer_clock` row written.
    clocks: Vec<ClockRow>,
    checkpoints: HashMap<i32, CheckpointRow>,
    /// Every `aggregator_watermark` row written, in order.
    watermarks: Vec<WatermarkRow>,
}

impl Model {
    /// Applies a flush in the aggregator's order; `cut` stops it after that
    /// many rows (the checkpoint and the watermark rows count as rows), as
    /// a crash would.
    fn apply(&mut self, f: &Flush, cut: Option<usize>) {
        let mut budget = cut.unwrap_or(usize::MAX);
        for d in &f.seen {
            if budget == 0 {
                return;
            }
            budget -= 1;
            self.seen.push(d.clone());
        }
        for r in &f.daily {
            if budget == 0 {
                return;
            }
            budget -= 1;
            let k = (
                r.day,
                r.district_code.clone(),
                r.sector.clone(),
                r.merchant_key,
            );
            if self
                .daily
                .get(&k)
                .is_none_or(|old| r.version >= old.version)
            {
                self.daily.insert(k, r.clone());
            }
        }
        for r in &f.activity {
            if budget == 0 {
                return;
            }
            budget -= 1;
            let k = (
                r.window_start,
                r.district_code.clone(),
                r.sector.clone(),
                r.producer_id.clone(),
            );
            if self
                .activity
                .get(&k)
                .is_none_or(|old| r.version >= old.version)
            {
                self.activity.insert(k, r.clone());
            }
        }
        for c in &f.clocks {
            if budget == 0 {
                return;
            }
            budget -= 1;
            self.clocks.push(c.clone());
        }
        for c in &f.checkpoints {
            if budget == 0 {
                return;
            }
            budget -= 1;
            let old = self.checkpoints.get(&c.partition);
            if old.is_none_or(|o| c.next_offset >= o.next_offset) {
                self.checkpoints.insert(c.partition, c.clone());
            }
        }
        for w in &f.watermarks {
            if budget == 0 {
                return;
            }
            budget -= 1;
            self.watermarks.push(w.clone());
        }
    }

    /// Drops the fingerprints of windows that start before `retention_ms`
    /// behind the lowest checkpointed event time, once every partition has
    /// a checkpoint (what `aggregate.dedup_retention_days` does, by whole
    /// months).
    fn prune(&mut self, retention_ms: i64, partitions: usize) {
        if self.checkpoints.len() < partitions {
            return;
        }
        let Some(low) = self.checkpoints.values().map(|c| c.max_event_ms).min() else {
            return;
        };
        let horizon = low.saturating_sub(retention_ms);
        self.seen
            .retain(|s| i64::from(s.window_start) * 1000 >= horizon);
    }

    /// What `Store::seen_in` returns: the entries partition `p` wrote of
    /// the windows that start in the hours.
    fn seen_in(&self, p: i32, hours: &BTreeSet<i64>) -> Vec<SeenRow> {
        self.seen
            .iter()
            .filter(|s| s.partition == p && hours.contains(&hour_start(s.window_start)))
            .cloned()
            .collect()
    }

    /// What `Store::restore_open` returns for partition `p`: the latest
    /// rows it wrote of the windows and merchant-days still open at its
    /// checkpoint's watermark, and what it counted in windows that could
    /// be open; nothing without a checkpointed event.
    fn restore(&self, p: i32, config: &CoreConfig) -> Partition {
        let cp = self.checkpoints.get(&p);
        let clocks = self.clocks_of(p);
        let Some(scope) = restore_scope(p, config, cp, &clocks) else {
            return Partition::restore(p, *config, cp, &clocks, Vec::new(), Vec::new(), Vec::new());
        };
        let window_s = config.window_ms / 1000;
        let open = |partition: i32, producer: &str, window_start: u32| {
            partition == p
                && scope.windows_open_after.iter().any(|(id, after)| {
                    id == producer && i64::from(window_start) + window_s > *after
                })
        };
        // Without the merchants' keys of final rows, as the store reads
        // them: the merchants come from the counted entries.
        let activity: Vec<ActivityRow> = self
            .activity
            .values()
            .filter(|r| open(r.source_partition, &r.producer_id, r.window_start))
            .map(|r| ActivityRow {
                merchant_keys: Vec::new(),
                ..r.clone()
            })
            .collect();
        let seen = self
            .seen
            .iter()
            .filter(|s| open(s.partition, &s.producer_id, s.window_start))
            .cloned()
            .collect();
        let daily = self
            .daily
            .values()
            .filter(|r| {
                r.source_partition == p
                    && (i64::from(r.day) + 1) * 86_400 - 25_200 > scope.open_after_s
            })
            .cloned()
            .collect();
        Partition::restore(p, *config, cp, &clocks, activity, daily, seen)
    }

    /// What `Store::clocks` returns: the latest clock row of each
    /// producer of partition `p`.
    fn clocks_of(&self, p: i32) -> Vec<ClockRow> {
        let mut latest: BTreeMap<String, ClockRow> = BTreeMap::new();
        for c in self.clocks.iter().filter(|c| c.partition == p) {
            if latest
                .get(&c.producer_id)
                .is_none_or(|old| c.next_offset >= old.next_offset)
            {
                latest.insert(c.producer_id.clone(), c.clone());
            }
        }
        latest.into_values().collect()
    }

    /// What `Store::activity_in`, `Store::daily_in` and
    /// `Store::seen_in` return, supplied; the outcomes of the pending
    /// records.
    fn supply(&self, part: &mut Partition) -> Vec<(i64, Outcome)> {
        let w = part.wanted();
        self.supply_with(part, &w)
    }

    /// As [`Model::supply`], in batches of at most `max_keys` windows and
    /// merchant-days, as the aggregator reads them back; the outcomes in
    /// offset order.
    fn supply_in_batches(&self, part: &mut Partition, max_keys: usize) -> Vec<(i64, Outcome)> {
        let mut out = Vec::new();
        loop {
            let w = part.wanted_batch(max_keys);
            if w.is_empty() {
                break;
            }
            out.extend(self.supply_with(part, &w));
        }
        assert_eq!(part.pending_len(), 0, "every batch makes progress");
        out.sort_unstable_by_key(|(offset, _)| *offset);
        out
    }

    fn supply_with(&self, part: &mut Partition, w: &Wanted) -> Vec<(i64, Outcome)> {
        let p = part.id();
        let hours: BTreeSet<i64> = w.hours.iter().copied().collect();
        let days: BTreeSet<i64> = w.days.iter().copied().collect();
        let seen = self.seen_in(p, &hours);
        let activity = self
            .activity
            .values()
            .filter(|r| r.source_partition == p && hours.contains(&hour_start(r.window_start)))
            .cloned()
            .collect();
        let daily = self
            .daily
            .values()
            .filter(|r| r.source_partition == p && days.contains(&i64::from(r.day)))
            .cloned()
            .collect();
        part.supply_batch(w, activity, daily, seen)
    }

    fn flush(&mut self, part: &mut Partition, all_final: bool, cut: Option<usize>) {
        self.supply_in_batches(part, 3);
        let f = part.take("t", "g", all_final, 0);
        self.apply(&f, cut);
    }

    /// A flush that holds changed open merchant-days back.
    fn flush_holding_days(&mut self, part: &mut Partition, cut: Option<usize>) {
        self.supply_in_batches(part, 2);
        let f = part.take_holding_days("t", "g", 0);
        self.apply(&f, cut);
    }

    /// A flush, cut by a crash after `pick % (n + 1)` of its `n` rows
    /// (checkpoint and watermark included) when `pick` is given: anywhere
    /// from before the first row to after the last. Returns the flush.
    fn flush_cut(&mut self, part: &mut Partition, holding: bool, pick: Option<usize>) -> Flush {
        self.supply_in_batches(part, 1 + pick.unwrap_or(0) % 4);
        let f = if holding {
            part.take_holding_days("t", "g", 0)
        } else {
            part.take("t", "g", false, 0)
        };
        let n = f.seen.len()
            + f.daily.len()
            + f.activity.len()
            + f.checkpoints.len()
            + f.watermarks.len();
        self.apply(&f, pick.map(|pick| pick % (n + 1)));
        f
    }
}

/// The values of a window row that must not depend on how it was computed.
type Values = (u64, u64, u64, u64, u32, [u64; 6], [u64; 3], Vec<[u8; 32]>);

fn values(m: &Model) -> BTreeMap<WinKey, Values> {
    m.activity
        .iter()
        .map(|(k, r)| (k.clone(), row_values(m, r)))
        .collect()
}

/// A row's values, with its merchants as the store holds them: the
/// entries its partition counted in its window up to its offset (and any
/// the row itself carries, as rows of older versions did).
fn row_values(m: &Model, r: &ActivityRow) -> Values {
    let mut merchants: BTreeSet<[u8; 32]> = r.merchant_keys.iter().copied().collect();
    for s in &m.seen {
        if s.partition == r.source_partition
            && (s.window_start, &s.district_code, &s.sector, &s.producer_id)
                == (r.window_start, &r.district_code, &r.sector, &r.producer_id)
        {
            merchants.extend(
                s.merchant_pairs()
                    .filter(|&(_, offset)| offset <= r.source_offset)
                    .map(|(merchant, _)| merchant),
            );
        }
    }
    (
        r.txn_count,
        r.amount_idr_sum,
        r.amount_idr_min,
        r.amount_idr_max,
        r.merchants_active,
        r.txn_by_channel(),
        r.txn_by_size(),
        merchants.into_iter().collect(),
    )
}

type DayRowKey = (u16, String, String, [u8; 32]);

fn daily_values(m: &Model) -> BTreeMap<DayRowKey, (u64, u64)> {
    m.daily
        .iter()
        .map(|(k, r)| (k.clone(), (r.txn_count, r.amount_idr_sum)))
        .collect()
}

/// The Jakarta day of an instant, computed here rather than by the
/// calendar the core uses: days since 1970-01-01 at UTC+7.
fn jakarta_day(ms: i64) -> i64 {
    (ms / 1000 + 7 * 3600).div_euclid(86_400)
}

/// Merchant-days computed directly from the distinct events, without the
/// core: (count, sum) per (Jakarta day, district, sector, merchant).
fn expected_daily(events: &[Event]) -> BTreeMap<DayRowKey, (u64, u64)> {
    let mut seen = BTreeSet::new();
    let mut out: BTreeMap<DayRowKey, (u64, u64)> = BTreeMap::new();
    for e in events {
        if !seen.insert(e.fingerprint) {
            continue;
        }
        let k = (
            jakarta_day(e.occurred_ms) as u16,
            district_str(&e.district).to_owned(),
            e.sector.as_str().to_owned(),
            e.merchant,
        );
        let v = out.entry(k).or_insert((0, 0));
        v.0 += 1;
        v.1 += e.amount;
    }
    out
}

/// What the store must hold of partition `p` once it has written
/// watermark `wm`, read only from the log `records` of `p` (the first
/// `consumed` of them folded when the watermark was taken) and the rows
/// themselves:
/// - every row of `p` holds exactly the distinct events of its key among
///   the partition's records at offsets up to its `source_offset`, no more
///   and no fewer (what a replay relies on);
/// - every merchant-day and window that ends at or before `wm` holds every
///   event consumed before the watermark was taken (what "complete" means
///   to the rollup).
fn check_complete(
    m: &Model,
    records: &[(i64, Event)],
    partitions: usize,
    p: i32,
    consumed: usize,
    wm: i64,
) -> Result<(), String> {
    let own: Vec<(i64, &Event)> = records
        .iter()
        .enumerate()
        .filter(|(_, (_, e))| home(e, partitions) == p as usize)
        .map(|(o, (_, e))| (o as i64, e))
        .collect();
    let upto = |so: i64| -> Vec<Event> {
        own.iter()
            .filter(|(o, _)| *o <= so)
            .map(|(_, e)| (*e).clone())
            .collect()
    };
    for (k, r) in m.daily.iter().filter(|(_, r)| r.source_partition == p) {
        let want = expected_daily(&upto(r.source_offset))
            .get(k)
            .copied()
            .unwrap_or((0, 0));
        if (r.txn_count, r.amount_idr_sum) != want {
            return Err(format!(
                "merchant-day {k:?} at offset {} holds {:?}, its records {want:?}",
                r.source_offset,
                (r.txn_count, r.amount_idr_sum)
            ));
        }
    }
    for (k, r) in m.activity.iter().filter(|(_, r)| r.source_partition == p) {
        let want = expected(&upto(r.source_offset))
            .remove(k)
            .ok_or_else(|| format!("window {k:?} has a row and no records"))?;
        let got = row_values(m, r);
        if got != want {
            return Err(format!(
                "window {k:?} at offset {} holds {got:?}, its records {want:?}",
                r.source_offset
            ));
        }
    }
    let mut firsts = BTreeSet::new();
    for (o, e) in own.iter().filter(|(o, _)| (*o as usize) < consumed) {
        if !firsts.insert(e.fingerprint) {
            continue;
        }
        let day = jakarta_day(e.occurred_ms);
        let day_end = (day + 1) * DAY_MS - 7 * 3_600_000;
        let dk = (
            day as u16,
            district_str(&e.district).to_owned(),
            e.sector.as_str().to_owned(),
            e.merchant,
        );
        if day_end <= wm && m.daily.get(&dk).is_none_or(|r| r.source_offset < *o) {
            return Err(format!(
                "watermark {wm} passed the end of {dk:?} without offset {o} in its row"
            ));
        }
        let start = e.occurred_ms.div_euclid(60_000) * 60_000;
        let wk = (
            (start / 1000) as u32,
            district_str(&e.district).to_owned(),
            e.sector.as_str().to_owned(),
            e.producer.as_str().to_owned(),
        );
        if start + 60_000 <= wm && m.activity.get(&wk).is_none_or(|r| r.source_offset < *o) {
            return Err(format!(
                "watermark {wm} passed the end of {wk:?} without offset {o} in its row"
            ));
        }
    }
    Ok(())
}

/// Aggregates computed directly from the distinct events, without the core.
fn expected(events: &[Event]) -> BTreeMap<WinKey, Values> {
    let mut seen = BTreeSet::new();
    type Acc = (u64, u64, u64, u64, BTreeSet<[u8; 32]>, [u64; 6], [u64; 3]);
    let mut out: BTreeMap<_, Acc> = BTreeMap::new();
    for e in events {
        if !seen.insert(e.fingerprint) {
            continue;
        }
        let k = (
            (e.occurred_ms.div_euclid(60_000) * 60) as u32,
            district_str(&e.district).to_owned(),
            e.sector.as_str().to_owned(),
            e.producer.as_str().to_owned(),
        );
        let v = out
            .entry(k)
            .or_insert((0, 0, u64::MAX, 0, BTreeSet::new(), [0; 6], [0; 3]));
        v.0 += 1;
        v.1 += e.amount;
        v.2 = v.2.min(e.amount);
        v.3 = v.3.max(e.amount);
        v.4.insert(e.merchant);
        v.5[Channel::ALL.iter().position(|&c| c == e.channel).unwrap()] += 1;
        v.6[MerchantSize::ALL.iter().position(|&c| c == e.size).unwrap()] += 1;
    }
    out.into_iter()
        .map(|(k, v)| {
            let m: Vec<_> = v.4.into_iter().collect();
            (k, (v.0, v.1, v.2, v.3, m.len() as u32, v.5, v.6, m))
        })
        .collect()
}

/// The partition of an event's cell, as the Kafka key maps it.
fn home(e: &Event, partitions: usize) -> usize {
    ((e.district[7] as usize) * 31 + e.sector.index()) % partitions
}

/// Gives the partition its next record, as the aggregator does: a record
/// whose cell maps to another partition is skipped (the aggregator
/// dead-letters it as `wrong_partition`), any other is folded.
fn feed(part: &mut Partition, ts: i64, e: &Event, partitions: usize) {
    let o = part.next_offset();
    if home(e, partitions) == part.id() as usize {
        part.fold(o, ts, e);
    } else {
        part.skip(o);
    }
}

/// One clean run of a single process over the partitions, in order.
fn clean_run(log: &[Vec<(i64, Event)>], config: &CoreConfig) -> Model {
    let mut m = Model::default();
    for (p, records) in log.iter().enumerate() {
        let mut part = Partition::new(p as i32, *config);
        for (i, (ts, e)) in records.iter().enumerate() {
            feed(&mut part, *ts, e, log.len());
            part.advance(None);
            if i % 7 == 0 {
                m.flush(&mut part, false, None);
            }
        }
        m.flush(&mut part, true, None);
    }
    m
}

/// Splits events into partitions by cell, as the Kafka key does, and gives
/// each record a Kafka timestamp near its event time: from 1 minute before
/// (a producer with a fast clock) to 5 minutes after (a slow one, or a
/// delayed delivery), so the timestamps are not monotonic. With more than
/// one partition, every ninth event is also produced into the next
/// partition, as a producer with an outdated partition count or another
/// partitioner would: its cell's key has moved there for that record.
fn partitioned(events: &[Event], partitions: usize) -> Vec<Vec<(i64, Event)>> {
    let mut log = vec![Vec::new(); partitions];
    // A backfill is sent now: its Kafka timestamp is that of the live
    // record before it.
    let mut now = NIGHT0;
    for (i, e) in events.iter().enumerate() {
        let skew = ((i * 7_919) % 360_000) as i64 - 60_000;
        let ts = if e.backfill {
            now
        } else {
            now = e.occurred_ms + skew;
            now
        };
        let p = home(e, partitions);
        log[p].push((ts, e.clone()));
        if partitions > 1 && i % 9 == 4 {
            log[(p + 1) % partitions].push((ts, e.clone()));
        }
    }
    log
}

/// A log as gateways write it: Kafka timestamps are accept times, in order
/// (50 s apart, from 40 minutes before midnight in Jakarta, so up to 200
/// records cross it); an event is up to 10 minutes old when accepted, and
/// about one record in six re-sends an earlier event, however long after
/// (too old by then, it is not counted).
fn gateway_log(specs: &[(i64, usize, u8, u64, u32)], partitions: usize) -> Vec<Vec<(i64, Event)>> {
    let mut log = vec![Vec::new(); partitions];
    let mut sent: Vec<Event> = Vec::new();
    for (i, &(age, cell, m, a, dup)) in specs.iter().enumerate() {
        let ts = NIGHT0 - 35 * 60_000 + i as i64 * 50_000;
        let e = if dup < 7 && !sent.is_empty() {
            sent[(dup as usize * 13 + i) % sent.len()].clone()
        } else {
            let mut e = ev(i as u32, 0, cell, m, a);
            e.occurred_ms = ts - age;
            sent.push(e.clone());
            e
        };
        log[home(&e, partitions)].push((ts, e));
    }
    log
}

/// An event of producer `producer` (its fingerprint is of that producer's
/// id), as [`ev`].
fn ev_of(producer: &str, id: u32, t_ms: i64, cell: usize, merchant: u8, amount: u64) -> Event {
    Event {
        producer: Producer::new(producer).unwrap(),
        fingerprint: fingerprint(producer, &format!("e{id}")),
        ..ev(id, t_ms, cell, merchant, amount)
    }
}

/// Events of three nights from two live producers: each in the 15
/// minutes from 23:55 in Jakarta, on one of three consecutive days, so the
/// windows of a history cross midnight, whole days close behind the
/// watermark and a record of an earlier night is late by a day or two.
/// Among them, about one in four is a third producer's history: loaded
/// with `pulih produce` (a backfill), in time order from two days before
/// the first night, a record every 37 s across its midnights, sent as the
/// live records arrive. Its clock is two days and more behind the live
/// producers'.
fn events_strategy() -> impl Strategy<Value = Vec<Event>> {
    prop::collection::vec(
        (
            0i64..3,
            0i64..900_000,
            0usize..9,
            0u8..5,
            1u64..1_000_000,
            0u32..40,
            0u8..4,
        ),
        1..150,
    )
    .prop_map(|specs| {
        let mut out: Vec<Event> = Vec::new();
        let mut history = 0i64;
        for (i, (night, t, cell, m, a, dup, who)) in specs.into_iter().enumerate() {
            // About one in eight records re-delivers an earlier event.
            if dup < 5 && !out.is_empty() {
                let j = (dup as usize * 7 + i) % out.len();
                out.push(out[j].clone());
            } else if who == 3 {
                let mut e = ev_of("h", i as u32, 0, cell, m, a);
                e.occurred_ms = NIGHT0 - 2 * DAY_MS - 600_000 + history * 37_000;
                e.backfill = true;
                history += 1;
                out.push(e);
            } else {
                let mut e = ev_of(["p", "q", "p"][usize::from(who)], i as u32, 0, cell, m, a);
                e.occurred_ms = NIGHT0 + night * DAY_MS + t;
                out.push(e);
            }
        }
        out
    })
}

#[test]
fn counts_sums_extremes_and_distinct_merchants() {
    let events = vec![
        ev(1, 1_000, 0, 1, 10),
        ev(2, 59_999, 0, 1, 20),
        ev(3, 30_000, 0, 2, 30),
        ev(4, 60_000, 0, 2, 40),
        ev(5, 5_000, 3, 3, 50),
    ];
    let m = clean_run(&partitioned(&events, 1), &config(120_000));
    assert_eq!(values(&m), expected(&events));
    let first = &m.activity[&(
        (T0 / 1000) as u32,
        "31.74.09".to_owned(),
        "G".to_owned(),
        "p".to_owned(),
    )];
    assert_eq!(
        (
            first.txn_count,
            first.amount_idr_sum,
            first.amount_idr_min,
            first.amount_idr_max,
            first.merchants_active
        ),
        (3, 60, 10, 30, 2)
    );
    assert!(m.activity.values().all(|r| r.is_final == 1));
    let days = daily_values(&m);
    assert_eq!(
        days.len(),
        3,
        "merchants 1 and 2 in G, merchant 3 in I, one day"
    );
    assert_eq!(days.values().map(|v| v.0).sum::<u64>(), 5);
}

#[test]
fn windows_close_on_the_watermark_and_late_records_correct_them() {
    let c = config(120_000);
    let mut m = Model::default();
    let mut p = Partition::new(0, c);
    assert_eq!(p.fold(0, T0, &ev(1, 0, 0, 1, 10)), Outcome::Applied);
    m.flush(&mut p, false, None);
    assert_eq!(m.activity.values().next().unwrap().is_final, 0);
    // 3 minutes later: [T0, T0+60s) ends at the watermark.
    assert_eq!(
        p.fold(1, T0 + 180_000, &ev(2, 180_000, 0, 1, 10)),
        Outcome::Applied
    );
    p.advance(None);
    m.flush(&mut p, false, None);
    assert_eq!(p.sizes().0, 1, "the closed window was forgotten");
    let first = (T0 / 1000) as u32;
    let key = (first, "31.74.09".to_owned(), "G".to_owned(), "p".to_owned());
    assert_eq!(
        (m.activity[&key].is_final, m.activity[&key].txn_count),
        (1, 1)
    );
    let v1 = m.activity[&key].version;
    // A late record: loaded back from the store, corrected, re-emitted.
    assert_eq!(
        p.fold(2, T0 + 181_000, &ev(3, 1, 0, 2, 5)),
        Outcome::Pending
    );
    assert_eq!(p.wanted().hours.len(), 1);
    assert_eq!(m.supply(&mut p), vec![(2, Outcome::Late)]);
    m.flush(&mut p, false, None);
    let r = &m.activity[&key];
    assert_eq!(
        (
            r.is_final,
            r.txn_count,
            r.amount_idr_sum,
            r.merchants_active
        ),
        (1, 2, 15, 2)
    );
    assert!(r.version > v1);
    assert_eq!(
        p.fold(3, T0 + 200_000, &ev(4, 200_000, 0, 1, 10)),
        Outcome::Applied
    );
    // Days behind the watermark, within the age limit at its Kafka
    // timestamp: counted as a correction, however far behind.
    let mut old = ev(5, 0, 0, 1, 10);
    old.occurred_ms = T0 - 6 * 86_400_000;
    assert_eq!(p.fold(4, T0 + 201_000, &old), Outcome::Pending);
    // Older than the age limit at its Kafka timestamp: the gateway refuses
    // such an event, and the aggregator does not count one that got past.
    let mut far = ev(6, 0, 0, 1, 10);
    far.occurred_ms = T0 - 8 * 86_400_000;
    assert_eq!(p.fold(5, T0 + 202_000, &far), Outcome::TooOld);
    // The same age in a backfill (`pulih produce`) is counted.
    let mut backfill = ev(7, 0, 0, 1, 10);
    backfill.occurred_ms = T0 - 365 * 86_400_000;
    backfill.backfill = true;
    assert_eq!(p.fold(6, T0 + 203_000, &backfill), Outcome::Pending);
    let wanted = p.wanted();
    assert_eq!((wanted.hours.len(), wanted.days.len()), (2, 2));
    assert_eq!(
        m.supply(&mut p),
        vec![(4, Outcome::Late), (6, Outcome::Late)]
    );
    m.flush(&mut p, false, None);
    let total: u64 = m.activity.values().map(|r| r.txn_count).sum();
    assert_eq!(total, 6, "every record but the too-old one");
}

/// The gateway allows producer clocks some lead (`time.max_future_secs`).
/// A producer 4 minutes fast must not make another producer's on-time
/// events late, nor close their window early: the watermark never runs
/// ahead of the Kafka timestamps.
#[test]
fn a_producer_with_a_fast_clock_does_not_make_the_others_late() {
    let mut m = Model::default();
    let mut p = Partition::new(0, config(120_000));
    // Accepted at T0, claiming T0 + 4 min.
    assert_eq!(p.fold(0, T0, &ev(1, 240_000, 0, 1, 10)), Outcome::Applied);
    p.advance(None);
    m.flush(&mut p, false, None);
    // Another producer's event of T0 + 1 s, accepted a second later.
    assert_eq!(
        p.fold(1, T0 + 1_000, &ev(2, 1_000, 0, 2, 10)),
        Outcome::Applied
    );
    p.advance(None);
    m.flush(&mut p, false, None);
    let first = ((T0 / 60_000) * 60) as u32;
    let row = &m.activity[&(first, "31.74.09".to_owned(), "G".to_owned(), "p".to_owned())];
    assert_eq!((row.txn_count, row.is_final), (1, 0), "still open");
}

/// A re-sent event is a duplicate however late it comes: in its open
/// window from memory, in a closed and forgotten one from the fingerprints
/// read back with the row, after a restore too, and whatever the Kafka
/// timestamps say: no clock enters the decision.
#[test]
fn duplicates_are_dropped_however_late_they_come() {
    const DAY: i64 = 86_400_000;
    let c = config(120_000);
    let mut m = Model::default();
    let mut p = Partition::new(0, c);
    let e = ev(1, 0, 0, 1, 10);
    assert_eq!(p.fold(0, T0, &e), Outcome::Applied);
    assert_eq!(p.fold(1, T0 + 1_000, &e), Outcome::Duplicate);
    m.flush(&mut p, false, None);
    // Three days on, the first window is closed and forgotten.
    assert_eq!(
        p.fold(2, T0 + 3 * DAY, &ev(2, 3 * DAY, 0, 1, 10)),
        Outcome::Applied
    );
    p.advance(None);
    m.flush(&mut p, false, None);
    assert_eq!(p.sizes(), (1, 1, 1), "only the open window's fingerprint");
    // Sent again, with a Kafka timestamp a day ahead of everything else.
    assert_eq!(p.fold(3, T0 + 4 * DAY, &e), Outcome::Pending);
    assert_eq!(p.wanted().hours.len(), 1);
    assert_eq!(m.supply(&mut p), vec![(3, Outcome::Duplicate)]);
    m.flush(&mut p, false, None);
    // And again after a restore.
    let mut q = m.restore(0, &c);
    assert_eq!(q.fold(4, T0 + 4 * DAY, &e), Outcome::Pending);
    // A new event of the same closed window is a correction.
    assert_eq!(
        q.fold(5, T0 + 4 * DAY, &ev(3, 0, 0, 2, 5)),
        Outcome::Pending
    );
    assert_eq!(
        m.supply(&mut q),
        vec![(4, Outcome::Duplicate), (5, Outcome::Late)]
    );
    m.flush(&mut q, true, None);
    let first = &m.activity[&(
        (T0 / 1000) as u32,
        "31.74.09".to_owned(),
        "G".to_owned(),
        "p".to_owned(),
    )];
    assert_eq!((first.txn_count, first.amount_idr_sum), (2, 15));
    assert_eq!(daily_values(&m).values().map(|v| v.0).sum::<u64>(), 3);
}

/// The watermark is recorded each time it enters a new Jakarta day, in the
/// flush that makes final the rows it closed, and not while records wait
/// for rows read back.
#[test]
fn the_watermark_is_recorded_once_per_jakarta_day() {
    const DAY: i64 = 86_400_000;
    let m = Model::default();
    let mut p = Partition::new(0, config(120_000));
    assert!(
        p.take("t", "g", false, 0).watermarks.is_empty(),
        "no event yet"
    );
    p.fold(0, T0, &ev(1, 0, 0, 1, 10));
    p.advance(None);
    let f = p.take("t", "g", false, 0);
    assert_eq!(f.watermarks.len(), 1);
    assert_eq!(f.watermarks[0].watermark_ms, T0 - 120_000);
    p.fold(1, T0 + 60_000, &ev(2, 60_000, 0, 1, 10));
    p.advance(None);
    assert!(p.take("t", "g", false, 0).watermarks.is_empty(), "same day");
    // The next day: recorded with the rows of the day before made final.
    p.fold(2, T0 + DAY, &ev(3, DAY, 0, 1, 10));
    p.advance(Some(T0 + DAY));
    let f = p.take("t", "g", false, 0);
    assert_eq!(f.watermarks.len(), 1);
    assert!(f.daily.iter().any(|r| r.is_final == 1));
    // A late record waits for its window: nothing is recorded until it is in.
    p.fold(3, T0 + 2 * DAY, &ev(4, 1_000, 0, 2, 10));
    p.advance(Some(T0 + 2 * DAY));
    let f = p.take("t", "g", false, 0);
    assert!(f.watermarks.is_empty() && f.checkpoints.is_empty());
    assert_eq!(m.supply(&mut p), vec![(3, Outcome::Late)]);
    let f = p.take("t", "g", false, 0);
    assert_eq!(f.checkpoints.len(), 1);
    assert_eq!(f.watermarks.len(), 1, "recorded once the late record is in");
    assert_eq!(f.watermarks[0].watermark_ms, T0 + 2 * DAY);
}

/// A record that waits for its window while a later record of the same
/// merchant-day is folded is still counted in that day.
#[test]
fn a_pending_record_and_a_later_one_share_their_merchant_day() {
    let c = config(120_000);
    let mut m = Model::default();
    let mut p = Partition::new(0, c);
    assert_eq!(p.fold(0, T0, &ev(1, 0, 0, 1, 10)), Outcome::Applied);
    assert_eq!(
        p.fold(1, T0 + 600_000, &ev(2, 600_000, 0, 1, 10)),
        Outcome::Applied
    );
    p.advance(None);
    m.flush(&mut p, false, None);
    // Offset 2 waits for the first window; offset 3 folds into the same
    // merchant-day at once.
    assert_eq!(
        p.fold(2, T0 + 601_000, &ev(3, 1, 0, 1, 7)),
        Outcome::Pending
    );
    assert_eq!(
        p.fold(3, T0 + 602_000, &ev(4, 601_000, 0, 1, 7)),
        Outcome::Applied
    );
    assert_eq!(m.supply(&mut p), vec![(2, Outcome::Late)]);
    m.flush(&mut p, true, None);
    assert_eq!(
        daily_values(&m).values().copied().collect::<Vec<_>>(),
        vec![(4, 34)]
    );
}

#[test]
fn a_restored_partition_skips_what_is_durable() {
    let c = config(120_000);
    let events: Vec<_> = (0..20)
        .map(|i| ev(i, i64::from(i) * 1_000, 0, i as u8 % 3, 7))
        .collect();
    let mut m = Model::default();
    let mut p = Partition::new(0, c);
    for (i, e) in events.iter().enumerate().take(10) {
        p.fold(i as i64, T0 + i as i64, e);
    }
    m.flush(&mut p, false, None); // checkpoint at 10
    for (i, e) in events.iter().enumerate().skip(10).take(5) {
        p.fold(i as i64, T0 + i as i64, e);
    }
    // Rows for 0..15 are written, the checkpoint is lost.
    let f = p.take("t", "g", false, 0);
    m.apply(&f, Some(f.seen.len() + f.daily.len() + f.activity.len()));
    assert_eq!(m.checkpoints[&0].next_offset, 10);
    let mut q = m.restore(0, &c);
    assert_eq!(q.next_offset(), 10);
    for (i, e) in events.iter().enumerate().skip(10) {
        let o = q.fold(i as i64, T0 + i as i64, e);
        assert_eq!(
            o,
            if i < 15 {
                Outcome::Replayed
            } else {
                Outcome::Applied
            },
            "offset {i}"
        );
    }
    m.flush(&mut q, true, None);
    assert_eq!(values(&m), expected(&events));
}

/// A flush of `part` (holding open merchant-days back or not), cut after
/// `cut % (rows + 1)` of its rows when given (a crash); when its watermark
/// row lands, the store must hold what [`check_complete`] asks.
fn flush_checked(
    m: &mut Model,
    part: &mut Partition,
    log: &[Vec<(i64, Event)>],
    holding: bool,
    cut: Option<usize>,
) -> Result<(), TestCaseError> {
    let before = m.watermarks.len();
    let f = m.flush_cut(part, holding, cut);
    if cut.is_none() {
        prop_assert_eq!(m.watermarks.len(), before + f.watermarks.len());
    }
    if let Some(w) = m.watermarks[before..].last() {
        let p = part.id();
        let consumed = part.next_offset() as usize;
        check_complete(m, &log[p as usize], log.len(), p, consumed, w.watermark_ms)
            .map_err(TestCaseError::fail)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Fingerprints are stored: the fast path gives what the streaming
    /// hash of producer, zero byte and event id gives, for ids of any
    /// length (the buffer holds 160 bytes).
    #[test]
    fn fingerprints_are_the_hash_of_producer_zero_and_event(
        producer in "[a-z0-9-]{1,64}",
        event in "\\PC{0,120}",
    ) {
        let mut h = xxhash_rust::xxh3::Xxh3Default::new();
        h.update(producer.as_bytes());
        h.update(&[0]);
        h.update(event.as_bytes());
        prop_assert_eq!(fingerprint(&producer, &event), h.digest128());
    }

    /// Any order of the same events gives the same final rows, and
    /// duplicates never change them.
    #[test]
    fn order_and_duplicates_do_not_matter(events in events_strategy(), seed in any::<u64>()) {
        let c = config(3_600_000);
        let a = clean_run(&partitioned(&events, 1), &c);
        let mut shuffled = events.clone();
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            shuffled.swap(i, (x >> 33) as usize % (i + 1));
        }
        let b = clean_run(&partitioned(&shuffled, 1), &c);
        prop_assert_eq!(values(&a), expected(&events));
        prop_assert_eq!(values(&b), expected(&events));
        prop_assert_eq!(daily_values(&a), expected_daily(&events));
        prop_assert_eq!(daily_values(&b), expected_daily(&events));
    }

    /// Out-of-order events behind a short lateness bound are corrected, so
    /// the final rows still equal the direct aggregates.
    #[test]
    fn late_events_within_the_horizon_are_never_lost(events in events_strategy()) {
        let m = clean_run(&partitioned(&events, 1), &config(30_000));
        prop_assert_eq!(values(&m), expected(&events));
        prop_assert_eq!(daily_values(&m), expected_daily(&events));
    }

    /// Partitions spread over processes that crash at random points (a
    /// flush cut anywhere), partitions that move between processes,
    /// operator watermarks pushed from outside a partition, and records
    /// whose cell's key moved to another partition (skipped there, as the
    /// aggregator dead-letters them) give exactly the rows of one clean
    /// run, which are those of the distinct events.
    #[test]
    fn crashes_restores_and_moves_give_the_clean_result(
        events in events_strategy(),
        partitions in 1usize..4,
        steps in prop::collection::vec((0u8..100, 0usize..1000, any::<usize>()), 1..400),
        lateness in prop::sample::select(vec![30_000i64, 3_600_000]),
    ) {
        let c = config(lateness);
        let log = partitioned(&events, partitions);
        let clean = clean_run(&log, &c);
        prop_assert_eq!(values(&clean), expected(&events));

        let mut m = Model::default();
        // Two processes; partition p starts in process p % 2.
        let mut procs: Vec<HashMap<i32, Partition>> = vec![HashMap::new(), HashMap::new()];
        for p in 0..partitions as i32 {
            let part = m.restore(p, &c);
            procs[p as usize % 2].insert(p, part);
        }
        for (action, n, cut) in steps {
            let pr = n % 2;
            let Some(&p) = procs[pr].keys().nth(n / 2 % procs[pr].len().max(1)) else { continue };
            match action {
                0..=69 => {
                    let part = procs[pr].get_mut(&p).unwrap();
                    let o = part.next_offset() as usize;
                    if let Some((ts, e)) = log[p as usize].get(o) {
                        feed(part, *ts, e, partitions);
                        // Now and then an operator watermark from outside
                        // the partition (other partitions, or processing
                        // time when all are idle), anywhere in the events'
                        // range and beyond: it may only change when rows
                        // become final, never what they count.
                        if n % 4 == 0 {
                            part.advance(Some(e.occurred_ms - 500_000 + (n as i64 % 1_000) * 1_000));
                        } else {
                            part.advance(None);
                        }
                    }
                }
                70..=84 => {
                    // Most flushes hold the changed open merchant-days
                    // back, as the aggregator does between
                    // `daily_emit_interval_ms`.
                    let part = procs[pr].get_mut(&p).unwrap();
                    flush_checked(&mut m, part, &log, n % 3 != 0, None)?;
                }
                85..=93 => {
                    // kill -9 in the middle of a flush, anywhere from
                    // before its first row to after its last: every
                    // partition of the process restarts from the store.
                    let part = procs[pr].get_mut(&p).unwrap();
                    flush_checked(&mut m, part, &log, n % 2 == 1, Some(cut))?;
                    let ids: Vec<i32> = procs[pr].keys().copied().collect();
                    for id in ids {
                        let restored = m.restore(id, &c);
                        procs[pr].insert(id, restored);
                    }
                }
                _ => {
                    // Rebalance: the owner flushes and lets go; the other
                    // process restores it.
                    let mut part = procs[pr].remove(&p).unwrap();
                    flush_checked(&mut m, &mut part, &log, false, None)?;
                    let restored = m.restore(p, &c);
                    procs[1 - pr].insert(p, restored);
                }
            }
        }
        // Both processes read to the end and flush with the input complete.
        for proc_ in &mut procs {
            for (&p, part) in proc_.iter_mut() {
                while let Some((ts, e)) = log[p as usize].get(part.next_offset() as usize) {
                    feed(part, *ts, e, partitions);
                    part.advance(None);
                }
                m.flush(part, true, None);
            }
        }
        prop_assert_eq!(values(&m), values(&clean));
        prop_assert_eq!(daily_values(&m), daily_values(&clean));
        prop_assert_eq!(daily_values(&m), expected_daily(&events));
    }

    /// Dropping the fingerprints of windows that start more than the age
    /// limit plus one window before the lowest checkpointed event time
    /// changes nothing, through crashes and restores: with accept-time
    /// Kafka timestamps, no record that can still be counted falls into
    /// such a window.
    #[test]
    fn pruning_fingerprints_behind_the_checkpoints_changes_nothing(
        specs in prop::collection::vec(
            (0i64..600_000, 0usize..9, 0u8..5, 1u64..1_000_000, 0u32..40),
            1..200,
        ),
        partitions in 1usize..3,
        steps in prop::collection::vec((0u8..100, 0usize..1000, any::<usize>()), 1..500),
    ) {
        let c = CoreConfig {
            window_ms: 60_000,
            allowed_lateness_ms: 30_000,
            max_age_ms: 600_000,
            covered_hours: 1,
            covered_days: 1,
            producer_idle_ms: 30_000,
        };
        // The least `aggregate.dedup_retention_days` allows, down to the
        // millisecond: a window the restore scope can still reach keeps
        // its fingerprints and merchants.
        let retention = c.max_age_ms + c.allowed_lateness_ms + c.window_ms;
        let log = gateway_log(&specs, partitions);
        let clean = clean_run(&log, &c);

        let mut m = Model::default();
        let mut parts: Vec<Partition> = (0..partitions as i32).map(|p| m.restore(p, &c)).collect();
        for (action, n, cut) in steps {
            let part = &mut parts[n % partitions];
            match action {
                0..=74 => {
                    let o = part.next_offset();
                    if let Some((ts, e)) = log[part.id() as usize].get(o as usize) {
                        feed(part, *ts, e, partitions);
                        part.advance(None);
                    }
                }
                75..=89 => {
                    if n % 3 == 0 {
                        m.flush(part, false, None);
                    } else {
                        m.flush_holding_days(part, None);
                    }
                    m.prune(retention, partitions);
                }
                _ => {
                    m.flush_cut(part, true, Some(cut));
                    m.prune(retention, partitions);
                    let id = part.id();
                    *part = m.restore(id, &c);
                }
            }
        }
        for part in &mut parts {
            while let Some((ts, e)) = log[part.id() as usize].get(part.next_offset() as usize) {
                feed(part, *ts, e, partitions);
                part.advance(None);
            }
            m.flush(part, true, None);
        }
        // The merchants' keys of the windows pruned are gone, by design;
        // their counts are not.
        prop_assert_eq!(without_keys(values(&m)), without_keys(values(&clean)));
        prop_assert_eq!(daily_values(&m), daily_values(&clean));
    }
}

fn without_keys(mut v: BTreeMap<WinKey, Values>) -> BTreeMap<WinKey, Values> {
    for values in v.values_mut() {
        values.7.clear();
    }
    v
}

/// A flush writes one row per window of what it newly counted, whatever
/// the order the events came in: each fingerprint next to its offset, the
/// offsets ascending, and each merchant new to the window once, with the
/// offset that brought it; a duplicate adds nothing. Rows, open or
/// final, leave `merchant_keys` empty.
#[test]
fn a_flush_writes_one_counted_row_per_window() {
    let mut p = Partition::new(3, config(120_000));
    // Windows at 0 and 60 s of cell 0, and the first window of cell 1,
    // interleaved: (event id, time, cell, merchant).
    let plan: [(u32, i64, usize, u8); 7] = [
        (1, 0, 0, 1),
        (2, 61_000, 0, 1),
        (3, 1_000, 1, 2),
        (4, 2_000, 0, 2),
        (1, 3_000, 0, 1), // sent again
        (5, 62_000, 0, 1),
        (6, 4_000, 0, 1),
    ];
    for (offset, &(id, t, cell, merchant)) in plan.iter().enumerate() {
        let e = ev(id, if id == 1 { 0 } else { t }, cell, merchant, 10);
        p.fold(offset as i64, T0 + t, &e);
    }
    let f = p.take("t", "g", false, 0);
    type Counted = (String, String, u32, Vec<i64>, Vec<[u8; 32]>, Vec<i64>);
    let mut rows: Vec<Counted> = f
        .seen
        .iter()
        .map(|r| {
            assert_eq!((r.topic.as_str(), r.partition), ("t", 3));
            assert_eq!(r.fingerprints.len(), r.offsets.len());
            (
                r.district_code.clone(),
                r.sector.clone(),
                r.window_start,
                r.offsets.clone(),
                r.merchants.clone(),
                r.merchant_offsets.clone(),
            )
        })
        .collect();
    rows.sort();
    let start = (T0 / 1000) as u32;
    let (m1, m2) = ([1u8; 32], [2u8; 32]);
    assert_eq!(
        rows,
        vec![
            (
                "31.71.01".into(),
                "G".into(),
                start,
                vec![2],
                vec![m2],
                vec![2]
            ),
            (
                "31.74.09".into(),
                "G".into(),
                start,
                vec![0, 3, 6],
                vec![m1, m2],
                vec![0, 3]
            ),
            (
                "31.74.09".into(),
                "G".into(),
                start + 60,
                vec![1, 5],
                vec![m1],
                vec![1]
            ),
        ]
    );
    let first = f.seen.iter().find(|r| r.offsets == [0, 3, 6]).unwrap();
    assert_eq!(
        first.fingerprints[2],
        fingerprint("p", "e6").to_be_bytes(),
        "each fingerprint next to its offset"
    );
    assert_eq!(f.activity.len(), 3);
    assert!(f
        .activity
        .iter()
        .all(|r| r.is_final == 0 && r.merchant_keys.is_empty()));
    let last = p.take("t", "g", true, 0);
    assert!(last.seen.is_empty(), "written once");
    let mut finals: Vec<u32> = last.activity.iter().map(|r| r.merchants_active).collect();
    finals.sort_unstable();
    assert_eq!(finals, vec![1, 1, 2]);
    assert!(last
        .activity
        .iter()
        .all(|r| r.is_final == 1 && r.merchant_keys.is_empty()));
}

/// An open row whose merchants this partition cannot read back from its
/// own entries (written before `aggregator_counted_by_producer`, or by another
/// partition) is taken over: its merchants are written again under this
/// partition at offset -1 before its next row, and a restore from that
/// row finds them all.
#[test]
fn an_open_row_of_another_partition_or_an_older_version_is_taken_over() {
    let start = (T0 / 1000) as u32;
    let (m1, m2, m3) = ([1u8; 32], [2u8; 32], [3u8; 32]);
    // The row of the window at T0 of cell 0 in a flush.
    let window_row = |f: &Flush| -> ActivityRow {
        f.activity
            .iter()
            .find(|r| r.window_start == start && r.district_code == "31.74.09")
            .cloned()
            .unwrap()
    };
    let mut p0 = Partition::new(0, config(120_000));
    p0.fold(0, T0, &ev(1, 0, 0, 1, 10));
    p0.fold(1, T0, &ev(2, 1_000, 0, 2, 10));
    let from_p0 = p0.take("t", "g", false, 0);
    let row = from_p0.activity[0].clone();
    assert_eq!((row.merchants_active, row.source_partition), (2, 0));

    // Another partition, after the partition count changed, and a row of
    // an older version that carried its merchants: both restored through
    // `supply` of a late record.
    let legacy = ActivityRow {
        source_partition: 5,
        merchant_keys: vec![m1, m2],
        ..row.clone()
    };
    for (base, seen, id) in [
        (row.clone(), from_p0.seen.clone(), 5),
        (legacy, Vec::new(), 5),
    ] {
        let mut p = Partition::new(id, config(120_000));
        // Moves the watermark past the window, then a late record of a new
        // merchant for it.
        p.fold(10, T0 + 600_000, &ev(10, 600_000, 1, 9, 10));
        p.advance(None);
        let late = ev(3, 2_000, 0, 3, 10);
        assert_eq!(p.fold(11, T0 + 600_000, &late), Outcome::Pending);
        let outcomes = p.supply(vec![base], Vec::new(), seen);
        assert_eq!(outcomes, vec![(11, Outcome::Late)]);
        let f = p.take("t", "g", false, 0);
        let counted = f
            .seen
            .iter()
            .find(|r| r.window_start == start && r.district_code == "31.74.09")
            .unwrap();
        assert_eq!(counted.partition, id);
        let mut pairs: Vec<_> = counted.merchant_pairs().collect();
        pairs.sort();
        assert_eq!(pairs, vec![(m1, -1), (m2, -1), (m3, 11)]);
        let written = window_row(&f);
        assert_eq!((written.merchants_active, written.is_final), (3, 1));

        // A third partition restoring from the open form of that row
        // finds every merchant through this partition's entries.
        let open = ActivityRow {
            is_final: 0,
            merchant_keys: Vec::new(),
            ..written.clone()
        };
        let mut q = Partition::new(7, config(120_000));
        q.fold(0, T0 + 600_000, &ev(11, 600_000, 1, 9, 10));
        q.advance(None);
        q.fold(1, T0 + 600_000, &ev(4, 3_000, 0, 1, 10));
        q.supply(vec![open], Vec::new(), f.seen.clone());
        let g = q.take("t", "g", false, 0);
        assert_eq!(window_row(&g).merchants_active, 3, "m1 is not new");
    }
}

/// A final row whose counted entries the retention dropped keeps its
/// count of merchants: a late record of a new merchant adds one to it. A
/// merchant the row counted, whose key went with the entries, counts as
/// new (as a re-sent event does past the retention).
#[test]
fn a_window_whose_entries_were_dropped_keeps_its_merchants_count() {
    let start = (T0 / 1000) as u32;
    let mut p0 = Partition::new(0, config(120_000));
    p0.fold(0, T0, &ev(1, 0, 0, 1, 10));
    p0.fold(1, T0, &ev(2, 1_000, 0, 2, 10));
    let row = p0.take("t", "g", true, 0).activity[0].clone();
    assert_eq!((row.merchants_active, row.is_final), (2, 1));
    assert!(row.merchant_keys.is_empty());

    let late_row = |merchant: u8, with_entries: bool| {
        let mut p = Partition::new(0, config(120_000));
        p.fold(10, T0 + 600_000, &ev(10, 600_000, 1, 9, 10));
        p.advance(None);
        assert_eq!(
            p.fold(11, T0 + 600_000, &ev(3, 2_000, 0, merchant, 10)),
            Outcome::Pending
        );
        let seen = if with_entries {
            p0_entries(&row)
        } else {
            Vec::new()
        };
        assert_eq!(
            p.supply(vec![row.clone()], Vec::new(), seen),
            vec![(11, Outcome::Late)]
        );
        let f = p.take("t", "g", false, 0);
        f.activity
            .into_iter()
            .find(|r| r.window_start == start && r.district_code == "31.74.09")
            .unwrap()
            .merchants_active
    };
    // The entries of merchants 1 and 2 at offsets 0 and 1, as stored.
    fn p0_entries(row: &ActivityRow) -> Vec<SeenRow> {
        vec![SeenRow {
            topic: "t".into(),
            partition: 0,
            district_code: row.district_code.clone(),
            sector: row.sector.clone(),
            producer_id: row.producer_id.clone(),
            window_start: row.window_start,
            fingerprints: Vec::new(),
            offsets: Vec::new(),
            merchants: vec![[1; 32], [2; 32]],
            merchant_offsets: vec![0, 1],
        }]
    }
    assert_eq!(late_row(3, true), 3, "a new merchant, entries kept");
    assert_eq!(late_row(1, true), 2, "a known merchant, entries kept");
    assert_eq!(late_row(3, false), 3, "a new merchant, entries dropped");
    assert_eq!(late_row(1, false), 3, "a forgotten merchant counts as new");
}

/// Between the flushes that write them, changed open merchant-days stay
/// in memory and the checkpoint stays at the latest flush before the
/// first record they hold, with that flush's clocks; windows are written
/// at every flush all the same, and a day that closes is written at once.
#[test]
fn held_merchant_days_hold_the_checkpoint_back() {
    let mut p = Partition::new(0, config(120_000));
    p.fold(0, T0, &ev(1, 0, 0, 1, 10));
    let first = p.take("t", "g", false, 0);
    assert_eq!(
        (first.daily.len(), first.checkpoints[0].next_offset),
        (1, 1)
    );

    p.fold(1, T0 + 1_000, &ev(2, 1_000, 0, 2, 10));
    let held = p.take_holding_days("t", "g", 0);
    assert_eq!(held.activity.len(), 1, "windows are written");
    assert!(held.daily.is_empty(), "the merchant-day is held");
    assert!(held.checkpoints.is_empty(), "still at offset 1");

    p.fold(2, T0 + 2_000, &ev(3, 2_000, 0, 1, 10));
    let f = p.take_holding_days("t", "g", 0);
    assert!(f.daily.is_empty() && f.checkpoints.is_empty());

    // Merchant 1's day was written at offset 0, so what it holds starts
    // at 2; merchant 2's at 1. The checkpoint moves only when both are
    // written.
    let all = p.take("t", "g", false, 0);
    assert_eq!(all.daily.len(), 2);
    let cp = &all.checkpoints[0];
    assert_eq!((cp.next_offset, cp.max_event_ms), (3, T0 + 2_000));

    // A flush that holds days with none changed moves the checkpoint, with
    // the clocks of the log up to it.
    p.fold(3, T0 + 3_000, &ev(4, 3_000, 1, 3, 10));
    let mid = p.take("t", "g", false, 0);
    assert_eq!(mid.checkpoints[0].next_offset, 4);
    p.fold(4, T0 + 4_000, &ev(5, 4_000, 1, 3, 10));
    let f = p.take_holding_days("t", "g", 0);
    assert!(f.checkpoints.is_empty());
    p.fold(5, T0 + 5_000, &ev(6, 5_000, 2, 4, 10));
    assert!(p.take_holding_days("t", "g", 0).checkpoints.is_empty());

    // The day closes (the watermark passes its end): written at once.
    let next_day = 86_400_000;
    p.fold(6, T0 + next_day, &ev(7, next_day, 2, 4, 10));
    p.advance(None);
    let closed = p.take_holding_days("t", "g", 0);
    // The four merchant-days of the first day, final, two of them with
    // the records they held.
    assert_eq!(closed.daily.len(), 4, "{:?}", closed.daily);
    assert!(closed.daily.iter().all(|r| r.is_final == 1));
    let mut offsets: Vec<i64> = closed.daily.iter().map(|r| r.source_offset).collect();
    offsets.sort_unstable();
    assert_eq!(offsets, [1, 2, 4, 5]);
    assert_eq!(
        closed.checkpoints[0].next_offset, 6,
        "the next day's merchant-day is held"
    );
}

#[test]
fn fingerprints_in_two_words_keep_their_value_and_their_hash() {
    use std::hash::BuildHasher;
    let h = Prehashed::default();
    for v in [
        0u128,
        1,
        u128::from(u64::MAX),
        u128::MAX,
        0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
    ] {
        let f = Fingerprint::from(v);
        assert_eq!(u128::from(f), v);
        assert_eq!(h.hash_one(f), h.hash_one(v), "{v:x}");
        assert_eq!(h.hash_one(f), v as u64, "the low word");
    }
}

/// A late backlog over many windows is read back in batches of a bounded
/// number of keys, each of which decides the records of its windows; the
/// rows are those of one read-back of everything.
#[test]
fn a_read_back_of_any_size_is_done_in_bounded_batches() {
    let c = config(120_000);
    let mut m = Model::default();
    let mut p = Partition::new(0, c);
    // 40 minutes of windows in three cells, then the watermark moves a
    // day on and every window closes.
    let mut offset = 0;
    for i in 0..120u32 {
        p.fold(
            offset,
            T0,
            &ev(i, i64::from(i) * 20_000, i as usize, i as u8 % 5, 10),
        );
        offset += 1;
    }
    p.fold(offset, T0 + DAY_MS, &ev(1_000, DAY_MS, 0, 1, 10));
    offset += 1;
    p.advance(None);
    m.flush(&mut p, false, None);
    // The backlog: a new event and a copy in each of those windows.
    let mut full = p.clone();
    for i in 0..120u32 {
        let e = ev(2_000 + i, i64::from(i) * 20_000 + 1, i as usize, 7, 3);
        for copy in [e.clone(), e] {
            assert_eq!(p.fold(offset, T0 + DAY_MS, &copy), Outcome::Pending);
            assert_eq!(full.fold(offset, T0 + DAY_MS, &copy), Outcome::Pending);
            offset += 1;
        }
    }
    let all = full.wanted();
    assert!(all.hours.len() + all.days.len() >= 2, "{all:?}");
    let mut batches = 0;
    let mut outcomes = Vec::new();
    loop {
        let w = p.wanted_batch(1);
        if w.is_empty() {
            break;
        }
        assert_eq!(w.hours.len() + w.days.len(), 1, "{w:?}");
        let before = p.pending_len();
        outcomes.extend(m.supply_with(&mut p, &w));
        assert!(p.pending_len() < before, "a batch decides something");
        batches += 1;
    }
    outcomes.sort_unstable_by_key(|(offset, _)| *offset);
    assert!(batches >= 2, "{batches} batches");
    assert_eq!(outcomes, m.supply(&mut full));
    assert_eq!(
        outcomes.iter().filter(|(_, o)| *o == Outcome::Late).count(),
        120
    );
    let mut n = Model::default();
    n.apply(&p.take("t", "g", true, 0), None);
    let mut f = Model::default();
    f.apply(&full.take("t", "g", true, 0), None);
    assert_eq!(values(&n), values(&f));
    assert_eq!(daily_values(&n), daily_values(&f));
}

/// Window rows written before migration 0025 (`producer_id` empty) count
/// every producer of their window. A restore from such an open row keeps
/// counting into it: a record it holds, replayed after the checkpoint, is
/// not counted again, and a new one is added to it rather than to a row of
/// its producer. A re-sent event that such a row counted, arriving after
/// the row was closed and forgotten, is read back and found a duplicate.
#[test]
fn rows_written_before_producers_had_rows_of_their_own_count_nothing_twice() {
    let start = (T0 / 1000) as u32;
    let legacy = |f: &Flush| -> (Vec<ActivityRow>, Vec<SeenRow>) {
        let activity = f
            .activity
            .iter()
            .map(|r| ActivityRow {
                producer_id: String::new(),
                ..r.clone()
            })
            .collect();
        let seen = f
            .seen
            .iter()
            .map(|r| SeenRow {
                producer_id: String::new(),
                ..r.clone()
            })
            .collect();
        (activity, seen)
    };
    let mut old = Partition::new(0, config(120_000));
    old.fold(0, T0, &ev(1, 0, 0, 1, 10));
    old.fold(1, T0, &ev(2, 1_000, 0, 2, 10));
    let (activity, seen) = legacy(&old.take("t", "g", false, 0));
    assert_eq!(activity[0].txn_count, 2);
    let mut all_seen = seen.clone();
    // A checkpoint before the second record: it is replayed.
    let checkpoint = CheckpointRow {
        topic: "t".into(),
        partition: 0,
        next_offset: 1,
        max_event_ms: T0,
        max_ts_ms: T0,
        group_id: "g".into(),
        updated_at: 0,
    };
    // Written before the producers' clocks were: none.
    let mut p = Partition::restore(
        0,
        config(120_000),
        Some(&checkpoint),
        &[],
        activity,
        Vec::new(),
        seen,
    );
    assert_eq!(p.fold(1, T0, &ev(2, 1_000, 0, 2, 10)), Outcome::Replayed);
    assert_eq!(p.fold(2, T0, &ev(3, 2_000, 0, 3, 10)), Outcome::Applied);
    let f = p.take("t", "g", true, 0);
    let rows: Vec<_> = f
        .activity
        .iter()
        .filter(|r| r.window_start == start && r.district_code == "31.74.09")
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0].producer_id.as_str(), rows[0].txn_count), ("", 3));
    assert!(f.seen.iter().all(|s| s.producer_id.is_empty()));

    // The closed row, read back for a re-sent event it counted.
    let (closed, counted) = legacy(&f);
    all_seen.extend(counted);
    let mut q = Partition::new(0, config(120_000));
    q.fold(10, T0 + 600_000, &ev(10, 600_000, 1, 9, 10));
    q.advance(None);
    assert_eq!(
        q.fold(11, T0 + 600_000, &ev(1, 0, 0, 1, 10)),
        Outcome::Pending
    );
    assert_eq!(
        q.fold(12, T0 + 600_000, &ev(4, 3_000, 0, 4, 10)),
        Outcome::Pending
    );
    let outcomes = q.supply(closed, Vec::new(), all_seen);
    assert_eq!(
        outcomes,
        vec![(11, Outcome::Duplicate), (12, Outcome::Late)]
    );
    let g = q.take("t", "g", false, 0);
    let row = g
        .activity
        .iter()
        .find(|r| r.window_start == start && r.district_code == "31.74.09")
        .unwrap();
    assert_eq!((row.producer_id.as_str(), row.txn_count), ("", 4));
}

/// A producer's history loaded beside live traffic is counted on its own
/// clock: its records, two days behind the live producer's, find their
/// windows open (or absent and ahead of its watermark) and are applied,
/// not read back; its windows close as its own clock passes them, and the
/// live producer's on the live clock. Once the history stops and is idle
/// in the partition, the rest of its windows close on the partition's
/// watermark. Without clocks per producer each of its records would wait
/// for a read-back.
#[test]
fn a_history_beside_live_traffic_is_counted_on_its_own_clock() {
    let mut c = config(120_000);
    c.producer_idle_ms = 30_000;
    let mut p = Partition::new(0, c);
    let live_at = |i: i64| T0 + i * 1_000;
    let history_at = |i: i64| T0 - 2 * DAY_MS + i * 10_000;
    let mut o = 0;
    let mut outcomes = Vec::new();
    for i in 0..600 {
        // One live record a second, one history record (10 s of its
        // time) a second, both sent now.
        let live = ev_of("live", i as u32, 0, 0, 1, 10);
        let live = Event {
            occurred_ms: live_at(i),
            ..live
        };
        let mut history = ev_of("h", 10_000 + i as u32, 0, 0, 2, 10);
        history.occurred_ms = history_at(i);
        history.backfill = true;
        for e in [live, history] {
            outcomes.push((e.producer, p.fold(o, live_at(i), &e)));
            o += 1;
        }
        if i % 10 == 9 {
            p.advance(None);
            // Only the history's merchant-days are read back, a Jakarta
            // day at a time (they close on the partition's watermark);
            // none of its windows.
            let wanted = p.wanted();
            assert!(wanted.hours.is_empty(), "{wanted:?}");
            assert!(wanted.days.len() <= 1, "{wanted:?}");
            p.supply(Vec::new(), Vec::new(), Vec::new());
            p.take("t", "g", false, 0);
        }
    }
    let h = Producer::new("h").unwrap();
    assert!(
        outcomes.iter().all(|(_, out)| *out == Outcome::Applied),
        "{:?}",
        outcomes.iter().find(|(_, out)| *out != Outcome::Applied)
    );
    assert_eq!(outcomes.iter().filter(|(who, _)| *who == h).count(), 600);
    // 600 s of live time, 6 000 s of history: the history's clock closed
    // its windows up to two minutes behind its last record, and the live
    // clock the live windows up to two minutes behind it.
    fn clock_of(p: &Partition, id: &str) -> Clock {
        let i = p.producers.index[&Producer::new(id).unwrap()];
        *p.producers().clock(i).unwrap()
    }
    assert_eq!(clock_of(&p, "h").watermark_ms, history_at(599) - 120_000);
    assert_eq!(clock_of(&p, "live").watermark_ms, live_at(599) - 120_000);
    let open: Vec<(u32, i64)> = p.windows.keys().map(|k| (k.producer, k.start_ms)).collect();
    assert!(open.iter().all(|&(who, start)| {
        let end = start + 60_000;
        if who == p.producers.index[&h] {
            end > history_at(599) - 120_000
        } else {
            end > live_at(599) - 120_000
        }
    }));
    // The history stops; the live producer goes on for a minute of Kafka
    // time: the history is idle, and its windows close.
    for i in 600..660 {
        let live = Event {
            occurred_ms: live_at(i),
            ..ev_of("live", i as u32, 0, 0, 1, 10)
        };
        assert_eq!(p.fold(o, live_at(i), &live), Outcome::Applied);
        o += 1;
    }
    p.advance(None);
    assert!(p.wanted().is_empty());
    let f = p.take("t", "g", false, 0);
    assert_eq!(clock_of(&p, "h").watermark_ms, p.watermark_ms());
    let h_rows: Vec<_> = f.activity.iter().filter(|r| r.producer_id == "h").collect();
    assert!(!h_rows.is_empty() && h_rows.iter().all(|r| r.is_final == 1));
    assert!(p
        .windows
        .keys()
        .all(|k| k.producer != p.producers.index[&h]));
    // The clocks go out with the checkpoint: both producers' and the floor.
    let mut ids: Vec<&str> = f.clocks.iter().map(|r| r.producer_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec!["h", "live"]);
}
