#!/usr/bin/env bash
# The benchmarks' own environment: the project plus the peers it is compared with
# (metatrain's soap_bpnn). Peers are never dependencies of the project itself.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
venv="$here/.venv"
test -x "$venv/bin/python" || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -c "$root/constraints.txt" -e "$root" \
    "metatrain[soap-bpnn]==2026.4.1"
echo "benchmark environment ready: $venv"
