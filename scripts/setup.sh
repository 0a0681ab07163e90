#!/usr/bin/env bash
# Creates .venv with the project (editable) and its test extras; a no-op when nothing it depends on changed.
# Exact versions from constraints/cpu-dev.txt (torch 2.14.1 / torchvision 0.29.1 from the machine's local wheels
# where present, else from PyPI), FFCV built by scripts/install_ffcv.sh.
#
# The packages (6 GB, about 3 minutes of pip and a C build) are installed once per machine into a base venv in the
# user's cache, keyed by everything that decides them, and each checkout's .venv is a plain venv whose
# site-packages are hard links to the base's (under a second, no disk): a second clone, or CI on a machine that
# ran it before, pays the install once. .venv stays self-contained: deleting the cache does not break it, and
# pip in .venv replaces files instead of writing into them. GSAM_CACHE moves the cache (default
# ${XDG_CACHE_HOME:-~/.cache}/gsam-imagenet); on another filesystem than the checkout the files are copied.
#
# Where a Python 3.12 exists it also prepares the GPU kit's CPU rehearsal (tests/test_gpu_kit.py): a venv standing in
# for the GPU machine's image (in the same cache: scripts/gpu/gpu_rehearsal_env.sh) and .gpu_bundle.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# the interpreter by its real path, not by `command -v`: a shim's folder differs by caller (`pyenv exec`, which runs
# pyenv's pip-installed tools, puts the version's own bin/ first in PATH), and a second key builds a second base and
# prunes the first
key=$( (cat pyproject.toml constraints/cpu-dev.txt scripts/install_ffcv.sh; "$PY" -VV
        "$PY" -c 'import os, sys; print(os.path.realpath(sys.executable))') | sha256sum | cut -c1-16)
stamp=.venv/.installed-$key
base="${GSAM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gsam-imagenet}/venv-cpu-$key"

build_base() {  # the packages into $base, once per key; returns install_ffcv.sh's status (3: not root)
    [ -f "$base/.complete" ] && return 0
    echo "setting up .venv (first run on this machine: a few minutes) ..." >&2
    local log rc=0
    log=$(mktemp)
    [ -x "$base/bin/python" ] || "$PY" -m venv "$base"
    # the project goes in only for its dependencies and leaves again: each checkout installs its own, editable,
    # without build isolation (offline) and so with the base's setuptools, which pyproject's build-system names
    if ! { "$base/bin/python" -m pip install --upgrade pip "setuptools>=77" && "$base/bin/python" -m pip install -c constraints/cpu-dev.txt -e '.[test]'; } >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "error: installing the project's packages into $base failed (full log: $log)" >&2
        exit 1
    fi
    # FFCV (data.loader=ffcv): system libraries via apt when root, else a message; the folder loader and
    # every test that does not need FFCV work without it
    bash scripts/install_ffcv.sh "$base" >"$log" 2>&1 || rc=$?
    "$base/bin/python" -m pip uninstall -y -q gsam-imagenet gsam >/dev/null 2>&1 || true
    case $rc in
        0) rm -f "$log"; touch "$base/.complete" ;;
        3) cat "$log" >&2 ;;  # not root: the message says what to install
        *) tail -n 20 "$log" >&2; echo "warning: building FFCV failed (log: $log); data.loader=folder still works" >&2 ;;
    esac
    return "$rc"
}

prune_old_bases() {  # a .venv linked to an older base keeps its files (hard links): only the cache's copy goes
    local old
    for old in "$(dirname "$base")"/venv-cpu-*/; do
        old=${old%/}
        [ -d "$old" ] && [ "$old" != "$base" ] || continue
        (exec 8>"$old.lock"; flock -n 8 && rm -rf "$old" "$old.lock") || true  # skipped while a setup uses it
    done
}

link_venv() {  # a fresh .venv: the base's site-packages as hard links, its commands pointed at .venv's python
    rm -rf .venv
    "$PY" -m venv --without-pip .venv
    local site src
    site=$(ls -d .venv/lib/python3*/site-packages)
    src=$(ls -d "$base"/lib/python3*/site-packages)
    cp -al "$src/." "$site/" 2>/dev/null || cp -a "$src/." "$site/"
    for f in "$base"/bin/*; do
        case $(basename "$f") in python*|activate*|Activate.ps1) continue ;; esac
        if [ "$(head -n 1 "$f")" = "#!$base/bin/python" ]; then  # pip's console scripts
            { echo "#!$PWD/.venv/bin/python"; tail -n +2 "$f"; } > ".venv/bin/$(basename "$f")"
            chmod +x ".venv/bin/$(basename "$f")"
        fi
    done
    local log
    log=$(mktemp)
    if ! .venv/bin/python -m pip install --no-deps --no-build-isolation -e . >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "error: installing the project into .venv failed (full log: $log)" >&2
        exit 1
    fi
    rm -f "$log"
}

if [ ! -f "$stamp" ]; then
    mkdir -p "$(dirname "$base")"
    # two checkouts setting up at once build the base once: the second waits here, then finds it complete
    exec 9>"$base.lock"
    flock 9
    rc=0; build_base || rc=$?
    flock -u 9
    [ "$rc" = 0 ] && prune_old_bases
    link_venv
    # done only when everything succeeded: a failed FFCV build (e.g. apt locked by another process) is retried
    # by the next run instead of being skipped for good
    if [ "$rc" = 0 ]; then touch "$stamp"; else echo "setup not marked done: FFCV (exit $rc); rerun scripts/setup.sh to retry" >&2; fi
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
