#!/usr/bin/env bash
# Two builds of Tidings placing orders side by side, in the same seconds: each with its
# own database, server (both pinned to core 0) and driver (both on core 1), CONCURRENCY
# orders in flight each. Whichever needs less CPU per order (its own and PostgreSQL's)
# places more of them; the ratio of the two rates cancels the drift of a shared machine,
# whose speed changed by 2x from one run of bench/orders.sh to the next (2026-12-07).
# Run it both ways round (A B, then B A): the first started may have a small head start.
#
# Usage: bench/orders-ab.sh DIR_A DIR_B [seconds] [concurrency]
#   DIR_A, DIR_B: directories holding a release `tidings` and `orders_bench` each, e.g.
#   copies of target/release/tidings and target/release/examples/orders_bench.
set -euo pipefail
A=${1:?DIR_A} B=${2:?DIR_B} SECONDS_TO_RUN=${3:-30} CONCURRENCY=${4:-8}
PG=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
BASE_PORT=${BENCH_PORT:-18190}
data=$(mktemp -d)
export TIDINGS_DATA_DIR=$data TIDINGS_JWT_SECRET=$(head -c 48 /dev/urandom | base64)
export TIDINGS_AUTH_RATE_PER_IP=0 TIDINGS_AUTH_RATE_PER_EMAIL=0 RUST_LOG=warn
export TIDINGS_DB_MAX_CONNECTIONS=$CONCURRENCY
servers=()
drivers=()
trap 'kill "${servers[@]}" 2>/dev/null; rm -rf "$data"' EXIT

side_dir() { if [ "$1" = a ]; then echo "$A"; else echo "$B"; fi; }
port_of() { if [ "$1" = a ]; then echo "$BASE_PORT"; else echo $((BASE_PORT + 1)); fi; }

for side in a b; do
    db=tidings_bench_ab_$side
    psql "$PG" -qc "drop database if exists $db with (force)" -c "create database $db" 2>/dev/null
    export DATABASE_URL=${PG%/*}/$db
    TIDINGS_PASSWORD="bench admin password" "$(side_dir $side)/tidings" user create \
        --email bench-admin@example.com --role admin >/dev/null
    taskset -c 0 "$(side_dir $side)/tidings" serve --listen "127.0.0.1:$(port_of $side)" &
    servers+=($!)
    for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$(port_of $side)/readyz" >/dev/null && break; sleep 0.2; done
done
psql "$PG" -qc checkpoint
for side in a b; do
    BENCH_ADMIN_EMAIL=bench-admin@example.com BENCH_ADMIN_PASSWORD="bench admin password" \
        taskset -c 1 "$(side_dir $side)/orders_bench" --base-url "http://127.0.0.1:$(port_of $side)" \
        --duration "${SECONDS_TO_RUN}s" --concurrency "$CONCURRENCY" >"$data/$side.out" 2>&1 &
    drivers+=($!)
done
wait "${drivers[@]}"
a=$(grep '^orders:' "$data/a.out") b=$(grep '^orders:' "$data/b.out")
echo "A ($A): $a"
echo "B ($B): $b"
rate() { sed -E 's/.* = ([0-9]+)\/s.*/\1/' <<<"$1"; }
awk -v a="$(rate "$a")" -v b="$(rate "$b")" 'BEGIN { printf "A / B = %.3f\n", a / b }'
for side in a b; do psql "$PG" -qc "drop database if exists tidings_bench_ab_$side with (force)" 2>/dev/null; done
