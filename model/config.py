"""Model architecture configuration, loaded from ``configs/models/<name>.toml``."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from typing import Any

from spoofwatch.constants import MODEL_NAMES
from spoofwatch.errors import ConfigError, InputError


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of one AASIST variant (values from the official .conf files)."""

    #: Short model name, e.g. ``"aasist-l"``.
    name: str
    #: Length of the sinc filters before they are forced odd (128 -> 129 taps).
    first_conv: int
    #: Number of sinc filters (the spectral axis of the encoder input).
    sinc_channels: int
    #: Residual block channel pairs ``[in, out]``, one per encoder stage group.
    filts: tuple[tuple[int, int], ...]
    #: Graph attention widths: ``[GAT-S/T output, heterogeneous GAT output]``.
    gat_dims: tuple[int, int]
    #: Node keep ratios for the graph pooling layers: GAT-S, GAT-T, the
    #: heterogeneous layers; the fourth is in the official configs but, as in
    #: the official model, read by no layer.
    pool_ratios: tuple[float, float, float, float]
    #: Attention temperatures for GAT-S, GAT-T and the heterogeneous layers
    #: (the fourth unread, as above).
    temperatures: tuple[float, float, float, float]
    #: Official weights file name, e.g. ``"AASIST-L.pth"``.
    weights_file: str
    #: Pinned SHA-256 of the official weights.
    weights_sha256: str
    #: Parameter count of the architecture (tests/test_weights.py checks the built model against it).
    n_parameters: int


def _as_tuple(value: Any, field: str, length: int | None = None) -> tuple[Any, ...]:
    if not isinstance(value, list) or (length is not None and len(value) != length):
        want = f"a list of {length}" if length is not None else "a list"
        raise ConfigError(f"model config field {field!r}: expected {want}, got {value!r}")
    return tuple(value)


def model_config_from_dict(data: dict[str, Any]) -> ModelConfig:
    """Validate a parsed TOML table and build a :class:`ModelConfig`."""
    try:
        pairs = _as_tuple(data["filts"], "filts", 4)
        if any(not isinstance(pair, list) or len(pair) != 2 for pair in pairs):
            raise ConfigError("model config field 'filts': expected four [in, out] pairs")
        filts = tuple((int(a), int(b)) for a, b in pairs)
        return ModelConfig(
            name=str(data["name"]),
            first_conv=int(data["first_conv"]),
            sinc_channels=int(data["sinc_channels"]),
            filts=filts,
            gat_dims=tuple(int(v) for v in _as_tuple(data["gat_dims"], "gat_dims", 2)),  # type: ignore[arg-type]
            pool_ratios=tuple(float(v) for v in _as_tuple(data["pool_ratios"], "pool_ratios", 4)),  # type: ignore[arg-type]
            temperatures=tuple(float(v) for v in _as_tuple(data["temperatures"], "temperatures", 4)),  # type: ignore[arg-type]
            weights_file=str(data["weights_file"]),
            weights_sha256=str(data["weights_sha256"]).lower(),
            n_parameters=int(data["n_parameters"]),
        )
    except KeyError as exc:
        raise ConfigError(f"model config is missing the field {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        # int("x") / float([...]) name the value, not the field: say which fields are read.
        raise ConfigError(
            f"model config has a value of the wrong type ({exc}): expected integers for the sizes "
            "(first_conv, sinc_channels, filts, gat_dims, n_parameters) and numbers for pool_ratios "
            "and temperatures"
        ) from None


def load_model_config(name: str) -> ModelConfig:
    """Load the shipped configuration of model ``name`` (``aasist-l`` or ``aasist``)."""
    key = name.lower()
    if key not in MODEL_NAMES:
        raise InputError(f"unknown model {name!r}: expected one of {', '.join(MODEL_NAMES)}")
    text = resources.files("spoofwatch.configs").joinpath("models", f"{key}.toml").read_text("utf-8")
    return model_config_from_dict(tomllib.loads(text))
