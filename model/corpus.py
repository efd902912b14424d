"""The open-data corpus: the resumable build of a plan (:mod:`.corpus_plan`) from a
recipe (:mod:`.corpus_config`).

``iter_build(config, out, plan)`` then ``write_outputs(config, out, rows)`` write (``spoofwatch data build-corpus``)::

    out/flac/UTT.flac                       16 kHz mono, 16-bit
    out/protocols/{train,dev,test}.txt      LA format: SPEAKER UTT - SYSTEM|- bonafide|spoof
    out/metadata.tsv                        one row per utterance (see METADATA_COLUMNS)
    out/corpus.json                         counts per split, label and kind; the config used

The plan is a pure function of the config and the source folders, so a build
that was interrupted resumes by skipping every utterance whose files already
exist (each file is written to a temporary name and renamed). Every random
choice (channel chain, resynthesis phase) is seeded by the utterance's key.
One run at a time builds into an ``out``: it holds ``out/.spoofwatch.lock``
(:func:`spoofwatch.paths.lock_output`) while it builds.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import importlib.util
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from spoofwatch.audio import read_audio
from spoofwatch.constants import SAMPLE_RATE_HZ
from spoofwatch.errors import ConfigError, ModelError
from spoofwatch.paths import OUTPUT_LOCK_NAME, PARTIAL_SUFFIX, lock_output, partial_path
from spoofwatch.stamps import changed_settings, write_stamp

from .channel import available_codecs, random_channel
from .corpus_config import MIN_SECONDS, SPLITS, CorpusConfig
from .corpus_plan import (
    ESPEAK_GENERATOR,
    FESTIVAL_PREFIX,
    KINDS,
    PIPER_PREFIX,
    RESYNTH_GENERATORS,
    Item,
    abbreviated,
    check_disjoint,
    protocol_token,
)

log = logging.getLogger(__name__)
Wave = npt.NDArray[np.float32]
METADATA_COLUMNS = (
    "utt",
    "split",
    "label",
    "kind",
    "system",
    "corpus",
    "speaker",
    "source_repo",
    "generator",
    "source",
    "copy",
    "channel",
    "seconds",
)


@dataclass
class Row:
    item: Item
    utt: str
    copy: int
    channel: str
    seconds: float

    def to_tsv(self) -> list[str]:
        i = self.item
        return [
            self.utt,
            i.split,
            i.label,
            i.kind,
            i.system,
            i.corpus,
            i.speaker,
            i.source_repo,
            i.generator,
            i.source,
            str(self.copy),
            self.channel,
            f"{self.seconds:.3f}",
        ]


class Generators:
    """Lazily loaded generators (a Piper voice takes seconds to load)."""

    def __init__(self) -> None:
        self._piper: dict[str, Any] = {}

    def clean_audio(self, item: Item, seed: int) -> Wave:
        from . import synth

        if not item.generator:
            return read_audio(item.source)
        world, griffin_lim = RESYNTH_GENERATORS
        if item.generator == world:
            return synth.world_resynth(read_audio(item.params[0]))
        if item.generator == griffin_lim:
            return synth.griffin_lim(read_audio(item.params[0]), int(item.params[1]), seed)
        if item.generator == ESPEAK_GENERATOR:
            return synth.espeak(item.params[0], item.params[1])
        if item.generator.startswith(FESTIVAL_PREFIX):
            return synth.festival(item.params[0], item.params[1])
        if item.generator.startswith(PIPER_PREFIX):
            text, package, length, noise = item.params
            if package not in self._piper:
                self._piper[package] = synth.PiperSynth(package)
            return self._piper[package](text, float(length), float(noise))  # type: ignore[no-any-return]
        raise ConfigError(
            f"unknown generator {item.generator!r}: expected one of {', '.join(RESYNTH_GENERATORS)}, "
            f"{ESPEAK_GENERATOR}, {FESTIVAL_PREFIX}VOICE or {PIPER_PREFIX}VOICE"
        )


@contextlib.contextmanager
def lock_corpus(out: Path) -> Iterator[None]:
    """Hold ``out`` for a build, or refuse a second build into it: two builds
    with other seeds left one corpus of both runs' clips. Re-entrant: the
    command holds it from its stamp check to its outputs, and each step takes
    it too (for callers of the steps alone)."""
    release = lock_output(out / OUTPUT_LOCK_NAME, f"--out {out}")
    try:
        yield
    finally:
        release()


def _write_flac(path: Path, audio: Wave) -> None:
    import soundfile

    tmp = partial_path(path)
    soundfile.write(tmp, audio, SAMPLE_RATE_HZ, subtype="PCM_16", format="FLAC")
    tmp.replace(path)


def _item_seed(cfg: CorpusConfig, item: Item) -> np.random.Generator:
    digest = int(hashlib.sha1(item.key.encode()).hexdigest()[:15], 16)
    return np.random.default_rng([cfg.seed, digest])


def _sidecar(flac_dir: Path, utt: str) -> Path:
    return flac_dir / f"{utt}.json"


def build_item(
    cfg: CorpusConfig, item: Item, flac_dir: Path, gens: Generators, codecs: tuple[str, ...]
) -> list[Row]:
    """Write the clean copy and the channel copies of ``item`` (skipping those already written)."""
    utts = [f"{item.base_id}_c{k}" for k in range(cfg.augmented_copies + 1)]
    done = [_done_row(item, u, _sidecar(flac_dir, u)) for u in utts]
    done = [row if row is None or _clip_present(flac_dir, row.utt) else None for row in done]
    if all(row is not None for row in done):
        return [row for row in done if row is not None]
    rng = _item_seed(cfg, item)
    clean = gens.clean_audio(item, int(rng.integers(2**31)))[: int(cfg.max_seconds * SAMPLE_RATE_HZ)]
    if clean.size < MIN_SECONDS * SAMPLE_RATE_HZ or float(np.max(np.abs(clean))) == 0.0:
        log.warning("%s: shorter than %.1f s or silent; skipped", item.key, MIN_SECONDS)
        return []
    rows = []
    for k, utt in enumerate(utts):
        audio, tags = (clean, ["clean"]) if k == 0 else random_channel(clean, rng, cfg.channel, codecs)
        _write_flac(flac_dir / f"{utt}.flac", audio)
        row = Row(item, utt, k, "+".join(tags), audio.size / SAMPLE_RATE_HZ)
        # The sidecar is written last (whole, by a rename): it marks the utterance complete.
        sidecar = _sidecar(flac_dir, utt)
        tmp = partial_path(sidecar)
        tmp.write_text(json.dumps({"copy": k, "channel": row.channel, "seconds": row.seconds}))
        tmp.replace(sidecar)
        rows.append(row)
    return rows


def _clip_present(flac_dir: Path, utt: str) -> bool:
    """Whether the clip a sidecar marks done is still there: a clip deleted (or
    emptied) since was otherwise never built again, and stayed in the protocols."""
    clip = flac_dir / f"{utt}.flac"
    try:
        if clip.stat().st_size > 0:
            return True
    except OSError:
        pass
    log.warning("%s: missing or empty, though its sidecar marks it built; building it again", clip)
    return False


def _done_row(item: Item, utt: str, sidecar: Path) -> Row | None:
    """The row of an utterance an earlier run completed, or ``None`` (missing,
    or a sidecar an older build left cut short: built again)."""
    try:
        meta = json.loads(sidecar.read_text("utf-8"))
        return Row(item, utt, int(meta["copy"]), str(meta["channel"]), float(meta["seconds"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s: unreadable (%s); building %s again", sidecar, exc, utt)
        return None


#: What the clips depend on. Subsets (protocols only) and extra manifests
#: (appended, never reshuffling) may change between runs over one corpus.
_CLIP_SETTINGS = ("seed", "max_seconds", "augmented_copies", "splits", "generate", "channel")


def _clip_settings(cfg: CorpusConfig) -> dict[str, Any]:
    return {k: json.loads(json.dumps(asdict(cfg)[k], default=str)) for k in _CLIP_SETTINGS}


def _has_clips(out: Path) -> bool:
    """Whether ``out`` holds a completed utterance (its sidecar marks it so)."""
    flac_dir = out / "flac"
    return flac_dir.is_dir() and any(flac_dir.glob("*.json"))


def check_build_stamp(cfg: CorpusConfig, out: Path) -> None:
    """Resume a build only with the settings that made its clips: ``out/build.json``
    records them (:func:`write_build_stamp`), and a rerun with others would keep
    the old clips under the new settings' name. A stamp without clips (a run
    that stopped before building any) binds nothing. Only reads."""
    changed = changed_settings(out / "build.json", _clip_settings(cfg))
    if changed and _has_clips(out):
        raise ConfigError(
            f"{out} was built with other {', '.join(changed)} settings: its clips do not follow this "
            "config; build into a new --out (or delete it to start again)"
        )
    if changed:
        log.info("%s: no clips built yet; its build.json is replaced by this config's settings", out)
    elif changed is None and _has_clips(out):
        log.warning("%s: clips from a build without build.json; resuming as if its settings were these", out)


def write_build_stamp(cfg: CorpusConfig, out: Path) -> None:
    """Record the settings the clips are about to be built with; written only
    once the plan and its checks have passed (a run that failed there had
    locked the folder against the corrected config)."""
    with lock_corpus(out):
        write_stamp(out / "build.json", _clip_settings(cfg))


def check_generators(items: list[Item]) -> None:
    """Every local generator the plan uses is installed here, with every voice
    it names: checked before the first clip, since a bogus voice otherwise
    failed when the build reached it, hours in. One error names every bad voice
    and what is installed."""
    from . import synth

    def voices(match: Callable[[str], bool]) -> list[str]:
        return sorted({str(i.params[1]) for i in items if match(i.generator)})

    wanted = {
        "espeak_voices": voices(lambda g: g == ESPEAK_GENERATOR),
        "festival_voices": voices(lambda g: g.startswith(FESTIVAL_PREFIX)),
        "piper_voices": voices(lambda g: g.startswith(PIPER_PREFIX)),
    }
    problems = []
    if wanted["espeak_voices"]:
        languages, names, variants = synth.espeak_installed()

        def known(voice: str) -> bool:  # a voice, and optionally '+' and a variant
            base, _, variant = voice.partition("+")
            return base.lower() in names and (not variant or variant in variants)

        bad = [v for v in wanted["espeak_voices"] if not known(v)]
        if bad:
            problems.append(
                f"espeak_voices {abbreviated(bad)} are not installed (languages: {abbreviated(languages)}; "
                f"variants after '+': {abbreviated(variants)}; `espeak-ng --voices` lists them all)"
            )
    if wanted["festival_voices"]:
        installed = synth.festival_installed()
        bad = [v for v in wanted["festival_voices"] if v not in installed]
        if bad:
            problems.append(
                f"festival_voices {abbreviated(bad)} are not installed (installed: {abbreviated(installed)})"
            )
    for package in wanted["piper_voices"]:
        try:
            synth.piper_voice_files(package)
        except ModelError as exc:
            problems.append(
                f"piper_voices: {exc} (voice packages installed: {abbreviated(synth.piper_installed())})"
            )
    if problems:
        raise ConfigError(f"[generate]: {'; '.join(problems)}")
    if (
        any(i.generator == RESYNTH_GENERATORS[0] for i in items)
        and importlib.util.find_spec("pyworld") is None
    ):
        raise ModelError("world_per_split needs pyworld, which is not installed (pip install pyworld)")


def iter_build(cfg: CorpusConfig, out: Path, items: list[Item]) -> Iterator[list[Row]]:
    with lock_corpus(out):
        flac_dir = out / "flac"
        flac_dir.mkdir(parents=True, exist_ok=True)
        # Left by runs that died mid-write: no live run writes here while this one
        # holds the lock, and the utterances they belong to are built again.
        stale = list(flac_dir.glob(f"*{PARTIAL_SUFFIX}"))
        for path in stale:
            path.unlink(missing_ok=True)
        if stale:
            log.info("%s: removed %d partial file(s) of an earlier run", flac_dir, len(stale))
        gens = Generators()
        codecs = available_codecs(cfg.channel.codecs)
        for item in items:
            yield build_item(cfg, item, flac_dir, gens, codecs)


def protocol_lines(rows: list[Row], split: str) -> list[str]:
    """LA-format lines; the attack column carries the system name (no spaces)."""
    return [
        f"{r.item.speaker} {r.utt} - {protocol_token(r.item.system) if r.item.label == 'spoof' else '-'} {r.item.label}"
        for r in rows
        if r.item.split == split
    ]


def balanced_subset(rows: list[Row], n: int, seed: int) -> list[Row]:
    """``n`` rows, half genuine and half spoof (the odd one spoof); within a
    class, round-robin over systems (spoof) or genuine corpora, each group
    shuffled, so that no large system or corpus dominates a small training
    budget. Balance comes first: where a class has fewer rows than its half,
    both classes get as many as the smaller one has (fewer than ``n`` rows)."""
    rng = np.random.default_rng([seed, n])
    labels = ("bonafide", "spoof")
    smaller = min(sum(r.item.label == label for r in rows) for label in labels)
    chosen: list[Row] = []
    for label, want in zip(labels, (min(n // 2, smaller), min(n - n // 2, smaller)), strict=True):
        groups: dict[str, list[Row]] = {}
        for r in rows:
            if r.item.label == label:
                groups.setdefault(r.item.system if label == "spoof" else r.item.corpus, []).append(r)
        queues = [[g[i] for i in rng.permutation(len(g))] for _, g in sorted(groups.items())]
        picked: list[Row] = []
        while len(picked) < want and any(queues):
            for q in queues:
                if q and len(picked) < want:
                    picked.append(q.pop())
        chosen += picked
    return chosen


def write_outputs(cfg: CorpusConfig, out: Path, rows: list[Row]) -> dict[str, Any]:
    with lock_corpus(out):
        return _write_outputs(cfg, out, rows)


def _write_outputs(cfg: CorpusConfig, out: Path, rows: list[Row]) -> dict[str, Any]:
    # plan_corpus refused a leaking plan already; checked again before any
    # protocol is written, for rows that come from elsewhere.
    check_disjoint([r.item for r in rows], cfg.splits)
    (out / "protocols").mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        (out / "protocols" / f"{split}.txt").write_text(
            "\n".join(protocol_lines(rows, split)) + "\n", "utf-8"
        )
    for name, (split, n) in cfg.subsets.items():
        subset = balanced_subset([r for r in rows if r.item.split == split], n, cfg.seed)
        if len(subset) < n:
            got = Counter(r.item.label for r in subset)
            log.warning(
                "subset %s: %d of the %d %s utterances asked for (%d bona fide, %d spoof: the %s split "
                "has no more of one class, and the subset stays class-balanced)",
                name,
                len(subset),
                n,
                split,
                got["bonafide"],
                got["spoof"],
                split,
            )
        chosen = {r.utt for r in subset}
        lines = [line for line in protocol_lines(rows, split) if line.split()[1] in chosen]
        (out / "protocols" / f"{name}.txt").write_text("\n".join(lines) + "\n", "utf-8")
    with (out / "metadata.tsv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(METADATA_COLUMNS)
        writer.writerows(r.to_tsv() for r in rows)
    counts = Counter((r.item.split, r.item.kind) for r in rows)
    summary: dict[str, Any] = {
        split: {
            "utterances": sum(v for (s, _), v in counts.items() if s == split),
            "hours": round(sum(r.seconds for r in rows if r.item.split == split) / 3600, 3),
            "by_kind": {k: counts[(split, k)] for k in KINDS if counts[(split, k)]},
            "systems": sorted(
                {r.item.system for r in rows if r.item.split == split and r.item.label == "spoof"}
            ),
            "genuine_corpora": sorted(
                {r.item.corpus for r in rows if r.item.split == split and r.item.label == "bonafide"}
            ),
        }
        for split in SPLITS
    }
    summary["config"] = json.loads(json.dumps(asdict(cfg), default=str))
    (out / "corpus.json").write_text(json.dumps(summary, indent=1), "utf-8")
    return summary
