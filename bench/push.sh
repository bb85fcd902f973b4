#!/usr/bin/env bash
# The push benchmark of issue 20: Tidings (release, pinned to core 0) on the local
# PostgreSQL and Redis pushes USERS × ROUNDS notifications to a Web Push receiver on core 1
# (examples/push_bench.rs), which decrypts every one. Prints pushes/s, the latency from
# commit to the receiver, and the server's CPU time per push.
# Usage: bench/push.sh [users] [rounds]        (default 1000 × 10 = 10,000 pushes)
# Environment: STEADY=<pushes/s> DURATION=20s   a steady rate instead of a burst (run it
#   beside loadtest/bench.sh's fan-out to see what push traffic costs live delivery: give
#   BENCH_PORT the fan-out server's port and SERVER_PID its pid, and NO_SERVER=1)
set -euo pipefail
cd "$(dirname "$0")/.."
USERS=${1:-1000}
ROUNDS=${2:-10}
PG=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PORT=${BENCH_PORT:-18097}
DB=tidings_bench_push
TARGET=${CARGO_TARGET_DIR:-target}

[ -n "${NO_BUILD:-}" ] || cargo build --release --quiet --bin tidings --example push_bench
data=$(mktemp -d)
cleanup() { [ -z "${server:-}" ] || kill "$server" 2>/dev/null; wait 2>/dev/null; rm -rf "$data"; }
trap cleanup EXIT

if [ -z "${NO_SERVER:-}" ]; then
    psql "$PG" -qc "drop database if exists $DB with (force)" -c "create database $DB"
    export DATABASE_URL=${PG%/*}/$DB REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
    export TIDINGS_DATA_DIR=$data TIDINGS_JWT_SECRET=$(head -c 48 /dev/urandom | base64)
    export TIDINGS_PUSH_ALLOW_PRIVATE_ENDPOINTS=true TIDINGS_PUSH_DEVICE_RATE=100000 RUST_LOG=warn
    taskset -c 0 "$TARGET/release/tidings" serve --listen 127.0.0.1:$PORT &
    server=$!
    SERVER_PID=$server
    for _ in $(seq 1 100); do curl -sf http://127.0.0.1:$PORT/readyz >/dev/null && break; sleep 0.1; done
fi
"$TARGET/release/tidings" user tokens --count "$USERS" --prefix pushbench >"$data/users.txt"
"$TARGET/release/tidings" user tokens --count 1 --prefix pushbench-admin --role admin >"$data/admin.txt"

steady=()
[ -z "${STEADY:-}" ] || steady=(--steady "$STEADY" --duration "${DURATION:-20s}")
taskset -c 1 "$TARGET/release/examples/push_bench" --base-url "http://127.0.0.1:$PORT" \
    --users "$data/users.txt" --admin "$data/admin.txt" --rounds "$ROUNDS" \
    ${SERVER_PID:+--server-pid "$SERVER_PID"} "${steady[@]}"
