-- What each rollup round published: recovery_daily holds complete Jakarta
-- days only (docs/semantics.md, "Completeness"), `data_through` is the
-- last of them, and days from `provisional_from` on may still be revised
-- by late events (those up to `time.max_age_secs` old, which the gateway
-- accepts). A row is written when either changes; the latest release is
-- the one with the highest `released_at`. Analysts read it with
-- `argMax(data_through, released_at)` (docs/data-model.md, "Complete and
-- provisional days").
CREATE TABLE IF NOT EXISTS {analytics}.releases
(
    released_at       DateTime('UTC'),
    data_through      Date,
    provisional_from  Date
)
ENGINE = ReplacingMergeTree
ORDER BY released_at;

CREATE TABLE IF NOT EXISTS {public}.releases
(
    released_at       DateTime('UTC'),
    data_through      Date,
    provisional_from  Date
)
ENGINE = ReplacingMergeTree
ORDER BY released_at;
