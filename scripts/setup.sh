#!/usr/bin/env bash
# Creates .venv and installs the project with its test extras; a no-op when pyproject.toml is unchanged.
# Exact versions from constraints/cpu-dev.txt (torch 2.14.1 / torchvision 0.29.1 from the machine's local wheels
# where present, else from PyPI). Where a Python 3.12 exists it also prepares the GPU kit's CPU rehearsal
# (tests/test_gpu_kit.py): a venv standing in for the GPU machine's image (in the user's cache, shared by every
# checkout: scripts/gpu/gpu_rehearsal_env.sh) and .gpu_bundle.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=.venv/.installed-$(cat pyproject.toml constraints/cpu-dev.txt | sha256sum | cut -c1-16)
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
if [ ! -f "$stamp" ]; then
    echo "setting up .venv (first run: a few minutes) ..." >&2
    log=$(mktemp)
    # an editable install under the distribution's former name (`gsam`) would map the same packages a second time
    .venv/bin/python -m pip uninstall -y -q gsam >/dev/null 2>&1 || true
    if ! { .venv/bin/python -m pip install --upgrade pip && .venv/bin/python -m pip install -c constraints/cpu-dev.txt -e '.[test]'; } >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "error: installing the project into .venv failed (full log: $log)" >&2
        exit 1
    fi
    rm -f .venv/.installed-*
    # FFCV (data.loader=ffcv): system libraries via apt when root, else a message; the folder loader and
    # every test that does not need FFCV work without it
    rc=0; bash scripts/install_ffcv.sh .venv >"$log" 2>&1 || rc=$?
    case $rc in
        0) ;;
        3) cat "$log" >&2 ;;  # not root: the message says what to install
        *) tail -n 20 "$log" >&2; echo "warning: building FFCV failed (log: $log); data.loader=folder still works" >&2 ;;
    esac
    # done only when everything succeeded: a failed FFCV build (e.g. apt locked by another process) is retried
    # by the next run instead of being skipped for good
    if [ "$rc" = 0 ]; then rm -f "$log"; touch "$stamp"; else echo "setup not marked done: FFCV (exit $rc, log: $log); rerun scripts/setup.sh to retry" >&2; fi
fi
# The GPU kit's rehearsal under Python 3.12 (torch 2.11 as on the GPU image, the bundle installed as there)
if bash scripts/gpu/find_python312.sh >/dev/null 2>&1; then
    log=$(mktemp)
    if ! { bash scripts/gpu/gpu_rehearsal_env.sh && bash scripts/gpu/gpu_bundle.sh; } >"$log" 2>&1; then
        grep -v 'is ignored' "$log" | tail -n 20 >&2
        echo "warning: preparing the GPU kit's rehearsal failed (log: $log); tests/test_gpu_kit.py will fail" >&2
    else
        rm -f "$log"
    fi
fi
