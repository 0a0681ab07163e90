#!/usr/bin/env bash
# The GPU acceptance kit: installs .gpu_bundle (scripts/gpu/gpu_bundle.sh, made on the CPU machine) into a private
# folder with no network, then runs every part of scripts/gpu/gpu_check.py: a small ImageNet-layout set and its
# betons, ~50-step training runs (vit_b32 GSAM FFCV bf16; resnet50 XSAM channels_last with alpha* searches;
# mixer_b16 SAM under torch.compile; vit_s16 GSAM fp16 + GradScaler; vit_s32 GSAM with micro-batches inside
# its perturbation groups; every SAM-family run with Table 1's sam.m = 64), kill -9 and resume, evaluate.py on
# the checkpoint, and bench_train.py --m 32 (img/s, ratios, groups vs one group, peak memory, FFCV data wait,
# profiler tables). OUT gets summary.json, summary.md, gpu_check.log and profile_*.txt; exit 1 if a part failed.
# usage: bash scripts/gpu_check.sh OUT [--device cpu] [--tiny] [--only PART,...] [--work DIR]
#        (PYTHON=python3 by default; GSAM_SITE=/tmp/gsam-site is where the bundle goes)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: bash scripts/gpu_check.sh OUT [--device cpu] [--tiny] [--only PART,...]" >&2; exit 2; }
PY=${PYTHON:-python3}
SITE=${GSAM_SITE:-/tmp/gsam-site}
if ! ls .gpu_bundle/wheels/*.whl >/dev/null 2>&1; then
    echo "error: .gpu_bundle/wheels is empty: run 'bash scripts/gpu/gpu_bundle.sh' on the CPU machine first" >&2; exit 2
fi
key=$(ls .gpu_bundle/wheels | sha256sum | cut -c1-16)
if [ ! -f "$SITE/.gsam-$key" ]; then
    # two kits sharing one SITE (the CPU rehearsal's, cached per machine) install it once: the second waits
    mkdir -p "$(dirname "$SITE")"
    exec 9>"$SITE.lock"
    flock 9
    if [ ! -f "$SITE/.gsam-$key" ]; then
        rm -rf "$SITE"
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .gpu_bundle/wheels/*.whl
        touch "$SITE/.gsam-$key"
    fi
    exec 9>&-
fi
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 WANDB_MODE=offline WANDB_SILENT=true \
    NUMBA_THREADING_LAYER=workqueue HYDRA_FULL_ERROR=1
exec "$PY" scripts/gpu/gpu_check.py "$@"
