"""The held-out evaluation suite: per system, per genuine corpus, pooled, and live.

For each model variant (the official AASIST-L always, plus a candidate):

* the held-out spoof utterances run through the live engine (gate, windows,
  model): each as its own stream (``spoof_streams = "clips"``), or as calls
  (``"calls"``): one system's utterances of one channel copy back to back,
  up to ``stream_seconds``, as a caller with a cloned voice talks on (a clip
  shorter than a window plus a hop can never alert on its own; a call can).
  An utterance's score is the mean of the windows whose midpoint falls inside
  it (all of a clip's);
* the held-out genuine utterances of each genuine corpus are concatenated into
  streams (``stream_seconds`` long) and run through the same engine, so false
  alerts are counted the way a user would see them; each genuine utterance's
  score is the mean of the windows whose midpoint falls inside it;
* EER pooled (every utterance once) and balanced (every genuine corpus and
  every spoof system weighing the same), per spoof system (against all
  genuine), per genuine corpus (against all spoof) and per kind;
* the live operating point: the highest alert threshold (the calibration's
  smoothing, hysteresis width and minimum length kept) whose false alerts per
  hour on the genuine streams are at most ``target_false_alerts_per_hour``,
  and the share of spoof streams (clips, or calls) alerted within
  ``detect_within_s`` of their start there, overall and per system; also the
  same at the model's shipped threshold. A call is one trial however many
  utterances it holds: an alert stays open across them, so counting each
  would reward one early alert many times.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import numbers
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from spoofwatch.audio import read_audio
from spoofwatch.constants import SAMPLE_RATE_HZ, SUITE_COPIES, SUITE_SPOOF_STREAMS
from spoofwatch.errors import CalibrationError, DatasetError, InputError
from spoofwatch.paths import partial_path
from spoofwatch.stream.engine import Engine, Scorer
from spoofwatch.stream.policy import PolicyConfig

from .bootstrap import BootstrapConfig, Sample, compare_eers
from .fit import bonafide_threshold, limiting_alerts, warn_about_genuine
from .metrics import balanced_eer, eer
from .streaming import Conversation, Trace, measure, replay, trace

log = logging.getLogger(__name__)
Array = npt.NDArray[np.float64]
#: A stream of utterances back to back: its name, audio, and each utterance's (utt, start, end) in samples.
Stream = tuple[str, npt.NDArray[np.float32], list[tuple[str, int, int]]]


@dataclass(frozen=True)
class SuiteConfig:
    split: str = "test"
    #: "clean": only the clean copy of each utterance; "all": channel copies too.
    copies: str = "all"
    #: At most this many utterances per spoof system and per genuine corpus (0: all).
    limit_per_group: int = 0
    #: At most this many utterances per genuine corpus (None: limit_per_group); more genuine audio
    #: makes the false-alerts-per-hour figure less coarse.
    limit_genuine_per_corpus: int | None = None
    stream_seconds: float = 60.0
    target_false_alerts_per_hour: float = 1.0
    #: More false-alert rates at which detection is reported: the trade-off,
    #: not one point (with under an hour of genuine streams, 1 per hour allows
    #: none at all, and every model may detect nothing there).
    curve_false_alerts_per_hour: tuple[float, ...] = (2.0, 5.0, 10.0, 30.0, 100.0)
    detect_within_s: float = 5.0
    seed: int = 0
    #: "clips": each spoof utterance its own stream; "calls": a system's utterances back to back.
    spoof_streams: str = "clips"

    def trace_settings(self) -> dict[str, Any]:
        """The settings a variant's traces depend on (part of their cache key): not
        the false-alert target or the detection limit, which only read them, so
        that trying another target reuses the traces."""
        reads_only = ("target_false_alerts_per_hour", "curve_false_alerts_per_hour", "detect_within_s")
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in reads_only}

    def __post_init__(self) -> None:
        # checked here, not only by the CLI: a bad value would surface hours later as an empty operating point
        if self.copies not in SUITE_COPIES:
            raise InputError(f"copies: expected one of {SUITE_COPIES}, got {self.copies!r}")
        if self.spoof_streams not in SUITE_SPOOF_STREAMS:
            raise InputError(
                f"spoof_streams: expected one of {SUITE_SPOOF_STREAMS}, got {self.spoof_streams!r}"
            )
        for name in ("limit_per_group", "limit_genuine_per_corpus", "seed"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise InputError(f"{name}: expected an integer >= 0, got {value!r}")
        for name, zero_ok in (
            ("stream_seconds", False),
            ("detect_within_s", False),
            ("target_false_alerts_per_hour", True),
        ):
            value = getattr(self, name)
            finite = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            if not finite or value < 0 or (value == 0 and not zero_ok):
                raise InputError(
                    f"{name}: expected a finite number {'>= 0' if zero_ok else '> 0'}, got {value!r}"
                )
        rates = self.curve_false_alerts_per_hour
        if isinstance(rates, str) or not isinstance(rates, Iterable):
            raise InputError(f"curve_false_alerts_per_hour: expected a sequence of numbers, got {rates!r}")
        for rate in rates:
            if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0 <= rate < math.inf:
                raise InputError(f"curve_false_alerts_per_hour: expected finite numbers >= 0, got {rate!r}")
        # Sorted, once each, as plain floats: the table's rows, and a hashable config.
        object.__setattr__(
            self, "curve_false_alerts_per_hour", tuple(sorted({float(r) + 0.0 for r in rates}))
        )


@dataclass(frozen=True)
class Utterance:
    utt: str
    path: Path
    label: str
    kind: str
    system: str
    corpus: str  # genuine corpus family (see corpus_family)
    #: the source clip whose copies (clean, channel) this is; drawn together by the bootstrap
    clip: str = ""


@dataclass
class VariantResult:
    name: str
    genuine: dict[str, float] = field(default_factory=dict)  # utt -> score
    spoof: dict[str, float] = field(default_factory=dict)
    genuine_traces: list[Trace] = field(default_factory=list)
    spoof_traces: dict[str, Trace] = field(default_factory=dict)  # stream name -> trace
    #: utt -> (its call's name, start s, end s); an utterance missing here is
    #: a stream of its own (a clip), named after it.
    spoof_spans: dict[str, tuple[str, float, float]] = field(default_factory=dict)
    unscored: list[str] = field(default_factory=list)  # no scored window centred on it


def corpus_family(name: str) -> str:
    """'VCTK p225' -> 'VCTK', 'celebrity/in-the-wild clip (tom)' -> 'celebrity/in-the-wild clip',
    'LibriTTS 1320' -> 'LibriTTS': one genuine corpus, not one speaker."""
    base = re.sub(r"\s*\(.*?\)", "", name).strip()
    base = re.sub(r"\s+(p\d+|\d+)$", "", base).strip()
    return base.rstrip("?") or name


def clip_of(utt: str, copy: str) -> str:
    """The clip an utterance is a copy of: build-corpus names copy k of a clip ``CLIP_c{k}``."""
    suffix = f"_c{copy}"
    return utt[: -len(suffix)] if copy and utt.endswith(suffix) else utt


def read_metadata(corpus: Path) -> list[dict[str, str]]:
    """The per-utterance rows of a corpus built by ``spoofwatch data build-corpus``."""
    path = corpus / "metadata.tsv"
    if not path.is_file():
        raise DatasetError(f"{path}: not found (expected a corpus built by `spoofwatch data build-corpus`)")
    with path.open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def select_utterances(corpus: Path, cfg: SuiteConfig) -> list[Utterance]:
    rows = [
        r
        for r in read_metadata(corpus)
        if r["split"] == cfg.split and (cfg.copies == "all" or r["copy"] == "0")
    ]
    if not rows:
        raise DatasetError(f"{corpus}: no {cfg.split} utterances in metadata.tsv")
    groups: dict[str, list[Utterance]] = defaultdict(list)
    for r in rows:
        u = Utterance(
            r["utt"],
            corpus / "flac" / f"{r['utt']}.flac",
            r["label"],
            r["kind"],
            r["system"],
            corpus_family(r["corpus"]),
            clip_of(r["utt"], r["copy"]),
        )
        groups[u.system if u.label == "spoof" else f"genuine:{u.corpus}"].append(u)
    rng = np.random.default_rng(cfg.seed)
    chosen: list[Utterance] = []
    for key in sorted(groups):
        members = groups[key]
        limit = cfg.limit_per_group
        if key.startswith("genuine:") and cfg.limit_genuine_per_corpus is not None:
            limit = cfg.limit_genuine_per_corpus
        if limit and len(members) > limit:
            members = [members[i] for i in sorted(rng.permutation(len(members))[:limit])]
        chosen += members
    return chosen


def call_of(u: Utterance) -> str:
    """A spoof utterance's call: its system and channel copy, so that a clip's
    clean copy and its channel copy (the same sentence) never meet in one call,
    and a call keeps one kind of channel."""
    copy = u.utt[len(u.clip) :] if u.clip and u.utt.startswith(u.clip) else ""
    return f"{u.system}{copy}"


def back_to_back(utts: list[Utterance], seconds: float, group: Callable[[Utterance], str]) -> list[Stream]:
    """Per group (a genuine corpus, a spoof system), its utterances back to back in streams of about ``seconds``."""
    by_group: dict[str, list[Utterance]] = defaultdict(list)
    for u in utts:
        by_group[group(u)].append(u)
    streams: list[Stream] = []
    limit = int(seconds * SAMPLE_RATE_HZ)
    for name in sorted(by_group):
        parts: list[npt.NDArray[np.float32]] = []
        spans: list[tuple[str, int, int]] = []
        pos = 0
        for u in by_group[name]:
            audio = read_audio(u.path)
            parts.append(audio)
            spans.append((u.utt, pos, pos + audio.size))
            pos += audio.size
            if pos >= limit:
                streams.append((f"{name}#{len(streams)}", np.concatenate(parts), spans))
                parts, spans, pos = [], [], 0
        if parts:
            streams.append((f"{name}#{len(streams)}", np.concatenate(parts), spans))
    return streams


def run_variant(
    name: str,
    utts: list[Utterance],
    engine: Engine,
    scorer: Scorer,
    cfg: SuiteConfig,
    on_progress: Callable[[int], None] | None = None,
) -> VariantResult:
    """All traces and utterance scores of one model variant."""
    window_s = engine.windower.window_samples / SAMPLE_RATE_HZ  # the model's own (a card may differ)
    result = VariantResult(name)
    genuine = [u for u in utts if u.label == "bonafide"]
    for stream_name, audio, spans in back_to_back(genuine, cfg.stream_seconds, lambda u: u.corpus):
        tr = trace(Conversation(stream_name, audio, None), engine, scorer)
        result.genuine_traces.append(tr)
        _score_utterances(tr, spans, window_s, result.genuine, result.unscored)
        if on_progress:
            on_progress(len(spans))
    spoof = [u for u in utts if u.label == "spoof"]
    streams: Iterable[Stream] = (
        back_to_back(spoof, cfg.stream_seconds, call_of)
        if cfg.spoof_streams == "calls"
        else ((u.utt, audio, [(u.utt, 0, audio.size)]) for u in spoof for audio in (read_audio(u.path),))
    )
    for stream_name, audio, spans in streams:
        tr = trace(Conversation(stream_name, audio, 0.0), engine, scorer)
        result.spoof_traces[stream_name] = tr
        if cfg.spoof_streams == "calls":
            for utt, start, end in spans:
                result.spoof_spans[utt] = (stream_name, start / SAMPLE_RATE_HZ, end / SAMPLE_RATE_HZ)
        _score_utterances(tr, spans, window_s, result.spoof, result.unscored)
        if on_progress:
            on_progress(len(spans))
    return result


def _score_utterances(
    tr: Trace,
    spans: list[tuple[str, int, int]],
    window_s: float,
    scores: dict[str, float],
    unscored: list[str],
) -> None:
    """Each utterance's score: the mean of the scored windows whose midpoint falls inside it.

    A window belongs to the utterance under the middle of the audio it holds (a
    stream shorter than a window is one padded window ending at its end, so
    every window of a stream of one utterance is that utterance's)."""
    scored = [((max(0.0, t_end - window_s) + t_end) / 2, s) for t_end, s, _ in tr.windows if s is not None]
    for utt, start, end in spans:
        inside = [s for mid, s in scored if start / SAMPLE_RATE_HZ <= mid < end / SAMPLE_RATE_HZ]
        if inside:
            scores[utt] = float(np.mean(inside))
        else:
            unscored.append(utt)


def audio_digest(utts: list[Utterance]) -> str:
    """SHA-256 over every utterance's ID and audio bytes: a cache key that a
    rebuilt corpus (same IDs, new audio) cannot match by accident. Reading
    the files costs far less than scoring them."""
    import hashlib

    digest = hashlib.sha256()
    for u in utts:
        digest.update(u.utt.encode() + b"\0" + hashlib.sha256(u.path.read_bytes()).digest())
    return digest.hexdigest()


def cached_variant(
    cache: Path | None, key: dict[str, Any], compute: Callable[[], VariantResult]
) -> VariantResult:
    """``compute()``, or its earlier result for the same ``key`` (model file hash, utterances,
    engine settings) from ``cache``: the baseline need not be re-scored on every run."""
    import hashlib
    import json
    import pickle

    if cache is None:
        return compute()
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
    path = cache / f"variant-{digest}.pkl"
    if path.is_file():
        log.info("%s: traces reused from %s", key.get("name"), path)
        with path.open("rb") as fh:
            result: VariantResult = pickle.load(fh)
        result.name = str(key.get("name", result.name))
        return result
    result = compute()
    cache.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    with tmp.open("wb") as fh:
        pickle.dump(result, fh)
    tmp.replace(path)
    return result


def _eer_percent(genuine: list[float], spoof: list[float]) -> float | None:
    if not genuine or not spoof:
        return None
    return 100 * eer(np.array(genuine), np.array(spoof))[0]


def _balanced_eer_percent(
    genuine_by: dict[str, list[float]], spoof_by: dict[str, list[float]]
) -> float | None:
    """Every genuine corpus and every spoof system weighing the same."""
    if not any(genuine_by.values()) or not any(spoof_by.values()):
        return None

    def flat(by: dict[str, list[float]]) -> tuple[Array, list[str]]:
        return np.array([v for vs in by.values() for v in vs]), [g for g, vs in by.items() for _ in vs]

    return 100 * balanced_eer(*flat(genuine_by), *flat(spoof_by))


def false_alerts_per_hour(traces: list[Trace], policy: PolicyConfig) -> float:
    return measure(traces, policy).false_alerts_per_hour


def spoof_stream_of(result: VariantResult, utt: str) -> str:
    """A spoof utterance's stream: its key in ``spoof_traces``."""
    return result.spoof_spans[utt][0] if utt in result.spoof_spans else utt


def operating_point(
    result: VariantResult, base: PolicyConfig, utts: list[Utterance], cfg: SuiteConfig, brief: bool = False
) -> dict[str, Any]:
    """Highest enter threshold meeting the false-alert target; detection there, overall and per system.

    The search is ``calibrate bonafide``'s (:func:`bonafide_threshold`): every
    level where the alerts change is tried, so the threshold is the highest that
    meets the target on these streams, not the nearest point of a grid below
    it (with under an hour of genuine streams the target allows no false alert
    at all, and a grid step there can cost every detection). ``brief`` (a
    point of the curve): no ``limited_by``, and no warning when there is no
    operating point (the main one gives it)."""
    try:
        threshold, fa = bonafide_threshold(result.genuine_traces, base, cfg.target_false_alerts_per_hour)
    except CalibrationError as exc:
        # e.g. no genuine stream long enough to raise an alert: every threshold
        # would "meet" the target, so there is no operating point to report,
        # but the EERs above it still stand.
        if not brief:  # said once per model, not once per point of the curve
            log.warning("%s: no live operating point: %s", result.name, exc)
        return {
            "enter_threshold": None,
            "detection_rate": None,
            "detection_by_system": {},
            "detection_rate_any": None,
            "detection_any_by_system": {},
            "false_alerts_per_hour": None,
            "limited_by": [],
            "none_because": str(exc),
        }
    chosen = base.with_band(threshold)
    return {
        "enter_threshold": chosen.enter_threshold,
        **_detection(result, chosen, utts, cfg),
        "false_alerts_per_hour": fa,
        # The genuine moments that keep the threshold from going higher: with
        # under an hour of genuine streams, often a single one decides every
        # detection figure above.
        "limited_by": []
        if brief
        else [
            {"stream": name, "t_s": t} for name, t in limiting_alerts(result.genuine_traces, base, threshold)
        ],
    }


def _detection(
    result: VariantResult, policy: PolicyConfig, utts: list[Utterance], cfg: SuiteConfig
) -> dict[str, Any]:
    """Per spoof stream (a clip, or a call): alerted within ``detect_within_s`` of its start, at any time."""
    system_of = {spoof_stream_of(result, u.utt): u.system for u in utts if u.label == "spoof"}
    by_system: dict[str, list[bool]] = defaultdict(list)
    by_system_any: dict[str, list[bool]] = defaultdict(list)
    first_alerts: list[float] = []
    ready: list[float | None] = []
    for stream, system in sorted(system_of.items()):
        tr = result.spoof_traces[stream]
        starts = replay(tr, policy)
        by_system[system].append(any(t <= cfg.detect_within_s for t in starts))
        by_system_any[system].append(bool(starts))
        first_alerts += starts[:1]
        # An alert needs ``min_alert_windows`` scored windows, so a stream shorter
        # than a window plus a hop (or mostly gated) can never raise one: how many
        # could at all bounds every detection rate from above.
        ready.append(alert_ready_s(tr, policy))
    every = [d for v in by_system.values() for d in v]
    every_any = [d for v in by_system_any.values() for d in v]
    can_alert_within = sum(r is not None and r <= cfg.detect_within_s for r in ready)
    within: dict[str, Any] = {
        "detection_rate": float(np.mean(every)) if every else None,
        "detection_by_system": {s: float(np.mean(v)) for s, v in sorted(by_system.items())},
    }
    if every and not can_alert_within:
        # Not a 0 %: no threshold could do better, so the figure would say
        # nothing about the model (a 4.04 s window and a 2-window minimum at a
        # 1 s hop alert 5.04 s into a stream at the earliest).
        soonest = min((r for r in ready if r is not None), default=None)
        reason = (
            f"no spoof stream has the {policy.min_alert_windows} scored windows an alert needs"
            if soonest is None
            else f"an alert needs {policy.min_alert_windows} scored windows, so it comes {soonest:.2f} s into "
            f"a spoof stream at the earliest, after the {cfg.detect_within_s:g} s limit: use a shorter hop"
        )
        within = {"detection_rate": None, "detection_by_system": {}, "detection_none_because": reason}
    return {
        **within,
        # Alerted at any time in the stream.
        "detection_rate_any": float(np.mean(every_any)) if every_any else None,
        "detection_any_by_system": {s: float(np.mean(v)) for s, v in sorted(by_system_any.items())},
        "median_first_alert_s": float(np.median(first_alerts)) if first_alerts else None,
        "spoof_stream_count": len(ready),
        "spoof_streams_can_alert": sum(r is not None for r in ready),
        "spoof_streams_can_alert_within": can_alert_within,
    }


def earliest_alert_s(engine: Engine, policy: PolicyConfig) -> float:
    """Seconds into any stream before which ``engine`` with ``policy`` cannot
    alert: the end of its ``min_alert_windows``-th window."""
    w = engine.windower
    return (w.window_samples + (policy.min_alert_windows - 1) * w.hop_samples) / SAMPLE_RATE_HZ


def alert_ready_s(tr: Trace, policy: PolicyConfig) -> float | None:
    """When the stream's ``min_alert_windows``-th scored window ends: the
    earliest an alert could start in it, at any threshold (None: never)."""
    scored = [t for t, score, _ in tr.windows if score is not None]
    return scored[policy.min_alert_windows - 1] if len(scored) >= policy.min_alert_windows else None


def summarise(
    result: VariantResult, utts: list[Utterance], policy: PolicyConfig, cfg: SuiteConfig
) -> dict[str, Any]:
    gen = list(result.genuine.values())
    spoof_by: dict[str, list[float]] = defaultdict(list)
    kind_by: dict[str, list[float]] = defaultdict(list)
    gen_by: dict[str, list[float]] = defaultdict(list)
    for u in utts:
        if u.label == "spoof" and u.utt in result.spoof:
            spoof_by[u.system].append(result.spoof[u.utt])
            kind_by[u.kind].append(result.spoof[u.utt])
        elif u.label == "bonafide" and u.utt in result.genuine:
            gen_by[u.corpus].append(result.genuine[u.utt])
    spoof = [s for v in spoof_by.values() for s in v]
    if result.genuine_traces:  # said once per model, not at every operating point searched
        warn_about_genuine(result.genuine_traces, policy, result.name)
    shipped = {
        "enter_threshold": policy.enter_threshold,
        "false_alerts_per_hour": false_alerts_per_hour(result.genuine_traces, policy),
        **_detection(result, policy, utts, cfg),
    }
    return {
        "model": result.name,
        "n_genuine": len(gen),
        "n_spoof": len(spoof),
        "n_unscored": len(result.unscored),
        "genuine_stream_hours": sum(tr.duration_s for tr in result.genuine_traces) / 3600,
        "pooled_eer_percent": _eer_percent(gen, spoof),
        "balanced_eer_percent": _balanced_eer_percent(gen_by, spoof_by),
        "eer_by_system": {
            s: {"n": len(v), "eer_percent": _eer_percent(gen, v)} for s, v in sorted(spoof_by.items())
        },
        "eer_by_kind": {
            k: {"n": len(v), "eer_percent": _eer_percent(gen, v)} for k, v in sorted(kind_by.items())
        },
        "eer_by_genuine_corpus": {
            c: {"n": len(v), "eer_percent": _eer_percent(v, spoof)} for c, v in sorted(gen_by.items())
        },
        "at_target": operating_point(result, policy, utts, cfg),
        "operating_curve": [
            _curve_point(result, policy, utts, cfg, rate) for rate in cfg.curve_false_alerts_per_hour
        ],
        "at_shipped_threshold": shipped,
    }


def _curve_point(
    result: VariantResult, policy: PolicyConfig, utts: list[Utterance], cfg: SuiteConfig, rate: float
) -> dict[str, Any]:
    """The operating point at another false-alert target, in brief."""
    point = operating_point(
        result, policy, utts, dataclasses.replace(cfg, target_false_alerts_per_hour=rate), brief=True
    )
    keep = ("enter_threshold", "false_alerts_per_hour", "detection_rate", "detection_rate_any")
    return {"target_false_alerts_per_hour": rate, **{k: point[k] for k in keep}}


def add_intervals(
    summaries: list[dict[str, Any]],
    results: list[VariantResult],
    utts: list[Utterance],
    boot: BootstrapConfig,
) -> None:
    """Put a bootstrap interval on each variant's pooled and balanced EERs
    (``pooled_eer_bootstrap``, ``balanced_eer_bootstrap``) and, when the first
    variant is the official model, on each other variant's difference to it.
    Only utterances every variant scored take part, so that the comparison is
    paired."""
    if boot.draws == 0 or not results:
        return
    scored = [
        u for u in utts if all(u.utt in (r.genuine if u.label == "bonafide" else r.spoof) for r in results)
    ]
    samples = [
        Sample(u.label == "bonafide", u.corpus if u.label == "bonafide" else u.system, u.clip or u.utt)
        for u in scored
    ]
    if not any(s.bonafide for s in samples) or all(s.bonafide for s in samples):
        log.warning("no bootstrap interval: the variants share no scored utterances of both classes")
        return
    scores = {
        r.name: np.array([(r.genuine if u.label == "bonafide" else r.spoof)[u.utt] for u in scored])
        for r in results
    }
    reference = results[0].name if results[0].name == "official" else None
    for key, balanced in (("pooled_eer_bootstrap", False), ("balanced_eer_bootstrap", True)):
        report = compare_eers(samples, scores, boot, reference, balanced=balanced)
        for summary, result in zip(summaries, results, strict=True):
            summary[key] = {
                **report[result.name],
                "level": boot.level,
                "draws": boot.draws,
                "systems_resampled": boot.resample_systems,
            }
