#!/usr/bin/env bash
# Load benchmark of the HTTP gateway with the real broker on this machine:
# wrk posts 1000-event NDJSON bodies to `pulih ingest` for DURATION seconds.
#
# Usage: deploy/local/bench-ingest.sh [CONNECTIONS] [DURATION_SECS]   (default 16 30)
#
# Installs wrk (Debian package) when missing. Prints wrk's report; accepted
# events/s = requests/s × 1000 (every body is valid, which the script checks
# with one request first). Logs in target/bench/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
CONNECTIONS="${1:-16}"
DURATION="${2:-30}"
OUT="$ROOT/target/bench"
mkdir -p "$OUT"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
command -v wrk >/dev/null || { as_root apt-get update -qq; as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
. deploy/local/lib.sh
services_and_release_build bench

stamp=$(date +%s)
export PULIH_KAFKA__TOPIC="pulih.bench-ingest.$stamp"
export PULIH_KAFKA__DLQ_TOPIC="pulih.bench-ingest.$stamp.dlq"
export PULIH_PSEUDONYMISATION__SECRET="${PULIH_PSEUDONYMISATION__SECRET:-local-bench-secret-not-for-production-0001}"
export PULIH_LOG="${PULIH_LOG:-warn}"
"$PULIH" token new bench >"$OUT/token.txt"
export PULIH_BENCH_TOKEN=$(sed -n 2p "$OUT/token.txt")
{
    printf '[ingest]\nlisten = "127.0.0.1:8088"\nrate_limit_per_sec = 0\n\n'
    sed -n '5,6p' "$OUT/token.txt"
} >"$OUT/ingest.toml"

# 1000 valid events, timestamped now.
python3 - "$OUT/body.ndjson" <<'PY'
import datetime, json, random, sys
random.seed(7)
now = datetime.datetime.now(datetime.timezone.utc)
districts = ["31.74.09", "31.71.01", "31.72.01", "31.73.05", "31.75.06", "31.01.02"]
sectors = ["G", "I", "C", "S", "H"]
channels = ["qris", "debit_card", "credit_card", "ewallet", "bank_transfer", "other"]
with open(sys.argv[1], "w") as f:
    for i in range(1000):
        t = (now - datetime.timedelta(seconds=random.randint(0, 600))).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        f.write(json.dumps({
            "event_id": f"bench-{i:06d}", "occurred_at": t,
            "merchant_id": f"merchant-{random.randint(0, 4999):05d}",
            "district_code": random.choice(districts), "sector": random.choice(sectors),
            "amount_idr": random.randint(1000, 500000), "channel": random.choice(channels),
            "merchant_size": "micro"}, separators=(",", ":")) + "\n")
PY
export PULIH_BENCH_BODY="$OUT/body.ndjson"
cat >"$OUT/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-ndjson"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("PULIH_BENCH_TOKEN")
local f = io.open(os.getenv("PULIH_BENCH_BODY"), "rb")
wrk.body = f:read("*a")
f:close()
LUA

"$PULIH" --config "$OUT/ingest.toml" ingest 2>"$OUT/ingest.log" &
GW=$!
trap 'kill -INT $GW 2>/dev/null || true; wait $GW 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -sf http://127.0.0.1:8088/readyz >/dev/null && break; sleep 0.2; done
check=$(curl -s http://127.0.0.1:8088/v1/events -H "Authorization: Bearer $PULIH_BENCH_TOKEN" \
    -H 'Content-Type: application/x-ndjson' --data-binary @"$PULIH_BENCH_BODY")
case "$check" in
    '{"accepted":1000,'*) ;;
    *) echo "bench: the body is not fully accepted: $check" >&2; exit 1 ;;
esac
echo "bench: wrk -t2 -c$CONNECTIONS -d${DURATION}s, 1000 events per request ($(wc -c <"$PULIH_BENCH_BODY") bytes), $(nproc) cores"
TANSU=$(service_pid tansu)
accepted() { metric 8088 'pulih_ingest_records_total{outcome="accepted",reason=""}'; }
read -r g0 b0 a0 <<<"$(cpu $GW) $(cpu $TANSU) $(accepted)"
wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --timeout 10s --latency -s "$OUT/post.lua" http://127.0.0.1:8088/v1/events | tee "$OUT/wrk.txt"
read -r g1 b1 a1 <<<"$(cpu $GW) $(cpu $TANSU) $(accepted)"
rps=$(awk '/^Requests\/sec/ { print $2 }' "$OUT/wrk.txt")
ticks=$(getconf CLK_TCK)
printf 'bench: %.0f accepted events/s\n' "$(echo "$rps * 1000" | bc -l)"
printf 'bench: %s events accepted; the gateway used %.2f CPU-s (%.0f accepted events per CPU-second of pulih ingest, %.2f CPU-s per million), the broker %.2f CPU-s\n' \
    "$((a1 - a0))" "$(echo "($g1 - $g0) / $ticks" | bc -l)" "$(echo "($a1 - $a0) * $ticks / ($g1 - $g0)" | bc -l)" \
    "$(echo "($g1 - $g0) / $ticks / ($a1 - $a0) * 1000000" | bc -l)" "$(echo "($b1 - $b0) / $ticks" | bc -l)"
curl -s http://127.0.0.1:8088/metrics | grep -E '^pulih_ingest_requests_total' || true
