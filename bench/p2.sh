#!/usr/bin/env bash
# P2 — coupon grab through the campaigns service's gRPC participation API (PERFORMANCE.md):
# 10,000 stock, 2,000 concurrent customers, 50,000 attempts, one per customer. Starts mkt-rewards
# and mkt-campaigns (release build) on scratch databases, runs the driver, which prints the claim
# rate beside the hot-row ceiling measured in the same run on the same PostgreSQL. The driver
# creates and activates the coupon template in mkt-rewards (its stock) and checks that every claim
# is one coupon instance with its own code.
# Usage: ./bench/p2.sh   (MKT_BENCH_NO_BUILD=1 skips the build)
set -euo pipefail
REPO=${MKT_REPO:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$REPO"
PG_PORT=${MKT_PG_PORT:-25432}
KAFKA=${MKT_KAFKA_BOOTSTRAP:-127.0.0.1:29092}
RDB=bench_p2_rewards
CDB=bench_p2_campaigns
RPORT=${P2_REWARDS_PORT:-22071}
CPORT=${P2_CAMPAIGNS_PORT:-22031}
LOG=$(mktemp -d /tmp/mkt-p2.XXXX)
psqlc() { psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qAt -c "SET client_min_messages = warning" "$@"; }
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  psqlc -c "DROP DATABASE IF EXISTS $RDB WITH (FORCE)" -c "DROP DATABASE IF EXISTS $CDB WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT

if [[ -z ${MKT_BENCH_NO_BUILD:-} ]]; then
  flock /tmp/mkt-build.lock cmake --build build/release --target mkt-rewards mkt-campaigns mkt-bench-p2 >/dev/null
fi
psqlc -c "DROP DATABASE IF EXISTS $RDB WITH (FORCE)" -c "CREATE DATABASE $RDB" \
  -c "DROP DATABASE IF EXISTS $CDB WITH (FORCE)" -c "CREATE DATABASE $CDB" >/dev/null

MKT_REWARDS_PG_DSN="host=127.0.0.1 port=$PG_PORT user=postgres dbname=$RDB" \
MKT_REWARDS_GRPC_ADDRESS=127.0.0.1:$RPORT MKT_REWARDS_METRICS_ADDRESS=127.0.0.1:${P2_REWARDS_METRICS:-29471} \
MKT_REWARDS_KAFKA_BOOTSTRAP=$KAFKA MKT_REWARDS_LOG_LEVEL=warn \
  MKT_REWARDS_WORKER_THREADS=${P2_REWARDS_THREADS:-128} \
  build/release/services/rewards/mkt-rewards >"$LOG/rewards.log" 2>&1 &
PIDS+=($!)
MKT_CAMPAIGNS_PG_DSN="host=127.0.0.1 port=$PG_PORT user=postgres dbname=$CDB" \
MKT_CAMPAIGNS_GRPC_ADDRESS=127.0.0.1:$CPORT MKT_CAMPAIGNS_METRICS_ADDRESS=127.0.0.1:${P2_CAMPAIGNS_METRICS:-29431} \
MKT_CAMPAIGNS_KAFKA_BOOTSTRAP=$KAFKA MKT_CAMPAIGNS_REWARDS_ADDRESS=127.0.0.1:$RPORT \
MKT_CAMPAIGNS_SEGMENTS_ADDRESS= MKT_CAMPAIGNS_REFERENCE_SOURCE=catalog MKT_CAMPAIGNS_SCHEDULER_INTERVAL_MS=200 \
MKT_CAMPAIGNS_CUSTOMER_RATE_PER_S=${P2_CUSTOMER_RATE:-0} MKT_CAMPAIGNS_LOG_LEVEL=warn \
  MKT_CAMPAIGNS_PARTICIPATION_THREADS=${P2_PARTICIPATION_THREADS:-256} \
  build/release/services/campaigns/mkt-campaigns >"$LOG/campaigns.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
  if (exec 3<>/dev/tcp/127.0.0.1/$CPORT) 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/$RPORT) 2>/dev/null; then break; fi
  sleep 0.1
done
build/release/bench/p2/mkt-bench-p2 --campaigns=127.0.0.1:$CPORT --rewards=127.0.0.1:$RPORT \
  --dsn="host=127.0.0.1 port=$PG_PORT user=postgres dbname=$CDB" \
  --rewards_dsn="host=127.0.0.1 port=$PG_PORT user=postgres dbname=$RDB" "$@" || { tail -n 20 "$LOG"/*.log; exit 1; }
