#!/bin/bash
# Gives deploy/clickhouse/users.d/pulih-roles.xml the SHA-256 of each
# account's password from the container's environment, then starts the
# image's own entrypoint.
set -euo pipefail
sha() { printf %s "$1" | sha256sum | cut -d' ' -f1; }
export PULIH_CH_WRITER_SHA256="$(sha "$PULIH_CH_WRITER_PASSWORD")"
export PULIH_CH_ANALYST_SHA256="$(sha "$PULIH_CH_ANALYST_PASSWORD")"
export PULIH_CH_PUBLIC_SHA256="$(sha "$PULIH_CH_PUBLIC_PASSWORD")"
unset PULIH_CH_WRITER_PASSWORD PULIH_CH_ANALYST_PASSWORD PULIH_CH_PUBLIC_PASSWORD
exec /entrypoint.sh "$@"
