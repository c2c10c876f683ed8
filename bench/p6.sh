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
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  for db in bench_p6_channels bench_p6_rewards; do
    psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qAt -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

./dev build release >/dev/null  # P6 measures the release binaries
./dev infra >/dev/null
for db in bench_p6_channels bench_p6_rewards; do
  psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qAt -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null
done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
rss_mb() { awk '/^VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

CH_GRPC=$(free_port); CH_METRICS=$(free_port); GW_HTTP=$(free_port); GW_GRPC=$(free_port)
RW_GRPC=$(free_port); RW_METRICS=$(free_port)

# Waits until "$@" succeeds (polling every 5 ms, 10 s at most); prints the seconds it took.
time_until() {
  local start=$1; shift
  for _ in $(seq 2000); do
    if "$@" >/dev/null 2>&1; then awk -v a="$start" -v b="$(now)" 'BEGIN {printf "%.3f", b - a}'; return 0; fi
    sleep 0.005
  done
  echo "never became healthy: $*" >&2; return 1
}

start=$(now)
MKT_CHANNELS_PG_DSN="host=127.0.0.1 port=$PG_PORT user=postgres dbname=bench_p6_channels" \
MKT_CHANNELS_KAFKA_BOOTSTRAP=127.0.0.1:$KAFKA_PORT MKT_CHANNELS_GRPC_ADDRESS=127.0.0.1:$CH_GRPC \
MKT_CHANNELS_METRICS_ADDRESS=127.0.0.1:$CH_METRICS MKT_CHANNELS_SECRET_KEY=$(openssl rand -hex 32) \
MKT_CHANNELS_LOG_FORMAT=json "$BIN/services/channels/mkt-channels" >"$WORK/channels.log" 2>&1 &
CH_PID=$!; PIDS+=("$CH_PID")
ch_start=$(time_until "$start" "$BIN/tools/healthcheck/mkt-healthcheck" "127.0.0.1:$CH_GRPC")

start=$(now)
MKT_GATEWAY_HTTP_ADDRESS=127.0.0.1:$GW_HTTP MKT_GATEWAY_GRPC_ADDRESS=127.0.0.1:$GW_GRPC MKT_GATEWAY_CHANNELS_TARGET=127.0.0.1:$CH_GRPC \
MKT_GATEWAY_KAFKA_BOOTSTRAP=127.0.0.1:$KAFKA_PORT MKT_GATEWAY_LOG_FORMAT=json \
  "$BIN/services/gateway/mkt-gateway" >"$WORK/gateway.log" 2>&1 &
GW_PID=$!; PIDS+=("$GW_PID")
gw_start=$(time_until "$start" curl -fsS -o /dev/null "http://127.0.0.1:$GW_HTTP/healthz")

start=$(now)
MKT_REWARDS_PG_DSN="host=127.0.0.1 port=$PG_PORT user=postgres dbname=bench_p6_rewards" \
MKT_REWARDS_KAFKA_BOOTSTRAP=127.0.0.1:$KAFKA_PORT MKT_REWARDS_GRPC_ADDRESS=127.0.0.1:$RW_GRPC \
MKT_REWARDS_METRICS_ADDRESS=127.0.0.1:$RW_METRICS MKT_REWARDS_LOG_FORMAT=json \
  "$BIN/services/rewards/mkt-rewards" >"$WORK/rewards.log" 2>&1 &
RW_PID=$!; PIDS+=("$RW_PID")
rw_start=$(time_until "$start" "$BIN/tools/healthcheck/mkt-healthcheck" "127.0.0.1:$RW_GRPC")

sleep "$IDLE_SECONDS"
ch_rss=$(rss_mb "$CH_PID"); gw_rss=$(rss_mb "$GW_PID"); rw_rss=$(rss_mb "$RW_PID")

printf '%-10s %12s %12s\n' service start_s idle_rss_MB
printf '%-10s %12s %12s\n' channels "$ch_start" "$ch_rss" gateway "$gw_start" "$gw_rss" \
  rewards "$rw_start" "$rw_rss"
max_rss=$(printf '%s\n' "$ch_rss" "$gw_rss" "$rw_rss" | sort -g | tail -1)
max_start=$(printf '%s\n' "$ch_start" "$gw_start" "$rw_start" | sort -g | tail -1)
# P6 has no measured ceiling; the budget stands in its place and the ratio must stay <= 1.
echo "BENCH P6-start $max_start s ceiling=1.0 ratio=$(awk -v a="$max_start" 'BEGIN {printf "%.3f", a / 1.0}')"
echo "BENCH P6 $max_rss MB ceiling=60 ratio=$(awk -v a="$max_rss" 'BEGIN {printf "%.3f", a / 60}')"
