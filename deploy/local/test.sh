#!/usr/bin/env bash
# The whole test suite: lints, unit and property tests, the SQL dialect
# check on current ClickHouse (chDB), the offline checks of the dashboards
# and deployment files, and the end-to-end tests against the real broker
# and ClickHouse (one server and a cluster), which this script installs and
# starts.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
step() { printf '\n== %s\n' "$*" >&2; }

command -v cargo >/dev/null || { echo "test: cargo not found: install Rust with rustup (https://rustup.rs) first" >&2; exit 1; }

step "services (install if missing, start)"
deploy/local/services.sh up

step "the local ClickHouse cluster: ZooKeeper and two shards of two replicas"
deploy/local/cluster.sh up

# The end-to-end tests create databases named it_<test>_<ms>_<pid>_<n> (and
# their _analytics and _public siblings); drop them when the run ends,
# passed or failed, so they do not pile up on the server. Their Kafka
# topics (it.<test>_...) stay: Tansu 0.6.0 answers a request to delete one
# topic by deleting every topic of the broker (tried on 2026-11-29), and
# the broker is shared with whatever else runs here. Empty ones cost
# little; `deploy/local/services.sh reset` deletes both services' data.
drop_test_databases() {
    local ch=http://127.0.0.1:8123/ db
    for db in $(curl -sf "$ch" --data-binary \
        "SELECT name FROM system.databases WHERE match(name, '^it_[a-z0-9_]+_[0-9]{13}_[0-9]+_[0-9]+(_analytics|_public)?\$')"); do
        curl -sf "$ch" --data-binary "DROP DATABASE IF EXISTS \`$db\`" >/dev/null || true
    done
}
trap drop_test_databases EXIT

step "chDB for the current-ClickHouse dialect check, jsonschema for the dashboards"
pip_install() {
    python3 -c "import $1" 2>/dev/null && return
    python3 -m pip install --quiet "$2" 2>/dev/null \
        || python3 -m pip install --quiet --break-system-packages "$2"
}
pip_install chdb chdb-core
pip_install jsonschema jsonschema
pip_install yaml pyyaml
pip_install kubernetes_validate kubernetes-validate

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --locked --workspace --all-targets -q -- -D warnings

step "Prometheus rules and their unit tests (promtool)"
promtool check config deploy/prometheus/prometheus.yml
promtool test rules deploy/prometheus/tests/*.yml
amtool check-config deploy/alertmanager/alertmanager.yml

step "Grafana dashboards: schema and PromQL (their SQL runs in cargo test)"
python3 deploy/grafana/check_dashboards.py

step "SQL on current ClickHouse (chDB)"
python3 schemas/clickhouse/check_with_chdb.py

step "cargo build -p pulih (the crash tests run the binary and kill it)"
cargo build --locked -p pulih

step "deployment files: docker-compose config, kustomize, kubernetes-validate, pulih check-config"
command -v kubectl >/dev/null || { echo "test: kubectl not found: it builds deploy/k8s/ (kubectl kustomize); install it as https://kubernetes.io/docs/tasks/tools/install-kubectl-linux/ says" >&2; exit 1; }
target_dir=$(cargo metadata --locked --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
python3 deploy/check_deploy.py --pulih "$target_dir/debug/pulih"

step "cargo test (unit, property and end-to-end tests)"
cargo test --locked --workspace
