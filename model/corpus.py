"""The open-data corpus: plan, leave-systems-out splits, resumable build.

``build_corpus(config, out)`` writes::

    out/flac/UTT.flac                       16 kHz mono, 16-bit
    out/protocols/{train,dev,test}.txt      LA format: SPEAKER UTT - SYSTEM|- bonafide|spoof
    out/metadata.tsv                        one row per utterance (see METADATA_COLUMNS)
    out/corpus.json                         counts per split, label and kind; the config used

The plan is a pure function of the config and the source folders, so a build
that was interrupted resumes by skipping every utterance whose files already
exist (each file is written to a temporary name and renamed). Every random
choice (channel chain, resynthesis phase) is seeded by the utterance's key.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import re
import tomllib
import typing
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from spoofwatch.audio import audio_files, read_audio
from spoofwatch.calibration.protocol import LABELS
from spoofwatch.constants import SAMPLE_RATE_HZ
from spoofwatch.errors import ConfigError, DatasetError
from spoofwatch.stamps import changed_settings, write_stamp

from .channel import ChannelConfig, available_codecs, random_channel
from .manifest import MANIFEST_COLUMNS, SPOOF_KINDS

log = logging.getLogger(__name__)
Wave = npt.NDArray[np.float32]
SPLITS = ("train", "dev", "test")
KINDS = ("genuine", *SPOOF_KINDS)
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
SHARED_REPO = "shared/speech"
LA_REPO = "shared/asvspoof2019_la"
MIN_SECONDS = 0.5


@dataclass(frozen=True)
class SplitConfig:
    test_repos: tuple[str, ...] = ()
    test_systems: tuple[str, ...] = ()
    test_generators: tuple[str, ...] = ()
    test_corpora: tuple[str, ...] = ()
    dev_repos: tuple[str, ...] = ()


@dataclass(frozen=True)
class GenerateConfig:
    world_per_split: int = 0
    griffin_lim_per_split: int = 0
    griffin_lim_iterations: int = 32
    espeak_voices: tuple[str, ...] = ()
    festival_voices: tuple[str, ...] = ()
    piper_voices: tuple[str, ...] = ()
    piper_settings: tuple[tuple[float, float], ...] = ((1.0, 0.667),)
    sentences: tuple[str, ...] = ()


@dataclass(frozen=True)
class CorpusConfig:
    shared: Path
    seed: int = 0
    max_seconds: float = 10.0
    augmented_copies: int = 1
    splits: SplitConfig = field(default_factory=SplitConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    channel: ChannelConfig = field(default_factory=ChannelConfig)
    #: Extra protocols: name -> (split, utterances), class-balanced (see balanced_subset).
    subsets: dict[str, tuple[str, int]] = field(default_factory=dict)
    #: More audio in the ``tts_demos`` manifest format (your own genuine recordings,
    #: harvested demo pages); each manifest's paths are relative to its folder.
    extra_manifests: tuple[Path, ...] = ()


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _field_value(value: Any, hint: Any, where: str) -> Any:
    """``value`` from TOML checked against a config field's type (lists become
    tuples): a string where a list belongs would otherwise be read as a set
    of characters, and a held-out system could leak into training."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{where}: expected an integer >= 0, got {value!r}")
        return value
    if hint is float:
        if not _number(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_field_value(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if origin is tuple and args == (float, float):
        if not (isinstance(value, list) and len(value) == 2 and all(_number(v) for v in value)):
            raise ConfigError(f"{where}: expected a pair of numbers, got {value!r}")
        return (float(value[0]), float(value[1]))
    raise ConfigError(f"{where}: unsupported field type {hint}")  # a programming error


def _section(cls: Any, table: Any, where: str) -> Any:
    """A config dataclass from a TOML table, every field type-checked, unknown keys refused."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table, got {table!r}")
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(table) - set(hints))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; expected some of {', '.join(hints)}"
        )
    return cls(**{k: _field_value(v, hints[k], f"{where}.{k}") for k, v in table.items()})


def _subsets(table: Any, where: str) -> dict[str, tuple[str, int]]:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table, got {table!r}")
    out = {}
    for name, value in table.items():
        ok = (
            isinstance(value, list)
            and len(value) == 2
            and value[0] in SPLITS
            and isinstance(value[1], int)
            and not isinstance(value[1], bool)
            and value[1] >= 1
        )
        if not ok:
            raise ConfigError(
                f"{where}.{name}: expected [split, utterances] with split one of {', '.join(SPLITS)} "
                f"and utterances >= 1, got {value!r}"
            )
        out[name] = (str(value[0]), int(value[1]))
    return out


def load_corpus_config(path: Path) -> CorpusConfig:
    """Parse a corpus TOML; ``shared`` is relative to the file, and $SPOOFWATCH_SHARED overrides it."""
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read corpus config: {exc}") from None
    env = os.environ.get("SPOOFWATCH_SHARED")
    shared = Path(env) if env else (path.parent / str(data.pop("shared", "../shared")))
    data.pop("shared", None)
    extra = data.pop("extra_manifests", [])
    if not isinstance(extra, list) or not all(isinstance(e, str) for e in extra):
        raise ConfigError(f"{path}: extra_manifests must be a list of paths (got {extra!r})")
    top = {k: data.pop(k) for k in ("seed", "max_seconds", "augmented_copies") if k in data}
    checked = {
        k: _field_value(v, typing.get_type_hints(CorpusConfig)[k], f"{path}: {k}") for k, v in top.items()
    }
    if checked.get("max_seconds", 1.0) < MIN_SECONDS:
        raise ConfigError(f"{path}: max_seconds: expected >= {MIN_SECONDS}, got {checked['max_seconds']}")
    splits = _section(SplitConfig, data.pop("splits", {}), f"{path}: [splits]")
    generate = _section(GenerateConfig, data.pop("generate", {}), f"{path}: [generate]")
    channel = _section(ChannelConfig, data.pop("channel", {}), f"{path}: [channel]")
    subsets = _subsets(data.pop("subsets", {}), f"{path}: [subsets]")
    if data:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(data))}")
    return CorpusConfig(
        shared=shared.resolve(),
        splits=splits,
        generate=generate,
        channel=channel,
        subsets=subsets,
        extra_manifests=tuple((path.parent / e).resolve() for e in extra),
        **checked,
    )


# ---- the plan ----------------------------------------------------------------


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


def _clean(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+()-]+", "_", text.strip()) or "_"


def _demo_items(manifest: Path, key_prefix: str = "tts_demos") -> list[Item]:
    """Items of a manifest in the ``tts_demos`` format (paths relative to its folder)."""
    items = []
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
        items.append(
            Item(
                key=f"{key_prefix}/{row['path']}",
                label=row["label"],
                kind="genuine" if genuine else row["kind"],
                system="-" if genuine else row["system"],
                corpus=who,
                speaker=_clean(f"{row['source_repo'].split('/')[0]}-{who}"),
                source_repo=row["source_repo"],
                generator="",
                source=str(root / row["path"]),
            )
        )
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
        for row in csv.DictReader(fh, delimiter="\t"):
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
    return "festival-" + voice.replace("cmu_us_", "").replace("_arctic", "").replace("_", "-")


def piper_name(package: str) -> str:
    return "piper-" + package.split("_")[0]


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
                    _clean(f"espeak-{voice}"),
                    "local",
                    "espeak-ng",
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
            raise DatasetError(f"{need}: not found (expected the shared data folder; set SPOOFWATCH_SHARED)")
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
    for name, per_split, kind_args in (
        ("world", gen.world_per_split, ()),
        ("griffin-lim", gen.griffin_lim_per_split, (gen.griffin_lim_iterations,)),
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
    return items


# ---- the build ---------------------------------------------------------------


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
        if item.generator == "world":
            return synth.world_resynth(read_audio(item.params[0]))
        if item.generator == "griffin-lim":
            return synth.griffin_lim(read_audio(item.params[0]), int(item.params[1]), seed)
        if item.generator == "espeak-ng":
            return synth.espeak(item.params[0], item.params[1])
        if item.generator.startswith("festival-"):
            return synth.festival(item.params[0], item.params[1])
        if item.generator.startswith("piper-"):
            text, package, length, noise = item.params
            if package not in self._piper:
                self._piper[package] = synth.PiperSynth(package)
            return self._piper[package](text, float(length), float(noise))  # type: ignore[no-any-return]
        raise ConfigError(f"unknown generator {item.generator!r}")


def _write_flac(path: Path, audio: Wave) -> None:
    import soundfile

    tmp = path.with_name(f"{path.name}.{os.getpid()}.partial")
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
        tmp = sidecar.with_name(sidecar.name + ".partial")
        tmp.write_text(json.dumps({"copy": k, "channel": row.channel, "seconds": row.seconds}))
        tmp.replace(sidecar)
        rows.append(row)
    return rows


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


def check_build_stamp(cfg: CorpusConfig, out: Path) -> None:
    """Resume a build only with the settings that made its clips: ``out/build.json``
    records them, and a rerun with others would keep the old clips under the
    new settings' name. Written by the first run."""
    settings = {k: json.loads(json.dumps(asdict(cfg)[k], default=str)) for k in _CLIP_SETTINGS}
    stamp = out / "build.json"
    changed = changed_settings(stamp, settings)
    if changed:
        raise ConfigError(
            f"{out} was built with other {', '.join(changed)} settings: its clips do not follow this "
            "config; build into a new --out (or delete it to start again)"
        )
    if changed is not None:
        return
    if (out / "flac").is_dir() and any((out / "flac").iterdir()):
        log.warning("%s: clips from a build without build.json; resuming as if its settings were these", out)
    out.mkdir(parents=True, exist_ok=True)
    write_stamp(stamp, settings)


def iter_build(cfg: CorpusConfig, out: Path, items: list[Item]) -> Iterator[list[Row]]:
    flac_dir = out / "flac"
    flac_dir.mkdir(parents=True, exist_ok=True)
    gens = Generators()
    codecs = available_codecs(cfg.channel.codecs)
    for item in items:
        yield build_item(cfg, item, flac_dir, gens, codecs)


def protocol_lines(rows: list[Row], split: str) -> list[str]:
    """LA-format lines; the attack column carries the system name (no spaces)."""
    return [
        f"{r.item.speaker} {r.utt} - {_clean(r.item.system) if r.item.label == 'spoof' else '-'} {r.item.label}"
        for r in rows
        if r.item.split == split
    ]


def balanced_subset(rows: list[Row], n: int, seed: int) -> list[Row]:
    """``n`` rows, half genuine and half spoof; within a class, round-robin over
    systems (spoof) or genuine corpora, each group shuffled, so that no large
    system or corpus dominates a small training budget."""
    rng = np.random.default_rng([seed, n])
    chosen: list[Row] = []
    for label, want in (("bonafide", n // 2), ("spoof", n - n // 2)):
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
    (out / "protocols").mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        (out / "protocols" / f"{split}.txt").write_text(
            "\n".join(protocol_lines(rows, split)) + "\n", "utf-8"
        )
    for name, (split, n) in cfg.subsets.items():
        chosen = {r.utt for r in balanced_subset([r for r in rows if r.item.split == split], n, cfg.seed)}
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
    _check_disjoint(rows, cfg.splits)
    return summary


def _check_disjoint(rows: list[Row], cfg: SplitConfig) -> None:
    """The leave-systems-out promise: no test system, repository or genuine corpus in train."""

    def of(split: str, attr: str) -> set[str]:
        return {getattr(r.item, attr) for r in rows if r.item.split == split}

    def spoof_sys(split: str) -> set[str]:
        return {r.item.system for r in rows if r.item.split == split and r.item.label == "spoof"}

    leaks = spoof_sys("test") & spoof_sys("train")
    repos = (of("train", "source_repo") | of("dev", "source_repo")) & set(cfg.test_repos)
    if leaks or repos:
        raise DatasetError(
            f"corpus split leaks test systems {sorted(leaks)} or repositories {sorted(repos)} into train"
        )
