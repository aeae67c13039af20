-- The published recovery metrics, redesigned so that nothing withheld can
-- be recovered from them (docs/data-model.md, "What is published"):
--
-- * {public} holds indices and changes only, rounded to 0.01, never a
--   level, a baseline or a count; a row for every cell of the reference
--   tables every complete day, traded or not;
-- * it changes once a day: each public release is a vintage (its Jakarta
--   date) that adds the rows computed since the one before, and every
--   vintage is kept, so the first release of every value stays readable;
-- * readers use the view {public}.recovery_daily (the latest released
--   vintage of each row), never half-written rows.
--
-- It replaces {public}.recovery_daily (a table of levels), {public}.releases
-- and {analytics}.recovery_daily_first_release, and rebuilds
-- {analytics}.recovery_daily with coverage, dominance, year-on-year and
-- holiday-aligned year-on-year columns (ClickHouse 18.16 has no idempotent ALTER ... ADD COLUMN or
-- RENAME COLUMN). Every table dropped here is derived: `pulih rollup`
-- without `--from` computes them again from merchant_activity_daily.
--
-- From this version on, producer_coverage_daily.coverage (0012) is each
-- producer's ratio to its norm divided by the median producer's that day,
-- so that a day when the whole city trades less is no one's outage.

DROP TABLE IF EXISTS {analytics}.recovery_daily_first_release;

DROP TABLE IF EXISTS {analytics}.recovery_daily;

-- Every metric, unsuppressed, with the reason a row is withheld from
-- publication. One row per (level, cell, day) that traded in the 28 days
-- up to it; a rollup re-inserts rows with a higher version, so read with
-- FINAL. Definitions: docs/data-model.md.
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
    amount_idr_top1           UInt64,
    amount_idr_top2           UInt64,
    incomplete                UInt8,
    covered_days              UInt8,
    amount_idr_ma7            Nullable(Float64),
    txn_count_ma7             Nullable(Float64),
    merchants_open_ma7        Nullable(Float64),
    amount_idr_baseline       Nullable(Float64),
    txn_count_baseline        Nullable(Float64),
    merchants_open_baseline   Nullable(Float64),
    amount_idr_index          Nullable(Float64),
    txn_count_index           Nullable(Float64),
    merchants_open_index      Nullable(Float64),
    amount_idr_yoy            Nullable(Float64),
    txn_count_yoy             Nullable(Float64),
    merchants_open_yoy        Nullable(Float64),
    amount_idr_yoy_aligned    Nullable(Float64),
    txn_count_yoy_aligned     Nullable(Float64),
    merchants_open_yoy_aligned Nullable(Float64),
    amount_idr_wow            Nullable(Float64),
    txn_count_wow             Nullable(Float64),
    merchants_open_wow        Nullable(Float64),
    amount_idr_chg4w          Nullable(Float64),
    txn_count_chg4w           Nullable(Float64),
    merchants_open_chg4w      Nullable(Float64),
    suppression               Enum8('none' = 0, 'small_cell' = 1, 'complementary' = 2, 'dominance' = 3),
    version                   UInt64,
    computed_at               DateTime('UTC')
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(day)
ORDER BY (level, kota_code, district_code, sector, day);

-- The public rows as the latest rollup computed them, for every reference
-- cell and complete day: what the next public release carries (the rows
-- computed since the last one). Internal to `pulih rollup`; read with FINAL.
CREATE TABLE IF NOT EXISTS {analytics}.release_candidate
(
    day                       Date,
    level                     Enum8('district_sector' = 1, 'kota_sector' = 2, 'sector' = 3, 'city' = 4),
    kota_code                 String,
    district_code             String,
    sector                    String,
    withheld                  UInt8,
    incomplete                Nullable(UInt8),
    amount_idr_index          Nullable(Float64),
    txn_count_index           Nullable(Float64),
    merchants_open_index      Nullable(Float64),
    amount_idr_yoy            Nullable(Float64),
    txn_count_yoy             Nullable(Float64),
    merchants_open_yoy        Nullable(Float64),
    amount_idr_yoy_aligned    Nullable(Float64),
    txn_count_yoy_aligned     Nullable(Float64),
    merchants_open_yoy_aligned Nullable(Float64),
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

DROP TABLE IF EXISTS {public}.recovery_daily;

DROP TABLE IF EXISTS {public}.releases;

-- Every public release: its vintage (the Jakarta date it was made), when,
-- the last complete day it holds and the first day it holds that may
-- still be revised. At most one a day.
CREATE TABLE IF NOT EXISTS {public}.releases
(
    vintage           Date,
    released_at       DateTime('UTC'),
    data_through      Date,
    provisional_from  Date
)
ENGINE = ReplacingMergeTree
ORDER BY vintage;

-- Every released value, by vintage: a release adds a row for each cell-day
-- computed since the release before, so the first and every later
-- release of a value stay here. Rows of one vintage are identical if a
-- release is retried. Read the view below for the latest values.
CREATE TABLE IF NOT EXISTS {public}.recovery_vintages
(
    day                       Date,
    level                     Enum8('district_sector' = 1, 'kota_sector' = 2, 'sector' = 3, 'city' = 4),
    kota_code                 String,
    district_code             String,
    sector                    String,
    vintage                   Date,
    withheld                  UInt8,
    incomplete                Nullable(UInt8),
    amount_idr_index          Nullable(Float64),
    txn_count_index           Nullable(Float64),
    merchants_open_index      Nullable(Float64),
    amount_idr_yoy            Nullable(Float64),
    txn_count_yoy             Nullable(Float64),
    merchants_open_yoy        Nullable(Float64),
    amount_idr_yoy_aligned    Nullable(Float64),
    txn_count_yoy_aligned     Nullable(Float64),
    merchants_open_yoy_aligned Nullable(Float64),
    amount_idr_wow            Nullable(Float64),
    txn_count_wow             Nullable(Float64),
    merchants_open_wow        Nullable(Float64),
    amount_idr_chg4w          Nullable(Float64),
    txn_count_chg4w           Nullable(Float64),
    merchants_open_chg4w      Nullable(Float64)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (level, kota_code, district_code, sector, day, vintage);

-- The latest released value of each cell-day: rows of a release still
-- being written (no row in releases yet) are not visible, and a retried
-- release shows once. `provisional` = 1 from the latest release's
-- provisional_from on.
CREATE VIEW IF NOT EXISTS {public}.recovery_daily AS
SELECT
    day, level, kota_code, district_code, sector, vintage,
    toUInt8(day >= (SELECT argMax(provisional_from, vintage) FROM {public}.releases)) AS provisional,
    withheld, incomplete,
    amount_idr_index, txn_count_index, merchants_open_index,
    amount_idr_yoy, txn_count_yoy, merchants_open_yoy,
    amount_idr_yoy_aligned, txn_count_yoy_aligned, merchants_open_yoy_aligned,
    amount_idr_wow, txn_count_wow, merchants_open_wow,
    amount_idr_chg4w, txn_count_chg4w, merchants_open_chg4w
FROM {public}.recovery_vintages
WHERE vintage <= (SELECT max(vintage) FROM {public}.releases)
ORDER BY level, kota_code, district_code, sector, day, vintage DESC
LIMIT 1 BY level, kota_code, district_code, sector, day;
