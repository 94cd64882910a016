#!/usr/bin/env bash
# The benchmarks' own environment: the project plus the peers it is compared with
# (metatrain's soap_bpnn). Peers are never dependencies of the project itself.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
venv="$here/.venv"
test -x "$venv/bin/python" || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
# the project's build requirements first: its C++ is compiled against this
# environment's torch (--no-build-isolation), in a build folder of its own
"$venv/bin/python" "$root/cmake/build_requires.py" |
    xargs "$venv/bin/python" -m pip install --quiet -c "$root/constraints.txt"
"$venv/bin/python" -m pip install --quiet -c "$root/constraints.txt" --no-build-isolation \
    -C build-dir="$root/build/benchmarks" "$root[dev]" "metatrain[soap-bpnn]==2026.4.1"
echo "benchmark environment ready: $venv"
