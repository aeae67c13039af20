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
//! - each producer's clock ([`Clock`]): its own highest event time and
//!   latest Kafka timestamp, and the watermark its windows close by, so a
//!   producer whose records are far behind the others' (a history being
//!   loaded) finds its windows open on its own clock. Merchant-days and
//!   the completeness of days follow the partition's watermark;
//! - the resident rows of `activity_1m_by_producer` (windows, one per
//!   cell, minute and producer) and
//!   `merchant_activity_daily_by_time` (merchant-days), each with the highest offset
//!   folded into it (`hi_offset`) and the highest offset its durable state
//!   already holds (`base_offset`), which is what makes a replay
//!   idempotent: a record at or below a row's `base_offset` is already in
//!   that row;
//! - with each resident window, the fingerprint of every (producer_id,
//!   event_id) counted in it and the offset where it first came: the
//!   de-duplication memory. It lives and dies with the window, and is
//!   written to `aggregator_counted_by_producer` before the window's rows, so
//!   a re-sent event that arrives after its window was closed and
//!   forgotten is checked against the fingerprints read back with the row;
//! - with each resident window, its distinct merchants. Each is written
//!   once to `aggregator_counted_by_producer`, with the offset of the record
//!   that brought it, and read back up to the offset of the window's
//!   durable row, so an upsert does not rewrite them. Where the retention
//!   dropped a window's entries, the row's count stands for the merchants
//!   no longer known, and a merchant that comes later counts as new.
//!
//! A record's fate is decided in order: a record that is older than the age
//! limit at its Kafka timestamp (the time the gateway accepted it) and is
//! not a backfill is `TooOld` (the caller dead-letters it; the gateway
//! refused such events already); a record whose window is resident is a
//! duplicate if an earlier offset of the partition carried its fingerprint
//! into that window, and is otherwise folded into its window and
//! merchant-day. A record whose window is not resident and already behind
//! the watermark needs that window's durable state, fingerprints included,
//! before either can be decided: it is `Pending` until the caller supplies
//! the rows asked for by [`Partition::wanted`] through
//! [`Partition::supply`], which returns the outcomes of the pending
//! records. No clock enters a decision: only offsets and the log.
//!
//! What is behind the watermark is read back by range, not by key: an
//! hour of the partition's windows with everything counted in them, and
//! a Jakarta day of its merchant-days. Once read, a range is *covered*:
//! all of its durable state is resident, so a window or merchant-day of
//! it that is not resident has no durable state and starts empty, without
//! asking the store again. A history loaded beside live traffic (behind
//! the watermark, but in time order) is then read back an hour at a time
//! rather than a record at a time. Covered ranges stay resident up to
//! [`COVERED_HOURS`] and [`COVERED_DAYS`] per partition, the least
//! recently used dropped first.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use rustc_hash::{FxHashMap, FxHashSet};

use pulih_event::{Channel, MerchantSize, Sector};
use pulih_store::{ActivityRow, CheckpointRow, ClockRow, DailyRow, SeenRow, WatermarkRow};

use pulih_event::calendar;
pub use pulih_event::calendar::day_end_ms;

/// Settings of the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreConfig {
    pub window_ms: i64,
    pub allowed_lateness_ms: i64,
    /// The age limit of the time policy the gateway applies
    /// (`time.max_age_secs`): a record older than this at its Kafka
    /// timestamp is not counted unless it is a backfill.
    pub max_age_ms: i64,
    /// Covered hours kept resident ([`COVERED_HOURS`]).
    pub covered_hours: usize,
    /// Covered days kept resident ([`COVERED_DAYS`]).
    pub covered_days: usize,
    /// A producer whose latest record in a partition has a Kafka timestamp
    /// this far behind the partition's latest is idle there: its windows
    /// close on the partition's watermark (`aggregate.idle_timeout_secs`).
    pub producer_idle_ms: i64,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            window_ms: 60_000,
            allowed_lateness_ms: 120_000,
            max_age_ms: 7 * 86_400_000,
            covered_hours: COVERED_HOURS,
            covered_days: COVERED_DAYS,
            producer_idle_ms: 30_000,
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

/// Hash-map state for keys that are already uniformly random.
pub type Prehashed = BuildHasherDefault<PrehashedHasher>;

/// A fingerprint as the de-duplication memory holds it: two words, so
/// that an entry of a `seen` map (which the fold reaches for every
/// record) takes 24 bytes, not 32 padded to the 16-byte alignment of
/// `u128`. It hashes to its low word, as a `u128` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u64; 2]);

impl From<u128> for Fingerprint {
    fn from(v: u128) -> Fingerprint {
        Fingerprint([v as u64, (v >> 64) as u64])
    }
}

impl From<Fingerprint> for u128 {
    fn from(f: Fingerprint) -> u128 {
        (u128::from(f.0[1]) << 64) | u128::from(f.0[0])
    }
}

/// A district code such as `31.74.09`: always eight ASCII bytes.
pub type District = [u8; 8];

/// A producer id (1-64 characters of `[A-Za-z0-9_-]`), held inline so
/// that decoding a record allocates nothing.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Producer {
    len: u8,
    bytes: [u8; 64],
}

impl Producer {
    /// `None` when `id` is empty or longer than 64 bytes.
    pub fn new(id: &str) -> Option<Producer> {
        let n = id.len();
        if n == 0 || n > 64 {
            return None;
        }
        let mut bytes = [0u8; 64];
        bytes[..n].copy_from_slice(id.as_bytes());
        Some(Producer {
            len: n as u8,
            bytes,
        })
    }

    /// [`Producer::new`] of bytes; `None` also when they are not ASCII.
    pub fn from_ascii(id: &[u8]) -> Option<Producer> {
        if !id.is_ascii() {
            return None;
        }
        let n = id.len();
        if n == 0 || n > 64 {
            return None;
        }
        let mut bytes = [0u8; 64];
        bytes[..n].copy_from_slice(id);
        Some(Producer {
            len: n as u8,
            bytes,
        })
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A decoded, validated payment record, as the core needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Who sent it (`producer_id`).
    pub producer: Producer,
    /// XXH3-128 of `producer_id`, a zero byte and `event_id`.
    pub fingerprint: u128,
    pub occurred_ms: i64,
    pub district: District,
    pub sector: Sector,
    pub merchant: [u8; 32],
    /// The merchant's key under the pseudonymisation secret being retired,
    /// during a rotation (`merchant_key_previous`).
    pub previous_merchant: Option<[u8; 32]>,
    pub amount: u64,
    pub channel: Channel,
    pub size: MerchantSize,
    /// Loaded by `pulih produce` (the record's backfill header): counted
    /// whatever its age.
    pub backfill: bool,
}

/// The de-duplication fingerprint of (producer_id, event_id): XXH3-128 of
/// `producer_id`, a zero byte and `event_id`. Stored, so it never changes.
pub fn fingerprint(producer_id: &str, event_id: &str) -> u128 {
    fingerprint_bytes(producer_id.as_bytes(), event_id.as_bytes())
}

/// [`fingerprint`] of the ids' bytes.
pub fn fingerprint_bytes(p: &[u8], e: &[u8]) -> u128 {
    // The one-shot hash of the bytes laid end to end is the streaming
    // hash's value, at a fraction of its cost for short ids.
    let mut buf = [0u8; 160];
    let n = p.len() + 1 + e.len();
    if n <= buf.len() {
        buf[..p.len()].copy_from_slice(p);
        buf[p.len() + 1..n].copy_from_slice(e);
        return xxhash_rust::xxh3::xxh3_128(&buf[..n]);
    }
    let mut h = xxhash_rust::xxh3::Xxh3Default::new();
    h.update(p);
    h.update(&[0]);
    h.update(e);
    h.digest128()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WindowKey {
    pub district: District,
    pub sector: Sector,
    pub start_ms: i64,
    /// The producer whose events the window counts, by its index in the
    /// partition's [`Producers`]; [`LEGACY`] for a row written before
    /// migration 0025, which counts every producer of its window.
    pub producer: u32,
}

/// The producer index of a window row written before migration 0025
/// (`producer_id` empty). A record whose own window is not resident is
/// folded into such a row of its window when that row is resident, so
/// that a record counted before the migration is known as counted after
/// it.
pub const LEGACY: u32 = 0;

/// The producers a partition has seen, each with a small index that
/// window keys carry in place of the id; index [`LEGACY`] is the empty id
/// of rows written before migration 0025.
/// Each has its clock in the partition ([`Clock`]); a producer met for
/// the first time starts with the partition's floor as its watermark.
#[derive(Debug, Clone)]
pub struct Producers {
    ids: Vec<String>,
    index: FxHashMap<Producer, u32>,
    clocks: Vec<Clock>,
    /// No producer's watermark is below this: the end of every window
    /// row written before migration 0025 that is not resident
    /// ([`Partition::restore`]); `i64::MIN` where there are none.
    floor_ms: i64,
}

/// One producer's clock in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// The highest event time of its records, each clamped to its Kafka
    /// timestamp; `None` before the first.
    pub max_event_ms: Option<i64>,
    /// The Kafka timestamp of its latest record.
    pub last_ts_ms: i64,
    /// The watermark its windows close by: its highest event time minus
    /// the allowed lateness, or the partition's while it is idle, never
    /// below the floor and never decreasing.
    pub watermark_ms: i64,
}

impl Clock {
    fn new(floor_ms: i64) -> Clock {
        Clock {
            max_event_ms: None,
            last_ts_ms: i64::MIN,
            watermark_ms: floor_ms,
        }
    }
}

impl Default for Producers {
    fn default() -> Self {
        Producers {
            ids: vec![String::new()],
            index: FxHashMap::default(),
            clocks: vec![Clock::new(i64::MIN)],
            floor_ms: i64::MIN,
        }
    }
}

impl Producers {
    /// The index of `p`, given one if it has none.
    pub fn intern(&mut self, p: &Producer) -> u32 {
        if let Some(&i) = self.index.get(p) {
            return i;
        }
        let i = u32::try_from(self.ids.len()).unwrap_or(u32::MAX);
        self.ids.push(p.as_str().to_owned());
        self.index.insert(*p, i);
        self.clocks.push(Clock::new(self.floor_ms));
        i
    }

    /// The producers of `clocks` ([`pulih_store::Store::clocks`]) with
    /// their clocks and the floor; without any, the floor is
    /// `partition_wm_ms` (see [`Partition::restore`]).
    fn restored(clocks: &[ClockRow], partition_wm_ms: i64) -> Producers {
        let mut p = Producers::default();
        let mut floor = if clocks.is_empty() {
            partition_wm_ms
        } else {
            i64::MIN
        };
        for row in clocks {
            if row.producer_id.is_empty() {
                floor = floor.max(row.watermark_ms);
                continue;
            }
            let Some(i) = p.intern_str(&row.producer_id) else {
                continue;
            };
            p.clocks[i as usize] = Clock {
                max_event_ms: (row.max_event_ms != i64::MIN).then_some(row.max_event_ms),
                last_ts_ms: row.last_ts_ms,
                watermark_ms: row.watermark_ms,
            };
        }
        p.raise_floor(floor);
        p
    }

    /// Raises the floor, and every producer's watermark with it.
    fn raise_floor(&mut self, floor_ms: i64) {
        if floor_ms <= self.floor_ms {
            return;
        }
        self.floor_ms = floor_ms;
        for c in &mut self.clocks {
            c.watermark_ms = c.watermark_ms.max(floor_ms);
        }
    }

    /// The index of a row's `producer_id`: [`LEGACY`] when empty, `None`
    /// when it is not a producer id.
    fn intern_str(&mut self, id: &str) -> Option<u32> {
        if id.is_empty() {
            return Some(LEGACY);
        }
        Producer::new(id).map(|p| self.intern(&p))
    }

    /// The id of index `i` (empty for [`LEGACY`]).
    pub fn id(&self, i: u32) -> &str {
        self.ids.get(i as usize).map_or("", String::as_str)
    }

    /// The clock of index `i`.
    pub fn clock(&self, i: u32) -> Option<&Clock> {
        self.clocks.get(i as usize)
    }
}

/// The event time one read-back range of windows covers.
pub const HOUR_MS: i64 = 3_600_000;
/// Hours of windows behind the watermark a partition keeps resident once
/// read back, by default. An hour of a partition holds the windows and
/// fingerprints of its share of the city's payments in that hour: at
/// Jakarta's volume on 6 partitions, about 70 000 fingerprints, 5 MB.
pub const COVERED_HOURS: usize = 96;
/// Jakarta days of merchant-days behind the watermark a partition keeps
/// resident once read back, by default: at Jakarta's volume on 6
/// partitions, about 1.6 million merchant-days, 130 MB, a day.
pub const COVERED_DAYS: usize = 4;

/// The hour (its first millisecond) the window `key` starts in.
pub fn hour_of(key: &WindowKey) -> i64 {
    key.start_ms.div_euclid(HOUR_MS) * HOUR_MS
}

/// What a partition waits for from the store and what it has read of it.
#[derive(Debug, Clone, Default)]
struct ReadBack {
    /// Counted records whose merchant-day must be read back.
    wait_days: Vec<(DayKey, i64, u64)>,
    /// Covered hours (their first millisecond) and Jakarta days, each
    /// with when it was last used.
    hours: FxHashMap<i64, u64>,
    days: FxHashMap<i64, u64>,
    uses: u64,
}

impl ReadBack {
    /// Whether `hour` is covered, marking it used.
    fn use_hour(&mut self, hour: i64) -> bool {
        Self::use_range(&mut self.hours, &mut self.uses, hour)
    }

    /// Whether `day` is covered, marking it used.
    fn use_day(&mut self, day: i64) -> bool {
        Self::use_range(&mut self.days, &mut self.uses, day)
    }

    fn use_range(covered: &mut FxHashMap<i64, u64>, uses: &mut u64, range: i64) -> bool {
        *uses += 1;
        covered.get_mut(&range).map(|used| *used = *uses).is_some()
    }
}

/// The ranges of `covered` beyond `cap`, least recently used first, down
/// to three quarters of `cap` (so that dropping is not done at every
/// flush).
fn least_used(covered: &FxHashMap<i64, u64>, cap: usize) -> FxHashSet<i64> {
    if covered.len() <= cap {
        return FxHashSet::default();
    }
    let mut by_use: Vec<(u64, i64)> = covered.iter().map(|(k, used)| (*used, *k)).collect();
    by_use.sort_unstable_by_key(|(used, _)| *used);
    let drop = covered.len() - cap * 3 / 4;
    by_use.into_iter().take(drop).map(|(_, k)| k).collect()
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
    /// Every record of this partition at or below this offset is in the
    /// row already (it was read back from the store); -1 for none.
    pub base_offset: i64,
    /// Fingerprints of the events counted in this window, each with the
    /// offset of its first occurrence in the partition.
    pub seen: HashMap<Fingerprint, i64, Prehashed>,
    /// Merchants the durable row counted whose keys are no longer stored
    /// (their entries went with `aggregate.dedup_retention_days`): counted
    /// in `merchants_active` beside `merchants`, which they are taken to
    /// be distinct from.
    pub forgotten_merchants: u32,
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
            base_offset: -1,
            seen: HashMap::default(),
            forgotten_merchants: 0,
        }
    }
}

impl WindowAgg {
    /// Folds one record; true if its merchant is new to the window.
    fn add(&mut self, offset: i64, e: &Event) -> bool {
        self.txn_count += 1;
        self.amount_sum = self.amount_sum.saturating_add(e.amount);
        self.amount_min = self.amount_min.min(e.amount);
        self.amount_max = self.amount_max.max(e.amount);
        let new_merchant = self.merchants.insert(e.merchant);
        self.by_channel[channel_index(e.channel)] += 1;
        self.by_size[size_index(e.size)] += 1;
        self.hi_offset = self.hi_offset.max(offset);
        new_merchant
    }
}

/// The running aggregate of one merchant-day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayAgg {
    pub txn_count: u64,
    pub amount_sum: u64,
    /// Highest offset folded in; -1 for none.
    pub hi_offset: i64,
    /// As [`WindowAgg::base_offset`].
    pub base_offset: i64,
}

impl Default for DayAgg {
    fn default() -> Self {
        DayAgg {
            txn_count: 0,
            amount_sum: 0,
            hi_offset: -1,
            base_offset: -1,
        }
    }
}

impl DayAgg {
    /// Folds one record unless the row read back already holds it.
    fn add(&mut self, offset: i64, amount: u64) -> bool {
        if offset <= self.base_offset {
            return false;
        }
        self.txn_count += 1;
        self.amount_sum = self.amount_sum.saturating_add(amount);
        self.hi_offset = self.hi_offset.max(offset);
        true
    }
}

fn channel_index(c: Channel) -> usize {
    Channel::ALL.iter().position(|&x| x == c).unwrap_or(5)
}

fn size_index(s: MerchantSize) -> usize {
    MerchantSize::ALL.iter().position(|&x| x == s).unwrap_or(0)
}

#[derive(Debug, Clone)]
struct Slot<A, U = ()> {
    agg: A,
    dirty: bool,
    /// While dirty: the offset of the first record not yet in a written
    /// row.
    since: i64,
    /// A final row of this key is (or is about to be) durable; later rows
    /// stay final.
    final_emitted: bool,
    /// What the next flush writes besides the row (a window's
    /// [`Unwritten`]).
    unwritten: U,
}

/// What a window counted since the last flush, for
/// `aggregator_counted_by_producer`: fingerprints, and the merchants new to
/// it, each with the offset of the record that brought it (-1 for a
/// merchant taken over), in the order they came. Kept with the window, so
/// a flush needs no sort.
#[derive(Debug, Clone, Default)]
struct Unwritten {
    seen: Vec<(Fingerprint, i64)>,
    merchants: Vec<([u8; 32], i64)>,
}

type WindowSlot = Slot<WindowAgg, Unwritten>;

impl<A, U: Default> Slot<A, U> {
    /// Records that the record at `offset` changed the slot.
    fn touch(&mut self, offset: i64, changed: bool) {
        if changed && !self.dirty {
            self.dirty = true;
            self.since = offset;
        }
    }

    fn new(agg: A, final_emitted: bool) -> Slot<A, U> {
        Slot {
            agg,
            dirty: false,
            since: 0,
            final_emitted,
            unwritten: U::default(),
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
    /// An earlier record of the partition carried the same (producer_id,
    /// event_id) into the same window.
    Duplicate,
    /// Older than the age limit at its Kafka timestamp and not a
    /// backfill: not counted; the caller dead-letters it.
    TooOld,
    /// Behind the watermark in a window that is not resident: decided by
    /// [`Partition::supply`] once the window is read back.
    Pending,
}

/// Durable state the partition needs from the store before it can
/// flush: every window of the partition that starts in one of `hours`
/// (their first milliseconds), with what was counted in it, and every
/// merchant-day of the partition of one of `days` (Jakarta days).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    pub hours: Vec<i64>,
    pub days: Vec<i64>,
}

impl Wanted {
    pub fn is_empty(&self) -> bool {
        self.hours.is_empty() && self.days.is_empty()
    }
}

/// Everything one flush of a partition must make durable, in this order:
/// what the windows newly counted (fingerprints and merchants), daily rows
/// and window rows (any order among them), the producers' clocks at the
/// checkpoint, the checkpoint, then how far the partition's event time is
/// complete.
#[derive(Debug, Clone, Default)]
pub struct Flush {
    pub seen: Vec<SeenRow>,
    pub activity: Vec<ActivityRow>,
    pub daily: Vec<DailyRow>,
    pub clocks: Vec<ClockRow>,
    pub checkpoints: Vec<CheckpointRow>,
    pub watermarks: Vec<WatermarkRow>,
}

impl Flush {
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
            && self.activity.is_empty()
            && self.daily.is_empty()
            && self.clocks.is_empty()
            && self.checkpoints.is_empty()
            && self.watermarks.is_empty()
    }

    pub fn append(&mut self, other: Flush) {
        self.seen.extend(other.seen);
        self.activity.extend(other.activity);
        self.daily.extend(other.daily);
        self.clocks.extend(other.clocks);
        self.checkpoints.extend(other.checkpoints);
        self.watermarks.extend(other.watermarks);
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
    windows: FxHashMap<WindowKey, WindowSlot>,
    producers: Producers,
    /// Resident windows of rows written before migration 0025 ([`LEGACY`]):
    /// while there are none, a record's window is looked up once.
    legacy_windows: usize,
    days: FxHashMap<DayKey, Slot<DayAgg>>,
    /// Records whose window must be read back before they are decided.
    pending: Vec<(i64, Event)>,
    read_back: ReadBack,
    /// The Jakarta day of the watermark last recorded as complete.
    recorded_day: i64,
    /// The producers' clocks and the floor as last written with a
    /// checkpoint: only those that changed are written again.
    written_clocks: Vec<Clock>,
    written_floor_ms: Option<i64>,
    /// The flushes with no record pending since the last checkpoint
    /// written, that one first.
    points: VecDeque<Point>,
}

/// Where a partition stood at a flush: a checkpoint it may write.
#[derive(Debug, Clone)]
struct Point {
    next_offset: i64,
    max_event_ms: Option<i64>,
    max_ts_ms: Option<i64>,
    /// The producers' clocks, by index, and the floor.
    clocks: Vec<Clock>,
    floor_ms: i64,
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
            windows: FxHashMap::default(),
            producers: Producers::default(),
            legacy_windows: 0,
            days: FxHashMap::default(),
            pending: Vec::new(),
            read_back: ReadBack::default(),
            recorded_day: i64::MIN,
            written_clocks: Vec::new(),
            written_floor_ms: None,
            points: VecDeque::new(),
        }
    }

    /// A partition continuing from its last checkpoint, with the durable
    /// rows that [`restore_scope`] selects and what was counted in those
    /// windows ([`pulih_store::Store::restore_open`]).
    ///
    /// The producers' clocks come from `clocks` ([`pulih_store::Store::clocks`]),
    /// written with the checkpoint or after it. A checkpoint without them
    /// (written before migration 0026) makes the partition's watermark the
    /// floor of every producer: the rows written before migration 0025
    /// count every producer, and those behind that watermark are not
    /// resident.
    pub fn restore(
        id: i32,
        config: CoreConfig,
        checkpoint: Option<&CheckpointRow>,
        clocks: &[ClockRow],
        activity: Vec<ActivityRow>,
        daily: Vec<DailyRow>,
        seen: Vec<SeenRow>,
    ) -> Partition {
        let mut p = Partition::new(id, config);
        if let Some(c) = checkpoint {
            p.next_offset = c.next_offset;
            p.checkpointed_offset = c.next_offset;
            p.max_event_ms = (c.max_event_ms != i64::MIN).then_some(c.max_event_ms);
            p.max_ts_ms = (c.max_ts_ms != i64::MIN).then_some(c.max_ts_ms);
        }
        p.watermark_ms = p.partition_watermark_ms().unwrap_or(i64::MIN);
        if checkpoint.is_some() {
            p.restore_clocks(clocks);
        }
        let mut bases = FxHashMap::default();
        for row in activity {
            if let Some((key, agg, base)) = window_from_row(&row, id, &mut p.producers) {
                p.windows.insert(key, Slot::new(agg, row.is_final == 1));
                bases.insert(key, base);
            }
        }
        for row in daily {
            if let Some((key, agg)) = day_from_row(&row, id) {
                p.days.insert(key, Slot::new(agg, row.is_final == 1));
            }
        }
        let all: FxHashSet<WindowKey> = p.windows.keys().copied().collect();
        p.remember(&all, &bases, seen);
        p.count_legacy();
        p
    }

    /// Sets the producers' clocks and the floor from `clocks`; without
    /// any, the floor is the partition's watermark.
    fn restore_clocks(&mut self, clocks: &[ClockRow]) {
        self.producers = Producers::restored(clocks, self.watermark_ms);
        self.written_clocks = self.producers.clocks.clone();
        self.written_floor_ms = Some(self.producers.floor_ms);
    }

    /// The watermark the windows of producer `i` close by: its own, or
    /// the partition's for the rows written before migration 0025.
    fn window_watermark(&self, i: u32) -> i64 {
        window_watermark(&self.producers, self.watermark_ms, i)
    }

    fn count_legacy(&mut self) {
        self.legacy_windows = self.windows.keys().filter(|k| k.producer == LEGACY).count();
    }

    /// Adds what the store holds of the resident windows in `keys`: this
    /// partition's fingerprints, and the merchants counted up to the
    /// durable row of the window (`bases`; a window without a row has
    /// none), and the merchants the row counted whose entries are gone
    /// ([`WindowAgg::forgotten_merchants`]). The merchants of a row this
    /// partition cannot read back from its own entries (written by another
    /// partition, or carrying them itself) are written again under this
    /// partition, at offset -1, with the next flush, which comes before its
    /// next row.
    fn remember(
        &mut self,
        keys: &FxHashSet<WindowKey>,
        bases: &FxHashMap<WindowKey, Base>,
        seen: Vec<SeenRow>,
    ) {
        for row in seen {
            let Some(key) = seen_key(&row, &mut self.producers) else {
                continue;
            };
            if !keys.contains(&key) {
                continue;
            }
            let Some(slot) = self.windows.get_mut(&key) else {
                continue;
            };
            if row.partition == self.id {
                for (fingerprint, offset) in row.pairs() {
                    let first = slot
                        .agg
                        .seen
                        .entry(u128::from_be_bytes(fingerprint).into())
                        .or_insert(offset);
                    *first = (*first).min(offset);
                }
            }
            if let Some(base) = bases.get(&key) {
                if row.partition == base.partition {
                    slot.agg.merchants.extend(
                        row.merchant_pairs()
                            .filter(|&(_, offset)| offset <= base.offset)
                            .map(|(merchant, _)| merchant),
                    );
                }
            }
        }
        for (key, base) in bases {
            if !keys.contains(key) {
                continue;
            }
            let Some(slot) = self.windows.get_mut(key) else {
                continue;
            };
            // What the row counted beyond the merchants read back: those
            // whose entries the retention dropped.
            let known = u32::try_from(slot.agg.merchants.len()).unwrap_or(u32::MAX);
            slot.agg.forgotten_merchants = base.merchants_active.saturating_sub(known);
            if base.take_over {
                let mut merchants: Vec<[u8; 32]> = slot.agg.merchants.iter().copied().collect();
                merchants.sort_unstable();
                slot.unwritten
                    .merchants
                    .extend(merchants.into_iter().map(|m| (m, -1)));
            }
        }
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
    ///
    /// Then each producer's watermark rises to its own clock's (highest
    /// event time minus the allowed lateness), or to the partition's
    /// while the producer is idle: its latest record's Kafka timestamp
    /// [`CoreConfig::producer_idle_ms`] behind the partition's latest. A
    /// producer loading a history in time order is not idle, so its
    /// windows close on its own clock, behind the live producers'. (A
    /// partition read to its end is not a reason: a history paced below
    /// the rate the aggregator counts reaches the end all the time. See
    /// [`Partition::quiet`].)
    pub fn advance(&mut self, operator_ms: Option<i64>) {
        let own = self.partition_watermark_ms().unwrap_or(i64::MIN);
        self.watermark_ms = self
            .watermark_ms
            .max(own)
            .max(operator_ms.unwrap_or(i64::MIN));
        let (wm, lateness, idle_ms) = (
            self.watermark_ms,
            self.config.allowed_lateness_ms,
            self.config.producer_idle_ms,
        );
        let latest = self.max_ts_ms.unwrap_or(i64::MIN);
        for c in self.producers.clocks.iter_mut().skip(1) {
            let own = c
                .max_event_ms
                .map_or(i64::MIN, |m| m.saturating_sub(lateness));
            let idle = latest.saturating_sub(c.last_ts_ms) > idle_ms;
            c.watermark_ms = c
                .watermark_ms
                .max(own)
                .max(if idle { wm } else { i64::MIN });
        }
    }

    /// No record has come for the idle timeout (processing time; the
    /// caller decides, see `aggregator::watermark::is_idle`): every
    /// producer is idle, and its windows close on the partition's
    /// watermark, so the last windows of a producer that stopped become
    /// final when all input stops. Call after [`Partition::advance`].
    pub fn quiet(&mut self) {
        let wm = self.watermark_ms;
        for c in self.producers.clocks.iter_mut().skip(1) {
            c.watermark_ms = c.watermark_ms.max(wm);
        }
    }

    /// The producers' clocks, by index ([`Producers`]).
    pub fn producers(&self) -> &Producers {
        &self.producers
    }

    /// Resident windows, merchant-days and remembered fingerprints.
    pub fn sizes(&self) -> (usize, usize, usize) {
        let seen = self.windows.values().map(|s| s.agg.seen.len()).sum();
        (self.windows.len(), self.days.len(), seen)
    }

    /// Covered hours and days.
    pub fn covered(&self) -> (usize, usize) {
        (self.read_back.hours.len(), self.read_back.days.len())
    }

    /// The window `e` is counted in: its producer's, or the row written
    /// before migration 0025 of its window when that one is resident.
    fn window_key(&mut self, e: &Event) -> WindowKey {
        let producer = self.producers.intern(&e.producer);
        self.window_key_of(e, producer)
    }

    /// [`Partition::window_key`] of `e`, whose producer has index `producer`.
    fn window_key_of(&self, e: &Event, producer: u32) -> WindowKey {
        let key = WindowKey {
            district: e.district,
            sector: e.sector,
            start_ms: self.window_start(e),
            producer,
        };
        if self.legacy_windows > 0 && !self.windows.contains_key(&key) {
            let legacy = WindowKey {
                producer: LEGACY,
                ..key
            };
            if self.windows.contains_key(&legacy) {
                return legacy;
            }
        }
        key
    }

    fn window_start(&self, e: &Event) -> i64 {
        e.occurred_ms.div_euclid(self.config.window_ms) * self.config.window_ms
    }

    /// The hour (its first millisecond) of `e`'s window.
    fn hour_of_event(&self, e: &Event) -> i64 {
        self.window_start(e).div_euclid(HOUR_MS) * HOUR_MS
    }

    /// Moves past a record that cannot be folded (the caller dead-letters it).
    pub fn skip(&mut self, offset: i64) {
        self.next_offset = self.next_offset.max(offset + 1);
    }

    /// Folds the record at `offset`, with Kafka timestamp `ts_ms`.
    pub fn fold(&mut self, offset: i64, ts_ms: i64, e: &Event) -> Outcome {
        if offset < self.next_offset {
            // Before the checkpoint, or folded already in this run.
            return Outcome::Replayed;
        }
        self.next_offset = offset + 1;
        self.max_ts_ms = Some(self.max_ts_ms.map_or(ts_ms, |m| m.max(ts_ms)));
        if !e.backfill && e.occurred_ms < ts_ms.saturating_sub(self.config.max_age_ms) {
            return Outcome::TooOld;
        }
        // The watermark follows event time, but never runs ahead of the
        // record's Kafka timestamp: a producer whose clock is fast (the
        // gateway allows some skew) cannot make the other producers'
        // on-time events late, nor close rows early.
        let clock = e.occurred_ms.min(ts_ms);
        self.max_event_ms = Some(self.max_event_ms.map_or(clock, |m| m.max(clock)));

        let producer = self.producers.intern(&e.producer);
        let wkey = self.window_key_of(e, producer);
        let c = &mut self.producers.clocks[producer as usize];
        c.max_event_ms = Some(c.max_event_ms.map_or(clock, |m| m.max(clock)));
        c.last_ts_ms = c.last_ts_ms.max(ts_ms);
        let late = wkey.start_ms + self.config.window_ms <= self.window_watermark(wkey.producer);
        let slot = match self.windows.entry(wkey) {
            Entry::Occupied(o) => {
                if late {
                    self.read_back.use_hour(hour_of(&wkey));
                }
                o.into_mut()
            }
            // Behind the watermark in a covered hour: the store has
            // nothing of this window either.
            Entry::Vacant(v) if late && self.read_back.use_hour(hour_of(&wkey)) => {
                v.insert(Slot::new(WindowAgg::default(), false))
            }
            Entry::Vacant(_) if late => {
                self.pending.push((offset, e.clone()));
                return Outcome::Pending;
            }
            // Ahead of the watermark and not resident: no durable row or
            // fingerprint of this window can exist (docs/semantics.md).
            Entry::Vacant(v) => v.insert(Slot::new(WindowAgg::default(), false)),
        };
        Self::decide(
            slot,
            &mut self.days,
            &mut self.read_back,
            self.watermark_ms,
            offset,
            e,
            late,
        )
    }

    /// Decides a record whose window is resident (`slot`). Its
    /// merchant-day waits to be read back (`wait_days`) if it is neither
    /// resident, nor ahead of the watermark, nor of a covered day.
    fn decide(
        slot: &mut WindowSlot,
        days: &mut FxHashMap<DayKey, Slot<DayAgg>>,
        read_back: &mut ReadBack,
        watermark_ms: i64,
        offset: i64,
        e: &Event,
        late: bool,
    ) -> Outcome {
        let fingerprint = Fingerprint::from(e.fingerprint);
        match slot.agg.seen.entry(fingerprint) {
            Entry::Occupied(first) if *first.get() < offset => return Outcome::Duplicate,
            // Its own fingerprint, written by a flush that did not reach
            // its checkpoint.
            Entry::Occupied(mut first) => {
                first.insert(offset);
            }
            Entry::Vacant(v) => {
                v.insert(offset);
            }
        }
        slot.unwritten.seen.push((fingerprint, offset));
        let replayed = offset <= slot.agg.base_offset;
        if !replayed {
            if slot.agg.add(offset, e) {
                slot.unwritten.merchants.push((e.merchant, offset));
            }
            slot.dirty = true;
        }

        let dkey = Self::day_key(e);
        match days.get_mut(&dkey) {
            Some(slot) => {
                let changed = slot.agg.add(offset, e.amount);
                slot.touch(offset, changed);
            }
            None if day_end_ms(dkey.day) > watermark_ms || read_back.use_day(dkey.day) => {
                let mut slot = Slot::new(DayAgg::default(), false);
                let changed = slot.agg.add(offset, e.amount);
                slot.touch(offset, changed);
                days.insert(dkey, slot);
            }
            None => read_back.wait_days.push((dkey, offset, e.amount)),
        }

        if replayed {
            Outcome::Replayed
        } else if late {
            Outcome::Late
        } else {
            Outcome::Applied
        }
    }

    fn day_key(e: &Event) -> DayKey {
        DayKey {
            district: e.district,
            sector: e.sector,
            day: calendar::day_of(e.occurred_ms),
            merchant: e.merchant,
        }
    }

    /// Durable state needed before the next flush: the hours of pending
    /// records and the days of the merchant-days they and the counted
    /// records waiting for theirs need.
    pub fn wanted(&self) -> Wanted {
        self.wanted_batch(usize::MAX)
    }

    /// A bounded part of [`Partition::wanted`], at most `max_ranges` hours
    /// and days (at least one): the first half of the budget goes to the
    /// hours of pending records, in order, the rest to the days those
    /// records and the counted records waiting for theirs need. Supplying
    /// it ([`Partition::supply_batch`]) decides every pending record of its
    /// hours, so each batch makes progress and a read-back of any size is
    /// done in steps of a bounded cost.
    pub fn wanted_batch(&self, max_ranges: usize) -> Wanted {
        let max_ranges = max_ranges.max(1);
        let mut hours: Vec<i64> = self
            .pending
            .iter()
            .map(|(_, e)| self.hour_of_event(e))
            .collect();
        hours.sort_unstable();
        hours.dedup();
        hours.truncate(max_ranges.div_ceil(2));
        let chosen: FxHashSet<i64> = hours.iter().copied().collect();
        let mut days: Vec<i64> = self
            .pending
            .iter()
            .filter(|(_, e)| chosen.contains(&self.hour_of_event(e)))
            .map(|(_, e)| Self::day_key(e))
            .filter(|k| !self.days.contains_key(k) && day_end_ms(k.day) <= self.watermark_ms)
            .chain(self.read_back.wait_days.iter().map(|(k, _, _)| *k))
            .map(|k| k.day)
            .filter(|d| !self.read_back.days.contains_key(d))
            .collect();
        days.sort_unstable();
        days.dedup();
        days.truncate(max_ranges - hours.len());
        Wanted { hours, days }
    }

    /// Records waiting for a window, or for a merchant-day, to be read back.
    pub fn pending_len(&self) -> usize {
        self.pending.len() + self.read_back.wait_days.len()
    }

    /// Supplies the durable state asked for by [`Partition::wanted`]
    /// (absent rows simply are not in the lists; `seen` holds the
    /// fingerprints of the wanted windows), decides the pending records and
    /// returns their outcomes in offset order.
    pub fn supply(
        &mut self,
        activity: Vec<ActivityRow>,
        daily: Vec<DailyRow>,
        seen: Vec<SeenRow>,
    ) -> Vec<(i64, Outcome)> {
        let batch = self.wanted();
        self.supply_batch(&batch, activity, daily, seen)
    }

    /// Supplies the durable state of `batch` (from [`Partition::wanted`]
    /// or [`Partition::wanted_batch`]): this partition's rows of every
    /// window that starts in its hours (the store's rows of a cell are all
    /// of the partition its key maps to: "Changing the partition count" in
    /// docs/semantics.md), what was counted in those windows, and its rows
    /// of every merchant-day of its days (rows of other hours and days are
    /// ignored). Its ranges become covered; the pending records of its
    /// hours are decided and their outcomes returned in offset order; the
    /// others stay pending.
    pub fn supply_batch(
        &mut self,
        batch: &Wanted,
        activity: Vec<ActivityRow>,
        daily: Vec<DailyRow>,
        seen: Vec<SeenRow>,
    ) -> Vec<(i64, Outcome)> {
        let hours: FxHashSet<i64> = batch.hours.iter().copied().collect();
        let days: FxHashSet<i64> = batch.days.iter().copied().collect();
        let (pending, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|(_, e)| hours.contains(&self.hour_of_event(e)));
        self.pending = rest;
        // Every window of the hours that the store holds a row or counted
        // entries of becomes resident (a resident one is newer).
        let mut bases = FxHashMap::default();
        let mut fresh = FxHashSet::default();
        for row in &activity {
            let Some((key, agg, base)) = window_from_row(row, self.id, &mut self.producers) else {
                continue;
            };
            if hours.contains(&hour_of(&key)) && !self.windows.contains_key(&key) {
                self.windows.insert(key, Slot::new(agg, row.is_final == 1));
                bases.insert(key, base);
                fresh.insert(key);
            }
        }
        for row in &seen {
            let Some(key) = seen_key(row, &mut self.producers) else {
                continue;
            };
            // Counted entries without a row: a flush that stopped between
            // the two. The records they name are replayed after the
            // checkpoint and make the row; until then there is none to
            // write.
            if hours.contains(&hour_of(&key)) && !self.windows.contains_key(&key) {
                self.windows
                    .insert(key, Slot::new(WindowAgg::default(), true));
                fresh.insert(key);
            }
        }
        self.remember(&fresh, &bases, seen);
        self.count_legacy();
        self.read_back.uses += 1;
        for hour in &hours {
            self.read_back.hours.insert(*hour, self.read_back.uses);
        }
        for row in daily {
            if let Some((key, agg)) = day_from_row(&row, self.id) {
                if days.contains(&key.day) {
                    self.days
                        .entry(key)
                        .or_insert_with(|| Slot::new(agg, row.is_final == 1));
                }
            }
        }
        for day in &days {
            self.read_back.days.insert(*day, self.read_back.uses);
        }
        // Counted records waiting for a merchant-day of a covered day: one
        // the store has no row of starts empty.
        for (key, offset, amount) in std::mem::take(&mut self.read_back.wait_days) {
            if !self.days.contains_key(&key) && self.read_back.use_day(key.day) {
                self.days.insert(key, Slot::new(DayAgg::default(), false));
            }
            match self.days.get_mut(&key) {
                Some(slot) => {
                    let changed = slot.agg.add(offset, amount);
                    slot.touch(offset, changed);
                }
                None => self.read_back.wait_days.push((key, offset, amount)),
            }
        }
        let outcomes = pending
            .into_iter()
            .map(|(offset, e)| {
                let key = self.window_key(&e);
                let slot = self
                    .windows
                    .entry(key)
                    .or_insert_with(|| Slot::new(WindowAgg::default(), false));
                let outcome = Self::decide(
                    slot,
                    &mut self.days,
                    &mut self.read_back,
                    self.watermark_ms,
                    offset,
                    &e,
                    true,
                );
                (offset, outcome)
            })
            .collect();
        self.drop_least_used();
        self.count_legacy();
        outcomes
    }

    /// Drops the least recently used covered ranges beyond the bounds:
    /// they are no longer covered, and their windows and merchant-days that
    /// are closed, final and written are forgotten (the others go at the
    /// next flush, as any resident row behind the watermark). Called after
    /// each read-back batch too, so that a read-back of many ranges holds
    /// at most a batch of them beyond the bounds.
    fn drop_least_used(&mut self) {
        let (wm, window_ms) = (self.watermark_ms, self.config.window_ms);
        let producers = &self.producers;
        let hours = least_used(&self.read_back.hours, self.config.covered_hours);
        if !hours.is_empty() {
            self.windows.retain(|key, slot| {
                let done = key.start_ms + window_ms
                    <= window_watermark(producers, wm, key.producer)
                    && slot.final_emitted
                    && !slot.dirty
                    && slot.unwritten.seen.is_empty()
                    && slot.unwritten.merchants.is_empty();
                !(done && hours.contains(&hour_of(key)))
            });
            self.read_back.hours.retain(|hour, _| !hours.contains(hour));
        }
        let days = least_used(&self.read_back.days, self.config.covered_days);
        if !days.is_empty() {
            self.days.retain(|key, slot| {
                let done = day_end_ms(key.day) <= wm && slot.final_emitted && !slot.dirty;
                !(done && days.contains(&key.day))
            });
            self.read_back.days.retain(|day, _| !days.contains(day));
        }
    }

    /// Takes what must become durable: new fingerprints, rows that changed
    /// or became final (final rows are then forgotten, with their
    /// fingerprints), a checkpoint when the offset moved (see
    /// [`Partition::take_holding_days`] for where it moves to), and the
    /// watermark each time it enters a new Jakarta day (every row it
    /// closed is in this flush or an earlier one). With
    /// `all_final` every row is final (the input is known to be complete).
    /// Call [`Partition::supply`] first when [`Partition::wanted`] is not
    /// empty; while records are pending the checkpoint is left out.
    pub fn take(&mut self, topic: &str, group_id: &str, all_final: bool, now_s: u32) -> Flush {
        self.take_inner(topic, group_id, all_final, true, now_s)
    }

    /// As [`Partition::take`], but merchant-days that changed and are
    /// still open stay in memory, unwritten: with many merchants nearly
    /// every record is the only one of its merchant-day in a flush, so
    /// writing them at each flush writes about a row per record. The
    /// checkpoint then stays at the latest earlier flush that no held
    /// record came before, so a restart replays what they hold.
    pub fn take_holding_days(&mut self, topic: &str, group_id: &str, now_s: u32) -> Flush {
        self.take_inner(topic, group_id, false, false, now_s)
    }

    fn take_inner(
        &mut self,
        topic: &str,
        group_id: &str,
        all_final: bool,
        open_days: bool,
        now_s: u32,
    ) -> Flush {
        let mut flush = Flush::default();
        let wm = self.watermark_ms;
        let window_ms = self.config.window_ms;
        let id = self.id;
        let covered_hours = &self.read_back.hours;
        let covered_days = &self.read_back.days;
        let producers = &self.producers;
        // The end of the latest row written before migration 0025 closed
        // here: once it is forgotten, no producer's watermark may be below
        // it (a record of its window would start a row of its producer
        // beside it, and not find what it counted).
        let mut floor = i64::MIN;
        // One row of what each window counted since the last flush, in
        // window order.
        let mut seen: Vec<(WindowKey, SeenRow)> = Vec::new();
        // A row is forgotten only once closed by the watermark: a record
        // for a key that is not resident and not behind the watermark then
        // always starts a new row (see docs/semantics.md).
        self.windows.retain(|key, slot| {
            let u = &mut slot.unwritten;
            if !u.seen.is_empty() || !u.merchants.is_empty() {
                seen.push((
                    *key,
                    SeenRow {
                        topic: topic.to_owned(),
                        partition: id,
                        window_start: u32::try_from(key.start_ms.div_euclid(1000)).unwrap_or(0),
                        district_code: district_str(&key.district).to_owned(),
                        sector: key.sector.as_str().to_owned(),
                        producer_id: producers.id(key.producer).to_owned(),
                        fingerprints: u
                            .seen
                            .iter()
                            .map(|(fp, _)| u128::from(*fp).to_be_bytes())
                            .collect(),
                        offsets: u.seen.iter().map(|(_, offset)| *offset).collect(),
                        merchants: u.merchants.iter().map(|(merchant, _)| *merchant).collect(),
                        merchant_offsets: u.merchants.iter().map(|(_, offset)| *offset).collect(),
                    },
                ));
                u.seen.clear();
                u.merchants.clear();
            }
            let closed = all_final
                || key.start_ms + window_ms <= window_watermark(producers, wm, key.producer);
            if closed && key.producer == LEGACY {
                floor = floor.max(key.start_ms + window_ms);
            }
            if slot.dirty || (closed && !slot.final_emitted) {
                let is_final = closed || slot.final_emitted;
                flush.activity.push(activity_row(
                    key,
                    producers.id(key.producer),
                    &slot.agg,
                    is_final,
                    id,
                    now_s,
                ));
                slot.dirty = false;
                slot.final_emitted = is_final;
            }
            // A closed window stays while its hour is covered.
            !closed || covered_hours.contains_key(&hour_of(key))
        });
        seen.sort_unstable_by_key(|(key, _)| *key);
        flush.seen = seen.into_iter().map(|(_, row)| row).collect();
        self.producers.raise_floor(floor);
        // The first record that a held merchant-day holds.
        let mut held: Option<i64> = None;
        self.days.retain(|key, slot| {
            let closed = all_final || day_end_ms(key.day) <= wm;
            if slot.dirty && !closed && !open_days {
                held = Some(held.map_or(slot.since, |h| h.min(slot.since)));
            } else if slot.dirty || (closed && !slot.final_emitted) {
                let is_final = closed || slot.final_emitted;
                flush
                    .daily
                    .push(daily_row(key, &slot.agg, is_final, id, now_s));
                slot.dirty = false;
                slot.final_emitted = is_final;
            }
            !closed || covered_days.contains_key(&key.day)
        });
        self.drop_least_used();
        self.count_legacy();
        let waiting = !self.pending.is_empty() || !self.read_back.wait_days.is_empty();
        // Every flush with no record pending is a point the checkpoint may
        // later move to: every record before it is decided, and the clocks
        // are those of the log up to its offset. The checkpoint moves to
        // the latest point before every record a held merchant-day holds.
        let at = if waiting {
            None
        } else {
            self.points.push_back(Point {
                next_offset: self.next_offset,
                max_event_ms: self.max_event_ms,
                max_ts_ms: self.max_ts_ms,
                clocks: self.producers.clocks.clone(),
                floor_ms: self.producers.floor_ms,
            });
            let before_held = |p: &Point| held.is_none_or(|h| p.next_offset <= h);
            self.points.iter().rposition(before_held)
        };
        if let Some(at) = at {
            self.points.drain(..at);
            let point = self.points[0].clone();
            if point.next_offset != self.checkpointed_offset {
                self.checkpointed_offset = point.next_offset;
                self.clock_rows(&mut flush, topic, &point, now_s);
                flush.checkpoints.push(CheckpointRow {
                    topic: topic.to_owned(),
                    partition: self.id,
                    next_offset: point.next_offset,
                    max_event_ms: point.max_event_ms.unwrap_or(i64::MIN),
                    max_ts_ms: point.max_ts_ms.unwrap_or(i64::MIN),
                    group_id: group_id.to_owned(),
                    updated_at: now_s,
                });
            }
        }
        if !waiting && wm > i64::MIN && calendar::day_of(wm) > self.recorded_day {
            self.recorded_day = calendar::day_of(wm);
            flush.watermarks.push(WatermarkRow {
                topic: topic.to_owned(),
                partition: self.id,
                watermark_ms: wm,
                updated_at: now_s,
            });
        }
        flush
    }
}

/// The watermark the windows of producer `i` close by, `partition_ms` for
/// the rows written before migration 0025.
fn window_watermark(producers: &Producers, partition_ms: i64, i: u32) -> i64 {
    if i == LEGACY {
        return partition_ms;
    }
    producers.clock(i).map_or(partition_ms, |c| c.watermark_ms)
}

impl Partition {
    /// The clocks of `point` that differ from those last written, and its
    /// floor the first time or when it moved: rows to write before its
    /// checkpoint.
    fn clock_rows(&mut self, flush: &mut Flush, topic: &str, point: &Point, now_s: u32) {
        let row = |producer_id: &str, c: &Clock| ClockRow {
            topic: topic.to_owned(),
            partition: self.id,
            producer_id: producer_id.to_owned(),
            next_offset: point.next_offset,
            max_event_ms: c.max_event_ms.unwrap_or(i64::MIN),
            last_ts_ms: c.last_ts_ms,
            watermark_ms: c.watermark_ms,
            updated_at: now_s,
        };
        if self.written_floor_ms != Some(point.floor_ms) {
            let floor = Clock {
                watermark_ms: point.floor_ms,
                ..Clock::new(point.floor_ms)
            };
            flush.clocks.push(row("", &floor));
            self.written_floor_ms = Some(point.floor_ms);
        }
        for (i, c) in point.clocks.iter().enumerate().skip(1) {
            if self.written_clocks.get(i) != Some(c) {
                flush.clocks.push(row(self.producers.id(i as u32), c));
            }
        }
        self.written_clocks.clone_from(&point.clocks);
    }
}

/// What a restored partition must load, given its checkpoint and the
/// producers' clocks (see [`pulih_store::RestoreScope`]): the merchant-days
/// still open at the checkpoint's watermark, and each producer's windows
/// still open on its own clock, those of rows written before migration
/// 0025 at the floor ([`Partition::restore`]). Nothing when no counted
/// record is checkpointed: the replay from the checkpoint then rebuilds
/// every row it touches, as it does the rows of a producer whose first
/// record came after the checkpoint. A row that is closed at those
/// watermarks but covers offsets after the checkpoint (written by a flush
/// that did not reach it) is not loaded: a replayed record of it is
/// behind the watermark, so the row is read back with its fingerprints
/// before the record is decided, as for any late record.
pub fn restore_scope(
    partition: i32,
    config: &CoreConfig,
    checkpoint: Option<&CheckpointRow>,
    clocks: &[ClockRow],
) -> Option<pulih_store::RestoreScope> {
    let c = checkpoint.filter(|c| c.max_event_ms != i64::MIN)?;
    let wm = c.max_event_ms.saturating_sub(config.allowed_lateness_ms);
    let p = Producers::restored(clocks, wm);
    let windows_open_after = p
        .ids
        .iter()
        .zip(&p.clocks)
        .enumerate()
        .map(|(i, (id, c))| {
            let wm = if i as u32 == LEGACY {
                p.floor_ms
            } else {
                c.watermark_ms
            };
            (id.clone(), wm.div_euclid(1000))
        })
        .collect();
    Some(pulih_store::RestoreScope {
        partition,
        open_after_s: wm.div_euclid(1000),
        windows_open_after,
    })
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
    producer_id: &str,
    a: &WindowAgg,
    is_final: bool,
    partition: i32,
    now_s: u32,
) -> ActivityRow {
    // A window's merchants are in `aggregator_counted_by_producer`, written
    // once each; no row carries them, final or not.
    let merchant_keys = Vec::new();
    ActivityRow {
        window_start: u32::try_from(key.start_ms.div_euclid(1000)).unwrap_or(0),
        district_code: district_str(&key.district).to_owned(),
        sector: key.sector.as_str().to_owned(),
        producer_id: producer_id.to_owned(),
        txn_count: a.txn_count,
        amount_idr_sum: a.amount_sum,
        amount_idr_min: if a.txn_count == 0 { 0 } else { a.amount_min },
        amount_idr_max: a.amount_max,
        merchants_active: u32::try_from(a.merchants.len())
            .unwrap_or(u32::MAX)
            .saturating_add(a.forgotten_merchants),
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

/// Where a window read back stands: the partition and offset of its
/// durable row, which select the merchants counted in it.
#[derive(Debug, Clone, Copy)]
struct Base {
    partition: i32,
    offset: i64,
    /// The row's count of distinct merchants.
    merchants_active: u32,
    /// This partition writes the row's merchants again under its own id:
    /// its entries do not hold them all, and its next row will not carry
    /// them.
    take_over: bool,
}

/// A durable row as resident state, its merchants still to be added from
/// `aggregator_counted_by_producer` (and from the row itself, where a version
/// before migration 0023 wrote them there). A row written from another
/// partition (the topic's partition count changed) is a base to fold on:
/// none of this partition's offsets are in it.
fn window_from_row(
    row: &ActivityRow,
    partition: i32,
    producers: &mut Producers,
) -> Option<(WindowKey, WindowAgg, Base)> {
    let key = WindowKey {
        district: district_from_str(&row.district_code)?,
        sector: Sector::from_letter(&row.sector)?,
        start_ms: i64::from(row.window_start) * 1000,
        producer: producers.intern_str(&row.producer_id)?,
    };
    let own = if row.source_partition == partition {
        row.source_offset
    } else {
        -1
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
        hi_offset: own,
        base_offset: own,
        seen: HashMap::default(),
        forgotten_merchants: 0,
    };
    // The row's merchants are taken over when this partition's entries
    // will not hold them all: the row carries them itself (written before
    // migration 0022, or a final row before 0023), or another partition
    // wrote it.
    let base = Base {
        partition: row.source_partition,
        offset: row.source_offset,
        merchants_active: row.merchants_active,
        take_over: row.source_partition != partition || !row.merchant_keys.is_empty(),
    };
    Some((key, agg, base))
}

fn day_from_row(row: &DailyRow, partition: i32) -> Option<(DayKey, DayAgg)> {
    let key = DayKey {
        district: district_from_str(&row.district_code)?,
        sector: Sector::from_letter(&row.sector)?,
        day: i64::from(row.day),
        merchant: row.merchant_key,
    };
    let own = if row.source_partition == partition {
        row.source_offset
    } else {
        -1
    };
    let agg = DayAgg {
        txn_count: row.txn_count,
        amount_sum: row.amount_idr_sum,
        hi_offset: own,
        base_offset: own,
    };
    Some((key, agg))
}

/// The window of a durable fingerprint.
fn seen_key(row: &SeenRow, producers: &mut Producers) -> Option<WindowKey> {
    Some(WindowKey {
        district: district_from_str(&row.district_code)?,
        sector: Sector::from_letter(&row.sector)?,
        start_ms: i64::from(row.window_start) * 1000,
        producer: producers.intern_str(&row.producer_id)?,
    })
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
