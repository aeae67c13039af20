-- Recovery metrics per Jakarta day and cell, computed by `pulih rollup`
-- (crates/pulih-metrics) from merchant_activity_daily, and the databases
-- that analysts and dashboards read. Definitions, grain and query rules:
-- docs/data-model.md.
--
-- {analytics} and {public} are the configured database's siblings
-- `<database>_analytics` and `<database>_public` (`pulih_analytics` and
-- `pulih_public` by default); `pulih migrate` fills them in.

CREATE DATABASE IF NOT EXISTS {analytics};

CREATE DATABASE IF NOT EXISTS {public};

-- Every metric, unsuppressed, with the reason a row is withheld from
-- publication. One row per (level, cell, day); a rollup re-inserts rows with
-- a higher version, so read with FINAL.
CREATE TABLE IF NOT EXISTS {analytics}.recovery_daily
(
    day                       Date,
    level                     Enum8('district_sector' = 1, 'kota_sector' = 2, 'sector' = 3, 'city' = 4),
    kota_code                 String,
    district_code             String,
    sector                    String,
    amount_idr_sum            UInt64,
    txn_count                 UInt64,
    merchants_active          UInt32,
    merchants_open            Nullable(UInt32),
    amount_idr_ma7            Nullable(Float64),
    txn_count_ma7             Nullable(Float64),
    merchants_open_ma7        Nullable(Float64),
    amount_idr_baseline       Nullable(Float64),
    txn_count_baseline        Nullable(Float64),
    merchants_open_baseline   Nullable(Float64),
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
    suppression               Enum8('none' = 0, 'small_cell' = 1, 'complementary' = 2),
    version                   UInt64,
    computed_at               DateTime('UTC')
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(day)
ORDER BY (level, kota_code, district_code, sector, day);

-- What may be published: small and complementary cells have NULL values
-- and suppressed = 1; derived values are NULL unless every day they are
-- computed from is published.
CREATE TABLE IF NOT EXISTS {public}.recovery_daily
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
    computed_at               DateTime('UTC')
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(day)
ORDER BY (level, kota_code, district_code, sector, day);

-- activity_1m without its merchant keys and Kafka bookkeeping, for
-- analysts. Filled on every insert into activity_1m (and once from its
-- existing rows when created); read with FINAL.
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
FROM {database}.activity_1m;
