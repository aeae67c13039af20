# Shared by the demo and bench scripts: source it after `cd "$ROOT"`.

# Starts the services (installing what is missing) and builds the release
# binary; sets PULIH to its path. $1 names the caller in messages.
services_and_release_build() {
    deploy/local/services.sh up
    echo "$1: building pulih (release)" >&2
    cargo build --release --locked -q -p pulih
    PULIH="$ROOT/target/release/pulih"
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
