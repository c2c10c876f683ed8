#!/usr/bin/env bash
# P1 — event → reward, end to end (PERFORMANCE.md): business events on Kafka → mkt-events (dedupe,
# match against 200 active rules, aggregates, grant outbox) → mkt-rewards (durable, idempotent,
# double-entry, outbox) → TransferPosted facts on mkt.ledger-facts.v1.
# Starts mkt-rewards and mkt-events (release build) on scratch databases and a fresh events topic;
# the driver loads 200 rules (exactly one matches each event: one grant of 10 POINTS + 1 fen of
# budget per event), then
#   1. produces at full speed (bounded by P1_MAX_BACKLOG unfinished events) for P1_SECONDS after
#      P1_WARMUP_SECONDS and counts the events whose fact came back inside the window;
#   2. produces at a fixed P1_LATENCY_RATE events/s for P1_LATENCY_SECONDS (after 5 s) and reports
#      p50/p99 from handing the event to the producer to reading its fact (and to its commit);
# then stops the services and, on the same rewards database, runs the ledger-grants ceiling (the
# same ledger rows written straight into PostgreSQL with multi-row inserts) for
# P1_CEILING_SECONDS; grants/s become events/s through the workload's grants per event.
# Targets: >= 10,000 events/s; p99 <= 250 ms at 5,000 events/s; ratio >= 0.3.
# Usage: ./dev bench P1   (MKT_BENCH_NO_BUILD=1 skips the build; MKT_REWARDS_* / MKT_EVENTS_*
# in the environment pass through to the services)
set -euo pipefail
REPO=${MKT_REPO:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$REPO"
PG_PORT=${MKT_PG_PORT:-25432}
KAFKA=127.0.0.1:${MKT_KAFKA_PORT:-29092}
SECONDS_MEASURED=${P1_SECONDS:-60}
WARMUP_SECONDS=${P1_WARMUP_SECONDS:-5}
MAX_BACKLOG=${P1_MAX_BACKLOG:-100000}
LATENCY_RATE=${P1_LATENCY_RATE:-5000}
LATENCY_SECONDS=${P1_LATENCY_SECONDS:-30}
CEILING_SECONDS=${P1_CEILING_SECONDS:-15}
BIN=${P1_BIN:-build/release}  # another release tree with P1_BIN=build/...
EVENTS_DB=bench_p1_events
REWARDS_DB=bench_p1_rewards
EVENTS_DSN="host=127.0.0.1 port=$PG_PORT user=postgres dbname=$EVENTS_DB"
REWARDS_DSN="host=127.0.0.1 port=$PG_PORT user=postgres dbname=$REWARDS_DB"
WORK=$(mktemp -d /tmp/mkt-p1.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  for db in $EVENTS_DB $REWARDS_DB; do
    psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qAt -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

if [[ -z ${MKT_BENCH_NO_BUILD:-} ]]; then
  # Only what the benchmark runs, in the release tree, under the shared build lock.
  flock /tmp/mkt-build.lock cmake --build $BIN --target mkt-events mkt-rewards mkt-healthcheck \
    mkt-bench-p1 mkt-bench-ledger-grants >/dev/null
fi
for db in $EVENTS_DB $REWARDS_DB; do
  psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qAt -c "SET client_min_messages = warning" \
    -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null
done

source "$REPO/bench/lib.sh"
wait_healthy() { # name pid port log
  for _ in $(seq 300); do
    if "$BIN/tools/healthcheck/mkt-healthcheck" "127.0.0.1:$3" >/dev/null 2>&1; then return 0; fi
    if ! kill -0 "$2" 2>/dev/null; then tail -20 "$4" >&2; echo "$1 exited" >&2; exit 1; fi
    sleep 0.1
  done
  tail -20 "$4" >&2
  echo "$1 is not healthy" >&2
  exit 1
}
read -r REWARDS_PORT EVENTS_PORT REWARDS_METRICS_PORT EVENTS_METRICS_PORT <<<"$(free_ports 4)"
TOPIC=bench-p1.business.$(head -c4 /dev/urandom | od -An -tx1 | tr -d ' \n')

# Both services run their default configuration (a grant waits for its group commit without a
# worker thread, so rewards' default workers do not cap the batch).
MKT_REWARDS_PG_DSN="$REWARDS_DSN" MKT_REWARDS_KAFKA_BOOTSTRAP=$KAFKA \
  MKT_REWARDS_GRPC_ADDRESS=127.0.0.1:$REWARDS_PORT \
  MKT_REWARDS_METRICS_ADDRESS=127.0.0.1:$REWARDS_METRICS_PORT MKT_REWARDS_EXPIRY_INTERVAL_S=0 MKT_REWARDS_CAMPAIGN_CHANGES_TOPIC= \
  MKT_REWARDS_LOG_LEVEL=${MKT_REWARDS_LOG_LEVEL:-warn} \
  MKT_REWARDS_LOG_FORMAT=${MKT_REWARDS_LOG_FORMAT:-json} \
  "$BIN/services/rewards/mkt-rewards" >"$WORK/rewards.log" 2>&1 &
REWARDS_PID=$!
PIDS+=("$REWARDS_PID")
wait_healthy mkt-rewards "$REWARDS_PID" "$REWARDS_PORT" "$WORK/rewards.log"

MKT_EVENTS_PG_DSN="$EVENTS_DSN" MKT_EVENTS_KAFKA_BOOTSTRAP=$KAFKA \
  MKT_EVENTS_GRPC_ADDRESS=127.0.0.1:$EVENTS_PORT MKT_EVENTS_METRICS_ADDRESS=127.0.0.1:$EVENTS_METRICS_PORT \
  MKT_EVENTS_EVENTS_TOPIC="$TOPIC" MKT_EVENTS_CONSUMER_GROUP="bench-p1-$TOPIC" \
  MKT_EVENTS_DEAD_LETTER_TOPIC=bench-p1.dead-letters \
  MKT_EVENTS_CAMPAIGN_CHANGES_TOPIC=bench-p1.campaign-changes \
  MKT_EVENTS_REWARDS_ADDRESS=127.0.0.1:$REWARDS_PORT \
  MKT_EVENTS_LOG_LEVEL=${MKT_EVENTS_LOG_LEVEL:-warn} \
  MKT_EVENTS_LOG_FORMAT=${MKT_EVENTS_LOG_FORMAT:-json} \
  "$BIN/services/events/mkt-events" >"$WORK/events.log" 2>&1 &
EVENTS_PID=$!
PIDS+=("$EVENTS_PID")
wait_healthy mkt-events "$EVENTS_PID" "$EVENTS_PORT" "$WORK/events.log"

"$BIN/bench/p1/mkt-bench-p1" --events="127.0.0.1:$EVENTS_PORT" --rewards="127.0.0.1:$REWARDS_PORT" \
  --bootstrap="$KAFKA" --topic="$TOPIC" --rewards_dsn="$REWARDS_DSN" \
  --seconds="$SECONDS_MEASURED" --warmup_seconds="$WARMUP_SECONDS" --max_backlog="$MAX_BACKLOG" \
  --latency_rate="$LATENCY_RATE" --latency_seconds="$LATENCY_SECONDS" | tee "$WORK/p1.out"
for name in rewards events; do
  pid=$([[ $name == rewards ]] && echo "$REWARDS_PID" || echo "$EVENTS_PID")
  echo "mkt-$name RSS after the load: $(awk '/^VmRSS/ {printf "%.0f", $2/1024}' "/proc/$pid/status") MB"
done

# The ceiling runs alone on the machine, as the services did.
kill -TERM "$EVENTS_PID" "$REWARDS_PID"
wait "$EVENTS_PID" || echo "mkt-events did not stop cleanly" >&2
wait "$REWARDS_PID" || echo "mkt-rewards did not stop cleanly" >&2
PIDS=()
# The load leaves dead outbox rows, unvacuumed tables and dirty buffers behind; an autovacuum or a
# checkpoint landing in the ceiling's 15 s would lower it (and flatter the ratio). Settle the
# database first, so the ceiling measures the writes themselves.
settle_start=$SECONDS
psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$REWARDS_DB" -qAt -c "VACUUM (ANALYZE)" \
  -c "CHECKPOINT" >/dev/null
echo "ceiling: database settled (VACUUM, CHECKPOINT) in $((SECONDS - settle_start)) s"
"$BIN/bench/ledger_grants/mkt-bench-ledger-grants" ceiling --dsn="$REWARDS_DSN" \
  --seconds="$CEILING_SECONDS" | tee "$WORK/ceiling.out"

value() { sed -n "s/.*[[:space:]]$1=\([0-9.]*\).*/\1/p" "$2" | tail -1; }
events_per_s=$(value events_per_s "$WORK/p1.out")
ledger_per_s=$(value ledger_events_per_s "$WORK/p1.out")
grants_per_event=$(value grants_per_event "$WORK/p1.out")
p50=$(value p50_ms "$WORK/p1.out")
p99=$(value p99_ms "$WORK/p1.out")
commit_p99=$(value commit_p99_ms "$WORK/p1.out")
rate=$(value latency_rate "$WORK/p1.out")
ceiling_grants=$(value ceiling_grants_per_s "$WORK/ceiling.out")
ceiling=$(awk -v g="$ceiling_grants" -v n="$grants_per_event" 'BEGIN {printf "%.0f", g / n}')
echo "P1: $events_per_s events/s end to end (facts on Kafka), $ledger_per_s events/s committed in the ledger; ceiling $ceiling_grants grants/s at $grants_per_event grants per event"
echo "BENCH P1 p99 $p99 ms at $rate events/s (p50 $p50 ms; to the ledger commit p99 $commit_p99 ms)"
echo "BENCH P1 $events_per_s events/s ceiling=$ceiling ratio=$(awk -v a="$events_per_s" -v b="$ceiling" 'BEGIN {printf "%.3f", a / b}')"
