-- Internal state of `pulih aggregate`, so that a restarted or newly
-- assigned process continues exactly where the last durable flush ended.
-- See docs/semantics.md for how these tables make results exactly-once.

-- Per Kafka partition: the next offset to read and the partition's event
-- and arrival clocks at that offset. Written after the rows that cover the
-- offsets before it; the latest (highest next_offset) row wins.
CREATE TABLE IF NOT EXISTS aggregator_checkpoint
(
    topic         String,
    partition     Int32,
    next_offset   Int64,
    max_event_ms  Int64,
    max_ts_ms     Int64,
    group_id      String,
    updated_at    DateTime('UTC')
)
ENGINE = ReplacingMergeTree(next_offset)
ORDER BY (topic, partition);

-- Events remembered for de-duplication: a 128-bit XXH3 fingerprint of
-- (producer_id, event_id) per first occurrence, with its offset and Kafka
-- timestamp. Only the last `aggregate.dedup_horizon_secs` are ever read;
-- the aggregator drops day partitions that are older than that.
CREATE TABLE IF NOT EXISTS aggregator_dedup
(
    day           Date,
    topic         String,
    partition     Int32,
    offset        Int64,
    fingerprint   FixedString(16),
    ts_ms         Int64
)
ENGINE = MergeTree
PARTITION BY day
ORDER BY (topic, partition, ts_ms);
