"""spoofwatch: real-time voice-deepfake detection with AASIST / AASIST-L.

Scores are the model's bona fide logit: higher means more genuine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Detector", "SpoofwatchError", "__version__"]

from .errors import SpoofwatchError

if TYPE_CHECKING:
    from spoofwatch.model.detector import Detector


def __getattr__(name: str) -> Any:
    # Detector pulls in ONNX Runtime; import it only when asked for.
    if name == "Detector":
        from spoofwatch.model.detector import Detector

        return Detector
    raise AttributeError(name)
