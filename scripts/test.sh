#!/usr/bin/env bash
# Installs tfscale with its test extras and runs the whole test suite (README's second command).
# `--install-only` stops after installing, `--no-install` starts at the tests; other arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
step=all
case "${1:-}" in
    --install-only) step=install; shift ;;
    --no-install) step=test; shift ;;
esac
if [ "$step" != test ]; then
    # System packages the tests use: a Redis server (sentiment example), Debian's Fashion-MNIST files, Slurm,
    # iproute2 and util-linux.
    missing=()
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || missing+=(dataset-fashion-mnist)
    # Slurm and munge for tests/test_slurm.py, which runs only as root (its fixture installs them too: ~30 s);
    # ip, ss, nsenter, unshare and mount for the hosts in network namespaces (tests/cluster/netns.py: the cluster,
    # Slurm and Ray tests), setpriv for the unprivileged case of tests/test_bad_inputs.py (root only, too)
    if [ "$(id -u)" = 0 ]; then
        { command -v slurmctld && command -v slurmd && command -v munged; } >/dev/null 2>&1 || missing+=(slurm-wlm munge)
        { command -v ip && command -v ss; } >/dev/null 2>&1 || missing+=(iproute2)
        { command -v nsenter && command -v unshare && command -v setpriv; } >/dev/null 2>&1 || missing+=(util-linux)
        command -v mount >/dev/null 2>&1 || missing+=(mount)
    fi
    if [ ${#missing[@]} -gt 0 ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
        else
            echo "scripts/test.sh: missing system packages: ${missing[*]} (install them with apt-get)" >&2
            exit 1
        fi
    fi
    python -m pip install --quiet --upgrade pip
    # --no-compile: pip would compile all ~20,000 files of the dependencies (~100 s of CPU, one core); the tests
    # write the bytecode of the modules they import instead, once (PYTHONDONTWRITEBYTECODE is unset for them below)
    python -m pip install --quiet --no-compile -e ".[test]"
fi
[ "$step" = install ] && exit 0
# Bytecode is written at the first import of each module (pip compiled nothing): where PYTHONDONTWRITEBYTECODE
# is set, as on CI, every process would compile TensorFlow anew (~27 s of CPU per start-up here instead of ~10 s).
unset PYTHONDONTWRITEBYTECODE
# The layering of docs/DESIGN.md, as contracts in pyproject.toml ([tool.importlinter]): a broken one fails here.
lint-imports --no-logo
# Tests run in parallel, a file's tests on one worker (its module fixtures are built once), the longest files
# first (tests/conftest.py orders them; --no-loadscope-reorder keeps that order); most tests start
# TensorFlow processes of their own, so more than 4 pytest workers gain little (3 on 2 cores: 21.0 min of tests
# against ~21 with 2, and more timing-bound tests at risk). TFSCALE_TEST_WORKERS=0: serial.
cores=$(nproc 2>/dev/null || echo 2)
workers=${TFSCALE_TEST_WORKERS:-$(( cores < 2 ? 2 : (cores > 4 ? 4 : cores) ))}
if [ "$workers" -gt 0 ]; then
    python -m pytest -q -n "$workers" --dist loadfile --no-loadscope-reorder --durations=25 "$@"
else
    python -m pytest -q --durations=25 "$@"
fi
