#!/usr/bin/env bash
# The main job on the embedded demo data (scikit-learn digits written as JPEGs in the ImageNet layout, 40% of
# the train labels wrong, val clean): a small ViT trained vanilla and with GSAM on the CPU, then the evaluation
# tables and plots. The regime is the small-scale study's (docs/analysis.md §6), where sharpness-aware training
# is known to help: vanilla memorises the wrong labels. Extra arguments go to both runs (e.g.
# train.device=cuda); runs land in $GSAM_OUTPUTS (default outputs/) and a rerun resumes or reuses them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
outputs=${GSAM_OUTPUTS:-outputs}
# One torch thread unless told otherwise: the model is tiny, and on a 2-vCPU machine that other jobs share, torch's
# default (a thread per core) spun: GSAM ran at ~0.5 step/s with 2 threads at load average ~2.9, against ~20 step/s
# with one thread a minute before (2026-11-27)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
for exp in demo_noisy_vanilla demo_noisy_gsam; do
    .venv/bin/python train.py +experiment=$exp output_dir="$outputs/$exp" data.root="$outputs/demo_noisy_data" "$@"
done
.venv/bin/python scripts/compare_runs.py "$outputs/demo_noisy_vanilla" "$outputs/demo_noisy_gsam"
.venv/bin/python scripts/make_table.py "$outputs/demo_noisy_vanilla" "$outputs/demo_noisy_gsam"
# the training curves and the Table 1 chart, as PNGs
.venv/bin/python scripts/plot_runs.py "$outputs/demo_noisy_vanilla" "$outputs/demo_noisy_gsam" --out "$outputs/demo_plots"
