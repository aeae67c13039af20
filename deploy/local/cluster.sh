#!/usr/bin/env bash
# A replicated, sharded ClickHouse on one machine, for the cluster tests:
# Debian's zookeeper (standalone) and four clickhouse-server 18.16
# processes forming the cluster `pulih`, two shards of two replicas:
#
#   node  shard replica  HTTP   native  interserver
#   s1r1  01    r1       8211   9211    9311
#   s1r2  01    r2       8212   9212    9312
#   s2r1  02    r1       8221   9221    9321
#   s2r2  02    r2       8222   9222    9322
#   ZooKeeper                   2281
#
# all on 127.0.0.1, with deploy/clickhouse/cluster/config.xml and the local
# users (deploy/clickhouse/local/users.xml).
#
# Usage: deploy/local/cluster.sh up|down|status|reset|stop-node NODE|start-node NODE
#
#   up          installs zookeeper when missing, starts everything, waits
#               until every node answers and sees the cluster
#   down        stops everything
#   stop-node   stops one node (SIGKILL), e.g. s1r2; start-node starts it again
#   status      says what runs
#   reset       stops everything and deletes the data
#
# Environment: PULIH_CLUSTER_DIR, the state folder; default target/cluster.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STATE="${PULIH_CLUSTER_DIR:-$ROOT/target/cluster}"
ZK_PORT=2281
NODES=(s1r1 s1r2 s2r1 s2r2)

say() { printf 'cluster: %s\n' "$*" >&2; }
die() { printf 'cluster: error: %s\n' "$*" >&2; exit 1; }
# shellcheck source=deploy/local/process.sh
. "$ROOT/deploy/local/process.sh"

# node name -> "shard replica http native interserver"
ports() {
    local s=${1:1:1} r=${1:3:1}
    echo "0$s r$r 82$s$r 92$s$r 93$s$r"
}

install() {
    [ -x /usr/share/zookeeper/bin/zkServer.sh ] && return 0
    say "installing Debian's zookeeper"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends zookeeper >/dev/null \
        || { as_root apt-get update -qq >/dev/null && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends zookeeper >/dev/null; } \
        || die "apt-get install zookeeper failed"
}

zk_ok() { [ "$(echo ruok | timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$ZK_PORT; cat >&3; cat <&3" 2>/dev/null)" = imok ]; }

start_zookeeper() {
    local dir="$STATE/zookeeper" pidfile="$STATE/zookeeper.pid"
    if running "$pidfile"; then say "zookeeper already running, pid $(cat "$pidfile")"; return 0; fi
    if port_open $ZK_PORT; then die "port $ZK_PORT is taken by another program; stop it first"; fi
    mkdir -p "$dir/data"
    cat >"$dir/zoo.cfg" <<EOF
tickTime=500
initLimit=10
syncLimit=5
dataDir=$dir/data
clientPort=$ZK_PORT
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=ruok
EOF
    (cd "$dir" && ZOO_LOG_DIR="$dir" ZOO_LOG4J_PROP=WARN,CONSOLE \
        exec setsid /usr/share/zookeeper/bin/zkServer.sh start-foreground "$dir/zoo.cfg" >"$dir/zookeeper.log" 2>&1 </dev/null) &
    echo $! >"$pidfile"
    wait_for zookeeper zk_ok 60 "$dir/zookeeper.log"
    say "zookeeper ready on 127.0.0.1:$ZK_PORT"
}

start_node() {
    local node=$1 dir="$STATE/$1" pidfile="$STATE/$1.pid" shard replica http native inter bin
    read -r shard replica http native inter <<<"$(ports "$node")"
    if running "$pidfile"; then say "$node already running, pid $(cat "$pidfile")"; return 0; fi
    if port_open "$http"; then die "port $http is taken by another program; stop it first"; fi
    mkdir -p "$dir/data"
    sed -e "s|@HTTP_PORT@|$http|; s|@TCP_PORT@|$native|; s|@INTERSERVER_PORT@|$inter|" \
        -e "s|@SHARD@|$shard|; s|@REPLICA@|$replica|; s|@ZOOKEEPER_PORT@|$ZK_PORT|" \
        -e "s|@USERS@|$ROOT/deploy/clickhouse/local/users.xml|" \
        "$ROOT/deploy/clickhouse/cluster/config.xml" >"$dir/config.xml"
    bin="$(command -v clickhouse-server || echo /usr/sbin/clickhouse-server)"
    [ -x "$bin" ] || die "clickhouse-server is not installed (deploy/local/services.sh install)"
    (exec setsid "$bin" --config-file="$dir/config.xml" -- \
        --path="$dir/data/" --tmp_path="$dir/data/tmp/" --user_files_path="$dir/data/user_files/" \
        --format_schema_path="$dir/data/format_schemas/" \
        --logger.log="$dir/server.log" --logger.errorlog="$dir/server.err.log" \
        >"$dir/stdout.log" 2>&1 </dev/null) &
    echo $! >"$pidfile"
    wait_for "$node" "curl -sf 'http://127.0.0.1:$http/?query=SELECT%201' >/dev/null" 60 "$dir/stdout.log"
}

up() {
    install
    start_zookeeper
    local node
    for node in "${NODES[@]}"; do start_node "$node"; done
    # Every node sees all four in the cluster and reaches ZooKeeper.
    for node in "${NODES[@]}"; do
        local http
        http=$(ports "$node" | cut -d' ' -f3)
        wait_for "$node (cluster)" \
            "[ \"\$(curl -sf 'http://127.0.0.1:$http/' --data-binary \"SELECT count() FROM system.clusters WHERE cluster = 'pulih'\")\" = 4 ] \
             && curl -sf 'http://127.0.0.1:$http/' --data-binary \"SELECT count() FROM system.zookeeper WHERE path = '/'\" >/dev/null" \
            30 "$STATE/$node/server.err.log"
    done
    say "cluster pulih ready: 2 shards × 2 replicas on 127.0.0.1:8211/8212/8221/8222 (HTTP), ZooKeeper on :$ZK_PORT"
}

down() {
    local node
    for node in "${NODES[@]}"; do stop "$node" "$STATE/$node.pid"; done
    stop zookeeper "$STATE/zookeeper.pid"
}

status() {
    local rc=0 node
    if running "$STATE/zookeeper.pid" && zk_ok; then say "zookeeper: running on 127.0.0.1:$ZK_PORT"; else say "zookeeper: stopped"; rc=1; fi
    for node in "${NODES[@]}"; do
        if running "$STATE/$node.pid"; then say "$node: running on 127.0.0.1:$(ports "$node" | cut -d' ' -f3)"; else say "$node: stopped"; rc=1; fi
    done
    return $rc
}

known_node() { [[ " ${NODES[*]} " == *" ${1:-} "* ]] || die "no node '${1:-}': one of ${NODES[*]}"; }

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    reset) down; rm -rf "$STATE"; say "state removed" ;;
    stop-node) known_node "${2:-}"; stop "$2" "$STATE/$2.pid" KILL ;;
    # A node killed mid-write can have lost parts that ZooKeeper lists, and
    # ClickHouse then refuses to start ("The local set of parts ... doesn't
    # look like the set of parts in ZooKeeper"). The flag tells it to set
    # those aside and fetch them from the other replica, as an operator
    # would after a crash; ClickHouse removes it once used.
    start-node) known_node "${2:-}"; mkdir -p "$STATE/$2/data/flags"; touch "$STATE/$2/data/flags/force_restore_data"
        start_node "$2"; say "$2 ready" ;;
    *) die "usage: $0 up|down|status|reset|stop-node NODE|start-node NODE" ;;
esac
