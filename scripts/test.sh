#!/usr/bin/env bash
# The test command (README, .ci/run): set up .venv if needed, then run the whole suite on the CPU.
# --fast: only the tests not marked slow (pyproject; 591 of 718 in 4 min on the 2-core machine, 2026-12-02), and
# every module of gsam/ (with gsam.data and gsam.models) exercised; the full suite is the one CI and the README run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# GSAM_TEST_WORKERS=N (or auto): N pytest-xdist workers, whole files per worker (a module-scoped fixture such as a
# Slurm cluster is built once), in the order of tests/conftest.py (slow files first) rather than pytest-xdist's
# (files with the most tests first, which started the GPU kit's 6 minutes last). Not the default: on the 2-core
# machine (2026-12-02) it took 30 min 51 s (the serial run at 12f5bd0: 45 min 40 s, other work sharing the
# cores), but a Slurm job and an FFCV reader-thread test failed under the parallel load, which the serial run does
# not show.
par=()
if [ "${GSAM_TEST_WORKERS:-0}" != 0 ]; then par=(-n "$GSAM_TEST_WORKERS" --dist loadfile --no-loadscope-reorder); fi
if [ "${1:-}" = "--fast" ]; then
    shift
    exec .venv/bin/python -m pytest ${par[@]+"${par[@]}"} -m "not slow" "$@"
fi
exec .venv/bin/python -m pytest ${par[@]+"${par[@]}"} "$@"
