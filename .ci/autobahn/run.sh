#!/usr/bin/env bash
# RFC 6455 conformance: the Autobahn|Testsuite fuzzing client against the server's
# WebSocket framing, through the echo route that TIDINGS_WS_ECHO adds (GET /v1/ws/echo),
# cases 1-7, 9 and 10 (12 and 13 are compression, which the server does not offer).
# Fails unless every case ends OK or INFORMATIONAL, or NON-STRICT and listed with its
# reason in non-strict.txt. The HTML report stays in $AUTOBAHN_REPORTS.
#
# Usage: .ci/autobahn/run.sh [a built tidings binary; built in debug when omitted]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

cache=${AUTOBAHN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tidings-autobahn}
reports=${AUTOBAHN_REPORTS:-$root/target/autobahn}
pyenv_root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
python2=${AUTOBAHN_PYTHON2:-$pyenv_root/versions/2.7.18/bin/python2.7}
cases=${AUTOBAHN_CASES:-'["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*"]'}
started=$SECONDS

# --- wstest, in a Python 2.7 virtualenv of its own, kept per requirements file ------------
venv=$cache/venv-$(sha256sum "$here/requirements.txt" | cut -c1-12)
if [ ! -x "$venv/bin/wstest" ]; then
    if [ ! -x "$python2" ]; then
        echo "autobahn: no Python 2.7 at $python2 (wstest needs it); set AUTOBAHN_PYTHON2" >&2
        exit 1
    fi
    echo "autobahn: installing autobahntestsuite into $venv"
    rm -rf "$venv" "$cache/bootstrap"
    # The last virtualenv that runs on Python 2.7, and needs nothing else.
    "$python2" -m pip install -q --disable-pip-version-check --target "$cache/bootstrap" \
        virtualenv==16.7.12
    PYTHONPATH=$cache/bootstrap "$python2" -m virtualenv -q "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt"
fi

# --- the server, in echo mode, on a free port, with SQLite in a temporary directory -------
binary=${1:-}
if [ -z "$binary" ]; then
    (cd "$root" && cargo build --locked --bin tidings)
    binary=$root/target/debug/tidings
fi
work=$(mktemp -d)
server=
stop() {
    if [ -n "$server" ]; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    cp "$work/server.log" "$reports/server.log" 2>/dev/null || true
    rm -rf "$work"
}
trap stop EXIT
# Autobahn's largest messages (cases 9.1.6 and 9.2.6) are 16 MiB.
env -u DATABASE_URL -u REDIS_URL -u TIDINGS_JWT_SECRET \
    TIDINGS_LISTEN=127.0.0.1:0 TIDINGS_DATA_DIR="$work/data" TIDINGS_LOG_FORMAT=text \
    TIDINGS_WS_ECHO=true TIDINGS_WS_MAX_MESSAGE=$((16 << 20)) RUST_LOG=info,sqlx=warn \
    "$binary" serve >"$work/server.log" 2>&1 &
server=$!
address=
for _ in $(seq 1 300); do
    address=$(grep -o 'tidings is listening address=[0-9.:]*' "$work/server.log" | cut -d= -f2 || true)
    [ -n "$address" ] && break
    if ! kill -0 "$server" 2>/dev/null; then
        cat "$work/server.log" >&2
        echo "autobahn: the server did not start" >&2
        exit 1
    fi
    sleep 0.1
done
[ -n "$address" ] || { cat "$work/server.log" >&2; echo "autobahn: no address" >&2; exit 1; }

# --- the run --------------------------------------------------------------------------
rm -rf "$reports"
mkdir -p "$reports"
cat >"$work/spec.json" <<EOF
{
    "outdir": "$reports",
    "servers": [{"agent": "tidings", "url": "ws://$address/v1/ws/echo"}],
    "cases": $cases,
    "exclude-cases": [],
    "exclude-agent-cases": {}
}
EOF
echo "autobahn: running the fuzzing client against ws://$address/v1/ws/echo"
if ! (cd "$work" && timeout 1200 "$venv/bin/wstest" -m fuzzingclient -s "$work/spec.json" \
    >"$reports/wstest.log" 2>&1); then
    tail -n 40 "$reports/wstest.log" >&2
    echo "autobahn: wstest failed (its log: $reports/wstest.log)" >&2
    exit 1
fi
echo "autobahn: report in $reports/index.html ($((SECONDS - started)) s)"
"$venv/bin/python" "$here/check.py" "$reports/index.json" "$here/non-strict.txt" tidings
