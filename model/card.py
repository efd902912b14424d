"""Pluggable ONNX detectors described by a model card TOML.

Wherever ``--model`` is accepted, a path to a card works as well as a
built-in name::

    [model]
    onnx = "detector.onnx"      # relative to the card
    sample_rate_hz = 16000
    window_samples = 32000      # the model's fixed input length
    input = "waveform"          # float32 [batch, window_samples]
    output = "logits"           # float32 [batch, k] or [batch]
    bonafide_index = 1          # column read as the score (omit for a [batch] output)
    higher_is_bonafide = true   # false: the score is negated so higher always means genuine
    sha256 = "..."              # optional; checked at load
    calibration = "cal.toml"    # optional; the card's default calibration file

The card is checked completely at load, before any audio is read: the
file, its hash, the declared tensor names and shapes, and one probe call
on silence whose output shape must match the declaration.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spoofwatch.constants import MODEL_NAMES, SAMPLE_RATE_HZ
from spoofwatch.errors import ConfigError, InputError, ModelError

#: Shortest and longest window a card may declare, in samples at 16 kHz
#: (0.1 s to 60 s): outside it the engine's gate and hop make no sense.
MIN_WINDOW_SAMPLES = SAMPLE_RATE_HZ // 10
MAX_WINDOW_SAMPLES = 60 * SAMPLE_RATE_HZ
_CARD_SUFFIX = ".toml"
_REQUIRED = {
    "onnx": str,
    "sample_rate_hz": int,
    "window_samples": int,
    "input": str,
    "output": str,
    "higher_is_bonafide": bool,
}
_OPTIONAL = {"bonafide_index": int, "sha256": str, "calibration": str, "name": str}


@dataclass(frozen=True)
class ModelSpec:
    """A checked model card. ``name`` identifies it in calibration files."""

    name: str
    card_path: Path
    onnx_path: Path
    window_samples: int
    input_name: str
    output_name: str
    bonafide_index: int | None
    higher_is_bonafide: bool
    sha256: str
    calibration_path: Path | None = None

    @property
    def calibration_key(self) -> str:
        """What a calibration fitted for this card is stamped with and must
        match: the ONNX file's hash and every card field that changes a score
        (which column, its sign, the input, the window). Two cards over one
        file that read it differently are different models."""
        fields = (
            self.sha256,
            self.input_name,
            self.output_name,
            str(self.bonafide_index),
            str(self.higher_is_bonafide),
            str(self.window_samples),
        )
        return hashlib.sha256("\0".join(fields).encode()).hexdigest()


def is_card_reference(model: str) -> bool:
    """A ``--model`` value that is not a built-in name is a card path."""
    return model.lower() not in MODEL_NAMES


#: The key an ONNX tensor stored as external data names its file with; a
#: graph without it anywhere in its bytes has no external data to look for.
_EXTERNAL_KEY = b"location"


def check_card_options(precision: str, weights: Path | None) -> None:
    """The one rule for what goes with a card in ``--model``: a card describes
    one ONNX file, scored as it is, so no ``--precision`` but fp32 and no
    ``--weights`` (which apply to the built-in models)."""
    if precision != "fp32":
        raise InputError(
            f"--precision {precision}: a model card describes one ONNX file, scored as it is at fp32; "
            "quantize it yourself and describe the result by its own card"
        )
    if weights is not None:
        raise InputError("--weights applies to the built-in models; a model card names its ONNX file")


def _sha256_and_mentions(path: Path, needle: bytes = b"") -> tuple[str, bool]:
    """The file's SHA-256, and whether ``needle`` occurs in it: one read, so
    that a large graph is not read (and parsed) again to find out. (Not
    ``weights.sha256_file``: that module brings in torch, which cards do
    without.)"""
    digest = hashlib.sha256()
    found = False
    tail = b""
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
            if needle and not found:  # across a block boundary too
                found = needle in tail + block[: len(needle) - 1] or needle in block
                tail = block[-(len(needle) - 1) :]
    return digest.hexdigest(), found


def _external_data_files(onnx_path: Path, origin: str) -> list[str]:
    """The files (relative to the ONNX file) that hold the graph's weights
    outside it: ``torch.onnx.export`` writes them beside the graph by default."""
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and others: not an ONNX file
        raise ModelError(f"{origin}: {onnx_path.name} is not an ONNX model ({exc})") from None
    found: set[str] = set()

    def walk(graph: Any) -> None:
        tensors = list(graph.initializer)
        for node in graph.node:
            for attr in node.attribute:
                tensors += [attr.t] if attr.HasField("t") else []
                tensors += list(attr.tensors)
                for sub in [attr.g] if attr.HasField("g") else []:
                    walk(sub)
                for sub in attr.graphs:
                    walk(sub)
        for tensor in tensors:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                found.update(e.value for e in tensor.external_data if e.key == "location")

    walk(model.graph)
    return sorted(found)


def model_sha256(onnx_path: Path, origin: str) -> str:
    """The SHA-256 a card pins: of the ONNX file, or, for a model whose weights
    are external data, of the file's hash and each data file's name and hash
    together, so that the pin (and a calibration's key) covers the weights too."""
    digest, maybe_external = _sha256_and_mentions(onnx_path, _EXTERNAL_KEY)
    external = _external_data_files(onnx_path, origin) if maybe_external else []
    if not external:
        return digest
    parts = [digest]
    for name in external:
        data = (onnx_path.parent / name).resolve()
        if not data.is_file():
            raise ModelError(f"{origin}: {onnx_path.name} keeps its weights in {name}, which does not exist")
        parts += [name, _sha256_and_mentions(data)[0]]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _typed(table: dict[str, Any], key: str, want: type, origin: str) -> Any:
    value = table[key]
    ok = isinstance(value, want) and (want is bool or not isinstance(value, bool))
    if not ok:
        raise ConfigError(f"{origin}: [model].{key}: expected {want.__name__}, got {value!r}")
    return value


def parse_card(path: Path) -> ModelSpec:
    """Parse and check the card's fields and files (not the graph)."""
    origin = str(path)
    if not path.is_file():
        raise ConfigError(
            f"--model {path}: neither a built-in model ({', '.join(MODEL_NAMES)}) nor a model card file"
        )
    # Relative paths in a card are relative to the card file itself, not to
    # a symbolic link that points at it.
    path = path.resolve()
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{origin}: cannot read the model card: {exc}") from None
    table = data.get("model")
    if set(data) != {"model"} or not isinstance(table, dict):
        tables = sorted(k for k, v in data.items() if isinstance(v, dict))
        keys = sorted(k for k, v in data.items() if not isinstance(v, dict))
        got = ", ".join(
            part
            for part in (
                f"tables {tables}" if tables else "",
                f"keys outside any table {keys} (a missing [model] line?)" if keys else "",
            )
            if part
        )
        raise ConfigError(f"{origin}: expected exactly one [model] table, got {got or 'nothing'}")
    unknown = sorted(set(table) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise ConfigError(
            f"{origin}: unknown [model] field(s) {', '.join(unknown)}; expected some of "
            f"{', '.join([*_REQUIRED, *_OPTIONAL])}"
        )
    missing = sorted(set(_REQUIRED) - set(table))
    if missing:
        raise ConfigError(f"{origin}: missing [model] field(s) {', '.join(missing)}")
    values = {k: _typed(table, k, t, origin) for k, t in {**_REQUIRED, **_OPTIONAL}.items() if k in table}
    if values["sample_rate_hz"] != SAMPLE_RATE_HZ:
        raise ConfigError(
            f"{origin}: sample_rate_hz = {values['sample_rate_hz']}: spoofwatch feeds models "
            f"{SAMPLE_RATE_HZ} Hz audio; resample inside the model or export it for {SAMPLE_RATE_HZ} Hz"
        )
    window = values["window_samples"]
    if not MIN_WINDOW_SAMPLES <= window <= MAX_WINDOW_SAMPLES:
        raise ConfigError(
            f"{origin}: window_samples = {window}: expected {MIN_WINDOW_SAMPLES}..{MAX_WINDOW_SAMPLES}"
        )
    index = values.get("bonafide_index")
    if index is not None and index < 0:
        raise ConfigError(f"{origin}: bonafide_index = {index}: expected >= 0")
    onnx_path = (path.parent / values["onnx"]).resolve()
    if onnx_path.is_dir():
        raise ModelError(f"{origin}: onnx = {values['onnx']!r} is a folder; expected an ONNX file")
    if not onnx_path.is_file():
        raise ModelError(f"{origin}: the ONNX file {onnx_path} does not exist")
    digest = model_sha256(onnx_path, origin)
    pinned = values.get("sha256")
    if pinned is not None and pinned.strip().lower() != digest:
        raise ModelError(
            f"{origin}: {onnx_path.name} has SHA-256 {digest}, but the card pins {pinned!r}; "
            "the model was changed or is not the one the card describes"
        )
    cal = values.get("calibration")
    cal_path = (path.parent / cal).resolve() if cal else None
    if cal_path is not None and cal_path.is_dir():
        raise ConfigError(f"{origin}: calibration = {cal!r} is a folder; expected a calibration file")
    if cal_path is not None and not cal_path.is_file():
        raise ConfigError(f"{origin}: the calibration file {cal_path} does not exist")
    return ModelSpec(
        name=values.get("name", path.stem),
        card_path=path.resolve(),
        onnx_path=onnx_path,
        window_samples=window,
        input_name=values["input"],
        output_name=values["output"],
        bonafide_index=index,
        higher_is_bonafide=values["higher_is_bonafide"],
        sha256=digest,
        calibration_path=cal_path,
    )


def _dims(value_info: Any) -> list[int | str | None]:
    shape = getattr(value_info, "shape", None)
    return list(shape) if shape is not None else []


def check_graph(spec: ModelSpec) -> None:
    """Open the graph on the CPU, check names, types and shapes, and make one probe call."""
    from .runtime import make_session

    origin = str(spec.card_path)
    try:
        session = make_session(spec.onnx_path, "cpu", threads=1)
    except ModelError as exc:
        raise ModelError(f"{origin}: {exc}") from None
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    if spec.input_name not in inputs or len(inputs) != 1:
        raise ModelError(
            f"{origin}: input = {spec.input_name!r}, but {spec.onnx_path.name} has input(s) "
            f"{', '.join(inputs)}; expected exactly one float32 [batch, {spec.window_samples}] input"
        )
    tensor = inputs[spec.input_name]
    dims = _dims(tensor)
    # A dynamic dimension is a name (str) or None; a fixed one must match the card.
    fits = len(dims) == 2 and (dims[1] == spec.window_samples or not isinstance(dims[1], int))
    if tensor.type != "tensor(float)" or not fits:
        raise ModelError(
            f"{origin}: input {spec.input_name!r} is {tensor.type} {dims}; expected tensor(float) "
            f"[batch, {spec.window_samples}]"
        )
    if isinstance(dims[0], int):
        # spoofwatch calls with as many windows as are ready (one on the CPU,
        # up to 64 on CUDA); a fixed batch fails at the first call of another size.
        raise ModelError(
            f"{origin}: input {spec.input_name!r} has a fixed batch of {dims[0]}; expected a dynamic "
            "batch axis (export with dynamic_axes={'"
            f"{spec.input_name}': {{0: 'batch'}}}} in torch.onnx.export, or its dynamic_shapes)"
        )
    if spec.output_name not in outputs:
        raise ModelError(
            f"{origin}: output = {spec.output_name!r}, but {spec.onnx_path.name} has output(s) {', '.join(outputs)}"
        )
    shapes: dict[int, list[int]] = {}
    # The sizes live calls use most, and one more: a model that caps its rows
    # (returns min(batch, 2)) passes 1 and 2 and fails the first CUDA batch.
    for batch in (1, 2, 3):
        probe = np.zeros((batch, spec.window_samples), dtype=np.float32)
        try:
            out = np.asarray(session.run([spec.output_name], {spec.input_name: probe})[0])
        except Exception as exc:
            raise ModelError(
                f"{origin}: a probe call with float32 [{batch}, {spec.window_samples}] failed: {exc}"
            ) from None
        if out.dtype != np.float32 or out.ndim not in (1, 2) or out.shape[0] != batch:
            raise ModelError(
                f"{origin}: output {spec.output_name!r} is {out.dtype} {list(out.shape)} for a batch of "
                f"{batch}; expected float32 [batch] or [batch, k]"
            )
        shapes[batch] = list(out.shape)
    if shapes[1][1:] != shapes[2][1:]:
        # The column read as the score would move with the batch size.
        raise ModelError(
            f"{origin}: output {spec.output_name!r} is {shapes[1]} for a batch of 1 but {shapes[2]} for 2; "
            "expected the same [batch] or [batch, k] for every batch"
        )
    if out.ndim == 1 and spec.bonafide_index is not None:
        raise ModelError(f"{origin}: output is [batch], so omit bonafide_index (got {spec.bonafide_index})")
    if out.ndim == 2 and (spec.bonafide_index is None or spec.bonafide_index >= out.shape[1]):
        raise ModelError(
            f"{origin}: output is [batch, {out.shape[1]}]: expected bonafide_index in 0..{out.shape[1] - 1}, "
            f"got {spec.bonafide_index}"
        )


def load_card(path: Path) -> ModelSpec:
    """Parse a model card and check its graph (for ``evaluate-suite`` and every command)."""
    spec = parse_card(path)
    check_graph(spec)
    return spec
