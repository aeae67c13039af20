#!/usr/bin/env bash
# End-to-end benchmark on this machine, with the broker and ClickHouse
# running: simulator → Kafka → pulih aggregate → ClickHouse.
#
# Usage: deploy/local/bench-e2e.sh [RATE] [SECONDS] [PROBE_RATE]
#        (defaults: 50000 events/s for 60 s; freshness at 20000 events/s)
#
# Phase 1 sends RATE events/s for SECONDS and prints the aggregator's
# consumer lag every 5 s, then how long it takes to drain. Phase 2 sends
# PROBE_RATE events/s for 60 s and measures freshness (marker accepted →
# visible in activity_1m_by_producer FINAL) with `pulih probe`. Phase 3 fills a new
# topic with RATE × SECONDS events first and then times one
# `pulih aggregate --exit-at-end` over it: the aggregator's own sustained
# rate with the broker and ClickHouse on the same machine. Everything goes
# to its own topics and the database pulih_bench, which each run starts
# empty and drops at the end (PULIH_BENCH_KEEP=1 keeps it); logs in
# target/bench/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
RATE="${1:-50000}"
SECONDS_TO_RUN="${2:-60}"
PROBE_RATE="${3:-20000}"
OUT="$ROOT/target/bench"
mkdir -p "$OUT"

. deploy/local/lib.sh
services_and_release_build bench
drop_databases pulih_bench

stamp=$(date +%s)
export PULIH_KAFKA__TOPIC="pulih.bench.$stamp"
export PULIH_KAFKA__DLQ_TOPIC="pulih.bench.$stamp.dlq"
export PULIH_CLICKHOUSE__DATABASE=pulih_bench
export PULIH_AGGREGATE__GROUP_ID="pulih-bench-$stamp"
export PULIH_AGGREGATE__METRICS_ADDR=127.0.0.1:9465
export PULIH_PSEUDONYMISATION__SECRET="${PULIH_PSEUDONYMISATION__SECRET:-local-bench-secret-not-for-production-0001}"
export PULIH_LOG="${PULIH_LOG:-warn}"

applied() { metric 9465 'pulih_aggregate_records_total{outcome="applied"}'; }

$PULIH migrate >/dev/null
$PULIH aggregate >"$OUT/aggregate.out" 2>"$OUT/aggregate.log" &
AGG=$!
trap 'kill -INT $AGG 2>/dev/null || true; wait $AGG 2>/dev/null || true' EXIT
sleep 3

echo "bench: phase 1: $RATE events/s for $SECONDS_TO_RUN s (topic $PULIH_KAFKA__TOPIC, $(nproc) cores)"
$PULIH simulate --rate "$RATE" --duration "$SECONDS_TO_RUN" >"$OUT/simulate.out" 2>"$OUT/simulate.log" &
SIM=$!
t0=$(date +%s.%N)
while kill -0 $SIM 2>/dev/null; do
    sleep 5
    printf 'bench: t=%5.1fs applied=%s consumer_lag=%s\n' "$(echo "$(date +%s.%N) - $t0" | bc)" "$(applied)" "$(metric 9465 pulih_aggregate_consumer_lag_records)"
done
wait $SIM
cat "$OUT/simulate.out"
sent=$(sed -n 's/.*events=\([0-9]*\).*/\1/p' "$OUT/simulate.out")
t1=$(date +%s.%N)
while [ "$(applied)" -lt "$sent" ]; do
    sleep 0.5
    if [ "$(echo "$(date +%s.%N) - $t1 > 600" | bc)" = 1 ]; then
        echo "bench: the aggregator did not catch up within 600 s" >&2
        exit 1
    fi
done
drain=$(echo "$(date +%s.%N) - $t1" | bc)
total=$(echo "$(date +%s.%N) - $t0" | bc)
printf 'bench: all %s events applied %.1f s after the simulator finished; %.0f events/s end to end\n' "$sent" "$drain" "$(echo "$sent / $total" | bc -l)"

echo "bench: phase 2: freshness at $PROBE_RATE events/s"
$PULIH simulate --rate "$PROBE_RATE" --duration 60 >"$OUT/simulate2.out" 2>"$OUT/simulate2.log" &
SIM=$!
sleep 5
$PULIH probe --count 100 --interval-ms 400
printf 'bench: consumer_lag=%s at the end of the probe\n' "$(metric 9465 pulih_aggregate_consumer_lag_records)"
wait $SIM
cat "$OUT/simulate2.out"
kill -INT $AGG 2>/dev/null || true
wait $AGG 2>/dev/null || true
trap - EXIT

echo "bench: phase 3: fill a new topic with $((RATE * SECONDS_TO_RUN)) events, then aggregate it"
export PULIH_KAFKA__TOPIC="pulih.bench.$stamp.catchup"
export PULIH_AGGREGATE__GROUP_ID="pulih-bench-$stamp-catchup"
$PULIH simulate --rate "$RATE" --duration "$SECONDS_TO_RUN" 2>"$OUT/simulate3.log" | tee "$OUT/simulate3.out"
t0=$(date +%s.%N)
$PULIH aggregate --exit-at-end 2>"$OUT/aggregate3.log" | tee "$OUT/aggregate3.out"
secs=$(echo "$(date +%s.%N) - $t0" | bc)
n=$(sed -n 's/.*records=\([0-9]*\).*/\1/p' "$OUT/aggregate3.out")
printf 'bench: aggregated %s records in %.1f s: %.0f records/s (process start, restore and final flush included)\n' "$n" "$secs" "$(echo "$n / $secs" | bc -l)"
# One row per window and flush: bytes per fingerprint, not per row.
fps=$(curl -s --data-binary "SELECT sum(length(fingerprints)) FROM pulih_bench.aggregator_counted_by_producer FORMAT TSV" http://127.0.0.1:8123/)
seen=$(curl -s --data-binary "SELECT sum(rows), sum(bytes_on_disk), sum(data_uncompressed_bytes) FROM system.parts WHERE database = 'pulih_bench' AND table = 'aggregator_counted_by_producer' AND active FORMAT TSV" http://127.0.0.1:8123/)
read -r seen_rows seen_bytes seen_raw <<<"$seen"
printf 'bench: aggregator_counted_by_producer in pulih_bench: %s fingerprints in %s rows, %s bytes on disk (%.1f per fingerprint; %.1f uncompressed)\n' \
    "$fps" "$seen_rows" "$seen_bytes" "$(echo "$seen_bytes / $fps" | bc -l)" "$(echo "$seen_raw / $fps" | bc -l)"
if [ -n "${PULIH_BENCH_KEEP:-}" ]; then echo "bench: kept database pulih_bench"; else drop_databases pulih_bench; fi
