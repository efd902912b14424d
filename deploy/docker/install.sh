#!/bin/sh
# Installs spoofwatch into /opt/venv inside an image (see ../../Dockerfile) and
# exports the model to ONNX once, so that the server starts without PyTorch work
# or network. Reads TORCH_VERSION, MODEL and WEIGHTS_SOURCE from the build args.
set -eu
PYTHON=$(command -v python3 || command -v python)
"$PYTHON" -m venv /opt/venv
/opt/venv/bin/pip install --no-cache-dir --upgrade pip
# The CPU build of PyTorch (only the export uses it) instead of a multi-GB CUDA one.
/opt/venv/bin/pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"
/opt/venv/bin/pip install --no-cache-dir /wheels/*.whl
rm -rf /wheels
mkdir -p "$SPOOFWATCH_HOME"
if [ -n "${WEIGHTS_SOURCE:-}" ]; then
    spoofwatch weights fetch --model "$MODEL" --source "$WEIGHTS_SOURCE" --no-progress
fi
spoofwatch export --model "$MODEL"
# The server runs as an unprivileged user; it only reads the cache.
chmod -R a+rX "$SPOOFWATCH_HOME"
