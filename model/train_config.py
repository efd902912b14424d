"""Training configuration (TOML), validated into a dataclass."""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spoofwatch.constants import DEFAULT_MODEL
from spoofwatch.errors import ConfigError

from .augment import AugmentConfig
from .config import ModelConfig, load_model_config, model_config_from_dict


@dataclass(frozen=True)
class TrainConfig:
    train_protocol: Path
    train_audio_dir: Path
    dev_protocol: Path
    dev_audio_dir: Path
    out_dir: Path
    model: str = DEFAULT_MODEL
    epochs: int = 100
    batch_size: int = 24
    seed: int = 1234
    device: str = "auto"  # auto: CUDA if torch sees a GPU
    base_lr: float = 1e-4
    lr_min: float = 5e-6
    weight_decay: float = 1e-4
    #: Cross-entropy class weights (spoof, bona fide), as in the official recipe.
    class_weights: tuple[float, float] = (0.1, 0.9)
    keep_checkpoints: int = 5
    decode_workers: int = 4
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    #: Architecture changes (e.g. a reduced model for quick experiments).
    model_overrides: dict[str, Any] = field(default_factory=dict)

    def model_config(self) -> ModelConfig:
        """The shipped architecture of ``model`` with ``model_overrides`` applied and validated."""
        base = load_model_config(self.model)
        if not self.model_overrides:
            return base
        data = {k: _as_lists(v) for k, v in dataclasses.asdict(base).items()}
        unknown = sorted(set(self.model_overrides) - set(data))
        if unknown:
            raise ConfigError(f"model_overrides: unknown field(s) {', '.join(unknown)}")
        return model_config_from_dict({**data, **self.model_overrides})


def _as_lists(value: Any) -> Any:
    return [_as_lists(v) for v in value] if isinstance(value, tuple) else value


_PATHS = ("train_protocol", "train_audio_dir", "dev_protocol", "dev_audio_dir", "out_dir")


def load_train_config(path: Path) -> TrainConfig:
    """Parse ``path``; relative paths are resolved against the config's folder."""
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read training config: {exc}") from None
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown field(s) {', '.join(unknown)}")
    missing = [k for k in _PATHS if k not in data]
    if missing:
        raise ConfigError(f"{path}: missing required field(s) {', '.join(missing)}")
    _check_types(data, path)
    values = dict(data)
    for key in _PATHS:
        values[key] = (path.parent / str(data[key])).resolve()
    if "class_weights" in values:
        values["class_weights"] = tuple(float(v) for v in values["class_weights"])
    for key in _FLOATS:
        if key in values:
            values[key] = float(values[key])
    augment = values.pop("augment", {})
    try:
        values["augment"] = AugmentConfig(
            tuple(augment.get("names", ())), float(augment.get("probability", 0.5))
        )
        config = TrainConfig(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    _check_ranges(config, path)
    return config


#: Seeds numpy and torch take: unsigned, and torch's at most 64 bits
#: (``seed = -1`` passed the type check and failed in numpy at the first batch).
SEED_RANGE = (0, 2**64 - 1)
_INTS = ("epochs", "batch_size", "seed", "keep_checkpoints", "decode_workers")
_FLOATS = ("base_lr", "lr_min", "weight_decay")
_STRINGS = ("model", "device", *_PATHS)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_types(data: dict[str, Any], path: Path) -> None:
    """Each field of the TOML its own type, before anything is built from it:
    ``epochs = 1.5`` trained two epochs, ``epochs = "3"`` was a traceback, and
    a misspelt ``[augment]`` key was ignored."""

    def bad(key: str, expected: str) -> ConfigError:
        return ConfigError(f"{path}: {key}: expected {expected}, got {data[key]!r}")

    for key in _INTS:
        if key in data and (not isinstance(data[key], int) or isinstance(data[key], bool)):
            raise bad(key, "an integer")
    for key in _FLOATS:
        if key in data and not _is_number(data[key]):
            raise bad(key, "a number")
    for key in _STRINGS:
        if key in data and not isinstance(data[key], str):
            raise bad(key, "a string")
    weights = data.get("class_weights", [1.0, 1.0])
    if not (isinstance(weights, list) and len(weights) == 2 and all(_is_number(w) for w in weights)):
        raise bad("class_weights", "two numbers [spoof, bona fide]")
    if not isinstance(data.get("model_overrides", {}), dict):
        raise bad("model_overrides", "a table")
    augment = data.get("augment", {})
    if not isinstance(augment, dict):
        raise bad("augment", "a table with names and probability")
    unknown = sorted(set(augment) - {"names", "probability"})
    if unknown:
        raise ConfigError(
            f"{path}: [augment]: unknown key(s) {', '.join(unknown)}; expected names, probability"
        )
    names = augment.get("names", [])
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise ConfigError(f"{path}: [augment].names: expected a list of names, got {names!r}")
    if "probability" in augment and not _is_number(augment["probability"]):
        raise ConfigError(f"{path}: [augment].probability: expected a number, got {augment['probability']!r}")


def _check_ranges(config: TrainConfig, path: Path) -> None:
    """Every numeric field in range, at load: a bad value fails before any data is read."""
    finite = all(
        math.isfinite(v) for v in (config.base_lr, config.lr_min, config.weight_decay, *config.class_weights)
    )
    checks = (
        ("epochs", config.epochs >= 1, ">= 1"),
        (
            "seed",
            SEED_RANGE[0] <= config.seed <= SEED_RANGE[1],
            f"an integer in [{SEED_RANGE[0]}, 2**64 - 1]",
        ),
        ("batch_size", config.batch_size >= 1, ">= 1"),
        ("keep_checkpoints", config.keep_checkpoints >= 1, ">= 1"),
        ("decode_workers", config.decode_workers >= 1, ">= 1"),
        ("base_lr", finite and config.base_lr > 0, "a finite number > 0"),
        ("lr_min", finite and 0 <= config.lr_min <= config.base_lr, "a finite number in [0, base_lr]"),
        ("weight_decay", finite and config.weight_decay >= 0, "a finite number >= 0"),
        (
            "class_weights",
            finite and len(config.class_weights) == 2 and min(config.class_weights) > 0,
            "two positive finite numbers (spoof, bona fide)",
        ),
        ("device", config.device in ("auto", "cpu", "cuda"), "auto, cpu or cuda"),
    )
    for name, ok, expected in checks:
        if not ok:
            raise ConfigError(f"{path}: {name}: expected {expected}, got {getattr(config, name)!r}")
