#!/usr/bin/env bash
# Chaos: the whole pipeline under sustained load while faults are injected,
# then the one check that matters: every payment that got a 2xx is counted
# exactly once, and every rejection is on the dead-letter topic.
#
# Usage: deploy/local/chaos.sh [MINUTES] [RATE] [SEED]   (default 10 10000 1)
#
# The simulator posts RATE events/s through the HTTP gateway for MINUTES,
# with 3 % duplicates (client retries) and 1 % invalid events, and keeps
# its own record of what each 2xx accepted. Meanwhile, every 40-80 s, a
# seeded script injects the next fault of a shuffled cycle:
#   kill_aggregator     SIGKILL `pulih aggregate`, restart it 2 s later
#   kill_gateway        SIGKILL `pulih ingest`, restart it 2 s later
#   restart_broker      stop and start the Kafka broker (its log persists)
#   stop_clickhouse     SIGSTOP ClickHouse for 30 s (it hangs, then resumes)
#   stop_aggregator     SIGSTOP `pulih aggregate` for 45 s, then SIGCONT
# A service that exits is started again, as an orchestrator would. When
# the load ends, it waits for the aggregator to catch up and compares:
#   - payments and their amount in activity_1m_by_producer FINAL (`pulih report`)
#     with the simulator's accepted payments: equal, or the run fails;
#   - the same in merchant_activity_daily_by_time FINAL, whose rows of open days
#     are written every aggregate.daily_emit_interval_ms: equal, or the
#     run fails;
#   - the distinct dead letters of the gateway with the simulator's
#     rejections: equal, or the run fails.
# The same identities throughout: one consumer group, one database, one
# topic, as a deployment keeps. Logs and the fault log in target/chaos/;
# the database is dropped at the end (the topic stays, as for the tests).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
MINUTES="${1:-10}"
RATE="${2:-10000}"
SEED="${3:-1}"
OUT="$ROOT/target/chaos"
rm -rf "$OUT"
mkdir -p "$OUT"

. deploy/local/lib.sh
services_and_release_build chaos

run_env chaos 9468 4
CH=http://127.0.0.1:8123/
STATE="${PULIH_SERVICES_DIR:-$ROOT/target/services}"

# The gateway on its own port, without a rate limit, and the simulator
# posting to it with each producer's token.
gateway_and_simulator_config "$OUT/chaos.toml" 8092
# Producers without idempotence: Tansu 0.6.0 on SQLite panics when a
# producer id from before its restart writes again ("more or less than one
# row", tansu-storage src/lite.rs:503), and its storage then answers
# nothing until it is restarted. Without idempotence a retry can write a
# record twice to Kafka: the aggregator must, and does, count it once.
printf '\n[kafka.options]\n"enable.idempotence" = "false"\n' >>"$OUT/chaos.toml"
export PULIH_CONFIG="$OUT/chaos.toml"

INGEST="" AGG="" SIM="" CH_STOPPED=""
cleanup() {
    [ -z "$CH_STOPPED" ] || kill -CONT "$(cat "$STATE/clickhouse.pid")" 2>/dev/null || true
    for p in $SIM $AGG $INGEST; do kill -CONT "$p" 2>/dev/null || true; kill -INT "$p" 2>/dev/null || true; done
    for p in $SIM $AGG $INGEST; do wait "$p" 2>/dev/null || true; done
    drop_databases "$DB"
}
trap cleanup EXIT

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" | tee -a "$OUT/faults.log" >&2; }
start_ingest() {
    "$PULIH" ingest 2>>"$OUT/ingest.log" &
    INGEST=$!
    for _ in $(seq 150); do curl -sf http://127.0.0.1:8092/readyz >/dev/null && return; sleep 0.2; done
    log "the gateway did not become ready"
}
start_aggregate() {
    "$PULIH" aggregate >>"$OUT/aggregate.out" 2>>"$OUT/aggregate.log" &
    AGG=$!
}

"$PULIH" migrate >"$OUT/migrate.out"
start_ingest
start_aggregate
log "load: $RATE events/s for $MINUTES min through the gateway; seed $SEED"
"$PULIH" simulate --output gateway --rate "$RATE" --duration $((MINUTES * 60)) \
    --duplicates 0.03 --invalid 0.01 >"$OUT/simulate.out" 2>"$OUT/simulate.log" &
SIM=$!

RANDOM=$SEED
faults=(kill_aggregator kill_gateway restart_broker stop_clickhouse stop_aggregator)
shuffled() { # one seeded cycle through every fault
    local f=("${faults[@]}") i j t
    for ((i = ${#f[@]} - 1; i > 0; i--)); do
        j=$((RANDOM % (i + 1))); t=${f[i]}; f[i]=${f[j]}; f[j]=$t
    done
    printf '%s\n' "${f[@]}"
}
# As an orchestrator would: a service that exits is started again.
supervise() {
    kill -0 "$INGEST" 2>/dev/null || { log "the gateway exited; starting it again"; start_ingest; }
    kill -0 "$AGG" 2>/dev/null || { log "the aggregator exited; starting it again"; start_aggregate; }
}
declare -A injected
cycle=()
while kill -0 "$SIM" 2>/dev/null; do
    for _ in $(seq $((20 + RANDOM % 21))); do
        sleep 2
        supervise
    done
    kill -0 "$SIM" 2>/dev/null || break
    [ ${#cycle[@]} -gt 0 ] || mapfile -t cycle < <(shuffled)
    fault=${cycle[0]}
    cycle=("${cycle[@]:1}")
    injected[$fault]=$((${injected[$fault]:-0} + 1))
    log "fault: $fault"
    case $fault in
        kill_aggregator) kill -9 "$AGG"; wait "$AGG" 2>/dev/null || true; sleep 2; start_aggregate ;;
        kill_gateway) kill -9 "$INGEST"; wait "$INGEST" 2>/dev/null || true; sleep 2; start_ingest ;;
        restart_broker) deploy/local/services.sh restart-kafka >>"$OUT/broker.log" 2>&1 ;;
        stop_clickhouse)
            CH_STOPPED=1; kill -STOP "$(cat "$STATE/clickhouse.pid")"; sleep 30
            kill -CONT "$(cat "$STATE/clickhouse.pid")"; CH_STOPPED="" ;;
        stop_aggregator) kill -STOP "$AGG"; sleep 45; kill -CONT "$AGG" ;;
    esac
    log "recovered from $fault"
done
wait "$SIM"
SIM=""
cat "$OUT/simulate.out"
read -r sent amount <<<"$(sed -n 's/.*events=\([0-9]*\) amount_idr=\([0-9]*\).*/\1 \2/p' "$OUT/simulate.out")"
rejected=$(sed -n 's/.* rejected=\([0-9]*\).*/\1/p' "$OUT/simulate.out")

log "load done: $sent payments accepted (amount $amount), $rejected rejected; waiting for the aggregator"
counted="" counted_amount=""
for _ in $(seq 120); do
    supervise
    read -r counted counted_amount <<<"$("$PULIH" report 2>/dev/null | sed -n 's/^total events=\([0-9]*\) amount_idr=\([0-9]*\).*/\1 \2/p')"
    [ "${counted:-0}" -ge "$sent" ] && break
    sleep 5
done
# A little longer: anything counted twice would show now.
sleep 10
read -r counted counted_amount <<<"$("$PULIH" report 2>/dev/null | sed -n 's/^total events=\([0-9]*\) amount_idr=\([0-9]*\).*/\1 \2/p')"
daily() {
    curl -sf "$CH" --data-binary "SELECT sum(txn_count), sum(amount_idr_sum) FROM $DB.merchant_activity_daily_by_time FINAL FORMAT TSV"
}
day_counted="" day_amount=""
for _ in $(seq 30); do
    read -r day_counted day_amount <<<"$(daily)"
    [ "${day_counted:-0}" -ge "$sent" ] && break
    sleep 5
done
sleep 10
read -r day_counted day_amount <<<"$(daily)"
dead=$("$PULIH" dead-letters 2>/dev/null | sed -n 's/^dead letters: [0-9]* (\([0-9]*\) distinct.*/\1/p')
echo
echo "| | accepted by the gateway (client's record) | in ClickHouse / on the dead-letter topic |"
echo "|---|---:|---:|"
echo "| payments (activity_1m_by_producer) | $sent | $counted |"
echo "| amount (IDR, activity_1m_by_producer) | $amount | $counted_amount |"
echo "| payments (merchant_activity_daily_by_time) | $sent | $day_counted |"
echo "| amount (IDR, merchant_activity_daily_by_time) | $amount | $day_amount |"
echo "| rejections | $rejected | $dead distinct dead letters |"
echo
echo "Faults injected:"
for f in "${faults[@]}"; do printf -- '- %s: %s\n' "$f" "${injected[$f]:-0}"; done
if [ "$counted" = "$sent" ] && [ "$counted_amount" = "$amount" ] \
    && [ "$day_counted" = "$sent" ] && [ "$day_amount" = "$amount" ] && [ "$dead" = "$rejected" ]; then
    echo "chaos: OK: zero lost, zero counted twice, every rejection dead-lettered"
else
    echo "chaos: FAILED" >&2
    exit 1
fi
