"""The open-data corpus recipe (``configs/data/open.toml``): its dataclasses and a
strictly typed loader (every field checked against its type and range on load)."""

from __future__ import annotations

import math
import os
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spoofwatch.errors import ConfigError
from spoofwatch.paths import DEFAULT_SHARED, SHARED_ENV

from .channel import ChannelConfig

SPLITS = ("train", "dev", "test")
#: Clips shorter than this (s) are left out of the corpus.
MIN_SECONDS = 0.5
#: A subset's name is its protocol's file stem: one plain file name, so that it
#: can neither leave ``protocols/`` nor need a folder there.
SUBSET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


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

    def __post_init__(self) -> None:
        # Configs are also made with dataclasses.replace: the names are checked
        # here too, so that none reaches write_outputs after hours of building.
        for name in self.subsets:
            check_subset_name(name, f"subsets.{name}")


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


def check_subset_name(name: str, where: str) -> None:
    """A subset is written to ``protocols/<name>.txt``: a split's name would
    overwrite that split's protocol (held-out test clips listed as train), and
    a path would write outside the corpus or into a folder that is not there."""
    if not SUBSET_NAME.fullmatch(name) or name.lower() in SPLITS:
        raise ConfigError(
            f"{where}: expected a subset name of letters, digits, '_', '.' and '-' (starting with a "
            f"letter or digit) other than {', '.join(SPLITS)}, got {name!r}"
        )


def _subsets(table: Any, where: str) -> dict[str, tuple[str, int]]:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table, got {table!r}")
    out = {}
    for name, value in table.items():
        check_subset_name(name, f"{where}.{name}")
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
    """Parse a corpus TOML. ``shared`` is the file's ``shared`` (relative to the
    file) when it sets one, else ``$SPOOFWATCH_SHARED``, else :data:`DEFAULT_SHARED`."""
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read corpus config: {exc}") from None
    env = os.environ.get(SHARED_ENV)
    if "shared" in data:  # what the file says wins over the environment's default
        value = data.pop("shared")
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{path}: shared: expected a folder path, got {value!r}")
        shared = path.parent / value
    else:
        shared = Path(env) if env else DEFAULT_SHARED
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
