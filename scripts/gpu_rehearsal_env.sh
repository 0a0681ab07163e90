#!/usr/bin/env bash
# A Python 3.12 venv that stands in for the lent GPU machine's image (constraints/gpu-image.txt: torch 2.11,
# numpy 2.5, timm, numba, OpenCV, ... and none of hydra, omegaconf, wandb, submitit, FFCV), so that
# `scripts/gpu_check.sh --device cpu --tiny` rehearses the kit here exactly as it will run there: the bundle
# of scripts/gpu_bundle.sh installed on top with --target, no network.
# usage: scripts/gpu_rehearsal_env.sh [venv]   (default .venv-gpu; PYTHON312=/path/to/python3.12)
# Downloads torch 2.11's CUDA build from PyPI once (about 3.5 GB installed: PyPI has no CPU-only wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv-gpu}
PY=${PYTHON312:-$(bash scripts/find_python312.sh)}
stamp="$VENV/.installed-$(sha256sum constraints/gpu-image.txt | cut -c1-16)"
[ -f "$stamp" ] && exit 0
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# every line of the list is installed (it is the image's package list), each at its pinned version
grep -v '^\s*#' constraints/gpu-image.txt | grep -v '^\s*$' > "$VENV/image-packages.txt"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -r "$VENV/image-packages.txt"
rm -f "$VENV"/.installed-*
touch "$stamp"
