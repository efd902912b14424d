"""The open-data corpus plan: every clean source utterance (files from ``../shared``,
extra manifests, locally generated speech) and its leave-systems-out split.

The plan is a pure function of the config and the source folders.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from spoofwatch.audio import audio_files
from spoofwatch.calibration.protocol import LABELS
from spoofwatch.errors import ConfigError, DatasetError
from spoofwatch.paths import SHARED_ENV

from .corpus_config import CorpusConfig, GenerateConfig, SplitConfig
from .manifest import MANIFEST_COLUMNS, SPOOF_KINDS

KINDS = ("genuine", *SPOOF_KINDS)
SHARED_REPO = "shared/speech"
LA_REPO = "shared/asvspoof2019_la"
#: The resynthesis generators (of genuine clips): a name [splits] may hold out
#: even when the config makes none of its clips.
RESYNTH_GENERATORS = ("world", "griffin-lim")
ESPEAK_GENERATOR = "espeak-ng"
#: Generator (and system) names of festival and Piper voices start so.
FESTIVAL_PREFIX = "festival-"
PIPER_PREFIX = "piper-"
#: How many names an error lists before "... (N more)".
LISTED_NAMES = 12


def abbreviated(names: Iterable[str], limit: int = LISTED_NAMES) -> str:
    """``names`` sorted, quoted and comma-separated, at most ``limit`` of them."""
    ordered = sorted(set(names))
    shown = ", ".join(repr(n) for n in ordered[:limit])
    return shown + (f", ... ({len(ordered) - limit} more)" if len(ordered) > limit else "") or "none"


def _missing_files(where: Path, rows: list[tuple[int, Path]]) -> None:
    """Refuse a source list that names audio files that are not there, all of
    them at once and before anything is built (the build met them one by one,
    hours in)."""
    missing = [(n, f) for n, f in rows if not f.is_file()]
    if missing:
        shown = "; ".join(f"line {n}: {f}" for n, f in missing[:LISTED_NAMES])
        more = f"; ... ({len(missing) - LISTED_NAMES} more)" if len(missing) > LISTED_NAMES else ""
        raise DatasetError(
            f"{where}: {len(missing)} row(s) name audio files that do not exist ({shown}{more}); "
            "expected paths to existing files, relative to the list's folder"
        )


@dataclass(frozen=True)
class Item:
    """One clean source utterance (existing file or generated), before channel copies."""

    key: str  # stable identity, seeds every random choice for this item
    label: str  # bonafide | spoof
    kind: str  # one of KINDS
    system: str  # "-" for genuine
    corpus: str
    speaker: str
    source_repo: str
    generator: str  # "" for existing files
    source: str  # a path, or "generator:arguments"
    split: str = ""
    params: tuple[Any, ...] = ()

    @property
    def base_id(self) -> str:
        return "OC_" + hashlib.sha1(self.key.encode()).hexdigest()[:12]


def protocol_token(text: str) -> str:
    """``text`` as one whitespace-free token of an LA-format protocol line."""
    return re.sub(r"[^A-Za-z0-9._+()-]+", "_", text.strip()) or "_"


def _demo_items(manifest: Path, key_prefix: str = "tts_demos") -> list[Item]:
    """Items of a manifest in the ``tts_demos`` format (paths relative to its folder)."""
    items = []
    files: list[tuple[int, Path]] = []
    root = manifest.parent
    try:
        with manifest.open(encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
    except OSError as exc:
        raise DatasetError(f"{manifest}: cannot read the manifest: {exc}") from None
    for n, row in enumerate(rows, start=2):
        missing = [c for c in MANIFEST_COLUMNS if not row.get(c)]
        if missing:
            raise DatasetError(
                f"{manifest}:{n}: empty or missing column(s) {missing}; expected {MANIFEST_COLUMNS}"
            )
        genuine = row["label"] == "bonafide"
        if row["label"] not in LABELS or not (genuine or row["kind"] in SPOOF_KINDS):
            raise DatasetError(
                f"{manifest}:{n}: label {row['label']!r} / kind {row['kind']!r}; expected label "
                f"bonafide, or spoof with a kind in {SPOOF_KINDS}"
            )
        who = row["speaker_or_corpus"]
        files.append((n, root / row["path"]))
        items.append(
            Item(
                key=f"{key_prefix}/{row['path']}",
                label=row["label"],
                kind="genuine" if genuine else row["kind"],
                system="-" if genuine else row["system"],
                corpus=who,
                speaker=protocol_token(f"{row['source_repo'].split('/')[0]}-{who}"),
                source_repo=row["source_repo"],
                generator="",
                source=str(root / row["path"]),
            )
        )
    _missing_files(manifest, files)
    return items


def _speech_items(root: Path) -> list[Item]:
    specs: list[tuple[str, str, str, str, str, Callable[[Path], str]]] = [
        # (folder, label, kind, system, corpus, speaker of a file)
        (
            "bonafide/librispeech_test-other",
            "bonafide",
            "genuine",
            "-",
            "LibriSpeech test-other",
            lambda p: "LS" + p.name.split("-")[0],
        ),
        ("bonafide/ljspeech", "bonafide", "genuine", "-", "LJSpeech", lambda p: "LJ"),
        ("bonafide/vctk", "bonafide", "genuine", "-", "VCTK", lambda p: p.name.split("_")[0]),
        (
            "spoof/nii_nsf",
            "spoof",
            "vocoder",
            "NII-NSF",
            "CMU ARCTIC",
            lambda p: "arctic-" + p.stem.split("_")[-2],
        ),
        (
            "pairs/nii_wave_replacement/real",
            "bonafide",
            "genuine",
            "-",
            "NII-NSF-source",
            lambda p: "nsfpair",
        ),
        (
            "pairs/nii_wave_replacement/vocoded",
            "spoof",
            "vocoder",
            "NII-NSF",
            "NII-NSF-source",
            lambda p: "nsfpair",
        ),
    ]
    items = []
    for folder, label, kind, system, corpus, speaker in specs:
        for p in audio_files(root / folder, recursive=False):
            items.append(
                Item(
                    f"speech/{folder}/{p.name}",
                    label,
                    kind,
                    system,
                    corpus,
                    speaker(p),
                    SHARED_REPO,
                    "",
                    str(p),
                )
            )
    return items


def _la_items(root: Path) -> list[Item]:
    items = []
    with (root / "clips.tsv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    _missing_files(root / "clips.tsv", [(n, root / row["file"]) for n, row in enumerate(rows, start=2)])
    for row in rows:
        genuine = row["label"] == "bonafide"
        items.append(
            Item(
                f"la/{row['file']}",
                row["label"],
                "genuine" if genuine else "tts",
                "-" if genuine else f"LA-{row['attack_id']}",
                "ASVspoof2019 LA",
                row["speaker"],
                LA_REPO,
                "",
                str(root / row["file"]),
            )
        )
    return items


def festival_name(voice: str) -> str:
    return FESTIVAL_PREFIX + voice.replace("cmu_us_", "").replace("_arctic", "").replace("_", "-")


def piper_name(package: str) -> str:
    return PIPER_PREFIX + package.split("_")[0]


def _split_of(item: Item, cfg: SplitConfig, test_systems: set[str]) -> str:
    if (
        item.source_repo in cfg.test_repos
        or item.system in test_systems
        or item.generator in cfg.test_generators
        or item.corpus in cfg.test_corpora
    ):
        return "test"
    return "dev" if item.source_repo in cfg.dev_repos else "train"


def _tts_items(gen: GenerateConfig) -> list[Item]:
    items = []
    for i, text in enumerate(gen.sentences):
        for voice in gen.espeak_voices:
            items.append(
                Item(
                    f"espeak/{voice}/{i}",
                    "spoof",
                    "tts",
                    f"espeak-ng-{voice}",
                    "espeak-ng",
                    protocol_token(f"espeak-{voice}"),
                    "local",
                    ESPEAK_GENERATOR,
                    f"espeak:{voice}",
                    params=(text, voice),
                )
            )
        for voice in gen.festival_voices:
            name = festival_name(voice)
            items.append(
                Item(
                    f"festival/{voice}/{i}",
                    "spoof",
                    "tts",
                    name,
                    "festival",
                    name,
                    "local",
                    name,
                    f"festival:{voice}",
                    params=(text, voice),
                )
            )
        for package in gen.piper_voices:
            name = piper_name(package)
            for j, (length, noise) in enumerate(gen.piper_settings):
                items.append(
                    Item(
                        f"piper/{package}/{i}/{j}",
                        "spoof",
                        "tts",
                        name,
                        "piper",
                        name,
                        "local",
                        name,
                        f"piper:{package}",
                        params=(text, package, length, noise),
                    )
                )
    return items


def plan_corpus(cfg: CorpusConfig) -> list[Item]:
    """Every clean item with its split; resynthesis sources are drawn from genuine items of the split they land in."""
    shared = cfg.shared / "data"
    for need in (
        shared / "tts_demos" / "manifest.tsv",
        shared / "speech",
        shared / "asvspoof2019_la" / "clips.tsv",
    ):
        if not need.exists():
            raise DatasetError(
                f"{need}: not found (expected the shared data folder {cfg.shared}: the config's "
                f"`shared`, else ${SHARED_ENV})"
            )
    for manifest in cfg.extra_manifests:
        if not manifest.is_file():
            raise DatasetError(f"{manifest}: not found (an extra_manifests entry of the corpus config)")
    base = (
        _demo_items(shared / "tts_demos" / "manifest.tsv")
        + _speech_items(shared / "speech")
        + _la_items(shared / "asvspoof2019_la")
    )
    extra = [
        i
        for manifest in cfg.extra_manifests
        for i in _demo_items(manifest, key_prefix=f"extra/{manifest.parent.name}")
    ]
    test_systems = set(cfg.splits.test_systems) | {
        i.system for i in base + extra if i.label == "spoof" and i.source_repo in cfg.splits.test_repos
    }
    gen = cfg.generate
    items = [replace(i, split=_split_of(i, cfg.splits, test_systems)) for i in base]
    tts = [replace(i, split=_split_of(i, cfg.splits, test_systems)) for i in _tts_items(gen)]
    # Locally made TTS that is not held out: every sixth sentence goes to dev.
    tts = [
        replace(i, split="dev") if i.split == "train" and int(i.key.split("/")[2]) % 6 == 5 else i
        for i in tts
    ]
    items += tts
    rng = np.random.default_rng(cfg.seed)
    world, griffin_lim = RESYNTH_GENERATORS
    for name, per_split, kind_args in (
        (world, gen.world_per_split, ()),
        (griffin_lim, gen.griffin_lim_per_split, (gen.griffin_lim_iterations,)),
    ):
        held_out = name in cfg.splits.test_generators
        for split in ("test",) if held_out else ("train", "dev"):
            pool = [i for i in items if i.label == "bonafide" and i.split == split]
            chosen = [pool[k] for k in sorted(rng.permutation(len(pool))[:per_split])]
            for src in chosen:
                items.append(
                    Item(
                        f"{name}/{src.key}",
                        "spoof",
                        "vocoder",
                        name,
                        src.corpus,
                        src.speaker,
                        "local",
                        name,
                        f"{name}:{src.source}",
                        split,
                        (src.source, *kind_args),
                    )
                )
    # Appended after the resynthesis draws, so that adding a manifest never
    # reshuffles the items (and the test split) of an existing plan. (The one
    # exception is deliberate: a manifest holding out a test repository's system
    # sends that system to test wherever it appears.)
    items += [replace(i, split=_split_of(i, cfg.splits, test_systems)) for i in extra]
    seen: set[str] = set()
    for i in items:
        if i.key in seen:
            raise DatasetError(f"{i.key}: listed twice (two extra manifests in folders of the same name?)")
        seen.add(i.key)
    _check_splits(cfg, items)
    return items


def _check_splits(cfg: CorpusConfig, items: list[Item]) -> None:
    """Every name in [splits] matches a source, and test and dev get clips: a
    misspelt held-out system was silently ignored (and went to training), and
    a recipe that held out nothing built a corpus without a test split."""
    gen = cfg.generate
    generators = {i.generator for i in items} | {*RESYNTH_GENERATORS, ESPEAK_GENERATOR}
    generators |= {festival_name(v) for v in gen.festival_voices} | {piper_name(p) for p in gen.piper_voices}
    known = {
        "repos": {i.source_repo for i in items},
        "systems": {i.system for i in items if i.label == "spoof"},
        "generators": generators - {""},
        "corpora": {i.corpus for i in items},
    }
    problems = []
    for field_name, names in sorted(asdict(cfg.splits).items()):
        kind = field_name.split("_", 1)[1]
        unknown = [n for n in names if n not in known[kind]]
        if unknown:
            problems.append(
                f"{field_name}: {abbreviated(unknown)} not among the sources' {kind} "
                f"(known: {abbreviated(known[kind])})"
            )
    if problems:
        raise ConfigError(f"[splits]: {'; '.join(problems)}")
    for split, expected in (
        ("test", "test_repos, test_systems, test_generators or test_corpora to name sources"),
        ("dev", "dev_repos to name source repositories (or sentences / world_per_split to make dev clips)"),
    ):
        if not any(i.split == split for i in items):
            raise ConfigError(f"the {split} split of this corpus would be empty: expected {expected}")
    dev_labels = {i.label for i in items if i.split == "dev"}
    if dev_labels != set(LABELS):
        # Training measures the dev EER after every epoch, which needs both
        # classes: `spoofwatch train` refused such a corpus only once it was built.
        raise ConfigError(
            f"the dev split of this corpus would hold only {', '.join(sorted(dev_labels))} clips: expected "
            "bona fide and spoof ones (dev_repos naming a repository of each class, or sentences / "
            "world_per_split / griffin_lim_per_split to make spoof dev clips from its genuine ones)"
        )
    check_disjoint(items, cfg.splits)


def check_disjoint(items: Iterable[Item], cfg: SplitConfig) -> None:
    """The leave-systems-out promise: no test system in train, no test
    repository in train or dev. Checked on the plan, before the first clip
    is built, and again before any protocol is written."""
    items = list(items)

    def spoof_systems(split: str) -> set[str]:
        return {i.system for i in items if i.split == split and i.label == "spoof"}

    leaks = spoof_systems("test") & spoof_systems("train")
    repos = {i.source_repo for i in items if i.split in ("train", "dev")} & set(cfg.test_repos)
    problems = []
    if leaks:
        where = {i.corpus for i in items if i.split == "train" and i.system in leaks}
        problems.append(f"test systems {sorted(leaks)} into train (its clips from {abbreviated(where)})")
    if repos:
        problems.append(f"test repositories {sorted(repos)} into train or dev")
    if problems:
        raise DatasetError(
            f"corpus split leaks {' and '.join(problems)}: expected every clip of a held-out system or "
            "repository in test; name the system in [splits] test_systems to hold out all of its clips"
        )
