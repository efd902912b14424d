"""Reduced-precision variants of an FP32 ONNX export: INT8 (CPU) and FP16 (CUDA).

Both record in the ONNX metadata the SHA-256 of the FP32 file they were
made from; :func:`check_source` refuses a variant whose source hash no
longer matches (a re-export, other weights, a tampered cache).

INT8 is ONNX Runtime static quantization in the QDQ format with
per-channel weights, calibrated on real speech windows (see
:func:`default_calibration_files`; the benchmark never evaluates on those
files). Only the encoder's 2-D convolutions are quantized: they are ~75 %
of the CPU time (ORT profile). Left in FP32, and why (a one-layer-at-a-time
sweep during development, 8 calibration / 4 held-out LibriSpeech windows):

- the sinc front end (``conv_time``): its band-pass outputs span a range a
  single 8-bit activation scale cannot hold; quantizing every convolution
  including it (MinMax ranges) moved the logit by ~3.5 (median) and was
  slower than FP32;
- the first encoder block's two single-input-channel convolutions
  (``encoder.0.0.conv1``, ``encoder.0.0.conv_downsample``): a 1-channel 2x3
  kernel is a 6-term dot product, too short for integer kernels to win;
  quantizing ``conv1`` alone moved the logit by 0.14 (median, 0.41 max) and
  made the graph 1.28x slower;
- the graph attention and pooling layers (MatMul, Softmax, TopK): under 1 %
  of the time, and TopK picks nodes by rank, so rounding changes which
  nodes survive.

Measured price (``benchmarks/bench_precision.py``, README): on a 2-core
x86 CPU the INT8 graph is *slower* than FP32 (0.74x) and flips 9 of 256
window decisions. Its ORT profile says why: integer convolutions are only
14 % of its time; the SELU between every two convolutions forces a
dequantize/quantize pair (Q/DQ 11 %), and MaxPool (19 %) and layout
transposes (10 %) run outside the NCHWc kernels FP32 uses. FP32 therefore
stays the default.

FP16 converts the graph for the CUDA provider with FP32 inputs and outputs;
the sinc front end and the rank- and exponent-sensitive operators stay FP32.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from spoofwatch.audio import audio_files, official_window, read_audio
from spoofwatch.constants import ONNX_INPUT_NAME, WINDOW_SAMPLES, Precision
from spoofwatch.errors import InputError, ModelError
from spoofwatch.paths import cache_tempfile

log = logging.getLogger(__name__)

#: Bumped when a quantization recipe changes, so old cached variants are not reused.
QUANT_VERSION = 1
#: ONNX metadata keys written into every reduced-precision file.
META_PRECISION = "spoofwatch.precision"
META_SOURCE_SHA256 = "spoofwatch.source_sha256"
META_FP32_LAYERS = "spoofwatch.fp32_layers"
#: Weight-name prefixes of convolutions kept in FP32 in the INT8 graph (see the module docstring).
INT8_FP32_LAYERS: tuple[str, ...] = (
    "conv_time",
    "encoder.0.0.conv1",
    "encoder.0.0.conv_downsample",
)
#: Percentile of |activation| that sets each INT8 activation range: MinMax
#: let rare peaks stretch the scale (median |Δ logit| 0.41 vs 0.12 here).
INT8_CALIB_PERCENTILE = 99.99
#: Convolutions kept in FP32 in the FP16 graph: the sinc front end, whose
#: 129-tap band-pass filters sum many small products of a raw waveform.
FP16_FP32_LAYERS: tuple[str, ...] = ("conv_time",)
#: Operators kept in FP32 in the FP16 graph (rank, exponent and reductions).
FP16_FP32_OPS: tuple[str, ...] = ("TopK", "Softmax", "ReduceMax", "ReduceMean", "Div", "Sigmoid")
#: Largest |Δ bona fide logit| vs FP32 on the calibration windows an INT8
#: export may show to be installed: a sanity gate against a broken recipe,
#: not the accuracy claim (that is the benchmark's, on other audio).
INT8_EXPORT_MAX_DELTA = 1.5
#: Windows taken per calibration file (the official first window, then later ones).
CALIB_WINDOWS_PER_FILE = 2

# (folder under ../shared/data/speech, how many files, sorted) used for
# calibration. Genuine read speech of two corpora and NSF-vocoded speech,
# so that spoof activations are in range too. The benchmark excludes them.
_CALIBRATION_SETS: tuple[tuple[str, int], ...] = (
    ("bonafide/librispeech_test-other", 12),
    ("bonafide/ljspeech", 4),
    ("spoof/nii_nsf", 6),
)


def default_calibration_files(shared: Path) -> list[Path]:
    """The INT8 calibration audio: the first files (sorted) of a few ``../shared`` speech sets."""
    files: list[Path] = []
    for folder, count in _CALIBRATION_SETS:
        root = shared / "data" / "speech" / folder
        found = audio_files(root, recursive=False)
        if len(found) < count:
            raise InputError(f"{root}: expected at least {count} audio files for INT8 calibration")
        files += found[:count]
    return files


def calibration_windows(files: Sequence[Path]) -> npt.NDArray[np.float32]:
    """``(N, 64600)`` windows: from each file its official window and the next ones, non-overlapping."""
    rows: list[npt.NDArray[np.float32]] = []
    for path in files:
        audio = read_audio(path)
        for k in range(CALIB_WINDOWS_PER_FILE):
            start = k * WINDOW_SAMPLES
            if k and start + WINDOW_SAMPLES > audio.size:
                break
            rows.append(official_window(audio[start:]))
    if not rows:
        raise InputError("INT8 calibration needs at least one audio file")
    return np.stack(rows)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


#: Prefix of the model's parameter names in the incremental graphs, which wrap it as ``net``.
_WRAPPED_PREFIX = "net."


def _conv_nodes(model: Any) -> list[tuple[str, str]]:
    """``(node name, layer name)`` of every Conv with a constant weight; the layer
    name is the weight initializer's, as in the model (``conv_time.filters``)
    whether the graph is the whole model or an incremental graph wrapping it."""
    inits = {i.name for i in model.graph.initializer}
    return [
        (n.name, n.input[1].removeprefix(_WRAPPED_PREFIX))
        for n in model.graph.node
        if n.op_type == "Conv" and n.input[1] in inits
    ]


def _stamp(model: Any, precision: Precision, source_sha256: str, fp32_layers: Sequence[str]) -> None:
    values = {
        META_PRECISION: precision,
        META_SOURCE_SHA256: source_sha256,
        META_FP32_LAYERS: ",".join(fp32_layers),
    }
    for prop in list(model.metadata_props):
        if prop.key in values:
            model.metadata_props.remove(prop)
    for key, value in values.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


class _Reader:
    """ONNX Runtime calibration reader: one window per call, in strides.

    ORT's histogram calibrators keep every activation of every window they
    are fed in one ``collect_data`` call (~400 MB per AASIST window); with
    ``CalibStridedMinMax`` ORT calls it once per :meth:`set_range` stride
    and merges the histograms, so memory stays at one window's worth.
    """

    def __init__(self, windows: npt.NDArray[np.float32]) -> None:
        self._windows = windows
        self.set_range(0, len(windows))

    def __len__(self) -> int:
        return len(self._windows)

    def set_range(self, start_index: int, end_index: int) -> None:
        rows = range(start_index, min(end_index, len(self._windows)))
        self._rows: Iterator[int] = iter(rows)

    def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None:
        i = next(self._rows, None)
        return None if i is None else {ONNX_INPUT_NAME: self._windows[i : i + 1]}


def quantize_int8(
    fp32_path: Path,
    out: Path,
    windows: npt.NDArray[np.float32],
    fp32_layers: Sequence[str] = INT8_FP32_LAYERS,
) -> float:
    """Write the INT8 QDQ graph of ``fp32_path`` to ``out``; returns the max |Δ logit| on ``windows``."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    model = onnx.load(str(fp32_path))
    convs = _conv_nodes(model)
    keep = [node for node, weight in convs if weight.startswith(tuple(fp32_layers))]
    nodes = [node for node, _ in convs if node not in keep]
    log.info("INT8: quantizing %d convolutions; kept in FP32: %s", len(nodes), ", ".join(keep) or "none")
    with tempfile.TemporaryDirectory(prefix="spoofwatch-quant-") as tmp:
        raw = Path(tmp) / "q.onnx"
        # Its calibrator prints progress on standard output, where events go.
        from .runtime import stdout_to_stderr

        try:
            with stdout_to_stderr():
                quantize_static(
                    str(fp32_path),
                    str(raw),
                    _Reader(windows),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    nodes_to_quantize=nodes,
                    op_types_to_quantize=["Conv"],
                    # u8 activations x s8 weights: the x86 integer kernels' fast path.
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.Percentile,
                    # One window per collect_data call (see _Reader): bounded memory.
                    extra_options={"CalibPercentile": INT8_CALIB_PERCENTILE, "CalibStridedMinMax": 1},
                )
        except Exception as exc:  # ORT's quantizer raises many types
            raise ModelError(f"INT8 quantization of {fp32_path.name} failed: {exc}") from exc
        quantized = onnx.load(str(raw))
    _stamp(quantized, "int8", sha256_of(fp32_path), keep)
    _atomic_save(quantized, out)
    delta = _max_delta(fp32_path, out, windows)
    if not delta <= INT8_EXPORT_MAX_DELTA:
        out.unlink(missing_ok=True)
        raise ModelError(
            f"INT8 export moved the logit by {delta:.3g} > {INT8_EXPORT_MAX_DELTA} on its own "
            "calibration windows; not installed"
        )
    log.info("INT8 export: max |Δ logit| %.3g on %d calibration windows", delta, len(windows))
    return delta


def convert_fp16(fp32_path: Path, out: Path) -> list[str]:
    """Write the FP16 graph of ``fp32_path`` to ``out`` (FP32 inputs/outputs); returns the FP32 nodes."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = onnx.load(str(fp32_path))
    keep = [node for node, weight in _conv_nodes(model) if weight.startswith(FP16_FP32_LAYERS)]
    try:
        half = convert_float_to_float16(
            model, keep_io_types=True, op_block_list=list(FP16_FP32_OPS), node_block_list=keep
        )
        _drop_duplicate_casts(half)
        # Intermediate type annotations from the FP32 graph are stale; the checker re-infers them.
        del half.graph.value_info[:]
        # The converter appends its input/output casts at the end of the node list.
        OnnxModel(half).topological_sort()
        onnx.checker.check_model(half, full_check=True)
    except Exception as exc:
        raise ModelError(f"FP16 conversion of {fp32_path.name} failed: {exc}") from exc
    kept = [*keep, *(f"op:{op}" for op in FP16_FP32_OPS)]
    _stamp(half, "fp16", sha256_of(fp32_path), kept)
    _atomic_save(half, out)
    log.info("FP16 export: kept in FP32: %s", ", ".join(kept))
    return kept


def _drop_duplicate_casts(model: Any) -> None:
    """ORT's converter inserts one Cast per consumer when a tensor feeds
    several FP32-kept nodes, all with the same output name; keep one."""
    seen: dict[str, bytes] = {}
    for node in list(model.graph.node):
        if node.op_type != "Cast":
            continue
        key = node.output[0]
        body = node.SerializeToString(deterministic=True).replace(node.name.encode(), b"")
        if key in seen:
            if seen[key] != body:
                raise ModelError(f"FP16 conversion produced two different nodes writing {key!r}")
            model.graph.node.remove(node)
        else:
            seen[key] = body


def _atomic_save(model: Any, out: Path) -> None:
    import onnx

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = cache_tempfile(out.parent, ".onnx")
    os.close(fd)
    try:
        onnx.save(model, name)
        os.replace(name, out)
    finally:
        Path(name).unlink(missing_ok=True)


def _max_delta(fp32_path: Path, variant: Path, windows: npt.NDArray[np.float32]) -> float:
    from .runtime import OnnxScorer

    a = OnnxScorer(fp32_path, "cpu")
    b = OnnxScorer(variant, "cpu")
    return float(np.max(np.abs(b.scores(windows) - a.scores(windows))))


def read_metadata(path: Path) -> dict[str, str]:
    """The ``spoofwatch.*`` metadata of an ONNX file (loads the graph without its weights' data)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelError(f"{path}: not a readable ONNX file: {exc}") from None
    return {p.key: p.value for p in model.metadata_props if p.key.startswith("spoofwatch.")}


def check_source(variant: Path, fp32_path: Path, precision: Precision) -> None:
    """Refuse a reduced-precision file that was not made from this exact FP32 file."""
    try:
        meta = read_metadata(variant)
    except ModelError as exc:  # a damaged cached variant: say how to make it again
        raise ModelError(f"{exc}; delete it and run `spoofwatch export --precision {precision}`") from None
    if meta.get(META_PRECISION) != precision:
        raise ModelError(
            f"{variant}: expected an {precision.upper()} graph, but it records precision "
            f"{meta.get(META_PRECISION)!r}; delete it and run `spoofwatch export --precision {precision}`"
        )
    expected = sha256_of(fp32_path)
    recorded = meta.get(META_SOURCE_SHA256, "")
    if recorded != expected:
        raise ModelError(
            f"{variant}: this {precision} file was made from an FP32 graph with SHA-256 "
            f"{recorded[:16] or '(none)'}..., but the FP32 export in use ({fp32_path.name}) has "
            f"{expected[:16]}...; delete it and run `spoofwatch export --precision {precision}`"
        )
