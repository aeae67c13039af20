# Process helpers shared by services.sh and cluster.sh: source it after
# defining say and die. Each service runs in its own session (setsid), its
# pid in a pid file, so that stop ends it and everything it started.

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

running() { # pidfile
    [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        die "need root to run: $* (install sudo or run as root)"; fi
}

wait_for() { # name check-command timeout-seconds log
    local name=$1 check=$2 timeout=$3 log=$4 i
    for ((i = 0; i < timeout * 5; i++)); do
        if eval "$check"; then return 0; fi
        sleep 0.2
    done
    say "$name did not become ready within ${timeout}s; last lines of $log:"
    tail -n 20 "$log" >&2 || true
    die "$name failed to start"
}

stop() { # name pidfile [signal, TERM by default; KILL after 10 s either way]
    local pid sig=${3:-TERM}
    if running "$2"; then
        pid=$(cat "$2")
        kill -s "$sig" -- "-$pid" 2>/dev/null || kill -s "$sig" "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 -- "-$pid" 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
        say "$1 stopped"
    else
        say "$1 not running"
    fi
    rm -f "$2"
}
