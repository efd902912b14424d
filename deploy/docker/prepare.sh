#!/bin/sh
# Fills the model cache ($SPOOFWATCH_HOME) at image build time with everything
# `spoofwatch serve` loads: the server runs as an unprivileged user that cannot
# write the cache, and starts without PyTorch work or network. `serve
# --prepare-only` goes through serve's own start-up preparation (the ONNX graph,
# the incremental graphs at the calibration's hop, the calibration), so what it
# leaves is what serve looks for.
#
# Reads (the Dockerfile sets them):
#   SPOOFWATCH_HOME   the cache folder
#   SPOOFWATCH_MODEL  the model (serve's default --model, as the entrypoint then reads it)
#   DEVICE            the image's --device (cpu or cuda)
#   PRECISIONS        the --precision values to prepare, e.g. "fp32 fp16" (int8 is
#                     calibrated on speech: not prepared here)
#   WEIGHTS_SOURCE    optional URL for `spoofwatch weights fetch`
# tests/test_deploy.py runs this script, then serves from the cache made read-only.
set -eu
mkdir -p "$SPOOFWATCH_HOME"
if [ -n "${WEIGHTS_SOURCE:-}" ]; then
    spoofwatch weights fetch --model "$SPOOFWATCH_MODEL" --source "$WEIGHTS_SOURCE" --no-progress
fi
for precision in $PRECISIONS; do
    spoofwatch serve --prepare-only --device "$DEVICE" --precision "$precision"
done
# The server runs as an unprivileged user; it only reads the cache.
chmod -R a+rX "$SPOOFWATCH_HOME"
