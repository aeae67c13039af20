#!/usr/bin/env bash
# pulih side by side with ClickHouse alone and with the floor, on one seeded
# event set, in one run (bench/compare/README.md): about 5.4 million events
# with 3 % duplicates and 2 % late, through (1) the HTTP gateway and (2)
# `pulih produce`, each with `pulih aggregate`; (3) ClickHouse alone,
# inserting the same NDJSON into a MergeTree with a materialized view; and
# (4) splitting and parsing the same bytes. Prints a Markdown table and
# writes target/bench/compare/compare.json. Takes about 15 minutes here.
#
# Usage: deploy/local/bench-compare.sh [compare.py options]
#        (--days 6 --merchants 100000 --intensity 15 by default; --keep
#        keeps the databases)
#
# The broker runs with its memory storage unless PULIH_KAFKA_STORAGE says
# otherwise; a broker already running is used as it is.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
OUT="$ROOT/target/bench/compare"
mkdir -p "$OUT"
export PULIH_KAFKA_STORAGE="${PULIH_KAFKA_STORAGE:-memory}"

. deploy/local/lib.sh
services_and_release_build bench-compare
cargo build --release --locked -q -p pulih-event --example ndjson_floor
FLOOR="$(dirname "$PULIH")/examples/ndjson_floor"

export PULIH_PSEUDONYMISATION__SECRET="${PULIH_PSEUDONYMISATION__SECRET:-local-bench-secret-not-for-production-0001}"
export PULIH_LOG="${PULIH_LOG:-warn}"
gateway_and_simulator_config "$OUT/compare.toml" 8090
export PULIH_CONFIG="$OUT/compare.toml"

commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
git diff --quiet HEAD 2>/dev/null || commit="$commit+changes"
exec python3 bench/compare/compare.py --pulih "$PULIH" --floor "$FLOOR" --out "$OUT" \
    --services "${PULIH_SERVICES_DIR:-$ROOT/target/services}" --gateway-port 8090 --commit "$commit" "$@"
