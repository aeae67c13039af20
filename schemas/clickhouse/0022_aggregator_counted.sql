-- What `pulih aggregate` newly counted in a window of `activity_1m` in one
-- flush, one row per window and flush: the 128-bit XXH3 fingerprints of
-- the (producer_id, event_id) of its events with the offset of each one's
-- first occurrence in the partition (the de-duplication memory,
-- docs/semantics.md, "Duplicates"), and the merchants new to the window
-- with the offset of the record that brought each one (its distinct
-- merchants, "Restoring a window").
--
-- It replaces `aggregator_fingerprints` (0021), which held the
-- fingerprints only, while every row of `activity_1m` carried all of its
-- window's merchant keys and so rewrote them at every upsert of an open
-- window. Since, only final rows of `activity_1m` carry `merchant_keys`;
-- open ones leave it empty. The rows are carried over and the old table
-- dropped. Stop `pulih aggregate` while migrating: a process of an older
-- version writes the old table.
--
-- Written before the rows that count the events. A replay after a crash
-- may write a fingerprint or a merchant again, in another row: readers take
-- the lowest offset of each, so a copy changes nothing. The merchants of an
-- open window are those of `partition` = its row's `source_partition` at
-- an offset up to its `source_offset`, with any in the row's
-- `merchant_keys`. Offset -1 marks the merchants a partition took over
-- from an open row written by another partition or before this migration.
-- Partitioned by the month of the window: `aggregate.dedup_retention_days`
-- drops whole months (final rows keep their merchants).
CREATE TABLE IF NOT EXISTS aggregator_counted
(
    topic             String,
    partition         Int32,
    district_code     String,
    sector            String,
    window_start      DateTime('UTC'),
    fingerprints      Array(FixedString(16)),
    offsets           Array(Int64),
    merchants         Array(FixedString(32)),
    merchant_offsets  Array(Int64)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (topic, partition, district_code, sector, window_start);

-- The old table as 0021 made it, so that a run of this file interrupted
-- after the DROP below can be run again from its start.
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

-- A run interrupted between this and the DROP copies the rows twice when
-- run again: harmless, as above.
INSERT INTO aggregator_counted
SELECT topic, partition, district_code, sector, window_start, fingerprints, offsets,
       CAST([] AS Array(FixedString(32))), CAST([] AS Array(Int64))
FROM aggregator_fingerprints;

DROP TABLE IF EXISTS aggregator_fingerprints;
