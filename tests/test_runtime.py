"""ONNX Runtime scorer: input validation and device selection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spoofwatch.constants import WINDOW_SAMPLES
from spoofwatch.errors import DeviceError, InputError
from spoofwatch.model.runtime import OnnxScorer, _nvidia_device_present, validate_windows


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((1, WINDOW_SAMPLES), dtype=np.float64), "expected dtype float32, got float64"),
        (np.zeros((1, 16000), dtype=np.float32), r"expected shape \(batch, 64600\)"),
        (np.zeros((2, 3, WINDOW_SAMPLES), dtype=np.float32), r"expected shape \(batch, 64600\)"),
        (np.full((1, WINDOW_SAMPLES), np.nan, dtype=np.float32), "NaN or Inf"),
        (np.full((1, WINDOW_SAMPLES), np.inf, dtype=np.float32), "NaN or Inf"),
        ([0.0] * WINDOW_SAMPLES, "expected a numpy float32 array"),
    ],
)
def test_bad_inputs_raise_value_error(bad: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_windows(bad)


def test_scorer_rejects_bad_input_and_keeps_working(scorer: OnnxScorer) -> None:
    with pytest.raises(InputError):
        scorer.scores(np.zeros((1, 100), dtype=np.float32))
    assert scorer.scores(np.zeros(WINDOW_SAMPLES, dtype=np.float32)).shape == (1,)


def test_device_cpu_and_auto_report_the_provider(onnx_aasist_l: Path) -> None:
    assert OnnxScorer(onnx_aasist_l, device="cpu").device == "cpu"
    auto = OnnxScorer(onnx_aasist_l, device="auto")
    # The GPU where there is one and the installed ONNX Runtime can use it
    # (onnxruntime-gpu is what this project installs), else the CPU.
    import onnxruntime

    cuda = _nvidia_device_present() and "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    expected = "CUDAExecutionProvider" if cuda else "CPUExecutionProvider"
    assert auto.providers[0] == expected


@pytest.mark.skipif(_nvidia_device_present(), reason="a GPU is present: CUDA may legitimately start")
def test_cuda_without_gpu_is_an_error(onnx_aasist_l: Path) -> None:
    with pytest.raises(DeviceError, match="--device cuda"):
        OnnxScorer(onnx_aasist_l, device="cuda")


def test_bad_device_and_threads(onnx_aasist_l: Path) -> None:
    with pytest.raises(InputError, match="expected one of auto, cpu, cuda"):
        OnnxScorer(onnx_aasist_l, device="tpu")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="threads >= 1"):
        OnnxScorer(onnx_aasist_l, device="cpu", threads=0)
