-- Sector-downturn alerts (`pulih alerts`, docs/alerting.md).
--
-- alert_events holds every state change (firing, resolved) the service
-- raised, once: the same change evaluated again is not written again. The
-- columns are for analysts; `event` is the `pulih.alerts.v1` record as sent
-- to Kafka (schemas/alert.v1.json), which the service re-sends to
-- Alertmanager while the alert is active.
CREATE TABLE IF NOT EXISTS {analytics}.alert_events
(
    alert_id             String,
    rule                 String,
    state                Enum8('firing' = 1, 'resolved' = 2),
    level                Enum8('district_sector' = 1, 'kota_sector' = 2, 'sector' = 3, 'city' = 4),
    kota_code            String,
    district_code        String,
    sector               String,
    severity             Enum8('warning' = 1, 'critical' = 2),
    day                  Date,
    since                Date,
    summary              String,
    revenue_yoy          Nullable(Float64),
    revenue_chg4w        Nullable(Float64),
    points_vs_city       Nullable(Float64),
    z                    Nullable(Float64),
    merchants_open_yoy   Nullable(Float64),
    weeks                UInt8,
    guarded              UInt8,
    raised_at            DateTime('UTC'),
    event                String
)
ENGINE = ReplacingMergeTree
ORDER BY (alert_id, day, state);

-- Each evaluation round: the last day it evaluated. The service goes on
-- from the day after the latest.
CREATE TABLE IF NOT EXISTS {analytics}.alert_runs
(
    evaluated_through  Date,
    evaluated_at       DateTime('UTC'),
    transitions        UInt32
)
ENGINE = ReplacingMergeTree
ORDER BY (evaluated_through, evaluated_at);
