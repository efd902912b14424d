"""Argument helpers shared by several sub-commands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from spoofwatch.constants import DEFAULT_PRECISION, MODEL_NAMES, PRECISIONS
from spoofwatch.model.runtime import DEVICES


def add_model_args(
    parser: argparse.ArgumentParser, calibration: bool = True, device_flag: str = "--device"
) -> None:
    parser.add_argument(
        "--model",
        default="aasist-l",
        help=f"built-in model ({', '.join(MODEL_NAMES)}; default aasist-l) or the path of a model card TOML",
    )
    parser.add_argument(
        "--weights", type=Path, default=None, help="custom weights (.pth), e.g. a fine-tuned model"
    )
    parser.add_argument(
        device_flag,
        dest="device",
        default="auto",
        choices=DEVICES,
        help="compute device; auto: CUDA when it really starts, else CPU",
    )
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    add_precision_arg(parser)
    if calibration:
        parser.add_argument(
            "--calibration",
            type=Path,
            default=None,
            help="calibration TOML (default: configs/calibration/<model>.toml)",
        )


def add_precision_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--precision",
        default=DEFAULT_PRECISION,
        choices=PRECISIONS,
        help="numeric precision: fp32 (default), int8 (CPU; built on first use), fp16 (CUDA only)",
    )


def print_json(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def print_event(obj: dict[str, Any]) -> None:
    """An event or result as one JSON line; NaN or Inf raise instead of printing invalid JSON."""
    from spoofwatch.stream.events import event_json

    sys.stdout.write(event_json(obj) + "\n")
    sys.stdout.flush()
