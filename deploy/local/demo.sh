#!/usr/bin/env bash
# pulih on this machine, from nothing to Jakarta's recovery with an alert:
#   services up → migrations → gateway and aggregator running →
#   the scenario's history (the baseline's weeks and the last 640 days)
#   backfilled through Kafka →
#   today so far replayed through the HTTP gateway with each producer's
#   token → a check that what was sent is what landed → recovery metrics
#   and the public release → the alert rule → the page (`pulih ui`) and
#   where else to look.
#
# The scenario is deploy/scenarios/jakarta.toml (docs/simulator.md) with a
# panel of $DEMO_MERCHANTS merchants (default 24 000, about 15 000 payments a
# day): enough for most kecamatan x main-sector cells to publish, where the
# scenario's own 3 000 leave most withheld. Its food sector in Jakarta
# Utara, lagging since the pandemic, turns down ten weeks before today, and
# its alert fires. So that the demo stays near ten minutes on 2 cores, the
# history is two stretches, not seven years: the baseline's weeks
# (2019-12-21 to 2020-01-31), and the last 640 days, which the alert rule
# reads (a year-on-year change, and 26 weeks of them for its significance
# test). The days between are missing, as if no producer had sent them:
# they are withheld in the public tables.
#
# Usage: deploy/local/demo.sh          run the demo (about 10 minutes on 2 cores)
#        deploy/local/demo.sh stop     stop the pulih processes it left running
#        DEMO_MERCHANTS=N deploy/local/demo.sh   with a panel of N merchants
#                                      (the backfill's time grows in proportion)
#
# Each run starts clean: it drops the database pulih_demo (and its
# _analytics and _public siblings) and writes to a new topic
# pulih.demo.<run>.v1, so that the check covers this run alone. The local
# broker keeps old demo topics (about 5 GB each):
# `deploy/local/services.sh reset` removes all local service data.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
DEMO="$ROOT/target/demo"
mkdir -p "$DEMO"

stop_all() {
    for f in "$DEMO"/*.pid; do
        [ -e "$f" ] || continue
        pid=$(cat "$f")
        kill "$pid" 2>/dev/null && echo "demo: stopped $(basename "$f" .pid) (pid $pid)" >&2 || true
        rm -f "$f"
    done
}
if [ "${1:-}" = stop ]; then
    stop_all
    exit 0
fi
[ $# -eq 0 ] || { echo "usage: $0 [stop]" >&2; exit 2; }

command -v cargo >/dev/null || { echo "demo: cargo not found: install Rust with rustup (https://rustup.rs) first" >&2; exit 1; }
. deploy/local/lib.sh
stop_all
services_and_release_build demo
CH=http://127.0.0.1:8123/
q() { curl -sS --fail-with-body "$CH" --data-binary "$1"; }

RUN=$(date -u +%Y%m%d%H%M%S)
DB=pulih_demo
# A development secret for this machine only; production reads it from config.
export PULIH_PSEUDONYMISATION__SECRET="${PULIH_PSEUDONYMISATION__SECRET:-local-demo-secret-not-for-production-0001}"
export PULIH_LOG="${PULIH_LOG:-warn}"
export PULIH_CONFIG="$DEMO/pulih.toml"
export PULIH_CLICKHOUSE__DATABASE=$DB
export PULIH_KAFKA__TOPIC="pulih.demo.$RUN.v1"
export PULIH_KAFKA__DLQ_TOPIC="pulih.demo.$RUN.dead-letter.v1"
export PULIH_AGGREGATE__GROUP_ID="pulih-demo-$RUN"
export PULIH_ALERTS__TOPIC="pulih.demo.alerts.v1"

# One token per producer of the scenario: the gateway's config holds their
# SHA-256, the simulator's the tokens (this file stays under target/).
{
    echo "# Written by deploy/local/demo.sh for run $RUN."
    for p in qris_acquirer ewallet bank; do
        out=$($PULIH token new "$p")
        token=$(sed -n 2p <<<"$out")
        digest=$(sed -n 's/^token_sha256 = "\(.*\)"$/\1/p' <<<"$out")
        printf '[ingest.producers.%s]\ntoken_sha256 = "%s"\n' "$p" "$digest"
        printf '[simulate.tokens]\n%s = "%s"\n' "$p" "$token" >>"$DEMO/tokens.toml.part"
    done
} >"$DEMO/pulih.toml"
# TOML allows one [simulate.tokens] table: merge the parts.
echo "[simulate.tokens]" >>"$DEMO/pulih.toml"
grep -v '^\[simulate.tokens\]' "$DEMO/tokens.toml.part" >>"$DEMO/pulih.toml"
rm -f "$DEMO/tokens.toml.part"
chmod 600 "$DEMO/pulih.toml"

# The scenario with the demo's panel.
DEMO_MERCHANTS="${DEMO_MERCHANTS:-24000}"
SCENARIO="$DEMO/scenario.toml"
sed -e "s/^merchants = .*/merchants = $DEMO_MERCHANTS/" deploy/scenarios/jakarta.toml >"$SCENARIO"
grep -q "^merchants = $DEMO_MERCHANTS\$" "$SCENARIO" || { echo "demo: DEMO_MERCHANTS must be a whole number" >&2; exit 2; }

for d in $DB ${DB}_analytics ${DB}_public; do q "DROP DATABASE IF EXISTS $d"; done
$PULIH migrate >/dev/null
echo "demo: database $DB migrated; topic $PULIH_KAFKA__TOPIC" >&2

start() { # name, command...
    local name=$1; shift
    "$@" >"$DEMO/$name.log" 2>&1 &
    echo $! >"$DEMO/$name.pid"
}
for port in 8080 8091 9464 9465 9466; do
    if curl -s -o /dev/null "http://127.0.0.1:$port/"; then
        echo "demo: port $port is taken (an earlier pulih still running? \`deploy/local/demo.sh stop\`, or stop it)" >&2
        exit 1
    fi
done
start ingest "$PULIH" ingest
start aggregate "$PULIH" aggregate
for _ in $(seq 100); do curl -sf http://127.0.0.1:8080/readyz >/dev/null && break; sleep 0.2; done
if ! kill -0 "$(cat "$DEMO/ingest.pid")" 2>/dev/null || ! curl -sf http://127.0.0.1:8080/readyz >/dev/null; then
    echo "demo: the gateway did not start; see $DEMO/ingest.log" >&2
    exit 1
fi

# A live line: what the gateway accepted, what the aggregator read and has
# left to read, how far its watermark trails the clock, and active alerts.
metric() { # url, metric name (and label filter): the sum of its samples
    curl -sf "$1" 2>/dev/null | awk -v m="$2" 'index($0, m) == 1 { s += $NF } END { printf "%.0f", s }'
}
status_line() {
    local prev=0 prev_t now_t
    prev_t=$(date +%s.%N)
    while :; do
        sleep 2
        local accepted records lag wm delay rate
        accepted=$(metric http://127.0.0.1:8080/metrics 'pulih_ingest_records_total{outcome="accepted"')
        records=$(metric http://127.0.0.1:9464/metrics pulih_aggregate_records_total)
        lag=$(metric http://127.0.0.1:9464/metrics pulih_aggregate_consumer_lag_records)
        wm=$(metric http://127.0.0.1:9464/metrics 'pulih_aggregate_watermark_seconds ')
        now_t=$(date +%s.%N)
        rate=$(echo "(${records:-0} - $prev) / ($now_t - $prev_t)" | bc)
        prev=${records:-0}; prev_t=$now_t
        delay="-"
        [ -n "$wm" ] && [ "$wm" != 0 ] && delay=$(( $(date +%s) - wm ))
        printf '\rdemo: gateway accepted %s | aggregated %s records (%s/s), lag %s | watermark %s s behind the clock   ' \
            "${accepted:-0}" "${records:-0}" "$rate" "${lag:-?}" "$delay" >&2
    done
}
status_line &
STATUS=$!
trap 'kill $STATUS 2>/dev/null || true' EXIT

yesterday=$(date -d "$(TZ=Asia/Jakarta date +%F) - 1 day" +%F)
today=$(TZ=Asia/Jakarta date +%F)
recent=$(date -d "$today - 640 days" +%F)
t0=$(date +%s)
echo "demo: backfilling the baseline's weeks, 2019-12-21 to 2020-01-31, and $recent to $yesterday, through Kafka (pulih produce's path), $DEMO_MERCHANTS merchants" >&2
base=$($PULIH simulate --scenario "$SCENARIO" --from 2019-12-21 --to 2020-01-31 | tail -n 1)
echo >&2; echo "demo: $base" >&2
hist=$($PULIH simulate --scenario "$SCENARIO" --from "$recent" --to "$yesterday" | tail -n 1)
echo >&2; echo "demo: $hist" >&2
echo "demo: replaying today ($today) so far through the HTTP gateway, 1 200 times real time" >&2
live=$($PULIH simulate --scenario "$SCENARIO" --from "$today" --output gateway --speed 1200 | tail -n 1)
echo >&2; echo "demo: $live" >&2
field() { sed -n "s/.* $1=\([0-9]*\).*/\1/p;s/^simulated $1=\([0-9]*\).*/\1/p" <<<"$2" | head -n 1; }
sent_events=$(( $(field events "$base") + $(field events "$hist") + $(field events "$live") ))
sent_amount=$(( $(field amount_idr "$base") + $(field amount_idr "$hist") + $(field amount_idr "$live") ))

echo "demo: waiting for the aggregator to count all $sent_events events" >&2
landed() { q "SELECT sum(txn_count), sum(amount_idr_sum) FROM $DB.activity_1m_by_producer FINAL FORMAT TSV"; }
for _ in $(seq 1800); do
    read -r landed_events landed_amount <<<"$(landed)"
    [ "${landed_events:-0}" -ge "$sent_events" ] && break
    sleep 1
done
sleep 3  # anything counted twice would show now
read -r landed_events landed_amount <<<"$(landed)"
kill $STATUS 2>/dev/null || true
echo >&2
if [ "$landed_events" = "$sent_events" ] && [ "$landed_amount" = "$sent_amount" ]; then
    echo "demo: OK: sent $sent_events events (Rp $sent_amount); $landed_events events (Rp $landed_amount) landed in $DB.activity_1m_by_producer, in $(( $(date +%s) - t0 )) s"
else
    echo "demo: MISMATCH: sent $sent_events events (Rp $sent_amount), landed $landed_events (Rp $landed_amount)" >&2
    exit 1
fi

echo "demo: computing the recovery metrics and the public release (docs/data-model.md)" >&2
$PULIH rollup | tail -n 2
start rollup "$PULIH" rollup --every 300 --from "$yesterday"
echo "demo: evaluating the alert rules (docs/alerting.md) and sending to Alertmanager" >&2
$PULIH alerts --once
start alerts "$PULIH" alerts
# The page of what is published. This local ClickHouse has no public
# account (deploy/clickhouse/users.d/pulih-roles.xml is for deployments),
# so the page reads the public database as `default` here.
PULIH_UI__CLICKHOUSE_USER=default start ui "$PULIH" ui

echo
q "SELECT toString(vintage) AS vintage, toString(data_through) AS data_through
   FROM ${DB}_public.releases ORDER BY vintage DESC LIMIT 1 FORMAT PrettyCompactMonoBlock"
echo "Jakarta's recovery on the last published day, by sector (revenue index: 1.00 = January 2020):"
q "SELECT sector, amount_idr_index AS revenue_index, merchants_open_index, amount_idr_yoy_aligned AS revenue_yoy
   FROM ${DB}_public.recovery_daily
   WHERE level = 'sector' AND day = (SELECT max(data_through) FROM ${DB}_public.releases)
     AND sector IN ('C', 'G', 'I', 'R', 'S')
   ORDER BY sector FORMAT PrettyCompactMonoBlock"
echo "Kecamatan x sector cells with a revenue index on that day, of the 44 kecamatan (the main sectors: trade, food, manufacturing, other services):"
q "SELECT sector, countIf(amount_idr_index IS NOT NULL) AS with_index, countIf(withheld = 1) AS withheld
   FROM ${DB}_public.recovery_daily
   WHERE level = 'district_sector' AND day = (SELECT max(data_through) FROM ${DB}_public.releases)
     AND sector IN ('G', 'I', 'C', 'S')
   GROUP BY sector ORDER BY with_index DESC FORMAT PrettyCompactMonoBlock"
echo "Active alerts:"
q "SELECT alert_id, sev AS severity, toString(first_day) AS firing_since, summ AS summary
   FROM (SELECT alert_id, argMax(state, day) AS st, argMax(severity, day) AS sev,
                argMax(summary, day) AS summ, argMax(since, day) AS first_day
         FROM ${DB}_analytics.alert_events FINAL GROUP BY alert_id)
   WHERE st = 'firing' FORMAT PrettyCompactMonoBlock"
cat <<EOF

Where to look:
  The page: Jakarta's recovery by kecamatan and sector, the alerts:  http://127.0.0.1:8091/
  Alertmanager (the alert, routed to the analysts):  http://127.0.0.1:9093
  ClickHouse, the public view (what the public account reads):
    curl -sS http://127.0.0.1:8123/ --data-binary \\
      "SELECT day, amount_idr_index FROM ${DB}_public.recovery_daily WHERE level = 'kota_sector' AND kota_code = '31.72' AND sector = 'I' AND day >= today() - 120 ORDER BY day"
  The analysts' table: ${DB}_analytics.recovery_daily (docs/data-model.md has a cookbook)
  Logs of the running services: $DEMO/*.log
  Metrics: gateway http://127.0.0.1:8080/metrics, aggregator :9464, rollup :9465, alerts :9466
  Stop the pulih processes: deploy/local/demo.sh stop   (services: deploy/local/services.sh down)
EOF
