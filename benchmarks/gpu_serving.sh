#!/usr/bin/env bash
# Serving benchmark on an offline H100/H200 host, unattended: at most 150 s for
# `profile`, 240 s for `checks` and 210 s per serving run (each step is bounded).
#
# Here, once (network for PyPI; see ../shared/tools/gpu/README.md):
#   benchmarks/gpu_serving.sh prepare       # builds .devcarry/ (~45 MB; add .devcarry/ to .git/info/exclude)
# On the GPU host, from the checkout root, with .devcarry carried along:
#   benchmarks/gpu_serving.sh run [STEP...]   # default: checks 256 1024; JSON lines under $OUT (or /tmp/out)
#   STEP: `checks` (benchmarks/gpu_checks.py: CUDA parity, batch cap, FP16, incremental),
#         `memory` (benchmarks/gpu_memory.py: a worker's GPU memory, per-session vs shared arena),
#         `profile` (benchmarks/gpu_step_profile.py: where a step's time goes) or a serving run,
#         STREAMS[:FRAME_MS][:wWORKERS][:bMAX_BATCH][:iINGEST_THREADS][:noshed], e.g. 1024:100:w4:b32
#   (SKIP_CHECKS=1: the default steps without `checks`)
#   BENCH_ARGS="--precision fp16": serve with the FP16 graphs (incremental steps at FP16)
#   PROFILE_ARGS="--only worker_like": which parts of gpu_step_profile.py the `profile` step runs
#
# Each run: `serve --device cuda --workers 8` and bench_server.py with 20 s real-time
# streams of LibriSpeech speech from 2-8 client processes: the workers' start-up
# (loading, warming their batch buckets and timing themselves one at a time), then
# the streams. A run cut by its timeout stops its server too (bench_server.py).
set -euo pipefail
cd "$(dirname "$0")/.."
carry=.devcarry
shared=${SPOOFWATCH_SHARED:-$(cd .. && pwd)/shared}

prepare() {
    mkdir -p "$carry/whl" "$carry/home" "$carry/site/silero_vad/data" "$carry/shared/data/speech/bonafide" "$carry/shared/reference"
    [[ -f "$carry/ort-gpu-sm90.tar.xz" ]] || "$shared/tools/gpu/build_ort_gpu_slim.sh" "$carry"
    python3 -m pip download -q --no-deps --python-version 3.12 --only-binary=:all: --platform manylinux_2_28_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any -d "$carry/whl" \
        soundfile soxr websockets cffi pycparser prometheus-client
    vad=$(python3 -c "import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec('silero_vad').origin).parent / 'data' / 'silero_vad.onnx')")
    cp "$vad" "$carry/site/silero_vad/data/"
    : > "$carry/site/silero_vad/__init__.py"
    cp -r "$shared/data/speech/bonafide/librispeech_test-other" "$carry/shared/data/speech/bonafide/"
    cp "$shared/reference/official_outputs.npz" "$carry/shared/reference/"
    # Weights and the ONNX exports (FP32, FP16, incremental at the live hop), made
    # here: the host's PyTorch differs.
    export SPOOFWATCH_HOME=$carry/home
    python3 -m spoofwatch weights fetch --source "$shared/weights" --no-progress
    for spec in aasist-l:fp32 aasist:fp32 aasist-l:fp16; do
        local model=${spec%%:*} precision=${spec#*:}
        python3 -m spoofwatch export --model "$model" --precision "$precision"
        python3 -c "from spoofwatch.constants import LIVE_HOP_SAMPLES as h; from spoofwatch.model.incremental import ensure_incremental_onnx as e; e('$model', h, precision='$precision')"
    done
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
    local extra=--baseline  # the first run also measures one stream alone, as the reference (NO_BASELINE=1: not)
    [[ -n ${NO_BASELINE:-} ]] && extra=
    local specs=("$@")
    if (( ${#specs[@]} == 0 )); then
        specs=(256 1024)
        [[ -z "${SKIP_CHECKS:-}" ]] && specs=(checks "${specs[@]}")
    fi
    for spec in "${specs[@]}"; do
        case $spec in
            checks)  # CUDA parity, batch cap, FP16, incremental (about a minute)
                timeout 240 python3 benchmarks/gpu_checks.py --json | tee -a "$out/gpu_checks.jsonl" || echo "gpu_checks failed: $?"
                continue ;;
            memory)  # a worker's GPU memory, per-session arenas vs one shared arena (about a minute)
                timeout 150 python3 benchmarks/gpu_memory.py --precision "${MEMORY_PRECISION:-fp16}" --json | tee -a "$out/gpu_memory.jsonl" || echo "gpu_memory failed: $?"
                continue ;;
            profile)  # where a step's time goes: copies, cuDNN search, processes sharing the GPU
                timeout 150 python3 benchmarks/gpu_step_profile.py ${PROFILE_ARGS:-} --json | tee -a "$out/gpu_step_profile.jsonl" || echo "profile failed: $?"
                continue ;;
        esac
        # STREAMS[:FRAME_MS][:wWORKERS][:bMAX_BATCH][:iINGEST_THREADS][:noshed]; one client process per 128 streams (2-8).
        local streams=${spec%%:*} frame=20 workers=${WORKERS:-8} args=()
        IFS=: read -r -a fields <<< "${spec#"$streams"}"
        for f in "${fields[@]}"; do
            case $f in
                '') ;;
                w*) workers=${f#w} ;;
                b*) args+=(--max-batch-windows "${f#b}") ;;
                i*) args+=(--ingest-threads "${f#i}") ;;
                noshed) args+=(--no-load-shedding) ;;
                *) frame=$f ;;
            esac
        done
        local clients=$(( streams / 128 )); (( clients < 2 )) && clients=2; (( clients > 8 )) && clients=8
        # 210 s: up to ~150 s for the workers to load, warm their batch buckets
        # (model/shapes.py) and time themselves one at a time, then 20 s of streams.
        timeout 210 python3 benchmarks/bench_server.py --device cuda --workers "$workers" --clients $clients \
            --streams "$streams" --frame-ms "$frame" --seconds 20 --startup-timeout-s 150 $extra "${args[@]}" ${BENCH_ARGS:-} \
            --server-log "$out/server-${spec//:/_}.log" --json \
            | tee -a "$out/bench_server.jsonl" || echo "run $spec failed: $?"
        extra=
    done
}

case "${1:-}" in
    prepare) prepare ;;
    run) shift; run "$@" ;;
    *) echo "usage: $0 prepare | run [STREAMS...]" >&2; exit 2 ;;
esac
