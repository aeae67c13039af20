-- De-duplication memory of `pulih aggregate`, one row per window and flush
-- instead of one per event: the 128-bit XXH3 fingerprints of the
-- (producer_id, event_id) newly counted in a window of `activity_1m` in one
-- flush, with the offset of each one's first occurrence in the partition,
-- in two arrays of the same length (docs/semantics.md, "Duplicates").
--
-- It replaces `aggregator_seen` (0007), whose one row per event repeated
-- the topic, partition and cell with every fingerprint and was most of what
-- the aggregator made ClickHouse insert, sort and merge. The rows are
-- carried over and the old table dropped. Stop `pulih aggregate` while
-- migrating: a process of an older version writes the old table.
--
-- Written before the rows that count the events. A replay after a crash
-- may write a fingerprint again, in another row: readers take the lowest
-- offset of each fingerprint, so a copy changes nothing. Partitioned by the
-- month of the window: `aggregate.dedup_retention_days` drops whole months.
CREATE TABLE IF NOT EXISTS aggregator_fingerprints
(
    topic          String,
    partition      Int32,
    district_code  String,
    sector         String,
    window_start   DateTime('UTC'),
    fingerprints   Array(FixedString(16)),
    offsets        Array(Int64)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (topic, partition, district_code, sector, window_start);

-- The old table as 0007 made it, so that a run of this file interrupted
-- after the DROP below can be run again from its start.
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

-- One row per window. A run interrupted between this and the DROP copies
-- the rows twice when run again: harmless, as above.
INSERT INTO aggregator_fingerprints
SELECT
    topic, partition, district_code, sector, window_start,
    arrayMap(x -> tupleElement(x, 1), pairs),
    arrayMap(x -> tupleElement(x, 2), pairs)
FROM
(
    SELECT topic, partition, district_code, sector, window_start,
           groupArray((fingerprint, offset)) AS pairs
    FROM aggregator_seen
    GROUP BY topic, partition, district_code, sector, window_start
);

DROP TABLE IF EXISTS aggregator_seen;
