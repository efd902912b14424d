"""Run stamps: what made a resumable output (a score file, a corpus), kept
beside it, so that a rerun with other settings is refused instead of mixing
two runs' results under one name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import InputError


def changed_settings(stamp: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """``{key: what the stamp recorded}`` for every key of ``settings`` whose
    value differs from the JSON file ``stamp``; ``None`` when there is no stamp."""
    try:
        earlier = json.loads(stamp.read_text("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise InputError(f"{stamp}: unreadable ({exc}); write into a new output instead") from None
    if not isinstance(earlier, dict):
        raise InputError(f"{stamp}: expected a JSON object; write into a new output instead")
    return {k: earlier.get(k) for k in sorted(settings) if earlier.get(k) != settings[k]}


def write_stamp(stamp: Path, settings: dict[str, Any]) -> None:
    stamp.write_text(json.dumps(settings, indent=1), "utf-8")
