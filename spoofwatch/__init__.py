"""spoofwatch: real-time voice-deepfake detection with AASIST / AASIST-L.

Scores are the model's bona fide logit: higher means more genuine.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Detector", "SpoofwatchError", "__version__"]

from .errors import SpoofwatchError


def _map_source_tree() -> None:
    # Installed, `spoofwatch.model` etc. live in this package's folder. In a
    # source checkout (e.g. `python -m spoofwatch` from the repository root,
    # which puts the root first on sys.path) they are the sibling folders
    # model/, stream/, calibration/ and configs/: map those the way the
    # wheel's package-dir does, so the checkout behaves like the install.
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / "model" / "aasist.py").is_file():
        __path__.append(str(root))


_map_source_tree()

if TYPE_CHECKING:
    from spoofwatch.model.detector import Detector


def __getattr__(name: str) -> Any:
    # Detector pulls in ONNX Runtime; import it only when asked for.
    if name == "Detector":
        from spoofwatch.model.detector import Detector

        return Detector
    raise AttributeError(name)
