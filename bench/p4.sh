#!/usr/bin/env bash
# P4 — segment membership and materialisation over 10,000,000 customers x 50 tags
# (PERFORMANCE.md). The driver generates the customers and tag values in memory straight into the
# bitmap index (not through PostgreSQL), keeps segment definitions and snapshots in a scratch
# database as the service does, and measures membership in-process and over gRPC (batches of
# 100), the evaluation of a 3-condition rule into its member bitmap, its materialisation through
# the service (with the parts: evaluation, serialisation, the snapshot row), and memory; the
# ceiling is a linear scan of the same three tags held as plain arrays in memory, producing the
# same member set.
# Targets: membership p99 <= 20 us in-process, <= 1 ms over gRPC; materialise <= 1 s;
# index <= 2 GB; ratio (scan / evaluation, both producing the member set) >= 20.
# Usage: ./dev bench P4   (MKT_BENCH_NO_BUILD=1 skips the build; P4_CUSTOMERS=N for a smaller run)
set -euo pipefail
REPO=${MKT_REPO:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$REPO"
PG_PORT=${MKT_PG_PORT:-25432}
CUSTOMERS=${P4_CUSTOMERS:-10000000}
DB=bench_p4
DSN="host=127.0.0.1 port=$PG_PORT user=postgres dbname=$DB"
cleanup() {
  psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qAt -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT

if [[ -z ${MKT_BENCH_NO_BUILD:-} ]]; then
  # Only the driver, in the release tree, under the shared build lock.
  flock /tmp/mkt-build.lock cmake --build build/release --target mkt-bench-p4 >/dev/null
fi
psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qAt -c "SET client_min_messages = warning" \
  -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" >/dev/null
build/release/bench/p4/mkt-bench-p4 --dsn="$DSN" --customers="$CUSTOMERS"
