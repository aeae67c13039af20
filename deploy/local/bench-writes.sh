#!/usr/bin/env bash
# What the aggregator makes ClickHouse do: `pulih simulate --rate RATE`
# sends to Kafka for SECONDS while one `pulih aggregate` counts into a new
# database. Every minute it prints, per table, the active parts and the
# parts created (inserts: the sum over partitions of the highest block
# number), and at the end ClickHouse's own counters over the run (rows and
# bytes inserted, bytes written by inserts, rows and bytes merged), rows
# and bytes on disk per table, and whether any insert was refused
# (TOO_MANY_PARTS or anything else: the aggregator's store_errors_total),
# with the CPU time of ClickHouse and of the aggregator over the run.
#
# Usage: deploy/local/bench-writes.sh [RATE] [SECONDS] [PARTITIONS]
#        (default 30000 600 6)
# PULIH_BENCH_MERCHANTS=N runs the shipped scenario with N merchants
# instead of its 3 000 (the windows' merchant sets grow with it).
# PULIH_BIN=path runs that binary instead of building one.
#
# ClickHouse's counters are server-wide: run it on a server nothing else
# writes to. With the broker's memory storage (PULIH_KAFKA_STORAGE=memory)
# every record stays in the broker's memory, about 600 bytes each.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
RATE="${1:-30000}"
SECONDS_TO_RUN="${2:-600}"
PARTITIONS="${3:-6}"
OUT="$ROOT/target/bench"
mkdir -p "$OUT"

. deploy/local/lib.sh
services_and_release_build bench-writes

run_env writes 9471 "$PARTITIONS"
CH=http://127.0.0.1:8123/

q() { curl -sf "$CH" --data-binary "$1"; }
AGG="" SIM=""
cleanup() {
    for p in $SIM $AGG; do kill -INT "$p" 2>/dev/null || true; done
    for p in $SIM $AGG; do wait "$p" 2>/dev/null || true; done
    drop_databases "$DB"
}
trap cleanup EXIT

counters() {
    q "SELECT event, value FROM system.events WHERE event IN ('InsertedRows', 'InsertedBytes',
        'MergeTreeDataWriterCompressedBytes', 'MergedRows', 'MergedUncompressedBytes') ORDER BY event FORMAT TSV"
}
parts() { # table → active parts, parts created so far
    q "SELECT table, sum(active), sum(blocks) FROM (
         SELECT table, partition, toUInt64(sum(active)) AS active, max(max_block_number) AS blocks
         FROM system.parts WHERE database = '$DB' GROUP BY table, partition)
       GROUP BY table HAVING sum(blocks) > 0 ORDER BY table FORMAT TSV"
}
CH_PID=$(service_pid clickhouse)

"$PULIH" migrate >/dev/null
counters >"$OUT/writes-counters-0.tsv"
"$PULIH" aggregate >"$OUT/writes-aggregate.out" 2>"$OUT/writes-aggregate.log" &
AGG=$!
for _ in $(seq 100); do curl -sf http://127.0.0.1:9471/readyz >/dev/null && break; sleep 0.2; done
echo "bench-writes: $RATE events/s for $SECONDS_TO_RUN s to a topic of $PARTITIONS partitions, database $DB"
SCENARIO=()
if [ -n "${PULIH_BENCH_MERCHANTS:-}" ]; then
    sed "s/^merchants = .*/merchants = $PULIH_BENCH_MERCHANTS/" deploy/scenarios/jakarta.toml >"$OUT/writes-scenario.toml"
    SCENARIO=(--scenario "$OUT/writes-scenario.toml")
    echo "bench-writes: the shipped scenario with $PULIH_BENCH_MERCHANTS merchants"
fi
"$PULIH" simulate "${SCENARIO[@]}" --rate "$RATE" --duration "$SECONDS_TO_RUN" >"$OUT/writes-simulate.out" 2>"$OUT/writes-simulate.log" &
SIM=$!
ch_cpu0=$(cpu "$CH_PID") agg_cpu0=$(cpu "$AGG")
declare -A before
minute=0
while kill -0 "$SIM" 2>/dev/null; do
    sleep 60
    minute=$((minute + 1))
    line="minute $minute: lag $(metric 9471 pulih_aggregate_consumer_lag_records), store errors $(metric 9471 pulih_aggregate_store_errors_total);"
    while IFS=$'\t' read -r table active blocks; do
        line+=" $table ${active} active/+$((blocks - ${before[$table]:-0}))"
        before[$table]=$blocks
    done < <(parts)
    echo "bench-writes: $line"
done
wait "$SIM" || true
SIM=""
cat "$OUT/writes-simulate.out"
sent=$(sed -n 's/.*events=\([0-9]*\).*/\1/p' "$OUT/writes-simulate.out")
for _ in $(seq 600); do
    [ "$(metric 9471 'pulih_aggregate_records_total{outcome="applied"}')" -ge "$sent" ] && break
    sleep 0.5
done
sleep 2
counters >"$OUT/writes-counters-1.tsv"
ch_cpu=$(($(cpu "$CH_PID") - ch_cpu0)) agg_cpu=$(($(cpu "$AGG") - agg_cpu0))
errors=$(metric 9471 pulih_aggregate_store_errors_total)
echo
echo "| ClickHouse, over the run | total | per million events |"
echo "|---|---:|---:|"
LC_ALL=C join "$OUT/writes-counters-0.tsv" "$OUT/writes-counters-1.tsv" -t $'\t' | while IFS=$'\t' read -r name v0 v1; do
    printf '| %s | %s | %.0f |\n' "$name" "$((v1 - v0))" "$(echo "($v1 - $v0) / $sent * 1000000" | bc -l)"
done
printf '| ClickHouse CPU-seconds | %.1f | %.2f |\n' "$(echo "$ch_cpu / $TICKS" | bc -l)" "$(echo "$ch_cpu / $TICKS / $sent * 1000000" | bc -l)"
printf '| aggregator CPU-seconds | %.1f | %.2f |\n' "$(echo "$agg_cpu / $TICKS" | bc -l)" "$(echo "$agg_cpu / $TICKS / $sent * 1000000" | bc -l)"
echo
echo "| table | rows on disk | bytes on disk | parts created | parts created per minute | active parts at the end |"
echo "|---|---:|---:|---:|---:|---:|"
q "SELECT p.table, rows, bytes, blocks, active FROM (
     SELECT table, sum(rows) AS rows, sum(bytes_on_disk) AS bytes FROM system.parts
     WHERE database = '$DB' AND active GROUP BY table) AS s
   ANY INNER JOIN (
     SELECT table, sum(blocks) AS blocks, sum(active) AS active FROM (
       SELECT table, partition, max(max_block_number) AS blocks, toUInt64(sum(active)) AS active
       FROM system.parts WHERE database = '$DB' GROUP BY table, partition) GROUP BY table) AS p USING table
   WHERE rows > 0 ORDER BY bytes DESC FORMAT TSV" |
    while IFS=$'\t' read -r table rows bytes blocks active; do
        printf '| %s | %s | %s | %s | %.0f | %s |\n' "$table" "$rows" "$bytes" "$blocks" "$(echo "$blocks * 60 / $SECONDS_TO_RUN" | bc -l)" "$active"
    done
echo
if [ "$errors" = 0 ] && ! grep -q TOO_MANY_PARTS "$OUT/writes-aggregate.log"; then
    echo "bench-writes: no insert was refused (store_errors_total 0, no TOO_MANY_PARTS in the log)"
else
    echo "bench-writes: $errors failed ClickHouse calls; $(grep -c TOO_MANY_PARTS "$OUT/writes-aggregate.log" || true) TOO_MANY_PARTS lines in $OUT/writes-aggregate.log"
fi
