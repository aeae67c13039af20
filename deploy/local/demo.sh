#!/usr/bin/env bash
# The main job, end to end, on this machine:
#   services up → migrations → simulator → Kafka → aggregator → ClickHouse
# then a table of what landed, checked against what the simulator sent, how
# far the published recovery metrics reach (complete days only), and the
# latest published day per level.
#
# Usage: deploy/local/demo.sh [RATE] [SECONDS]      (default 2000 events/s for 10 s)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
RATE="${1:-2000}"
SECONDS_TO_RUN="${2:-10}"

command -v cargo >/dev/null || { echo "demo: cargo not found: install Rust with rustup (https://rustup.rs) first" >&2; exit 1; }
. deploy/local/lib.sh
services_and_release_build demo

# A development secret for this machine only; production reads it from config.
export PULIH_PSEUDONYMISATION__SECRET="${PULIH_PSEUDONYMISATION__SECRET:-local-demo-secret-not-for-production-0001}"
export PULIH_LOG="${PULIH_LOG:-warn}"

$PULIH migrate
# Records already waiting in the topic (from an earlier run, or sent to the
# gateway) are aggregated first, so that the check below counts this run.
$PULIH aggregate --exit-at-end >/dev/null
before=$($PULIH report | sed -n 's/^total events=\([0-9]*\) amount_idr=\([0-9]*\)$/\1 \2/p')
read -r before_events before_amount <<<"$before"

echo "demo: simulating $RATE events/s for $SECONDS_TO_RUN s into pulih.payments.v1" >&2
sim=$($PULIH simulate --rate "$RATE" --duration "$SECONDS_TO_RUN" | tee /dev/stderr | tail -n 1)
sent_events=$(sed -n 's/.*events=\([0-9]*\).*/\1/p' <<<"$sim")
sent_amount=$(sed -n 's/.*amount_idr=\([0-9]*\).*/\1/p' <<<"$sim")

echo "demo: aggregating until the topic is read to its end" >&2
$PULIH aggregate --exit-at-end

echo
$PULIH report | tee "$ROOT/target/demo-report.txt"
after=$(sed -n 's/^total events=\([0-9]*\) amount_idr=\([0-9]*\)$/\1 \2/p' "$ROOT/target/demo-report.txt")
read -r after_events after_amount <<<"$after"
landed_events=$((after_events - before_events))
landed_amount=$((after_amount - before_amount))
echo
if [ "$landed_events" = "$sent_events" ] && [ "$landed_amount" = "$sent_amount" ]; then
    echo "demo: OK: this run sent $sent_events events (Rp $sent_amount) and $landed_events events (Rp $landed_amount) landed in pulih.activity_1m"
else
    echo "demo: MISMATCH: sent $sent_events events (Rp $sent_amount), landed $landed_events (Rp $landed_amount)" >&2
    exit 1
fi

echo "demo: rolling up the complete days into recovery metrics (docs/data-model.md)" >&2
$PULIH rollup --from "$(date -u -d '3 days ago' +%F)"
echo "demo: the public release (once a Jakarta day; complete days only, so today's events, in the report above, are published once the day has ended):" >&2
curl -sS 'http://127.0.0.1:8123/' --data-binary "
    SELECT toString(vintage) AS vintage, toString(data_through) AS data_through,
           toString(provisional_from) AS provisional_from
    FROM pulih_public.releases ORDER BY vintage DESC LIMIT 1 FORMAT PrettyCompactMonoBlock"
curl -sS 'http://127.0.0.1:8123/' --data-binary "
    SELECT day, level, count() AS cells, sum(withheld) AS cells_withheld
    FROM pulih_public.recovery_daily
    WHERE day = (SELECT argMax(data_through, vintage) FROM pulih_public.releases)
    GROUP BY day, level ORDER BY level FORMAT PrettyCompactMonoBlock"
