#!/usr/bin/env bash
# The test command (README, .ci/run): set up .venv if needed, then run the whole suite on the CPU, serially, with
# one torch thread (tests/conftest.py sets it too, for every test and the processes they start).
# --fast: only the tests not marked slow (pyproject's `slow` marker), which still exercise every module of gsam/
# (with gsam.data and gsam.models). Both print the 25 slowest tests and tests/conftest.py's time guard (tests outside
# the slow tier over 10 s, the fast tier's total against its 90 s budget).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
if [ "${1:-}" = "--fast" ]; then
    shift
    exec .venv/bin/python -m pytest --durations=25 -m "not slow" "$@"
fi
exec .venv/bin/python -m pytest --durations=25 "$@"
