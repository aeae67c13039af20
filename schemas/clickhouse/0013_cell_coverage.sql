-- Each cell's coverage per Jakarta day, computed by `pulih rollup`
-- (crates/pulih-metrics/src/coverage.rs): the transactions the cell
-- expects (each producer's norm in it, summed) and the share of them that
-- producers in outage (producer_coverage_daily) carry. `incomplete` = 1 at
-- `metrics.coverage_incomplete_share` or more: the cell's numbers that day
-- miss part of its activity, whatever they show. One row per cell with an
-- expected activity, at every level of recovery_daily; complete days only;
-- read with FINAL.
CREATE TABLE IF NOT EXISTS {analytics}.cell_coverage_daily
(
    day                 Date,
    level               Enum8('district_sector' = 1, 'kota_sector' = 2, 'sector' = 3, 'city' = 4),
    kota_code           String,
    district_code       String,
    sector              String,
    expected_txn_count  Float64,
    missing_share       Float64,
    incomplete          UInt8,
    version             UInt64,
    computed_at         DateTime('UTC')
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(day)
ORDER BY (level, kota_code, district_code, sector, day);
