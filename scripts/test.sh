#!/usr/bin/env bash
# The test command (README, .ci/run): set up .venv if needed, then run the whole suite on the CPU.
# --fast: only the tests not marked slow (pyproject), at most 2 minutes on 2 cores, and still every module of
# gsam/ (with gsam.data and gsam.models) exercised; the full suite is the one CI and the README run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# one pytest-xdist worker per core (GSAM_TEST_WORKERS=N to choose, 0 for none: one process), whole files per worker
# (a module-scoped fixture such as a Slurm cluster is built once); tests/conftest.py sends the slow files first
par=(-n "${GSAM_TEST_WORKERS:-auto}" --dist loadfile)
if [ "${1:-}" = "--fast" ]; then
    shift
    exec .venv/bin/python -m pytest "${par[@]}" -m "not slow" "$@"
fi
exec .venv/bin/python -m pytest "${par[@]}" "$@"
