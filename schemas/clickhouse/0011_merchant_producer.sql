-- Which producer each merchant key belongs to. A merchant key is a keyed
-- HMAC of (producer_id, merchant_id), so every key has exactly one
-- producer, and merchant_activity_daily joined with this table gives each
-- producer's activity per cell and day: what coverage is measured on (a
-- producer whose feed stops is an outage, not a downturn). `pulih
-- aggregate` writes a row the first time a process counts a merchant,
-- before the checkpoint that covers the record; rows are the same
-- whenever written, so a replay is harmless.
CREATE TABLE IF NOT EXISTS merchant_producer
(
    merchant_key  FixedString(32),
    producer_id   String,
    first_seen    DateTime('UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY merchant_key;
