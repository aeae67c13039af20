#!/usr/bin/env bash
# Benchmark of `pulih rollup` at city scale, with ClickHouse running.
#
# Usage: deploy/local/bench-rollup.sh [MERCHANTS_PER_DAY] [DAYS] [KECAMATAN]
#        (defaults: 30000 merchants active every day for 730 days, over
#        Jakarta's 44 kecamatan)
#
# Fills merchant_activity_daily_by_time of the database pulih_bench_rollup
# with MERCHANTS_PER_DAY merchants a day spread over the kecamatan and 21
# KBLI categories (each merchant in one cell, 1-4 transactions a day),
# ending yesterday, straight with SQL (the pipeline is benchmarked by
# bench-e2e.sh), with the first four weeks as the baseline. Then times a
# full rollup and an incremental one (the last
# metrics.refresh_days days, as `pulih rollup --every` does; each run makes
# the day's public release if none was made), and prints the rows and bytes
# of the result tables. Then the reads of what was published: each answer
# of `pulih ui` and all the Grafana dashboards' queries
# (deploy/grafana/check_dashboards.py), timed.
#
# KECAMATAN other than 44 runs on a synthetic district table of that many
# kecamatan, 14 to a kabupaten or kota (`reference.districts_file`):
# 7300 is about Indonesia's count, for the national cell count.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
MERCHANTS="${1:-30000}"
DAYS="${2:-730}"
KECAMATAN="${3:-44}"
CH=http://127.0.0.1:8123/
DB=pulih_bench_rollup
export PULIH_CLICKHOUSE__DATABASE=$DB
export PULIH_KAFKA__TOPIC=pulih.bench_rollup.v1
export PULIH_LOG="${PULIH_LOG:-warn}"

. deploy/local/lib.sh
services_and_release_build bench
q() { curl -sS --fail-with-body "$CH" --data-binary "$1"; }

for d in $DB ${DB}_analytics ${DB}_public; do q "DROP DATABASE IF EXISTS $d"; done
if [ "$KECAMATAN" = 44 ]; then
    districts=$(grep -E '^31\.' schemas/reference/districts.tsv | cut -f1 | sed "s/.*/'&'/" | paste -sd, -)
else
    mkdir -p target/bench/rollup
    table=target/bench/rollup/districts.tsv
    awk -v n="$KECAMATAN" 'BEGIN {
        print "code\tname\tregency_code\tregency_name"
        for (i = 0; i < n; i++) {
            r = int(i / 14); reg = sprintf("%02d.%02d", 11 + int(r / 90), 1 + r % 90)
            printf "%s.%02d\tKecamatan %d\t%s\tKabupaten %d\n", reg, 1 + i % 14, i, reg, r
        }
    }' >"$table"
    export PULIH_REFERENCE__DISTRICTS_FILE="$ROOT/$table"
    districts=$(tail -n +2 "$table" | cut -f1 | sed "s/.*/'&'/" | paste -sd, -)
fi
$PULIH migrate >/dev/null
start=$(date -u -d "$DAYS days ago" +%F)
# The baseline is the first four weeks loaded (the standard one, January
# 2020, is loaded only with DAYS over about 2 200), so that the indices the
# page and the dashboards read have values.
if [ "$DAYS" -ge 35 ] && [ "$DAYS" -lt 2200 ]; then
    export PULIH_METRICS__BASELINE_START="$start"
    PULIH_METRICS__BASELINE_END=$(date -u -d "$start + 27 days" +%F)
    export PULIH_METRICS__BASELINE_END
    echo "bench: baseline $PULIH_METRICS__BASELINE_START to $PULIH_METRICS__BASELINE_END" >&2
fi
echo "bench: $MERCHANTS merchants a day for $DAYS days from $start, $KECAMATAN kecamatan" >&2
t0=$(date +%s.%N)
q "INSERT INTO $DB.merchant_activity_daily_by_time
   SELECT toDate('$start') + intDiv(number, $MERCHANTS) AS day,
          [$districts][1 + (number % $MERCHANTS) % $KECAMATAN] AS district_code,
          ['A','B','C','D','E','F','G','H','I','J','K','L','M','N','O','P','Q','R','S','T','U'][1 + intDiv(number % $MERCHANTS, $KECAMATAN) % 21] AS sector,
          toFixedString(unhex(lower(hex(SHA256(toString(number % $MERCHANTS))))), 32) AS merchant_key,
          1 + number % 4 AS txn_count, 10000 * (1 + number % 97) AS amount_idr_sum,
          1, 0, number, 1, now()
   FROM numbers($((MERCHANTS * DAYS)))"
t1=$(date +%s.%N)
echo "bench: loaded $((MERCHANTS * DAYS)) merchant-days in $(echo "$t1 - $t0" | bc) s" >&2

# The rollup computes complete days only (docs/semantics.md,
# "Completeness"): say that one aggregator of a one-partition topic has
# passed the end of yesterday, as it would have after loading these days.
q "INSERT INTO $DB.aggregator_layout VALUES ('$PULIH_KAFKA__TOPIC', 1, now())"
q "INSERT INTO $DB.aggregator_watermark VALUES ('$PULIH_KAFKA__TOPIC', 0, toInt64(toUnixTimestamp(now())) * 1000, now())"

echo "bench: full rollup" >&2
/usr/bin/time -f "bench: full rollup: %e s wall, %M KiB max RSS, %P CPU (pulih)" $PULIH rollup
echo "bench: incremental rollup (refresh_days)" >&2
from=$(date -u -d "4 days ago" +%F)
/usr/bin/time -f "bench: incremental rollup: %e s wall, %M KiB max RSS, %P CPU (pulih)" $PULIH rollup --from "$from"
q "SELECT database, table, sum(rows) AS rows, formatReadableSize(sum(bytes_on_disk)) AS on_disk
   FROM system.parts WHERE active AND database LIKE '$DB%'
     AND table IN ('merchant_activity_daily_by_time', 'recovery_daily', 'release_candidate', 'recovery_vintages')
   GROUP BY database, table ORDER BY database FORMAT PrettyCompactMonoBlock"

# The reads of what was published, on the public database: each answer of
# the page, and every query of the dashboards over the days loaded.
echo "bench: reads of the public release" >&2
PULIH_UI__CLICKHOUSE_USER=default PULIH_UI__LISTEN=127.0.0.1:8097 $PULIH ui >target/bench/rollup-ui.log 2>&1 &
UI=$!
trap 'kill $UI 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:8097/healthz >/dev/null && break; sleep 0.1; done
sector=G
kota=$(q "SELECT any(kota_code) FROM ${DB}_public.recovery_vintages WHERE level = 'kota_sector'" | tr -d '\n')
for path in meta "map?sector=$sector" "series?sector=$sector&kota=$kota" heatmap alerts; do
    curl -s -o /dev/null -w "bench: /api/$path: %{time_total} s, %{size_download} bytes, HTTP %{http_code}\n" \
        "http://127.0.0.1:8097/api/$path"
done
t0=$(date +%s.%N)
# A panel may be empty here (the data raises no alert; with fewer than 35
# days loaded there is no baseline and the indices are empty): each
# panel's rows are printed.
python3 deploy/grafana/check_dashboards.py --clickhouse "$CH" --database "${DB}_public" \
    --from "$start" --to "$(date -u +%F)" --allow-empty | grep -E 'rows$|queries' >&2 || echo "bench: a dashboard query failed (see above)" >&2
echo "bench: every dashboard query: $(echo "$(date +%s.%N) - $t0" | bc) s wall" >&2
