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
pgbench -c 8 -j 2 -T "$SECONDS_TO_RUN" "${PG%/*}/pgbench_ref" 2>/dev/null | grep -E "^tps|latency average"

echo "tidings orders:"
BENCH_ADMIN_EMAIL=bench-admin@example.com BENCH_ADMIN_PASSWORD="bench admin password" \
    taskset -c 1 target/release/examples/orders_bench --base-url http://127.0.0.1:$PORT \
    --duration "${SECONDS_TO_RUN}s" --concurrency "$CONCURRENCY"
psql "$PG" -qc "drop database if exists pgbench_ref with (force)"
