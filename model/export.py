"""ONNX export with a parity gate, and the export cache keyed by weights hash."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from spoofwatch.constants import ONNX_INPUT_NAME, ONNX_OUTPUT_NAME, SAMPLE_RATE_HZ, WINDOW_SAMPLES
from spoofwatch.errors import InputError, ModelError
from spoofwatch.paths import SHARED_ENV, cache_tempfile, onnx_dir

from .aasist import AASIST, GraphPool
from .cached import Cached, check, forget, install, record, record_legacy
from .config import ModelConfig, load_model_config
from .precision import validate_precision
from .quantize import QUANT_VERSION
from .weights import check_weights_file, load_torch_model, sha256_file

log = logging.getLogger(__name__)
#: torch.export is not thread-safe: threads of one process loading a model for the first
#: time export it one at a time (processes are kept apart by the atomic rename).
#: Re-entrant: building a reduced-precision variant first ensures its FP32 export.
_EXPORT_LOCK = threading.RLock()

#: Largest |ONNX - PyTorch| logit difference an export may show to be installed.
EXPORT_PARITY_TOL = 1e-3
#: Relative gap between graph-pooling scores (a few float32 rounding steps:
#: one step is 6e-8 relative just below 1.0) at or below which they count as tied.
TIE_GAP = 1e-6
#: Bumped when the export recipe changes, so old cached graphs are not reused.
EXPORT_VERSION = 1
ONNX_OPSET = 18


def parity_inputs(batch: int = 3, seed: int = 0) -> npt.NDArray[np.float32]:
    """Deterministic probe windows: speech-band noise, a chirp, near-silence,
    loud noise, an amplitude-modulated tone and two tones (cycled to ``batch``)."""
    rng = np.random.default_rng(seed)
    t = np.arange(WINDOW_SAMPLES) / SAMPLE_RATE_HZ
    rows = [
        0.1 * rng.standard_normal(WINDOW_SAMPLES),
        0.3 * np.sin(2 * np.pi * (100 + 900 * t) * t),
        1e-4 * rng.standard_normal(WINDOW_SAMPLES),
        0.5 * rng.standard_normal(WINDOW_SAMPLES),
        0.2 * np.sin(2 * np.pi * 3 * t) * np.sin(2 * np.pi * 220 * t),
        0.05 * (np.sin(2 * np.pi * 150 * t) + np.sin(2 * np.pi * 2400 * t)),
    ]
    return np.stack([rows[i % len(rows)] for i in range(batch)]).astype(np.float32)


#: Probe windows the parity gate runs, and how many of them must be free of
#: graph-pooling ties (see ``tied_windows``) for the tied ones to be left out.
PARITY_PROBES = 6
MIN_UNTIED_PROBES = 3


def _torch_logits(net: AASIST, windows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    with torch.inference_mode():
        logits: npt.NDArray[np.float32] = net(torch.from_numpy(windows)).numpy()
    return logits


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's warnings and log chatter (e.g. "torchvision is not installed")."""
    torch_log = logging.getLogger("torch.onnx")
    level = torch_log.level
    torch_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        torch_log.setLevel(level)


#: The largest batch an exported graph's dynamic batch axis allows.
EXPORT_MAX_BATCH = 4096


def export_graph(
    module: torch.nn.Module,
    args: tuple[Tensor, ...],
    out: Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_shapes: tuple[object, ...] | None = None,
) -> None:
    """The one ``torch.onnx.export`` call (opset, exporter, a single file,
    quiet) of every graph the project writes. By default each input's first
    axis is the batch, dynamic up to :data:`EXPORT_MAX_BATCH`."""
    if dynamic_shapes is None:
        batch = torch.export.Dim("batch", min=1, max=EXPORT_MAX_BATCH)
        dynamic_shapes = tuple({0: batch} for _ in args)
    with _quiet_exporter():
        torch.onnx.export(
            module,
            args,
            str(out),
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_shapes=dynamic_shapes,
            opset_version=ONNX_OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )


def _export_graph(net: AASIST, out: Path) -> None:
    example = torch.from_numpy(parity_inputs(batch=2))  # [2, 64600]
    export_graph(net, (example,), out, [ONNX_INPUT_NAME], [ONNX_OUTPUT_NAME])


def _logits_and_ties(
    net: AASIST, windows: npt.NDArray[np.float32]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """PyTorch's (B, 2) logits and, from the same pass, (B,) whether a graph
    pooling ties for each window (see ``GraphPool.tie_gap``)."""
    gaps: list[Tensor] = []
    hooks = [
        m.register_forward_pre_hook(lambda mod, args: gaps.append(mod.tie_gap(args[0])))
        for m in net.modules()
        if isinstance(m, GraphPool)
    ]
    try:
        logits = _torch_logits(net, windows)
    finally:
        for hook in hooks:
            hook.remove()
    smallest = torch.stack(gaps).min(dim=0).values.numpy()
    tied: npt.NDArray[np.bool_] = smallest <= TIE_GAP
    return logits, tied


def tied_windows(net: AASIST, windows: npt.NDArray[np.float32]) -> npt.NDArray[np.bool_]:
    """(B,) whether a graph pooling ties for each window (see ``GraphPool.tie_gap``).

    Such a window's logits depend on how a runtime orders tied nodes, so they
    say nothing about an export's correctness.
    """
    return _logits_and_ties(net, windows)[1]


def check_parity(net: AASIST, onnx_path: Path) -> float:
    """Max |ONNX Runtime - PyTorch| logit difference on the probe windows without
    ties (all of them when fewer than ``MIN_UNTIED_PROBES`` are free of ties, as
    for a freshly initialised model, whose tied nodes are mostly identical);
    every window's ONNX output must be finite."""
    from .runtime import make_session

    windows = parity_inputs(PARITY_PROBES)
    torch_logits, tied = _logits_and_ties(net, windows)
    session = make_session(onnx_path, device="cpu")
    onnx_logits = session.run([ONNX_OUTPUT_NAME], {ONNX_INPUT_NAME: windows})[0]
    if not np.isfinite(onnx_logits).all():
        return math.inf
    diffs = np.max(np.abs(onnx_logits - torch_logits), axis=1)
    if (~tied).sum() < MIN_UNTIED_PROBES:
        return float(diffs.max())  # too few untied windows to judge by: hold every window to parity
    if tied.any():
        # Loud only when the runtimes really order the tied nodes differently:
        # identical nodes (near-silence) tie harmlessly.
        differ = bool((diffs[tied] > EXPORT_PARITY_TOL).any())
        log.log(
            logging.WARNING if differ else logging.INFO,
            "parity probe windows %s left out of the export check: tied graph-pooling scores "
            "(|ONNX - PyTorch| there: %s)",
            np.flatnonzero(tied).tolist(),
            np.round(diffs[tied], 4).tolist(),
        )
    return float(diffs[~tied].max())


def export_onnx(
    model: str,
    out: Path,
    weights: Path | None = None,
    config: ModelConfig | None = None,
    cached: bool = False,
) -> float:
    """Export ``model`` to ``out``; install it only if parity holds. Returns the max diff.
    ``cached``: ``out`` is in the cache, installed with its digest (:mod:`.cached`)."""
    net = load_torch_model(model, weights, config)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = cache_tempfile(out.parent, ".onnx")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        log.info("exporting %s to ONNX (opset %d)", model, ONNX_OPSET)
        try:
            _export_graph(net, tmp)
        except Exception as exc:  # the exporter raises a zoo of types
            raise ModelError(f"ONNX export of {model} failed: {exc}") from exc
        diff = check_parity(net, tmp)
        if not diff <= EXPORT_PARITY_TOL:
            raise ModelError(
                f"ONNX export of {model} failed its parity check: max |ONNX - PyTorch| = "
                f"{diff:.3g} > {EXPORT_PARITY_TOL}; not installed"
            )
        if cached:
            install(tmp, out)
        else:
            os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("exported %s -> %s (max parity diff %.2g)", model, out, diff)
    return diff


def cached_onnx_path(model: str, weights: Path | None = None, precision: str = "fp32") -> Path:
    """Cache location of the export for these exact weights at ``precision``."""
    prec = validate_precision(precision)
    config = load_model_config(model)
    digest = config.weights_sha256 if weights is None else sha256_file(weights)
    stem = f"{config.name}-{digest[:16]}-v{EXPORT_VERSION}"
    if prec == "fp32":
        return onnx_dir() / f"{stem}.onnx"
    return onnx_dir() / f"{stem}-{prec}-q{QUANT_VERSION}.onnx"


def shared_root() -> Path | None:
    """``$SPOOFWATCH_SHARED`` (the development data), if set and present."""
    value = os.environ.get(SHARED_ENV)
    return Path(value) if value and Path(value).is_dir() else None


def export_precision(
    model: str,
    precision: str,
    weights: Path | None = None,
    calibration_audio: Sequence[Path] | None = None,
    out: Path | None = None,
) -> Path:
    """Build the ``precision`` variant of ``model`` from its (cached) FP32 export.

    INT8 calibrates on ``calibration_audio`` (default: the speech files of
    :func:`~.quantize.default_calibration_files` under ``$SPOOFWATCH_SHARED``).
    """
    from .quantize import calibration_windows, convert_fp16, default_calibration_files, quantize_int8

    prec = validate_precision(precision)
    fp32 = ensure_onnx(model, weights)
    if prec == "fp32":
        return fp32
    target = out or cached_onnx_path(model, weights, prec)
    if out is None:
        forget(target)  # recorded again once the new file is in place
    if prec == "int8":
        if calibration_audio is None:
            root = shared_root()
            if root is None:
                raise InputError(
                    "the INT8 model is made once from real speech: run `spoofwatch export --precision int8 "
                    f"--calibration-audio DIR` (a folder of speech recordings), or set {SHARED_ENV} to the "
                    "development data folder, then score again"
                )
            calibration_audio = default_calibration_files(root)
        quantize_int8(fp32, target, calibration_windows(calibration_audio))
    else:
        convert_fp16(fp32, target)
    if out is None:  # the cache's copy: checked at every use
        record(target)
    return target


def ensure_onnx(model: str, weights: Path | None = None, precision: str = "fp32") -> Path:
    """Return the cached ONNX export of ``model`` at ``precision``, exporting it on first use.

    A cached reduced-precision file must record the hash of the FP32 export
    in use; one that does not is refused (never silently rebuilt).
    """
    from .quantize import check_source

    prec = validate_precision(precision)
    if weights is not None:
        weights = check_weights_file(weights)
    path = cached_onnx_path(model, weights)
    with _EXPORT_LOCK:
        if not path.is_file() or reexport_unrecorded(path):
            export_onnx(model, path, weights, cached=True)
        if prec == "fp32":
            return path
        variant = cached_onnx_path(model, weights, prec)
        if not variant.is_file():
            log.info("no cached %s export of %s yet; building it", prec, model)
            export_precision(model, prec, weights)
    check_source(variant, path, prec)
    if check(variant) is Cached.UNRECORDED:  # made by an earlier release from this very FP32 file
        record_legacy(variant)
    return variant


def reexport_unrecorded(path: Path) -> bool:
    """Whether the cached FP32 graph at ``path`` must be exported again: it has
    no digest (an earlier release wrote it; its bytes cannot be vouched for)
    and the cache can be written. A changed file is a :class:`ModelError`."""
    if check(path) is Cached.INTACT:
        return False
    if not os.access(path.parent, os.W_OK):
        log.warning(
            "%s: cached by an earlier release in a cache this user cannot write; used unchecked", path
        )
        return False
    log.info("%s: cached by an earlier release without a digest; exporting it again", path)
    return True
