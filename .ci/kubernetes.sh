#!/usr/bin/env bash
# Validates the Kubernetes example (deploy/kubernetes/*.yaml) against the Kubernetes API's
# JSON schemas, strictly (a field the API does not have fails, as a misspelt one would be
# dropped silently by an older kubectl), for the oldest and the newest Kubernetes versions
# named below. Then it shows that the check can fail: a copy of the Deployment with a
# misspelt probe field, and one with a number as a string, must both be rejected.
#
# The schemas come from PyPI: kubernetes-validate ships them for every Kubernetes version
# up to its own, in a virtualenv of its own, as .ci/hadolint.sh does. No cluster is needed.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VALIDATE_VERSION=1.37.0
# 1.30: the oldest with the preStop `sleep` action on by default, which deployment.yaml
# mentions; 1.37: the newest this kubernetes-validate knows.
KUBERNETES_VERSIONS=(1.30.0 1.37.0)

venv=${TIDINGS_KUBERNETES_VENV:-$HOME/.cache/tidings/kubernetes-validate-$KUBERNETES_VALIDATE_VERSION}
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
    echo "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
validate() { "$venv/bin/kubernetes-validate" --strict --no-warn "$@"; }

manifests=(deploy/kubernetes/*.yaml)
echo "kubernetes-validate $KUBERNETES_VALIDATE_VERSION: ${manifests[*]}"
for version in "${KUBERNETES_VERSIONS[@]}"; do
    validate --quiet -k "$version" "${manifests[@]}"
    echo "valid against Kubernetes $version"
done

# Every kind the example is meant to hold is there, once.
for kind in Deployment Service PodDisruptionBudget ConfigMap; do
    n=$(cat "${manifests[@]}" | grep -c "^kind: $kind\$" || true)
    [ "$n" -eq 1 ] || { echo "deploy/kubernetes/: expected one $kind, found $n" >&2; exit 1; }
done

# --- the check can fail ---------------------------------------------------------------------
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed 's/^\( *\)periodSeconds: 5$/\1periodSecond: 5/' deploy/kubernetes/deployment.yaml >"$work/misspelt.yaml"
sed 's/^\( *\)replicas: 2$/\1replicas: "2"/' deploy/kubernetes/deployment.yaml >"$work/string.yaml"
for broken in misspelt string; do
    if cmp -s deploy/kubernetes/deployment.yaml "$work/$broken.yaml"; then
        echo "could not make the $broken copy: deployment.yaml changed shape" >&2
        exit 1
    fi
    if validate --quiet -k "${KUBERNETES_VERSIONS[-1]}" "$work/$broken.yaml" >"$work/out" 2>&1; then
        echo "a broken Deployment ($broken) passed validation:" >&2
        cat "$work/out" >&2
        exit 1
    fi
    echo "a broken Deployment ($broken) is rejected: $(grep -o 'did not validate.*' "$work/out" | head -n 1)"
done
echo "deploy/kubernetes/: valid"
