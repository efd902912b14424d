"""``spoofwatch data prepare-la`` and ``spoofwatch train``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from spoofwatch.constants import MODEL_NAMES

from .common import print_json


def register(sub: Any) -> None:
    data = sub.add_parser("data", help="dataset preparation")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    prep = dsub.add_parser("prepare-la", help="download (resumable), extract and verify ASVspoof 2019 LA")
    prep.add_argument(
        "--source", default=None, help="URL or local LA.zip (default: the public LA.zip address)"
    )
    prep.add_argument("--dest", type=Path, required=True)
    prep.add_argument("--no-progress", action="store_true")
    prep.set_defaults(func=cmd_prepare_la)
    from .corpus_cmds import register_data

    register_data(dsub)

    train = sub.add_parser("train", help="train or fine-tune AASIST / AASIST-L")
    train.add_argument(
        "--config", type=Path, required=True, help="training TOML, e.g. configs/train/aasist-l.toml"
    )
    train.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    train.add_argument(
        "--init", choices=MODEL_NAMES, default=None, help="start from the official weights (fine-tuning)"
    )
    train.add_argument(
        "--init-weights",
        type=Path,
        default=None,
        metavar="PTH",
        help="start from your own weights instead (e.g. an earlier run's best.pth)",
    )
    train.set_defaults(func=cmd_train)


def cmd_prepare_la(args: argparse.Namespace) -> int:
    from spoofwatch.model.la_data import prepare_la

    root, reports = prepare_la(args.source, args.dest, progress=not args.no_progress and sys.stderr.isatty())
    incomplete = 0
    for r in reports:
        status = "ok" if not r.missing else f"{len(r.missing)} missing, e.g. {', '.join(r.missing[:3])}"
        sys.stdout.write(f"{r.split:5s} {r.present:6d} / {r.expected:6d} files  {status}\n")
        incomplete += bool(r.missing)
    sys.stdout.write(f"LA prepared at {root}\n")
    return 7 if incomplete else 0


def cmd_train(args: argparse.Namespace) -> int:
    from spoofwatch.model.train import Trainer
    from spoofwatch.model.train_config import load_train_config

    config = load_train_config(args.config)
    trainer = Trainer(
        config,
        init=args.init,
        init_weights=args.init_weights,
        resume=args.resume,
        progress_bar=sys.stderr.isatty(),
        on_metrics=_print_epoch,
    )
    result = trainer.run()
    if result.interrupted:
        sys.stderr.write(f"stopped; resume with: spoofwatch train --config {args.config} --resume\n")
        return 130
    sys.stdout.write(
        f"best dev EER {result.progress.best_eer:.4f} % (epoch {result.progress.best_epoch}); weights {result.best_weights}; ONNX {result.onnx}\n"
    )
    return 0


def _print_epoch(record: dict[str, Any]) -> None:
    if record["type"] == "epoch":
        print_json(record)
