#!/usr/bin/env bash
# The orders benchmark of issue 3: Tidings (release, pinned to core 0) on the local
# PostgreSQL, driven over HTTP from core 1, beside pgbench's TPC-B-like rate in the same run.
# Usage: bench/orders.sh [seconds] [concurrency]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TO_RUN=${1:-20}
CONCURRENCY=${2:-16}
PG=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PORT=${BENCH_PORT:-18090}
DB=tidings_bench_orders

cargo build --release --quiet --bin tidings --example orders_bench

psql "$PG" -qc "drop database if exists $DB with (force)" -c "create database $DB"
psql "$PG" -qc "drop database if exists pgbench_ref with (force)" -c "create database pgbench_ref"
export DATABASE_URL=${PG%/*}/$DB
data=$(mktemp -d)
export TIDINGS_DATA_DIR=$data TIDINGS_JWT_SECRET=$(head -c 48 /dev/urandom | base64)
export TIDINGS_AUTH_RATE_PER_IP=0 TIDINGS_AUTH_RATE_PER_EMAIL=0 RUST_LOG=warn
export TIDINGS_DB_MAX_CONNECTIONS=${TIDINGS_DB_MAX_CONNECTIONS:-16}
TIDINGS_PASSWORD="bench admin password" target/release/tidings user create --email bench-admin@example.com --role admin >/dev/null
taskset -c 0 target/release/tidings serve --listen 127.0.0.1:$PORT &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 1 50); do curl -sf http://127.0.0.1:$PORT/readyz >/dev/null && break; sleep 0.2; done

echo "pgbench (TPC-B-like, 8 clients, ${SECONDS_TO_RUN}s):"
pgbench -q -i -s 10 "${PG%/*}/pgbench_ref" >/dev/null 2>&1
# Each run starts on a fresh checkpoint, so that neither pays for a timed one (full-page
# images of every page first touched after it) that falls by chance inside its window.
psql "$PG" -qc checkpoint
pgbench -c 8 -j 2 -T "$SECONDS_TO_RUN" "${PG%/*}/pgbench_ref" 2>/dev/null | grep -E "^tps|latency average"

# CPU ticks of a process list, of the whole machine idle, and the orders so far.
ticks() { for pid in "$@"; do awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null; done | awk '{t += $1} END {print t + 0}'; }
sample() {
    echo "$(ticks "$server") $(ticks "$driver") $(ticks $(pgrep -u postgres)) $(awk '/^cpu /{print $5 + $6}' /proc/stat) $(psql "$DATABASE_URL" -Atc 'select count(*) from orders')"
}
# Where the CPU goes, over 10 s in the middle of the measured run: the server, the driver,
# PostgreSQL (every postgres process: on a shared machine, other databases' work counts too).
cpu_breakdown() {
    sleep $((SECONDS_TO_RUN / 10 + SECONDS_TO_RUN / 4))
    local a b hz
    hz=$(getconf CLK_TCK)
    read -ra a <<<"$(sample)"
    sleep 10
    read -ra b <<<"$(sample)"
    awk -v s=$((b[0] - a[0])) -v d=$((b[1] - a[1])) -v p=$((b[2] - a[2])) -v i=$((b[3] - a[3])) -v n=$((b[4] - a[4])) -v hz="$hz" 'BEGIN {
        printf "cpu over 10 s (%d orders): cores server %.2f, driver %.2f, postgres %.2f, idle %.2f; ms of CPU per order: server %.3f, driver %.3f, postgres %.3f\n",
            n, s / hz / 10, d / hz / 10, p / hz / 10, i / hz / 10, s * 1000 / hz / n, d * 1000 / hz / n, p * 1000 / hz / n }'
}

psql "$PG" -qc checkpoint
echo "tidings orders:"
BENCH_ADMIN_EMAIL=bench-admin@example.com BENCH_ADMIN_PASSWORD="bench admin password" \
    taskset -c 1 target/release/examples/orders_bench --base-url http://127.0.0.1:$PORT \
    --duration "${SECONDS_TO_RUN}s" --concurrency "$CONCURRENCY" &
driver=$!
cpu_breakdown &
breakdown=$!
wait $driver
wait $breakdown
psql "$PG" -qc "drop database if exists pgbench_ref with (force)"
