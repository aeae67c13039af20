-- How far each Kafka partition's event time is complete: the aggregator's
-- effective watermark (docs/semantics.md, "Watermark"), recorded each time
-- it enters a new Jakarta day, after the rows it made final and the
-- checkpoint are durable. The highest row wins, so a restarted process
-- whose watermark starts lower never takes completeness back. A Jakarta
-- day is complete once every partition of the topic (as many as
-- aggregator_layout records) has a watermark at or past its end; the
-- rollup and `pulih_public` read this through `Store::complete_through`.
CREATE TABLE IF NOT EXISTS aggregator_watermark
(
    topic         String,
    partition     Int32,
    watermark_ms  Int64,
    updated_at    DateTime('UTC')
)
ENGINE = ReplacingMergeTree(watermark_ms)
ORDER BY (topic, partition);
