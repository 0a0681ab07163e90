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
# The suite starts about 100 interpreters (kill -9, signals, torchrun, Slurm, the scripts). Where
# PYTHONDONTWRITEBYTECODE is set (it is on the development machine) each would compile the project's sources again
# (~0.4 s a process): compiled once here instead (compileall writes regardless; __pycache__ is git-ignored)
.venv/bin/python -m compileall -q -j 0 gsam data models scripts tests train.py evaluate.py >/dev/null
if [ "${1:-}" = "--fast" ]; then
    shift
    exec .venv/bin/python -m pytest --durations=25 -m "not slow" "$@"
fi
exec .venv/bin/python -m pytest --durations=25 "$@"
