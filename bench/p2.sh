#!/usr/bin/env bash
# P2 — coupon grab through the REST gateway (PERFORMANCE.md): 10,000 stock, 2,000 concurrent
# customers (one keep-alive connection each), 50,000 signed `POST /v1/campaigns/{id}/participations`
# attempts, one coupon per customer. Starts mkt-rewards, mkt-campaigns, mkt-channels and
# mkt-gateway (release build) on scratch databases, creates the `mobile_banking` channel of
# bank-a through the admin REST API, runs the driver, which prints the claim rate beside the
# hot-row ceiling measured in the same run on the same PostgreSQL. The driver creates and
# activates the coupon template in mkt-rewards (its stock) and checks that every claim is one
# coupon instance with its own code.
# The gateway's per-channel rate limit is off (MKT_GATEWAY_CHANNEL_RATE=0): at its default of
# 500 requests/s the benchmark would measure the limiter; the per-customer limit stays on. Its
# handler threads (which wait on the backend call) are 256 instead of 16 and 4,096 requests may
# queue for them (default 1,024): with the defaults, 2,000 connections at once are mostly
# answered 429 "the gateway is busy" (load shedding), which is not what P2 measures.
# P2_VIA=grpc calls the campaigns service's gRPC Participate directly instead (no gateway).
# Usage: ./bench/p2.sh [driver flags]   (MKT_BENCH_NO_BUILD=1 skips the build)
set -euo pipefail
REPO=${MKT_REPO:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$REPO"
PG_PORT=${MKT_PG_PORT:-25432}
KAFKA=${MKT_KAFKA_BOOTSTRAP:-127.0.0.1:29092}
VIA=${P2_VIA:-gateway}
RDB=bench_p2_rewards
CDB=bench_p2_campaigns
HDB=bench_p2_channels
GDB=bench_p2_gateway
RPORT=${P2_REWARDS_PORT:-22071}
CPORT=${P2_CAMPAIGNS_PORT:-22031}
LOG=$(mktemp -d /tmp/mkt-p2.XXXX)
psqlc() { psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qAt -c "SET client_min_messages = warning" "$@"; }
PIDS=()
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  psqlc -c "DROP DATABASE IF EXISTS $RDB WITH (FORCE)" -c "DROP DATABASE IF EXISTS $CDB WITH (FORCE)" \
    -c "DROP DATABASE IF EXISTS $HDB WITH (FORCE)" -c "DROP DATABASE IF EXISTS $GDB WITH (FORCE)" >/dev/null 2>&1 || true
  # A breaker that opened explains DEPENDENCY_UNAVAILABLE refusals (the log is complete once the
  # gateway stopped).
  grep -ho '"msg":"circuit breaker [^"]*"' "$LOG"/gateway.log 2>/dev/null | sed 's/^"msg":"/p2: gateway: /; s/"$//' || true
  if ((rc == 0)); then rm -rf "$LOG"; else echo "p2: the services' logs are in $LOG" >&2; fi
}
trap cleanup EXIT

if [[ -z ${MKT_BENCH_NO_BUILD:-} ]]; then
  flock /tmp/mkt-build.lock cmake --build build/release --target mkt-rewards mkt-campaigns \
    mkt-channels mkt-gateway mkt-healthcheck mkt-bench-p2 >/dev/null
fi
for db in $RDB $CDB $HDB $GDB; do
  psqlc -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null
done

MKT_REWARDS_PG_DSN="host=127.0.0.1 port=$PG_PORT user=postgres dbname=$RDB" \
MKT_REWARDS_GRPC_ADDRESS=127.0.0.1:$RPORT MKT_REWARDS_METRICS_ADDRESS=127.0.0.1:${P2_REWARDS_METRICS:-29471} \
MKT_REWARDS_KAFKA_BOOTSTRAP=$KAFKA MKT_REWARDS_CAMPAIGN_CHANGES_TOPIC= MKT_REWARDS_LOG_LEVEL=warn \
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
VIA_FLAGS=(--via=grpc)
if [[ $VIA == gateway ]]; then
  source "$REPO/bench/lib.sh"
  read -r HPORT GPORT HMETRICS GGRPC <<<"$(free_ports 4)"
  ADMIN_PASSWORD=p2-admin-$RANDOM$RANDOM
  MKT_CHANNELS_PG_DSN="host=127.0.0.1 port=$PG_PORT user=postgres dbname=$HDB" MKT_CHANNELS_KAFKA_BOOTSTRAP=$KAFKA \
    MKT_CHANNELS_GRPC_ADDRESS=127.0.0.1:$HPORT MKT_CHANNELS_METRICS_ADDRESS=127.0.0.1:$HMETRICS \
    MKT_CHANNELS_SECRET_KEY="$(openssl rand -hex 32)" MKT_CHANNELS_LOG_LEVEL=warn \
    build/release/services/channels/mkt-channels >"$LOG/channels.log" 2>&1 &
  PIDS+=($!)
  MKT_GATEWAY_HTTP_ADDRESS=127.0.0.1:$GPORT MKT_GATEWAY_GRPC_ADDRESS=127.0.0.1:$GGRPC \
    MKT_GATEWAY_CHANNELS_TARGET=127.0.0.1:$HPORT MKT_GATEWAY_REWARDS_TARGET=127.0.0.1:$RPORT \
    MKT_GATEWAY_CAMPAIGNS_TARGET=127.0.0.1:$CPORT MKT_GATEWAY_SEGMENTS_TARGET=127.0.0.1:1 \
    MKT_GATEWAY_KAFKA_BOOTSTRAP=$KAFKA MKT_GATEWAY_PG_DSN="host=127.0.0.1 port=$PG_PORT user=postgres dbname=$GDB" \
    MKT_GATEWAY_TOKEN_KEY="$(openssl rand -hex 32)" MKT_GATEWAY_BOOTSTRAP_ADMIN_PASSWORD="$ADMIN_PASSWORD" \
    MKT_GATEWAY_CHANNEL_RATE=0 MKT_GATEWAY_LOG_LEVEL=warn \
    MKT_GATEWAY_HANDLER_THREADS=${P2_GATEWAY_HANDLERS:-256} MKT_GATEWAY_MAX_QUEUED_REQUESTS=4096 \
    build/release/services/gateway/mkt-gateway >"$LOG/gateway.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do
    build/release/tools/healthcheck/mkt-healthcheck 127.0.0.1:$HPORT >/dev/null 2>&1 &&
      curl -sf http://127.0.0.1:$GPORT/healthz >/dev/null 2>&1 && break
    sleep 0.1
  done
  admin() { # METHOD PATH [JSON]
    curl -s -X "$1" "http://127.0.0.1:$GPORT$2" -H 'Content-Type: application/json' \
      ${TOKEN:+-H "Authorization: Bearer $TOKEN"} ${3:+--data "$3"}
  }
  TOKEN=
  for _ in $(seq 50); do
    TOKEN=$(admin POST /admin/v1/sessions "{\"operator_id\":\"admin\",\"password\":\"$ADMIN_PASSWORD\"}" | jq -r '.token // empty')
    [[ -n $TOKEN ]] && break
    sleep 0.2
  done
  [[ -n $TOKEN ]] || { echo "p2: cannot sign in to the gateway" >&2; tail -n 20 "$LOG"/*.log; exit 1; }
  answer=$(admin POST /admin/v1/channels '{"code":"mobile_banking","display_name":"Mobile banking (P2)","org_id":"bank-a"}')
  CHANNEL_ID=$(jq -r '.channel.id // empty' <<<"$answer")
  CHANNEL_SECRET=$(jq -r '.secret // empty' <<<"$answer")
  [[ -n $CHANNEL_ID && -n $CHANNEL_SECRET ]] || { echo "p2: creating the channel failed: $answer" >&2; exit 1; }
  VIA_FLAGS=(--via=gateway --gateway=127.0.0.1:$GPORT --channel_id="$CHANNEL_ID" --channel_secret="$CHANNEL_SECRET")
fi
ulimit -n 8192 2>/dev/null || true
build/release/bench/p2/mkt-bench-p2 "${VIA_FLAGS[@]}" --campaigns=127.0.0.1:$CPORT --rewards=127.0.0.1:$RPORT \
  --dsn="host=127.0.0.1 port=$PG_PORT user=postgres dbname=$CDB" \
  --rewards_dsn="host=127.0.0.1 port=$PG_PORT user=postgres dbname=$RDB" "$@" || { tail -n 20 "$LOG"/*.log; exit 1; }
if [[ $VIA == gateway ]]; then
  refused_here=$(curl -s "http://127.0.0.1:$GPORT/metrics" | awk '$1 == "mkt_gateway_sold_out_refusals_total" {printf "%d", $2}')
  echo "p2: gateway: ${refused_here:-0} claims refused from its copy of the sold-out board (decision 023)"
fi
