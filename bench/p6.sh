#!/usr/bin/env bash
# P6 — idle footprint and start-up time of every service (PERFORMANCE.md).
# Starts each service built in build/release on scratch ports with a scratch database, measures
# the time from exec until it reports healthy (its database is already reachable), lets it idle,
# and reads its resident memory. Targets: <= 60 MB RSS idle, serving <= 1 s after start.
# Usage: ./dev bench P6
set -euo pipefail
REPO=${MKT_REPO:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$REPO"
PG_PORT=${MKT_PG_PORT:-25432}
KAFKA_PORT=${MKT_KAFKA_PORT:-29092}
IDLE_SECONDS=${P6_IDLE_SECONDS:-5}
BIN=build/release
WORK=$(mktemp -d /tmp/mkt-p6.XXXXXX)
PIDS=()
# Every gRPC service of the platform, in dependency order; the gateway is measured separately
# (HTTP health).
SERVICES=(channels rewards segments campaigns events)
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  for svc in "${SERVICES[@]}" gateway; do
    psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qAt -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS bench_p6_$svc WITH (FORCE)" >/dev/null 2>&1 || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

# P6 measures the release binaries; MKT_BENCH_NO_BUILD=1 measures what is built already.
[[ ${MKT_BENCH_NO_BUILD:-0} == 1 ]] || ./dev build release >/dev/null
./dev infra >/dev/null
for svc in "${SERVICES[@]}" gateway; do
  psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qAt -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS bench_p6_$svc WITH (FORCE)" -c "CREATE DATABASE bench_p6_$svc" >/dev/null
done

source "$REPO/bench/lib.sh"
now() { date +%s.%N; }
rss_mb() { awk '/^VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

# Waits until "$@" succeeds (polling every 5 ms, 10 s at most); prints the seconds it took.
time_until() {
  local start=$1; shift
  for _ in $(seq 2000); do
    if "$@" >/dev/null 2>&1; then awk -v a="$start" -v b="$(now)" 'BEGIN {printf "%.3f", b - a}'; return 0; fi
    sleep 0.005
  done
  echo "never became healthy: $*" >&2; return 1
}

declare -A START RSS PID GRPC
# Starts service $1 on scratch ports with its scratch database; records its start-up time.
start_service() {
  local svc=$1 upper=${1^^} grpc metrics start
  read -r grpc metrics <<<"$(free_ports 2)"; GRPC[$svc]=$grpc
  local -a env=(
    "MKT_${upper}_PG_DSN=host=127.0.0.1 port=$PG_PORT user=postgres dbname=bench_p6_$svc"
    "MKT_${upper}_KAFKA_BOOTSTRAP=127.0.0.1:$KAFKA_PORT"
    "MKT_${upper}_GRPC_ADDRESS=127.0.0.1:$grpc"
    "MKT_${upper}_METRICS_ADDRESS=127.0.0.1:$metrics"
    "MKT_${upper}_LOG_FORMAT=json")
  [[ $svc == channels ]] && env+=("MKT_CHANNELS_SECRET_KEY=$(openssl rand -hex 32)")
  # Its neighbours are the scratch instances started before it (dependency order).
  [[ $svc == campaigns ]] && env+=("MKT_CAMPAIGNS_REWARDS_ADDRESS=127.0.0.1:${GRPC[rewards]}"
    "MKT_CAMPAIGNS_SEGMENTS_ADDRESS=127.0.0.1:${GRPC[segments]}")
  [[ $svc == events ]] && env+=("MKT_EVENTS_REWARDS_ADDRESS=127.0.0.1:${GRPC[rewards]}")
  start=$(now)
  env "${env[@]}" "$BIN/services/$svc/mkt-$svc" >"$WORK/$svc.log" 2>&1 &
  PID[$svc]=$!; PIDS+=("$!")
  START[$svc]=$(time_until "$start" "$BIN/tools/healthcheck/mkt-healthcheck" "127.0.0.1:$grpc")
}

for svc in "${SERVICES[@]}"; do start_service "$svc"; done

read -r GW_HTTP GW_GRPC <<<"$(free_ports 2)"
start=$(now)
MKT_GATEWAY_HTTP_ADDRESS=127.0.0.1:$GW_HTTP MKT_GATEWAY_GRPC_ADDRESS=127.0.0.1:$GW_GRPC \
MKT_GATEWAY_CHANNELS_TARGET=127.0.0.1:${GRPC[channels]} \
MKT_GATEWAY_CAMPAIGNS_TARGET=127.0.0.1:${GRPC[campaigns]} \
MKT_GATEWAY_SEGMENTS_TARGET=127.0.0.1:${GRPC[segments]} \
MKT_GATEWAY_REWARDS_TARGET=127.0.0.1:${GRPC[rewards]} \
MKT_GATEWAY_EVENTS_TARGET=127.0.0.1:${GRPC[events]} \
MKT_GATEWAY_PG_DSN="host=127.0.0.1 port=$PG_PORT user=postgres dbname=bench_p6_gateway" \
MKT_GATEWAY_TOKEN_KEY=$(openssl rand -hex 32) MKT_GATEWAY_BOOTSTRAP_ADMIN_PASSWORD=$(openssl rand -hex 16) \
MKT_GATEWAY_KAFKA_BOOTSTRAP=127.0.0.1:$KAFKA_PORT MKT_GATEWAY_LOG_FORMAT=json \
  "$BIN/services/gateway/mkt-gateway" >"$WORK/gateway.log" 2>&1 &
PID[gateway]=$!; PIDS+=("$!")
START[gateway]=$(time_until "$start" curl -fsS -o /dev/null "http://127.0.0.1:$GW_HTTP/healthz")

sleep "$IDLE_SECONDS"
printf '%-10s %12s %12s\n' service start_s idle_rss_MB
for svc in "${SERVICES[@]}" gateway; do
  RSS[$svc]=$(rss_mb "${PID[$svc]}")
  printf '%-10s %12s %12s\n' "$svc" "${START[$svc]}" "${RSS[$svc]}"
done
max_rss=$(printf '%s\n' "${RSS[@]}" | sort -g | tail -1)
max_start=$(printf '%s\n' "${START[@]}" | sort -g | tail -1)
# P6 has no measured ceiling; the budget stands in its place and the ratio must stay <= 1.
echo "BENCH P6-start $max_start s ceiling=1.0 ratio=$(awk -v a="$max_start" 'BEGIN {printf "%.3f", a / 1.0}')"
echo "BENCH P6 $max_rss MB ceiling=60 ratio=$(awk -v a="$max_rss" 'BEGIN {printf "%.3f", a / 60}')"
