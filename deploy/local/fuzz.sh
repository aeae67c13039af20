#!/usr/bin/env bash
# Runs pulih's fuzz targets (fuzz/, libFuzzer through cargo-fuzz) on the
# nightly toolchain, each for SECONDS, one after the other.
#
# Usage: deploy/local/fuzz.sh [SECONDS] [TARGET...]   (default 600 s, every target)
#
# Installs cargo-fuzz and the nightly toolchain when missing. Each target
# starts from its committed corpus (fuzz/corpus/TARGET) and finds new
# inputs in target/fuzz/TARGET; at the end, the new inputs that reach code
# the corpus does not are merged into fuzz/corpus/TARGET (commit them if
# the corpus stays small). A crash stops the script with the input in
# fuzz/artifacts/TARGET/: reproduce it with
#   cargo +nightly fuzz run -s none TARGET fuzz/artifacts/TARGET/crash-...
# and make it a regression test next to the code it breaks. Logs in
# target/fuzz/. fuzz/README.md lists the targets.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
SECONDS_EACH="${1:-600}"
shift || true

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
# No sanitizer: pulih has no unsafe code of its own; libFuzzer's coverage
# and Rust's checks (overflow, bounds, panics) are what catch bugs here.
FUZZ=(cargo +nightly fuzz)
"${FUZZ[@]}" build -s none >&2

targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <("${FUZZ[@]}" list)
mkdir -p target/fuzz
for t in "${targets[@]}"; do
    found="target/fuzz/$t"
    mkdir -p "$found" "fuzz/corpus/$t"
    echo "fuzz: $t for $SECONDS_EACH s" >&2
    if ! "${FUZZ[@]}" run -s none "$t" "$found" "fuzz/corpus/$t" -- \
        -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"target/fuzz/$t.log" 2>&1; then
        tail -n 40 "target/fuzz/$t.log" >&2
        echo "fuzz: $t failed; the input is in fuzz/artifacts/$t/" >&2
        exit 1
    fi
    grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb|cov: ' "target/fuzz/$t.log" | tail -n 3 >&2
    "${FUZZ[@]}" run -s none "$t" "fuzz/corpus/$t" "$found" -- -merge=1 >>"target/fuzz/$t.log" 2>&1
    echo "fuzz: $t: no crash in $SECONDS_EACH s; corpus $(ls "fuzz/corpus/$t" | wc -l) inputs, $(du -sh "fuzz/corpus/$t" | cut -f1)" >&2
done
