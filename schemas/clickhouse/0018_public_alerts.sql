-- Sector-downturn alerts as the public sees them (`pulih ui`, public
-- dashboards): each state change of a downturn alert, with its readable
-- summary. A downturn alert is raised only on a published (unsuppressed)
-- cell, and its summary carries the same rounded changes the public view
-- publishes, so this table discloses nothing `recovery_daily` withholds.
-- Sudden stops stay in the analytics database: they describe a cell's
-- trade hour by hour. Written by `pulih alerts` before
-- `{analytics}.alert_events`; read with FINAL.
CREATE TABLE IF NOT EXISTS {public}.alerts
(
    alert_id       String,
    state          Enum8('firing' = 1, 'resolved' = 2),
    level          Enum8('district_sector' = 1, 'kota_sector' = 2, 'sector' = 3, 'city' = 4),
    kota_code      String,
    district_code  String,
    sector         String,
    severity       Enum8('warning' = 1, 'critical' = 2),
    day            Date,
    since          Date,
    summary        String,
    raised_at      DateTime('UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (alert_id, day, state);

INSERT INTO {public}.alerts
SELECT alert_id, state, level, kota_code, district_code, sector, severity, day, since, summary, raised_at
FROM {analytics}.alert_events FINAL
WHERE rule = 'sector_downturn';
