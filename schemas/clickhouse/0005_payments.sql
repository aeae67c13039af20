-- The raw anonymised payment records, for ad-hoc analysis: written by
-- `pulih aggregate` only when `aggregate.archive_payments` is on. One row
-- per (producer_id, event_id) once merged (a re-delivered event is the
-- same row), so read with FINAL. `merchant_key` is the HMAC pseudonym:
-- this table stays internal (database `pulih`, the writer's only).
-- Cost on disk: docs/data-model.md.

CREATE TABLE IF NOT EXISTS payments
(
    producer_id       String,
    event_id          String,
    occurred_at       DateTime('UTC'),
    occurred_ms       UInt16,
    day               Date,
    merchant_key      FixedString(32),
    merchant_key_id   String,
    district_code     String,
    sector            String,
    kbli_code         String,
    amount_idr        UInt64,
    channel           String,
    merchant_size     String,
    accepted_at       DateTime('UTC'),
    source_partition  Int32,
    source_offset     Int64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (producer_id, event_id);
