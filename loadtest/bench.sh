#!/usr/bin/env bash
# The standard benchmark scenarios of the load tester: Tidings (release) on PostgreSQL and
# Redis pinned to core 0, the tester pinned to core 1. Writes each run's JSON and HTML into
# the results directory and prints the markdown table the README quotes.
#
# Usage: loadtest/bench.sh [results-dir]          (default bench/results)
# Environment:
#   SCALE=0.1      multiply every connection count (try it small first; 1 = the full runs)
#   SECONDS_PER_RUN=20   how long each run writes
#   PG_ADMIN_URL   postgres://postgres@127.0.0.1:5432/postgres   REDIS_URL redis://127.0.0.1:6379
#   BENCH_PORT=18095, BENCH_ADMIN_PORT=BENCH_PORT+1   the server's public port and admin listener
#   ONLY="idle fanout latency orders routing storm"   a subset of the scenarios
#   FANOUT_RATES="10 50 100", FANOUT_SSE_RATES="100"   the fan-out runs' change rates
#   TIDINGS_BIN, TESTER_BIN, NO_BUILD=1   other binaries, unbuilt
#   SERVER_CPUS=0, TESTER_CPUS=1   the cores (taskset lists) of the server and the tester;
#                   with TIDINGS_HUB_SHARDS, compare fan-out shards on the same placement
#   PUSH_RATE=200   push traffic beside each fan-out run: this many Web Push messages a
#                   second to a decrypting receiver (examples/push_bench.rs), results
#                   named …-push<rate>; compare with a run without it
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench/results}
SCALE=${SCALE:-1}
RUN_SECONDS=${SECONDS_PER_RUN:-20}
ONLY=${ONLY:-idle fanout latency orders routing storm}
PG=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
PORT=${BENCH_PORT:-18095}
DB=tidings_bench
BASE=http://127.0.0.1:$PORT
# The server's metrics are on its admin listener, not the public port.
ADMIN=http://127.0.0.1:${BENCH_ADMIN_PORT:-$((PORT + 1))}
TARGET=${CARGO_TARGET_DIR:-target}
# Enough source addresses that 15,000 connections (and the TIME_WAITs of the previous
# phase) never run out of ephemeral ports.
SOURCES=127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5

n() { awk -v n="$1" -v s="$SCALE" 'BEGIN { v = int(n * s); print (v < 1 ? 1 : v) }'; }

TIDINGS=${TIDINGS_BIN:-$TARGET/release/tidings}
TESTER=${TESTER_BIN:-$TARGET/release/tidings-loadtest}
[ -n "${NO_BUILD:-}" ] || cargo build --release --quiet -p tidings --bin tidings --example push_bench -p tidings-loadtest --bin tidings-loadtest
PUSHER=${PUSHER_BIN:-$TARGET/release/examples/push_bench}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

psql "$PG" -qc "drop database if exists $DB with (force)" -c "create database $DB"
redis-cli -u "$REDIS_URL" ping >/dev/null
export DATABASE_URL=${PG%/*}/$DB
data=$(mktemp -d)
export TIDINGS_DATA_DIR=$data TIDINGS_JWT_SECRET=$(head -c 48 /dev/urandom | base64)
export TIDINGS_ADMIN_LISTEN=${ADMIN#http://}
export TIDINGS_AUTH_RATE_PER_IP=0 TIDINGS_AUTH_RATE_PER_EMAIL=0 RUST_LOG=warn
export TIDINGS_MAX_CONNECTIONS_PER_USER=100000 TIDINGS_DB_MAX_CONNECTIONS=${TIDINGS_DB_MAX_CONNECTIONS:-16}
export LOADTEST_ADMIN_EMAIL=bench-admin@example.com LOADTEST_ADMIN_PASSWORD="bench admin password"

TIDINGS_PASSWORD="$LOADTEST_ADMIN_PASSWORD" "$TIDINGS" user create --email "$LOADTEST_ADMIN_EMAIL" --role admin >/dev/null
# One password hash for all: ten thousand users in seconds.
"$TIDINGS" user tokens --count "$(n 15000)" --prefix bench-customer --role customer > "$data/customers.txt"
"$TIDINGS" user tokens --count 20 --prefix bench-staff --role staff > "$data/staff.txt"

# Push traffic beside the fan-out: its receiver is on 127.0.0.1.
SUFFIX=
if [ -n "${PUSH_RATE:-}" ]; then
    export TIDINGS_PUSH_ALLOW_PRIVATE_ENDPOINTS=true TIDINGS_PUSH_DEVICE_RATE=100000
    "$TIDINGS" user tokens --count 1000 --prefix bench-push > "$data/push.txt"
    "$TIDINGS" user tokens --count 1 --prefix bench-push-admin --role admin > "$data/push-admin.txt"
    SUFFIX=-push$PUSH_RATE
fi
# Starts the push traffic for a run (long enough to cover its connecting and its writes).
pusher() {
    [ -n "${PUSH_RATE:-}" ] || return 0
    taskset -c 1 "$PUSHER" --base-url $BASE --users "$data/push.txt" --admin "$data/push-admin.txt" \
        --steady "$PUSH_RATE" --duration "$((RUN_SECONDS + 15))s" --server-pid "$server" \
        > "$OUT/$1.push.txt" 2>&1 &
    push_pid=$!
}
# Waits for the run's push traffic to end, if there was any.
pushed() {
    [ -z "${push_pid:-}" ] || wait "$push_pid" || true
    push_pid=
}

ulimit -n 20000
server=
# A fresh server: memory figures then include what the server grows to hold that many
# connections, as a freshly deployed instance would.
restart_server() {
    if [ -n "$server" ]; then kill "$server"; wait "$server" 2>/dev/null || true; fi
    taskset -c "${SERVER_CPUS:-0}" "$TIDINGS" serve --listen 127.0.0.1:$PORT &
    server=$!
    for _ in $(seq 1 100); do curl -sf $BASE/readyz >/dev/null && return; sleep 0.2; done
    echo "the server did not become ready" >&2
    exit 1
}
trap 'kill $server 2>/dev/null; rm -rf "$data"' EXIT
restart_server

# Every run: pinned to core 1 (TESTER_CPUS), against the server's PID, JSON and HTML into $OUT.
tester() {
    local name=$1 scenario=$2
    shift 2
    echo "== $name: $scenario $*" >&2
    taskset -c "${TESTER_CPUS:-1}" "$TESTER" "$scenario" --base-url $BASE --server-pid $server \
        --tokens "$data/customers.txt" --source-addrs $SOURCES \
        --json "$OUT/$name.json" --html "$OUT/$name.html" "$@" || true
    # The server's own view (relay and delivery lag histograms) of the run.
    curl -sf $ADMIN/metrics > "$OUT/$name.metrics" || true
}

for scenario in $ONLY; do
    case $scenario in
    idle)
        # One transport at a time, so each figure is that transport's own.
        tester idle-ws idle --ws "$(n 15000)" --users "$(n 15000)" \
            --topics inventory,orders --duration 5s --ramp 3000
        restart_server
        tester idle-sse idle --ws 0 --sse "$(n 15000)" --users "$(n 15000)" \
            --topics inventory,orders --duration 5s --ramp 3000
        restart_server
        ;;
    fanout)
        for rate in ${FANOUT_RATES:-10 50 100}; do
            pusher "fanout-ws-$rate$SUFFIX"
            tester "fanout-ws-$rate$SUFFIX" fanout --ws "$(n 10000)" --users 2000 --rate $rate --duration "${RUN_SECONDS}s"
            pushed
        done
        for rate in ${FANOUT_SSE_RATES-100}; do
            pusher "fanout-sse-$rate$SUFFIX"
            tester "fanout-sse-$rate$SUFFIX" fanout --ws 0 --sse "$(n 10000)" --users 2000 --rate $rate --duration "${RUN_SECONDS}s"
            pushed
        done
        ;;
    latency)
        # 1,000 subscribers and 100 changes per second, on a fresh server.
        restart_server
        tester fanout-1k-100 fanout --ws "$(n 1000)" --users 1000 --rate 100 --duration "${RUN_SECONDS}s"
        ;;
    orders)
        # The highest rate whose order p99 stays under 100 ms, doubling from 50 per second.
        best=""
        for rate in 50 100 200 400 800 1600; do
            tester "orders-$rate" orders --users "$(n 2000)" --staff 20 --staff-tokens "$data/staff.txt" \
                --rate $rate --duration "${RUN_SECONDS}s"
            p99=$(jq '.write_latency_by_kind_ms.orders.p99 // 1e9' "$OUT/orders-$rate.json" 2>/dev/null || echo 1e9)
            sustained=$(jq --argjson r $rate '.writes_by_kind.orders / .measured_seconds >= 0.9 * $r' "$OUT/orders-$rate.json" 2>/dev/null || echo false)
            if awk -v p="$p99" 'BEGIN { exit !(p < 100) }' && [ "$sustained" = true ]; then
                best=$rate
            else
                break
            fi
        done
        if [ -n "$best" ]; then
            cp "$OUT/orders-$best.json" "$OUT/orders.json"
            cp "$OUT/orders-$best.html" "$OUT/orders.html"
        fi
        ;;
    routing)
        # Per-user routing: the same order rate with 1,000 and with 10,000 customers each on
        # their own orders stream; the server's CPU per delivered event should not grow.
        for users in 1000 10000; do
            tester "routing-$(n $users)" orders --users "$(n $users)" --staff 0 --rate 100 --duration "${RUN_SECONDS}s"
        done
        ;;
    storm)
        tester storm storm --ws "$(n 10000)" --users 2000 --rate 50 --duration "${RUN_SECONDS}s" --drop 0.5
        ;;
    esac
done

# The table: one row per run.
{
    echo "| run | connections | writes/s | deliveries/s | p50 ms | p99 ms | p99.9 ms | lost | KiB/conn | server cores | server µs/delivery | tester cores | tester µs/delivery | recovery s |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    for f in "$OUT"/*.json; do
        jq -r --arg run "$(basename "$f" .json)" '
            def r(x): if x == null then "–" else (x * 100 | round / 100 | tostring) end;
            "| \($run) | \(.subscribers) | \(r(.writes / .measured_seconds)) | \(r(.deliveries_per_second)) | \(r(.delivery_latency_ms.p50)) | \(r(.delivery_latency_ms.p99)) | \(r(.delivery_latency_ms.p999)) | \(.lost) | \(r(.server_kib_per_connection)) | \(r(.server_cpu_cores)) | \(if (.deliveries_per_second // 0) > 0 then r(.server_cpu_cores * 1e6 / .deliveries_per_second) else "–" end) | \(r(.tester_cpu_cores)) | \(r(.tester_cpu_us_per_delivery)) | \(r(.recovery_seconds)) |"' "$f"
    done
} | tee "$OUT/table.md"
