"""Numeric precisions a model can be scored at, and which device runs which.

``fp32``: the export as checked against PyTorch (the default). ``int8``:
static QDQ quantization for the CPU provider. ``fp16``: half precision for
the CUDA provider (ONNX Runtime's CPU provider has no FP16 kernels for
most of AASIST's operators).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from spoofwatch.constants import PRECISIONS, Precision
from spoofwatch.errors import DeviceError, InputError


def validate_precision(precision: str) -> Precision:
    for known in PRECISIONS:
        if precision == known:
            return known
    raise InputError(f"unknown precision {precision!r}: expected one of {', '.join(PRECISIONS)}")


def check_precision_device(
    precision: str, device: str, resolve: Callable[[Literal["auto", "cpu", "cuda"]], str]
) -> Precision:
    """Refuse a precision the device cannot run, before anything is loaded.

    ``resolve`` maps ``--device`` to ``cpu``/``cuda`` the way the runtime will
    (``auto`` becomes ``cpu`` on a machine without a usable GPU).
    """
    prec = validate_precision(precision)
    if device not in ("auto", "cpu", "cuda"):
        raise InputError(f"unknown device {device!r}: expected one of auto, cpu, cuda")
    if prec == "fp16":
        target = resolve("cuda") if device == "cuda" else resolve(device)  # type: ignore[arg-type]
        if target != "cuda":
            raise DeviceError(
                f"--precision fp16 needs the CUDA provider, but --device {device} runs on the CPU here; "
                "use --precision fp32 or int8 on the CPU"
            )
    if prec == "int8" and device == "cuda":
        raise DeviceError(
            "--precision int8 runs on the CPU provider (ONNX Runtime's CUDA provider has no fast "
            "INT8 path for this graph); use --device cpu, or --precision fp16 on CUDA"
        )
    return prec
