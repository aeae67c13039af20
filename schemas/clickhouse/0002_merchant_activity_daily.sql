-- Daily activity per merchant: one row per (Jakarta-local day, district,
-- sector, merchant_key) with its transaction count and sum. It feeds the
-- "merchants open" metric. `merchant_key` is the 32-byte HMAC pseudonym
-- (hex(merchant_key) gives the form carried on Kafka); this table is
-- internal and never published as is.
--
-- Written by `pulih aggregate` with the same upsert rules as activity_1m:
-- read with FINAL; `version` is 2 * (source_offset + 1) + is_final.

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
