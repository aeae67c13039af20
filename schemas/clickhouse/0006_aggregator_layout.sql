-- The partition count of each topic `pulih aggregate` consumes, recorded
-- the first time it runs on the topic. A cell's rows are correct only while
-- its key maps to one partition, so an aggregator that finds a different
-- count refuses to start (docs/semantics.md, "Changing the partition
-- count"). The first row written wins.
CREATE TABLE IF NOT EXISTS aggregator_layout
(
    topic            String,
    partition_count  Int32,
    recorded_at      DateTime('UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY topic;
