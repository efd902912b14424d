"""ONNX Runtime scoring: device selection, thread settings, input validation."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from spoofwatch.constants import ONNX_INPUT_NAME, ONNX_OUTPUT_NAME, SCORE_COLUMN, WINDOW_SAMPLES
from spoofwatch.errors import DeviceError, InputError, ModelError

log = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[Device, ...] = ("auto", "cpu", "cuda")
_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"
#: ORT's default log severity (warning); it has no getter, so this is what we restore.
_ORT_DEFAULT_SEVERITY = 2


def validate_windows(windows: object) -> npt.NDArray[np.float32]:
    """Check a model input and return it as a C-contiguous ``(B, 64600)`` float32 array.

    A single ``(64600,)`` window is accepted and given a batch axis.
    """
    if not isinstance(windows, np.ndarray):
        raise InputError(
            f"expected a numpy float32 array of shape (batch, {WINDOW_SAMPLES}), got {type(windows).__name__}"
        )
    if windows.dtype != np.float32:
        raise InputError(f"expected dtype float32, got {windows.dtype}")
    if windows.ndim == 1:
        windows = windows[np.newaxis, :]
    if windows.ndim != 2 or windows.shape[1] != WINDOW_SAMPLES or windows.shape[0] == 0:
        raise InputError(f"expected shape (batch, {WINDOW_SAMPLES}) with batch >= 1, got {windows.shape}")
    if not np.all(np.isfinite(windows)):
        raise InputError("expected finite samples, got NaN or Inf")
    return np.ascontiguousarray(windows)


def _nvidia_device_present() -> bool:
    # Cheap check before asking ORT for CUDA: on a machine without an NVIDIA
    # driver the CUDA provider can only fail, after loading large libraries.
    return Path("/dev/nvidiactl").exists() or sys.platform == "win32"


def _providers_for(device: Device) -> list[str]:
    import onnxruntime as ort

    if device == "cpu":
        return [_CPU]
    available = ort.get_available_providers()
    if device == "auto" and _CUDA in available and not _nvidia_device_present():
        log.warning("--device auto: no NVIDIA GPU found; using CPU")
        return [_CPU]
    if _CUDA not in available:
        if device == "cuda":
            raise DeviceError(
                f"--device cuda: this ONNX Runtime build has no CUDA provider (it offers {', '.join(available)}); install onnxruntime-gpu or use --device cpu"
            )
        return [_CPU]
    return [_CUDA, _CPU]


def make_session(
    path: Path, device: Device = "auto", threads: int | None = None, allow_spinning: bool = True
) -> Any:
    """Open an InferenceSession on ``device`` and verify which provider it really got.

    ``allow_spinning=False`` stops idle intra-op threads from busy-waiting: many
    small calls (incremental steps of many streams) otherwise burn the cores.
    """
    import onnxruntime as ort

    if device not in DEVICES:
        raise InputError(f"unknown device {device!r}: expected one of {', '.join(DEVICES)}")
    if threads is not None and threads < 1:
        raise InputError(f"expected threads >= 1, got {threads}")
    providers = _providers_for(device)
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not allow_spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if _CUDA in providers and hasattr(ort, "preload_dlls"):
        try:  # lets onnxruntime-gpu find CUDA/cuDNN shipped in pip wheels (e.g. torch's)
            ort.preload_dlls()
        except Exception:  # a missing library is reported by the check below
            log.debug("onnxruntime.preload_dlls failed", exc_info=True)
    # ORT logs a loud error when the CUDA libraries are missing; we report it ourselves.
    ort.set_default_logger_severity(4)
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:
        raise ModelError(f"{path}: ONNX Runtime cannot open the model: {exc}") from None
    finally:
        ort.set_default_logger_severity(_ORT_DEFAULT_SEVERITY)
    got = session.get_providers()
    if _CUDA in providers and _CUDA not in got:
        if device == "cuda":
            raise DeviceError(
                "--device cuda: the CUDA provider failed to start (no GPU, or CUDA/cuDNN libraries missing); use --device cpu or auto"
            )
        log.warning(
            "CUDA requested by --device auto but unavailable (no GPU or CUDA libraries missing); using CPU"
        )
    log.info("ONNX Runtime providers in use: %s", ", ".join(got))
    return session


class OnnxScorer:
    """Scores batches of 64,600-sample windows with an ONNX export of AASIST."""

    def __init__(self, onnx_path: Path, device: Device = "auto", threads: int | None = None) -> None:
        self.onnx_path = onnx_path
        self.session = make_session(onnx_path, device, threads)
        self.providers: list[str] = list(self.session.get_providers())

    @property
    def device(self) -> str:
        return "cuda" if self.providers[0] == _CUDA else "cpu"

    def logits(self, windows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """``(B, 64600)`` (or one ``(64600,)`` window) -> ``(B, 2)`` logits ``[spoof, bonafide]``."""
        batch = validate_windows(windows)
        out = self.session.run([ONNX_OUTPUT_NAME], {ONNX_INPUT_NAME: batch})[0]
        return np.asarray(out, dtype=np.float32)

    def scores(self, windows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Bona fide logits, one per window; higher means more genuine."""
        return self.logits(windows)[:, SCORE_COLUMN]
