"""The calibration file: thresholds, smoothing, hop and gate settings, provenance.

Versioned TOML (``schema_version = 2``)::

    schema_version = 2
    model = "aasist-l"
    weights_sha256 = "..."
    precision = "fp32"         # optional (default fp32): the precision the scores were made at
    verdict_threshold = 1.764  # bona fide logit; a file (``score``) below it is "spoof"
    [stream]  hop_s, max_pending_windows, max_lag_s
    [policy]  enter_threshold, exit_threshold, smoothing_windows,
              min_alert_windows, cooldown_s, silence_reset_s
    [gate]    vad_threshold, min_speech_fraction, energy_floor_dbfs
    [provenance]  source, dataset, protocol, created, note, streaming,
                  limited_by, [provenance.metrics]

Two thresholds, two meanings, each defined here and nowhere else (the code
has no numeric default for either): ``verdict_threshold`` decides a file's
verdict in ``score``; ``[policy] enter_threshold``/``exit_threshold`` are the
live alert band on the smoothed score. Schema 1 files (whose verdict
threshold was called ``threshold``) still load; files are written as schema 2.

Unknown keys, wrong types, values out of range (``precision`` included) and
a model, weights hash or precision other than the one in use are rejected
at load, with a message naming the field, so every command refuses a bad
file before it starts. For a model card (``spoofwatch.model.card``)
``model`` is the card's name and ``weights_sha256`` the SHA-256 of its ONNX
file; a card without a calibration file of its own starts from the shipped
``configs/calibration/model-card.toml``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from spoofwatch.constants import DEFAULT_MODEL, DEFAULT_PRECISION, MODEL_NAMES, PRECISIONS, SAMPLE_RATE_HZ
from spoofwatch.errors import CalibrationError, ConfigError, InputError
from spoofwatch.paths import partial_path
from spoofwatch.stream.engine import EngineConfig, LiveConfig
from spoofwatch.stream.gate import GateConfig
from spoofwatch.stream.policy import PolicyConfig

log = logging.getLogger(__name__)
SCHEMA_VERSION = 2
#: Versions this code reads; version 1 named the verdict threshold ``threshold``.
READABLE_VERSIONS = (1, 2)
DEFAULT_CALIBRATION = "{model}.toml"  # one shipped default per model
#: The shipped starting point of a model card that names no calibration file:
#: its thresholds sit at the natural zero of a score whose sign means
#: genuine/spoof. Calibrate before trusting it.
CARD_CALIBRATION = "model-card.toml"


@dataclass(frozen=True)
class Calibration:
    model: str
    weights_sha256: str
    #: Bona fide logit below which a file or window is called spoof (``score``).
    verdict_threshold: float
    #: Live alert band and smoothing; its thresholds are required in the file.
    policy: PolicyConfig
    stream: EngineConfig = field(default_factory=EngineConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    provenance: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    #: Precision the scores behind this file were computed at (one of ``PRECISIONS``).
    precision: str = DEFAULT_PRECISION

    @property
    def live(self) -> LiveConfig:
        """The engine's settings, as the plain config objects the stream layer takes."""
        return LiveConfig(self.stream, self.gate, self.policy)


def _section(cls: type[Any], data: Any, name: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"calibration [{name}]: expected a table, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"calibration [{name}]: unknown field(s) {', '.join(unknown)}; expected some of {', '.join(fields)}"
        )
    missing = [k for k, f in fields.items() if f.default is dataclasses.MISSING and k not in data]
    if missing:
        raise ConfigError(f"calibration [{name}]: missing required field(s) {', '.join(missing)}")
    values: dict[str, Any] = {}
    for key, value in data.items():
        want = fields[key].type
        if want in ("int", int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"calibration {name}.{key}: expected an integer, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ConfigError(f"calibration {name}.{key}: expected a finite number, got {value!r}")
        values[key] = value
    try:
        return cls(**values)
    except InputError as exc:
        raise ConfigError(f"calibration [{name}]: {exc}") from None


def _finite(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{what}: expected a finite number, got {value!r}")
    return float(value)


def calibration_from_dict(data: dict[str, Any], origin: str = "<calibration>") -> Calibration:
    version = data.get("schema_version")
    if version not in READABLE_VERSIONS:
        raise ConfigError(
            f"{origin}: expected schema_version {' or '.join(map(str, READABLE_VERSIONS))}, got {version!r}"
            + (
                " (written by a newer spoofwatch?)"
                if isinstance(version, int) and version > SCHEMA_VERSION
                else ""
            )
        )
    verdict_key = "threshold" if version == 1 else "verdict_threshold"
    known = {
        "schema_version",
        "model",
        "weights_sha256",
        verdict_key,
        "stream",
        "policy",
        "gate",
        "provenance",
        "precision",
    }
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"{origin}: unknown top-level field(s) {', '.join(unknown)} for schema_version {version}"
        )
    for key in ("model", "weights_sha256", verdict_key, "policy"):
        if key not in data:
            raise ConfigError(f"{origin}: missing required field {key!r}")
    threshold = _finite(data[verdict_key], f"{origin}: {verdict_key}")
    provenance = data.get("provenance", {})
    if not isinstance(provenance, dict):
        raise ConfigError(f"{origin}: [provenance] must be a table")
    precision = data.get("precision", DEFAULT_PRECISION)
    if precision not in PRECISIONS:
        raise ConfigError(f"{origin}: precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    try:
        return Calibration(
            model=str(data["model"]),
            weights_sha256=str(data["weights_sha256"]).lower(),
            verdict_threshold=threshold,
            policy=_section(PolicyConfig, data["policy"], "policy"),
            stream=_section(EngineConfig, data.get("stream", {}), "stream"),
            gate=_section(GateConfig, data.get("gate", {}), "gate"),
            provenance=provenance,
            precision=str(precision),
        )
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None


def _model_key(model: str) -> str:
    key = model.lower()
    if key not in MODEL_NAMES:
        raise InputError(f"unknown model {model!r}: expected one of {', '.join(MODEL_NAMES)}")
    return key


def _parse_toml(text: str, origin: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: not valid TOML: {exc}") from None


def _shipped(name: str) -> tuple[dict[str, Any], str]:
    """A calibration file shipped in ``configs/calibration``, parsed, and its origin."""
    text = resources.files("spoofwatch.configs").joinpath("calibration", name).read_text("utf-8")
    origin = f"configs/calibration/{name}"
    return _parse_toml(text, origin), origin


def load_calibration(
    path: Path | None = None,
    model: str | None = None,
    weights_sha256: str | None = None,
    precision: str = DEFAULT_PRECISION,
) -> Calibration:
    """Load ``path`` (default: the shipped default of ``model``) and check it fits
    ``model`` at ``precision`` and, when given, the ``weights_sha256`` in use."""
    if path is None:
        data, origin = _shipped(DEFAULT_CALIBRATION.format(model=_model_key(model or DEFAULT_MODEL)))
    else:
        try:
            text = Path(path).read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read calibration file: {exc}") from None
        origin = str(path)
        data = _parse_toml(text, origin)
    cal = calibration_from_dict(data, origin)
    if model is not None:
        check_fits(cal, model, weights_sha256, origin, precision)
    return cal


def load_card_default(name: str, weights_sha256: str, window_samples: int | None = None) -> Calibration:
    """The shipped starting point of a model card without a calibration file
    (:data:`CARD_CALIBRATION`), stamped with the card's ``name`` and ONNX hash.
    Its hop is at most the card's window (``window_samples``): a shorter window
    than the shipped hop would leave audio unscored, and nothing here was fitted
    to that hop (a calibration fitted from this one then keeps the shorter hop)."""
    cal = calibration_from_dict(*_shipped(CARD_CALIBRATION))
    cal = dataclasses.replace(cal, model=name, weights_sha256=weights_sha256.lower())
    if window_samples is not None and cal.stream.hop_s * SAMPLE_RATE_HZ > window_samples:
        hop_s = window_samples / SAMPLE_RATE_HZ
        log.info(
            "hop_s %g s: the model's window (the uncalibrated default's %g s is longer)",
            hop_s,
            cal.stream.hop_s,
        )
        cal = dataclasses.replace(cal, stream=dataclasses.replace(cal.stream, hop_s=hop_s))
    return cal


def check_fits(
    cal: Calibration,
    model: str,
    weights_sha256: str | None,
    origin: str,
    precision: str = DEFAULT_PRECISION,
) -> None:
    """The calibration must be for ``model`` (a built-in name or a card's name),
    at ``precision``, and, when given, for the weights with ``weights_sha256``."""
    if cal.model.lower() != model.lower():
        raise CalibrationError(f"{origin}: calibration was made for model {cal.model!r}, not {model!r}")
    if weights_sha256 is not None and cal.weights_sha256 != weights_sha256.lower():
        raise CalibrationError(
            f"{origin}: calibration was made for weights {cal.weights_sha256[:16]}..., "
            f"but {model} in use has {weights_sha256[:16]}...; recalibrate for these weights"
        )
    if cal.precision != precision:
        raise CalibrationError(
            f"{origin}: calibration was made for precision {cal.precision}, but {model} is being "
            f"scored at {precision}; recalibrate at {precision} or pass --precision {cal.precision}"
        )


_TOML_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _toml_char(c: str) -> str:
    """A character as a TOML basic string holds it: other control characters
    (a file name may carry one into ``limited_by``) as ``\\uXXXX``; a lone
    surrogate (a name that was not valid UTF-8) as U+FFFD, which TOML and
    UTF-8 cannot hold otherwise."""
    if 0xD800 <= ord(c) <= 0xDFFF:
        return "\ufffd"
    return f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else c


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + "".join(_TOML_ESCAPES.get(c) or _toml_char(c) for c in value) + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ConfigError(f"cannot write {type(value).__name__} to TOML")


def _toml_table(name: str, table: dict[str, Any]) -> list[str]:
    lines = [f"[{name}]"]
    nested = []
    for key, value in table.items():
        if isinstance(value, dict):
            nested.append((f"{name}.{key}", value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    for sub_name, sub in nested:
        lines += ["", *_toml_table(sub_name, sub)]
    return lines


def dump_calibration(cal: Calibration) -> str:
    lines = [
        f"schema_version = {cal.schema_version}",
        f"model = {_toml_value(cal.model)}",
        f"weights_sha256 = {_toml_value(cal.weights_sha256)}",
        f"precision = {_toml_value(cal.precision)}",
        "# Bona fide logit: a file scoring below it is called spoof (`spoofwatch score`).",
        "# The live alert band is [policy] enter_threshold / exit_threshold.",
        f"verdict_threshold = {_toml_value(cal.verdict_threshold)}",
    ]
    for name in ("stream", "policy", "gate"):
        lines += ["", *_toml_table(name, dataclasses.asdict(getattr(cal, name)))]
    if cal.provenance:
        lines += ["", *_toml_table("provenance", cal.provenance)]
    return "\n".join(lines) + "\n"


def save_calibration(cal: Calibration, path: Path) -> None:
    text = dump_calibration(cal)
    calibration_from_dict(tomllib.loads(text), str(path))  # never write a file we cannot read
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    try:
        tmp.write_text(text, "utf-8")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)  # nothing half-written stays behind
