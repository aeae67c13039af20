-- The Indonesian calendar, one row per Jakarta day (2019-2027 for the
-- shipped file): national holidays, cuti bersama, Ramadan, days from
-- Lebaran and Imlek, payday windows, month ends and the Jakarta
-- restriction in force. `pulih migrate` fills both copies from
-- schemas/reference/calendar.tsv (crates/pulih-event/src/holidays.rs),
-- again on every run with a higher version; read with FINAL. Join it to
-- recovery_daily on `day` to tell a holiday from a downturn
-- (docs/data-model.md, "Calendar"). It is public information, so the
-- public database has it too.
CREATE TABLE IF NOT EXISTS {analytics}.calendar
(
    day           Date,
    holiday       String,
    cuti_bersama  UInt8,
    ramadan       UInt8,
    lebaran_day   Nullable(Int16),
    imlek_day     Nullable(Int16),
    payday        UInt8,
    month_end     UInt8,
    restriction   String,
    version       UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY day;

CREATE TABLE IF NOT EXISTS {public}.calendar
(
    day           Date,
    holiday       String,
    cuti_bersama  UInt8,
    ramadan       UInt8,
    lebaran_day   Nullable(Int16),
    imlek_day     Nullable(Int16),
    payday        UInt8,
    month_end     UInt8,
    restriction   String,
    version       UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY day;
