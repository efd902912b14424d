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


def test_native_output_never_reaches_standard_output(sw_home: Path, la_dir: Path) -> None:
    """ORT's CUDA preloader printed each library it missed on standard output,
    before `--device cuda` failed: `score --json` output was no longer JSON
    lines. Whatever the machine (GPU or not), standard output holds events only."""
    import json
    import os
    import subprocess
    import sys

    from helpers import BONAFIDE_UTT, REPO_ROOT, la_clip

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "spoofwatch",
            "score",
            "--json",
            "--device",
            "cuda",
            str(la_clip(la_dir, BONAFIDE_UTT)),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode in (0, DeviceError.exit_code), proc.stderr
    for line in proc.stdout.splitlines():
        json.loads(line)  # events only
    if proc.returncode == DeviceError.exit_code:
        assert proc.stdout == "" and "--device cuda" in proc.stderr


def test_stdout_to_stderr_moves_the_descriptor_and_puts_it_back(capfd: pytest.CaptureFixture[str]) -> None:
    import os

    from spoofwatch.model.runtime import stdout_to_stderr

    with stdout_to_stderr():
        os.write(1, b"native chatter\n")
    os.write(1, b"event\n")
    out, err = capfd.readouterr()
    assert out == "event\n" and err == "native chatter\n"
