#!/usr/bin/env bash
# A Python 3.12 venv that stands in for the lent GPU machine's image (constraints/gpu-image.txt: torch 2.11,
# numpy 2.5, timm, numba, OpenCV, ... and none of hydra, omegaconf, wandb, submitit, FFCV), so that
# `scripts/gpu_check.sh --device cpu --tiny` rehearses the kit here exactly as it will run there: the bundle
# of scripts/gpu/gpu_bundle.sh installed on top with --target, no network.
# usage: scripts/gpu/gpu_rehearsal_env.sh [venv]   (PYTHON312=/path/to/python3.12)
#        scripts/gpu/gpu_rehearsal_env.sh --path   (prints the default venv's path; tests/test_gpu_kit.py uses it)
# The default venv lives in the user's cache, one per image list and interpreter, shared by every checkout:
# it stands in for another machine, not for this checkout, and it is 5.4 GB and 3-5 minutes of pip that a fresh
# clone would otherwise pay again. GSAM_CACHE moves the cache (default ${XDG_CACHE_HOME:-~/.cache}/gsam-imagenet).
# Downloads torch 2.11's CUDA build from PyPI once (about 3.5 GB installed: PyPI has no CPU-only wheel).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON312:-$(bash scripts/gpu/find_python312.sh)}
key=$( (cat constraints/gpu-image.txt; echo "$PY"; "$PY" -V) | sha256sum | cut -c1-16)
default="${GSAM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gsam-imagenet}/venv-gpu-$key"
if [ "${1:-}" = "--path" ]; then echo "$default"; exit 0; fi
VENV=${1:-$default}
stamp="$VENV/.installed-$key"
[ -f "$stamp" ] && exit 0
# two checkouts setting up at once build it once: the second waits here, then finds the stamp
mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9
[ -f "$stamp" ] && exit 0
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# every line of the list is installed (it is the image's package list), each at its pinned version
grep -v '^\s*#' constraints/gpu-image.txt | grep -v '^\s*$' > "$VENV/image-packages.txt"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -r "$VENV/image-packages.txt"
rm -f "$VENV"/.installed-*
touch "$stamp"
