"""ONNX Runtime scoring: device selection, provider options, batch caps, input validation.

Every path that scores windows (files, streams, the server's batcher,
``calibrate score``, training evaluation, ``evaluate-suite``) goes through
:class:`OnnxScorer`, so the CUDA options and the per-call batch cap below
apply everywhere. Build one with :func:`spoofwatch.model.scorers.build_scorer`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from spoofwatch.audio import sample_problem
from spoofwatch.constants import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    ONNX_INPUT_NAME,
    ONNX_OUTPUT_NAME,
    SCORE_COLUMN,
    WINDOW_SAMPLES,
    Precision,
)
from spoofwatch.errors import DeviceError, InputError, ModelError
from spoofwatch.paths import onnx_dir

from .shapes import BucketedSession, wants_buckets

if TYPE_CHECKING:
    from .card import ModelSpec

log = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[Device, ...] = ("auto", "cpu", "cuda")
#: ORT's default log severity (warning); it has no getter, so this is what we restore.
_ORT_DEFAULT_SEVERITY = 2

#: Elements of the largest MaxPool input AASIST builds per window (ONNX shape
#: inference): the first encoder stage's ``(B, 32, 23, 21490)`` activation
#: (64,472 sinc-filtered samples pooled by 3 -> 21,490 frames, 70 filters
#: pooled by 3 -> 23 rows, 32 channels): 15.8 M.
_MAXPOOL_ELEMENTS_PER_WINDOW = 32 * 23 * 21_490
#: cuDNN's pooling kernels index tensors with 32-bit integers: a tensor past
#: 2^31 elements fails with CUDNN_STATUS_NOT_SUPPORTED. 2^31 / 15.8 M = 135
#: windows in theory, but 128 was measured to crash on an H200 (112 worked:
#: cuDNN's intermediate layouts need headroom), so the cap is the largest
#: power of two at or below half the theoretical limit: 64.
CUDA_MAX_BATCH_WINDOWS = 1 << ((2**31 // (2 * _MAXPOOL_ELEMENTS_PER_WINDOW)).bit_length() - 1)
#: Windows per ONNX Runtime call on the CPU. Peak RSS grows ~linearly with the
#: batch while windows/s hardly moves (benchmarks/bench_memory.py, 2 cores, arena
#: on: 7.8 / 8.1 / 8.1 windows/s and 0.60 / 0.92 / 1.57 GB for 1 / 2 / 4), so one
#: window per call: the least memory at nearly the best speed.
CPU_MAX_BATCH_WINDOWS = 1


def batch_cap(device: str) -> int:
    """Windows one forward pass may take on ``device`` (``cuda``/``cuda:N`` or ``cpu``),
    for ONNX Runtime and for PyTorch evaluation alike."""
    return CUDA_MAX_BATCH_WINDOWS if device.startswith("cuda") else CPU_MAX_BATCH_WINDOWS


#: CUDA provider options. ``use_tf32=0``: TF32 tensor cores moved AASIST-L
#: logits by up to 3.1e-2 from the official outputs on an H200 (2.7e-6
#: without, at no measurable cost). cuDNN: heuristic algorithm choice and
#: the default workspace. ORT's defaults (an exhaustive search with the
#: largest workspace cuDNN asks for) failed on an H100: every new input shape
#: (a server's batches vary from 1 to 64 windows, times two incremental
#: graphs) ran a search that counted as scoring time (a worker measured
#: 3 windows/s) and grew each session's arena by workspaces of 1-4.6 GB until
#: 8 workers ran the GPU out of memory. The arena grows by what is asked
#: (ORT's default doubles it: 8 workers each reserving 16 GB for 4 GB of
#: batch-64 activations). Copies in the default stream (no cross-stream races).
CUDA_PROVIDER_OPTIONS: dict[str, str] = {
    "use_tf32": "0",
    "arena_extend_strategy": "kSameAsRequested",
    "cudnn_conv_algo_search": "HEURISTIC",
    "cudnn_conv_use_max_workspace": "0",
    "do_copy_in_default_stream": "1",
}


def validate_windows(windows: object, window_samples: int = WINDOW_SAMPLES) -> npt.NDArray[np.float32]:
    """Check a model input and return it as a C-contiguous ``(B, window_samples)`` float32 array.

    A single ``(window_samples,)`` window is accepted and given a batch axis.
    """
    if not isinstance(windows, np.ndarray):
        raise InputError(
            f"expected a numpy float32 array of shape (batch, {window_samples}), got {type(windows).__name__}"
        )
    if windows.dtype != np.float32:
        raise InputError(f"expected dtype float32, got {windows.dtype}")
    given = windows.shape
    if windows.ndim == 1:
        windows = windows[np.newaxis, :]
    if windows.ndim != 2 or windows.shape[1] != window_samples or windows.shape[0] == 0:
        raise InputError(
            f"expected shape (batch, {window_samples}) with batch >= 1, or ({window_samples},), got {given}"
        )
    # the same rule as files, streams and the microphone: NaN, Inf and absurd magnitudes never reach the model
    if (problem := sample_problem(windows)) is not None:
        raise InputError(problem)
    return np.ascontiguousarray(windows)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Within: file descriptor 1 writes to 2. For native libraries that print
    on standard output (ORT's CUDA preloader, its quantiser), where a
    command's events go."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no standard output at all
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _nvidia_device_present() -> bool:
    # Cheap check before asking ORT for CUDA: on a machine without an NVIDIA
    # driver the CUDA provider can only fail, after loading large libraries.
    return Path("/dev/nvidiactl").exists() or sys.platform == "win32"


def resolve_device(device: Device) -> Literal["cpu", "cuda"]:
    """What ``device`` will try first: ``cuda`` or ``cpu`` (no session is opened)."""
    import onnxruntime as ort

    if device not in DEVICES:
        raise InputError(f"unknown device {device!r}: expected one of {', '.join(DEVICES)}")
    if device == "cpu":
        return "cpu"
    available = ort.get_available_providers()
    if CUDA_PROVIDER not in available:
        if device == "cuda":
            raise DeviceError(
                f"--device cuda: this ONNX Runtime build has no CUDA provider (it offers {', '.join(available)}); install onnxruntime-gpu or use --device cpu"
            )
        return "cpu"
    if device == "auto" and not _nvidia_device_present():
        # The normal case on a machine without a GPU: not worth a warning.
        log.info("--device auto: no NVIDIA GPU found; using CPU")
        return "cpu"
    return "cuda"


def _providers_for(device: Device) -> list[Any]:
    if resolve_device(device) == "cpu":
        return [CPU_PROVIDER]
    return [(CUDA_PROVIDER, dict(CUDA_PROVIDER_OPTIONS)), CPU_PROVIDER]


@dataclass(frozen=True)
class SessionLimits:
    """ONNX Runtime memory settings (see benchmarks/bench_memory.py).

    ``cpu_arena``: ORT's CPU arena keeps the high-water mark of every call
    allocated for the life of the session. Without it, every call takes its
    working memory (~130 MB per AASIST-L window) from the OS afresh and pays
    ~33,000 page faults per window: 2 cores scored 5.3 windows/s one window
    per call without the arena, 7.8 with it (0.43 vs 0.60 GB peak RSS), so
    it is on; the CPU batch cap (:data:`CPU_MAX_BATCH_WINDOWS`) bounds what
    it keeps.
    """

    cpu_arena: bool = True
    #: Every session of the process on the same provider draws from one arena
    #: (ONNX Runtime's environment allocator, ``session.use_env_allocators``)
    #: instead of one arena each. The batch buckets of a CUDA worker
    #: (model/shapes.py) run one at a time on its scoring thread, so one
    #: arena holds the largest bucket's activations, not the sum of all of
    #: them (2x the largest for power-of-two buckets). Off until measured on
    #: a GPU (``benchmarks/gpu_memory.py``).
    shared_arena: bool = False


def make_session(
    path: Path,
    device: Device = "auto",
    threads: int | None = None,
    limits: SessionLimits | None = None,
    allow_spinning: bool = True,
) -> Any:
    """Open an InferenceSession on ``device`` and verify which provider it really got.

    ``allow_spinning=False`` stops idle intra-op threads from busy-waiting: many
    small calls (incremental steps of many streams) otherwise burn the cores.
    """
    import onnxruntime as ort

    if device not in DEVICES:
        raise InputError(f"unknown device {device!r}: expected one of {', '.join(DEVICES)}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise InputError(f"expected threads >= 1 (an integer), got {threads!r}")
    limits = limits or SessionLimits()
    providers = _providers_for(device)
    wants_cuda = providers[0] != CPU_PROVIDER
    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = limits.cpu_arena
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not allow_spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if limits.shared_arena:
        _share_arena(options, providers[0] if isinstance(providers[0], str) else providers[0][0])
    if wants_cuda and hasattr(ort, "preload_dlls"):
        # Lets onnxruntime-gpu find CUDA/cuDNN shipped in pip wheels (e.g.
        # torch's). It prints each library it misses on standard output, which
        # is a command's --json events: those lines go to stderr instead.
        try:
            with stdout_to_stderr():
                ort.preload_dlls()
        except Exception:  # a missing library is reported by the check below
            log.debug("onnxruntime.preload_dlls failed", exc_info=True)
    # ORT logs a loud error when the CUDA libraries are missing; we report it ourselves.
    ort.set_default_logger_severity(4)
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:
        hint = ""
        if Path(path).resolve().is_relative_to(onnx_dir().resolve()):
            # a cached export damaged outside spoofwatch (its own writes are atomic)
            hint = " (a damaged cached export: delete it and the next run rebuilds it)"
        raise ModelError(f"{path}: ONNX Runtime cannot open the model{hint}: {exc}") from None
    finally:
        ort.set_default_logger_severity(_ORT_DEFAULT_SEVERITY)
    got = session.get_providers()
    if wants_cuda and CUDA_PROVIDER not in got:
        if device == "cuda":
            raise DeviceError(
                "--device cuda: the CUDA provider failed to start (no GPU, or CUDA/cuDNN libraries missing); use --device cpu or auto"
            )
        log.warning(
            "CUDA requested by --device auto but unavailable (no GPU or CUDA libraries missing); using CPU"
        )
    # Once per process and provider set at INFO: a live command opens up to
    # three graphs (full window, incremental init and step), all alike.
    key = tuple(got)
    log.log(
        logging.DEBUG if key in _PROVIDERS_SAID else logging.INFO,
        "ONNX Runtime providers in use: %s",
        ", ".join(got),
    )
    _PROVIDERS_SAID.add(key)
    return session


#: Provider lists this process has reported (see make_session).
_PROVIDERS_SAID: set[tuple[str, ...]] = set()


#: Per provider, whether this process registered its shared arena (tried once each).
_SHARED_ARENAS: dict[str, bool] = {}
_SHARED_ARENAS_LOCK = threading.Lock()


def _share_arena(options: Any, provider: str) -> None:
    """Make ``options`` draw from the process's one arena for ``provider``,
    registering that arena with ONNX Runtime's environment on first use.
    Where it cannot be created (e.g. ``--device auto`` without usable CUDA
    libraries), the session keeps an arena of its own: a memory saving is
    not worth failing to score."""
    import onnxruntime as ort

    with _SHARED_ARENAS_LOCK:
        if provider not in _SHARED_ARENAS:
            _SHARED_ARENAS[provider] = False
            # Grow by what is asked, as the per-session CUDA arenas do (CUDA_PROVIDER_OPTIONS).
            arena = ort.OrtArenaCfg({"arena_extend_strategy": 1})  # 1: kSameAsRequested
            kind = ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR
            try:
                if provider == CUDA_PROVIDER:
                    info = ort.OrtMemoryInfo("Cuda", kind, 0, ort.OrtMemType.DEFAULT)
                    ort.create_and_register_allocator_v2(
                        CUDA_PROVIDER, info, dict(CUDA_PROVIDER_OPTIONS), arena
                    )
                else:
                    ort.create_and_register_allocator(
                        ort.OrtMemoryInfo("Cpu", kind, 0, ort.OrtMemType.DEFAULT), arena
                    )
            except Exception as exc:
                log.warning(
                    "ONNX Runtime could not create a shared %s arena (%s): one per session", provider, exc
                )
            else:
                _SHARED_ARENAS[provider] = True
                log.info("sessions on %s share one memory arena", provider)
        if not _SHARED_ARENAS[provider]:
            return
    options.add_session_config_entry("session.use_env_allocators", "1")


def open_graph(
    path: Path,
    device: Device = "auto",
    threads: int | None = None,
    limits: SessionLimits | None = None,
    allow_spinning: bool = True,
    *,
    cap: int,
    buckets: bool | None = None,
) -> Any:
    """A session of the graph at ``path`` for calls of up to ``cap`` rows.

    On the CUDA provider (or wherever ``buckets`` is true) it is a
    :class:`~.shapes.BucketedSession`: one session per batch bucket, so that
    no call changes a session's input shape (see :mod:`.shapes`). Otherwise
    a plain session.
    """
    first = make_session(path, device, threads, limits, allow_spinning)
    if not wants_buckets(first, buckets):
        return first
    return BucketedSession(lambda: make_session(path, device, threads, limits, allow_spinning), cap, first)


class OnnxScorer:
    """Scores batches of fixed-length windows with an ONNX detector.

    The built-in AASIST exports take ``(B, 64600)`` and return ``(B, 2)``
    logits ``[spoof, bonafide]``; a model card (:mod:`.card`) describes any
    other input length, tensor names and score column. A batch larger than
    ``max_batch_windows`` is split into several ONNX Runtime calls (default:
    :data:`CUDA_MAX_BATCH_WINDOWS` on CUDA, :data:`CPU_MAX_BATCH_WINDOWS` on
    the CPU), so callers may pass any batch size. On CUDA every call is padded
    to a batch bucket with a session of its own (:mod:`.shapes`).
    """

    def __init__(
        self,
        onnx_path: Path,
        device: Device = "auto",
        threads: int | None = None,
        *,
        max_batch_windows: int | None = None,
        precision: Precision = "fp32",
        spec: ModelSpec | None = None,
        limits: SessionLimits | None = None,
        shape_buckets: bool | None = None,
    ) -> None:
        if max_batch_windows is not None and max_batch_windows < 1:
            raise InputError(f"expected max_batch_windows >= 1, got {max_batch_windows}")
        self.onnx_path = onnx_path
        self.precision: Precision = precision
        self.spec = spec
        self.window_samples = spec.window_samples if spec is not None else WINDOW_SAMPLES
        self._input = spec.input_name if spec is not None else ONNX_INPUT_NAME
        self._output = spec.output_name if spec is not None else ONNX_OUTPUT_NAME
        self._column = spec.bonafide_index if spec is not None else SCORE_COLUMN
        self._sign = 1.0 if spec is None or spec.higher_is_bonafide else -1.0
        # Buckets never past the MaxPool-safe cap; larger calls are split by the session.
        bucket_cap = min(max_batch_windows or CUDA_MAX_BATCH_WINDOWS, CUDA_MAX_BATCH_WINDOWS)
        self.session = open_graph(onnx_path, device, threads, limits, cap=bucket_cap, buckets=shape_buckets)
        self.providers: list[str] = list(self.session.get_providers())
        cap = batch_cap(self.device) if max_batch_windows is None else max_batch_windows
        self.max_batch_windows = cap
        self.calls = 0

    @property
    def identity(self) -> str:
        """What its scores depend on: the ONNX file's SHA-256 (model, weights and
        precision), for a model card with the fields that read its output."""
        if self.spec is not None:
            return self.spec.calibration_key
        from .weights import sha256_file

        return sha256_file(self.onnx_path)

    @property
    def device(self) -> str:
        return "cuda" if self.providers[0] == CUDA_PROVIDER else "cpu"

    def warm(self, up_to: int) -> list[int]:
        """Open and run once every batch bucket up to ``up_to`` windows (CUDA; see
        :mod:`.shapes`); returns the buckets warmed (none for a plain session)."""
        if not isinstance(self.session, BucketedSession):
            return []
        return self.session.warm(min(up_to, self.max_batch_windows))

    def _run(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        parts = []
        for start in range(0, batch.shape[0], self.max_batch_windows):
            chunk = batch[start : start + self.max_batch_windows]
            try:
                out = np.asarray(self.session.run([self._output], {self._input: chunk})[0], np.float32)
            except ModelError:
                raise
            except Exception as exc:  # ONNX Runtime's own errors share no base class of their own
                # A card's model may fail on some inputs only (its load check ran on silence):
                # the error names the model, and callers treat it as any model failure.
                raise ModelError(
                    f"{self.onnx_path.name}: ONNX Runtime failed on a batch of {len(chunk)} window(s): "
                    f"{str(exc).strip()[:500]}"
                ) from exc
            self.calls += 1
            parts.append(self._checked(out, len(chunk)))
        return np.concatenate(parts, axis=0)

    def _checked(self, out: npt.NDArray[np.float32], batch: int) -> npt.NDArray[np.float32]:
        """One call's output, as the score is read from it: ``[batch]``, or
        ``[batch, k]`` holding the score's column. (A card was checked at
        batches 1, 2 and 3; a model may still answer another size otherwise.)"""
        wanted = 1 if self._column is None else 2
        if (
            out.ndim != wanted
            or out.shape[0] != batch
            or (self._column is not None and out.shape[1] <= self._column)
        ):
            raise ModelError(
                f"{self.onnx_path.name}: output {list(out.shape)} for a batch of {batch}; expected "
                + ("[batch]" if wanted == 1 else f"[batch, k] with k > {self._column}")
            )
        return out

    def logits(self, windows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """``(B, window_samples)`` (or one window) -> the model's raw output, batch first."""
        return self._run(validate_windows(windows, self.window_samples))

    def scores(self, windows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Bona fide scores, one per window; higher means more genuine."""
        out = self.logits(windows)
        column = out if self._column is None else out[:, self._column]
        result: npt.NDArray[np.float32] = (self._sign * column).astype(np.float32, copy=False)
        return result
