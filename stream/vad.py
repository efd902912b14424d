"""The VAD model adapter: silero-vad's ONNX model on ONNX Runtime.

The model file ships in the ``silero-vad`` wheel; the package itself is never
imported, so torch is not loaded at run time. :class:`SileroVad` implements
:class:`spoofwatch.stream.gate.VadModel`, which the Sans-I/O gate is written
against.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from spoofwatch.constants import CPU_PROVIDER, SAMPLE_RATE_HZ
from spoofwatch.errors import ModelError


def silero_model_path() -> Path:
    """Locate ``silero_vad/data/silero_vad.onnx`` without importing the package."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or spec.origin is None:
        raise ModelError("the silero-vad package is not installed (pip install silero-vad)")
    path = Path(spec.origin).parent / "data" / "silero_vad.onnx"
    if not path.is_file():
        raise ModelError(f"silero-vad is installed but {path} is missing")
    return path


class SileroVad:
    """The shared VAD model. Thread-safe: per-stream state lives in :class:`~spoofwatch.stream.gate.SpeechGate`."""

    def __init__(self, path: Path | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # a tiny model: more threads only add overhead
        options.inter_op_num_threads = 1
        self._session: Any = ort.InferenceSession(
            str(path or silero_model_path()), options, providers=[CPU_PROVIDER]
        )
        self._sr = np.array(SAMPLE_RATE_HZ, dtype=np.int64)

    def step_batch(
        self, frames_with_context: npt.NDArray[np.float32], states: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        # (B, 64 + 512) samples, states (2, B, 128) -> probabilities (B,), new states (2, B, 128).
        # Rows are independent streams: a row's result is the same in any batch
        # (checked bit for bit by tests/test_engine.py), and one call of B frames
        # costs about half of B calls of one (the model is tiny; the call is not).
        prob, new_state = self._session.run(
            None, {"input": frames_with_context, "state": states, "sr": self._sr}
        )
        return prob[:, 0], new_state
