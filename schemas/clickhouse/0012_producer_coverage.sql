-- Each producer's coverage per Jakarta day, computed by `pulih rollup`
-- (crates/pulih-metrics/src/coverage.rs) from merchant_activity_daily and
-- merchant_producer: its transactions against its own norm (the median of
-- the same weekday over the previous four weeks). `outage` = 1 marks a day
-- below `metrics.coverage_outage_below` of a norm of at least
-- `metrics.coverage_min_transactions`: the producer's feed was incomplete,
-- so a drop in the cells it serves is not a downturn. Complete days only,
-- like recovery_daily; read with FINAL. Producer ids are the payment
-- providers' names: analysts may see them, the public database has none.
CREATE TABLE IF NOT EXISTS {analytics}.producer_coverage_daily
(
    day             Date,
    producer_id     String,
    txn_count       UInt64,
    amount_idr_sum  UInt64,
    norm_txn_count  Nullable(Float64),
    coverage        Nullable(Float64),
    outage          UInt8,
    version         UInt64,
    computed_at     DateTime('UTC')
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(day)
ORDER BY (producer_id, day);
