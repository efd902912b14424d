"""Argument helpers shared by several sub-commands."""

from __future__ import annotations

import argparse
import json
import logging
import math
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spoofwatch.constants import DEFAULT_MODEL, DEFAULT_PRECISION, MODEL_NAMES, PRECISIONS
from spoofwatch.model.runtime import DEVICES

log = logging.getLogger(__name__)


class InterruptOnce:
    """Signal handling for a command that must end with its closing events.

    Within ``with InterruptOnce(signals):`` the first of ``signals`` raises
    ``KeyboardInterrupt`` where the command is (as Ctrl-C does by default);
    any later one is ignored while the command finishes, so that a second
    Ctrl-C cannot cut off the alert's end and the summary. ``received`` is
    the first signal's number (``None``: none came). The previous handlers
    are restored on the way out."""

    def __init__(self, signals: tuple[signal.Signals, ...] = (signal.SIGINT,)) -> None:
        self.signals = signals
        self.received: int | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            log.warning("%s again: still finishing (closing events, summary)", signal.Signals(signum).name)
            return
        self.received = signum
        raise KeyboardInterrupt(signal.Signals(signum).name)

    def __enter__(self) -> InterruptOnce:
        self._previous = {s: signal.signal(s, self._handle) for s in self.signals}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def check_sink_wrote_all(sink: Any) -> None:
    """After a closed :class:`~spoofwatch.stream.sinks.QueuedSink`: every event
    written, or a :class:`SinkError` (the exit status must show events lost:
    a warning alone is easy to miss, and ``-q`` hides the counts)."""
    from spoofwatch.errors import SinkError

    c = sink.counters
    if c.failed or c.dropped:
        raise SinkError(
            f"{c.failed + c.dropped} of {c.written + c.failed + c.dropped} events were not written to "
            f"{sink.name} ({c.failed} failed, {c.dropped} dropped; see the warnings above)"
        )


def check_output_file(path: Path, flag: str = "--out", inputs: dict[str, Path | None] | None = None) -> None:
    """Before any work: ``path`` can be written as a file (not a folder; its
    folder made if missing) and is none of the command's ``inputs`` (flag to
    path; a file written over its own input is lost). A bad path would
    otherwise fail, or destroy something, only at the end."""
    from spoofwatch.errors import InputError

    if path.is_dir():
        raise InputError(f"{flag} {path}: is a folder; expected a file path")
    for input_flag, source in (inputs or {}).items():
        if source is not None and _same_file(path, source):
            raise InputError(f"{flag} {path} is the {input_flag} file itself: it would be overwritten")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{flag} {path}: cannot make its folder: {exc.strerror or exc}") from None
    _check_writable(path.parent, flag, path)


def check_output_outside(path: Path, folder: Path | None, flag: str, out_flag: str = "--out") -> None:
    """``path`` (a file this command writes) is not inside the input
    ``folder``: a calibration written as one of the recordings it was fitted
    on replaced that recording, and the next run skipped it as undecodable."""
    from spoofwatch.errors import InputError

    if folder is not None and path.resolve().is_relative_to(folder.resolve()):
        raise InputError(
            f"{out_flag} {path} is inside {flag} {folder}, whose audio it could overwrite (and a later run "
            "would read): write it elsewhere"
        )


def model_inputs(args: argparse.Namespace) -> dict[str, Path | None]:
    """The files a command's model options name (``--weights``; ``--model`` when
    it is a card), for :func:`check_output_file`. (``--calibration`` is left
    out: refitting a calibration in place is a fair use.)"""
    from spoofwatch.model.card import is_card_reference

    model = getattr(args, "model", None)
    return {
        "--weights": getattr(args, "weights", None),
        "--model": Path(model) if model is not None and is_card_reference(model) else None,
    }


def _same_file(a: Path, b: Path) -> bool:
    """``a`` and ``b`` name one file (through links too; a missing file is
    compared by its resolved path)."""
    try:
        return a.samefile(b)
    except OSError:
        return a.resolve() == b.resolve()


def check_output_dir(path: Path, flag: str = "--out") -> None:
    """Before any work: ``path`` is (or is made) a folder."""
    from spoofwatch.errors import InputError

    if path.exists() and not path.is_dir():
        raise InputError(f"{flag} {path}: is a file; expected a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{flag} {path}: cannot make the folder: {exc.strerror or exc}") from None
    _check_writable(path, flag, path)


def _check_writable(folder: Path, flag: str, named: Path) -> None:
    """A file can be made in ``folder`` (checked by making one, before any work)."""
    from spoofwatch.errors import InputError
    from spoofwatch.paths import cannot_write_in

    why = cannot_write_in(folder)
    if why is not None:
        raise InputError(f"{flag} {named}: cannot write in {folder}: {why}")


def checked_type(
    convert: Callable[[str], Any], ok: Callable[[Any], bool], expected: str
) -> Callable[[str], Any]:
    """An argparse type: ``convert(text)`` if ``ok`` of it, else one error naming ``expected``."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value

    return parse


#: Counts (workers, conversations...).
positive_int = checked_type(int, lambda v: v >= 1, "an integer >= 1")
#: Limits where 0 means "none".
non_negative_int = checked_type(int, lambda v: v >= 0, "an integer >= 0")
#: Most ONNX Runtime threads a command takes: each thread has its own stack and
#: scratch memory (a million of them ran the machine out of memory), and more
#: threads than a large machine has cores only contend.
MAX_THREADS = 1024
thread_count = checked_type(int, lambda v: 1 <= v <= MAX_THREADS, f"an integer from 1 to {MAX_THREADS}")
#: False alerts per hour.
non_negative_rate = checked_type(
    lambda text: float(text) + 0.0,  # + 0.0: -0 is 0 (it was written "-0.0" into provenance)
    lambda v: math.isfinite(v) and v >= 0,
    "a finite number >= 0",
)


def _rates(text: str) -> tuple[float, ...]:
    """``"10,2,5"`` -> (2.0, 5.0, 10.0); ``""`` -> (); an empty part is an error."""
    if not text.strip():
        return ()
    return tuple(sorted({float(part) + 0.0 for part in text.split(",")}))  # + 0.0: -0 is 0


#: Comma-separated false alerts per hour ("" for none).
non_negative_rates = checked_type(
    _rates, lambda v: all(math.isfinite(x) and x >= 0 for x in v), "comma-separated finite numbers >= 0"
)


def add_model_args(
    parser: argparse.ArgumentParser, calibration: bool = True, device_flag: str = "--device"
) -> None:
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
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
    parser.add_argument(
        "--threads",
        type=thread_count,
        default=None,
        help=f"ONNX Runtime intra-op threads (1 to {MAX_THREADS})",
    )
    add_precision_arg(parser)
    if calibration:
        parser.add_argument(
            "--calibration",
            type=Path,
            default=None,
            help=(
                "calibration TOML (default: configs/calibration/<model>.toml; for a model card, "
                "its own calibration, else the uncalibrated model-card.toml)"
            ),
        )


def add_precision_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--precision",
        default=DEFAULT_PRECISION,
        choices=PRECISIONS,
        help="numeric precision: fp32 (default), int8 (CPU; built on first use), fp16 (CUDA only)",
    )


def _finite_or_null(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_null(v) for v in value]
    return value


def print_json(obj: dict[str, Any]) -> None:
    """A report or training record as one strict JSON line: an undefined number (a NaN
    loss, the EER of a set without one class) is ``null``, never the invalid ``NaN``."""
    sys.stdout.write(json.dumps(_finite_or_null(obj), allow_nan=False) + "\n")
    sys.stdout.flush()


def add_scoring_args(parser: argparse.ArgumentParser) -> None:
    """``--full-windows``: the live commands score incrementally unless told otherwise."""
    parser.add_argument(
        "--full-windows",
        action="store_true",
        help="recompute every window from scratch instead of the exact incremental encoder "
        "(which needs a hop that is a multiple of 729 samples; other hops use full windows anyway)",
    )


def load_live_scoring(
    full: Any,
    model: str,
    hop_samples: int,
    window_samples: int,
    *,
    device: str = "auto",
    threads: int | None = None,
    weights: Path | None = None,
    precision: str = DEFAULT_PRECISION,
    full_windows: bool = False,
) -> Any:
    """The per-stream scorer factory of a live command (``LiveScoring``): the
    exact incremental encoder unless something rules it out (logged with the
    reason), else full windows through ``full`` (the detector's batch scorer)."""
    from spoofwatch.model.incremental_runtime import IncrementalModel
    from spoofwatch.stream.scoring import LiveScoring

    reason = incremental_reason(model, hop_samples, window_samples, precision, full_windows)
    if reason is not None:
        if not full_windows:
            log.warning("scoring full windows, not incrementally: %s", reason)
        return LiveScoring(full, None, reason)
    inc = IncrementalModel.load(model, hop_samples, device, threads, weights, precision=precision)  # type: ignore[arg-type]
    return LiveScoring(full, inc)


def incremental_reason(
    model: str, hop_samples: int, window_samples: int, precision: str, full_windows: bool
) -> str | None:
    """Why a live command must score full windows (``None``: incremental it is)."""
    from spoofwatch.constants import WINDOW_SAMPLES
    from spoofwatch.model.card import is_card_reference
    from spoofwatch.model.incremental import precision_unsupported
    from spoofwatch.model.incremental_runtime import incremental_unavailable

    if full_windows:
        return "--full-windows"
    if (reason := precision_unsupported(precision)) is not None:
        return reason
    if is_card_reference(model) or window_samples != WINDOW_SAMPLES:
        return f"model card {model}: the incremental encoder covers the built-in AASIST models only"
    return incremental_unavailable(model, hop_samples)


def print_event(obj: dict[str, Any]) -> None:
    """An event or result as one JSON line; NaN or Inf raise instead of printing invalid JSON."""
    from spoofwatch.stream.events import event_json

    sys.stdout.write(event_json(obj) + "\n")
    sys.stdout.flush()
