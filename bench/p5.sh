#!/usr/bin/env bash
# P5 — batch grant (PERFORMANCE.md): 1,000,000 customers × 100 points, exactly once, resumable
# after kill -9, in <= 5 minutes. Runs the release build of the e2e test
# tests/e2e/batch_grant_kill_test with MKT_BATCH_KILL_CUSTOMERS=$P5_CUSTOMERS: it starts
# mkt-rewards, mkt-segments and mkt-campaigns on fresh databases, uploads the customers as LIST
# segments, takes a BATCH_GRANT campaign through maker-checker approval, kills mkt-campaigns with
# SIGKILL half-way, restarts it, waits for COMPLETED and checks in the rewards database that every
# customer holds exactly one grant of 100 points (and CheckIntegrity). The figure is publication →
# COMPLETED in seconds (the kill and restart included). The ceiling is P1's per-grant ceiling: the
# ledger-grants driver writing the same ledger rows straight into PostgreSQL (grants/s, measured
# in the same run on a scratch rewards schema); ratio = (customers / seconds) / ceiling.
# Usage: ./bench/p5.sh   (P5_CUSTOMERS=200000 for a shorter run; MKT_BENCH_NO_BUILD=1 skips the build)
set -euo pipefail
REPO=${MKT_REPO:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$REPO"
PG_PORT=${MKT_PG_PORT:-25432}
KAFKA=${MKT_KAFKA_BOOTSTRAP:-127.0.0.1:${MKT_KAFKA_PORT:-29092}}
CUSTOMERS=${P5_CUSTOMERS:-1000000}
CEILING_SECONDS=${P5_CEILING_SECONDS:-15}
BIN=build/release
DB=bench_p5_ceiling
DSN="host=127.0.0.1 port=$PG_PORT user=postgres dbname=$DB"
WORK=$(mktemp -d /tmp/mkt-p5.XXXXXX)
PIDS=()
psqlc() { psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qAt -c "SET client_min_messages = warning" "$@"; }
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  psqlc -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

if [[ -z ${MKT_BENCH_NO_BUILD:-} ]]; then
  flock /tmp/mkt-build.lock cmake --build build/release --target mkt-rewards mkt-segments \
    mkt-campaigns batch_grant_kill_test mkt-bench-ledger-grants mkt-healthcheck >/dev/null
fi

# The batch: correctness is the test's (it fails unless every customer got exactly one grant).
MKT_TEST_PG_DSN="host=127.0.0.1 port=$PG_PORT user=postgres dbname=postgres" \
MKT_TEST_KAFKA_BOOTSTRAP=$KAFKA MKT_BATCH_KILL_CUSTOMERS=$CUSTOMERS \
  "$BIN/tests/e2e/batch_grant_kill_test" | tee "$WORK/batch.out"
grep -q '^\[  PASSED  \] 1 test' "$WORK/batch.out" || { echo "P5: the batch grant test failed" >&2; exit 1; }
seconds=$(sed -n 's/^P5_SECONDS \([0-9.]*\).*/\1/p' "$WORK/batch.out" | tail -1)

# The ceiling, alone on the machine: a rewards schema (migrated by mkt-rewards, then stopped),
# the same grants' rows written straight into PostgreSQL.
psqlc -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" >/dev/null
source "$REPO/bench/lib.sh"
read -r GRPC_PORT METRICS_PORT <<<"$(free_ports 2)"
MKT_REWARDS_PG_DSN="$DSN" MKT_REWARDS_KAFKA_BOOTSTRAP=$KAFKA \
  MKT_REWARDS_GRPC_ADDRESS=127.0.0.1:$GRPC_PORT MKT_REWARDS_METRICS_ADDRESS=127.0.0.1:$METRICS_PORT \
  MKT_REWARDS_EXPIRY_INTERVAL_S=0 MKT_REWARDS_CAMPAIGN_CHANGES_TOPIC= "$BIN/services/rewards/mkt-rewards" >"$WORK/rewards.log" 2>&1 &
REWARDS_PID=$!
PIDS+=("$REWARDS_PID")
for _ in $(seq 300); do
  if "$BIN/tools/healthcheck/mkt-healthcheck" "127.0.0.1:$GRPC_PORT" >/dev/null 2>&1; then break; fi
  sleep 0.1
done
kill -TERM "$REWARDS_PID"
wait "$REWARDS_PID" || true
PIDS=()
"$BIN/bench/ledger_grants/mkt-bench-ledger-grants" ceiling --dsn="$DSN" --seconds="$CEILING_SECONDS" |
  tee "$WORK/ceiling.out"
value() { sed -n "s/.*[[:space:]]$1=\([0-9.]*\).*/\1/p" "$2" | tail -1; }
ceiling=$(value ceiling_grants_per_s "$WORK/ceiling.out")
rate=$(awk -v n="$CUSTOMERS" -v s="$seconds" 'BEGIN {printf "%.0f", n / s}')
echo "batch grant: $CUSTOMERS customers in $seconds s ($rate grants/s, kill -9 and restart included; target <= 300 s for 1,000,000); ceiling $ceiling grants/s"
echo "BENCH P5 $seconds s ceiling=$ceiling ratio=$(awk -v r="$rate" -v c="$ceiling" 'BEGIN {printf "%.3f", r / c}')"
