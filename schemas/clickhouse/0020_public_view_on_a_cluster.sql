-- The public view {public}.recovery_daily, redefined so that it also runs
-- over a Distributed recovery_vintages (clickhouse.cluster): the latest
-- released vintage of each row is picked in a subquery, and `provisional`
-- computed outside it. ClickHouse 18.16 loses a scalar subquery's column
-- in a SELECT list sent to the shards ("Not found column
-- toUInt8(greaterOrEquals(day, _subquery5)) in block", seen on
-- 2026-11-30). Same columns, in the same order, and the same rows as the
-- definition of 0014. Readers see no view for the moment between the two
-- statements.
DROP TABLE IF EXISTS {public}.recovery_daily;

CREATE VIEW IF NOT EXISTS {public}.recovery_daily AS
SELECT
    day, level, kota_code, district_code, sector, vintage,
    toUInt8(day >= (SELECT argMax(provisional_from, vintage) FROM {public}.releases)) AS provisional,
    withheld, incomplete,
    amount_idr_index, txn_count_index, merchants_open_index,
    amount_idr_yoy, txn_count_yoy, merchants_open_yoy,
    amount_idr_yoy_aligned, txn_count_yoy_aligned, merchants_open_yoy_aligned,
    amount_idr_wow, txn_count_wow, merchants_open_wow,
    amount_idr_chg4w, txn_count_chg4w, merchants_open_chg4w
FROM
(
    SELECT
        day, level, kota_code, district_code, sector, vintage, withheld, incomplete,
        amount_idr_index, txn_count_index, merchants_open_index,
        amount_idr_yoy, txn_count_yoy, merchants_open_yoy,
        amount_idr_yoy_aligned, txn_count_yoy_aligned, merchants_open_yoy_aligned,
        amount_idr_wow, txn_count_wow, merchants_open_wow,
        amount_idr_chg4w, txn_count_chg4w, merchants_open_chg4w
    FROM {public}.recovery_vintages
    WHERE vintage <= (SELECT max(vintage) FROM {public}.releases)
    ORDER BY level, kota_code, district_code, sector, day, vintage DESC
    LIMIT 1 BY level, kota_code, district_code, sector, day
);
