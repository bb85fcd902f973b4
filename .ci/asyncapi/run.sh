#!/usr/bin/env bash
# The AsyncAPI document as a server serves it, checked by the official AsyncAPI parser
# (@asyncapi/parser, pinned in package-lock.json): any error-severity diagnostic fails.
# Then a copy with a known error (an operation whose action is not send or receive) must
# fail the same check, so that a check that cannot see errors does not pass for one that
# found none.
#
# Usage: .ci/asyncapi/run.sh [path to the tidings binary]   (built when none is given)
set -euo pipefail
cd "$(dirname "$0")"
if [ $# -gt 0 ]; then
    bin=$(realpath "$1")
else
    (cd ../.. && cargo build --locked --quiet --bin tidings)
    bin=$(cd ../.. && realpath "${CARGO_TARGET_DIR:-target}/debug/tidings")
fi
for tool in curl jq python3; do
    command -v $tool >/dev/null || { echo "asyncapi: $tool is not installed (apt-get install $tool)" >&2; exit 1; }
done

if ! command -v npm >/dev/null; then
    echo "installing Node.js and npm (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq nodejs npm >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null; }
fi
[ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error

work=$(mktemp -d)
server=""
cleanup() {
    if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
(
    unset DATABASE_URL REDIS_URL
    export TIDINGS_DATA_DIR=$work/data TIDINGS_LISTEN=127.0.0.1:$port RUST_LOG=warn
    exec "$bin"
) >"$work/server.log" 2>&1 &
server=$!
url="http://127.0.0.1:$port"
for _ in $(seq 1 100); do
    curl -sf "$url/readyz" >/dev/null && break
    sleep 0.1
done
curl -sf "$url/readyz" >/dev/null || { echo "the server did not become ready:" >&2; cat "$work/server.log" >&2; exit 1; }

node check.mjs "$url/asyncapi.json"

curl -sf "$url/asyncapi.json" | jq '.operations.subscribe.action = "publish"' >"$work/broken.json"
if node check.mjs "$work/broken.json" >"$work/broken.log" 2>&1; then
    echo "a document with a known error passed the check:" >&2
    cat "$work/broken.log" >&2
    exit 1
fi
echo "a document with a known error fails the check, as it must:"
grep -E '^Error' "$work/broken.log" | head -n 3
