-- Each producer's clock in each Kafka partition, written by `pulih
-- aggregate` with its checkpoints (before each checkpoint row, and only
-- for the clocks that changed): the producer's highest event time, the
-- Kafka timestamp of its latest record and the watermark its windows close
-- by (docs/semantics.md, "A clock per producer"). A restart takes the
-- latest row of each producer, and reads back the windows still open on
-- each producer's own clock. The empty producer id holds the partition's
-- floor: no producer's watermark is below it.
--
-- One row per (topic, partition, producer) once merged; read with
-- `argMax(.., next_offset)`.
CREATE TABLE IF NOT EXISTS aggregator_producer_clock
(
    topic          String,
    partition      Int32,
    producer_id    String,
    next_offset    Int64,
    max_event_ms   Int64,
    last_ts_ms     Int64,
    watermark_ms   Int64,
    updated_at     DateTime('UTC')
)
ENGINE = ReplacingMergeTree(next_offset)
ORDER BY (topic, partition, producer_id);
