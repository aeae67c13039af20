#!/usr/bin/env bash
# Prints a new set of a deployment's secrets as KEY=VALUE lines, for
# deploy/compose/.env or the Kubernetes secret (deploy/k8s/README.md):
#
#   deploy/make-secrets.sh > deploy/compose/.env
#   deploy/make-secrets.sh bank-a ewallet-b > deploy/k8s/overlays/production/secrets.env
#
# - the pseudonymisation secret (HMAC key; keep it: a new one changes every
#   merchant key, see docs/operations.md for a rotation);
# - a password for each ClickHouse account of deploy/clickhouse/users.d/;
# - Grafana's admin password;
# - for each producer (default: the shipped scenario's), a bearer token for
#   the producer and its SHA-256 for the gateway. Producer ids here are
#   letters, digits and `_` (they become variable names).
set -euo pipefail
[ $# -gt 0 ] || set -- qris_acquirer ewallet bank
hex() { od -An -tx1 -N32 /dev/urandom | tr -d ' \n'; }
for p in "$@"; do
    [[ $p =~ ^[A-Za-z0-9_]{1,64}$ ]] \
        || { echo "make-secrets: producer id '$p': use 1-64 letters, digits or _" >&2; exit 2; }
done
echo "# Made by deploy/make-secrets.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ). Keep out of version control."
echo "PULIH_PSEUDONYMISATION__SECRET=$(hex)"
echo "PULIH_CH_WRITER_PASSWORD=$(hex)"
echo "PULIH_CH_ANALYST_PASSWORD=$(hex)"
echo "PULIH_CH_PUBLIC_PASSWORD=$(hex)"
echo "PULIH_GRAFANA_ADMIN_PASSWORD=$(hex)"
for p in "$@"; do
    token="pulih_$(hex)"
    upper=$(tr '[:lower:]' '[:upper:]' <<<"$p")
    echo "PULIH_TOKEN_$upper=$token"
    echo "PULIH_TOKEN_SHA256_$upper=$(printf %s "$token" | sha256sum | cut -d' ' -f1)"
done
