#!/usr/bin/env bash
# Checks compose.yaml without a Docker engine (CI has none):
#   - it validates against the Compose Specification's JSON schema, the copy that
#     check-jsonschema vendors (`vendor.compose-spec`), before and after interpolation;
#   - a real Compose implementation reads it: Debian's docker-compose (1.29, which needs no
#     engine for `config`) refuses it while TIDINGS_JWT_SECRET, TIDINGS_VAPID_PRIVATE_KEY
#     or POSTGRES_PASSWORD is unset, naming the variable, and resolves it once all are
#     set, the two instances alike, with no secret in the file itself;
#   - what nginx mounts exists (deploy/nginx.conf, deploy/nginx/) and is mounted read-only,
#     and nginx accepts that configuration (`nginx -t`, with the instances' names replaced
#     by 127.0.0.1: nginx resolves them as it reads the file, and they exist only on
#     compose's network);
#   - the checks can fail: a broken copy of the file must be rejected by the schema.
#
# check-jsonschema comes from PyPI, in a virtualenv of its own, as .ci/hadolint.sh does;
# docker-compose and nginx from Debian when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

CHECK_JSONSCHEMA_VERSION=0.39.0
venv=${TIDINGS_COMPOSE_VENV:-$HOME/.cache/tidings/check-jsonschema-$CHECK_JSONSCHEMA_VERSION}
if [ ! -x "$venv/bin/check-jsonschema" ]; then
    echo "installing check-jsonschema $CHECK_JSONSCHEMA_VERSION into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "check-jsonschema==$CHECK_JSONSCHEMA_VERSION"
fi
need=()
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]} (apt)"
    export DEBIAN_FRONTEND=noninteractive
    # --no-install-recommends: docker-compose recommends the Docker engine, not needed here.
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 ||
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }
fi
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

schema_check() { "$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec "$@"; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- the schema -------------------------------------------------------------------------------
echo "check-jsonschema $CHECK_JSONSCHEMA_VERSION, its vendored compose-spec.json:"
schema_check compose.yaml

# --- interpolation, by a Compose implementation -------------------------------------------------
# An empty env file: a developer's .env must not fill in what the check expects missing.
: >"$work/empty.env"
compose() {
    env -u TIDINGS_JWT_SECRET -u TIDINGS_VAPID_PRIVATE_KEY -u POSTGRES_PASSWORD \
        -u TIDINGS_CORS_ORIGINS "$@" \
        docker-compose --env-file "$work/empty.env" --project-directory . -f compose.yaml config
}
docker-compose version --short
secrets=(TIDINGS_JWT_SECRET=jwt-placeholder TIDINGS_VAPID_PRIVATE_KEY=vapid-placeholder
    POSTGRES_PASSWORD=pg-placeholder)
for missing in TIDINGS_JWT_SECRET TIDINGS_VAPID_PRIVATE_KEY POSTGRES_PASSWORD; do
    set_ones=()
    for secret in "${secrets[@]}"; do
        [ "${secret%%=*}" = "$missing" ] || set_ones+=("$secret")
    done
    if compose "${set_ones[@]}" >"$work/out" 2>&1; then
        echo "compose.yaml was accepted with $missing unset" >&2
        exit 1
    fi
    grep -q "set $missing in .env" "$work/out" || {
        echo "compose.yaml refused $missing unset, but not with its message:" >&2
        cat "$work/out" >&2
        exit 1
    }
    echo "refused with $missing unset: $(grep -o "set $missing in .env[^}]*" "$work/out" | head -n 1)"
done
compose "${secrets[@]}" >"$work/resolved.yaml"
schema_check "$work/resolved.yaml" >/dev/null
echo "resolved with all set, and the result is valid too"

# What the resolved file must say; anything else compose.yaml promises is read here too.
"$venv/bin/python" - "$work/resolved.yaml" <<'EOF'
import os
import sys

from ruamel.yaml import YAML

resolved = YAML(typ="safe").load(open(sys.argv[1]))
raw = open("compose.yaml").read()
services = resolved["services"]
problems = []

one, two = services["tidings-1"], services["tidings-2"]
if one != two:
    problems.append("tidings-1 and tidings-2 differ")
env = one["environment"]
expected = {
    "TIDINGS_JWT_SECRET": "jwt-placeholder",
    "TIDINGS_VAPID_PRIVATE_KEY": "vapid-placeholder",
    "DATABASE_URL": "postgres://tidings:pg-placeholder@postgres:5432/tidings",
    "REDIS_URL": "redis://redis:6379",
    "TIDINGS_TRUST_FORWARDED_FOR": "true",
    "TIDINGS_MAX_PENDING_PER_IP": "0",
    "TIDINGS_ADMIN_LISTEN": "0.0.0.0:9090",
}
for name, value in expected.items():
    if str(env.get(name)) != value:
        problems.append(f"tidings-1: {name} is {env.get(name)!r}, expected {value!r}")
if one.get("healthcheck", {}).get("test") != ["CMD", "tidings", "healthcheck"]:
    problems.append("tidings-1: the healthcheck is not the image's `tidings healthcheck`")
if one.get("ports"):
    problems.append("tidings-1 publishes a port: only nginx should")
for name in ("postgres", "redis"):
    if services[name].get("ports"):
        problems.append(f"{name} publishes a port")
# The secrets are interpolated, never written: each appears in the file only as ${NAME:?…}.
for name in ("TIDINGS_JWT_SECRET", "TIDINGS_VAPID_PRIVATE_KEY", "POSTGRES_PASSWORD"):
    for line in raw.splitlines():
        if name in line and not line.lstrip().startswith("#") and f"${{{name}:?" not in line:
            problems.append(f"compose.yaml: {name} without ${{{name}:?…}}: {line.strip()}")
for needs in ("tidings-1", "tidings-2"):
    if services["nginx"]["depends_on"].get(needs, {}).get("condition") != "service_healthy":
        problems.append(f"nginx does not wait for {needs} to be healthy")

# Bind mounts: each source exists, and nginx's are read-only. (docker-compose 1.29 prints
# them as SOURCE:TARGET:MODE; Compose v2, where it is installed instead, as mappings.)
for name, service in services.items():
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target, mode = (volume.split(":") + ["rw"])[:3]
            read_only = mode == "ro"
        else:
            source, target = volume.get("source", ""), volume["target"]
            read_only = bool(volume.get("read_only"))
        if not source.startswith("/"):
            continue  # a named volume
        if not os.path.exists(source):
            problems.append(f"{name}: mounts {source}, which does not exist")
        if name == "nginx" and not read_only:
            problems.append(f"nginx: {source} is not mounted read-only")
        print(f"{name}: {os.path.relpath(source)} -> {target} ({'ro' if read_only else 'rw'})")

if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
print("the instances alike, the secrets interpolated, the mounts present")
EOF

# --- nginx reads what compose.yaml mounts ---------------------------------------------------------
# As in the container: the main file as nginx.conf, deploy/nginx/ as tidings/ beside it. nginx
# resolves upstream names as it starts, and tidings-1 exists only on compose's network.
mkdir -p "$work/nginx/logs"
cp deploy/nginx.conf "$work/nginx/nginx.conf"
cp -r deploy/nginx "$work/nginx/tidings"
sed -i 's/\btidings-[0-9]\+:8080/127.0.0.1:8080/' "$work/nginx/tidings/upstream.conf"
nginx_version=$("$nginx_bin" -v 2>&1 | sed 's|.*nginx/||')
if [ "$(printf '%s\n' 1.27.3 "$nginx_version" | sort -V | head -n 1)" != 1.27.3 ]; then
    # Debian 12 has nginx 1.22, from before `resolve` and `resolver` in an upstream
    # (1.27.3): those two are checked by name, the rest by nginx.
    grep -q '^resolver 127\.0\.0\.11 ' "$work/nginx/tidings/upstream.conf" &&
        [ "$(grep -c '^server .* resolve;$' "$work/nginx/tidings/upstream.conf")" -eq 2 ] ||
        { echo "deploy/nginx/upstream.conf: expected Docker's resolver and two servers with resolve" >&2; exit 1; }
    sed -i -e '/^resolver /d' -e 's/ resolve;$/;/' "$work/nginx/tidings/upstream.conf"
    without=" (nginx $nginx_version: without upstream.conf's resolver and resolve, from 1.27.3)"
fi
# -t parses and opens the files; it binds no port. The pid file goes to the prefix.
"$nginx_bin" -t -q -p "$work/nginx" -c "$work/nginx/nginx.conf" -g "pid $work/nginx/nginx.pid;"
echo "nginx -t: deploy/nginx.conf with deploy/nginx/ accepted${without:-}"

# --- the check can fail ---------------------------------------------------------------------------
# An unknown key in the shared x-tidings block: only found if the YAML merge into each
# instance is read, as Compose reads it.
sed 's/^  stop_grace_period: 40s$/  stop_grace_period: 40s\n  stop_grace: 40s/' compose.yaml >"$work/unknown-key.yaml"
# A port as a mapping, which no Compose version takes.
sed 's/^      - "8080:8080"$/      - {port: 8080}/' compose.yaml >"$work/bad-port.yaml"
for broken in unknown-key bad-port; do
    if cmp -s compose.yaml "$work/$broken.yaml"; then
        echo "could not make the $broken copy: compose.yaml changed shape" >&2
        exit 1
    fi
    if schema_check "$work/$broken.yaml" >"$work/out" 2>&1; then
        echo "a broken compose file ($broken) passed the schema:" >&2
        cat "$work/out" >&2
        exit 1
    fi
    echo "a broken compose file ($broken) is rejected: $(grep -m 1 '::\$' "$work/out" | sed 's/^.*:://')"
done
echo "compose.yaml: valid"
