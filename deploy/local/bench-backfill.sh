#!/usr/bin/env bash
# Backfill benchmark: every producer's history file loaded at once, one
# `pulih produce` per file, into a new topic that one `pulih aggregate`
# counts. Each partition then holds the producers' days interleaved, so
# the records of a producer that is behind arrive after the partition's
# watermark passed their windows and are counted through the late path
# (docs/semantics.md, "Late events").
#
# Usage: deploy/local/bench-backfill.sh [SECONDS] [PARTITIONS] [DAYS]   (default 300 6 3)
#
# The files: PULIH_BENCH_EVENTS=DIR, one <producer>.ndjson per producer
# (e.g. target/bench/compare/events of deploy/local/bench-compare.sh);
# without it, `pulih simulate --output ndjson` writes DAYS days of the
# shipped scenario to target/bench/backfill/. Every 30 s the script prints
# the records counted and how (applied on time, late), the consumer lag and
# the rate; once the files are loaded and counted, or after SECONDS, the
# totals with the CPU time of the aggregator and of ClickHouse.
#
# Live traffic runs beside the load: `pulih simulate --rate` at
# PULIH_BENCH_LIVE_RATE events/s (default 110, Jakarta's average;
# docs/scaling.md) into the same topic, and `pulih probe` sends a marker a
# second and reports how long each took to be counted (the live path's
# freshness, p50/p90/p99/max) once the load is done. PULIH_BENCH_LIVE_RATE=0
# runs the load alone. PULIH_BENCH_PRODUCE_RATE=N loads each file at N
# events/s (`pulih produce --rate`), so that no backlog forms in front of
# the live events; without it each file goes as fast as the broker takes it.
# Each file is loaded as producer PULIH_BENCH_PRODUCER_PREFIX<name> (default
# prefix `joining_`): producers that join with their history while the
# others send live traffic, so each history runs on its own clock
# (docs/semantics.md, "A clock per producer"). PULIH_BENCH_PRODUCER_PREFIX=
# (empty) loads them under the live producers' own ids: histories behind
# those producers' live traffic, every record of them late.
# PULIH_BIN=path runs that binary; PULIH_BENCH_KEEP=1 keeps the database.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
SECONDS_TO_RUN="${1:-300}"
PARTITIONS="${2:-6}"
DAYS="${3:-3}"
OUT="$ROOT/target/bench/backfill"
mkdir -p "$OUT"

. deploy/local/lib.sh
services_and_release_build bench-backfill

EVENTS="${PULIH_BENCH_EVENTS:-}"
if [ -z "$EVENTS" ]; then
    EVENTS="$OUT/events"
    rm -rf "$EVENTS"
    mkdir -p "$EVENTS"
    "$PULIH" simulate --from "-${DAYS}d" --to -1d --output ndjson --dir "$EVENTS" >"$OUT/simulate.out"
fi
FILES=("$EVENTS"/*.ndjson)
[ -e "${FILES[0]}" ] || { echo "bench-backfill: no .ndjson file in $EVENTS" >&2; exit 1; }
total=$(cat "${FILES[@]}" | wc -l)

run_env backfill 9472 "$PARTITIONS"
CH_PID=$(service_pid clickhouse)
AGG="" PRODUCERS=() LIVE="" PROBE=""
cleanup() {
    # SIGTERM for the loads: a background job of a script ignores SIGINT,
    # and `pulih produce` does not ask for it back, so a paced load cut
    # short would go on sending.
    for p in "${PRODUCERS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in $LIVE $PROBE $AGG; do kill -INT "$p" 2>/dev/null || true; done
    for p in "${PRODUCERS[@]}" $LIVE $PROBE $AGG; do wait "$p" 2>/dev/null || true; done
    if [ -n "${PULIH_BENCH_KEEP:-}" ]; then echo "bench-backfill: kept database $DB"; else drop_databases "$DB"; fi
}
trap cleanup EXIT
outcome() { metric 9472 "pulih_aggregate_records_total{outcome=\"$1\"}"; }

"$PULIH" migrate >/dev/null
"$PULIH" aggregate >"$OUT/aggregate.out" 2>"$OUT/aggregate.log" &
AGG=$!
for _ in $(seq 100); do curl -sf http://127.0.0.1:9472/readyz >/dev/null && break; sleep 0.2; done
echo "bench-backfill: $total events in ${#FILES[@]} files from $EVENTS, loaded at once into a topic of $PARTITIONS partitions, database $DB"
ch_cpu0=$(cpu "$CH_PID") agg_cpu0=$(cpu "$AGG")
start=$(date +%s.%N)
LIVE_RATE="${PULIH_BENCH_LIVE_RATE:-110}"
PRODUCE_RATE="${PULIH_BENCH_PRODUCE_RATE:-}"
PREFIX="${PULIH_BENCH_PRODUCER_PREFIX-joining_}"
for f in "${FILES[@]}"; do
    p="$PREFIX$(basename "$f" .ndjson)"
    "$PULIH" produce --may-count-again ${PRODUCE_RATE:+--rate "$PRODUCE_RATE"} --producer "$p" --file "$f" >"$OUT/produce-$p.out" 2>"$OUT/produce-$p.log" &
    PRODUCERS+=($!)
done
if [ "$LIVE_RATE" != 0 ]; then
    "$PULIH" simulate --rate "$LIVE_RATE" --duration "$SECONDS_TO_RUN" >"$OUT/live.out" 2>"$OUT/live.log" &
    LIVE=$!
    "$PULIH" probe --count "$SECONDS_TO_RUN" --interval-ms 1000 >"$OUT/probe.out" 2>"$OUT/probe.log" &
    PROBE=$!
fi
counted() { echo $(($(outcome applied) + $(outcome late) + $(outcome duplicate) + $(outcome too_old))); }
loading() { local p; for p in "${PRODUCERS[@]}"; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }
# Every 30 s a line; every 2 s a look at whether all is loaded and
# counted, so that the wall time is not rounded up to the next line.
last=0 elapsed=0
while [ "$elapsed" -lt "$SECONDS_TO_RUN" ]; do
    sleep 2
    elapsed=$((elapsed + 2))
    if [ $((elapsed % 30)) = 0 ]; then
        now=$(counted)
        echo "bench-backfill: ${elapsed} s: counted $now (applied $(outcome applied), late $(outcome late), duplicate $(outcome duplicate)), lag $(metric 9472 pulih_aggregate_consumer_lag_records), $(((now - last) / 30)) records/s"
        last=$now
    fi
    if ! loading && [ "$(metric 9472 pulih_aggregate_consumer_lag_records)" = 0 ]; then break; fi
done
wall=$(echo "$(date +%s.%N) - $start" | bc -l)
now=$(counted)
ch_cpu=$(($(cpu "$CH_PID") - ch_cpu0)) agg_cpu=$(($(cpu "$AGG") - agg_cpu0))
probe="no live traffic"
if [ -n "$PROBE" ]; then
    # The probe reports when its markers are all sent: stop it there.
    kill -INT "$LIVE" "$PROBE" 2>/dev/null || true
    wait "$PROBE" 2>/dev/null || true
    probe=$(grep '^probe ' "$OUT/probe.out" || echo "none: see $OUT/probe.log")
    LIVE="" PROBE=""
fi
echo
echo "| what | value |"
echo "|---|---:|"
printf '| records counted | %s (%s lines in the files) |\n' "$now" "$total"
printf '| of which late (read back from ClickHouse) | %s |\n' "$(outcome late)"
printf '| wall seconds | %.0f |\n' "$wall"
printf '| records/s | %.0f |\n' "$(echo "$now / $wall" | bc -l)"
printf '| live traffic | %s events/s; freshness of a marker a second: %s |\n' "$LIVE_RATE" "$probe"
printf '| aggregator CPU-seconds per million records | %.2f |\n' "$(echo "$agg_cpu / $TICKS / ($now + 1) * 1000000" | bc -l)"
printf '| ClickHouse CPU-seconds per million records | %.2f |\n' "$(echo "$ch_cpu / $TICKS / ($now + 1) * 1000000" | bc -l)"
