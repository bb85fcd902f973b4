#!/usr/bin/env bash
# Runs the server as the container image (Dockerfile) would, without a Docker engine: the
# binary built with the builder stage's command, run as the image's user (10001:10001,
# numeric, as its USER) with the image's environment, in a root file system that is
# read-only apart from /data, as `docker run --read-only -v …:/data` gives it. Then:
#   - `tidings healthcheck`, run inside the same namespaces as Docker's HEALTHCHECK is,
#     says ready;
#   - a registration writes to the database, and the SQLite file and the generated JWT key
#     are in /data, owned by the image's user;
#   - SIGTERM, the image's STOPSIGNAL, stops it with exit status 0.
#
# What is enforced, by the kernel and not by looking: in a mount namespace of its own the
# server's root is a tmpfs remounted read-only, holding only the host's /usr/lib,
# /usr/lib64 and /etc (read-only), /dev (read-only), /proc, the binary at
# /usr/local/bin/tidings (read-only, owned by root) and /data (the only writable mount,
# owned by 10001:10001). A write anywhere else fails with EROFS; the log is checked for
# one. In a network namespace of its own it listens on 0.0.0.0:8080 as in the image,
# whatever the host has on that port. What is not the image's: the libraries are the
# host's (Debian 12, the runtime stage's release), and the image's /etc is not this one.
#
# Needs root (namespaces, mounts), as CI runs. Honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

UID_GID=10001:10001
for tool in unshare nsenter chroot ip curl; do
    command -v "$tool" >/dev/null || {
        echo "installing iproute2 util-linux coreutils curl (apt)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq iproute2 util-linux coreutils curl >/dev/null
        break
    }
done

# --- the builder stage's command -------------------------------------------------------------
cargo build --release --locked -p tidings --bin tidings
built=$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/release/tidings

work=$(mktemp -d)
server=""
cleanup() {
    if [ -n "$server" ]; then
        kill -KILL "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# The image's layers: the binary as COPY leaves it (root's, not writable by the user), and
# the volume's directory as the runtime stage makes it.
root=$work/root
mkdir -p "$root" "$work/bin" "$work/data"
install -o root -g root -m 0755 "$built" "$work/bin/tidings"
chown "$UID_GID" "$work/data"
chmod 0750 "$work/data"

# The image's environment (Dockerfile ENV, and the base image's PATH).
image_env=(env -i
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    TIDINGS_DATA_DIR=/data
    TIDINGS_LISTEN=0.0.0.0:8080)

# Run inside the namespaces by the server's process, as the image's user in its root: what
# `docker exec` (and so HEALTHCHECK) does.
in_container() {
    nsenter --target "$server" --mount --net -- \
        "${image_env[@]}" chroot --userspec="$UID_GID" --groups="${UID_GID#*:}" "$root" "$@"
}

# The root file system, made in a mount namespace of the server's own (gone with it).
setup_root='
set -euo pipefail
root=$1 work=$2
mount -t tmpfs -o mode=0755,size=1m tidings-root "$root"
mkdir -p "$root/usr/lib" "$root/usr/lib64" "$root/usr/local/bin" "$root/etc" "$root/dev" \
    "$root/proc" "$root/data"
ln -s usr/lib "$root/lib"
ln -s usr/lib64 "$root/lib64"
touch "$root/usr/local/bin/tidings"
mount --bind -o ro /usr/lib "$root/usr/lib"
mount --bind -o ro /usr/lib64 "$root/usr/lib64"
mount --bind -o ro /etc "$root/etc"
mount --bind -o ro /dev "$root/dev"
mount -t proc -o ro proc "$root/proc"
mount --bind -o ro "$work/bin/tidings" "$root/usr/local/bin/tidings"
mount --bind "$work/data" "$root/data"
mount -o remount,ro "$root"
ip link set lo up
touch "$work/in-namespace"
shift 2
exec "$@"
'
echo "=== the server, as the image runs it ==="
unshare --mount --net --propagation private -- bash -c "$setup_root" setup "$root" "$work" \
    "${image_env[@]}" chroot --userspec="$UID_GID" --groups="${UID_GID#*:}" "$root" \
    /usr/local/bin/tidings serve >"$work/server.log" 2>&1 &
server=$!
fail() {
    cat "$work/server.log" >&2
    echo "image simulation: $*" >&2
    exit 1
}
for _ in $(seq 1 100); do [ -e "$work/in-namespace" ] && break; sleep 0.05; done
[ -e "$work/in-namespace" ] || fail "the namespace was not set up"

# As Docker does during the start period: ask until it answers ready (or 10 s have passed).
healthy=""
for _ in $(seq 1 100); do
    if in_container /usr/local/bin/tidings healthcheck >"$work/health.log" 2>&1; then
        healthy=1
        break
    fi
    kill -0 "$server" 2>/dev/null || fail "the server exited before it was ready"
    sleep 0.1
done
[ -n "$healthy" ] || { cat "$work/health.log" >&2; fail "tidings healthcheck never passed"; }
echo "healthcheck: $(cat "$work/health.log")"

# A write through the API, from the host side of the port mapping (the server's network).
status=$(nsenter --target "$server" --net -- curl -s -o /dev/null -w '%{http_code}' \
    -H 'content-type: application/json' \
    -d '{"email":"image@example.com","password":"correct horse battery staple"}' \
    http://127.0.0.1:8080/v1/auth/register)
[ "$status" = 201 ] || fail "registering a user answered $status, not 201"

# Nothing could be written outside /data: a try shows in the log.
if grep -qi 'read-only file system' "$work/server.log"; then
    fail "the server tried to write outside /data"
fi
for file in tidings.db jwt-secret; do
    [ -f "$work/data/$file" ] || fail "/data/$file is missing: $(ls -la "$work/data")"
    [ "$(stat -c %u:%g "$work/data/$file")" = "$UID_GID" ] || fail "/data/$file is not owned by $UID_GID"
done
echo "/data holds: $(cd "$work/data" && echo *)"

echo "=== SIGTERM ==="
kill -TERM "$server"
code=0
wait "$server" || code=$?
server=""
[ "$code" = 0 ] || fail "the server exited with status $code on SIGTERM"
grep -qi 'read-only file system' "$work/server.log" && fail "the server tried to write outside /data"
echo "stopped with status 0; the image would run as it should"
