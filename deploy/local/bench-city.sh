#!/usr/bin/env bash
# The city-scale benchmark: Jakarta's volume through Kafka into
# `pulih aggregate`, a SIGKILL at evening and a restart with the same
# identity, the rollup and the alerts over what it counted, and what
# ClickHouse holds per event (docs/benchmarks.md, "At Jakarta's volume").
#
# Usage: deploy/local/bench-city.sh [MERCHANTS] [HOUR] [PARTITIONS] [DAYS] [STORED]
#        (defaults: 5400000 merchants, evening at 20:00, 6 partitions,
#        1 day before the evening's sent, 7 more stored)
#
# The scenario is deploy/scenarios/jakarta.toml with MERCHANTS merchants
# trading (Jakarta has about 5.4 million QRIS merchants, docs/scaling.md)
# and transactions per trading day raised so that a day has about
# 9.7 million payments at 5.4 million merchants. The run sends the DAYS
# Jakarta days before the last evening that has passed, and that day up to
# HOUR:00, with `pulih simulate --output kafka` as fast as it can, while one
# aggregator counts them. Then it
#   1. waits until the aggregator has counted everything, and reads its
#      peak RSS and the merchant-days and windows it holds;
#   2. a minute later (the open merchant-days written once more, as at an
#      evening of live traffic), kills it with SIGKILL and starts it again
#      with the same group, database and instance, and times the restore
#      (until it consumes its partitions again, and until it has caught up
#      with the log); the restore's queries are read back from
#      system.query_log (rows read, peak memory);
#   3. merges the tables (OPTIMIZE ... FINAL) and prints each table's
#      rows and bytes on disk, per event sent; then stores the days
#      before the evening's again as each of the STORED days before it
#      (straight in ClickHouse: a week of payments does not fit in the
#      broker's memory here) and times the same restart again;
#   4. times `pulih rollup` and `pulih alerts --once` over the database
#      (with the stored days, when any).
# While the payments are counted, `pulih rollup --every 60` runs beside
# the aggregator and `pulih alerts --once` every minute, as in a
# deployment; their rounds and CPU are printed with the counting's.
# CPU-seconds per million events are printed for the simulator, the
# aggregator, ClickHouse and the broker. The broker is restarted with
# memory storage (PULIH_KAFKA_STORAGE=memory) when it runs on SQLite: the
# SQLite storage of Tansu 0.6.0 is single-threaded and would be what is
# measured. Everything goes to its own topics and database, dropped at
# the end (PULIH_BENCH_KEEP=1 keeps the database); logs in target/bench/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
MERCHANTS="${1:-5400000}"
HOUR="${2:-20}"
PARTITIONS="${3:-6}"
DAYS="${4:-1}"
STORED="${5:-7}"
OUT="$ROOT/target/bench/city"
CH=http://127.0.0.1:8123/
PORT=9467
mkdir -p "$OUT"
rm -f "$OUT"/alerts-live.* "$OUT"/rollup-live.*

. deploy/local/lib.sh
q() { curl -sS --fail-with-body "$CH" --data-binary "$1"; }
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }
per_million() { echo "scale=2; $1 / $TICKS * 1000000 / $2" | bc; } # ticks events

# The broker on memory storage, started empty: it keeps what earlier
# runs sent in memory, 0.6-0.9 GB per million records here.
if running_tansu=$(service_pid tansu 2>/dev/null) && kill -0 "$running_tansu" 2>/dev/null; then
    echo "bench-city: restarting the broker, empty, with memory storage" >&2
    kill "$running_tansu"
    while kill -0 "$running_tansu" 2>/dev/null; do sleep 0.2; done
fi
export PULIH_KAFKA_STORAGE=memory
services_and_release_build bench-city

run_env city $PORT "$PARTITIONS"
trap 'kill -9 ${AGG:-} 2>/dev/null || true; [ -n "${PULIH_BENCH_KEEP:-}" ] || drop_databases "$DB"' EXIT
$PULIH migrate >/dev/null

# The scenario at the city's scale.
scenario="$OUT/scenario.toml"
sed -e "s/^merchants = .*/merchants = $MERCHANTS/" \
    -e 's/^transactions_micro = .*/transactions_micro = 1.3/' \
    -e 's/^transactions_small = .*/transactions_small = 2.5/' \
    -e 's/^transactions_medium = .*/transactions_medium = 5.0/' \
    deploy/scenarios/jakarta.toml >"$scenario"
# The last evening that has passed in Jakarta, and the day before it.
jakarta_hour=$(TZ=Asia/Jakarta date +%-H)
if [ "$jakarta_hour" -ge "$HOUR" ]; then back=0; else back=1; fi
evening_day=$(TZ=Asia/Jakarta date -d "$back days ago" +%F)
as_of=$(date -u -d "$evening_day $HOUR:00 +0700" +%Y-%m-%dT%H:%M:%S.000Z)
# A date, not "-Nd": the simulator counts relative days on UTC dates.
from=$(date -d "$evening_day - $DAYS days" +%F)

start_aggregator() { # log
    $PULIH aggregate >>"$OUT/$1.out" 2>"$OUT/$1.log" &
    AGG=$!
}
# Kills the aggregator with SIGKILL, starts it again with the same
# identity, and times its restore; the restore's queries from
# system.query_log.
killed_and_restarted() { # log
    kill -9 $AGG
    wait $AGG 2>/dev/null || true
    t1=$(now)
    start_aggregator "$1"
    owned=0
    until [ "$owned" -ge "$PARTITIONS" ] && [ "$owned" -gt 0 ]; do
        sleep 0.2
        owned=$(metric $PORT pulih_aggregate_assigned_partitions || true)
        if [ "$(echo "$(since "$t1") > 600" | bc)" = 1 ]; then echo "bench-city: no restore after 600 s" >&2; break; fi
    done
    printf 'consuming again %.1f s after the start\n' "$(since "$t1")"
    until [ "$(metric $PORT pulih_aggregate_consumer_lag_records || true)" = 0 ]; do sleep 0.2; done
    printf 'caught up again (lag 0) %.1f s after the start; replayed %s records\n' "$(since "$t1")" \
        "$(metric $PORT 'pulih_aggregate_records_total{outcome="replayed"}' || true)"
    # The query log is written every 7.5 s.
    for _ in $(seq 30); do
        [ "$(q "SELECT count() FROM system.query_log WHERE type = 2 AND query LIKE '%pulih restore%' AND event_time >= toDateTime(${t1%.*})" 2>/dev/null || echo 0)" -ge 3 ] && break
        sleep 1
    done
    echo "restore queries (system.query_log):"
    q "SELECT round(query_duration_ms / 1000, 2) AS s, read_rows, formatReadableSize(memory_usage) AS memory,
              result_rows, substring(query, position(query, '*/') + 3, 60) AS restore_query
       FROM system.query_log
       WHERE type = 2 AND query LIKE '%pulih restore%' AND event_time >= toDateTime(${t1%.*})
       ORDER BY event_time FORMAT PrettyCompactNoEscapes" 2>/dev/null || echo "  (no system.query_log on this server)"
    kill -INT $AGG
    wait $AGG 2>/dev/null || true
    AGG=
}

# Stores the day before the evening's again as each of the STORED days
# before it, in the windows, what was counted and the merchant-days: the
# week a deployment holds behind its evening, without sending it through
# the broker (a week of Jakarta's payments does not fit in its memory
# here).
store_days_before() { # stored
    local prev lo k t col names exprs
    prev=$(date -d "$evening_day - 1 day" +%F)
    lo=$(date -u -d "$prev 00:00 +0700" +%s)
    for k in $(seq 1 "$1"); do
        for t in activity_1m_by_producer aggregator_counted_by_producer merchant_activity_daily_by_time; do
            names=$(q "SELECT name FROM system.columns WHERE database = '$DB' AND table = '$t' FORMAT TSV" | paste -sd, -)
            exprs=""
            for col in ${names//,/ }; do
                case $col in
                window_start) col="window_start - $((k * 86400))" ;;
                day) col="day - $k" ;;
                esac
                exprs+="${exprs:+, }$col"
            done
            if [ "$t" = merchant_activity_daily_by_time ]; then
                where="day = toDate('$prev')"
            else
                where="window_start >= toDateTime($lo) AND window_start < toDateTime($((lo + 86400)))"
            fi
            q "INSERT INTO $DB.$t ($names) SELECT $exprs FROM $DB.$t WHERE $where"
        done
    done
}

start_aggregator aggregate
# The rollup and the alerts, as deployed, during the load.
$PULIH rollup --every 60 >"$OUT/rollup-live.out" 2>"$OUT/rollup-live.log" &
ROLLUP=$!
(
    while sleep 60; do
        echo round >>"$OUT/alerts-live.rounds"
        $PULIH alerts --once >>"$OUT/alerts-live.out" 2>>"$OUT/alerts-live.log" || echo failed >>"$OUT/alerts-live.rounds"
    done
) &
ALERTS=$!
trap 'kill -9 ${AGG:-} ${ROLLUP:-} 2>/dev/null || true; kill ${ALERTS:-} 2>/dev/null || true; [ -n "${PULIH_BENCH_KEEP:-}" ] || drop_databases "$DB"' EXIT
ch_pid=$(service_pid clickhouse)
kafka_pid=$(service_pid tansu)
ch0=$(cpu "$ch_pid")
kafka0=$(cpu "$kafka_pid")

echo "bench-city: $MERCHANTS merchants, $PARTITIONS partitions, from $from to $as_of ($(nproc) cores)"
t0=$(now)
# The simulator's CPU time: the subshell's `times` after it (children's
# user and system time, second line).
(
    $PULIH simulate --scenario "$scenario" --from "$from" --to "$evening_day" --as-of "$as_of" \
        --output kafka >"$OUT/simulate.out" 2>"$OUT/simulate.log"
    times >"$OUT/simulate.times"
) &
SIM=$!
tick=0
while kill -0 $SIM 2>/dev/null; do
    sleep 1
    tick=$((tick + 1))
    [ $((tick % 30)) = 0 ] || continue
    printf 'bench-city: t=%6.0fs counted=%s lag=%s rss=%s MB\n' "$(since "$t0")" \
        "$(metric $PORT 'pulih_aggregate_records_total{outcome="applied"}' || true)" \
        "$(metric $PORT pulih_aggregate_consumer_lag_records || true)" \
        "$(awk '/VmRSS/ { print int($2 / 1024) }' /proc/$AGG/status)"
done
wait $SIM
sent_s=$(since "$t0")
# "0m1.520s 0m0.200s" in ticks.
sim_cpu=$(sed -n 2p "$OUT/simulate.times" | awk -v t="$TICKS" '{
    n = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); n += a[1] * 60 + a[2] } print int(n * t) }')
cat "$OUT/simulate.out"
sent=$(sed -n 's/^simulated events=\([0-9]*\) .*/\1/p' "$OUT/simulate.out")
records=$((sent + $(sed -n 's/^simulated .* duplicates=\([0-9]*\) .*/\1/p' "$OUT/simulate.out")))
# Counted: every record decided (applied, late or duplicate).
decided() {
    local n=0 o
    for o in applied late duplicate; do
        n=$((n + $(metric $PORT "pulih_aggregate_records_total{outcome=\"$o\"}")))
    done
    echo $n
}
tick=0
while [ "$(metric $PORT pulih_aggregate_consumer_lag_records)" -gt 0 ] || [ "$(decided)" -lt "$records" ]; do
    sleep 1
    tick=$((tick + 1))
    [ $((tick % 30)) = 0 ] || continue
    printf 'bench-city: t=%6.0fs decided=%s lag=%s\n' "$(since "$t0")" "$(decided)" "$(metric $PORT pulih_aggregate_consumer_lag_records)"
done
total_s=$(since "$t0")
sleep 3 # one emit interval and a flush
agg_cpu=$(cpu $AGG)
agg_hwm=$(awk '/VmHWM/ { print int($2 / 1024) }' /proc/$AGG/status)
days=$(metric $PORT pulih_aggregate_resident_merchant_days)
windows=$(metric $PORT pulih_aggregate_resident_windows)
dedup=$(metric $PORT pulih_aggregate_dedup_entries)
ch1=$(cpu "$ch_pid")
kafka1=$(cpu "$kafka_pid")
late=$(metric $PORT 'pulih_aggregate_records_total{outcome="late"}')
rollup_ok=$(metric 9465 'pulih_rollup_rounds_total{outcome="succeeded"}')
rollup_failed=$(metric 9465 'pulih_rollup_rounds_total{outcome="failed"}')
rollup_last=$(metric 9465 pulih_rollup_last_round_duration_seconds)
rollup_cpu=$(cpu $ROLLUP)
pkill -P $ALERTS 2>/dev/null || true
kill $ALERTS 2>/dev/null || true
wait $ALERTS 2>/dev/null || true
kill -INT $ROLLUP 2>/dev/null || true
wait $ROLLUP 2>/dev/null || true
ROLLUP=
alert_rounds=$(grep -c '^round' "$OUT/alerts-live.rounds" 2>/dev/null || true)
alert_failed=$(grep -c '^failed' "$OUT/alerts-live.rounds" 2>/dev/null || true)

echo
echo "## Counting ($sent payments sent)"
printf 'sent in %.0f s, all counted after %.0f s: %.0f events/s end to end\n' "$sent_s" "$total_s" "$(echo "$sent / $total_s" | bc -l)"
echo "late (read back): $late"
echo "CPU-seconds per million events: simulate $(per_million "$sim_cpu" "$sent"), aggregate $(per_million "$agg_cpu" "$sent"), ClickHouse $(per_million $((ch1 - ch0)) "$sent"), broker $(per_million $((kafka1 - kafka0)) "$sent")"
echo "aggregator at the evening: peak RSS $agg_hwm MB; resident merchant-days $days, windows $windows, remembered fingerprints $dedup"
echo "beside it: pulih rollup --every 60: $rollup_ok rounds succeeded, $rollup_failed failed, the last $rollup_last s, $(echo "scale=2; $rollup_cpu / $TICKS" | bc) CPU-s of its own in all; pulih alerts --once every minute: ${alert_rounds:-0} rounds, ${alert_failed:-0} failed"

echo
echo "## Restart after SIGKILL, same group, database and instance"
# As at an evening of live traffic: the open merchant-days were written
# once more (every daily_emit_interval_ms, 60 s by default), so the
# checkpoint is within a minute of the log's end.
sleep 62
killed_and_restarted restart

echo
echo "## What ClickHouse holds, merged (OPTIMIZE ... FINAL), per payment sent"
# The analysts' copy of the windows (a materialized view) is pulih's too.
for t in $(q "SELECT concat(database, '.\`', name, '\`') FROM system.tables
              WHERE database IN ('$DB', '${DB}_analytics') AND engine LIKE '%MergeTree' FORMAT TSV"); do
    q "OPTIMIZE TABLE $t FINAL" >/dev/null || true
done
q "SELECT concat(database, '.', table) AS table, sum(rows) AS rows, formatReadableSize(sum(bytes_on_disk)) AS on_disk,
          round(sum(bytes_on_disk) / $sent, 1) AS bytes_per_payment
   FROM system.parts WHERE database IN ('$DB', '${DB}_analytics') AND active
   GROUP BY database, table ORDER BY sum(bytes_on_disk) DESC FORMAT PrettyCompactNoEscapes"

if [ "$STORED" -gt 0 ]; then
    echo
    echo "## The same restart with the $STORED days before stored too"
    t1=$(now)
    store_days_before "$STORED"
    printf 'stored %s days more in %.0f s: %s merchant-days, %s windows in all\n' "$STORED" "$(since "$t1")" \
        "$(q "SELECT count() FROM $DB.merchant_activity_daily_by_time")" "$(q "SELECT count() FROM $DB.activity_1m_by_producer")"
    start_aggregator restart-stored
    until [ "$(metric $PORT pulih_aggregate_assigned_partitions || true)" -ge "$PARTITIONS" ]; do sleep 0.2; done
    sleep 5
    killed_and_restarted restart-stored
fi

echo
echo "## Rollup and alerts over the database"
t2=$(now)
ch2=$(cpu "$ch_pid")
$PULIH rollup >"$OUT/rollup.out" 2>"$OUT/rollup.log" || echo "bench-city: rollup failed, see $OUT/rollup.log"
printf 'pulih rollup: %.1f s, ClickHouse %s CPU-s\n' "$(since "$t2")" "$(echo "scale=1; ($(cpu "$ch_pid") - $ch2) / $TICKS" | bc)"
t3=$(now)
ch3=$(cpu "$ch_pid")
$PULIH alerts --once >"$OUT/alerts.out" 2>"$OUT/alerts.log" || echo "bench-city: alerts failed, see $OUT/alerts.log"
printf 'pulih alerts --once: %.1f s, ClickHouse %s CPU-s\n' "$(since "$t3")" "$(echo "scale=1; ($(cpu "$ch_pid") - $ch3) / $TICKS" | bc)"
