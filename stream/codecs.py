"""Wire audio decoders: 16-bit PCM, float32 and G.711 μ-law, all in numpy.

μ-law is decoded with a 256-entry table built from the G.711 formula, so
nothing depends on ``audioop`` (removed in Python 3.13).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from spoofwatch.audio import sample_problem
from spoofwatch.errors import CloseCode, ProtocolError

ENCODINGS = ("pcm_s16le", "f32le", "mulaw")
INVALID_PAYLOAD = CloseCode.INVALID_PAYLOAD
#: 16-bit PCM's (and G.711's linear) full scale: sample / 32768 is in [-1, 1).
PCM16_FULL_SCALE = 32768.0


def _mulaw_table() -> npt.NDArray[np.float32]:
    codes = ~np.arange(256, dtype=np.uint8)  # μ-law bytes are stored inverted
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = ((mantissa.astype(np.int32) << 3) + 0x84) << exponent
    linear = np.where(sign != 0, 0x84 - magnitude, magnitude - 0x84)
    return (linear / PCM16_FULL_SCALE).astype(np.float32)


MULAW_TO_FLOAT = _mulaw_table()


def mulaw_encode(audio: npt.NDArray[np.float32]) -> bytes:
    """float32 in [-1, 1] -> G.711 μ-law bytes (used by the client and tests)."""
    pcm = np.clip(np.round(audio * PCM16_FULL_SCALE), -32635, 32635).astype(np.int32)
    sign = np.where(pcm < 0, 0x80, 0)
    magnitude = np.abs(pcm) + 0x84
    exponent = np.clip(np.floor(np.log2(magnitude)).astype(np.int32) - 7, 0, 7)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    encoded: bytes = (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()
    return encoded


def decode(payload: bytes, encoding: str, channels: int) -> npt.NDArray[np.float32]:
    """Decode one binary frame to mono float32; bad frames raise ProtocolError (1007)."""
    if encoding == "pcm_s16le":
        frame_bytes = 2 * channels
        if len(payload) % frame_bytes:
            raise ProtocolError(
                f"expected 16-bit little-endian PCM in whole {channels}-channel frames "
                f"({frame_bytes} bytes each), got {len(payload)} bytes",
                INVALID_PAYLOAD,
            )
        audio = np.frombuffer(payload, dtype="<i2").astype(np.float32) / PCM16_FULL_SCALE
    elif encoding == "f32le":
        frame_bytes = 4 * channels
        if len(payload) % frame_bytes:
            raise ProtocolError(
                f"expected 32-bit float frames of {frame_bytes} bytes, got {len(payload)} bytes",
                INVALID_PAYLOAD,
            )
        audio = np.frombuffer(payload, dtype="<f4").astype(np.float32)
        # Before mixing: two huge finite channels would sum to Inf.
        if (problem := sample_problem(audio)) is not None:
            raise ProtocolError(f"f32le: {problem}", INVALID_PAYLOAD)
    elif encoding == "mulaw":
        if len(payload) % channels:
            raise ProtocolError(
                f"expected whole {channels}-channel μ-law frames, got {len(payload)} bytes", INVALID_PAYLOAD
            )
        audio = MULAW_TO_FLOAT[np.frombuffer(payload, dtype=np.uint8)]
    else:
        raise ProtocolError(
            f"unknown encoding {encoding!r}: expected one of {', '.join(ENCODINGS)}", CloseCode.UNSUPPORTED
        )
    if channels == 2:
        audio = audio.reshape(-1, 2).mean(axis=1, dtype=np.float32)
    return audio


def encode(audio: npt.NDArray[np.float32], encoding: str) -> bytes:
    """Mono float32 -> wire bytes (the client's side of :func:`decode`)."""
    if encoding == "pcm_s16le":
        return np.clip(np.round(audio * PCM16_FULL_SCALE), -32768, 32767).astype("<i2").tobytes()
    if encoding == "f32le":
        return audio.astype("<f4").tobytes()
    if encoding == "mulaw":
        return mulaw_encode(audio)
    raise ProtocolError(
        f"unknown encoding {encoding!r}: expected one of {', '.join(ENCODINGS)}", CloseCode.UNSUPPORTED
    )
