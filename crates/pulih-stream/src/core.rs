//! The pure core: the state of one Kafka partition and how records change
//! it. No I/O and no clocks; it is driven by its inputs only, so the tests
//! can replay any interleaving, crash and restore (see `docs/semantics.md`).
//!
//! Per partition it keeps:
//! - the partition's clocks: the highest event time, each clamped to its
//!   record's Kafka timestamp (`max_event_ms`), and the
//!   highest Kafka timestamp (`max_ts_ms`) folded so far, and the offset to
//!   read next. These are a function of the log prefix, so they are the same
//!   in every run over the same log;
//! - the de-duplication memory: the fingerprint of every (producer_id,
//!   event_id) first seen within `dedup_horizon_ms` of Kafka time;
//! - the resident rows of `activity_1m` (windows) and
//!   `merchant_activity_daily` (merchant-days), each with the highest offset
//!   folded into it (`hi_offset`), which is what makes a replay idempotent:
//!   a record at or below a row's `hi_offset` is already in that row.
//!
//! A record's fate is decided in order: a duplicate is dropped; a record
//! that is older than the age limit at its Kafka timestamp (the time the
//! gateway accepted it) and is not a backfill is `TooOld` (the caller
//! dead-letters it; the gateway refused such events already); otherwise it
//! is folded into its window and merchant-day, however far behind the
//! watermark it is. A record for a row that is not
//! resident and already behind the watermark needs that row's durable state
//! first: it waits in the partition until the caller supplies the rows asked
//! for by [`Partition::wanted`] through [`Partition::supply`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use rustc_hash::FxHashMap;

use pulih_event::{Channel, MerchantSize, Sector};
use pulih_store::{ActivityRow, CheckpointRow, DailyRow, DedupRow};

pub use pulih_event::calendar::day_end_ms;
use pulih_event::calendar::{self, DAY_MS};

/// Settings of the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreConfig {
    pub window_ms: i64,
    pub allowed_lateness_ms: i64,
    /// The age limit of the time policy the gateway applies
    /// (`time.max_age_secs`): a record older than this at its Kafka
    /// timestamp is not counted unless it is a backfill.
    pub max_age_ms: i64,
    /// How long, in Kafka time, an event id is remembered.
    pub dedup_horizon_ms: i64,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            window_ms: 60_000,
            allowed_lateness_ms: 120_000,
            max_age_ms: 7 * 86_400_000,
            dedup_horizon_ms: 3_600_000,
        }
    }
}

/// Hasher for keys that are already uniformly random (HMAC outputs and
/// XXH3 fingerprints): it takes their first eight bytes as the hash.
#[derive(Default, Clone, Copy)]
pub struct PrehashedHasher(u64);

impl Hasher for PrehashedHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut b = [0u8; 8];
        let n = bytes.len().min(8);
        b[..n].copy_from_slice(&bytes[..n]);
        self.0 ^= u64::from_le_bytes(b);
    }

    fn write_u128(&mut self, v: u128) {
        self.0 ^= v as u64;
    }

    fn write_usize(&mut self, _: usize) {}
}

type Prehashed = BuildHasherDefault<PrehashedHasher>;

/// A district code such as `31.74.09`: always eight ASCII bytes.
pub type District = [u8; 8];

/// A decoded, validated payment record, as the core needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// XXH3-128 of `producer_id`, a zero byte and `event_id`.
    pub fingerprint: u128,
    pub occurred_ms: i64,
    pub district: District,
    pub sector: Sector,
    pub merchant: [u8; 32],
    pub amount: u64,
    pub channel: Channel,
    pub size: MerchantSize,
    /// Loaded by `pulih produce` (the record's backfill header): counted
    /// whatever its age.
    pub backfill: bool,
}

/// The de-duplication fingerprint of (producer_id, event_id).
pub fn fingerprint(producer_id: &str, event_id: &str) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3Default::new();
    h.update(producer_id.as_bytes());
    h.update(&[0]);
    h.update(event_id.as_bytes());
    h.digest128()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WindowKey {
    pub district: District,
    pub sector: Sector,
    pub start_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DayKey {
    pub district: District,
    pub sector: Sector,
    /// Days since 1970-01-01 in Asia/Jakarta time.
    pub day: i64,
    pub merchant: [u8; 32],
}

/// The running aggregate of one window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowAgg {
    pub txn_count: u64,
    pub amount_sum: u64,
    pub amount_min: u64,
    pub amount_max: u64,
    pub merchants: HashSet<[u8; 32], Prehashed>,
    pub by_channel: [u64; 6],
    pub by_size: [u64; 3],
    /// Highest offset folded in; -1 for none.
    pub hi_offset: i64,
}

impl Default for WindowAgg {
    fn default() -> Self {
        WindowAgg {
            txn_count: 0,
            amount_sum: 0,
            amount_min: u64::MAX,
            amount_max: 0,
            merchants: HashSet::default(),
            by_channel: [0; 6],
            by_size: [0; 3],
            hi_offset: -1,
        }
    }
}

impl WindowAgg {
    fn add(&mut self, offset: i64, e: &Event) {
        self.txn_count += 1;
        self.amount_sum = self.amount_sum.saturating_add(e.amount);
        self.amount_min = self.amount_min.min(e.amount);
        self.amount_max = self.amount_max.max(e.amount);
        self.merchants.insert(e.merchant);
        self.by_channel[channel_index(e.channel)] += 1;
        self.by_size[size_index(e.size)] += 1;
        self.hi_offset = self.hi_offset.max(offset);
    }
}

/// The running aggregate of one merchant-day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayAgg {
    pub txn_count: u64,
    pub amount_sum: u64,
    pub hi_offset: i64,
}

impl Default for DayAgg {
    fn default() -> Self {
        DayAgg {
            txn_count: 0,
            amount_sum: 0,
            hi_offset: -1,
        }
    }
}

fn channel_index(c: Channel) -> usize {
    Channel::ALL.iter().position(|&x| x == c).unwrap_or(5)
}

fn size_index(s: MerchantSize) -> usize {
    MerchantSize::ALL.iter().position(|&x| x == s).unwrap_or(0)
}

#[derive(Debug, Clone)]
struct Slot<A> {
    agg: A,
    dirty: bool,
    /// A final row of this key is (or is about to be) durable; later rows
    /// stay final.
    final_emitted: bool,
}

impl<A> Slot<A> {
    fn new(agg: A, final_emitted: bool) -> Slot<A> {
        Slot {
            agg,
            dirty: false,
            final_emitted,
        }
    }
}

/// What became of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Counted; its window was still open.
    Applied,
    /// Counted as a correction of a window already behind the watermark.
    Late,
    /// Already counted in the durable rows (a replay after a restart).
    Replayed,
    /// The same (producer_id, event_id) was seen within the dedup horizon.
    Duplicate,
    /// Older than the age limit at its Kafka timestamp and not a
    /// backfill: not counted; the caller dead-letters it.
    TooOld,
}

/// Remembered fingerprints with their Kafka time; expiry in arrival order.
#[derive(Debug, Clone, Default)]
struct Dedup {
    seen: HashMap<u128, i64, Prehashed>,
    order: VecDeque<(i64, u128)>,
}

impl Dedup {
    /// Whether `fp` was seen at or after `since`; if not, remembers it at `ts`.
    fn check_and_insert(&mut self, fp: u128, ts: i64, since: i64) -> bool {
        match self.seen.get_mut(&fp) {
            Some(t) if *t >= since => true,
            Some(t) => {
                *t = ts;
                self.order.push_back((ts, fp));
                false
            }
            None => {
                self.seen.insert(fp, ts);
                self.order.push_back((ts, fp));
                false
            }
        }
    }

    fn expire(&mut self, since: i64) {
        while let Some(&(t, fp)) = self.order.front() {
            if t >= since {
                break;
            }
            self.order.pop_front();
            if self.seen.get(&fp) == Some(&t) {
                self.seen.remove(&fp);
            }
        }
    }

    fn len(&self) -> usize {
        self.seen.len()
    }
}

/// Rows the partition needs from the store before it can flush.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    pub windows: Vec<WindowKey>,
    pub days: Vec<DayKey>,
}

impl Wanted {
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty() && self.days.is_empty()
    }
}

/// Everything one flush of a partition must make durable, in this order:
/// dedup entries, daily rows and window rows (any order among them), then
/// the checkpoint.
#[derive(Debug, Clone, Default)]
pub struct Flush {
    pub dedup: Vec<DedupRow>,
    pub activity: Vec<ActivityRow>,
    pub daily: Vec<DailyRow>,
    pub checkpoints: Vec<CheckpointRow>,
}

impl Flush {
    pub fn is_empty(&self) -> bool {
        self.dedup.is_empty()
            && self.activity.is_empty()
            && self.daily.is_empty()
            && self.checkpoints.is_empty()
    }

    pub fn append(&mut self, other: Flush) {
        self.dedup.extend(other.dedup);
        self.activity.extend(other.activity);
        self.daily.extend(other.daily);
        self.checkpoints.extend(other.checkpoints);
    }
}

/// The state of one Kafka partition.
#[derive(Debug, Clone)]
pub struct Partition {
    id: i32,
    config: CoreConfig,
    next_offset: i64,
    checkpointed_offset: i64,
    max_event_ms: Option<i64>,
    max_ts_ms: Option<i64>,
    /// Effective watermark: never decreases.
    watermark_ms: i64,
    dedup: Dedup,
    windows: FxHashMap<WindowKey, Slot<WindowAgg>>,
    days: FxHashMap<DayKey, Slot<DayAgg>>,
    wait_windows: Vec<(WindowKey, i64, Event)>,
    wait_days: Vec<(DayKey, i64, u64)>,
    new_dedup: Vec<(u128, i64, i64)>,
}

impl Partition {
    /// A partition read from its beginning.
    pub fn new(id: i32, config: CoreConfig) -> Partition {
        assert!(config.window_ms > 0 && config.window_ms % 1000 == 0);
        Partition {
            id,
            config,
            next_offset: 0,
            checkpointed_offset: -1,
            max_event_ms: None,
            max_ts_ms: None,
            watermark_ms: i64::MIN,
            dedup: Dedup::default(),
            windows: FxHashMap::default(),
            days: FxHashMap::default(),
            wait_windows: Vec::new(),
            wait_days: Vec::new(),
            new_dedup: Vec::new(),
        }
    }

    /// A partition continuing from its last checkpoint, with the durable
    /// rows and dedup entries that [`restore_scope`] selects.
    pub fn restore(
        id: i32,
        config: CoreConfig,
        checkpoint: Option<&CheckpointRow>,
        activity: Vec<ActivityRow>,
        daily: Vec<DailyRow>,
        dedup: Vec<DedupRow>,
    ) -> Partition {
        let mut p = Partition::new(id, config);
        if let Some(c) = checkpoint {
            p.next_offset = c.next_offset;
            p.checkpointed_offset = c.next_offset;
            p.max_event_ms = (c.max_event_ms != i64::MIN).then_some(c.max_event_ms);
            p.max_ts_ms = (c.max_ts_ms != i64::MIN).then_some(c.max_ts_ms);
        }
        p.watermark_ms = p.partition_watermark_ms().unwrap_or(i64::MIN);
        let mut entries: Vec<_> = dedup
            .into_iter()
            .filter(|d| d.offset < p.next_offset)
            .map(|d| (d.ts_ms, u128::from_be_bytes(d.fingerprint)))
            .collect();
        entries.sort_unstable();
        for (ts, fp) in entries {
            let t = p.dedup.seen.entry(fp).or_insert(ts);
            *t = (*t).max(ts);
            p.dedup.order.push_back((ts, fp));
        }
        for row in activity {
            if let Some((key, agg)) = window_from_row(&row, id) {
                p.windows.insert(key, Slot::new(agg, row.is_final == 1));
            }
        }
        for row in daily {
            if let Some((key, agg)) = day_from_row(&row, id) {
                p.days.insert(key, Slot::new(agg, row.is_final == 1));
            }
        }
        p
    }

    pub fn id(&self) -> i32 {
        self.id
    }

    /// The offset to read next.
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    pub fn max_event_ms(&self) -> Option<i64> {
        self.max_event_ms
    }

    /// The partition's own watermark: highest event time minus the
    /// allowed lateness.
    pub fn partition_watermark_ms(&self) -> Option<i64> {
        self.max_event_ms
            .map(|m| m.saturating_sub(self.config.allowed_lateness_ms))
    }

    /// The watermark windows are closed by: the partition's own, or the
    /// operator's when that is ahead (an idle partition), never decreasing.
    pub fn watermark_ms(&self) -> i64 {
        self.watermark_ms
    }

    /// Raises the effective watermark to the partition's own and to
    /// `operator_ms`, whichever is highest.
    pub fn advance(&mut self, operator_ms: Option<i64>) {
        let own = self.partition_watermark_ms().unwrap_or(i64::MIN);
        self.watermark_ms = self
            .watermark_ms
            .max(own)
            .max(operator_ms.unwrap_or(i64::MIN));
    }

    /// Resident windows, merchant-days and remembered events.
    pub fn sizes(&self) -> (usize, usize, usize) {
        (self.windows.len(), self.days.len(), self.dedup.len())
    }

    fn window_key(&self, e: &Event) -> WindowKey {
        WindowKey {
            district: e.district,
            sector: e.sector,
            start_ms: e.occurred_ms.div_euclid(self.config.window_ms) * self.config.window_ms,
        }
    }

    /// Moves past a record that cannot be folded (the caller dead-letters it).
    pub fn skip(&mut self, offset: i64) {
        self.next_offset = self.next_offset.max(offset + 1);
    }

    /// Folds the record at `offset`, with Kafka timestamp `ts_ms`.
    pub fn fold(&mut self, offset: i64, ts_ms: i64, e: &Event) -> Outcome {
        self.next_offset = self.next_offset.max(offset + 1);
        let max_ts = self.max_ts_ms.map_or(ts_ms, |m| m.max(ts_ms));
        self.max_ts_ms = Some(max_ts);
        let since = max_ts.saturating_sub(self.config.dedup_horizon_ms);
        if self.dedup.check_and_insert(e.fingerprint, ts_ms, since) {
            return Outcome::Duplicate;
        }
        self.new_dedup.push((e.fingerprint, offset, ts_ms));
        if !e.backfill && e.occurred_ms < ts_ms.saturating_sub(self.config.max_age_ms) {
            return Outcome::TooOld;
        }
        // The watermark follows event time, but never runs ahead of the
        // record's Kafka timestamp: a producer whose clock is fast (the
        // gateway allows some skew) cannot make the other producers'
        // on-time events late, nor close rows early.
        let clock = e.occurred_ms.min(ts_ms);
        self.max_event_ms = Some(self.max_event_ms.map_or(clock, |m| m.max(clock)));

        let wkey = self.window_key(e);
        let w_end = wkey.start_ms + self.config.window_ms;
        let late = w_end <= self.watermark_ms;
        let mut replayed = false;
        match self.windows.get_mut(&wkey) {
            Some(slot) if offset > slot.agg.hi_offset => {
                slot.agg.add(offset, e);
                slot.dirty = true;
            }
            Some(_) => replayed = true,
            None if !late => {
                let mut agg = WindowAgg::default();
                agg.add(offset, e);
                let mut slot = Slot::new(agg, false);
                slot.dirty = true;
                self.windows.insert(wkey, slot);
            }
            None => self.wait_windows.push((wkey, offset, e.clone())),
        }

        let dkey = DayKey {
            district: e.district,
            sector: e.sector,
            day: calendar::day_of(e.occurred_ms),
            merchant: e.merchant,
        };
        let d_end = day_end_ms(dkey.day);
        match self.days.get_mut(&dkey) {
            Some(slot) if offset > slot.agg.hi_offset => {
                slot.agg.txn_count += 1;
                slot.agg.amount_sum = slot.agg.amount_sum.saturating_add(e.amount);
                slot.agg.hi_offset = offset;
                slot.dirty = true;
            }
            Some(_) => {}
            None if d_end > self.watermark_ms => {
                let mut slot = Slot::new(
                    DayAgg {
                        txn_count: 1,
                        amount_sum: e.amount,
                        hi_offset: offset,
                    },
                    false,
                );
                slot.dirty = true;
                self.days.insert(dkey, slot);
            }
            None => self.wait_days.push((dkey, offset, e.amount)),
        }

        if replayed {
            Outcome::Replayed
        } else if late {
            Outcome::Late
        } else {
            Outcome::Applied
        }
    }

    /// Durable rows needed before the next flush: those of late records
    /// whose rows are not resident.
    pub fn wanted(&self) -> Wanted {
        let mut windows: Vec<_> = self.wait_windows.iter().map(|(k, _, _)| *k).collect();
        windows.sort_unstable();
        windows.dedup();
        let mut days: Vec<_> = self.wait_days.iter().map(|(k, _, _)| *k).collect();
        days.sort_unstable();
        days.dedup();
        Wanted { windows, days }
    }

    /// Supplies the durable rows asked for by [`Partition::wanted`] (absent
    /// ones simply are not in the lists) and folds the waiting records.
    pub fn supply(&mut self, activity: Vec<ActivityRow>, daily: Vec<DailyRow>) {
        for row in activity {
            if let Some((key, agg)) = window_from_row(&row, self.id) {
                self.windows
                    .entry(key)
                    .or_insert_with(|| Slot::new(agg, row.is_final == 1));
            }
        }
        for row in daily {
            if let Some((key, agg)) = day_from_row(&row, self.id) {
                self.days
                    .entry(key)
                    .or_insert_with(|| Slot::new(agg, row.is_final == 1));
            }
        }
        for (key, offset, e) in std::mem::take(&mut self.wait_windows) {
            let slot = self
                .windows
                .entry(key)
                .or_insert_with(|| Slot::new(WindowAgg::default(), false));
            if offset > slot.agg.hi_offset {
                slot.agg.add(offset, &e);
                slot.dirty = true;
            }
        }
        for (key, offset, amount) in std::mem::take(&mut self.wait_days) {
            let slot = self
                .days
                .entry(key)
                .or_insert_with(|| Slot::new(DayAgg::default(), false));
            if offset > slot.agg.hi_offset {
                slot.agg.txn_count += 1;
                slot.agg.amount_sum = slot.agg.amount_sum.saturating_add(amount);
                slot.agg.hi_offset = offset;
                slot.dirty = true;
            }
        }
    }

    /// Takes what must become durable: new dedup entries, rows that changed
    /// or became final (final rows are then forgotten), and a checkpoint
    /// when the offset moved. With `all_final` every row is final (the input
    /// is known to be complete). Call [`Partition::supply`] first when
    /// [`Partition::wanted`] is not empty; records still waiting are left
    /// out, and so is the checkpoint.
    pub fn take(&mut self, topic: &str, group_id: &str, all_final: bool, now_s: u32) -> Flush {
        let mut flush = Flush::default();
        for (fp, offset, ts) in self.new_dedup.drain(..) {
            flush.dedup.push(DedupRow {
                day: u16::try_from(ts.div_euclid(DAY_MS)).unwrap_or(0),
                topic: topic.to_owned(),
                partition: self.id,
                offset,
                fingerprint: fp.to_be_bytes(),
                ts_ms: ts,
            });
        }
        let wm = self.watermark_ms;
        let window_ms = self.config.window_ms;
        let id = self.id;
        // A row is forgotten only once closed by the watermark: a record
        // for a key that is not resident and not behind the watermark then
        // always starts a new row (see docs/semantics.md).
        self.windows.retain(|key, slot| {
            let closed = all_final || key.start_ms + window_ms <= wm;
            if slot.dirty || (closed && !slot.final_emitted) {
                let is_final = closed || slot.final_emitted;
                flush
                    .activity
                    .push(activity_row(key, &slot.agg, is_final, id, now_s));
                slot.dirty = false;
                slot.final_emitted = is_final;
            }
            !closed
        });
        self.days.retain(|key, slot| {
            let closed = all_final || day_end_ms(key.day) <= wm;
            if slot.dirty || (closed && !slot.final_emitted) {
                let is_final = closed || slot.final_emitted;
                flush
                    .daily
                    .push(daily_row(key, &slot.agg, is_final, id, now_s));
                slot.dirty = false;
                slot.final_emitted = is_final;
            }
            !closed
        });
        let since = self
            .max_ts_ms
            .unwrap_or(i64::MIN)
            .saturating_sub(self.config.dedup_horizon_ms);
        self.dedup.expire(since);
        let waiting = !self.wait_windows.is_empty() || !self.wait_days.is_empty();
        if !waiting && self.next_offset != self.checkpointed_offset {
            self.checkpointed_offset = self.next_offset;
            flush.checkpoints.push(CheckpointRow {
                topic: topic.to_owned(),
                partition: self.id,
                next_offset: self.next_offset,
                max_event_ms: self.max_event_ms.unwrap_or(i64::MIN),
                max_ts_ms: self.max_ts_ms.unwrap_or(i64::MIN),
                group_id: group_id.to_owned(),
                updated_at: now_s,
            });
        }
        flush
    }
}

/// What a restored partition must load, given its checkpoint (see
/// [`pulih_store::RestoreScope`]).
pub fn restore_scope(
    partition: i32,
    config: &CoreConfig,
    checkpoint: Option<&CheckpointRow>,
) -> pulih_store::RestoreScope {
    match checkpoint.filter(|c| c.max_event_ms != i64::MIN) {
        Some(c) => {
            let wm = c.max_event_ms.saturating_sub(config.allowed_lateness_ms);
            pulih_store::RestoreScope {
                partition,
                open_after_s: wm.div_euclid(1000),
                offset_from: c.next_offset,
                oldest_s: (wm - config.max_age_ms - config.window_ms).div_euclid(1000),
            }
        }
        None => pulih_store::RestoreScope {
            partition,
            open_after_s: i64::MIN / 2,
            offset_from: checkpoint.map_or(0, |c| c.next_offset),
            oldest_s: 0,
        },
    }
}

/// Kafka time from which remembered events are restored.
pub fn dedup_since_ms(config: &CoreConfig, checkpoint: Option<&CheckpointRow>) -> i64 {
    checkpoint
        .map(|c| c.max_ts_ms)
        .filter(|&t| t != i64::MIN)
        .map_or(i64::MIN, |t| t.saturating_sub(config.dedup_horizon_ms))
}

/// `version` of a row: later offsets win, and a final row wins over a
/// non-final one with the same offset.
pub fn row_version(hi_offset: i64, is_final: bool) -> u64 {
    (u64::try_from(hi_offset + 1).unwrap_or(0)) * 2 + u64::from(is_final)
}

pub fn district_str(d: &District) -> &str {
    std::str::from_utf8(d).unwrap_or("")
}

pub fn district_from_str(s: &str) -> Option<District> {
    s.as_bytes().try_into().ok()
}

fn activity_row(
    key: &WindowKey,
    a: &WindowAgg,
    is_final: bool,
    partition: i32,
    now_s: u32,
) -> ActivityRow {
    let mut merchant_keys: Vec<[u8; 32]> = a.merchants.iter().copied().collect();
    merchant_keys.sort_unstable();
    ActivityRow {
        window_start: u32::try_from(key.start_ms.div_euclid(1000)).unwrap_or(0),
        district_code: district_str(&key.district).to_owned(),
        sector: key.sector.as_str().to_owned(),
        txn_count: a.txn_count,
        amount_idr_sum: a.amount_sum,
        amount_idr_min: if a.txn_count == 0 { 0 } else { a.amount_min },
        amount_idr_max: a.amount_max,
        merchants_active: u32::try_from(a.merchants.len()).unwrap_or(u32::MAX),
        txn_qris: a.by_channel[0],
        txn_debit_card: a.by_channel[1],
        txn_credit_card: a.by_channel[2],
        txn_ewallet: a.by_channel[3],
        txn_bank_transfer: a.by_channel[4],
        txn_other: a.by_channel[5],
        txn_micro: a.by_size[0],
        txn_small: a.by_size[1],
        txn_medium: a.by_size[2],
        is_final: u8::from(is_final),
        source_partition: partition,
        source_offset: a.hi_offset,
        merchant_keys,
        version: row_version(a.hi_offset, is_final),
        updated_at: now_s,
    }
}

fn daily_row(key: &DayKey, a: &DayAgg, is_final: bool, partition: i32, now_s: u32) -> DailyRow {
    DailyRow {
        day: u16::try_from(key.day).unwrap_or(0),
        district_code: district_str(&key.district).to_owned(),
        sector: key.sector.as_str().to_owned(),
        merchant_key: key.merchant,
        txn_count: a.txn_count,
        amount_idr_sum: a.amount_sum,
        is_final: u8::from(is_final),
        source_partition: partition,
        source_offset: a.hi_offset,
        version: row_version(a.hi_offset, is_final),
        updated_at: now_s,
    }
}

/// A durable row as resident state. A row written from another partition
/// (the topic's partition count changed) is a base to fold on: none of
/// this partition's offsets are in it.
fn window_from_row(row: &ActivityRow, partition: i32) -> Option<(WindowKey, WindowAgg)> {
    let key = WindowKey {
        district: district_from_str(&row.district_code)?,
        sector: Sector::from_letter(&row.sector)?,
        start_ms: i64::from(row.window_start) * 1000,
    };
    let agg = WindowAgg {
        txn_count: row.txn_count,
        amount_sum: row.amount_idr_sum,
        amount_min: if row.txn_count == 0 {
            u64::MAX
        } else {
            row.amount_idr_min
        },
        amount_max: row.amount_idr_max,
        merchants: row.merchant_keys.iter().copied().collect(),
        by_channel: row.txn_by_channel(),
        by_size: row.txn_by_size(),
        hi_offset: if row.source_partition == partition {
            row.source_offset
        } else {
            -1
        },
    };
    Some((key, agg))
}

fn day_from_row(row: &DailyRow, partition: i32) -> Option<(DayKey, DayAgg)> {
    let key = DayKey {
        district: district_from_str(&row.district_code)?,
        sector: Sector::from_letter(&row.sector)?,
        day: i64::from(row.day),
        merchant: row.merchant_key,
    };
    let agg = DayAgg {
        txn_count: row.txn_count,
        amount_sum: row.amount_idr_sum,
        hi_offset: if row.source_partition == partition {
            row.source_offset
        } else {
            -1
        },
    };
    Some((key, agg))
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
