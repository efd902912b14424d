"""``spoofwatch data build-corpus`` (the open-data corpus) and ``spoofwatch evaluate-suite``."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from spoofwatch.calibration.protocol import LABELS
from spoofwatch.constants import (
    DEFAULT_MODEL,
    MODEL_NAMES,
    SUITE_COPIES,
    SUITE_SPOOF_STREAMS,
)
from spoofwatch.model.manifest import GENUINE_KIND, GENUINE_SYSTEM

from .common import (
    MAX_THREADS,
    add_precision_arg,
    check_output_dir,
    check_output_file,
    non_negative_int,
    non_negative_rate,
    non_negative_rates,
    thread_count,
)

# The recipe ships in the package (spoofwatch/configs is the checkout's configs/);
# resolved, so that its relative `shared` path counts from the real file.
DEFAULT_CORPUS_CONFIG = Path(
    str(resources.files("spoofwatch.configs").joinpath("data", "open.toml"))
).resolve()

log = logging.getLogger(__name__)
#: ``evaluate-suite --loudness``: whether the candidate is scored without and/or with
#: per-window loudness normalisation.
LOUDNESS_MODES = {"off": (False,), "on": (True,), "both": (False, True)}


def register(sub: Any) -> None:
    """Top-level commands (``evaluate-suite``); ``build-corpus`` is registered under ``data``."""
    from spoofwatch.calibration.bootstrap import BootstrapConfig
    from spoofwatch.calibration.suite import SuiteConfig

    d, b = SuiteConfig(), BootstrapConfig()
    suite = sub.add_parser(
        "evaluate-suite",
        help="held-out EER per system and genuine corpus, and live false alerts/detection, vs the official model",
    )
    suite.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"architecture ({', '.join(MODEL_NAMES)}; default {DEFAULT_MODEL}), or the path of a "
        f"model card TOML: the card is the candidate, beside the official {DEFAULT_MODEL}",
    )
    suite.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="candidate weights (.pth) of a built-in architecture; omit to evaluate the official model only",
    )
    suite.add_argument(
        "--calibration", type=Path, default=None, help="candidate calibration (stream/gate/policy)"
    )
    add_precision_arg(suite)
    suite.add_argument(
        "--name",
        default=None,
        help="label of the candidate in the tables (default: fine-tuned, or the card's name)",
    )
    suite.add_argument(
        "--corpus", type=Path, required=True, help="a corpus built by `spoofwatch data build-corpus`"
    )
    suite.add_argument("--split", default=d.split, help=f"the corpus split to evaluate (default {d.split})")
    suite.add_argument(
        "--copies",
        choices=SUITE_COPIES,
        default=d.copies,
        help="include the channel copies (default) or not",
    )
    suite.add_argument(
        "--limit-per-group",
        type=non_negative_int,
        default=d.limit_per_group,
        help="at most N utterances per system / genuine corpus (0: all)",
    )
    suite.add_argument(
        "--limit-genuine-per-corpus",
        type=non_negative_int,
        default=d.limit_genuine_per_corpus,
        help="at most N per genuine corpus (default: --limit-per-group)",
    )
    suite.add_argument(
        "--spoof-streams",
        choices=SUITE_SPOOF_STREAMS,
        default=d.spoof_streams,
        help="clips (default): each spoof utterance its own stream; calls: each system's utterances "
        "of one channel copy back to back, as a caller with a cloned voice talks on, each call one "
        "trial (a clip shorter than a window plus a hop cannot alert on its own; a call can)",
    )
    suite.add_argument(
        "--hop-s",
        type=float,
        default=None,
        help=f"window hop (default: the calibration's); 'detected within {d.detect_within_s:g} s' needs an "
        "alert's windows to end by then: the window plus (the policy's minimum windows - 1) hops",
    )
    suite.add_argument(
        "--loudness",
        choices=tuple(LOUDNESS_MODES),
        default="off",
        help="per-window loudness normalisation of the candidate (both: report each)",
    )
    suite.add_argument(
        "--target-false-alerts-per-hour",
        type=non_negative_rate,
        default=d.target_false_alerts_per_hour,
        help="false alerts per hour of held-out genuine streams the operating point may give "
        f"(default {d.target_false_alerts_per_hour:g})",
    )
    suite.add_argument(
        "--curve-false-alerts-per-hour",
        type=non_negative_rates,
        default=None,
        help="more such rates, comma-separated, at which detection is also reported "
        "(default: a spread of them, listed in suite.json's operating_curve; '' for none)",
    )
    suite.add_argument("--out", type=Path, default=None, help="folder for suite.json, suite.md and det.png")
    suite.add_argument(
        "--cache", type=Path, default=None, help="reuse traces of an unchanged model variant from this folder"
    )
    suite.add_argument(
        "--skip-official",
        action="store_true",
        help="score only the candidate (e.g. to fill --cache in parallel); the table then lacks the baseline",
    )
    suite.add_argument(
        "--bootstrap-draws",
        type=non_negative_int,
        default=b.draws,
        help=f"resamples for the {100 * b.level:g} %% intervals of pooled EERs and of each model's difference "
        f"to the official one (default {b.draws}; 0: none)",
    )
    suite.add_argument(
        "--bootstrap-systems",
        choices=("resampled", "fixed"),
        default="resampled" if b.resample_systems else "fixed",
        help="resampled (default): the intervals cover other spoof systems like these; "
        "fixed: only these systems (narrower)",
    )
    suite.add_argument(
        "--threads",
        type=thread_count,
        default=None,
        help=f"ONNX Runtime intra-op threads (1 to {MAX_THREADS})",
    )
    suite.add_argument("--json", action="store_true", help="print the full JSON result on stdout")
    suite.add_argument("--no-progress", action="store_true")
    suite.set_defaults(func=cmd_evaluate_suite)


def register_data(dsub: Any) -> None:
    build = dsub.add_parser("build-corpus", help="build the open-data leave-systems-out corpus (resumable)")
    build.add_argument("--out", type=Path, required=True, help="output folder (outside the repository)")
    build.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CORPUS_CONFIG,
        help="corpus TOML (default configs/data/open.toml)",
    )
    build.add_argument("--no-progress", action="store_true")
    build.set_defaults(func=cmd_build_corpus)

    man = dsub.add_parser(
        "manifest",
        help="describe a folder of your own audio for build-corpus (extra_manifests)",
        description="Write a manifest (tts_demos format) for every readable audio file under FOLDER; "
        "list it in the corpus TOML's extra_manifests.",
    )
    man.add_argument("folder", type=Path, help="folder scanned recursively for audio files")
    man.add_argument("--out", type=Path, required=True, help="manifest.tsv to write (paths relative to it)")
    man.add_argument("--label", choices=LABELS, required=True)
    man.add_argument("--corpus", required=True, help="name of the recordings, e.g. 'our call centre'")
    man.add_argument("--source", default="local", help="where the audio came from (source_repo column)")
    man.add_argument("--system", default=GENUINE_SYSTEM, help="synthesis system (spoof folders)")
    man.add_argument("--kind", default=GENUINE_KIND, help="tts, vc, vocoder or codec (spoof folders)")
    man.add_argument(
        "--speaker-from",
        choices=("folder", "corpus"),
        default="folder",
        help="folder: each file's parent folder names its speaker (default); corpus: one speaker",
    )
    man.add_argument("--licence", default="unknown")
    man.set_defaults(func=cmd_manifest)


def cmd_manifest(args: argparse.Namespace) -> int:
    from spoofwatch.errors import InputError
    from spoofwatch.model.manifest import FolderSource, scan_folder, write_manifest

    spec = FolderSource(
        label=args.label,
        corpus=args.corpus,
        source=args.source,
        system=args.system,
        kind=args.kind,
        speaker_from=args.speaker_from,
        licence=args.licence,
    )
    check_output_file(args.out)
    rows, skipped = scan_folder(args.folder, spec, args.out.parent)
    for message in skipped:
        log.warning("skipped %s", message)
    if not rows:
        raise InputError(f"{args.folder}: no readable audio files ({len(skipped)} skipped)")
    write_manifest(args.out, rows)
    speakers = len({r[4] for r in rows})
    sys.stdout.write(
        f"{args.out}: {len(rows)} files, {speakers} speaker(s), {len(skipped)} skipped; "
        "add it to extra_manifests in the corpus TOML\n"
    )
    return 0


def cmd_build_corpus(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from spoofwatch.model.corpus import (
        check_build_stamp,
        check_generators,
        iter_build,
        lock_corpus,
        write_build_stamp,
        write_outputs,
    )
    from spoofwatch.model.corpus_config import load_corpus_config
    from spoofwatch.model.corpus_plan import plan_corpus

    cfg = load_corpus_config(args.config)
    check_output_dir(args.out)
    with lock_corpus(args.out):  # one build at a time into an --out, from its stamp check to its outputs
        check_build_stamp(cfg, args.out)
        # Everything that can be checked is checked before the first clip (a build
        # takes hours), and only then is the folder stamped with these settings.
        items = plan_corpus(cfg)
        check_generators(items)
        write_build_stamp(cfg, args.out)
        rows = []
        bar = tqdm(
            total=len(items), desc="corpus", unit="clip", disable=args.no_progress or not sys.stderr.isatty()
        )
        for built in iter_build(cfg, args.out, items):
            rows += built
            bar.update(1)
        bar.close()
        summary = write_outputs(cfg, args.out, rows)
    sys.stdout.write(
        json.dumps(
            {
                s: {k: summary[s][k] for k in ("utterances", "hours", "by_kind")}
                for s in ("train", "dev", "test")
            }
        )
        + "\n"
    )
    return 0


def _check_checkpoint(model: str, weights: Path) -> None:
    """``weights`` as a readable ``model`` checkpoint, or one line saying why
    not: torch's own message (an unpickling error, every missing key) runs to
    many lines."""
    from spoofwatch.errors import WeightsError
    from spoofwatch.model.weights import check_weights_file, load_torch_model

    path = check_weights_file(weights)
    try:
        load_torch_model(model, path)
    except WeightsError as exc:
        # Its first sentence says what is wrong (not a state dict; another architecture).
        first = str(exc).splitlines()[0].split(". ")[0].rstrip(":. ")
        raise WeightsError(
            f"{first}; expected a checkpoint of {model} (a .pth state dict, e.g. from `spoofwatch train`)"
        ) from None


#: One model variant of a suite run: label, model (built-in name or card path), weights, calibration, loudness.
Variant = tuple[str, str, Path | None, Path | None, bool]


def _suite_variants(args: argparse.Namespace) -> list[Variant]:
    """The official model always, in the same run, then the candidate: custom
    weights of ``--model``'s architecture, or a model card (scored beside the
    official default model)."""
    from spoofwatch.errors import InputError
    from spoofwatch.model.card import check_card_options, is_card_reference, parse_card

    modes = LOUDNESS_MODES[args.loudness]
    if args.name is not None and args.name.split("+")[0] == "official":
        raise InputError(f"--name {args.name}: expected another label than the baseline's ('official')")
    official, calibration = args.model, args.calibration
    if is_card_reference(args.model):
        # Refused here, before the baseline is exported (and quantized) for nothing.
        check_card_options(args.precision, args.weights)
        name, official = args.name or parse_card(Path(args.model)).name, DEFAULT_MODEL
    elif args.weights is not None:
        name = args.name or "fine-tuned"
    else:
        # The official model itself, here only with loudness normalisation.
        name, calibration, modes = "official", None, (True,) if args.loudness != "off" else ()
    candidates: list[Variant] = [
        (name + ("+loudness" if on else ""), args.model, args.weights, calibration, on) for on in modes
    ]
    if args.skip_official and candidates:
        return candidates
    return [("official", official, None, None, False), *candidates]


def cmd_evaluate_suite(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from spoofwatch.calibration.bootstrap import BootstrapConfig
    from spoofwatch.calibration.streaming import TRACE_FORMAT
    from spoofwatch.calibration.suite import (
        SuiteConfig,
        add_intervals,
        audio_digest,
        cached_variant,
        earliest_alert_s,
        run_variant,
        select_utterances,
        summarise,
    )
    from spoofwatch.calibration.suite_report import markdown, plot_det
    from spoofwatch.model.detector import calibration_for
    from spoofwatch.model.loudness import LoudnessNormalisedScorer
    from spoofwatch.model.scorers import build_scorer
    from spoofwatch.stream.engine import build_engine
    from spoofwatch.stream.vad import SileroVad

    cfg = SuiteConfig(
        split=args.split,
        copies=args.copies,
        limit_per_group=args.limit_per_group,
        limit_genuine_per_corpus=args.limit_genuine_per_corpus,
        target_false_alerts_per_hour=args.target_false_alerts_per_hour,
        spoof_streams=args.spoof_streams,
        **(
            {}
            if args.curve_false_alerts_per_hour is None
            else {"curve_false_alerts_per_hour": args.curve_false_alerts_per_hour}
        ),
    )
    # apart from SuiteConfig: intervals change no trace
    boot = BootstrapConfig(
        draws=args.bootstrap_draws, seed=cfg.seed, resample_systems=args.bootstrap_systems == "resampled"
    )
    for folder, flag in ((args.out, "--out"), (args.cache, "--cache")):
        if folder is not None:  # before the scoring, which takes hours on a real corpus
            check_output_dir(folder, flag)
    utts = select_utterances(args.corpus, cfg)
    missing = [label for label in ("bonafide", "spoof") if not any(u.label == label for u in utts)]
    if missing:  # no EER, and (without genuine audio) no false alerts per hour to hold a threshold to
        from spoofwatch.errors import DatasetError

        raise DatasetError(
            f"{args.corpus}: the {args.split} split ({args.copies} copies) has no {' or '.join(missing)} "
            "utterances: the suite needs both"
        )
    variants = _suite_variants(args)
    vad = SileroVad()
    # Every variant's weights, calibration and model are loaded before any is
    # scored: a bad candidate was found only after the official model had been
    # scored (hours on a real corpus) and cached.
    prepared = []
    for label, model, weights, cal_path, loud in variants:
        if weights is not None:
            _check_checkpoint(model, weights)
        base = build_scorer(model, args.precision, "cpu", args.threads, weights)
        cal = calibration_for(model, cal_path, weights, args.precision, base.spec)
        graph = base.identity  # the cache key's model: a card's also covers how its output is read
        scorer: Any = LoudnessNormalisedScorer(base) if loud else base
        live = dataclasses.replace(cal.live, window_samples=base.window_samples)
        prepared.append((label, loud, cal, graph, scorer, build_engine(live, vad, args.hop_s)))
    hops = {label: engine.config.hop_s for label, *_, engine in prepared}
    if len(set(hops.values())) > 1:  # each calibration's own hop: windows fall elsewhere in the audio
        log.warning(
            "the models run at different hops (%s): their figures differ by the hop too; "
            "--hop-s compares them at one",
            ", ".join(f"{label} {hop:g} s" for label, hop in hops.items()),
        )
    for label, _, cal, _, _, engine in prepared:
        first_alert_s = earliest_alert_s(engine, cal.policy)
        if first_alert_s > cfg.detect_within_s:  # said before hours of scoring, not after (clips and calls)
            log.warning(
                "%s: at a %.2f s hop an alert comes %.2f s into a stream at the earliest, after the %g s "
                "that counts as detected: its detection rate will not be reported (use a shorter hop)",
                label,
                engine.config.hop_s,
                first_alert_s,
                cfg.detect_within_s,
            )
    audio = audio_digest(utts) if args.cache is not None else None
    results, summaries = [], []
    for label, loud, cal, graph, scorer, engine in prepared:
        bar = tqdm(
            total=len(utts), desc=label, unit="utt", disable=args.no_progress or not sys.stderr.isatty()
        )
        key = {
            "name": label,
            "onnx_sha256": graph,
            "loudness": loud,
            "utts": [u.utt for u in utts],
            "trace_format": TRACE_FORMAT,
            "audio_sha256": audio,
            "stream": engine.config,
            "gate": cal.gate,
            "config": cfg.trace_settings(),
        }
        compute = functools.partial(run_variant, label, utts, engine, scorer, cfg, on_progress=bar.update)
        result = cached_variant(args.cache, key, compute)
        bar.close()
        results.append(result)
        # the hop this variant ran with (its calibration's unless --hop-s overrode it)
        summaries.append({**summarise(result, utts, cal.policy, cfg), "hop_s": engine.config.hop_s})
    add_intervals(summaries, results, utts, boot)
    table = markdown(summaries, cfg)
    report = {"corpus": str(args.corpus), "config": cfg.__dict__, "models": summaries}
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "suite.json").write_text(json.dumps(report, indent=1), "utf-8")
        (args.out / "suite.md").write_text(table, "utf-8")
        plot_det(results, args.out / "det.png")
    sys.stdout.write(json.dumps(report) + "\n" if args.json else table)
    return 0
