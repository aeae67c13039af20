-- De-duplication memory of `pulih aggregate`, kept with the windows it
-- protects: the 128-bit XXH3 fingerprint of (producer_id, event_id) of
-- every event counted in a window of `activity_1m`, with the offset of its
-- first occurrence in the partition. A re-sent event whose window is
-- closed is checked against the fingerprints read back with the window's
-- row, so de-duplication covers every window an event can still change,
-- and no clock decides it (docs/semantics.md, "Duplicates").
--
-- It replaces `aggregator_dedup`, which remembered one hour of Kafka time
-- and cannot be converted (its rows name no window). Drain before
-- upgrading: stop the intake, let `pulih aggregate` catch up, then migrate.
--
-- Written before the rows that count the events; rewriting a row on a
-- replay is harmless (same key, same offset). Partitioned by the month of
-- the window: `aggregate.dedup_retention_days` drops whole months.
CREATE TABLE IF NOT EXISTS aggregator_seen
(
    topic          String,
    partition      Int32,
    district_code  String,
    sector         String,
    window_start   DateTime('UTC'),
    fingerprint    FixedString(16),
    offset         Int64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (topic, partition, district_code, sector, window_start, fingerprint);

DROP TABLE IF EXISTS aggregator_dedup;
