"""Official weights: packaged, fetched or cached; verified against the pinned SHA-256 at load.

The official files ship inside the package (``spoofwatch/weights/``, MIT,
with their LICENSE and NOTICE), so the first run needs no network. The model
config names the file (``weights_file``); a file of that name in the per-user
cache (put there by ``spoofwatch weights fetch``) takes precedence over the
packaged one. Only ``weights fetch`` touches the network. Every load
re-verifies the hash, so a corrupted file is caught at load time rather than
producing wrong scores.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO, Literal

import torch

from spoofwatch.errors import NetworkError, WeightsError
from spoofwatch.paths import cache_tempfile, make_cache_folder, weights_dir

from .aasist import AASIST
from .config import ModelConfig, load_model_config

log = logging.getLogger(__name__)

#: Where the official weights are published (clovaai/aasist, MIT licence).
OFFICIAL_URL = "https://github.com/clovaai/aasist/raw/main/models/weights/{file}"
_CHUNK_BYTES = 1 << 16


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def check_weights_file(path: Path | str) -> Path:
    """A user-given weights path (``--weights``) as a ``Path``, refused up front when it cannot be read."""
    path = Path(path)
    if path.is_dir():
        raise WeightsError(f"{path}: is a folder; expected a weights file (.pth)")
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read the weights file: {exc.strerror or exc}") from None
    return path


#: Where a weights file was found: shipped in the package, fetched into the
#: per-user cache, or a cached ``.pth`` that no model config names (use it with ``--weights``).
WeightsSource = Literal["packaged", "cache", "custom"]


def weights_path(config: ModelConfig) -> Path:
    """Where ``weights fetch`` installs ``config``'s file (the per-user cache)."""
    return weights_dir() / config.weights_file


def packaged_weights_dir() -> Path:
    """The folder of weights shipped inside the package."""
    return Path(str(resources.files("spoofwatch").joinpath("weights")))


def weights_candidates(config: ModelConfig) -> list[tuple[WeightsSource, Path]]:
    """Places the file of ``config`` is looked for, in order of precedence."""
    return [
        ("cache", weights_path(config)),
        ("packaged", packaged_weights_dir() / config.weights_file),
    ]


def resolve_weights(config: ModelConfig) -> tuple[WeightsSource, Path]:
    """The file a load of ``config``'s official weights uses (not yet verified)."""
    candidates = weights_candidates(config)
    for source, path in candidates:
        if path.is_file():
            return source, path
    places = " or ".join(str(path) for _, path in candidates)
    raise WeightsError(
        f"no {config.name} weights: expected {places}; run `spoofwatch weights fetch --model {config.name}`"
    )


def _copy_with_progress(src: IO[bytes], dst: IO[bytes], total: int | None, label: str, progress: bool) -> int:
    from tqdm import tqdm

    copied = 0
    with tqdm(total=total, unit="B", unit_scale=True, desc=label, disable=not progress, leave=False) as bar:
        for block in iter(lambda: src.read(_CHUNK_BYTES), b""):
            dst.write(block)
            copied += len(block)
            bar.update(len(block))
    return copied


def _resolve_source(source: str | None, config: ModelConfig) -> str:
    if source is None:
        return OFFICIAL_URL.format(file=config.weights_file)
    if "://" in source:
        return source
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / config.weights_file
    if not path.is_file():
        raise WeightsError(
            f"weights source {source!r}: expected a URL, a .pth file or a directory holding {config.weights_file}"
        )
    return str(path)


def _download_to(source: str, dst: IO[bytes], config: ModelConfig, progress: bool) -> None:
    if "://" not in source:
        with open(source, "rb") as src:
            _copy_with_progress(src, dst, os.path.getsize(source), config.weights_file, progress)
        return
    try:
        with urllib.request.urlopen(source, timeout=60) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            copied = _copy_with_progress(response, dst, total, config.weights_file, progress)
    except urllib.error.HTTPError as exc:
        raise WeightsError(f"downloading {source}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:  # nothing answered: the network, not the weights
        raise NetworkError(f"downloading {source}: {exc.reason}") from None
    except OSError as exc:
        raise WeightsError(f"downloading {source}: {exc}") from None
    if total is not None and copied != total:
        raise WeightsError(f"downloading {source}: truncated, got {copied} of {total} bytes")


def verify_weights_file(path: Path, config: ModelConfig) -> None:
    """Raise :class:`WeightsError` unless ``path`` has the pinned hash and loads strictly."""
    digest = sha256_file(path)
    if digest != config.weights_sha256:
        fix = (
            f"; this copy in the cache is used before the packaged weights: delete it, or run "
            f"`spoofwatch weights fetch --model {config.name}`"
            if path.resolve().is_relative_to(weights_dir().resolve())
            else ""
        )
        raise WeightsError(
            f"{path}: SHA-256 {digest} does not match the pinned {config.weights_sha256} "
            f"for {config.name} (truncated, corrupted or a different file){fix}"
        )
    _load_state_dict(path)


def fetch_weights(model: str, source: str | None = None, progress: bool = True) -> Path:
    """Fetch, verify and atomically install the weights of ``model``; return their path."""
    config = load_model_config(model)
    resolved = _resolve_source(source, config)
    target = weights_path(config)
    make_cache_folder(target.parent)
    log.info("fetching %s weights from %s", config.name, resolved)
    fd, tmp_name = cache_tempfile(target.parent, ".pth")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as dst:
            _download_to(resolved, dst, config, progress)
        try:
            verify_weights_file(tmp, config)
        except WeightsError as exc:  # name what was fetched, not the temporary file
            raise WeightsError(str(exc).replace(str(tmp), resolved, 1)) from None
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("installed %s (sha256 %s)", target, config.weights_sha256)
    return target


@dataclass(frozen=True)
class InstalledWeights:
    #: Model name, or ``None`` for a custom file no model config names.
    model: str | None
    source: WeightsSource
    path: Path
    #: ``None`` when the file is missing.
    sha256: str | None
    #: The hash matches the model's pinned one (always False for custom files).
    ok: bool
    #: Loads of this model use this file (the first present candidate).
    in_use: bool


def list_weights() -> list[InstalledWeights]:
    """Every place each known model's weights are looked for, plus custom files in the cache."""
    from spoofwatch.constants import MODEL_NAMES

    rows = []
    known: set[str] = set()
    for name in MODEL_NAMES:
        config = load_model_config(name)
        known.add(config.weights_file)
        chosen = False
        for source, path in weights_candidates(config):
            digest = sha256_file(path) if path.is_file() else None
            in_use = digest is not None and not chosen
            chosen = chosen or in_use
            rows.append(InstalledWeights(name, source, path, digest, digest == config.weights_sha256, in_use))
    cache = weights_dir()
    if cache.is_dir():
        for path in sorted(cache.glob("*.pth")):
            if path.name not in known and not path.name.startswith(".partial-"):
                rows.append(InstalledWeights(None, "custom", path, sha256_file(path), False, False))
    return rows


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.stat().st_size == 0:
        raise WeightsError(f"{path}: an empty file (0 bytes); expected a PyTorch state dict")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad pickle/zip
        if "Weights only load failed" in str(exc):
            # torch's own text goes on to suggest weights_only=False: running
            # whatever code the file holds. Never.
            why = "it holds Python objects, not only tensors (spoofwatch never runs code from a weights file)"
        else:
            why = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]}"
        raise WeightsError(f"{path}: not a readable PyTorch state dict ({why})") from None
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a state dict, got {type(state).__name__}")
    if set(state) == {"state_dict"} or (isinstance(state.get("state_dict"), dict) and "model" not in state):
        raise WeightsError(
            f"{path}: the state dict is wrapped under 'state_dict'; save checkpoint['state_dict'] on its own"
        )
    if state and all(isinstance(k, str) and k.startswith("module.") for k in state):
        raise WeightsError(
            f"{path}: saved from a DataParallel/DistributedDataParallel model (every key starts with "
            "'module.'); save model.module.state_dict(), or strip the prefix"
        )
    if isinstance(state.get("model"), dict) and "optimizer" in state:
        # Not a misfit of the architecture, which torch's missing keys would suggest.
        raise WeightsError(
            f"{path} is a training checkpoint (model, optimiser and progress), not weights: use its "
            "run's best.pth, or continue that run with `spoofwatch train --resume`"
        )
    return state


def load_torch_model(model: str, path: Path | None = None, config: ModelConfig | None = None) -> AASIST:
    """Build ``model`` and load verified weights strictly; returns it in eval mode.

    ``path`` defaults to the official weights (fetched into the cache, else
    packaged), verified against the pinned hash; a custom path (e.g. a
    fine-tuned model) is loaded without the official hash check. ``config``
    overrides the shipped architecture (models trained with overrides).
    """
    config = config or load_model_config(model)
    if path is None:
        source, path = resolve_weights(config)
        log.debug("loading %s weights from %s (%s)", config.name, path, source)
        verify_weights_file(path, config)
    net = AASIST(config)
    state = _load_state_dict(path)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(_misfit_message(path, config.name, str(exc))) from None
    broken = next(
        (k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None
    )
    if broken is not None:  # the export's parity check would blame itself, with |diff| = inf
        raise WeightsError(f"{path}: the weights hold NaN or Inf (first in {broken})")
    return net.eval()


def _misfit_message(path: Path, name: str, detail: str) -> str:
    """One line for torch's list of every mismatched tensor (hundreds of lines
    for another architecture): its first problem, how many there are, and
    what to do about the usual cause."""
    problems = [line.strip() for line in detail.splitlines()[1:] if line.strip()] or [detail.strip()]
    first = problems[0] if len(problems[0]) <= 160 else problems[0][:157] + "..."
    return (
        f"{path}: does not fit the {name} architecture ({first}; {len(problems)} problem(s) in all). "
        "Weights of a run trained with [model_overrides] are used through the run's best.onnx and a "
        "model card (README: Plugging in another detector)"
    )
