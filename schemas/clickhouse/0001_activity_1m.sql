-- One-minute event-time activity per (district, sector).
--
-- Written by `pulih aggregate`. A window row is upserted each time its window
-- changes: ReplacingMergeTree keeps, per sorting key, the row with the
-- highest `version`, so read it with FINAL (or argMax by version) to see
-- exactly one row per window.
--
-- Runs unchanged on ClickHouse 18.16 and current releases.

CREATE TABLE IF NOT EXISTS activity_1m
(
    window_start     DateTime('UTC'),
    district_code    String,
    sector           String,
    txn_count        UInt64,
    amount_idr_sum   UInt64,
    merchants_active UInt32,
    is_final         UInt8,
    version          UInt64,
    updated_at       DateTime('UTC')
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (district_code, sector, window_start);
