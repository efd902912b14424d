"""Official weights: fetch, verify against the pinned SHA-256, cache, load.

Only ``spoofwatch weights fetch`` touches the network. Everything else reads
the per-user cache and re-verifies the hash, so a corrupted cache is caught
at load time rather than producing wrong scores.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import torch

from spoofwatch.errors import WeightsError
from spoofwatch.paths import weights_dir

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


def weights_path(config: ModelConfig) -> Path:
    return weights_dir() / config.weights_file


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
    except (urllib.error.URLError, OSError) as exc:
        raise WeightsError(f"downloading {source}: {exc}") from None
    if total is not None and copied != total:
        raise WeightsError(f"downloading {source}: truncated, got {copied} of {total} bytes")


def verify_weights_file(path: Path, config: ModelConfig) -> None:
    """Raise :class:`WeightsError` unless ``path`` has the pinned hash and loads strictly."""
    digest = sha256_file(path)
    if digest != config.weights_sha256:
        raise WeightsError(
            f"{path}: SHA-256 {digest} does not match the pinned {config.weights_sha256} "
            f"for {config.name} (truncated, corrupted or a different file)"
        )
    _load_state_dict(path)


def fetch_weights(model: str, source: str | None = None, progress: bool = True) -> Path:
    """Fetch, verify and atomically install the weights of ``model``; return their path."""
    config = load_model_config(model)
    resolved = _resolve_source(source, config)
    target = weights_path(config)
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("fetching %s weights from %s", config.name, resolved)
    fd, tmp_name = tempfile.mkstemp(prefix=".partial-", suffix=".pth", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as dst:
            _download_to(resolved, dst, config, progress)
        verify_weights_file(tmp, config)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("installed %s (sha256 %s)", target, config.weights_sha256)
    return target


@dataclass(frozen=True)
class InstalledWeights:
    model: str
    path: Path
    sha256: str | None
    ok: bool


def list_weights() -> list[InstalledWeights]:
    """State of each known model's weights in the cache."""
    from spoofwatch.constants import MODEL_NAMES

    rows = []
    for name in MODEL_NAMES:
        config = load_model_config(name)
        path = weights_path(config)
        digest = sha256_file(path) if path.is_file() else None
        rows.append(InstalledWeights(name, path, digest, digest == config.weights_sha256))
    return rows


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad pickle/zip
        raise WeightsError(f"{path}: not a readable PyTorch state dict: {exc}") from None
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def load_torch_model(model: str, path: Path | None = None, config: ModelConfig | None = None) -> AASIST:
    """Build ``model`` and load verified weights strictly; returns it in eval mode.

    ``path`` defaults to the cached official weights; a custom path (e.g. a
    fine-tuned model) is loaded without the official hash check. ``config``
    overrides the shipped architecture (models trained with overrides).
    """
    config = config or load_model_config(model)
    if path is None:
        path = weights_path(config)
        if not path.is_file():
            raise WeightsError(
                f"no {config.name} weights in {path.parent}; run "
                f"`spoofwatch weights fetch --model {config.name}` first"
            )
        verify_weights_file(path, config)
    net = AASIST(config)
    try:
        net.load_state_dict(_load_state_dict(path), strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{path}: does not fit the {config.name} architecture: {exc}") from None
    return net.eval()
