#!/usr/bin/env bash
# Serving benchmark on an offline H100/H200 host, unattended, in under 5 minutes.
#
# Here, once (network for PyPI; see ../shared/tools/gpu/README.md):
#   benchmarks/gpu_serving.sh prepare       # builds .devcarry/ (~45 MB; add .devcarry/ to .git/info/exclude)
# On the GPU host, from the checkout root, with .devcarry carried along:
#   benchmarks/gpu_serving.sh run [STREAMS...]   # default: 256 1024; JSON lines under $OUT (or /tmp/out)
#
# Each run: `serve --device cuda --workers 8` and bench_server.py with 20 s real-time
# streams of LibriSpeech speech from 6 client processes (about 60-90 s per run).
set -euo pipefail
cd "$(dirname "$0")/.."
carry=.devcarry
shared=${SPOOFWATCH_SHARED:-$(cd .. && pwd)/shared}

prepare() {
    mkdir -p "$carry/whl" "$carry/home" "$carry/site/silero_vad/data" "$carry/shared/data/speech/bonafide"
    [[ -f "$carry/ort-gpu-sm90.tar.xz" ]] || "$shared/tools/gpu/build_ort_gpu_slim.sh" "$carry"
    python3 -m pip download -q --python-version 3.12 --only-binary=:all: --platform manylinux_2_28_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any -d "$carry/whl" \
        soundfile soxr websockets cffi pycparser prometheus-client
    vad=$(python3 -c "import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec('silero_vad').origin).parent / 'data' / 'silero_vad.onnx')")
    cp "$vad" "$carry/site/silero_vad/data/"
    : > "$carry/site/silero_vad/__init__.py"
    cp -r "$shared/data/speech/bonafide/librispeech_test-other" "$carry/shared/data/speech/bonafide/"
    # Weights and the ONNX export, made here (the host's PyTorch differs).
    SPOOFWATCH_HOME=$carry/home python3 -m spoofwatch weights fetch --source "$shared/weights" --no-progress
    SPOOFWATCH_HOME=$carry/home python3 -m spoofwatch export --model aasist-l
    du -sh "$carry"
}

run() {
    local out=${OUT:-/tmp/out}
    mkdir -p /tmp/site "$out"
    tar -xJf "$carry/ort-gpu-sm90.tar.xz" -C /tmp/site
    python3 -m pip install -q --no-index --no-deps --target /tmp/site "$carry"/whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD/$carry/site:$PWD
    LD_LIBRARY_PATH=$(python3 -c "import glob,os;print(':'.join(sorted({os.path.dirname(p) for p in glob.glob('/opt/torch/.venv/lib/python3*/site-packages/nvidia/**/lib*.so*', recursive=True)})))")
    export LD_LIBRARY_PATH CUDA_MODULE_LOADING=LAZY
    export SPOOFWATCH_HOME=$PWD/$carry/home SPOOFWATCH_SHARED=$PWD/$carry/shared
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt" || true
    local extra=--baseline  # the first run also measures one stream alone, as the reference
    for n in "${@:-256 1024}"; do
        for streams in $n; do
            timeout 150 python3 benchmarks/bench_server.py --device cuda --workers 8 --clients 6 \
                --streams "$streams" --seconds 20 $extra --json | tee -a "$out/bench_server.jsonl" || echo "run $streams failed: $?"
            extra=
        done
    done
}

case "${1:-}" in
    prepare) prepare ;;
    run) shift; run "$@" ;;
    *) echo "usage: $0 prepare | run [STREAMS...]" >&2; exit 2 ;;
esac
