#!/usr/bin/env bash
# What taking an order's stock costs PostgreSQL, statement against statement: the function
# `take_stock` (migration 0012: one update by primary key per product) against the single
# statement it replaced (an ordered `for update` CTE joined to an `update ... from unnest`),
# each in a transaction of its own that is rolled back, beside the same transaction
# without it. pgbench drives them (4 clients on the machine's cores), alternating, REPEAT
# times; what each costs is the machine's time per transaction above the empty one.
# Usage: REPEAT=3 bench/take-stock.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PG=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
DB=tidings_bench_stock
REPEAT=${REPEAT:-3}
cargo build --release --quiet --bin tidings
psql "$PG" -qc "drop database if exists $DB with (force)" -c "create database $DB"
url=${PG%/*}/$DB
DATABASE_URL=$url target/release/tidings migrate >/dev/null
# The catalog of bench/orders.sh: 200 products; 1,000 orders' sets of 1 to 3 of them.
psql -q "$url" <<'SQL'
insert into products (id, sku, name, name_key, unit_amount, currency, stock, created_at, updated_at)
select gen_random_uuid(), 'SKU-' || i, 'Product ' || i, 'product ' || i, 100 + i, 'EUR', 1000000000, now(), now()
from generate_series(1, 200) i;
create table idsets (n int primary key, ids uuid[]);
insert into idsets
select n, array(select id from products order by md5(id::text || n) limit 1 + n % 3)
from generate_series(0, 999) n;
update idsets set ids = array(select unnest(ids) order by 1);
SQL
dir=$(mktemp -d)
trap 'rm -rf "$dir"; psql "$PG" -qc "drop database if exists $DB with (force)"' EXIT
head='\set n random(0, 999)
select ids::text as idarr, array_fill(1::bigint, array[cardinality(ids)])::text as qarr from idsets where n = :n \gset
begin;'
printf '%s\nrollback;\n' "$head" > "$dir/empty.sql"
printf '%s\n%s\nrollback;\n' "$head" "select * from take_stock(:idarr::uuid[], :qarr::bigint[], now());" > "$dir/function.sql"
printf '%s\n%s\nrollback;\n' "$head" "with wanted as (select * from unnest(:idarr::uuid[], :qarr::bigint[]) as w(id, qty)), \
locked as (select p.id from products p where p.id = any(:idarr::uuid[]) and p.deleted_at is null order by p.id for update) \
update products p set stock = p.stock - w.qty, version = p.version + 1, updated_at = now() \
from wanted w join locked l on l.id = w.id \
where p.id = any(:idarr::uuid[]) and p.id = w.id and p.stock >= w.qty returning p.*;" > "$dir/statement.sql"
tps() { pgbench -n -M prepared -c 4 -j 2 -T 6 -f "$dir/$1.sql" "$url" 2>/dev/null | awk '/^tps/ {print $3}'; }
for _ in $(seq 1 "$REPEAT"); do
    e=$(tps empty) s=$(tps statement) f=$(tps function)
    awk -v e="$e" -v s="$s" -v f="$f" 'BEGIN {
        printf "tps: empty %.0f, statement %.0f, function %.0f; ms of the machine (2 cores) per call: statement %.3f, function %.3f\n",
            e, s, f, 2000 / s - 2000 / e, 2000 / f - 2000 / e }'
done
