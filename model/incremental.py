"""Exact incremental AASIST encoder for sliding windows: geometry, graphs, ONNX export.

Why it is exact. The encoder is a sinc filterbank, a (3, 3) max pooling and
six residual blocks, each a pair of time-kernel-3 convolutions with zero
padding and a stride-3 max pooling. A frame of level ``l`` (``l = 1`` after
the front end, ``l = 7`` the encoder output) covers ``3**l`` input samples.
When the window slides by ``hop`` samples and ``hop`` is a multiple of
``3**l``, every frame of level ``l`` whose receptive field stays clear of the
window's zero padding is bit-for-bit the frame ``hop / 3**l`` places later in
the previous window. Only three kinds of frame must be computed again:

* the first frame of each level (the left zero padding of its convolutions),
* the last ``right_dirty`` frames (the right zero padding) and
* the ``shift = hop / 3**l`` frames that are new at the end.

So a step caches, per level, the few clean frames that later steps read:
``slots`` (frames 1..4 of each of the next windows, which feed the first
frame of the level above), ``context`` (the clean frames just before the new
ones, which the convolutions of the level above need) and, for the deepest
incremental level, the whole level (the last block is always recomputed:
it is cheap, and that lets any multiple of ``3**6 = 729`` samples work).
Nothing here approximates: a step is the full forward pass on the same
samples with the already-known frames read from the cache.

Level 1 (the front end) has no padding, so its frames are recomputed from
samples: the step graph reads the window's first ``head_samples`` and its
last ``tail_samples``.

Two ONNX graphs per model and hop, exported once and cached beside the full
export: ``init`` (a full forward pass that also emits the state) and
``step`` (state and the window's head and tail samples -> logits and the
next state). Both have a dynamic batch axis, so steps of several streams
can share one ONNX Runtime call.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from spoofwatch.constants import SAMPLE_RATE_HZ, WINDOW_SAMPLES
from spoofwatch.errors import InputError, ModelError
from spoofwatch.paths import cache_tempfile, onnx_dir

from .aasist import AASIST, ResidualBlock
from .cached import Cached, check, forget, install, record, record_legacy
from .config import ModelConfig, load_model_config
from .export import EXPORT_MAX_BATCH, export_graph, reexport_unrecorded
from .precision import validate_precision
from .quantize import QUANT_VERSION, check_source, convert_fp16
from .weights import load_torch_model, sha256_file

log = logging.getLogger(__name__)

#: Bumped when the incremental graphs change, so old cached graphs are not reused.
INCREMENTAL_VERSION = 1
#: Precisions the incremental graphs are built at: INT8 is slower than FP32 on
#: the CPU it targets (see ``quantize``), so it has no incremental variant.
INCREMENTAL_PRECISIONS = ("fp32", "fp16")
#: Largest |incremental - full| logit difference (PyTorch, float32) an export may show.
INCREMENTAL_PARITY_TOL = 1e-4
#: Time pooling factor of the front end and of every residual block.
POOL = 3
#: Frames of a level that determine its next level's first (pooled) frame:
#: one pooling group (3) plus the two frames the two kernel-3 convolutions reach.
HEAD_FRAMES = 5
#: Pre-pool frames at the left of a recomputed segment that see the segment's
#: own zero padding (conv1 and conv2 each reach one frame) and are discarded.
SEGMENT_DIRTY = 2

STEP_INPUTS = ("head_audio", "tail_audio")
INIT_INPUT = "waveform"
LOGITS = "logits"


@dataclass(frozen=True)
class Level:
    """Geometry of encoder level ``index`` (2..n_blocks) for one hop."""

    index: int
    #: Frames of the level in one window, and the level's channels.
    frames: int
    channels: int
    #: Frames at the right end that see the window's zero padding.
    right_dirty: int
    #: Frames the level moves by per hop (``hop / 3**index``).
    shift: int
    #: First frame (of the level below) the recomputed tail reads.
    tail_input_start: int
    #: Cached future heads (frames 1..4 of each of the next ``slots`` windows); 0 for the last level.
    slots: int
    #: Clean frames cached before the new ones; 0 for the last level (kept whole).
    context: int

    @property
    def tail_frames(self) -> int:
        """Frames recomputed at the end: the new ones and the padded ones."""
        return self.shift + self.right_dirty

    @property
    def clean_end(self) -> int:
        """One past the last frame clear of the right padding."""
        return self.frames - self.right_dirty


@dataclass(frozen=True)
class IncrementalPlan:
    """Everything static about the incremental encoder of one model at one hop."""

    model: str
    hop_samples: int
    window_samples: int
    sinc_taps: int
    spectral: int
    level1_frames: int
    #: Levels 2..n_blocks; the last one is cached whole and fed to the last block.
    levels: tuple[Level, ...]
    #: Samples at the window start that give the level-1 head (5 frames).
    head_samples: int
    #: Samples at the window end that give the recomputed level-1 frames.
    tail_samples: int
    #: Future window heads (``head_samples`` each) that lie inside one window.
    sample_slots: int
    #: ``(in, out)`` channels of each block, for the cost model.
    block_channels: tuple[tuple[int, int], ...]
    sinc_filters: int

    # ---- state shapes ------------------------------------------------------

    def state_names(self) -> list[str]:
        inner = self.levels[:-1]
        return (
            [f"slots{lv.index}" for lv in inner]
            + [f"context{lv.index}" for lv in inner]
            + [f"level{self.levels[-1].index}"]
        )

    def state_shapes(self) -> list[tuple[int, ...]]:
        """Per-stream shapes (no batch axis), in ``state_names`` order."""
        s = self.spectral
        inner = self.levels[:-1]
        last = self.levels[-1]
        shapes: list[tuple[int, ...]] = [(lv.slots, lv.channels, s, HEAD_FRAMES - 1) for lv in inner]
        shapes += [(lv.channels, s, lv.context) for lv in inner]
        return [*shapes, (last.channels, s, last.frames)]

    def state_bytes(self) -> int:
        """float32 bytes of one stream's graph state."""
        return 4 * sum(int(np.prod(shape)) for shape in self.state_shapes())

    # ---- cost model (multiply-accumulates of the convolutions) ---------------

    def _sinc_macs(self, samples: int) -> int:
        return self.sinc_filters * self.sinc_taps * max(samples - self.sinc_taps + 1, 0)

    def _block_macs(self, block: int, frames: int) -> int:
        c_in, c_out = self.block_channels[block]
        s = self.spectral
        macs = c_out * c_in * 6 * (s + 1) * frames + c_out * c_out * 6 * s * frames
        if c_in != c_out:
            macs += c_out * c_in * 3 * s * frames
        return macs

    def full_macs(self) -> int:
        """Convolution MACs of one full forward pass (the graph back end is negligible)."""
        macs = self._sinc_macs(self.window_samples)
        frames = self.level1_frames
        for block in range(len(self.levels) + 1):
            macs += self._block_macs(block, frames)
            frames //= POOL
        return macs

    def step_macs(self) -> int:
        """Convolution MACs of one incremental step."""
        macs = self._sinc_macs(self.head_samples) + self._sinc_macs(self.tail_samples)
        below = self.level1_frames
        for block, lv in enumerate(self.levels):
            macs += self._block_macs(block, HEAD_FRAMES)
            macs += self._block_macs(block, below - lv.tail_input_start)
            below = lv.frames
        return macs + self._block_macs(len(self.levels), self.levels[-1].frames)


def _clean_right(prev_frames: int, prev_dirty: int) -> int:
    """Last clean pooled frame of a block whose input has ``prev_dirty`` padded frames at the right.

    Pre-pool frame t is clean when conv2 (reading conv1 at t - 1..t + 1, each
    reading the input at t - 1..t + 1) stays on clean input: t <= L - d - 3.
    Pooled frame j covers pre-pool 3j..3j+2.
    """
    return (prev_frames - prev_dirty - 5) // POOL


def hop_incompatibility(hop_samples: int, n_blocks: int = 6) -> str | None:
    """Why ``hop_samples`` cannot be scored incrementally, or ``None`` when it can."""
    stride = POOL**n_blocks
    if hop_samples % stride:
        # The multiples of the stride either side, within one window (a hop is at most a window).
        below, above = hop_samples // stride * stride, (hop_samples // stride + 1) * stride
        usable = [h for h in dict.fromkeys((below, above)) if stride <= h <= WINDOW_SAMPLES]
        if not usable:
            return f"hop of {hop_samples} samples is longer than a window ({WINDOW_SAMPLES} samples)"
        return (
            f"hop of {hop_samples} samples is not a multiple of {stride} samples (3^{n_blocks}), "
            f"so the encoder's frames do not line up between windows; nearest usable "
            + (
                f"hops: {usable[0]} or {usable[1]} samples"
                if len(usable) == 2
                else f"hop: {usable[0]} samples"
            )
        )
    return None


def plan_for(config: ModelConfig, hop_samples: int, window_samples: int = WINDOW_SAMPLES) -> IncrementalPlan:
    """The incremental geometry of ``config`` at ``hop_samples``; InputError if the hop does not allow it."""
    stages = [
        config.filts[0],
        config.filts[1],
        config.filts[2],
        config.filts[3],
        config.filts[3],
        config.filts[3],
    ]
    n_blocks = len(stages)
    reason = hop_incompatibility(hop_samples, n_blocks)
    if reason is not None:
        raise InputError(f"incremental scoring: {reason}")
    if not 0 < hop_samples < window_samples:
        raise InputError(
            f"incremental scoring: expected 0 < hop < {window_samples} samples, got {hop_samples}"
        )
    taps = config.first_conv + 1 if config.first_conv % 2 == 0 else config.first_conv
    spectral = config.sinc_channels // POOL
    level1 = (window_samples - taps + 1) // POOL
    head_samples = POOL * HEAD_FRAMES + taps - 1

    # Frame counts and right padding per level (level 1 has none: no padding in the front end).
    frames = [0, level1]
    dirty = [0, 0]
    for _ in range(n_blocks):
        below, below_dirty = frames[-1], dirty[-1]
        frames.append(below // POOL)
        dirty.append(frames[-1] - 1 - _clean_right(below, below_dirty))
    # Left padding: one frame per level (ceil((1 + 2) / 3) = 1), which the step recomputes.

    levels: list[Level] = []
    incremental = range(2, n_blocks + 1)  # the last block (level n_blocks + 1) is always recomputed
    for index in incremental:
        p, b = frames[index], dirty[index]
        shift = hop_samples // POOL**index
        tail_frames = shift + b
        start = POOL * (p - tail_frames) - SEGMENT_DIRTY
        last = index == n_blocks
        slots = 0 if last else (p - b - HEAD_FRAMES) // shift
        levels.append(Level(index, p, stages[index - 2][1], b, shift, start, slots, 0))
    # Context: the clean frames before the new ones that the next tail reads,
    # and enough to cut the newest slot out of (context + new frames).
    for i, lv in enumerate(levels[:-1]):
        above = levels[i + 1]
        needed_by_tail = lv.frames - above.tail_input_start - lv.tail_frames
        needed_by_slot = lv.clean_end - (lv.slots + 1) * lv.shift - 1
        context = max(needed_by_tail, needed_by_slot, 0)
        levels[i] = Level(
            lv.index, lv.frames, lv.channels, lv.right_dirty, lv.shift, lv.tail_input_start, lv.slots, context
        )
    for lv in levels:
        problems = []
        if lv.tail_input_start < 1:
            problems.append("the recomputed tail reaches the window start")
        if lv.index < n_blocks and (lv.slots < 1 or lv.clean_end - lv.shift - lv.context < 1):
            problems.append("too few clean frames between windows")
        if lv.clean_end - lv.shift < 1:
            problems.append("no frame survives a hop")
        if problems:
            raise InputError(
                f"incremental scoring: a hop of {hop_samples} samples is too long for level {lv.index} "
                f"({'; '.join(problems)})"
            )
    tail_samples = window_samples - POOL * levels[0].tail_input_start
    return IncrementalPlan(
        model=config.name,
        hop_samples=hop_samples,
        window_samples=window_samples,
        sinc_taps=taps,
        spectral=spectral,
        level1_frames=level1,
        levels=tuple(levels),
        head_samples=head_samples,
        tail_samples=tail_samples,
        sample_slots=(window_samples - head_samples) // hop_samples,
        block_channels=tuple(stages),
        sinc_filters=config.sinc_channels,
    )


def _blocks(net: AASIST) -> list[ResidualBlock]:
    return [stage[0] for stage in net.encoder]  # type: ignore[index]


class InitGraph(nn.Module):
    """Full forward pass that also returns the step state.

    ``(B, 64600)`` waveforms -> logits ``(B, 2)`` and the state tensors of
    ``IncrementalPlan.state_names`` (each with a leading batch axis).
    """

    def __init__(self, net: AASIST, plan: IncrementalPlan) -> None:
        super().__init__()
        self.net = net
        self.plan = plan

    def forward(self, waveform: Tensor) -> tuple[Tensor, ...]:
        net, plan = self.net, self.plan
        blocks = _blocks(net)
        x = net.front_end(waveform)  # (B, 1, 23, 21490)
        slots: list[Tensor] = []
        contexts: list[Tensor] = []
        for block, lv in zip(blocks, plan.levels, strict=False):
            x = block(x)  # (B, C, 23, lv.frames)
            if lv is plan.levels[-1]:
                break
            # Frames 1..4 of each of the next windows: (B, slots, C, 23, 4).
            heads = [x[..., k * lv.shift + 1 : k * lv.shift + HEAD_FRAMES] for k in range(1, lv.slots + 1)]
            slots.append(torch.stack(heads, dim=1))
            contexts.append(x[..., lv.clean_end - lv.context : lv.clean_end])  # (B, C, 23, context)
        e = blocks[-1](x)  # (B, C, 23, 29)
        logits = net.classify(e)[1]
        return (logits, *slots, *contexts, x)


class StepGraph(nn.Module):
    """One incremental step.

    Inputs: ``head_audio (B, head_samples)`` (the window's first samples),
    ``tail_audio (B, tail_samples)`` (its last samples) and the state of the
    previous window (``IncrementalPlan.state_names`` order). Outputs: logits
    ``(B, 2)`` and the state for this window.
    """

    def __init__(self, net: AASIST, plan: IncrementalPlan) -> None:
        super().__init__()
        self.net = net
        self.plan = plan

    def forward(self, head_audio: Tensor, tail_audio: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        net, plan = self.net, self.plan
        blocks = _blocks(net)
        n_inner = len(plan.levels) - 1
        old_slots, old_contexts, old_last = state[:n_inner], state[n_inner : 2 * n_inner], state[-1]
        head = net.front_end(head_audio)  # (B, 1, 23, 5): frames 0..4 of level 1
        tail = net.front_end(tail_audio)  # (B, 1, 23, 21490 - start): frames [start, 21490)
        slots: list[Tensor] = []
        contexts: list[Tensor] = []
        last = old_last
        for i, (block, lv) in enumerate(zip(blocks, plan.levels, strict=False)):
            first = block(head)  # (B, C, 23, 1): frame 0, fresh (left padding)
            # Frames [frames - tail_frames, frames): the segment's own left padding
            # spoils its first SEGMENT_DIRTY pre-pool frames; the window's right padding is real.
            new = block.mp(block.pre_pool(tail)[..., SEGMENT_DIRTY:])  # (B, C, 23, tail_frames)
            if i == n_inner:
                # Deepest incremental level, cached whole: frame 0, the moved interior, the new end.
                moved = old_last[..., 1 + lv.shift : lv.clean_end]
                last = torch.cat([first, moved, new], dim=-1)  # (B, C, 23, frames)
                break
            # Known frames [clean_end - shift - context, clean_end - shift) and the new ones after them.
            known = torch.cat([old_contexts[i], new], dim=-1)  # (B, C, 23, context + tail_frames)
            origin = lv.clean_end - lv.shift - lv.context  # level frame of known[..., 0]
            k = lv.slots * lv.shift + 1 - origin
            newest = known[..., k : k + HEAD_FRAMES - 1].unsqueeze(1)  # (B, 1, C, 23, 4)
            slots.append(torch.cat([old_slots[i][:, 1:], newest], dim=1))  # (B, slots, C, 23, 4)
            contexts.append(known[..., lv.shift : lv.shift + lv.context])  # the new last clean frames
            head = torch.cat([first, old_slots[i][:, 0]], dim=-1)  # (B, C, 23, 5): frames 0..4
            tail = known[..., plan.levels[i + 1].tail_input_start - origin :]
        e = blocks[-1](last)  # (B, C, 23, 29)
        logits = net.classify(e)[1]
        return (logits, *slots, *contexts, last)


# ---- reference in numpy/torch, used by the export's parity gate and by tests ----


def window_parts(
    plan: IncrementalPlan, windows: npt.NDArray[np.float32]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """``(B, 64600)`` windows -> the step inputs ``head_audio``, ``tail_audio``."""
    head = np.ascontiguousarray(windows[:, : plan.head_samples])
    tail = np.ascontiguousarray(windows[:, plan.window_samples - plan.tail_samples :])
    return head, tail


def probe_stream(plan: IncrementalPlan, windows: int = 4, seed: int = 0) -> npt.NDArray[np.float32]:
    """Deterministic probe audio covering ``windows`` consecutive windows (noise bursts and a chirp)."""
    n = plan.window_samples + (windows - 1) * plan.hop_samples
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SAMPLE_RATE_HZ
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t)
    audio = 0.2 * envelope * rng.standard_normal(n) + 0.2 * np.sin(2 * np.pi * (150 + 400 * t) * t)
    return audio.astype(np.float32)


def torch_chain(
    net: AASIST, plan: IncrementalPlan, audio: npt.NDArray[np.float32], windows: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Logits of ``windows`` consecutive windows: (incremental, full), both PyTorch float32."""
    init, step = InitGraph(net, plan).eval(), StepGraph(net, plan).eval()
    cut = [audio[i * plan.hop_samples : i * plan.hop_samples + plan.window_samples] for i in range(windows)]
    batch = np.stack(cut).astype(np.float32)
    with torch.inference_mode():
        full = net(torch.from_numpy(batch)).numpy()
        out = init(torch.from_numpy(batch[:1]))
        logits, state = [out[0].numpy()], out[1:]
        for i in range(1, windows):
            head, tail = window_parts(plan, batch[i : i + 1])
            out = step(torch.from_numpy(head), torch.from_numpy(tail), *state)
            logits.append(out[0].numpy())
            state = out[1:]
    return np.concatenate(logits), full


# ---- export and cache ------------------------------------------------------


@dataclass(frozen=True)
class IncrementalPaths:
    init: Path
    step: Path


def cached_incremental_paths(
    model: str, hop_samples: int, weights: Path | None = None, precision: str = "fp32"
) -> IncrementalPaths:
    """Cache location of the incremental graphs for these exact weights, hop and precision."""
    prec = _incremental_precision(precision)
    config = load_model_config(model)
    digest = config.weights_sha256 if weights is None else sha256_file(weights)
    stem = f"{config.name}-{digest[:16]}-inc{hop_samples}-v{INCREMENTAL_VERSION}"
    if prec != "fp32":
        stem += f"-{prec}-q{QUANT_VERSION}"
    return IncrementalPaths(onnx_dir() / f"{stem}-init.onnx", onnx_dir() / f"{stem}-step.onnx")


def _export(
    module: nn.Module,
    args: tuple[Tensor, ...],
    state: tuple[Tensor, ...],
    names: list[str],
    outputs: list[str],
    out: Path,
) -> None:
    # Every input, the varargs state included, has a dynamic batch axis.
    batch = torch.export.Dim("batch", min=1, max=EXPORT_MAX_BATCH)
    dynamic: tuple[object, ...] = tuple({0: batch} for _ in args)
    if state:
        args = (*args, *state)
        dynamic = (*dynamic, tuple({0: batch} for _ in state))
    export_graph(module, args, out, names, outputs, dynamic)


def export_incremental(
    model: str, hop_samples: int, paths: IncrementalPaths, weights: Path | None = None
) -> float:
    """Export both graphs; install them only if the PyTorch chain matches the full model.

    Returns the max |incremental - full| logit difference of the parity probe.
    """
    net = load_torch_model(model, weights)
    plan = plan_for(net.config, hop_samples)
    audio = probe_stream(plan)
    incremental, full = torch_chain(net, plan, audio, 4)
    diff = float(np.max(np.abs(incremental - full)))
    if not diff <= INCREMENTAL_PARITY_TOL:
        raise ModelError(
            f"incremental {model} at hop {hop_samples}: max |incremental - full| = {diff:.3g} "
            f"> {INCREMENTAL_PARITY_TOL}; not exported"
        )
    names = plan.state_names()
    example = torch.from_numpy(np.stack([audio[: plan.window_samples]] * 2))
    paths.init.parent.mkdir(parents=True, exist_ok=True)
    tmp: list[Path] = []
    try:
        for _ in range(2):
            fd, name = cache_tempfile(paths.init.parent, ".onnx")
            os.close(fd)
            tmp.append(Path(name))
        log.info("exporting the incremental %s graphs for a hop of %d samples", model, hop_samples)
        init, step = InitGraph(net, plan).eval(), StepGraph(net, plan).eval()
        with torch.inference_mode():
            state = init(example)[1:]
        head, tail = window_parts(plan, example.numpy())
        try:
            _export(init, (example,), (), [INIT_INPUT], [LOGITS, *names], tmp[0])
            _export(
                step,
                (torch.from_numpy(head), torch.from_numpy(tail)),
                tuple(state),
                [*STEP_INPUTS, *names],
                [LOGITS, *(f"{n}_out" for n in names)],
                tmp[1],
            )
        except Exception as exc:  # the exporter raises a zoo of types
            raise ModelError(f"incremental ONNX export of {model} failed: {exc}") from exc
        install(tmp[0], paths.init)
        install(tmp[1], paths.step)
    finally:
        for path in tmp:
            path.unlink(missing_ok=True)
    log.info("exported incremental %s (hop %d) -> %s (max diff %.2g)", model, hop_samples, paths.step, diff)
    return diff


def precision_unsupported(precision: str) -> str | None:
    """Why the incremental graphs cannot be built at ``precision`` (``None``: they can)."""
    if precision in INCREMENTAL_PRECISIONS:
        return None
    return f"the incremental encoder runs at {' or '.join(INCREMENTAL_PRECISIONS)}, not {precision}"


def _incremental_precision(precision: str) -> str:
    prec = validate_precision(precision)
    reason = precision_unsupported(prec)
    if reason is not None:
        raise InputError(reason)
    return prec


def ensure_incremental_onnx(
    model: str, hop_samples: int, weights: Path | None = None, precision: str = "fp32"
) -> IncrementalPaths:
    """The cached incremental graphs of ``model`` at ``hop_samples``, exported on first use.

    FP16 graphs (for the CUDA provider) are converted from the FP32 pair like
    the full model's (``convert_fp16``: FP32 inputs, outputs and state, the
    sinc front end kept FP32) and, like it, refused when they were not made
    from the FP32 files in use. FP16 steps are not exact against FP32: they
    round like the FP16 full-window graph does.
    """
    prec = _incremental_precision(precision)
    paths = cached_incremental_paths(model, hop_samples, weights)
    if not (paths.init.is_file() and paths.step.is_file()) or any(
        reexport_unrecorded(p) for p in (paths.init, paths.step)
    ):
        export_incremental(model, hop_samples, paths, weights)
    if prec == "fp32":
        return paths
    variant = cached_incremental_paths(model, hop_samples, weights, prec)
    for source, target in ((paths.init, variant.init), (paths.step, variant.step)):
        if not target.is_file():
            log.info("no cached %s incremental graph %s yet; building it", prec, target.name)
            forget(target)  # a stale digest (the file deleted by hand) must not refuse the new file
            convert_fp16(source, target)
            record(target)
        check_source(target, source, "fp16")
        if check(target) is Cached.UNRECORDED:
            record_legacy(target)
    return variant
