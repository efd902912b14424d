"""``spoofwatch weights``, ``export`` and ``score``."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

from spoofwatch.constants import DEFAULT_MODEL, MODEL_NAMES
from spoofwatch.errors import AudioError, InputError, ModelError, SpoofwatchError
from spoofwatch.paths import shown

from .common import add_model_args, add_precision_arg, check_output_file, print_event

log = logging.getLogger(__name__)

#: Longest picture name ``score --plot`` takes from an audio file's name, in
#: bytes: with "-N.png" it stays within a file name's 255 bytes. A longer one
#: is cut and ends in a hash of the whole name.
MAX_PLOT_STEM_BYTES = 240


def register(sub: Any) -> None:
    weights = sub.add_parser("weights", help="fetch and list model weights")
    wsub = weights.add_subparsers(dest="weights_command", metavar="ACTION", required=True)
    fetch = wsub.add_parser("fetch", help="download (or copy) official weights and verify their SHA-256")
    fetch.add_argument("--model", default=DEFAULT_MODEL, choices=MODEL_NAMES)
    fetch.add_argument(
        "--source",
        default=None,
        help="URL, .pth file or directory holding <NAME>.pth (default: the official URL)",
    )
    fetch.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    fetch.set_defaults(func=cmd_weights_fetch)
    lst = wsub.add_parser(
        "list", help="show where each model's weights come from (packaged / cache / custom), with hashes"
    )
    lst.set_defaults(func=cmd_weights_list)

    export = sub.add_parser("export", help="export a model to ONNX (checked against PyTorch)")
    export.add_argument("--model", default=DEFAULT_MODEL, choices=MODEL_NAMES)
    export.add_argument("--weights", type=Path, default=None, help="custom weights (.pth)")
    export.add_argument("--out", type=Path, default=None, help="output path (default: the runtime cache)")
    add_precision_arg(export)
    export.add_argument(
        "--calibration-audio",
        type=Path,
        default=None,
        metavar="DIR",
        help="INT8: real speech to calibrate activation ranges on (default: $SPOOFWATCH_SHARED speech)",
    )
    export.set_defaults(func=cmd_export)

    score = sub.add_parser("score", help="score audio files window by window")
    add_model_args(score)
    score.add_argument(
        "--hop-s",
        type=float,
        default=None,
        help="seconds between window starts (default 1.0, or one window for a model card with a shorter one)",
    )
    score.add_argument("--json", action="store_true", help="one JSON object per file per line")
    score.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="DIR",
        help="also draw each file's window scores and threshold to DIR/<file name>.png",
    )
    score.add_argument("files", nargs="+", type=Path, metavar="FILE")
    score.set_defaults(func=cmd_score)


def cmd_weights_fetch(args: argparse.Namespace) -> int:
    from spoofwatch.model.weights import fetch_weights

    path = fetch_weights(args.model, args.source, progress=not args.no_progress and sys.stderr.isatty())
    sys.stdout.write(f"installed {args.model} weights at {path}\n")
    return 0


def cmd_weights_list(args: argparse.Namespace) -> int:
    from spoofwatch.model.weights import list_weights

    # One line per place a file is looked for; "*" marks the file loads use.
    for row in list_weights():
        if row.source == "custom":
            state = "custom"
        else:
            state = "ok" if row.ok else ("MISMATCH" if row.sha256 else "missing")
        mark = "*" if row.in_use else " "
        sys.stdout.write(
            f"{mark} {row.model or '-':9s} {row.source:8s} {state:8s} {row.sha256 or '-':64s} {row.path}\n"
        )
    return 0


def _check_export_out(args: argparse.Namespace) -> None:
    """``--out`` must not be the weights it is made from, nor a file in the
    cache: the cache names its files and checks them (a graph written over a
    cached one was scored as the model that file's name says)."""
    from spoofwatch.model.config import load_model_config
    from spoofwatch.model.weights import packaged_weights_dir, resolve_weights
    from spoofwatch.paths import home_dir

    in_use = args.weights
    if in_use is None:
        with contextlib.suppress(SpoofwatchError):  # no weights at all: the export says so
            in_use = resolve_weights(load_model_config(args.model))[1]
    check_output_file(args.out, inputs={"--weights" if args.weights else "weights in use": in_use})
    where = args.out.resolve()
    for folder in (home_dir(), packaged_weights_dir()):
        if where.is_relative_to(folder.resolve()):
            raise InputError(
                f"--out {args.out}: inside spoofwatch's {'cache' if folder == home_dir() else 'package'} "
                f"({folder}), whose files spoofwatch names and checks itself; write elsewhere "
                "(without --out, the export goes to the cache)"
            )


def cmd_export(args: argparse.Namespace) -> int:
    from spoofwatch.audio import audio_files
    from spoofwatch.model.export import cached_onnx_path, export_onnx, export_precision
    from spoofwatch.model.weights import check_weights_file

    if args.out is not None:
        _check_export_out(args)
    if args.calibration_audio is not None and args.precision != "int8":
        raise InputError(
            f"--calibration-audio calibrates INT8 quantisation; expected --precision int8, got {args.precision}"
        )
    if args.weights is not None:  # before any export starts
        args.weights = check_weights_file(args.weights)
    if args.precision != "fp32":
        audio = None
        if args.calibration_audio is not None:
            audio = audio_files(args.calibration_audio)
        out = export_precision(args.model, args.precision, args.weights, audio, args.out)
        sys.stdout.write(f"exported {args.model} at {args.precision} to {out}\n")
        return 0
    out = args.out or cached_onnx_path(args.model, args.weights)
    diff = export_onnx(args.model, out, args.weights, cached=args.out is None)
    sys.stdout.write(f"exported {args.model} to {out} (max |ONNX - PyTorch| = {diff:.2e})\n")
    return 0


def _print_table(result: Any) -> None:
    sys.stdout.write(
        f"{shown(result.file)}\n  score {result.score:+.4f}  verdict {result.verdict}  (threshold {result.threshold:+.4f})\n"
    )
    for w in result.windows:
        sys.stdout.write(f"    {w.start_s:8.2f}-{w.end_s:8.2f} s  {w.score:+.4f}\n")


def cmd_score(args: argparse.Namespace) -> int:
    from spoofwatch.model.detector import Detector

    if args.plot:  # before the model loads
        from spoofwatch.plots import prepare_plot_dir

        prepare_plot_dir(args.plot)
    detector = Detector.load(
        args.model, args.device, args.threads, args.weights, args.calibration, args.precision
    )
    failed = 0
    drawn: set[Path] = set()
    for path in args.files:
        try:
            result = detector.score_file(path, hop_s=args.hop_s)
        except (AudioError, ModelError) as exc:  # this file only: the others are still scored
            failed += 1
            sys.stderr.write(f"spoofwatch score: {shown(exc)}\n")
            if args.json:
                print_event({"file": str(path), "error": str(exc)})
            continue
        if args.json:
            print_event(result.to_json())
        else:
            _print_table(result)
        if args.plot:
            try:
                _plot_file(result.to_json(), path, args.plot, drawn)
            except InputError as exc:  # this file's picture only: the other files are still scored
                failed += 1
                sys.stderr.write(f"spoofwatch score: {shown(exc)}\n")
    return 1 if failed else 0


def _plot_file(result: dict[str, Any], path: Path, out_dir: Path, drawn: set[Path]) -> None:
    """``out_dir/<file name>.png``; two files of the same name (from different
    folders) get ``-2``, ``-3``... rather than one picture replacing the other."""
    from spoofwatch.plots import plot_file_score

    stem = path.name
    if len(os.fsencode(stem)) > MAX_PLOT_STEM_BYTES:  # with ".png" and "-N", past a file name's 255 bytes
        digest = hashlib.sha256(os.fsencode(stem)).hexdigest()[:16]
        stem = os.fsdecode(os.fsencode(stem)[: MAX_PLOT_STEM_BYTES - 17]) + "-" + digest
    target = out_dir / f"{stem}.png"
    n = 1
    while target in drawn:
        n += 1
        target = out_dir / f"{stem}-{n}.png"
    drawn.add(target)
    try:
        plot_file_score(result, target)
    except OSError as exc:  # the folder was checked first; a full disk, a removed folder
        raise InputError(f"--plot: cannot write {target}: {exc.strerror or exc}") from None
    log.info("wrote %s", target)
