-- The first release of every public value: each row of
-- {public}.recovery_daily as the rollup first published it. Later rounds
-- revise a day when late events or a backfill correct it; this table keeps
-- what was known first, for alert backtests (what did the numbers say
-- then) and disclosure audits (what was ever published). The rollup copies
-- every public row it writes here; `first_key` is bitNot(version), so the
-- ReplacingMergeTree keeps the copy with the lowest version: the first.
-- Read with FINAL. Only the writer and the analyst account read it.
CREATE TABLE IF NOT EXISTS {analytics}.recovery_daily_first_release
(
    day                       Date,
    level                     Enum8('district_sector' = 1, 'kota_sector' = 2, 'sector' = 3, 'city' = 4),
    kota_code                 String,
    district_code             String,
    sector                    String,
    suppressed                UInt8,
    amount_idr_sum            Nullable(UInt64),
    txn_count                 Nullable(UInt64),
    merchants_open            Nullable(UInt32),
    amount_idr_ma7            Nullable(Float64),
    txn_count_ma7             Nullable(Float64),
    merchants_open_ma7        Nullable(Float64),
    amount_idr_index          Nullable(Float64),
    txn_count_index           Nullable(Float64),
    merchants_open_index      Nullable(Float64),
    amount_idr_index_sa       Nullable(Float64),
    txn_count_index_sa        Nullable(Float64),
    merchants_open_index_sa   Nullable(Float64),
    amount_idr_wow            Nullable(Float64),
    txn_count_wow             Nullable(Float64),
    merchants_open_wow        Nullable(Float64),
    amount_idr_chg4w          Nullable(Float64),
    txn_count_chg4w           Nullable(Float64),
    merchants_open_chg4w      Nullable(Float64),
    version                   UInt64,
    computed_at               DateTime('UTC'),
    first_key                 UInt64
)
ENGINE = ReplacingMergeTree(first_key)
PARTITION BY toYYYYMM(day)
ORDER BY (level, kota_code, district_code, sector, day);
