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
#   MODEL           aasist-l (default) or aasist: exported to ONNX inside the image
#   WEIGHTS_SOURCE  a URL for `spoofwatch weights fetch --source` when the wheel does not carry
#                   the weights; empty: the weights packaged in the wheel
#
# The server listens on 0.0.0.0:8765, which requires a token: set SPOOFWATCH_TOKEN.
# GET /healthz (no token), /readyz and /metrics (token) are on the same port.

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
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1
COPY --from=wheel /wheels /wheels
COPY deploy/docker/install.sh /usr/local/bin/spoofwatch-install
RUN spoofwatch-install
USER 10001
EXPOSE 8765
HEALTHCHECK --interval=10s --timeout=3s CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8765/healthz', timeout=2)"]
ENTRYPOINT ["spoofwatch", "serve", "--host", "0.0.0.0", "--port", "8765"]
CMD ["--device", "cpu"]

# ---- CUDA image ------------------------------------------------------------------------
FROM ${CUDA_IMAGE} AS cuda
ARG TORCH_VERSION=2.13.0
ARG MODEL=aasist-l
ARG WEIGHTS_SOURCE=
ENV SPOOFWATCH_HOME=/opt/spoofwatch \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
COPY --from=wheel /wheels /wheels
COPY deploy/docker/install.sh /usr/local/bin/spoofwatch-install
RUN spoofwatch-install
USER 10001
EXPOSE 8765
HEALTHCHECK --interval=10s --timeout=3s CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8765/healthz', timeout=2)"]
ENTRYPOINT ["spoofwatch", "serve", "--host", "0.0.0.0", "--port", "8765"]
CMD ["--device", "cuda"]
