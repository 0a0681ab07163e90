# gsam on a CUDA machine: torch as pinned in constraints/cpu-dev.txt, pyproject's dependencies, FFCV, the project installed, train.py as
# the entry point. Build: docker build -t gsam .
#   one GPU:  docker run --gpus all --ipc=host -v /data:/data gsam +experiment=vit_b32_gsam data.betons=/data/betons
#   8 GPUs:   docker run --gpus all --ipc=host -v /data:/data --entrypoint torchrun gsam \
#                 --nproc_per_node=8 train.py +experiment=vit_b32_gsam data.betons=/data/betons
#   Slurm (pyxis/enroot, one task per GPU): srun --container-image=gsam python train.py +experiment=...
# torch 2.14.1 is a CUDA 13.0 build that brings its own CUDA libraries; the base image supplies the runtime
# layout and the driver interface of the same CUDA release (tests/test_dockerfile.py checks both, and that
# this file agrees with pyproject.toml and scripts/install_ffcv.sh).
FROM nvidia/cuda:13.0.0-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    NUMBA_THREADING_LAYER=workqueue

# Python 3.10 (Ubuntu 22.04), a compiler (FFCV's C extension), and FFCV's system libraries: the list of
# scripts/install_ffcv.sh (OpenCV core/imgproc, libturbojpeg, pkg-config).
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3 python3-venv python3-dev build-essential git \
        libopencv-imgproc-dev libturbojpeg0-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /workspace/gsam
# Dependencies first (a cached layer while only the code changes): torch at the development machine's version
# (constraints/cpu-dev.txt; pyproject only declares the range), then the project, then FFCV (its sdist is built
# against the system libraries above, without its GUI opencv dependency). The rest of constraints/cpu-dev.txt is
# not applied: it pins for Python 3.11 (numpy 2.4 needs >= 3.11) and this image has Ubuntu's 3.10.
# setuptools needs each package's folder to exist (pyproject lists them; data/ and models/ install as gsam.data and
# gsam.models): their __init__.py files are enough for this layer, the code comes with `COPY . .`.
COPY pyproject.toml README.md ./
COPY gsam/__init__.py gsam/
COPY gsam/analysis/__init__.py gsam/analysis/
COPY gsam/catalog/__init__.py gsam/catalog/
COPY gsam/config/__init__.py gsam/config/
COPY gsam/evaluation/__init__.py gsam/evaluation/
COPY gsam/optim/__init__.py gsam/optim/
COPY gsam/run/__init__.py gsam/run/
COPY gsam/state/__init__.py gsam/state/
COPY gsam/studies/__init__.py gsam/studies/
COPY data/__init__.py data/
COPY models/__init__.py models/
RUN pip install --upgrade pip setuptools wheel && pip install torch==2.14.1 torchvision==0.29.1 && pip install -e .
COPY . .
RUN bash scripts/install_ffcv.sh /opt/venv

ENTRYPOINT ["python", "train.py"]
