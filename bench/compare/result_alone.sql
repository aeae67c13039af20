-- The one-minute aggregates of clickhouse_alone.sql, one row per window
-- and cell, in the shape bench/compare/compare.py reads from both systems.
SELECT
    toUInt32(window_start) AS window_unix,
    district_code,
    sector,
    countMerge(txn_count) AS txn_count,
    sumMerge(amount_idr_sum) AS amount_idr_sum,
    minMerge(amount_idr_min) AS amount_idr_min,
    maxMerge(amount_idr_max) AS amount_idr_max,
    uniqExactMerge(merchants) AS merchants_active
FROM activity_1m_alone
GROUP BY window_start, district_code, sector
ORDER BY district_code, sector, window_unix;
