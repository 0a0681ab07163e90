# gsam on a CUDA machine: the pinned dependencies of pyproject.toml, the project installed, train.py
# as the entry point. Build: docker build -t gsam .
#   one GPU:  docker run --gpus all --ipc=host -v /data:/data gsam +experiment=vit_b32_gsam data.root=/data/imagenet
#   8 GPUs:   docker run --gpus all --ipc=host -v /data:/data --entrypoint torchrun gsam \
#                 --nproc_per_node=8 train.py +experiment=vit_b32_gsam data.root=/data/imagenet
# torch 2.14.1 is a CUDA 13.0 build that brings its own CUDA libraries; the base image supplies the
# runtime layout and a matching driver interface.
FROM nvidia/cuda:13.0.0-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    NUMBA_THREADING_LAYER=workqueue

# Python 3.10 (Ubuntu 22.04), a compiler for packages that build, and FFCV's system libraries
# (OpenCV core/imgproc, libturbojpeg, pkg-config).
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3 python3-venv python3-dev build-essential pkg-config git \
        libopencv-imgproc-dev libturbojpeg0-dev \
    && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /workspace/gsam
# Dependencies first (cached while only the code changes), then the project itself.
COPY pyproject.toml README.md ./
COPY gsam/__init__.py gsam/__init__.py
RUN pip install --upgrade pip && pip install -e .
COPY . .
RUN pip install --no-deps -e .

ENTRYPOINT ["python", "train.py"]
