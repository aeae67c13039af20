#!/usr/bin/env bash
# Installs (when missing) and runs the services pulih needs, on 127.0.0.1:
#
#   Kafka API   Tansu 0.6.0 broker        127.0.0.1:9092
#   ClickHouse  Debian's clickhouse-server 127.0.0.1:8123 (HTTP), :9000 (native)
#   Alertmanager Debian's prometheus-alertmanager 127.0.0.1:9093, with
#               deploy/alertmanager/alertmanager.yml
#
# and installs the tools the tests use: promtool (Debian's prometheus) and
# headless Chromium (Debian's chromium) for the page `pulih ui` serves.
#
# Usage: deploy/local/services.sh up|down|status|install
#
#   install  installs what is missing (Debian packages, Tansu) and exits
#   up       installs what is missing, starts both services, waits until ready
#   down     stops them
#   status   says what runs
#   reset    stops them and deletes their data
#
# Environment:
#   PULIH_SERVICES_DIR   state folder (pid files, logs, data); default target/services
#   PULIH_KAFKA_STORAGE  sqlite (default: the log is kept in
#                        $PULIH_SERVICES_DIR/tansu/pulih.db and survives a broker
#                        restart) or memory (faster, for benchmarks: the log is
#                        lost when the broker stops)
#
# The script is idempotent: `up` on running services only checks them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STATE="${PULIH_SERVICES_DIR:-$ROOT/target/services}"
KAFKA_STORAGE="${PULIH_KAFKA_STORAGE:-sqlite}"
TANSU_VERSION="0.6.0"
KAFKA_PORT=9092
CH_HTTP_PORT=8123
AM_PORT=9093

say() { printf 'services: %s\n' "$*" >&2; }
die() { printf 'services: error: %s\n' "$*" >&2; exit 1; }

# shellcheck source=deploy/local/process.sh
. "$ROOT/deploy/local/process.sh"

install_debian_packages() {
    local missing=()
    command -v clickhouse-server >/dev/null || [ -x /usr/sbin/clickhouse-server ] || missing+=(clickhouse-server)
    command -v promtool >/dev/null || missing+=(prometheus)
    command -v prometheus-alertmanager >/dev/null || missing+=(prometheus-alertmanager)
    # Headless Chromium and a font, for the test of the page `pulih ui` serves.
    command -v chromium >/dev/null || missing+=(chromium)
    [ -d /usr/share/fonts/truetype/dejavu ] || missing+=(fonts-dejavu-core)
    # Build tools for the bundled librdkafka and for Tansu's SQLite.
    command -v cc >/dev/null || missing+=(build-essential)
    command -v make >/dev/null || missing+=(make)
    command -v pkg-config >/dev/null || missing+=(pkg-config)
    [ -e /usr/include/zlib.h ] || missing+=(zlib1g-dev)
    command -v python3 >/dev/null || missing+=(python3)
    python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
    command -v curl >/dev/null || missing+=(curl)
    # The bench scripts' arithmetic.
    command -v bc >/dev/null || missing+=(bc)
    # `docker-compose config` checks deploy/compose/ (no Docker engine needed).
    command -v docker-compose >/dev/null || missing+=(docker-compose)
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing Debian packages: ${missing[*]}"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
            || die "apt-get install ${missing[*]} failed"
    fi
    # Debian starts no service in a container, but stop the packaged ones
    # if they run: ours use the same ports.
    if pgrep -x prometheus-alertmanager >/dev/null 2>&1 && ! running "$STATE/alertmanager.pid"; then
        say "stopping the system prometheus-alertmanager (it holds port $AM_PORT)"
        as_root service prometheus-alertmanager stop >/dev/null 2>&1 || true
    fi
    if pgrep -f '/etc/clickhouse-server/config.xml' >/dev/null 2>&1; then
        say "stopping the system clickhouse-server (it holds port $CH_HTTP_PORT)"
        as_root service clickhouse-server stop >/dev/null 2>&1 || true
    fi
}

TANSU_FEATURES="libsql,dynostore"

# The Tansu binary to run: version $TANSU_VERSION, and, when cargo installed
# it, built with both storages (cargo records the features it was built with).
tansu_bin() {
    local b
    for b in "$(command -v tansu 2>/dev/null || true)" "${CARGO_HOME:-$HOME/.cargo}/bin/tansu"; do
        if [ -n "$b" ] && [ -x "$b" ] && "$b" --version 2>/dev/null | grep -q "$TANSU_VERSION" \
            && tansu_has_features "$b"; then
            echo "$b"; return 0
        fi
    done
    return 1
}

# True unless cargo's install record says $1 was built without one of
# $TANSU_FEATURES. A binary cargo did not install is taken as it is.
tansu_has_features() {
    local record="${CARGO_HOME:-$HOME/.cargo}/.crates2.json"
    [ "$1" -ef "${CARGO_HOME:-$HOME/.cargo}/bin/tansu" ] && [ -f "$record" ] || return 0
    python3 - "$record" "$TANSU_VERSION" "$TANSU_FEATURES" <<'PY'
import json, sys
record, version, wanted = sys.argv[1], sys.argv[2], set(sys.argv[3].split(","))
installs = json.load(open(record)).get("installs", {})
for key, install in installs.items():
    if key.startswith(f"tansu {version} "):
        sys.exit(0 if wanted <= set(install.get("features", [])) else 1)
sys.exit(0)
PY
}

install_tansu() {
    if tansu_bin >/dev/null; then return 0; fi
    command -v cargo >/dev/null || die "cargo not found: install Rust with rustup (https://rustup.rs) first"
    mkdir -p "$STATE"
    say "installing Tansu $TANSU_VERSION ($TANSU_FEATURES) with cargo: about 25 minutes once on 2 cores, see $STATE/tansu-install.log"
    cargo install --locked "tansu@$TANSU_VERSION" --features "$TANSU_FEATURES" >"$STATE/tansu-install.log" 2>&1 \
        || die "cargo install tansu failed; see $STATE/tansu-install.log"
    tansu_bin >/dev/null || die "tansu installed but not found in ${CARGO_HOME:-$HOME/.cargo}/bin"
}

start_tansu() {
    local pidfile="$STATE/tansu.pid" log="$STATE/tansu.log" storage
    if running "$pidfile"; then say "kafka (tansu) already running, pid $(cat "$pidfile")"; return 0; fi
    if port_open $KAFKA_PORT; then die "port $KAFKA_PORT is taken by another program; stop it first"; fi
    case "$KAFKA_STORAGE" in
        memory) storage="memory://tansu/" ;;
        sqlite) mkdir -p "$STATE/tansu"; storage="sqlite://pulih.db" ;;
        *) die "PULIH_KAFKA_STORAGE must be memory or sqlite, not '$KAFKA_STORAGE'" ;;
    esac
    mkdir -p "$STATE/tansu"
    (cd "$STATE/tansu" && exec setsid "$(tansu_bin)" broker \
        --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --storage-engine "$storage" >"$log" 2>&1 </dev/null) &
    echo $! >"$pidfile"
    wait_for "kafka (tansu)" "port_open $KAFKA_PORT" 30 "$log"
    say "kafka (tansu $TANSU_VERSION, $KAFKA_STORAGE storage) ready on 127.0.0.1:$KAFKA_PORT"
}

start_clickhouse() {
    local pidfile="$STATE/clickhouse.pid" log="$STATE/clickhouse/server.log" data="$STATE/clickhouse/data/"
    if running "$pidfile"; then say "clickhouse already running, pid $(cat "$pidfile")"; return 0; fi
    if port_open $CH_HTTP_PORT; then die "port $CH_HTTP_PORT is taken by another program; stop it first"; fi
    mkdir -p "$data"
    local bin
    bin="$(command -v clickhouse-server || echo /usr/sbin/clickhouse-server)"
    (exec setsid "$bin" --config-file="$ROOT/deploy/clickhouse/local/config.xml" -- \
        --path="$data" --tmp_path="$data/tmp/" --user_files_path="$data/user_files/" \
        --format_schema_path="$data/format_schemas/" \
        --logger.log="$log" --logger.errorlog="$STATE/clickhouse/server.err.log" \
        >"$STATE/clickhouse/stdout.log" 2>&1 </dev/null) &
    echo $! >"$pidfile"
    wait_for "clickhouse" "curl -sf 'http://127.0.0.1:$CH_HTTP_PORT/?query=SELECT%201' >/dev/null" 60 "$STATE/clickhouse/stdout.log"
    say "clickhouse $(curl -s "http://127.0.0.1:$CH_HTTP_PORT/?query=SELECT%20version()") ready on 127.0.0.1:$CH_HTTP_PORT"
}

start_alertmanager() {
    local pidfile="$STATE/alertmanager.pid" log="$STATE/alertmanager/alertmanager.log"
    if running "$pidfile"; then
        # Pick up changes to deploy/alertmanager/alertmanager.yml.
        curl -sf -X POST "http://127.0.0.1:$AM_PORT/-/reload" >/dev/null \
            || die "alertmanager could not reload deploy/alertmanager/alertmanager.yml (amtool check-config tells why)"
        say "alertmanager already running, pid $(cat "$pidfile"); configuration reloaded"
        return 0
    fi
    if port_open $AM_PORT; then die "port $AM_PORT is taken by another program; stop it first"; fi
    mkdir -p "$STATE/alertmanager"
    # No cluster: one local instance (an empty listen address turns the
    # gossip port off).
    (exec setsid prometheus-alertmanager \
        --config.file="$ROOT/deploy/alertmanager/alertmanager.yml" \
        --storage.path="$STATE/alertmanager" \
        --web.listen-address="127.0.0.1:$AM_PORT" \
        --cluster.listen-address= >"$log" 2>&1 </dev/null) &
    echo $! >"$pidfile"
    wait_for "alertmanager" "curl -sf http://127.0.0.1:$AM_PORT/-/ready >/dev/null" 30 "$log"
    say "alertmanager ready on 127.0.0.1:$AM_PORT"
}

status() {
    local rc=0
    if running "$STATE/tansu.pid" && port_open $KAFKA_PORT; then say "kafka (tansu): running on 127.0.0.1:$KAFKA_PORT"; else say "kafka (tansu): stopped"; rc=1; fi
    if running "$STATE/clickhouse.pid" && port_open $CH_HTTP_PORT; then say "clickhouse: running on 127.0.0.1:$CH_HTTP_PORT"; else say "clickhouse: stopped"; rc=1; fi
    if running "$STATE/alertmanager.pid" && port_open $AM_PORT; then say "alertmanager: running on 127.0.0.1:$AM_PORT"; else say "alertmanager: stopped"; rc=1; fi
    return $rc
}

mkdir -p "$STATE"
case "${1:-}" in
    install) install_debian_packages; install_tansu ;;
    up) install_debian_packages; install_tansu; start_tansu; start_clickhouse; start_alertmanager ;;
    reset) stop "kafka (tansu)" "$STATE/tansu.pid"; stop clickhouse "$STATE/clickhouse.pid"; stop alertmanager "$STATE/alertmanager.pid"; rm -rf "$STATE/tansu" "$STATE/clickhouse" "$STATE/alertmanager"; say "state removed" ;;
    down) stop "kafka (tansu)" "$STATE/tansu.pid"; stop clickhouse "$STATE/clickhouse.pid"; stop alertmanager "$STATE/alertmanager.pid" ;;
    status) status ;;
    restart-kafka) stop "kafka (tansu)" "$STATE/tansu.pid"; start_tansu ;;
    *) die "usage: $0 up|down|status|install|reset|restart-kafka" ;;
esac
