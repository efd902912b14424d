"""Constants fixed by the AASIST models. Each is defined here and only here."""

from __future__ import annotations

from typing import Literal

#: Sample rate every model input and every stream runs at, in Hz.
SAMPLE_RATE_HZ = 16_000

#: Samples per model window: the official AASIST input length (about 4.04 s).
WINDOW_SAMPLES = 64_600

#: Default hop of the live engine in samples: 8,019 = 11 x 729 (about 0.501 s).
#: The exact incremental encoder reuses the previous window's encoder frames
#: only when the hop is a multiple of 729 = 3^6 samples (the stride of the
#: encoder's sixth level), so the default is the multiple of 729 nearest 0.5 s.
#: Calibration files give the hop in seconds (``hop_s = 0.5011875``); it is
#: rounded to whole samples.
LIVE_HOP_SAMPLES = 8_019

#: Column of the model output that is the score (the bona fide logit; higher
#: means more genuine). Column 0 is the spoof logit.
SCORE_COLUMN = 1

#: Names of the ONNX graph's input and output.
ONNX_INPUT_NAME = "waveform"
ONNX_OUTPUT_NAME = "logits"

#: Models spoofwatch ships configurations and pinned weights for.
MODEL_NAMES = ("aasist-l", "aasist")
#: The model used when none is named: the official AASIST-L.
DEFAULT_MODEL = "aasist-l"

#: How ``evaluate-suite`` streams spoof utterances: each its own stream, or a
#: system's utterances back to back as calls (see ``spoofwatch.calibration.suite``).
SUITE_SPOOF_STREAMS = ("clips", "calls")
#: Which copies of each utterance ``evaluate-suite`` scores: every channel copy, or the clean one.
SUITE_COPIES = ("all", "clean")

#: ONNX Runtime execution providers spoofwatch selects between.
CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"

#: Numeric precisions a model can be scored at (see ``spoofwatch.model.precision``);
#: a calibration file records the one its scores were made at.
Precision = Literal["fp32", "int8", "fp16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "int8", "fp16")
DEFAULT_PRECISION: Precision = "fp32"
