#!/usr/bin/env bash
# What each component costs per event, for sizing (docs/scaling.md): the
# simulator posts RATE events/s through the HTTP gateway for SECONDS, to a
# new topic of PARTITIONS partitions, while one `pulih aggregate` counts
# them into a new database. Over the middle of the run (after 10 s of
# warm-up) it reads each process's CPU time from /proc/PID/stat and the
# events counted, and at its end the aggregator's memory and what was
# written to ClickHouse.
#
# Usage: deploy/local/bench-scale.sh [RATE] [SECONDS] [PARTITIONS] [MERCHANTS]
#        (default 10000 60 4, and the shipped scenario's 3000 merchants: a
#        larger panel shows what each merchant-day held in memory costs)
#
# Prints a Markdown table: CPU-seconds per million events of the gateway,
# the aggregator, the broker and ClickHouse (these carry to other machines;
# the rates here are bounded by the single-threaded local broker), the
# aggregator's resident memory, window and de-duplication state, rows
# written per table and ClickHouse's bytes on disk per million events.
# Logs in target/bench/; the topic stays (see deploy/local/test.sh), the
# database is dropped.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
RATE="${1:-10000}"
SECONDS_TO_RUN="${2:-60}"
PARTITIONS="${3:-4}"
MERCHANTS="${4:-}"
OUT="$ROOT/target/bench"
mkdir -p "$OUT"
[ "$SECONDS_TO_RUN" -ge 30 ] || { echo "bench-scale: run at least 30 s (10 s of warm-up, then the measure)" >&2; exit 2; }

. deploy/local/lib.sh
services_and_release_build bench-scale

run_env scale 9467 "$PARTITIONS"
CH=http://127.0.0.1:8123/

# The gateway, without a rate limit, and the simulator posting to it.
gateway_and_simulator_config "$OUT/scale.toml" 8089
export PULIH_CONFIG="$OUT/scale.toml"
scenario=()
if [ -n "$MERCHANTS" ]; then
    sed "s/^merchants = .*/merchants = $MERCHANTS/" deploy/scenarios/jakarta.toml >"$OUT/scale-scenario.toml"
    scenario=(--scenario "$OUT/scale-scenario.toml")
fi

INGEST="" AGG=""
cleanup() {
    for p in $AGG $INGEST; do kill -INT "$p" 2>/dev/null || true; done
    for p in $AGG $INGEST; do wait "$p" 2>/dev/null || true; done
    drop_databases "$DB"
}
trap cleanup EXIT

"$PULIH" migrate >"$OUT/scale-migrate.out"
"$PULIH" ingest 2>"$OUT/scale-ingest.log" &
INGEST=$!
"$PULIH" aggregate >"$OUT/scale-aggregate.out" 2>"$OUT/scale-aggregate.log" &
AGG=$!
for _ in $(seq 100); do
    curl -sf http://127.0.0.1:8089/readyz >/dev/null && curl -sf http://127.0.0.1:9467/readyz >/dev/null && break
    sleep 0.2
done
curl -sf http://127.0.0.1:8089/readyz >/dev/null || { echo "bench-scale: the gateway is not ready" >&2; exit 1; }

TANSU=$(service_pid tansu)
CLICKHOUSE=$(service_pid clickhouse)
accepted() { metric 8089 'pulih_ingest_records_total{outcome="accepted",reason=""}'; }
applied() { metric 9467 'pulih_aggregate_records_total{outcome="applied"}'; }

echo "bench-scale: $RATE events/s for $SECONDS_TO_RUN s through the gateway, topic of $PARTITIONS partitions, ${MERCHANTS:-3000} merchants ($(nproc) cores)"
"$PULIH" simulate "${scenario[@]}" --output gateway --rate "$RATE" --duration "$SECONDS_TO_RUN" >"$OUT/scale-simulate.out" 2>"$OUT/scale-simulate.log" &
SIM=$!
sleep 10
read -r c0_ingest c0_agg c0_tansu c0_ch c0_sim <<<"$(cpu $INGEST) $(cpu $AGG) $(cpu $TANSU) $(cpu $CLICKHOUSE) $(cpu $SIM)"
a0=$(accepted) n0=$(applied) t0=$(date +%s.%N)
sleep $((SECONDS_TO_RUN - 15))
read -r c1_ingest c1_agg c1_tansu c1_ch c1_sim <<<"$(cpu $INGEST) $(cpu $AGG) $(cpu $TANSU) $(cpu $CLICKHOUSE) $(cpu $SIM)"
a1=$(accepted) n1=$(applied) t1=$(date +%s.%N)
rss_kib=$(awk '/^VmRSS/ { print $2 }' "/proc/$AGG/status")
windows=$(metric 9467 pulih_aggregate_resident_windows)
merchant_days=$(metric 9467 pulih_aggregate_resident_merchant_days)
dedup=$(metric 9467 pulih_aggregate_dedup_entries)
lag=$(metric 9467 pulih_aggregate_consumer_lag_records)
wait $SIM
cat "$OUT/scale-simulate.out"
sent=$(accepted)
for _ in $(seq 600); do [ "$(applied)" -ge "$sent" ] && break; sleep 0.5; done
rss_peak_kib=$(awk '/^VmHWM/ { print $2 }' "/proc/$AGG/status")
kill -INT "$AGG"
wait "$AGG" || true
AGG=""
cat "$OUT/scale-aggregate.out"

secs=$(echo "$t1 - $t0" | bc -l)
per_million() { # ticks0 ticks1 events → CPU-seconds per million events
    echo "($2 - $1) / $TICKS / $3 * 1000000" | bc -l
}
ev_ingest=$((a1 - a0)) ev_agg=$((n1 - n0))
echo
echo "Measured over ${secs%.*} s: $ev_ingest events accepted by the gateway ($(printf %.0f "$(echo "$ev_ingest / $secs" | bc -l)")/s), $ev_agg counted by the aggregator; consumer lag at the end $lag."
echo
echo "| component | CPU-seconds per million events | cores at this rate |"
echo "|---|---:|---:|"
row() { printf '| %s | %.2f | %.2f |\n' "$1" "$(per_million "$2" "$3" "$4")" "$(echo "($3 - $2) / $TICKS / $secs" | bc -l)"; }
row "gateway (\`pulih ingest\`)" "$c0_ingest" "$c1_ingest" "$ev_ingest"
row "aggregator (\`pulih aggregate\`)" "$c0_agg" "$c1_agg" "$ev_agg"
row "broker (Tansu, SQLite)" "$c0_tansu" "$c1_tansu" "$ev_ingest"
row "ClickHouse 18.16" "$c0_ch" "$c1_ch" "$ev_agg"
row "simulator posting (client side)" "$c0_sim" "$c1_sim" "$ev_ingest"
echo
printf 'Aggregator memory: %.0f MiB resident during the run, %.0f MiB peak; %s windows, %s merchant-days and %s event fingerprints (%.0f s of events) held at the end of the measure.\n' \
    "$(echo "$rss_kib / 1024" | bc -l)" "$(echo "$rss_peak_kib / 1024" | bc -l)" "$windows" "$merchant_days" "$dedup" "$(echo "$dedup * $secs / $ev_agg" | bc -l)"
echo
echo "| ClickHouse table | rows | bytes on disk | bytes on disk per million events | active parts |"
echo "|---|---:|---:|---:|---:|"
curl -s "$CH" --data-binary "SELECT concat(database, '.', table), sum(rows), sum(bytes_on_disk), count() FROM system.parts
    WHERE active AND database IN ('$DB', '${DB}_analytics')
      AND table NOT IN ('calendar', 'districts', 'sectors', 'schema_migrations', 'aggregator_checkpoint', 'aggregator_watermark', 'aggregator_layout')
    GROUP BY database, table HAVING sum(rows) > 0 ORDER BY sum(bytes_on_disk) DESC FORMAT TSV" |
    while IFS=$'\t' read -r table rows bytes parts; do
        printf '| %s | %s | %s | %.0f | %s |\n' "${table/$DB/pulih}" "$rows" "$bytes" "$(echo "$bytes / $sent * 1000000" | bc -l)" "$parts"
    done
