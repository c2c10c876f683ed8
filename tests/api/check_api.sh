#!/usr/bin/env bash
# The channel REST API (/v1) checked against its own OpenAPI document with schemathesis: no
# answer may be a 5xx, every answer must match the response schema the document declares, and its
# status must be one the operation documents.
#
# Starts its own stack on free ports and scratch databases (mkt-rewards, mkt-segments,
# mkt-campaigns, mkt-channels, mkt-gateway; debug build by default), seeds the demo data with
# mkt-seed-demo (orgs, channels and their secrets, customers with points, segments, an ONLINE coupon
# campaign of bank-a) and a few more customers with coupons, locked redemptions and QR tokens
# (mkt-bench-p3 seed), then runs `schemathesis run` against the gateway's GET /openapi.json,
# restricted to the paths under /v1/, whatever the document lists at the time. Every /v1 request is
# signed as bank-a's mobile_banking channel per the contract by tests/api/schemathesis_hooks.py
# (fresh nonce; fresh Idempotency-Key on POSTs), which also puts seeded ids into about half of the
# requests so the success paths are reached. Exits non-zero on any failure. Bounded:
# CHECK_API_MAX_EXAMPLES test cases per operation and phase (default 100); the schemathesis run is
# killed (a failure) after CHECK_API_MAX_TIME seconds (default 300; schemathesis' own --max-time is
# a budget it always spends in full, not a cap).
#
# schemathesis comes from PyPI into a venv under .local/ (gitignored; reused when present).
# Environment: MKT_CHECK_API_BIN (build dir, default build/debug), MKT_CHECK_API_NO_BUILD=1 (use the
# binaries as they are), CHECK_API_MAX_EXAMPLES, CHECK_API_MAX_TIME, CHECK_API_SEED (schemathesis
# --seed), CHECK_API_WORKERS (1: with more threads, CPython 3.11's ast.parse inside Hypothesis
# intermittently fails with "AST constructor recursion depth mismatch"), CHECK_API_KEEP=1 (keep the
# work dir: logs, report), CHECK_API_CHECKS (schemathesis checks, default
# not_a_server_error,response_schema_conformance,status_code_conformance: every status answered must
# be one the operation documents), CHECK_API_PAUSE=N (wait N s with the stack up
# before the run, to call it by hand: see stack.env in the work dir). Extra arguments go to
# `schemathesis run`.
# Usage: tests/api/check_api.sh
set -euo pipefail
REPO=${MKT_REPO:-$(cd "$(dirname "$0")/../.." && pwd)}
cd "$REPO"
PG_PORT=${MKT_PG_PORT:-25432}
KAFKA=127.0.0.1:${MKT_KAFKA_PORT:-29092}
BIN=${MKT_CHECK_API_BIN:-build/debug}
LOCAL=${MKT_LOCAL_DIR:-$REPO/.local}
VENV=$LOCAL/schemathesis-venv
SCHEMATHESIS_VERSION=${CHECK_API_SCHEMATHESIS_VERSION:-4.32.5}
MAX_EXAMPLES=${CHECK_API_MAX_EXAMPLES:-100}
MAX_TIME=${CHECK_API_MAX_TIME:-300}
WORKERS=${CHECK_API_WORKERS:-1}
CHECKS=${CHECK_API_CHECKS:-not_a_server_error,response_schema_conformance,status_code_conformance}
ORG=bank-a
RUN=chk$(printf '%04x%04x' $RANDOM $RANDOM)
DBS=(rewards segments campaigns channels gateway)
ADMIN_PASSWORD=check-api-$RUN
WORK=$(mktemp -d /tmp/mkt-check-api.XXXXXX)
START=$(date +%s)
psqlc() { psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qAt -c "SET client_min_messages = warning" "$@"; }
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  for db in "${DBS[@]}"; do psqlc -c "DROP DATABASE IF EXISTS ${RUN}_$db WITH (FORCE)" >/dev/null 2>&1 || true; done
  if [[ -n ${CHECK_API_KEEP:-} ]]; then echo "check-api: logs and report kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
fail() {
  echo "check-api: $*" >&2
  for f in "$WORK"/*.log; do [[ -f $f ]] && { echo "---- $(basename "$f") (tail)" >&2; tail -n 15 "$f" >&2; }; done
  exit 1
}

# ---- schemathesis in its venv.
if [[ ! -x $VENV/bin/schemathesis ]] || ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  echo "check-api: installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    { apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null; } || fail "python3 -m venv is missing (apt-get install python3-venv)"
  fi
  python3 -m venv --clear "$VENV"
  "$VENV/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION" || fail "pip install schemathesis failed"
fi
command -v jq >/dev/null || fail "jq is missing (apt-get install jq)"

# ---- The stack.
if [[ -z ${MKT_CHECK_API_NO_BUILD:-} ]]; then
  flock /tmp/mkt-build.lock cmake --build "$BIN" --target mkt-rewards mkt-segments mkt-campaigns \
    mkt-channels mkt-gateway mkt-healthcheck mkt-seed-demo mkt-bench-p3 >"$WORK/build.log" 2>&1 || fail "build failed: $(tail -n 30 "$WORK/build.log")"
fi
for db in "${DBS[@]}"; do psqlc -c "CREATE DATABASE ${RUN}_$db" >/dev/null; done
dsn() { echo "host=127.0.0.1 port=$PG_PORT user=postgres dbname=${RUN}_$1"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
RPORT=$(free_port)
SPORT=$(free_port)
CAPORT=$(free_port)
CHPORT=$(free_port)
GPORT=$(free_port)
# Topics of this check only, so nothing it sends reaches a running local stack's consumers.
TOPIC=check-api.$RUN

env MKT_REWARDS_PG_DSN="$(dsn rewards)" MKT_REWARDS_KAFKA_BOOTSTRAP=$KAFKA \
  MKT_REWARDS_GRPC_ADDRESS=127.0.0.1:$RPORT MKT_REWARDS_METRICS_ADDRESS=127.0.0.1:$(free_port) \
  MKT_REWARDS_EXPIRY_INTERVAL_S=0 MKT_REWARDS_CAMPAIGN_CHANGES_TOPIC= MKT_REWARDS_QR_SIGNING_KEY="$(openssl rand -hex 32)" MKT_REWARDS_QR_TTL_S=120 \
  "$BIN/services/rewards/mkt-rewards" >"$WORK/rewards.log" 2>&1 &
PIDS+=($!)
env MKT_SEGMENTS_PG_DSN="$(dsn segments)" MKT_SEGMENTS_KAFKA_BOOTSTRAP=$KAFKA \
  MKT_SEGMENTS_GRPC_ADDRESS=127.0.0.1:$SPORT MKT_SEGMENTS_METRICS_ADDRESS=127.0.0.1:$(free_port) \
  MKT_SEGMENTS_PROFILES_TOPIC=$TOPIC.profiles MKT_SEGMENTS_BUSINESS_EVENTS_TOPIC= \
  MKT_SEGMENTS_DEAD_LETTER_TOPIC=$TOPIC.profiles.dead MKT_SEGMENTS_REPLICA_ID=$RUN \
  MKT_SEGMENTS_RFM_INTERVAL_S=0 \
  "$BIN/services/segments/mkt-segments" >"$WORK/segments.log" 2>&1 &
PIDS+=($!)
env MKT_CHANNELS_PG_DSN="$(dsn channels)" MKT_CHANNELS_KAFKA_BOOTSTRAP=$KAFKA \
  MKT_CHANNELS_GRPC_ADDRESS=127.0.0.1:$CHPORT MKT_CHANNELS_METRICS_ADDRESS=127.0.0.1:$(free_port) \
  MKT_CHANNELS_SECRET_KEY="$(openssl rand -hex 32)" \
  "$BIN/services/channels/mkt-channels" >"$WORK/channels.log" 2>&1 &
PIDS+=($!)
env MKT_CAMPAIGNS_PG_DSN="$(dsn campaigns)" MKT_CAMPAIGNS_KAFKA_BOOTSTRAP=$KAFKA \
  MKT_CAMPAIGNS_GRPC_ADDRESS=127.0.0.1:$CAPORT MKT_CAMPAIGNS_METRICS_ADDRESS=127.0.0.1:$(free_port) \
  MKT_CAMPAIGNS_REWARDS_ADDRESS=127.0.0.1:$RPORT MKT_CAMPAIGNS_SEGMENTS_ADDRESS=127.0.0.1:$SPORT \
  MKT_CAMPAIGNS_REFERENCE_SOURCE=services MKT_CAMPAIGNS_SCHEDULER_INTERVAL_MS=200 \
  MKT_CAMPAIGNS_EVENTS_ADDRESS= \
  "$BIN/services/campaigns/mkt-campaigns" >"$WORK/campaigns.log" 2>&1 &
PIDS+=($!)
# Rate limits off: the check sends the same customers quickly; 429s would hide the backends.
env MKT_GATEWAY_HTTP_ADDRESS=127.0.0.1:$GPORT MKT_GATEWAY_GRPC_ADDRESS=127.0.0.1:$(free_port) \
  MKT_GATEWAY_CHANNELS_TARGET=127.0.0.1:$CHPORT MKT_GATEWAY_REWARDS_TARGET=127.0.0.1:$RPORT \
  MKT_GATEWAY_CAMPAIGNS_TARGET=127.0.0.1:$CAPORT MKT_GATEWAY_SEGMENTS_TARGET=127.0.0.1:$SPORT \
  MKT_GATEWAY_EVENTS_TARGET=127.0.0.1:1 \
  MKT_GATEWAY_KAFKA_BOOTSTRAP=$KAFKA MKT_GATEWAY_PG_DSN="$(dsn gateway)" \
  MKT_GATEWAY_BUSINESS_EVENTS_TOPIC=$TOPIC.business-events MKT_GATEWAY_TRACKING_TOPIC=$TOPIC.tracking \
  MKT_GATEWAY_TOKEN_KEY="$(openssl rand -hex 32)" MKT_GATEWAY_BOOTSTRAP_ADMIN_PASSWORD="$ADMIN_PASSWORD" \
  MKT_GATEWAY_SCRYPT_N=1024 MKT_GATEWAY_CHANNEL_RATE=0 MKT_GATEWAY_CUSTOMER_RATE=0 \
  MKT_GATEWAY_OPERATOR_RATE=0 \
  "$BIN/services/gateway/mkt-gateway" >"$WORK/gateway.log" 2>&1 &
PIDS+=($!)

for port in $RPORT $SPORT $CHPORT $CAPORT; do
  for _ in $(seq 600); do
    "$BIN/tools/healthcheck/mkt-healthcheck" 127.0.0.1:$port >/dev/null 2>&1 && break
    sleep 0.1
  done
  "$BIN/tools/healthcheck/mkt-healthcheck" 127.0.0.1:$port >/dev/null 2>&1 || fail "a backend on :$port did not start"
done
for _ in $(seq 600); do
  curl -sf http://127.0.0.1:$GPORT/healthz >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf http://127.0.0.1:$GPORT/healthz >/dev/null || fail "mkt-gateway did not start"

# ---- Data: the demo data (orgs, channels with their secrets, customers with points, benefit
# templates, segments, an ONLINE coupon campaign of bank-a), then customers with coupons, locked
# redemptions and QR tokens in mkt-rewards.
"$BIN/tools/seed_demo/mkt-seed-demo" --channels 127.0.0.1:$CHPORT --rewards 127.0.0.1:$RPORT \
  --segments 127.0.0.1:$SPORT --campaigns 127.0.0.1:$CAPORT --out "$WORK/credentials.json" \
  --gateway-url "http://127.0.0.1:$GPORT" >"$WORK/seed-demo.log" 2>&1 || fail "mkt-seed-demo failed: $(tail -n 20 "$WORK/seed-demo.log")"
# The check signs as bank-a's mobile_banking channel: the demo campaign is placed on that channel
# code, and the gateway lets a channel act only as itself.
CHANNEL_ID=$(jq -r --arg org "$ORG" '.channels[] | select(.org_id == $org and .code == "mobile_banking") | .channel_id' "$WORK/credentials.json")
CHANNEL_SECRET=$(jq -r --arg org "$ORG" '.channels[] | select(.org_id == $org and .code == "mobile_banking") | .secret' "$WORK/credentials.json")
[[ -n $CHANNEL_ID && -n $CHANNEL_SECRET ]] || fail "mkt-seed-demo wrote no mobile_banking channel of $ORG"
CAMPAIGNS=$(jq -r '[.campaigns.coupon_campaign.campaign_id // empty] | join(",")' "$WORK/credentials.json")
"$BIN/bench/p3/mkt-bench-p3" seed --rewards=127.0.0.1:$RPORT --org=$ORG --prefix=CUST \
  --customers=20 --locks=10 --qr=10 --threads=4 --fund_campaigns="$CAMPAIGNS" \
  --out="$WORK/seeded.tsv" >"$WORK/seed.log" 2>&1 ||
  fail "seeding failed: $(cat "$WORK/seed.log")"
CUSTOMERS=$(jq -r --arg org "$ORG" '[.customers[] | select(.org_id == $org) | .customer_id] | join(",")' "$WORK/credentials.json")
curl -sf "http://127.0.0.1:$GPORT/openapi.json" >"$WORK/openapi.json" || fail "GET /openapi.json failed"
echo "check-api: stack up and seeded in $(($(date +%s) - START)) s; campaigns: ${CAMPAIGNS:-none}; channel operations in the document:" \
  "$(jq -r '[.paths | to_entries[] | select(.key | startswith("/v1/")) | .value | keys[]] | length' "$WORK/openapi.json")"

cat >"$WORK/stack.env" <<EOF
GATEWAY=http://127.0.0.1:$GPORT
CHANNEL_ID=$CHANNEL_ID
CHANNEL_SECRET=$CHANNEL_SECRET
REWARDS=127.0.0.1:$RPORT
CAMPAIGNS_GRPC=127.0.0.1:$CAPORT
SEEDED=$WORK/seeded.tsv
EOF
if [[ -n ${CHECK_API_PAUSE:-} ]]; then # to reproduce a failure by hand against the same stack
  echo "check-api: the stack is up ($WORK/stack.env); waiting $CHECK_API_PAUSE s before the run"
  sleep "$CHECK_API_PAUSE"
fi

# ---- schemathesis.
set +e
(
  cd "$WORK"
  export PYTHONPATH="$REPO/tests/api" SCHEMATHESIS_HOOKS=schemathesis_hooks
  export MKT_API_CHANNEL_ID=$CHANNEL_ID MKT_API_CHANNEL_SECRET=$CHANNEL_SECRET MKT_API_SEED_FILE=$WORK/seeded.tsv \
    MKT_API_CUSTOMERS=$CUSTOMERS MKT_API_CAMPAIGNS=$CAMPAIGNS MKT_API_CHANNEL_CODE=mobile_banking
  timeout "$MAX_TIME" "$VENV/bin/schemathesis" run "http://127.0.0.1:$GPORT/openapi.json" \
    --url "http://127.0.0.1:$GPORT" \
    --include-path-regex '^/v1/' \
    --checks "$CHECKS" \
    --phases examples,coverage,fuzzing,stateful \
    --max-examples "$MAX_EXAMPLES" --workers "$WORKERS" \
    --generation-with-security-parameters false --generation-database none \
    --request-timeout 10 --no-color \
    ${CHECK_API_SEED:+--seed "$CHECK_API_SEED"} \
    --report junit --report-dir "$WORK/report" "$@"
) 2>&1 | tee "$WORK/schemathesis.out"
status=${PIPESTATUS[0]}
set -e
echo "check-api: schemathesis exited $status after $(($(date +%s) - START)) s in all"
if ((status != 0)); then
  echo "check-api: FAILED; gateway log tail:" >&2
  tail -n 20 "$WORK/gateway.log" >&2
  exit 1
fi
