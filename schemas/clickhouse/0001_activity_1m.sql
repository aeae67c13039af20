-- Event-time activity per (district, sector) and window (one minute by
-- default; `aggregate.window_secs`).
--
-- Written by `pulih aggregate`. A window row is upserted each time its window
-- changes. ReplacingMergeTree keeps, per sorting key, the row with the
-- highest `version`, so read it with FINAL (or argMax by version) to see
-- exactly one row per window. `is_final` = 1 once the watermark has passed
-- the window's end; a late event within the correction horizon re-emits the
-- row with a higher version.
--
-- `source_partition` and `source_offset` (the highest Kafka offset folded
-- into the row) make replays idempotent, and `merchant_keys` holds the
-- window's distinct merchants so the aggregator can restore the window
-- exactly after a restart; see docs/semantics.md. `version` is
-- 2 * (source_offset + 1) + is_final.
--
-- Runs unchanged on ClickHouse 18.16 and current releases.

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
