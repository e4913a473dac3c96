# attnserve: gRPC (Open Inference Protocol) server for attention models.
#   CPU image (default):  docker build -t attnserve .
#   CUDA image:           docker build --target cuda -t attnserve:cuda .
# The install and build steps are the scripts the README and .ci/run use, so CI proves them.

FROM python:3.11-slim-bookworm AS cpu
ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 EXTRAS=serve,onnx-cpu,torch,train
WORKDIR /opt/attnserve
COPY . .
RUN apt-get update -o Acquire::Languages=en \
    && bash scripts/install.sh \
    && bash scripts/build-data.sh \
    && bash scripts/build-repository.sh model_repository \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --uid 1000 --create-home attnserve && chown -R attnserve /opt/attnserve
USER 1000
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s CMD ["attnserve", "health", "--url", "localhost:8001"]
ENTRYPOINT ["attnserve", "serve", "--repository", "/opt/attnserve/model_repository"]

# CUDA: onnxruntime-gpu instead of onnxruntime (never both), models on the GPU by default.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 AS cuda
ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_BREAK_SYSTEM_PACKAGES=1 \
    EXTRAS=serve,onnx-cuda,torch,train PYTHON=python3
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-pip python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/attnserve
COPY --from=cpu /opt/attnserve /opt/attnserve
RUN bash scripts/install.sh
RUN useradd --uid 1001 --create-home attnserve && chown -R attnserve /opt/attnserve
USER attnserve
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s CMD ["attnserve", "health", "--url", "localhost:8001"]
ENTRYPOINT ["attnserve", "serve", "--repository", "/opt/attnserve/model_repository", "--device", "cuda"]
