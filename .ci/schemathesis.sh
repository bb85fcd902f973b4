#!/usr/bin/env bash
# The API contract: schemathesis runs every phase (examples, coverage, fuzzing, stateful)
# and every check against a server on SQLite and one on PostgreSQL + Redis, and must find
# nothing. Then a copy of the document with one documented status removed must make it
# fail, so that a run that cannot see drift does not pass for one that found none.
#
# Usage: .ci/schemathesis.sh [sqlite|postgres ...]   (both by default)
# TIDINGS_BIN: the server binary (built here, in CARGO_TARGET_DIR, when not given).
# ST_MAX_TIME: seconds per backend (default 180). ST_SEED: a seed, to repeat a run.
set -euo pipefail
cd "$(dirname "$0")/.."

ST_VERSION=4.32.5
PG_URL=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
REDIS_URL_FOR_TESTS=${TEST_REDIS_URL:-redis://127.0.0.1:6379}
MAX_TIME=${ST_MAX_TIME:-180}
backends=("$@")
[ ${#backends[@]} -gt 0 ] || backends=(sqlite postgres)

# --- schemathesis, from PyPI, in a virtualenv of its own --------------------------------------
venv=${TIDINGS_ST_VENV:-$HOME/.cache/tidings/schemathesis-$ST_VERSION}
if [ ! -x "$venv/bin/st" ]; then
    echo "installing schemathesis $ST_VERSION into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "schemathesis==$ST_VERSION"
fi
st=("$venv/bin/st" --config-file .ci/schemathesis.toml --no-color)

if [ -n "${TIDINGS_BIN:-}" ]; then
    bin=$(realpath "$TIDINGS_BIN")
else
    cargo build --locked --quiet --bin tidings
    bin=$(realpath "${CARGO_TARGET_DIR:-target}/debug/tidings")
fi
work=$(mktemp -d)
server=""
stop_server() {
    if [ -n "$server" ]; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
        server=""
    fi
}
# A backend's server and database go when its subshell ends; the work directory when all do.
cleanup_backend() {
    stop_server
    for db in "${databases[@]:-}"; do
        [ -n "$db" ] && psql "$PG_URL" -qc "drop database if exists \"$db\" with (force)" >/dev/null 2>&1 || true
    done
}
databases=()
cleanup() {
    local running
    running=$(jobs -p)
    [ -z "$running" ] || kill $running 2>/dev/null || true
    wait || true
    rm -rf "$work"
}
trap cleanup EXIT

# Starts a server on a database of its own, with an admin (who may call every operation)
# whose credentials the config reads from the environment.
start_server() {
    local backend=$1 dir="$work/$1"
    mkdir -p "$dir"
    local port
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    export TIDINGS_DATA_DIR=$dir TIDINGS_LISTEN=127.0.0.1:$port RUST_LOG=${RUST_LOG:-warn}
    # Schemathesis logs in for every token it loses (it calls logout-all too): no rate limit.
    export TIDINGS_AUTH_RATE_PER_IP=0 TIDINGS_AUTH_RATE_PER_EMAIL=0
    unset REDIS_URL TIDINGS_REDIS_CHANNEL
    if [ "$backend" = postgres ]; then
        local db
        db="tidings_contract_$(python3 -c 'import uuid; print(uuid.uuid4().hex)')"
        psql "$PG_URL" -qc "create database \"$db\"" >/dev/null
        databases+=("$db")
        export DATABASE_URL="${PG_URL%/*}/$db" REDIS_URL=$REDIS_URL_FOR_TESTS TIDINGS_REDIS_CHANNEL="tidings:$db"
    else
        export DATABASE_URL="sqlite:$dir/tidings.db"
    fi
    export TIDINGS_ST_EMAIL="admin@contract.test"
    TIDINGS_ST_PASSWORD="$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
    export TIDINGS_ST_PASSWORD
    TIDINGS_PASSWORD=$TIDINGS_ST_PASSWORD "$bin" user create --email "$TIDINGS_ST_EMAIL" --role admin >/dev/null
    "$bin" >"$dir/server.log" 2>&1 &
    server=$!
    base="http://127.0.0.1:$port"
    for _ in $(seq 1 100); do
        curl -sf "$base/readyz" >/dev/null && return 0
        sleep 0.1
    done
    cat "$dir/server.log" >&2
    echo "the $backend server did not become ready" >&2
    exit 1
}

seed=()
[ -z "${ST_SEED:-}" ] || seed=(--seed "$ST_SEED")

# One backend's run, in a subshell of its own (its server, its database, its cleanup).
run_backend() {
    local backend=$1
    trap cleanup_backend EXIT
    echo "=== schemathesis on $backend ($MAX_TIME s) ==="
    start_server "$backend"
    started=$SECONDS
    # The live endpoints are left out: /v1/events holds its response open for as long as the
    # token lasts, and /v1/ws switches protocols; tests/api/live*.rs speak both for real.
    # Every check is on (`[checks]` in the config): not `--checks all` here, which would
    # override the config's per-operation exceptions.
    "${st[@]}" run "$base/openapi.json" \
        --phases examples,coverage,fuzzing,stateful \
        --max-time "$MAX_TIME" \
        --request-timeout 10 \
        --exclude-path /v1/events --exclude-path /v1/ws \
        "${seed[@]}"
    echo "schemathesis on $backend passed in $((SECONDS - started)) s"

    if [ "$backend" = "${backends[0]}" ]; then
        # Known drift: GET /v1/products/{id} with its 404 taken out of the document. A random
        # id is a 404 at once, so a run that passes this did not check statuses.
        echo "=== a document with a known drift must fail ==="
        curl -sf "$base/openapi.json" |
            python3 -c 'import json, sys; d = json.load(sys.stdin); del d["paths"]["/v1/products/{id}"]["get"]["responses"]["404"]; json.dump(d, sys.stdout)' \
                >"$work/drifted.json"
        if "${st[@]}" run "$work/drifted.json" --url "$base" \
            --include-path '/v1/products/{id}' --include-method GET \
            --checks status_code_conformance --phases coverage,fuzzing --max-examples 20 \
            >"$work/drift.log" 2>&1; then
            cat "$work/drift.log"
            echo "schemathesis did not notice an undocumented 404" >&2
            exit 1
        fi
        grep -q "Undocumented status code" "$work/drift.log" || {
            cat "$work/drift.log"
            echo "schemathesis failed, but not on the undocumented 404" >&2
            exit 1
        }
        echo "the drift was caught"
    fi
    stop_server
}

# The backends run at once: each run is bounded by time, so side by side they take one
# run's time, not the sum (each sees about half the machine, and still explores every
# operation: the phases before fuzzing are bounded by the document, not by time).
pids=()
for backend in "${backends[@]}"; do
    run_backend "$backend" >"$work/$backend.out" 2>&1 &
    pids+=($!)
done
failed=0
for i in "${!backends[@]}"; do
    wait "${pids[$i]}" || failed=1
    sed "s/^/[${backends[$i]}] /" "$work/${backends[$i]}.out"
done
exit $failed
