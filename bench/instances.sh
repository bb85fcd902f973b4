#!/usr/bin/env bash
# Issue 21's cluster benchmark: several instances on one Redis Cluster, per-user traffic
# spread over many users, with the partitioned bus off (K = 0) and on (K > 0). Does each
# instance spend less CPU per event as instances are added?
#
# The script starts a fresh PostgreSQL database and a 3-master Redis Cluster on free ports
# (both removed at exit), then for every cell (N measured instances × K partitions, each
# cell REPEAT times, K alternating):
#   - a writer instance, started first so that it holds the relay's advisory lock (checked
#     on its /metrics: tidings_relay_active 1, and 0 on every measured instance); it takes
#     the REST writes and is not measured;
#   - N measured instances, all on the cluster, with TIDINGS_BUS_PARTITIONS=K and
#     TIDINGS_HUB_SHARDS=1;
#   - the load tester (tidings-loadtest orders --mix notify=1): one WebSocket per user on
#     `notifications`, placed on instance partition_of(user, PLACE) % N (the same placement
#     for every K), then, after an idle window, RATE notifications a second, each
#     `POST /v1/notifications/broadcast` to one user (the next in turn) on the writer: one
#     per-user event each, nothing for everyone. The tester checks that every user got
#     exactly their own events.
#     With SOURCE=sql the events are made in PostgreSQL instead, for rates REST cannot
#     reach on this machine (the writer pays about 1 ms of CPU per REST event): pgbench
#     runs RATE / EVENTS_PER_TX transactions a second, each inserting EVENTS_PER_TX outbox
#     rows (`notification.created` for one user each, the shape the server's own have;
#     users round robin by the row's id) and then, as its own statement after the commit,
#     `select pg_notify('tidings_outbox', '')`: what an instance's commit does to wake the
#     relay (events/relay.rs, forward_wakes; migration 0009 dropped the trigger, and a
#     NOTIFY inside the transaction would serialise the commits). The writer instance then
#     only relays. The tester makes no writes (--expect-from): once pgbench is done, the
#     script lists the rows it made, `<user_id> <body>` a line, and the tester expects
#     exactly those per user.
#   - CPU of each measured instance (utime + stime from /proc) over WINDOW seconds idle
#     (connected, no writes) and WINDOW seconds under load (after WARMUP seconds of
#     writing); events in from the writer's tidings_events_relayed_total over the load
#     window. CPU per event = (load CPU - idle CPU) / events relayed in the window.
#
# Usage: bench/instances.sh [results-dir]            (default /tmp/instances-<time>)
# Environment:
#   INSTANCES="1 2 3"  PARTITIONS="0 64"  REPEAT=2   the cells (REPEATS="2": only that one)
#   USERS=3000  RATE=1000  WINDOW=20  WARMUP=5  PLACE=64
#   SOURCE=rest (or sql)  EVENTS_PER_TX=10 (sql only)  PGBENCH_CLIENTS=4 (sql only)
#   TIDINGS_BIN, TESTER_BIN (default $CARGO_TARGET_DIR/release/…), NO_BUILD=1
#   PG_ADMIN_URL=postgres://postgres@127.0.0.1:5432/postgres
#   BENCH_LOCK=/work/bench.lock   each cell runs holding it (flock), so that benchmarks of
#                                 other sessions never overlap one; empty: no lock
set -euo pipefail
export PGOPTIONS="-c client_min_messages=warning"
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/instances-$(date +%H%M%S)}
INSTANCES=${INSTANCES:-1 2 3}
PARTITIONS=${PARTITIONS:-0 64}
REPEAT=${REPEAT:-2}
REPEATS=${REPEATS:-$(seq 1 "$REPEAT")}
USERS=${USERS:-3000}
RATE=${RATE:-1000}
WINDOW=${WINDOW:-20}
WARMUP=${WARMUP:-5}
PLACE=${PLACE:-64}
SOURCE=${SOURCE:-rest}
EVENTS_PER_TX=${EVENTS_PER_TX:-10}
PGBENCH_CLIENTS=${PGBENCH_CLIENTS:-4}
case $SOURCE in rest | sql) ;; *) echo "SOURCE is rest or sql, not $SOURCE" >&2; exit 2 ;; esac
LOCK=${BENCH_LOCK-/work/bench.lock}
PG=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
DB=tidings_bench_instances
TARGET=${CARGO_TARGET_DIR:-target}
TIDINGS=${TIDINGS_BIN:-$TARGET/release/tidings}
TESTER=${TESTER_BIN:-$TARGET/release/tidings-loadtest}
SOURCES=127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5
TICKS=$(getconf CLK_TCK)

[ -n "${NO_BUILD:-}" ] || cargo build --release --quiet -p tidings --bin tidings -p tidings-loadtest --bin tidings-loadtest
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
data=$(mktemp -d)
redis_pids=()
servers=()

stop_servers() {
    local pid
    for pid in "${servers[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${servers[@]}"; do wait "$pid" 2>/dev/null || true; done
    servers=()
}
cleanup() {
    stop_servers
    local pid
    for pid in "${redis_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    psql "$PG" -qc "drop database if exists $DB with (force)" >/dev/null 2>&1 || true
    rm -rf "$data"
}
trap cleanup EXIT

# Free TCP ports, as many as asked, from the kernel.
free_ports() {
    python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}

# --- PostgreSQL and the Redis Cluster -------------------------------------------------
psql "$PG" -qc "drop database if exists $DB with (force)" -c "create database $DB"
export DATABASE_URL=${PG%/*}/$DB
read -r -a redis_ports <<<"$(free_ports 6)"
nodes=()
for i in 0 1 2; do
    port=${redis_ports[$i]}
    redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
        --cluster-port "${redis_ports[$((i + 3))]}" --cluster-config-file "$data/nodes-$port.conf" \
        --cluster-node-timeout 5000 --dir "$data" --save "" --appendonly no >/dev/null &
    redis_pids+=($!)
    nodes+=("127.0.0.1:$port")
done
for node in "${nodes[@]}"; do
    for _ in $(seq 1 100); do redis-cli -u "redis://$node" ping >/dev/null 2>&1 && break; sleep 0.05 || true; done
done
redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >/dev/null
for _ in $(seq 1 200); do
    redis-cli -u "redis://${nodes[0]}" cluster info | grep -q 'cluster_state:ok' && break
    sleep 0.1 || true
done
REDIS_URL=$(printf 'redis://%s,' "${nodes[@]}")
export REDIS_URL=${REDIS_URL%,}

# --- What every instance shares ---------------------------------------------------------
export TIDINGS_DATA_DIR=$data TIDINGS_JWT_SECRET=$(head -c 48 /dev/urandom | base64)
export TIDINGS_AUTH_RATE_PER_IP=0 TIDINGS_AUTH_RATE_PER_EMAIL=0 RUST_LOG=warn
export TIDINGS_HUB_SHARDS=1
export LOADTEST_ADMIN_EMAIL=bench-admin@example.com LOADTEST_ADMIN_PASSWORD="bench admin password"
TIDINGS_PASSWORD="$LOADTEST_ADMIN_PASSWORD" "$TIDINGS" user create --email "$LOADTEST_ADMIN_EMAIL" --role admin >/dev/null
"$TIDINGS" user tokens --count "$USERS" --prefix bench-instances --role customer >"$data/customers.txt"
if [ "$SOURCE" = sql ]; then
    # The users the events go to, numbered from 0 for the round robin; the same users, in
    # the same order, as the tester's (the first USERS lines of the tokens file).
    psql "$DATABASE_URL" -qc "create table bench_users (i int primary key, id uuid not null)"
    head -n "$USERS" "$data/customers.txt" | awk '{ print NR - 1 "\t" $1 }' |
        psql "$DATABASE_URL" -qc "\copy bench_users from stdin"
    # One transaction of pgbench: EVENTS_PER_TX notifications, each to the next user in
    # turn, then the wake, after the commit (see the header).
    cat >"$data/notify.sql" <<'SQL'
insert into events (id, topic, type, audience, user_id, data, created_at)
select e.id, 'notifications', 'notification.created', 'user', u.id,
       jsonb_build_object('id', gen_random_uuid(), 'user_id', u.id, 'kind', 'broadcast',
                          'title', 'Load test', 'body', 'sql ' || e.id, 'data', '{}'::jsonb,
                          'read_at', null, 'created_at', e.at, 'version', 1),
       clock_timestamp()
from (select nextval('events_id_seq') as id,
             to_char(clock_timestamp() at time zone 'utc', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as at
      from generate_series(1, :n)) e
join bench_users u on u.i = e.id % :users;
select pg_notify('tidings_outbox', '');
SQL
fi
ulimit -n 20000

# Starts an instance on $1 (port) with admin listener $2, K = $3, at most $4 database
# connections; prints its PID.
start_instance() {
    TIDINGS_ADMIN_LISTEN=127.0.0.1:$2 TIDINGS_BUS_PARTITIONS=$3 TIDINGS_DB_MAX_CONNECTIONS=$4 \
        "$TIDINGS" serve --listen "127.0.0.1:$1" >>"$OUT/servers.log" 2>&1 &
    echo $!
}
wait_ready() {
    for _ in $(seq 1 300); do
        curl -sf "http://127.0.0.1:$1/readyz" | grep -q '"bus":{[^}]*"status":"up"' && return 0
        sleep 0.1 || true
    done
    echo "the instance on $1 did not become ready: $(curl -s "http://127.0.0.1:$1/readyz")" >&2
    exit 1
}
# A counter or gauge of the instance whose admin listener is $1. (awk reads to the end:
# leaving early would fail curl's write, and with pipefail end the script.)
metric() {
    curl -sf "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m { v = $2 } END { print v }'
}
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# Messages published on the cluster so far: PUBLISH and SPUBLISH calls over the masters.
published() {
    local node
    for node in "${nodes[@]}"; do redis-cli -u "redis://$node" info commandstats; done |
        awk -F'[:=,]' '/^cmdstat_s?publish:/ { n += $3 } END { print n + 0 }'
}
# The machine's idle and total jiffies, all cores.
machine() { awk '/^cpu / { print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }
wait_line() {
    for _ in $(seq 1 1200); do
        grep -q "$2" "$1" && return 0
        kill -0 "$3" 2>/dev/null || { cat "$1" >&2; exit 1; }
        sleep 0.1 || true
    done
    echo "no \"$2\" from the tester" >&2
    exit 1
}

# --- One cell ---------------------------------------------------------------------------
run_cell() {
    local n=$1 k=$2 rep=$3 name="n$1-k$2-r$3"
    local ports writer_port writer_admin urls="" admins=() pids=() i
    read -r -a ports <<<"$(free_ports $((2 * n + 2)))"
    writer_port=${ports[0]}
    writer_admin=${ports[1]}
    local load
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    writer=$(start_instance "$writer_port" "$writer_admin" "$k" 16)
    servers+=("$writer")
    wait_ready "$writer_port"
    # The previous cell's relay may still hold the advisory lock for a moment (its
    # database session closing); the writer takes it on its next try, a second later.
    for _ in $(seq 1 50); do
        [ "$(metric "$writer_admin" tidings_relay_active)" = 1 ] && break
        sleep 0.1 || true
    done
    for i in $(seq 0 $((n - 1))); do
        local port=${ports[$((2 + 2 * i))]} admin=${ports[$((3 + 2 * i))]}
        pids+=("$(start_instance "$port" "$admin" "$k" 4)")
        servers+=("${pids[-1]}")
        admins+=("$admin")
        urls+="${urls:+,}http://127.0.0.1:$port"
    done
    for i in $(seq 0 $((n - 1))); do wait_ready "${ports[$((2 + 2 * i))]}"; done
    [ "$(metric "$writer_admin" tidings_relay_active)" = 1 ] || { echo "$name: the writer is not the relay" >&2; exit 1; }
    for admin in "${admins[@]}"; do
        [ "$(metric "$admin" tidings_relay_active)" = 0 ] || { echo "$name: a measured instance relays" >&2; exit 1; }
    done

    local log="$OUT/$name.tester.log" tester writes first_id=0 expected="$data/$name.expected"
    if [ "$SOURCE" = sql ]; then
        # No writes: hold the sockets until the list of what pgbench made appears.
        writes=(--expect-from "$expected" --duration "$((WARMUP + WINDOW + 120))s")
        first_id=$(psql "$DATABASE_URL" -Atc "select coalesce(max(id), 0) from events")
    else
        writes=(--mix notify=1 --rate "$RATE" --duration "$((WARMUP + WINDOW + 3))s")
    fi
    "$TESTER" orders --base-url "http://127.0.0.1:$writer_port" --subscribe-urls "$urls" \
        --place-partitions "$PLACE" --tokens "$data/customers.txt" --users "$USERS" --staff 0 \
        --topics notifications "${writes[@]}" --ramp 3000 \
        --settle "$((WINDOW + 6))s" --drain 20s \
        --source-addrs $SOURCES --json "$OUT/$name.json" >"$log" 2>&1 &
    tester=$!
    wait_line "$log" "subscribers live" $tester
    sleep 3
    local idle0=() idle1=() load0=() load1=() t0 t1 r0 r1 b0 b1 m0 m1 w0 w1 p0 p1
    for pid in "${pids[@]}"; do idle0+=("$(cpu_ticks "$pid")"); done
    sleep "$WINDOW"
    for pid in "${pids[@]}"; do idle1+=("$(cpu_ticks "$pid")"); done
    wait_line "$log" "^writing" $tester
    local pgbench=""
    if [ "$SOURCE" = sql ]; then
        pgbench -n -f "$data/notify.sql" -D n="$EVENTS_PER_TX" -D users="$USERS" \
            -R "$(awk -v r="$RATE" -v e="$EVENTS_PER_TX" 'BEGIN { print r / e }')" \
            -c "$PGBENCH_CLIENTS" -j 1 -T "$((WARMUP + WINDOW + 3))" \
            "$DATABASE_URL" >"$OUT/$name.pgbench.log" 2>&1 &
        pgbench=$!
    fi
    sleep "$WARMUP"
    r0=$(metric "$writer_admin" tidings_events_relayed_total)
    b0=$(metric "$writer_admin" tidings_relay_batches_total)
    p0=$(published)
    m0=$(machine)
    w0=$(cpu_ticks "$writer")
    t0=$(date +%s.%N)
    for pid in "${pids[@]}"; do load0+=("$(cpu_ticks "$pid")"); done
    sleep "$WINDOW"
    for pid in "${pids[@]}"; do load1+=("$(cpu_ticks "$pid")"); done
    t1=$(date +%s.%N)
    w1=$(cpu_ticks "$writer")
    m1=$(machine)
    r1=$(metric "$writer_admin" tidings_events_relayed_total)
    b1=$(metric "$writer_admin" tidings_relay_batches_total)
    p1=$(published)
    local verdict=ok made=null
    if [ -n "$pgbench" ]; then
        wait "$pgbench" || verdict="pgbench exit $?"
        # Every row pgbench made in this cell, for the tester to expect (renamed into
        # place whole), and how many.
        psql "$DATABASE_URL" -At -F ' ' -c "select user_id, data->>'body' from events
            where id > $first_id and type = 'notification.created' and data->>'body' like 'sql %'" \
            >"$expected.part"
        mv "$expected.part" "$expected"
        made=$(wc -l <"$expected")
    fi
    wait "$tester" || verdict="tester exit $?"

    # One line per measured instance, then the cell's summary, as JSON lines.
    local relayed; relayed=$(metric "$writer_admin" tidings_events_relayed_total)
    for i in $(seq 0 $((n - 1))); do
        local a=${admins[$i]}
        jq -cn --arg cell "$name" --argjson n "$n" --argjson k "$k" --argjson i "$i" \
            --argjson idle "$(( idle1[i] - idle0[i] ))" --argjson busy "$(( load1[i] - load0[i] ))" \
            --argjson ticks "$TICKS" --argjson events "$(( r1 - r0 ))" \
            --argjson seconds "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" \
            --argjson hub_events "$(metric "$a" tidings_hub_events_total)" \
            --argjson lane_events "$(metric "$a" tidings_hub_user_lane_events_total)" \
            --argjson deliveries "$(metric "$a" tidings_hub_deliveries_total)" \
            --argjson catch_up "$(metric "$a" tidings_hub_catch_up_reads_total)" \
            --argjson connections "$(metric "$a" tidings_hub_connections)" \
            --argjson relayed "$relayed" \
            '{cell: $cell, n: $n, k: $k, instance: $i, connections: $connections,
              idle_cpu_s: ($idle / $ticks), load_cpu_s: ($busy / $ticks), window_s: $seconds,
              events: $events, events_per_s: ($events / $seconds),
              us_per_event: (if $events > 0 then (($busy - $idle) / $ticks) * 1e6 / $events else null end),
              us_per_event_gross: (if $events > 0 then ($busy / $ticks) * 1e6 / $events else null end),
              run_relayed: $relayed, hub_events: $hub_events, user_lane_events: $lane_events,
              deliveries: $deliveries, catch_up_reads: $catch_up}' >>"$OUT/instances.jsonl"
    done
    read -r mi0 mt0 <<<"$m0"
    read -r mi1 mt1 <<<"$m1"
    jq -c --arg cell "$name" --argjson n "$n" --argjson k "$k" --arg load "$load" --arg verdict "$verdict" \
        --arg source "$SOURCE" --argjson made "$made" \
        --argjson idle "$(awk -v i="$((mi1 - mi0))" -v t="$((mt1 - mt0))" 'BEGIN { print i / t }')" \
        --argjson writer_cpu "$(( w1 - w0 ))" --argjson ticks "$TICKS" \
        --argjson events "$(( r1 - r0 ))" --argjson seconds "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" \
        --argjson batches "$(( b1 - b0 ))" --argjson messages "$(( p1 - p0 ))" \
        '{cell: $cell, n: $n, k: $k, source: $source, made: $made, load_before: $load, verdict: $verdict,
          machine_idle: $idle, events_per_s: ($events / $seconds),
          events_per_batch: (if $batches > 0 then $events / $batches else null end),
          messages_per_batch: (if $batches > 0 then $messages / $batches else null end),
          writer_cpu_us_per_event: (if $events > 0 then ($writer_cpu / $ticks) * 1e6 / $events else null end),
          expected: .expected_deliveries, deliveries: .deliveries, lost: .lost,
          duplicates: .duplicates, out_of_order: .out_of_order, unexpected: .unexpected,
          p50_ms: .delivery_latency_ms.p50, p99_ms: .delivery_latency_ms.p99,
          writes: .writes, write_errors: .write_errors, write_p99_ms: .write_latency_ms.p99}' \
        "$OUT/$name.json" >>"$OUT/cells.jsonl"
    tail -1 "$OUT/cells.jsonl" >&2
    stop_servers
}

for rep in $REPEATS; do
    for n in $INSTANCES; do
        # K alternates within each N, and its order flips from one repeat to the next.
        ks=$PARTITIONS
        [ $((rep % 2)) = 1 ] || ks=$(echo "$PARTITIONS" | tr ' ' '\n' | tac | tr '\n' ' ')
        for k in $ks; do
            echo "== N=$n K=$k (repeat $rep)" >&2
            if [ -n "$LOCK" ]; then
                exec {lockfd}>"$LOCK"
                flock "$lockfd"
                run_cell "$n" "$k" "$rep"
                flock -u "$lockfd"
                exec {lockfd}>&-
            else
                run_cell "$n" "$k" "$rep"
            fi
        done
    done
done

# --- The table --------------------------------------------------------------------------
{
    echo "| N | K | repeat | events/s in | CPU µs/event per instance: mean (each) | idle CPU s per ${WINDOW} s (each) | user-lane events / relayed (each) | events per batch | delivered / expected | lost | dup | p50 / p99 ms | machine idle | load before |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    jq -rs '
        def r(x; d): if x == null then "–" else (x * d | round / d | tostring) end;
        (map(select(.instance != null)) | group_by(.cell) | map({key: .[0].cell, value: .}) | from_entries) as $inst
        | .[] | select(.instance == null) | . as $c | $inst[$c.cell] as $is
        | "| \($c.n) | \($c.k) | \($c.cell | sub(".*-r"; "")) | \(r($c.events_per_s; 1)) | \(r(($is | map(.us_per_event) | add / length); 10)) (\($is | map(r(.us_per_event; 10)) | join(", "))) | \($is | map(r(.idle_cpu_s; 100)) | join(", ")) | \($is | map("\(.user_lane_events)/\(.run_relayed)") | join(", ")) | \(r($c.events_per_batch; 100)) | \($c.deliveries)/\($c.expected) | \($c.lost) | \($c.duplicates) | \(r($c.p50_ms; 10)) / \(r($c.p99_ms; 10)) | \(r($c.machine_idle * 100; 1)) % | \($c.load_before) |"
    ' "$OUT/instances.jsonl" "$OUT/cells.jsonl"
} | tee "$OUT/table.md"
