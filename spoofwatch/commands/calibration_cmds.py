"""``spoofwatch evaluate`` and ``spoofwatch calibrate score|fit|bonafide``."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import (
    add_model_args,
    check_output_dir,
    check_output_file,
    check_output_outside,
    checked_type,
    model_inputs,
    non_negative_rate,
    positive_int,
    print_json,
)

log = logging.getLogger(__name__)
#: Most simulated conversation audio ``calibrate fit`` builds, both kinds
#: together: all of it is held in memory at once (float32, 16 kHz: 2 h is
#: ~460 MB), and 2 h is already far more than its alert delays need.
MAX_CONVERSATION_AUDIO_S = 7200.0
conversation_seconds = checked_type(
    float,
    lambda v: math.isfinite(v) and 0 < v <= MAX_CONVERSATION_AUDIO_S / 2,
    f"seconds > 0 and <= {MAX_CONVERSATION_AUDIO_S / 2:g}",
)

if TYPE_CHECKING:
    from spoofwatch.calibration.calfile import Calibration
    from spoofwatch.calibration.report import StreamingSection
    from spoofwatch.stream.policy import PolicyConfig


def register(sub: Any) -> None:
    from spoofwatch.calibration.fit import TARGETS

    ev = sub.add_parser("evaluate", help="EER, min t-DCF and per-attack EER of a score file")
    ev.add_argument(
        "--scores",
        type=Path,
        required=True,
        help="'UTT ATTACK KEY SCORE' lines (or 'UTT SCORE' with --protocol)",
    )
    ev.add_argument("--protocol", type=Path, default=None)
    ev.add_argument("--asv-scores", type=Path, default=None, help="organisers' ASV scores, for the t-DCF")
    ev.add_argument("--json", action="store_true")
    ev.set_defaults(func=cmd_evaluate)

    cal = sub.add_parser("calibrate", help="score a dataset, fit thresholds, tune on genuine audio")
    csub = cal.add_subparsers(dest="calibrate_command", metavar="ACTION", required=True)
    sc = csub.add_parser("score", help="score an ASVspoof protocol (resumable, batched)")
    add_model_args(sc, calibration=False)
    sc.add_argument("--protocol", type=Path, required=True)
    sc.add_argument("--audio-dir", type=Path, required=True)
    sc.add_argument("--out", type=Path, required=True)
    sc.add_argument(
        "--hop-s",
        type=score_hop_s,
        default=0.5,
        help="hop of the window scores kept beside the score file (0: the official first window only, "
        "the fastest way to get EER/min t-DCF and a threshold)",
    )
    sc.add_argument("--workers", type=positive_int, default=4, help="parallel audio decoders")
    sc.add_argument("--skip-missing", action="store_true", help="continue without missing or empty files")
    sc.set_defaults(func=cmd_calibrate_score)

    fit = csub.add_parser("fit", help="choose the threshold from dev scores and write a calibration file")
    fit.add_argument("--scores", type=Path, required=True)
    fit.add_argument("--protocol", type=Path, default=None)
    fit.add_argument("--target", default="eer", choices=TARGETS)
    fit.add_argument(
        "--rate",
        type=lambda text: float(text) + 0.0,  # + 0.0: -0 is 0 (provenance read "--rate -0.0")
        default=None,
        help="target rate for bonafide-false-alarm / spoof-miss (fraction)",
    )
    add_model_args(fit)
    fit.add_argument("--out", type=Path, required=True)
    fit.add_argument(
        "--asv-scores", type=Path, default=None, help="ASV scores, for the min t-DCF in the report"
    )
    fit.add_argument(
        "--audio-dir",
        type=Path,
        default=None,
        help="with --protocol: also fit smoothing and hysteresis on simulated conversations",
    )
    fit.add_argument("--skip-missing", action="store_true")
    fit.add_argument("--target-false-alerts-per-hour", type=non_negative_rate, default=1.0)
    fit.add_argument(
        "--conversations", type=positive_int, default=20, help="simulated conversations of each kind"
    )
    fit.add_argument(
        "--conversation-s",
        type=conversation_seconds,
        default=30.0,
        help=f"length of each simulated conversation (all of them together, both kinds: at most "
        f"{MAX_CONVERSATION_AUDIO_S:g} s)",
    )
    fit.add_argument(
        "--report", type=Path, default=None, metavar="DIR", help="write report.md and PNG plots here"
    )
    fit.set_defaults(func=cmd_calibrate_fit)

    bf = csub.add_parser(
        "bonafide", help="set the alert threshold from genuine recordings of your own channel"
    )
    add_model_args(bf)
    bf.add_argument("--audio-dir", type=Path, required=True)
    bf.add_argument("--target-false-alerts-per-hour", type=non_negative_rate, required=True)
    bf.add_argument("--out", type=Path, required=True)
    bf.set_defaults(func=cmd_calibrate_bonafide)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from spoofwatch.calibration.metrics import evaluate
    from spoofwatch.calibration.protocol import read_asv_scores, read_scores

    report = evaluate(
        read_scores(args.scores, args.protocol), read_asv_scores(args.asv_scores) if args.asv_scores else None
    )
    if args.json:
        print_json(report.to_json())
    else:
        sys.stdout.write(report.to_text())
    return 0


def score_hop_s(text: str) -> float:
    """``--hop-s`` of ``calibrate score``, checked before anything loads (see ``check_hop_s``)."""
    from spoofwatch.calibration.scoreset import check_hop_s
    from spoofwatch.errors import InputError

    try:
        hop_s = float(text)
        check_hop_s(hop_s)
    except ValueError as exc:  # InputError is a ValueError
        message = str(exc) if isinstance(exc, InputError) else f"expected seconds, got {text!r}"
        raise argparse.ArgumentTypeError(message) from None
    return hop_s


def cmd_calibrate_score(args: argparse.Namespace) -> int:
    from spoofwatch.calibration.dataset import check_dataset
    from spoofwatch.calibration.scoreset import score_dataset
    from spoofwatch.model.detector import calibration_stamp
    from spoofwatch.model.scorers import build_scorer, preflight

    preflight(args.model, args.precision, args.device, args.weights)
    check_output_file(args.out, inputs={"--protocol": args.protocol})
    dataset = check_dataset(args.protocol, args.audio_dir, args.skip_missing)  # before any scoring
    scorer = build_scorer(args.model, args.precision, args.device, args.threads, args.weights)
    run = score_dataset(
        dataset,
        scorer,
        args.out,
        args.hop_s,
        args.workers,
        progress=sys.stderr.isatty(),
        window_samples=scorer.window_samples,
        model_identity=scorer.identity,
        calibration_stamp=calibration_stamp(args.model, args.weights, args.precision),
    )
    sys.stdout.write(
        f"scored {run.scored} files ({run.skipped} already done, {len(run.failed)} failed) at {run.files_per_s:.1f} files/s -> {args.out}\n"
    )
    return 1 if run.failed else 0


def cmd_calibrate_fit(args: argparse.Namespace) -> int:
    import numpy as np

    from spoofwatch.calibration.calfile import save_calibration
    from spoofwatch.calibration.fit import threshold_for, with_threshold
    from spoofwatch.calibration.metrics import evaluate
    from spoofwatch.calibration.protocol import read_asv_scores, read_scores
    from spoofwatch.calibration.report import write_report
    from spoofwatch.calibration.scoreset import check_fit_matches_scores
    from spoofwatch.errors import InputError
    from spoofwatch.model.detector import calibration_for, calibration_stamp

    if args.rate is not None and args.target == "eer":
        raise InputError("--rate goes with --target bonafide-false-alarm or spoof-miss, not eer")
    conversation_audio_s = 2 * args.conversations * args.conversation_s  # genuine, then with a spoof
    if conversation_audio_s > MAX_CONVERSATION_AUDIO_S:
        raise InputError(
            f"--conversations {args.conversations} x --conversation-s {args.conversation_s:g} x 2 kinds is "
            f"{conversation_audio_s:g} s of audio, all held in memory: expected at most {MAX_CONVERSATION_AUDIO_S:g} s"
        )
    check_output_file(
        args.out,
        inputs={
            "--scores": args.scores,
            "--protocol": args.protocol,
            "--asv-scores": args.asv_scores,
            **model_inputs(args),
        },
    )
    check_output_outside(args.out, args.audio_dir, "--audio-dir")
    if args.report is not None:
        check_output_dir(args.report, "--report")
    check_fit_matches_scores(args.scores, calibration_stamp(args.model, args.weights, args.precision))
    table = read_scores(args.scores, args.protocol)
    threshold = threshold_for(table, args.target, args.rate)
    bona, spoof = table.by_label("bonafide"), table.by_label("spoof")
    if args.report is not None and not (bona.size and spoof.size):
        raise InputError(
            f"--report plots the DET curve and EER, which need bona fide and spoof scores; {args.scores} has "
            f"{bona.size} bona fide and {spoof.size} spoof"
        )
    # What the threshold does on these very scores: with scores tied across
    # the classes the EER (counted as the official tools count it, tied
    # scores one at a time) is a point no threshold reaches.
    realised = {
        "bonafide_rejected_percent": 100 * float(np.mean(bona < threshold)) if bona.size else None,
        "spoof_accepted_percent": 100 * float(np.mean(spoof >= threshold)) if spoof.size else None,
    }
    # A false-alarm rate needs only genuine scores (a miss rate only spoofs):
    # the EER and min t-DCF of the report need both.
    report = (
        evaluate(table, read_asv_scores(args.asv_scores) if args.asv_scores else None)
        if bona.size and spoof.size
        else None
    )
    provenance: dict[str, Any] = {
        "source": f"calibrate fit --target {args.target}"
        + (f" --rate {args.rate}" if args.rate is not None else ""),
        "dataset": str(args.scores),
        "protocol": str(args.protocol or "labels in the score file"),
        "metrics": {
            **({"eer_percent": report.eer_percent} if report is not None else {}),
            "n_bonafide": int(bona.size),
            "n_spoof": int(spoof.size),
            # TOML has no null: a class with no scores has no rate.
            **{k: v for k, v in realised.items() if v is not None},
        },
    }
    if report is not None and report.min_tdcf is not None:
        provenance["metrics"]["min_tdcf"] = report.min_tdcf
    if report is not None and args.target == "eer":
        achieved = (realised["bonafide_rejected_percent"] or 0.0) + (
            realised["spoof_accepted_percent"] or 0.0
        )
        if abs(achieved / 2 - report.eer_percent) > 1e-6:
            log.warning(
                "bona fide and spoof scores tie at the EER point: the EER (%.4f %%) counts tied scores one at a "
                "time, and no threshold reaches it; this one rejects %.4f %% of bona fide and accepts %.4f %% of spoofs",
                report.eer_percent,
                realised["bonafide_rejected_percent"],
                realised["spoof_accepted_percent"],
            )
    # Stamped with the model, weights and precision the scores were made with
    # (a card is parsed and hashed, not run).
    start = calibration_for(args.model, args.calibration, args.weights, args.precision, warn=False)
    cal = with_threshold(start, threshold, provenance)
    section = None
    if args.audio_dir is not None:
        policy, section = _fit_streaming(args, cal)
        stamp = {
            **cal.provenance,
            # TOML has no null: a delay that was never observed is left out.
            "metrics": {
                **cal.provenance["metrics"],
                **{k: v for k, v in section.metrics.to_json().items() if v is not None},
            },
            "streaming": f"{section.n_conversations} simulated conversations, "
            f"target {args.target_false_alerts_per_hour} false alerts/hour",
        }
        cal = dataclasses.replace(cal, policy=policy, provenance=stamp)
    save_calibration(cal, args.out)
    on_dev = "; ".join(
        f"{what} {value:.4f} %"
        for what, value in (
            ("EER", report.eer_percent if report is not None else None),
            ("bona fide rejected", realised["bonafide_rejected_percent"]),
            ("spoofs accepted", realised["spoof_accepted_percent"]),
        )
        if value is not None
    )
    sys.stdout.write(f"threshold {threshold:+.4f} ({args.target}); {on_dev}; wrote {args.out}\n")
    if section is not None:
        m = section.metrics
        sys.stdout.write(
            f"streaming: enter {cal.policy.enter_threshold:+.4f}, smoothing {cal.policy.smoothing_windows}, min windows {cal.policy.min_alert_windows}: "
            f"{m.false_alerts_per_hour:.2f} false alerts/h, {100 * m.detection_rate:.0f} % detected, "
            f"median delay {_seconds(m.median_delay_s)}, p90 {_seconds(m.p90_delay_s)}\n"
        )
    if args.report is not None and report is not None:
        path = write_report(args.report, table, report, threshold, args.target, section)
        sys.stdout.write(f"report: {path}\n")
    return 0


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def _fit_streaming(args: argparse.Namespace, cal: Calibration) -> tuple[PolicyConfig, StreamingSection]:
    """Fit the alert policy on simulated conversations run through the live engine."""
    from spoofwatch.calibration.dataset import check_dataset
    from spoofwatch.calibration.report import StreamingSection
    from spoofwatch.calibration.streaming import build_conversations, fit_policy, sweep_thresholds, trace
    from spoofwatch.errors import InputError
    from spoofwatch.model.scorers import build_scorer
    from spoofwatch.stream.engine import build_engine
    from spoofwatch.stream.vad import SileroVad

    if args.protocol is None:
        raise InputError("--audio-dir needs --protocol (labels and speakers for the simulated conversations)")
    dataset = check_dataset(args.protocol, args.audio_dir, args.skip_missing)
    scorer = build_scorer(args.model, args.precision, args.device, args.threads, args.weights)
    # The engine cuts windows of the model's own length (a model card may declare its own).
    engine = build_engine(dataclasses.replace(cal.live, window_samples=scorer.window_samples), SileroVad())
    conversations = build_conversations(dataset, args.conversations, args.conversation_s)
    traces = [trace(c, engine, scorer) for c in conversations]
    policy, metrics = fit_policy(traces, cal.policy, args.target_false_alerts_per_hour)
    section = StreamingSection(
        metrics,
        dataclasses.asdict(policy),
        sweep_thresholds(traces, policy),
        len(conversations),
        sum(t.duration_s for t in traces) / 3600,
    )
    return policy, section


def _warn_duplicates(files: list[Path], folder: Path) -> None:
    """Copies of one recording count its false alerts, and its hours, twice."""
    from spoofwatch.model.cached import file_sha256

    first: dict[str, Path] = {}
    for path in files:
        try:
            digest = file_sha256(path)
        except OSError:  # unreadable: its decode says so
            continue
        if digest in first:
            log.warning(
                "%s is a copy of %s: both count (twice the hours, and any false alert twice)",
                path.relative_to(folder),
                first[digest].relative_to(folder),
            )
        else:
            first[digest] = path


def cmd_calibrate_bonafide(args: argparse.Namespace) -> int:
    from spoofwatch.audio import AUDIO_SUFFIXES, audio_files
    from spoofwatch.calibration.calfile import save_calibration
    from spoofwatch.calibration.fit import (
        alert_label,
        bonafide_threshold,
        describe_alerts,
        limiting_alerts,
        trace_file,
        warn_about_genuine,
        with_threshold,
    )
    from spoofwatch.errors import AudioError, DatasetError
    from spoofwatch.model.detector import Detector, calibration_for
    from spoofwatch.stream.engine import build_engine
    from spoofwatch.stream.vad import SileroVad

    check_output_file(args.out, inputs=model_inputs(args))
    check_output_outside(args.out, args.audio_dir, "--audio-dir")
    if not args.audio_dir.is_dir():
        raise DatasetError(f"--audio-dir {args.audio_dir}: no such folder")
    files = audio_files(args.audio_dir)
    if not files:
        raise DatasetError(f"{args.audio_dir}: no audio files ({', '.join(AUDIO_SUFFIXES)}) found")
    start = calibration_for(args.model, args.calibration, args.weights, args.precision, warn=False)
    detector = Detector.load(args.model, args.device, args.threads, args.weights, start, args.precision)
    engine = build_engine(detector.live, SileroVad())
    _warn_duplicates(files, args.audio_dir)
    traces = []
    for path in files:
        try:
            # Named by the path under the folder: two x.wav in two subfolders
            # must not share a name where a limiting alert is reported.
            traces.append(
                trace_file(path, engine, detector.scorer, path.relative_to(args.audio_dir).as_posix())
            )
        except AudioError as exc:  # one unreadable file does not waste the others' tracing
            log.warning("skipping %s", exc)
    if not traces:
        raise DatasetError(f"{args.audio_dir}: none of the {len(files)} audio files could be decoded")
    warn_about_genuine(traces, detector.calibration.policy)
    threshold, rate = bonafide_threshold(
        traces, detector.calibration.policy, args.target_false_alerts_per_hour
    )
    hours = sum(t.duration_s for t in traces) / 3600
    # Which genuine moments keep the threshold from going higher: a low
    # threshold often rests on one recording, worth a listen (a spliced or
    # processed file in a "genuine" folder, or a voice the model misjudges).
    limits = limiting_alerts(traces, detector.calibration.policy, threshold)
    provenance = {
        "source": f"calibrate bonafide --target-false-alerts-per-hour {args.target_false_alerts_per_hour}",
        "dataset": f"{len(traces)} genuine recordings in {args.audio_dir} ({hours * 60:.1f} min)",
        "protocol": "none (bona fide only)",
        "limited_by": [alert_label(a) for a in limits],
        "metrics": {"false_alerts_per_hour": rate, "hours": hours},
    }
    cal = with_threshold(detector.calibration, threshold, provenance)
    save_calibration(cal, args.out)
    sys.stdout.write(
        f"alert threshold {threshold:+.4f}: {rate:.2f} false alerts/hour on {hours * 60:.1f} min of genuine audio; wrote {args.out}\n"
    )
    if limits:
        sys.stdout.write(f"a higher threshold would add false alerts in: {describe_alerts(limits)}\n")
    return 0
