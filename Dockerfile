# syntax=docker/dockerfile:1
# spoofwatch WebSocket server images, CPU and CUDA, from one file:
#
#   docker build --target cpu  -t spoofwatch:cpu  .
#   docker build --target cuda -t spoofwatch:cuda .
#   docker run -p 8765:8765 -e SPOOFWATCH_TOKEN=change-me spoofwatch:cpu
#   docker run --gpus all -p 8765:8765 -e SPOOFWATCH_TOKEN=change-me spoofwatch:cuda
#
# Build arguments (all optional):
#   PYTHON_IMAGE    base of the CPU image and of the wheel build
#   CUDA_IMAGE      base of the CUDA image: an official CUDA runtime image with cuDNN 9,
#                   matching the CUDA 12 builds of onnxruntime-gpu
#   TORCH_VERSION   PyTorch, CPU build in both images: it only exports the ONNX file at build
#                   time (ONNX Runtime does all inference, on the GPU in the CUDA image)
#   MODEL           aasist-l (default) or aasist: exported to ONNX inside the image and
#                   served (ENV SPOOFWATCH_MODEL, serve's default --model)
#   WEIGHTS_SOURCE  a URL for `spoofwatch weights fetch --source` when the wheel does not carry
#                   the weights; empty: the weights packaged in the wheel
#
# The server listens on 0.0.0.0:8765, which requires a token: set SPOOFWATCH_TOKEN.
# GET /healthz (no token), /readyz and /metrics (token) are on the same port.
#
# The build prepares the model cache (/opt/spoofwatch) with everything serve loads
# (deploy/docker/prepare.sh: `serve --prepare-only`): the CPU image at fp32, the CUDA
# image at fp32 and fp16. The server runs as user 10001 and cannot write the cache:
# other options that need other graphs (--precision int8, a --calibration with
# another hop, --weights) need a writable SPOOFWATCH_HOME (a volume) or an image
# built for them.
#
# tini is PID 1: it forwards SIGTERM to the server (which drains its streams) and
# reaps orphans; the server also stops on SIGTERM during its start-up.
#
# HEALTHCHECK --start-period: start-up (the host-cost probe, then every worker's model
# load; on CUDA the workers load one at a time) took 17-24 s to the first /healthz
# 200 with 2 workers on a loaded 2-core VM; 300 s covers many workers and matches the
# Kubernetes startupProbe (deploy/kubernetes/deployment.yaml: 60 x 5 s).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

# ---- the wheel -------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
# spoofwatch/{model,stream,calibration,configs} are links to these folders.
COPY spoofwatch spoofwatch
COPY model model
COPY stream stream
COPY calibration calibration
COPY configs configs
RUN pip wheel --no-deps --wheel-dir /wheels .

# ---- CPU image -------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS cpu
ARG TORCH_VERSION=2.13.0
ARG MODEL=aasist-l
ARG WEIGHTS_SOURCE=
ENV SPOOFWATCH_HOME=/opt/spoofwatch \
    SPOOFWATCH_MODEL=${MODEL} \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*
COPY --from=wheel /wheels /wheels
COPY deploy/docker/install.sh /usr/local/bin/spoofwatch-install
COPY deploy/docker/prepare.sh /usr/local/bin/spoofwatch-prepare
RUN spoofwatch-install && DEVICE=cpu PRECISIONS="fp32" spoofwatch-prepare
USER 10001
EXPOSE 8765
HEALTHCHECK --interval=10s --timeout=3s --start-period=300s CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8765/healthz', timeout=2)"]
ENTRYPOINT ["tini", "--", "spoofwatch", "serve", "--host", "0.0.0.0", "--port", "8765"]
CMD ["--device", "cpu"]

# ---- CUDA image ------------------------------------------------------------------------
FROM ${CUDA_IMAGE} AS cuda
ARG TORCH_VERSION=2.13.0
ARG MODEL=aasist-l
ARG WEIGHTS_SOURCE=
ENV SPOOFWATCH_HOME=/opt/spoofwatch \
    SPOOFWATCH_MODEL=${MODEL} \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv tini \
    && rm -rf /var/lib/apt/lists/*
COPY --from=wheel /wheels /wheels
COPY deploy/docker/install.sh /usr/local/bin/spoofwatch-install
COPY deploy/docker/prepare.sh /usr/local/bin/spoofwatch-prepare
# fp16 too, for `--precision fp16` (the graphs are converted without a GPU).
RUN spoofwatch-install && DEVICE=cuda PRECISIONS="fp32 fp16" spoofwatch-prepare
USER 10001
EXPOSE 8765
HEALTHCHECK --interval=10s --timeout=3s --start-period=300s CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8765/healthz', timeout=2)"]
ENTRYPOINT ["tini", "--", "spoofwatch", "serve", "--host", "0.0.0.0", "--port", "8765"]
CMD ["--device", "cuda"]
