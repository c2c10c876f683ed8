#!/usr/bin/env bash
# ledger-grants — grants per second on one hot campaign budget, through mkt-rewards' gRPC API,
# against the ceiling of writing the same rows straight into PostgreSQL (PERFORMANCE.md).
# Starts mkt-rewards (release build) on a scratch database, funds one campaign budget, and keeps
# LEDGER_GRANTS_IN_FLIGHT single-customer POINTS grants (budget leg + benefit leg, no stock) in
# flight for LEDGER_GRANTS_SECONDS after a warm-up; then stops the service and, on the same
# database and schema, writes the rows of the same grants (transfers, lots, outbox facts, account
# totals) with multi-row statements, 100 grants per durable transaction, for
# LEDGER_GRANTS_CEILING_SECONDS. Targets: >= 5,000 grants/s and ratio >= 0.3.
# Usage: ./dev bench ledger-grants   (MKT_BENCH_NO_BUILD=1 skips ./dev build release)
set -euo pipefail
REPO=${MKT_REPO:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$REPO"
PG_PORT=${MKT_PG_PORT:-25432}
KAFKA_PORT=${MKT_KAFKA_PORT:-29092}
SECONDS_MEASURED=${LEDGER_GRANTS_SECONDS:-20}
WARMUP_SECONDS=${LEDGER_GRANTS_WARMUP_SECONDS:-3}
CEILING_SECONDS=${LEDGER_GRANTS_CEILING_SECONDS:-15}
IN_FLIGHT=${LEDGER_GRANTS_IN_FLIGHT:-384}
BIN=build/release
DB=bench_ledger_grants
DSN="host=127.0.0.1 port=$PG_PORT user=postgres dbname=$DB"
WORK=$(mktemp -d /tmp/mkt-ledger-grants.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qAt -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

if [[ -z ${MKT_BENCH_NO_BUILD:-} ]]; then
  ./dev build release >/dev/null # the benchmark measures the release binaries
fi
./dev infra >/dev/null
psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qAt -c "SET client_min_messages = warning" \
  -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" >/dev/null

source "$REPO/bench/lib.sh"
read -r GRPC_PORT METRICS_PORT <<<"$(free_ports 2)"
DRIVER=$BIN/bench/ledger_grants/mkt-bench-ledger-grants

# Any MKT_REWARDS_* already in the environment (worker threads, batch size, ...) passes through.
MKT_REWARDS_PG_DSN="$DSN" MKT_REWARDS_KAFKA_BOOTSTRAP=127.0.0.1:$KAFKA_PORT \
  MKT_REWARDS_GRPC_ADDRESS=127.0.0.1:$GRPC_PORT MKT_REWARDS_METRICS_ADDRESS=127.0.0.1:$METRICS_PORT \
  MKT_REWARDS_EXPIRY_INTERVAL_S=0 MKT_REWARDS_CAMPAIGN_CHANGES_TOPIC= MKT_REWARDS_LOG_FORMAT=${MKT_REWARDS_LOG_FORMAT:-json} \
  "$BIN/services/rewards/mkt-rewards" >"$WORK/rewards.log" 2>&1 &
REWARDS_PID=$!
PIDS+=("$REWARDS_PID")
for _ in $(seq 300); do
  if "$BIN/tools/healthcheck/mkt-healthcheck" "127.0.0.1:$GRPC_PORT" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$REWARDS_PID" 2>/dev/null; then tail -20 "$WORK/rewards.log" >&2; echo "mkt-rewards exited" >&2; exit 1; fi
  sleep 0.1
done
"$BIN/tools/healthcheck/mkt-healthcheck" "127.0.0.1:$GRPC_PORT" >/dev/null || { tail -20 "$WORK/rewards.log" >&2; exit 1; }

"$DRIVER" grants --target="127.0.0.1:$GRPC_PORT" --seconds="$SECONDS_MEASURED" \
  --warmup_seconds="$WARMUP_SECONDS" --in_flight="$IN_FLIGHT" | tee "$WORK/grants.out"
rss_mb=$(awk '/^VmRSS/ {printf "%.0f", $2/1024}' "/proc/$REWARDS_PID/status")
echo "mkt-rewards RSS after the load: $rss_mb MB"

# The ceiling runs alone on the machine, as the service did.
kill -TERM "$REWARDS_PID"
wait "$REWARDS_PID" || { echo "mkt-rewards did not stop cleanly" >&2; tail -20 "$WORK/rewards.log" >&2; }
PIDS=()
"$DRIVER" ceiling --dsn="$DSN" --seconds="$CEILING_SECONDS" | tee "$WORK/ceiling.out"

value() { sed -n "s/.*[[:space:]]$1=\([0-9.]*\).*/\1/p" "$2" | tail -1; }
grants=$(value grants_per_s "$WORK/grants.out")
p50=$(value p50_ms "$WORK/grants.out")
p99=$(value p99_ms "$WORK/grants.out")
ceiling=$(value ceiling_grants_per_s "$WORK/ceiling.out")
ceiling_rows=$(value ceiling_rows_per_s "$WORK/ceiling.out")
echo "grants: $grants grants/s, p50 $p50 ms, p99 $p99 ms; ceiling: $ceiling grants/s ($ceiling_rows rows/s)"
echo "BENCH ledger-grants $grants grants/s ceiling=$ceiling ratio=$(awk -v a="$grants" -v b="$ceiling" 'BEGIN {printf "%.3f", a / b}')"
