#!/usr/bin/env bash
# P3 — the gateway's overhead on a wallet read (PERFORMANCE.md): signed REST
# `GET /v1/customers/{id}/wallet` through mkt-gateway, measured with wrk, against the same
# backend's `Benefits.GetWallet` called over plain gRPC with as many calls in flight as wrk has
# connections (gRPC's callback API), on the same customers, in the same run. Then a rate-limited
# run at P3_RATE (5,000 req/s) for the p99.
#
# The gateway gathers the wallet reads that arrive while its earlier ones are in flight into
# Benefits.GetWallets calls (decision 029); the ceiling stays unary GetWallet, a read per call, as a
# channel integrating over gRPC would make it. The runs print the gateway's mean batch.
#
# Starts release mkt-rewards, mkt-channels and mkt-gateway on scratch databases and free ports,
# creates P3_CHANNELS channels through the admin REST API (POST /admin/v1/sessions, then
# /admin/v1/channels: the secret is in the answer once) and seeds P3_CUSTOMERS customers with
# points and coupons in mkt-rewards (mkt-bench-p3 seed).
#
# How the signatures are made: every /v1 request needs a fresh X-Nonce and an HMAC, and wrk's Lua
# has no HMAC, so mkt-bench-p3 pre-signs one line per request (its own nonce, the current
# timestamp) right before each wrk run and bench/p3/signed.lua sends each line once; the runs are
# far shorter than the 300 s timestamp window. Replay protection stays on: a replayed line would
# be refused (401) and the run reported as failed.
#
# Configuration that differs from the product's defaults, and why:
#   - the rate limits are off (MKT_GATEWAY_CHANNEL_RATE / CUSTOMER_RATE / OPERATOR_RATE = 0):
#     500/s per channel and 20/s per customer would measure the limiter, not the gateway;
#   - the load is spread over P3_CHANNELS (16) channels, as several channels would send it
#     (with the channel rate off, one channel's replay window may hold all of nonce_max_total's
#     8,000,000 nonces, so its nonce cap does not bind here);
#   - log level warn for all three services (no per-request access log), as in the other benches.
# Environment: P3_CUSTOMERS (1000), P3_CONNECTIONS (64), P3_THREADS (2, wrk threads),
#   P3_SECONDS (10), P3_RATE (5000), P3_RATE_SECONDS (15), P3_CHANNELS (16), P3_MAX_RATE
#   (30000: requests pre-signed per second of a full-speed run), MKT_BENCH_NO_BUILD=1 skips the
#   build. Needs wrk (Debian package `wrk`), curl and jq.
# Usage: ./dev bench P3
set -euo pipefail
REPO=${MKT_REPO:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$REPO"
PG_PORT=${MKT_PG_PORT:-25432}
KAFKA=127.0.0.1:${MKT_KAFKA_PORT:-29092}
CUSTOMERS=${P3_CUSTOMERS:-1000}
CONNECTIONS=${P3_CONNECTIONS:-64}
THREADS=${P3_THREADS:-2}
SECONDS_MEASURED=${P3_SECONDS:-10}
RATE=${P3_RATE:-5000}
RATE_SECONDS=${P3_RATE_SECONDS:-15}
NCHANNELS=${P3_CHANNELS:-16}
MAX_RATE=${P3_MAX_RATE:-30000}
ORG=bank-a
BIN=build/release
DRIVER=$BIN/bench/p3/mkt-bench-p3
RDB=bench_p3_rewards
CDB=bench_p3_channels
GDB=bench_p3_gateway
ADMIN_PASSWORD=p3-admin-$RANDOM$RANDOM
WORK=$(mktemp -d /tmp/mkt-p3.XXXXXX)
psqlc() { psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qAt -c "SET client_min_messages = warning" "$@"; }
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  psqlc -c "DROP DATABASE IF EXISTS $RDB WITH (FORCE)" -c "DROP DATABASE IF EXISTS $CDB WITH (FORCE)" \
    -c "DROP DATABASE IF EXISTS $GDB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() {
  echo "p3: $*" >&2
  for f in "$WORK"/*.log; do [[ -f $f ]] && { echo "---- $(basename "$f") (tail)" >&2; tail -n 15 "$f" >&2; }; done
  exit 1
}

for tool in wrk curl jq; do
  command -v "$tool" >/dev/null || fail "$tool is missing (apt-get install $tool)"
done
if [[ -z ${MKT_BENCH_NO_BUILD:-} ]]; then
  flock /tmp/mkt-build.lock cmake --build build/release \
    --target mkt-rewards mkt-channels mkt-gateway mkt-healthcheck mkt-bench-p3 >/dev/null
fi
psqlc -c "DROP DATABASE IF EXISTS $RDB WITH (FORCE)" -c "CREATE DATABASE $RDB" \
  -c "DROP DATABASE IF EXISTS $CDB WITH (FORCE)" -c "CREATE DATABASE $CDB" \
  -c "DROP DATABASE IF EXISTS $GDB WITH (FORCE)" -c "CREATE DATABASE $GDB" >/dev/null

source "$REPO/bench/lib.sh"
read -r RPORT CHPORT GPORT RMETRICS CHMETRICS GGRPC <<<"$(free_ports 6)"
dsn() { echo "host=127.0.0.1 port=$PG_PORT user=postgres dbname=$1"; }

MKT_REWARDS_PG_DSN="$(dsn $RDB)" MKT_REWARDS_KAFKA_BOOTSTRAP=$KAFKA \
  MKT_REWARDS_GRPC_ADDRESS=127.0.0.1:$RPORT MKT_REWARDS_METRICS_ADDRESS=127.0.0.1:$RMETRICS \
  MKT_REWARDS_EXPIRY_INTERVAL_S=0 MKT_REWARDS_CAMPAIGN_CHANGES_TOPIC= MKT_REWARDS_LOG_LEVEL=warn \
  $BIN/services/rewards/mkt-rewards >"$WORK/rewards.log" 2>&1 &
REWARDS_PID=$!
PIDS+=("$REWARDS_PID")
MKT_CHANNELS_PG_DSN="$(dsn $CDB)" MKT_CHANNELS_KAFKA_BOOTSTRAP=$KAFKA \
  MKT_CHANNELS_GRPC_ADDRESS=127.0.0.1:$CHPORT MKT_CHANNELS_METRICS_ADDRESS=127.0.0.1:$CHMETRICS \
  MKT_CHANNELS_SECRET_KEY="$(openssl rand -hex 32)" MKT_CHANNELS_LOG_LEVEL=warn \
  $BIN/services/channels/mkt-channels >"$WORK/channels.log" 2>&1 &
PIDS+=($!)
MKT_GATEWAY_HTTP_ADDRESS=127.0.0.1:$GPORT MKT_GATEWAY_GRPC_ADDRESS=127.0.0.1:$GGRPC \
  MKT_GATEWAY_CHANNELS_TARGET=127.0.0.1:$CHPORT MKT_GATEWAY_REWARDS_TARGET=127.0.0.1:$RPORT \
  MKT_GATEWAY_CAMPAIGNS_TARGET=127.0.0.1:1 MKT_GATEWAY_SEGMENTS_TARGET=127.0.0.1:1 \
  MKT_GATEWAY_KAFKA_BOOTSTRAP=$KAFKA MKT_GATEWAY_PG_DSN="$(dsn $GDB)" \
  MKT_GATEWAY_TOKEN_KEY="$(openssl rand -hex 32)" MKT_GATEWAY_BOOTSTRAP_ADMIN_PASSWORD="$ADMIN_PASSWORD" \
  MKT_GATEWAY_CHANNEL_RATE=0 MKT_GATEWAY_CUSTOMER_RATE=0 MKT_GATEWAY_OPERATOR_RATE=0 \
  MKT_GATEWAY_LOG_LEVEL=warn \
  $BIN/services/gateway/mkt-gateway >"$WORK/gateway.log" 2>&1 &
GATEWAY_PID=$!
PIDS+=("$GATEWAY_PID")

for port in $RPORT $CHPORT; do
  for _ in $(seq 300); do
    $BIN/tools/healthcheck/mkt-healthcheck 127.0.0.1:$port >/dev/null 2>&1 && break
    sleep 0.1
  done
  $BIN/tools/healthcheck/mkt-healthcheck 127.0.0.1:$port >/dev/null 2>&1 || fail "a backend on :$port did not start"
done
for _ in $(seq 300); do
  curl -sf http://127.0.0.1:$GPORT/healthz >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf http://127.0.0.1:$GPORT/healthz >/dev/null || fail "mkt-gateway did not start"

# Channels, through the admin REST API as an operator does it.
admin() { # METHOD PATH [JSON]
  curl -s -X "$1" "http://127.0.0.1:$GPORT$2" -H 'Content-Type: application/json' \
    ${TOKEN:+-H "Authorization: Bearer $TOKEN"} ${3:+--data "$3"}
}
TOKEN=
for _ in $(seq 50); do # the gateway creates the bootstrap admin when its database is first reached
  TOKEN=$(admin POST /admin/v1/sessions "{\"operator_id\":\"admin\",\"password\":\"$ADMIN_PASSWORD\"}" | jq -r '.token // empty')
  [[ -n $TOKEN ]] && break
  sleep 0.2
done
[[ -n $TOKEN ]] || fail "cannot sign in as the bootstrap admin"
: >"$WORK/channels.tsv"
for i in $(seq "$NCHANNELS"); do
  answer=$(admin POST /admin/v1/channels "{\"code\":\"p3_$i\",\"display_name\":\"P3 channel $i\",\"org_id\":\"$ORG\"}")
  jq -r '[.channel.id, .secret] | @tsv' <<<"$answer" >>"$WORK/channels.tsv" 2>/dev/null ||
    fail "creating a channel failed: $answer"
done
grep -qv '^null' "$WORK/channels.tsv" || fail "creating channels failed: $(cat "$WORK/channels.tsv")"

$DRIVER seed --rewards=127.0.0.1:$RPORT --org=$ORG --customers="$CUSTOMERS" || fail "seeding failed"

sign() { # OUT COUNT [TARGET]
  $DRIVER sign --channels="$WORK/channels.tsv" --customers="$CUSTOMERS" --count="$2" \
    --target="${3:-wallet}" --out="$1"
}
# One request by hand first: the wallet must be a real one (200, seeded points).
sign "$WORK/probe.tsv" 1
IFS=$'\t' read -r target channel ts nonce sig <"$WORK/probe.tsv"
probe=$(curl -s -w '\n%{http_code}' "http://127.0.0.1:$GPORT$target" -H "X-Channel-Id: $channel" \
  -H "X-Timestamp: $ts" -H "X-Nonce: $nonce" -H "X-Signature: $sig")
[[ ${probe##*$'\n'} == 200 ]] || fail "the probe wallet read failed: $probe"
echo "p3: probe $target -> ${probe%$'\n'*}" | cut -c1-300

# CPU accounting, to show where the two cores went: ticks of a process, and of the whole machine
# (busy, total) from /proc/stat.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
CPU_MARK=()
cpu_mark() { CPU_MARK=("$(cpu_ticks "$GATEWAY_PID")" "$(cpu_ticks "$REWARDS_PID")" $(machine_ticks)); }
cpu_since_mark() { # prints "cpu: gateway X cores, rewards Y cores, machine Z% busy"
  local now=($(cpu_ticks "$GATEWAY_PID") $(cpu_ticks "$REWARDS_PID") $(machine_ticks))
  awk -v g=$((now[0] - CPU_MARK[0])) -v r=$((now[1] - CPU_MARK[1])) -v b=$((now[2] - CPU_MARK[2])) \
    -v t=$((now[3] - CPU_MARK[3])) -v cores="$(nproc)" 'BEGIN {
      secs = t / cores; printf "cpu: gateway %.2f cores, rewards %.2f cores, machine %.0f%% busy", g / secs, r / secs, 100 * b / t }'
}
# wrk_run NAME SECONDS RATE [TARGET [MAX_RATE]]: pre-signs, runs wrk, leaves $WORK/NAME.wrk.
wrk_run() {
  local name=$1 seconds=$2 rate=$3 target=${4:-wallet} max=${5:-$MAX_RATE} count
  if ((rate > 0)); then count=$((rate * (seconds + 2) * 12 / 10)); else count=$((max * (seconds + 2))); fi
  sign "$WORK/$name.tsv" "$count" "$target"
  cpu_mark
  P3_REQUESTS="$WORK/$name.tsv" P3_THREADS=$THREADS P3_RATE=$rate \
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${seconds}s" --latency -s bench/p3/signed.lua \
    "http://127.0.0.1:$GPORT" >"$WORK/$name.wrk" 2>&1 || fail "wrk failed: $(cat "$WORK/$name.wrk")"
  cpu_since_mark >>"$WORK/$name.wrk"
  rm -f "$WORK/$name.tsv"
}
# hist_counts PREFIX METHOD: "<≤ 1 ms> <≤ 10 ms> <all>" from a latency histogram of the gateway's
# /metrics (mkt_gateway_http: from the request read to the answer handed back; mkt_gateway_backend:
# the gRPC call alone: the wallet reads' GetWallets calls, decision 029).
hist_counts() {
  curl -s "http://127.0.0.1:$GPORT/metrics" | awk -v name="$1_latency_seconds" -v m="method=\"$2\"" '
    index($0, name "_bucket{") == 1 && index($0, m) {
      if (index($0, "le=\"0.001\"")) a = $NF
      if (index($0, "le=\"0.01\"")) b = $NF
    }
    index($0, name "_count{") == 1 && index($0, m) { c = $NF }
    END { printf "%d %d %d\n", a, b, c }'
}
WALLET_ROUTE='GET /v1/customers/{customer_id}/wallet'
# latency_mark / latency_since_mark: where the time of the wallet requests since the mark went,
# as seen by the gateway, to tell its own latency from the client's and the machine's.
latency_mark() {
  LAT_MARK=($(hist_counts mkt_gateway_http "$WALLET_ROUTE") $(hist_counts mkt_gateway_backend rewards/GetWallets))
}
latency_since_mark() {
  local now=($(hist_counts mkt_gateway_http "$WALLET_ROUTE") $(hist_counts mkt_gateway_backend rewards/GetWallets))
  awk -v a="${LAT_MARK[*]}" -v b="${now[*]}" 'BEGIN {
    split(a, x, " "); split(b, y, " ")
    for (i = 1; i <= 6; i++) d[i] = y[i] - x[i]
    if (d[3] == 0 || d[6] == 0) { print "no wallet requests seen by the gateway"; exit }
    printf "inside the gateway %.2f%% over 1 ms, %.2f%% over 10 ms; its GetWallets calls %.2f%% over 1 ms, %.2f%% over 10 ms\n",
      100 * (d[3] - d[1]) / d[3], 100 * (d[3] - d[2]) / d[3], 100 * (d[6] - d[4]) / d[6], 100 * (d[6] - d[5]) / d[6]
  }'
}

# The gateway's wallet reads and the GetWallets calls that carried them (decision 029), to show
# the mean batch of a run: batch_mark before it, batch_since_mark after.
batch_counts() {
  curl -s "http://127.0.0.1:$GPORT/metrics" | awk '
    index($0, "mkt_gateway_wallet_reads_total{") == 1 && index($0, "what=\"reads\"") { r = $NF }
    index($0, "mkt_gateway_wallet_reads_total{") == 1 && index($0, "what=\"calls\"") { c = $NF }
    END { printf "%d %d\n", r, c }'
}
batch_mark() { BATCH_MARK=($(batch_counts)); }
batch_since_mark() {
  local now=($(batch_counts))
  awk -v r=$((now[0] - BATCH_MARK[0])) -v c=$((now[1] - BATCH_MARK[1])) 'BEGIN {
    if (c == 0) { print "no wallet calls"; exit }
    printf "%d wallet reads in %d backend calls (mean batch %.1f)\n", r, c, r / c }'
}

# Figures from a wrk report: ok_rate (2xx per second), non2xx, p50/p99 in ms.
wrk_value() { # NAME FIELD
  awk -v field="$2" '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /requests in/ { total = $1; secs = $4; sub(/s,?$/, "", secs) }
    /Non-2xx or 3xx responses:/ { bad = $NF }
    /^ +50%/ { p50 = ms($2) }
    /^ +99%/ { p99 = ms($2) }
    /Socket errors/ { errs = $0 }
    END {
      if (field == "ok_rate") printf "%.0f", (total - bad) / secs
      if (field == "non2xx") printf "%d", bad
      if (field == "p50") printf "%.2f", p50
      if (field == "p99") printf "%.2f", p99
      if (field == "errors") print errs
    }' "$WORK/$1.wrk"
}
report() { # NAME LABEL
  echo "p3: $2: $(wrk_value "$1" ok_rate) req/s (2xx), p50 $(wrk_value "$1" p50) ms, p99 $(wrk_value "$1" p99) ms," \
    "non-2xx $(wrk_value "$1" non2xx)$(wrk_value "$1" errors); $(tail -n1 "$WORK/$1.wrk")"
}

echo "p3: $CUSTOMERS customers, $NCHANNELS channels, $CONNECTIONS connections / gRPC calls in flight, machine load: $(uptime | sed 's/.*load/load/')"
cpu_mark
sleep 3
echo "p3: idle 3 s, $(cpu_since_mark)"
wrk_run warm 3 0
report warm "REST warm-up (3 s)"
batch_mark
wrk_run rest "$SECONDS_MEASURED" 0
report rest "REST wallet, full speed"
echo "p3: full speed: $(batch_since_mark)"
cpu_mark
$DRIVER grpc --rewards=127.0.0.1:$RPORT --org=$ORG --customers="$CUSTOMERS" \
  --concurrency="$CONNECTIONS" --warmup=2 --seconds="$SECONDS_MEASURED" | tee "$WORK/grpc.out" ||
  fail "the gRPC ceiling run failed"
echo "p3: gRPC run (with its 2 s warm-up), $(cpu_since_mark)"
wrk_run gwonly 5 0 channel $((MAX_RATE * 4))
report gwonly "GET /v1/channel (gateway alone: signature, no backend call)"
latency_mark
batch_mark
wrk_run paced "$RATE_SECONDS" "$RATE"
report paced "REST wallet paced at $RATE req/s"
echo "p3: paced at $RATE req/s: $(latency_since_mark); $(batch_since_mark)"
# The gateway's own share at the target rate: signed GET /v1/channel (no backend call) paced at
# P3_RATE, for when the wallet backend cannot sustain that rate (informative).
wrk_run gwpaced 10 "$RATE" channel
report gwpaced "GET /v1/channel paced at $RATE req/s (gateway alone)"
# The same at half the measured REST throughput: the latency the gateway adds when the backend is
# not saturated (informative; the target is the run above).
LOW_RATE=${P3_LOW_RATE:-$(($(wrk_value rest ok_rate) / 2))}
if ((LOW_RATE > 0 && LOW_RATE < RATE)); then
  wrk_run low 10 "$LOW_RATE"
  report low "REST wallet paced at $LOW_RATE req/s (half the full-speed figure)"
fi

rest=$(wrk_value rest ok_rate)
ceiling=$(sed -n 's/.*grpc_req_per_s=\([0-9.]*\).*/\1/p' "$WORK/grpc.out")
bad=0
for run in rest paced gwonly gwpaced; do
  n=$(wrk_value $run non2xx)
  if ((n > 0)); then
    echo "p3: WARNING: $n non-2xx answers in the $run run (ran out of pre-signed requests, or refused); raise P3_MAX_RATE"
    bad=1
  fi
done
echo "p3: machine load at the end: $(uptime | sed 's/.*load/load/')"
echo "P3 p99=$(wrk_value paced p99) ms at $(wrk_value paced ok_rate) req/s (asked $RATE req/s; target p99 <= 10 ms)"
echo "BENCH P3 $rest req/s ceiling=$ceiling ratio=$(awk -v a="$rest" -v b="$ceiling" 'BEGIN {printf "%.2f", a / b}')"
exit $bad
