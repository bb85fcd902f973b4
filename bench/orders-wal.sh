#!/usr/bin/env bash
# WAL written per order: the write amplification of the order path, which (unlike orders/s)
# does not depend on what else the machine is doing. A fresh database, the release server
# (unpinned), 1 s of warm-up, then an 8 s orders run at 16 in flight; the WAL position is
# read before and after. With WALDUMP=1 also the records by type (pg_waldump --stats=record,
# needs read access to the cluster's pg_wal: run as root or postgres).
# Usage: bench/orders-wal.sh [bin dir]   (default target/release, built first)
set -euo pipefail
cd "$(dirname "$0")/.."
PG=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PORT=${BENCH_PORT:-18112}
DB=tidings_bench_wal
if [ $# -gt 0 ]; then
    BIN=$(realpath "$1")
else
    cargo build --release --quiet --bin tidings --example orders_bench
    BIN=$(realpath target/release)
    cp "$BIN/examples/orders_bench" "$BIN/orders_bench"
fi
psql "$PG" -qc "drop database if exists $DB with (force)" -c "create database $DB" 2>/dev/null
export DATABASE_URL=${PG%/*}/$DB
data=$(mktemp -d)
export TIDINGS_DATA_DIR=$data TIDINGS_JWT_SECRET=$(head -c 48 /dev/urandom | base64)
export TIDINGS_AUTH_RATE_PER_IP=0 TIDINGS_AUTH_RATE_PER_EMAIL=0 RUST_LOG=warn TIDINGS_DB_MAX_CONNECTIONS=16
export BENCH_ADMIN_EMAIL=bench-admin@example.com BENCH_ADMIN_PASSWORD="bench admin password"
TIDINGS_PASSWORD=$BENCH_ADMIN_PASSWORD "$BIN/tidings" user create --email "$BENCH_ADMIN_EMAIL" --role admin >/dev/null
"$BIN/tidings" serve --listen 127.0.0.1:$PORT &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 1 50); do curl -sf http://127.0.0.1:$PORT/readyz >/dev/null && break; sleep 0.2; done
"$BIN/orders_bench" --base-url http://127.0.0.1:$PORT --duration 1s --concurrency 16 >/dev/null
w0=$(psql "$PG" -Atc "select pg_current_wal_lsn()")
o0=$(psql "$DATABASE_URL" -Atc "select count(*) from orders")
"$BIN/orders_bench" --base-url http://127.0.0.1:$PORT --duration 8s --concurrency 16 | tail -1
w1=$(psql "$PG" -Atc "select pg_current_wal_lsn()")
o1=$(psql "$DATABASE_URL" -Atc "select count(*) from orders")
psql "$PG" -Atc "select round(pg_wal_lsn_diff('$w1', '$w0') / ($o1 - $o0)) || ' bytes of WAL per order over ' || ($o1 - $o0) || ' orders'"
if [ -n "${WALDUMP:-}" ]; then
    version=$(psql "$PG" -Atc "show server_version_num" | cut -c1-2)
    "/usr/lib/postgresql/$version/bin/pg_waldump" --stats=record -p "$(psql "$PG" -Atc 'show data_directory')/pg_wal" \
        -s "$w0" -e "$w1" | sort -t'(' -k3 -rn | head -20
fi
