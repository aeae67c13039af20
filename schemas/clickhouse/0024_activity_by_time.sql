-- `activity_1m` (0001) and `merchant_activity_daily` (0002) with the time
-- before the cell in their sorting keys, as `aggregator_counted_by_time`
-- (0023) for the same reasons.
--
-- The aggregator reads these tables by time only: a restart reads the
-- windows and merchant-days that could still be open (the last minutes and
-- days), and a late record's read-back reads whole hours and days of its
-- partition (docs/semantics.md, "Read-backs by range"). With the cell
-- first, a cell's rows of a month fill a granule or less, so such a read
-- could skip nothing within the month's part: a read-back of one hour read
-- the month. With the time first it reads the granules of that hour. The
-- rollup and the alerts read by day too. Analysts keep reading
-- `{analytics}.activity_1m`, sorted by cell.
--
-- Same columns and meaning as 0001 and 0002. The rows are carried over, the
-- analysts' copy is made again from the new table (its materialized view
-- follows a source by name, and the name changes) and the old tables are
-- dropped. Stop `pulih aggregate` while migrating: a process of an older
-- version writes the old tables, and rows inserted while the analysts'
-- copy is made again are not in it. Every statement can run again: a run
-- interrupted after a copy copies the rows twice when run again, and a
-- copy of a row (same key, same version) changes nothing read with FINAL.
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

CREATE TABLE IF NOT EXISTS merchant_activity_daily_by_time
(
    day               Date,
    district_code     String,
    sector            String,
    merchant_key      FixedString(32),
    txn_count         UInt64,
    amount_idr_sum    UInt64,
    is_final          UInt8,
    source_partition  Int32,
    source_offset     Int64,
    version           UInt64,
    updated_at        DateTime('UTC')
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(day)
ORDER BY (day, district_code, sector, merchant_key);

-- The old tables as 0001 and 0002 made them, so that a run of this file
-- interrupted after the DROPs below can be run again from its start.
CREATE TABLE IF NOT EXISTS activity_1m
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
ORDER BY (district_code, sector, window_start);

CREATE TABLE IF NOT EXISTS merchant_activity_daily
(
    day               Date,
    district_code     String,
    sector            String,
    merchant_key      FixedString(32),
    txn_count         UInt64,
    amount_idr_sum    UInt64,
    is_final          UInt8,
    source_partition  Int32,
    source_offset     Int64,
    version           UInt64,
    updated_at        DateTime('UTC')
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(day)
ORDER BY (district_code, sector, day, merchant_key);

INSERT INTO activity_1m_by_time
SELECT window_start, district_code, sector,
       txn_count, amount_idr_sum, amount_idr_min, amount_idr_max, merchants_active,
       txn_qris, txn_debit_card, txn_credit_card, txn_ewallet, txn_bank_transfer, txn_other,
       txn_micro, txn_small, txn_medium,
       is_final, source_partition, source_offset, merchant_keys, version, updated_at
FROM activity_1m;

INSERT INTO merchant_activity_daily_by_time
SELECT day, district_code, sector, merchant_key, txn_count, amount_idr_sum,
       is_final, source_partition, source_offset, version, updated_at
FROM merchant_activity_daily;

-- The analysts' copy, made again from the new table: as in 0004, filled
-- on every insert and once from the rows already there.
DROP TABLE IF EXISTS {analytics}.activity_1m;

CREATE MATERIALIZED VIEW IF NOT EXISTS {analytics}.activity_1m
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (district_code, sector, window_start)
POPULATE
AS SELECT
    window_start, district_code, sector,
    txn_count, amount_idr_sum, amount_idr_min, amount_idr_max, merchants_active,
    txn_qris, txn_debit_card, txn_credit_card, txn_ewallet, txn_bank_transfer, txn_other,
    txn_micro, txn_small, txn_medium,
    is_final, version, updated_at
FROM {database}.activity_1m_by_time;

DROP TABLE IF EXISTS activity_1m;

DROP TABLE IF EXISTS merchant_activity_daily;
