"""Optional per-window loudness normalisation in front of any scorer.

AASIST-L's logit moves with input level (the issue measured a real-vs-fake
AUC flip from 0.29 to 0.77 under per-window RMS normalisation), so a model may
be fairer when every window reaches it at the same RMS. Off by default: it
changes the official model's scores.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from spoofwatch.errors import InputError
from spoofwatch.stream.engine import Scorer
from spoofwatch.stream.gate import rows_rms_dbfs

#: Default target RMS level of a normalised window, dBFS.
DEFAULT_TARGET_DBFS = -26.0
#: Largest gain applied, dB: a near-silent window is not blown up to full scale.
MAX_GAIN_DB = 40.0


def normalise_windows(
    windows: npt.NDArray[np.float32],
    target_dbfs: float = DEFAULT_TARGET_DBFS,
    max_gain_db: float = MAX_GAIN_DB,
) -> npt.NDArray[np.float32]:
    """Scale each row (B, T) to ``target_dbfs`` RMS (gain capped at ``max_gain_db``), clipped to [-1, 1]."""
    if windows.ndim != 2:
        raise InputError(f"expected windows of shape (batch, samples), got {windows.shape}")
    level_db = rows_rms_dbfs(windows)[:, None]  # (B, 1); the floor for silence is far below any cap
    gain = 10 ** (np.minimum(target_dbfs - level_db, max_gain_db) / 20)
    out: npt.NDArray[np.float32] = np.clip(windows * gain, -1.0, 1.0).astype(np.float32)
    return out


class LoudnessNormalisedScorer:
    """Wraps a scorer: every window is normalised before the model sees it."""

    def __init__(self, scorer: Scorer, target_dbfs: float = DEFAULT_TARGET_DBFS) -> None:
        if not -60.0 <= target_dbfs <= 0.0:
            raise InputError(f"loudness target: expected -60..0 dBFS, got {target_dbfs}")
        self.scorer = scorer
        self.target_dbfs = target_dbfs

    def scores(self, windows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        batch = windows[None, :] if windows.ndim == 1 else windows
        return self.scorer.scores(normalise_windows(batch, self.target_dbfs))
