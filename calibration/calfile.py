"""The calibration file: thresholds, smoothing, hop and gate settings, provenance.

Versioned TOML (``schema_version = 1``)::

    schema_version = 1
    model = "aasist-l"
    weights_sha256 = "..."
    precision = "fp32"         # optional (default fp32): the precision the scores were made at
    threshold = 1.764          # bona fide logit; a file/window below it is "spoof"
    [stream]  hop_s
    [policy]  enter_threshold, exit_threshold, smoothing_windows,
              min_alert_windows, cooldown_s, silence_reset_s
    [gate]    vad_threshold, min_speech_fraction, energy_floor_dbfs
    [provenance]  source, dataset, protocol, created, note, [provenance.metrics]

Unknown keys, wrong types and a model, weights hash or precision other than
the one in use are rejected with a message naming the field. For a model
card (see ``spoofwatch.model.card``) ``model`` is the card's name and
``weights_sha256`` the SHA-256 of its ONNX file.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spoofwatch.constants import WINDOW_SAMPLES
from spoofwatch.errors import CalibrationError, ConfigError, InputError
from spoofwatch.model.config import load_model_config
from spoofwatch.stream.engine import EngineConfig
from spoofwatch.stream.gate import GateConfig
from spoofwatch.stream.policy import PolicyConfig

if TYPE_CHECKING:
    from spoofwatch.model.card import ModelSpec

log = logging.getLogger(__name__)
SCHEMA_VERSION = 1
DEFAULT_CALIBRATION = "{model}.toml"  # one shipped default per model


@dataclass(frozen=True)
class Calibration:
    model: str
    weights_sha256: str
    threshold: float
    stream: EngineConfig = field(default_factory=EngineConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    provenance: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    #: Precision the scores behind this file were computed at (fp32, int8, fp16).
    precision: str = "fp32"
    #: The model's input length; set from the model at load, never stored in
    #: the file. It sizes the live engine's windows (``build_engine``).
    window_samples: int = WINDOW_SAMPLES


def _section(cls: type[Any], data: Any, name: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"calibration [{name}]: expected a table, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"calibration [{name}]: unknown field(s) {', '.join(unknown)}; expected some of {', '.join(fields)}"
        )
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


def calibration_from_dict(data: dict[str, Any], origin: str = "<calibration>") -> Calibration:
    known = {
        "schema_version",
        "model",
        "weights_sha256",
        "threshold",
        "stream",
        "policy",
        "gate",
        "provenance",
        "precision",
    }
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{origin}: unknown top-level field(s) {', '.join(unknown)}")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ConfigError(f"{origin}: expected schema_version = {SCHEMA_VERSION}, got {version!r}")
    for key in ("model", "weights_sha256", "threshold"):
        if key not in data:
            raise ConfigError(f"{origin}: missing required field {key!r}")
    threshold = data["threshold"]
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not math.isfinite(threshold):
        raise ConfigError(f"{origin}: threshold: expected a finite number, got {threshold!r}")
    provenance = data.get("provenance", {})
    if not isinstance(provenance, dict):
        raise ConfigError(f"{origin}: [provenance] must be a table")
    from spoofwatch.model.precision import PRECISIONS

    precision = data.get("precision", "fp32")
    if precision not in PRECISIONS:
        raise ConfigError(f"{origin}: precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    try:
        return Calibration(
            model=str(data["model"]),
            weights_sha256=str(data["weights_sha256"]).lower(),
            threshold=float(threshold),
            stream=_section(EngineConfig, data.get("stream", {}), "stream"),
            policy=_section(PolicyConfig, data.get("policy", {}), "policy"),
            gate=_section(GateConfig, data.get("gate", {}), "gate"),
            provenance=provenance,
            precision=str(precision),
        )
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None


def load_calibration(
    path: Path | None = None,
    model: str | None = None,
    weights_sha256: str | None = None,
    precision: str = "fp32",
) -> Calibration:
    """Load ``path`` (default: the shipped default of ``model``) and check it fits ``model``."""
    if path is None:
        name = DEFAULT_CALIBRATION.format(model=load_model_config(model or "aasist-l").name)
        text = resources.files("spoofwatch.configs").joinpath("calibration", name).read_text("utf-8")
        origin = f"configs/calibration/{name}"
    else:
        try:
            text = Path(path).read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read calibration file: {exc}") from None
        origin = str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: not valid TOML: {exc}") from None
    cal = calibration_from_dict(data, origin)
    if model is not None:
        check_fits(cal, model, weights_sha256, origin, precision)
    return cal


def calibration_for(
    model: str,
    path: Path | None,
    weights: Path | None,
    precision: str = "fp32",
    spec: ModelSpec | None = None,
) -> Calibration:
    """The calibration to use with ``model`` and (optionally custom) ``weights``.

    An explicit file must match the weights and precision in use. With custom
    weights or a reduced precision and no file, the shipped default is used
    with a warning, re-stamped with the weights' hash and the precision, so
    files written from it (``calibrate fit``) fit them. ``spec`` is the
    checked model card when ``model`` is one: its own ``calibration`` file is
    the default, else an uncalibrated threshold of 0.
    """
    if spec is not None:
        return _card_calibration(spec, path)
    from spoofwatch.model.weights import sha256_file

    digest = sha256_file(weights) if weights is not None else None
    if path is None and (digest is not None or precision != "fp32"):
        log.warning(
            "using the default (FP32, official weights) calibration with %s; calibrate for them",
            "custom weights" if digest is not None else f"precision {precision}",
        )
        cal = load_calibration(None, model=model)
        return dataclasses.replace(cal, weights_sha256=digest or cal.weights_sha256, precision=precision)
    cal = load_calibration(path, model=model, weights_sha256=digest, precision=precision)
    return cal


#: Threshold of a model card that ships no calibration: the natural zero of a
#: score whose sign means genuine/spoof. Calibrate before trusting it.
UNCALIBRATED_THRESHOLD = 0.0


def _card_calibration(spec: ModelSpec, path: Path | None) -> Calibration:
    origin_path = path or spec.calibration_path
    if origin_path is None:
        log.warning(
            "%s: no calibration file (neither --calibration nor the card's 'calibration'); "
            "using threshold %.1f: run `spoofwatch calibrate` for this model",
            spec.card_path,
            UNCALIBRATED_THRESHOLD,
        )
        cal = Calibration(
            model=spec.name,
            weights_sha256=spec.sha256,
            threshold=UNCALIBRATED_THRESHOLD,
            policy=PolicyConfig(
                enter_threshold=UNCALIBRATED_THRESHOLD, exit_threshold=UNCALIBRATED_THRESHOLD + 1.0
            ),
            provenance={"source": "uncalibrated default for a model card"},
        )
    else:
        cal = load_calibration(origin_path)
        check_fits(cal, spec.name, spec.sha256, str(origin_path), "fp32", card=True)
    return dataclasses.replace(cal, window_samples=spec.window_samples)


def check_fits(
    cal: Calibration,
    model: str,
    weights_sha256: str | None,
    origin: str,
    precision: str = "fp32",
    card: bool = False,
) -> None:
    if cal.model != (model if card else model.lower()):
        raise CalibrationError(f"{origin}: calibration was made for model {cal.model!r}, not {model!r}")
    expected = weights_sha256 if card or weights_sha256 else load_model_config(model).weights_sha256
    if cal.weights_sha256 != expected:
        raise CalibrationError(
            f"{origin}: calibration was made for weights {cal.weights_sha256[:16]}..., "
            f"but {model} in use has {str(expected)[:16]}...; recalibrate for these weights"
        )
    if cal.precision != precision:
        raise CalibrationError(
            f"{origin}: calibration was made for precision {cal.precision}, but {model} is being "
            f"scored at {precision}; recalibrate at {precision} or pass --precision {cal.precision}"
        )


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
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
        "# Bona fide logit: a file or window scoring below it is called spoof.",
        f"threshold = {_toml_value(cal.threshold)}",
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
    tmp = path.with_suffix(path.suffix + ".partial")
    tmp.write_text(text, "utf-8")
    tmp.replace(path)
