-- The alternative to pulih that a data engineer would build with ClickHouse
-- alone: producers' NDJSON inserted raw over HTTP (`INSERT INTO
-- payments_raw FORMAT JSONEachRow`, in large batches, with
-- date_time_input_format = 'best_effort' for the RFC 3339 timestamps), and
-- a materialized view folding each insert into the same one-minute
-- aggregates pulih writes to activity_1m_by_producer.
--
-- What it does not do, stated so the comparison is honest:
--   * No de-duplication: an event a client sent twice (a retry after a
--     timeout) is counted twice. ReplacingMergeTree on event_id would not
--     fix it: the view folds each insert as it arrives, before any merge.
--   * No validation beyond the column types: an unknown district or sector
--     lands as its own cell; a malformed line fails the whole batch.
--   * No pseudonymisation: merchant_id is stored as the producer sent it
--     (ClickHouse has no keyed HMAC to apply on insert), in every row.
--   * No small-cell suppression and no correction horizon: a late event is
--     folded whenever it arrives, which is more permissive than pulih.
--   * The raw table keeps every event; pulih keeps aggregates (and one
--     fingerprint per event for de-duplication).
--
-- Read the result with the -Merge combinators (see bench/compare/README.md).
-- Runs unchanged on ClickHouse 18.16 and current releases.

CREATE TABLE IF NOT EXISTS payments_raw
(
    event_id       String,
    occurred_at    DateTime('UTC'),
    merchant_id    String,
    district_code  String,
    sector         String,
    kbli_code      String,
    amount_idr     UInt64,
    channel        String,
    merchant_size  String
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (district_code, sector, occurred_at);

CREATE TABLE IF NOT EXISTS activity_1m_alone
(
    window_start    DateTime('UTC'),
    district_code   String,
    sector          String,
    txn_count       AggregateFunction(count),
    amount_idr_sum  AggregateFunction(sum, UInt64),
    amount_idr_min  AggregateFunction(min, UInt64),
    amount_idr_max  AggregateFunction(max, UInt64),
    merchants       AggregateFunction(uniqExact, String)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (district_code, sector, window_start);

CREATE MATERIALIZED VIEW IF NOT EXISTS activity_1m_alone_mv TO activity_1m_alone AS
SELECT
    toStartOfMinute(occurred_at) AS window_start,
    district_code,
    sector,
    countState() AS txn_count,
    sumState(amount_idr) AS amount_idr_sum,
    minState(amount_idr) AS amount_idr_min,
    maxState(amount_idr) AS amount_idr_max,
    uniqExactState(merchant_id) AS merchants
FROM payments_raw
GROUP BY window_start, district_code, sector;
