# Shared by the demo and bench scripts: source it after `cd "$ROOT"`.

# Starts the services (installing what is missing) and builds the release
# binary; sets PULIH to its path. $1 names the caller in messages.
# PULIH_BIN=path runs that binary instead (to compare two builds).
services_and_release_build() {
    deploy/local/services.sh up
    if [ -n "${PULIH_BIN:-}" ]; then
        echo "$1: running $PULIH_BIN" >&2
        PULIH="$PULIH_BIN"
        return
    fi
    echo "$1: building pulih (release)" >&2
    cargo build --release --locked -q -p pulih
    PULIH="$ROOT/target/release/pulih"
}

# Clock ticks per second, and the CPU time (user + system) process PID
# has used so far, in ticks: read before and after a measured interval.
TICKS=$(getconf CLK_TCK)
cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; } # pid

# The pid of a service that services.sh started: tansu or clickhouse.
service_pid() { cat "${PULIH_SERVICES_DIR:-$ROOT/target/services}/$1.pid"; } # name

# The value of sample NAME (with its labels, as exposed) at
# http://127.0.0.1:PORT/metrics; 0 when absent.
metric() { # port name
    curl -s "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n { v=$2 } END { print v+0 }'
}

# Exports the settings of a run named NAME, so that it keeps to itself:
# topics pulih.NAME.<stamp>, its consumer group, database DB =
# pulih_NAME_<stamp>, the aggregator's metrics on 127.0.0.1:PORT, and
# PARTITIONS partitions when given. Sets STAMP and DB.
run_env() { # name port [partitions]
    STAMP=$(date +%s)
    DB="pulih_${1//-/_}_$STAMP"
    export PULIH_KAFKA__TOPIC="pulih.$1.$STAMP"
    export PULIH_KAFKA__DLQ_TOPIC="pulih.$1.$STAMP.dlq"
    if [ -n "${3:-}" ]; then export PULIH_KAFKA__PARTITIONS="$3"; fi
    export PULIH_CLICKHOUSE__DATABASE="$DB"
    export PULIH_AGGREGATE__GROUP_ID="pulih-$1-$STAMP"
    export PULIH_AGGREGATE__METRICS_ADDR="127.0.0.1:$2"
    export PULIH_PSEUDONYMISATION__SECRET="${PULIH_PSEUDONYMISATION__SECRET:-local-bench-secret-not-for-production-0001}"
    export PULIH_LOG="${PULIH_LOG:-warn}"
}

# Drops database DB and the _analytics and _public ones next to it.
drop_databases() { # db
    local d
    for d in "$1" "$1_analytics" "$1_public"; do
        curl -sf http://127.0.0.1:8123/ --data-binary "DROP DATABASE IF EXISTS $d" >/dev/null || true
    done
}

# Writes FILE: a gateway on 127.0.0.1:PORT without a rate limit, with a
# token for each producer of the shipped scenario, and the simulator's
# settings to post to it with those tokens. The simulator's keys come
# first, as dotted keys; the [ingest...] tables follow. Needs PULIH.
gateway_and_simulator_config() { # file port
    local file=$1 port=$2 tables p out
    printf 'simulate.gateway_url = "http://127.0.0.1:%s"\n' "$port" >"$file"
    tables=$'[ingest]\nlisten = "127.0.0.1:'"$port"$'"\nrate_limit_per_sec = 0\n'
    for p in qris_acquirer ewallet bank; do
        out=$("$PULIH" token new "$p")
        printf 'simulate.tokens.%s = "%s"\n' "$p" "$(sed -n 2p <<<"$out")" >>"$file"
        tables+=$'\n'"$(sed -n 5,6p <<<"$out")"$'\n'
    done
    printf '\n%s' "$tables" >>"$file"
}
