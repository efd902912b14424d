"""The one way to get a scorer for ``--model``/``--precision``/``--device``.

Beside :mod:`.runtime`, not in it: these read model cards and export or
quantize the built-in models, which themselves open ONNX Runtime sessions;
here the arrows point one way (scorers -> card, export, quantize -> runtime).
"""

from __future__ import annotations

from pathlib import Path

from spoofwatch.constants import DEFAULT_MODEL

from .card import check_card_options, is_card_reference, load_card, parse_card
from .precision import check_precision_device
from .quantize import check_source
from .runtime import Device, OnnxScorer, resolve_device


def build_scorer(
    model: str = DEFAULT_MODEL,
    precision: str = "fp32",
    device: Device = "auto",
    threads: int | None = None,
    weights: Path | None = None,
    max_batch_windows: int | None = None,
) -> OnnxScorer:
    """The one way to get a scorer for ``--model``/``--precision``/``--device``.

    ``model`` is a built-in name (``aasist-l``, ``aasist``) or the path of a
    model card TOML. The precision/device pair is checked before anything is
    loaded; built-in models are exported (and quantized) on first use and
    cached by weights hash and precision.
    """
    from .export import ensure_onnx  # imports torch (seconds): only when a built-in model is wanted

    if is_card_reference(model):
        check_card_options(check_precision_device(precision, device, resolve_device), weights)
        card = load_card(Path(model))
        return OnnxScorer(card.onnx_path, device, threads, max_batch_windows=max_batch_windows, spec=card)
    prec = check_precision_device(precision, device, resolve_device)
    path = ensure_onnx(model, weights, prec)  # checks a user's weights file first
    # INT8 QDQ graphs run their integer kernels on the CPU provider only.
    run_on: Device = "cpu" if prec == "int8" else device
    return OnnxScorer(path, run_on, threads, max_batch_windows=max_batch_windows, precision=prec)


def preflight(model: str, precision: str, device: Device, weights: Path | None = None) -> None:
    """The cheap checks of :func:`build_scorer`, for commands that read audio before
    loading the model: the precision/device pair, a card's fields, file and hash,
    and an already cached reduced-precision file's source hash."""
    from .export import cached_onnx_path  # as above

    prec = check_precision_device(precision, device, resolve_device)
    if is_card_reference(model):
        check_card_options(prec, weights)
        parse_card(Path(model))
        return
    fp32 = cached_onnx_path(model, weights)
    variant = cached_onnx_path(model, weights, prec)
    if prec != "fp32" and fp32.is_file() and variant.is_file():
        check_source(variant, fp32, prec)
