#!/usr/bin/env bash
# Installs tfscale with its test extras and runs the whole test suite (README's second command).
set -euo pipefail
cd "$(dirname "$0")/.."
# System packages the tests use: a Redis server (sentiment example) and Debian's Fashion-MNIST files.
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || missing+=(dataset-fashion-mnist)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "scripts/test.sh: missing system packages: ${missing[*]} (install them with apt-get)" >&2
        exit 1
    fi
fi
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e ".[test]"
python -m pytest -q "$@"
