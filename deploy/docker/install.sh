#!/bin/sh
# Installs spoofwatch into /opt/venv inside an image (see ../../Dockerfile). The
# model cache is prepared next, by prepare.sh. Reads TORCH_VERSION from the build args.
set -eu
PYTHON=$(command -v python3 || command -v python)
"$PYTHON" -m venv /opt/venv
/opt/venv/bin/pip install --no-cache-dir --upgrade pip
# The CPU build of PyTorch (only the export uses it) instead of a multi-GB CUDA one.
/opt/venv/bin/pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"
/opt/venv/bin/pip install --no-cache-dir /wheels/*.whl
rm -rf /wheels
