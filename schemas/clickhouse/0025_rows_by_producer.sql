-- `activity_1m_by_time` (0024) and `aggregator_counted_by_time` (0023)
-- with the producer in their keys: one row per (window, cell, producer),
-- and what was counted in it, so that each producer's windows are opened
-- and closed on that producer's own clock (docs/semantics.md, "A clock
-- per producer"). A producer's history loaded beside live traffic is then
-- behind its own watermark only where it really is late, and is counted
-- as on time instead of being read back hour by hour.
--
-- The producer comes first in the sorting keys: a restart reads each
-- producer's windows that are open on its own clock, which for a producer
-- loading a history are the minutes its history has reached, among the
-- rows of that producer only. A read of some hours of every producer
-- (a read-back, the alerts, the probe) still reads only the granules of
-- those hours: within each producer's rows, sorted by time, the granules
-- of other hours are skipped. There are few producers.
--
-- Everything a window row holds adds up across the producers of its cell
-- and minute: counts, sums, channel and size counts, and distinct
-- merchants too, since a merchant key is one producer's (a keyed HMAC of
-- the producer and the merchant). Readers sum the rows of a cell and
-- minute; the extremes (`amount_idr_min`, `amount_idr_max`) take min and
-- max.
--
-- The rows are carried over with `producer_id` empty: rows written before
-- this migration hold every producer of their cell and minute. The
-- aggregator keeps counting into such a row while it is open, and checks
-- a late record against its fingerprints, so nothing counted before the
-- migration is counted again after it. The analysts' copy is made again
-- from the new table, with the producer in its key. Stop `pulih
-- aggregate` while migrating, as for 0024: a process of an older version
-- writes the old tables. Every statement can run again: a copy of a row
-- (same key, same version) changes nothing read with FINAL, and a copy of
-- counted entries changes nothing, since readers take the lowest offset of
-- each fingerprint and merchant.
CREATE TABLE IF NOT EXISTS activity_1m_by_producer
(
    window_start          DateTime('UTC'),
    district_code         String,
    sector                String,
    producer_id           String,
    txn_count             UInt64,
    amount_idr_sum        UInt64,
    amount_idr_min        UInt64,
    amount_idr_max        UInt64,
    merchants_active      UInt32,
    txn_qris              UInt64,
    txn_debit_card        UInt64,
    txn_credit_card       UInt64,
    txn_ewallet           UInt64,
    txn_bank_transfer     UInt64,
    txn_other             UInt64,
    txn_micro             UInt64,
    txn_small             UInt64,
    txn_medium            UInt64,
    is_final              UInt8,
    source_partition      Int32,
    source_offset         Int64,
    merchant_keys         Array(FixedString(32)),
    version               UInt64,
    updated_at            DateTime('UTC')
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (producer_id, window_start, district_code, sector);

CREATE TABLE IF NOT EXISTS aggregator_counted_by_producer
(
    topic             String,
    partition         Int32,
    district_code     String,
    sector            String,
    producer_id       String,
    window_start      DateTime('UTC'),
    fingerprints      Array(FixedString(16)),
    offsets           Array(Int64),
    merchants         Array(FixedString(32)),
    merchant_offsets  Array(Int64)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (topic, producer_id, window_start, district_code, sector, partition);

-- The old tables as 0023 and 0024 made them, so that a run of this file
-- interrupted after the DROPs below can be run again from its start.
CREATE TABLE IF NOT EXISTS activity_1m_by_time
(
    window_start          DateTime('UTC'),
    district_code         String,
    sector                String,
    txn_count             UInt64,
    amount_idr_sum        UInt64,
    amount_idr_min        UInt64,
    amount_idr_max        UInt64,
    merchants_active      UInt32,
    txn_qris              UInt64,
    txn_debit_card        UInt64,
    txn_credit_card       UInt64,
    txn_ewallet           UInt64,
    txn_bank_transfer     UInt64,
    txn_other             UInt64,
    txn_micro             UInt64,
    txn_small             UInt64,
    txn_medium            UInt64,
    is_final              UInt8,
    source_partition      Int32,
    source_offset         Int64,
    merchant_keys         Array(FixedString(32)),
    version               UInt64,
    updated_at            DateTime('UTC')
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (window_start, district_code, sector);

CREATE TABLE IF NOT EXISTS aggregator_counted_by_time
(
    topic             String,
    partition         Int32,
    district_code     String,
    sector            String,
    window_start      DateTime('UTC'),
    fingerprints      Array(FixedString(16)),
    offsets           Array(Int64),
    merchants         Array(FixedString(32)),
    merchant_offsets  Array(Int64)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (topic, window_start, district_code, sector, partition);

INSERT INTO activity_1m_by_producer
SELECT window_start, district_code, sector, '',
       txn_count, amount_idr_sum, amount_idr_min, amount_idr_max, merchants_active,
       txn_qris, txn_debit_card, txn_credit_card, txn_ewallet, txn_bank_transfer, txn_other,
       txn_micro, txn_small, txn_medium,
       is_final, source_partition, source_offset, merchant_keys, version, updated_at
FROM activity_1m_by_time;

INSERT INTO aggregator_counted_by_producer
SELECT topic, partition, district_code, sector, '', window_start, fingerprints, offsets,
       merchants, merchant_offsets
FROM aggregator_counted_by_time;

-- The analysts' copy, made again from the new table: as in 0024, filled
-- on every insert and once from the rows already there. Its rows are per
-- producer too; the queries in docs/data-model.md sum them.
DROP TABLE IF EXISTS {analytics}.activity_1m;

CREATE MATERIALIZED VIEW IF NOT EXISTS {analytics}.activity_1m
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (district_code, sector, window_start, producer_id)
POPULATE
AS SELECT
    window_start, district_code, sector, producer_id,
    txn_count, amount_idr_sum, amount_idr_min, amount_idr_max, merchants_active,
    txn_qris, txn_debit_card, txn_credit_card, txn_ewallet, txn_bank_transfer, txn_other,
    txn_micro, txn_small, txn_medium,
    is_final, version, updated_at
FROM {database}.activity_1m_by_producer;

DROP TABLE IF EXISTS activity_1m_by_time;

DROP TABLE IF EXISTS aggregator_counted_by_time;
