-- `aggregator_counted` (0022) with the window's start before the cell in
-- its sorting key, so that a read of the windows after some time skips
-- every granule of the windows before it.
--
-- A restart reads what its partitions counted in the windows that could
-- still be open: the last minutes. With the cell first, a cell's rows of a
-- month fill less than a granule at Jakarta's density, so that read could
-- skip nothing and scanned the month's rows (docs/benchmarks.md, "At
-- Jakarta's volume"). With the time first it reads the granules of those
-- minutes. A read-back of given windows filters on the topic and the
-- (window, district, sector) tuples, the next columns of the key, and the
-- writing partition comes last: a window's rows of every partition are
-- read together, as a read-back needs them.
--
-- Same columns and meaning as 0022. The rows are carried over and the old
-- table dropped. Stop `pulih aggregate` while migrating: a process of an
-- older version writes the old table. A run interrupted between the copy
-- and the DROP copies the rows twice when run again: a copy of a row
-- changes nothing, since readers take the lowest offset of each
-- fingerprint and merchant.
CREATE TABLE IF NOT EXISTS aggregator_counted_by_time
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
ORDER BY (topic, window_start, district_code, sector, partition);

-- The old table as 0022 made it, so that a run of this file interrupted
-- after the DROP below can be run again from its start.
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

INSERT INTO aggregator_counted_by_time
SELECT topic, partition, district_code, sector, window_start, fingerprints, offsets,
       merchants, merchant_offsets
FROM aggregator_counted;

DROP TABLE IF EXISTS aggregator_counted;
