"""Constants fixed by the AASIST models. Each is defined here and only here."""

from __future__ import annotations

from typing import Literal

#: Sample rate every model input and every stream runs at, in Hz.
SAMPLE_RATE_HZ = 16_000

#: Samples per model window: the official AASIST input length (about 4.04 s).
WINDOW_SAMPLES = 64_600

#: Column of the model output that is the score (the bona fide logit; higher
#: means more genuine). Column 0 is the spoof logit.
SCORE_COLUMN = 1

#: Names of the ONNX graph's input and output.
ONNX_INPUT_NAME = "waveform"
ONNX_OUTPUT_NAME = "logits"

#: Models spoofwatch ships configurations and pinned weights for.
MODEL_NAMES = ("aasist-l", "aasist")

#: Numeric precisions a model can be scored at (see ``spoofwatch.model.precision``);
#: a calibration file records the one its scores were made at.
Precision = Literal["fp32", "int8", "fp16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "int8", "fp16")
DEFAULT_PRECISION: Precision = "fp32"
