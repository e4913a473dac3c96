# syntax=docker/dockerfile:1
# attnserve images: the gRPC (Open Inference Protocol) server and the reference model repository.
#
#   target  what serves                                   build                                                tag deploy/k8s uses
#   slim    ONNX Runtime (CPU); no torch, no training     docker build -t attnserve:0.1.0 .                    overlays/cpu, kserve
#   torch   ONNX Runtime + the torch backend (CPU wheel)  docker build --target torch -t attnserve:0.1.0-torch .
#   cuda    onnxruntime-gpu (CUDA 12, cuDNN 9), --device cuda
#                                                         docker build --target cuda -t attnserve:0.1.0-cuda .  overlays/cuda
#
# Run: docker run --rm -p 8001:8001 -p 8002:8002 --read-only --tmpfs /tmp attnserve:0.1.0
# (settings from ATTNSERVE_* variables or flags after the image name: ... attnserve:0.1.0 --models dates-additive)
#
# Every RUN is one script of scripts/image/. CI runs the same stages outside a container
# (scripts/image/dockerfile_run.py, tests/deploy/test_images.py): it executes these RUN lines with
# the paths moved under a scratch prefix, then serves the repository from the venv they built.
# The model repository is built from committed files only (checkpoints/ and the held-out sample
# in models/data/); no apt lists, no corpus, no network but the package index.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

# --- build: the reference model repository (the export stack stays in this stage) ---------
FROM ${PYTHON_IMAGE} AS repository
# torch's CPU wheel (PyPI's default torch is a CUDA build of several GB); "" = the pip config's indexes
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY runtime runtime
COPY protocol protocol
COPY models models
COPY exporters exporters
COPY backends backends
COPY serving serving
COPY client client
COPY cli cli
COPY checkpoints checkpoints
COPY scripts scripts
RUN bash scripts/image/build-repository.sh /opt/build/venv /opt/attnserve/model_repository

# --- build: attnserve as a wheel (the serving images install it, not the source tree) -------
FROM ${PYTHON_IMAGE} AS wheel
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY runtime runtime
COPY protocol protocol
COPY models models
COPY exporters exporters
COPY backends backends
COPY serving serving
COPY client client
COPY cli cli
COPY scripts/image scripts/image
RUN bash scripts/image/wheel.sh /opt/attnserve/wheels

# --- cuda: onnxruntime-gpu, every model on the GPU ---------------------------------------
FROM ${CUDA_IMAGE} AS cuda
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY scripts/image /opt/attnserve/scripts
RUN bash /opt/attnserve/scripts/python.sh
COPY --from=wheel /opt/attnserve/wheels /opt/attnserve/wheels
RUN bash /opt/attnserve/scripts/install.sh /opt/attnserve/venv /opt/attnserve/wheels serve,onnx-cuda,tracing
COPY --from=repository /opt/attnserve/model_repository /opt/attnserve/model_repository
# read-only root filesystem: whatever writes a cache writes under /tmp (an emptyDir or --tmpfs)
ENV PATH=/opt/attnserve/venv/bin:$PATH HOME=/tmp MPLCONFIGDIR=/tmp/matplotlib \
    ATTNSERVE_REPOSITORY=/opt/attnserve/model_repository ATTNSERVE_DEVICE=cuda
USER 1000:1000
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s CMD ["attnserve", "health", "--url", "localhost:8001"]
ENTRYPOINT ["attnserve", "serve"]

# --- torch: ONNX Runtime and the torch backend (CPU) -------------------------------------
FROM ${PYTHON_IMAGE} AS torch
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY scripts/image /opt/attnserve/scripts
COPY --from=wheel /opt/attnserve/wheels /opt/attnserve/wheels
RUN bash /opt/attnserve/scripts/install.sh /opt/attnserve/venv /opt/attnserve/wheels serve,onnx-cpu,torch,tracing
COPY --from=repository /opt/attnserve/model_repository /opt/attnserve/model_repository
ENV PATH=/opt/attnserve/venv/bin:$PATH HOME=/tmp MPLCONFIGDIR=/tmp/matplotlib \
    ATTNSERVE_REPOSITORY=/opt/attnserve/model_repository
USER 1000:1000
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s CMD ["attnserve", "health", "--url", "localhost:8001"]
ENTRYPOINT ["attnserve", "serve"]

# --- slim (the default target): ONNX Runtime only ----------------------------------------
# Models whose config.yaml lists torch beside onnxruntime serve on onnxruntime; a request asking
# for torch gets INVALID_ARGUMENT ("backend 'torch' is not installed on this server").
FROM ${PYTHON_IMAGE} AS slim
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY scripts/image /opt/attnserve/scripts
COPY --from=wheel /opt/attnserve/wheels /opt/attnserve/wheels
RUN bash /opt/attnserve/scripts/install.sh /opt/attnserve/venv /opt/attnserve/wheels serve,onnx-cpu,tracing
COPY --from=repository /opt/attnserve/model_repository /opt/attnserve/model_repository
ENV PATH=/opt/attnserve/venv/bin:$PATH HOME=/tmp MPLCONFIGDIR=/tmp/matplotlib \
    ATTNSERVE_REPOSITORY=/opt/attnserve/model_repository
USER 1000:1000
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s CMD ["attnserve", "health", "--url", "localhost:8001"]
ENTRYPOINT ["attnserve", "serve"]
