"""Training and fine-tuning AASIST / AASIST-L, with exact resume.

Determinism is by construction, so a run interrupted and resumed ends with
the same weights as one that never stopped (on the same device):

* the batch order of epoch ``e`` is a permutation seeded by ``(seed, e)``;
* each example's crop and augmentation use a generator seeded by
  ``(seed, e, position)``, independent of threads and of where a run resumed;
* the torch RNG (dropout, frequency masks) is saved in every checkpoint.

A checkpoint holds the model, optimiser, scheduler, progress and RNG state;
the last ``keep_checkpoints`` are kept, plus ``best.pth`` by dev EER.
SIGINT/SIGTERM finish the current batch, save a checkpoint and return.
``--resume`` continues from the newest checkpoint that can be read (one cut
short or damaged is moved aside, with a warning). One run at a time writes
an ``out_dir``: it holds ``out_dir/.spoofwatch.lock`` while it lives.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import signal
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from spoofwatch.audio import official_window, read_audio
from spoofwatch.calibration.dataset import Dataset, check_dataset
from spoofwatch.calibration.metrics import eer
from spoofwatch.calibration.protocol import Trial
from spoofwatch.constants import WINDOW_SAMPLES
from spoofwatch.errors import DatasetError, ModelError
from spoofwatch.paths import OUTPUT_LOCK_NAME, PARTIAL_SUFFIX, lock_output, partial_path

from .aasist import AASIST
from .runtime import batch_cap
from .train_config import TrainConfig
from .weights import load_torch_model

log = logging.getLogger(__name__)
CHECKPOINT_GLOB = "ckpt-*.pt"
#: What every training checkpoint holds (see Trainer.save_checkpoint).
CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "progress", "torch_rng", "cuda_rng")
#: A checkpoint that cannot be read is renamed so, out of CHECKPOINT_GLOB (and
#: of the rotation, which would otherwise keep it as the newest).
UNREADABLE_SUFFIX = ".unreadable"


@dataclass
class Progress:
    epoch: int = 0  # next epoch to run
    batch: int = 0  # batches already done in that epoch
    global_step: int = 0
    best_eer: float = math.inf
    best_epoch: int = -1
    history: list[dict[str, Any]] = field(default_factory=list)
    #: Training loss of the current epoch so far (checkpointed: an epoch resumed
    #: mid-way still reports the mean over all its batches).
    epoch_loss_sum: float = 0.0
    epoch_loss_batches: int = 0


@dataclass(frozen=True)
class TrainResult:
    interrupted: bool
    progress: Progress
    best_weights: Path | None
    onnx: Path | None


def random_crop(audio: npt.NDArray[np.float32], rng: np.random.Generator) -> npt.NDArray[np.float32]:
    """A random 64,600-sample crop, or the clip repeated to that length (official recipe)."""
    if audio.size > WINDOW_SAMPLES:
        start = int(rng.integers(0, audio.size - WINDOW_SAMPLES + 1))
        return audio[start : start + WINDOW_SAMPLES]
    return official_window(audio)


def cosine_factor(step: int, total: int, floor: float) -> float:
    """LR multiplier annealing from 1 to ``floor`` over ``total`` steps."""
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))


def _trials_digest(trials: list[Trial]) -> str:
    """SHA-256 of a protocol's utterances and labels, in order."""
    text = "\n".join(f"{t.utt} {t.attack} {t.label}" for t in trials)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_decodable(paths: Iterable[Path]) -> None:
    """Every file's header can be read (``soundfile.info``; cheap, no decode)."""
    import soundfile

    bad = []
    for path in paths:
        try:
            soundfile.info(os.fsencode(path))  # a name that is not UTF-8 too
        except (RuntimeError, OSError) as exc:  # soundfile.LibsndfileError is a RuntimeError
            bad.append(f"{path} ({exc})")
    if bad:
        raise DatasetError(
            f"{len(bad)} audio file(s) cannot be decoded: {'; '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}"
        )


class CheckpointDamaged(ModelError):
    """A file that is not a whole training checkpoint (cut short, damaged, or
    something else): a resume moves past it. A checkpoint that could not be
    read for another reason (an I/O error) is a plain :class:`ModelError`."""


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A training checkpoint's state, on the CPU (the model and optimiser move
    it where they live), or :class:`CheckpointDamaged` saying in one line why
    ``path`` is none: torch's own errors (EOFError, UnpicklingError, a zip
    RuntimeError) are tracebacks, and a state dict (a best.pth copied into
    checkpoints/) failed later with KeyError 'model'."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except OSError as exc:  # the disk, not the file: nothing to move aside
        raise ModelError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    except Exception as exc:  # torch raises whatever its unpickler meets
        detail = (str(exc).splitlines() or ["the file ends early"])[0][:160]
        raise CheckpointDamaged(f"{path}: unreadable ({type(exc).__name__}: {detail})") from None
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        what = (
            "a state dict (weights only, like best.pth)" if isinstance(state, dict) else type(state).__name__
        )
        raise CheckpointDamaged(
            f"{path}: not a training checkpoint: it is {what}, without {', '.join(missing)}; "
            f"expected a checkpoint `spoofwatch train` saved ({', '.join(CHECKPOINT_KEYS)})"
        )
    tables = ("model", "optimizer", "scheduler", "progress")
    progress_fields = {f.name for f in dataclasses.fields(Progress)}
    if (
        not all(isinstance(state[k], dict) for k in tables)
        or not set(state["progress"]) <= progress_fields
        or not isinstance(state["torch_rng"], torch.Tensor)
    ):
        raise CheckpointDamaged(
            f"{path}: a damaged training checkpoint: expected tables for {', '.join(tables)} (progress "
            f"with fields among {', '.join(sorted(progress_fields))}) and a tensor for torch_rng"
        )
    return state  # type: ignore[no-any-return]


def _training_dataset(protocol: Path, audio_dir: Path) -> Dataset:
    """``check_dataset`` without the calibrate commands' ``--skip-missing``
    advice: train has no such option, and trains on every file listed."""
    hint = (
        f"training needs every file its protocols list: restore them, or remove their lines from {protocol}"
    )
    return check_dataset(protocol, audio_dir, missing_hint=hint)


class Trainer:
    def __init__(
        self,
        config: TrainConfig,
        init: str | None = None,
        resume: bool = False,
        init_weights: Path | None = None,
        progress_bar: bool = True,
        on_metrics: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.config = config
        self.progress_bar = progress_bar
        self.on_metrics = on_metrics
        self.device = torch.device(
            "cuda" if config.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
        )
        if config.device == "cuda" and self.device.type != "cuda":
            raise ModelError("training config asks for device 'cuda' but torch sees no GPU")
        if resume and (init is not None or init_weights is not None):
            # The weights come from the checkpoint: a start would be ignored.
            raise ModelError("--resume continues from the run's checkpoint; drop --init/--init-weights")
        # Held while this trainer lives (the kernel drops it if the process
        # dies): two runs into one out_dir interleaved their metrics and
        # overwrote each other's checkpoints and best.pth.
        release = lock_output(config.out_dir / OUTPUT_LOCK_NAME, f"out_dir {config.out_dir}")
        try:
            self._set_up(config, init, resume, init_weights)
        except BaseException:  # a trainer that never was: its traceback must not keep the lock
            release()
            raise
        weakref.finalize(self, release)

    def _set_up(self, config: TrainConfig, init: str | None, resume: bool, init_weights: Path | None) -> None:
        """The rest of ``__init__``, with the out_dir's lock held."""
        self.train_set = _training_dataset(config.train_protocol, config.train_audio_dir)
        self.dev_set = _training_dataset(config.dev_protocol, config.dev_audio_dir)
        for dataset in (self.train_set, self.dev_set):
            # A file that cannot be decoded would stop the run mid-epoch, losing
            # the work since the last checkpoint: find it now (headers only).
            check_decodable(dataset.paths.values())
        for what, dataset, protocol in (
            ("train", self.train_set, config.train_protocol),  # one class teaches nothing to tell apart
            ("dev", self.dev_set, config.dev_protocol),  # its EER, after every epoch, needs both
        ):
            labels = {t.label for t in dataset.trials}
            if labels != {"bonafide", "spoof"}:
                raise DatasetError(
                    f"{protocol}: the {what} set needs bona fide and spoof utterances, "
                    f"got only {', '.join(sorted(labels))}"
                )
        shared = {t.utt for t in self.train_set.trials} & {t.utt for t in self.dev_set.trials}
        if shared:  # a dev EER on training data says nothing about the model chosen on it
            log.warning(
                "%d utterance(s) are in both the train and the dev protocols (e.g. %s): the dev EER "
                "that chooses best.pth is measured partly on training data",
                len(shared),
                sorted(shared)[0],
            )
        torch.manual_seed(config.seed)
        self.model_config = config.model_config()
        self.model = self._build_model(init, init_weights).to(self.device)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=config.base_lr, betas=(0.9, 0.999), weight_decay=config.weight_decay
        )
        total = config.epochs * self.batches_per_epoch
        floor = config.lr_min / config.base_lr
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: cosine_factor(s, total, floor)
        )
        self.loss_fn = nn.CrossEntropyLoss(weight=torch.tensor(config.class_weights, device=self.device))
        self.progress = Progress()
        self.out_dir = config.out_dir
        self.ckpt_dir = self.out_dir / "checkpoints"
        if not resume and self.checkpoints():
            # A second run here would rotate its own checkpoints away (the old
            # run's steps sort after them) and mix both runs' metrics.
            raise ModelError(
                f"{self.ckpt_dir} holds another run's checkpoints: pass --resume to continue it, "
                "or choose a new out_dir"
            )
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        self._remove_partial_files()
        self._stop = False
        if resume:
            self._resume()
        elif (stale := self.out_dir / "metrics.jsonl").is_file():
            # Left by a run stopped before its first checkpoint: this run
            # starts again from step 1, and would log those steps twice.
            log.info("%s: a run without checkpoints; starting it afresh", stale)
            stale.unlink()

    # ---- setup -------------------------------------------------------------

    def _build_model(self, init: str | None, init_weights: Path | None) -> AASIST:
        if init is not None and init_weights is not None:
            raise ModelError("--init and --init-weights are exclusive: start from one set of weights")
        if init_weights is not None:
            # Your own weights (e.g. an earlier fine-tune's best.pth), loaded strictly
            # into this config's architecture, overrides included.
            log.info("fine-tuning from %s", init_weights)
            return load_torch_model(self.config.model, init_weights, self.model_config).train()
        if init is None:
            return AASIST(self.model_config)
        if self.config.model_overrides:
            raise ModelError(
                "--init loads official weights, which need the official architecture (no model_overrides)"
            )
        log.info("fine-tuning from the official %s weights", init)
        return load_torch_model(init).train()

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.train_set.trials) / self.config.batch_size)

    # ---- checkpoints -------------------------------------------------------

    def checkpoints(self) -> list[Path]:
        return sorted(self.ckpt_dir.glob(CHECKPOINT_GLOB))

    def _remove_partial_files(self) -> None:
        """Drop files a run killed mid-write left (a checkpoint's can be large):
        with the lock held, no live run is writing them."""
        stale = [*self.ckpt_dir.glob(f"*{PARTIAL_SUFFIX}"), *self.out_dir.glob(f"*{PARTIAL_SUFFIX}")]
        for path in stale:
            path.unlink(missing_ok=True)
        if stale:
            log.info("%s: removed %d partial file(s) of an earlier run", self.out_dir, len(stale))

    def save_checkpoint(self) -> Path:
        p = self.progress
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "progress": asdict(p),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "model_config": asdict(self.model_config),
            "recipe": self._recipe(),
        }
        path = self.ckpt_dir / f"ckpt-{p.global_step:08d}-e{p.epoch:03d}-b{p.batch:05d}.pt"
        tmp = partial_path(path)
        torch.save(state, tmp)
        tmp.replace(path)
        for old in self.checkpoints()[: -self.config.keep_checkpoints]:
            old.unlink()
        return path

    def _recipe(self) -> dict[str, Any]:
        """What decides the batches and the schedule of a run: a resumed run must
        keep it, or it would misread its batch position and learning rate."""
        c = self.config
        fields = (
            "model",
            "epochs",
            "batch_size",
            "seed",
            "base_lr",
            "lr_min",
            "weight_decay",
            "class_weights",
        )
        recipe: dict[str, Any] = {name: getattr(c, name) for name in fields}
        recipe["class_weights"] = list(c.class_weights)
        recipe["augment"] = json.loads(json.dumps(asdict(c.augment), default=list))
        recipe["model_overrides"] = json.loads(json.dumps(c.model_overrides))
        recipe["train_utterances"] = len(self.train_set.trials)
        # The data itself, in order (it decides the batches; dev decides which
        # epoch is "best"): another protocol of the same length is another run.
        recipe["train_data"] = _trials_digest(self.train_set.trials)
        recipe["dev_data"] = _trials_digest(self.dev_set.trials)
        return recipe

    def _newest_readable_checkpoint(self) -> tuple[Path, dict[str, Any]]:
        """The newest checkpoint that reads as one, newest first: one cut short
        (a full disk, a copy) or damaged is moved aside to ``*.unreadable``, with
        a warning, once an older one is found to resume from instead."""
        checkpoints = self.checkpoints()
        if not checkpoints:
            raise ModelError(f"--resume: no checkpoint in {self.ckpt_dir}")
        unreadable: list[tuple[Path, str]] = []
        for path in reversed(checkpoints):
            try:
                state = read_checkpoint(path)
            except CheckpointDamaged as exc:
                unreadable.append((path, str(exc)))
                continue
            for bad, why in unreadable:
                aside = bad.with_name(bad.name + UNREADABLE_SUFFIX)
                bad.replace(aside)
                log.warning("%s; moved aside to %s, resuming from the older %s", why, aside.name, path.name)
            return path, state
        reasons = "; ".join(why for _, why in unreadable)
        raise ModelError(
            f"--resume: no readable checkpoint in {self.ckpt_dir}: {reasons}. "
            "Start a new run in another out_dir (or restore a checkpoint)"
        )

    def _resume(self) -> None:
        newest, state = self._newest_readable_checkpoint()
        now = self._recipe()
        # Checkpoints of older releases carry no recipe, or fewer of its keys.
        recipe = state.get("recipe")
        saved: dict[str, Any] = recipe if isinstance(recipe, dict) else {}
        differ = [k for k in now if k in saved and saved[k] != now[k]]
        if differ:
            changed = ", ".join(f"{k} ({saved[k]!r} -> {now[k]!r})" for k in differ)
            raise ModelError(
                f"--resume: the config differs from the run's in {changed}; use the run's config"
            )
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["torch_rng"].cpu())
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise ModelError(
                f"--resume: {newest} does not fit this run's model or optimiser ({detail}); "
                "use the run's config"
            ) from None
        self.progress = Progress(**state["progress"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        log.info(
            "resumed from %s (epoch %d, batch %d)",
            newest.name,
            self.progress.epoch,
            self.progress.batch,
        )
        self._cut_metrics_to_checkpoint()

    def _cut_metrics_to_checkpoint(self) -> None:
        """Drop the records of steps and epochs after the checkpoint (a run that
        crashed between checkpoints logged them, and they are about to be run again)."""
        path = self.out_dir / "metrics.jsonl"
        if not path.is_file():
            return
        p = self.progress
        lines = path.read_text("utf-8").splitlines(keepends=True)
        kept = []
        damaged = 0
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut off by the crash
                continue
            # Valid JSON but no record of this trainer's (an edit, another
            # tool's line) cannot be placed before or after the checkpoint, and
            # would break every reader of the file: it goes too.
            if not isinstance(record, dict):
                damaged += 1
                continue
            position = record.get("step" if record.get("type") == "step" else "epoch", 0)
            if not isinstance(position, int) or isinstance(position, bool):
                damaged += 1
                continue
            if record.get("type") == "step" and position > p.global_step:
                continue
            if record.get("type") == "epoch" and position >= p.epoch:
                continue
            kept.append(line)
        if damaged:
            log.warning(
                "%s: dropped %d line(s) that are not metrics records (expected JSON objects with an "
                "integer step or epoch)",
                path,
                damaged,
            )
        if len(kept) != len(lines):
            log.info("metrics.jsonl: dropped %d records logged after the checkpoint", len(lines) - len(kept))
            tmp = partial_path(path)
            tmp.write_text("".join(kept), "utf-8")
            tmp.replace(path)

    # ---- data --------------------------------------------------------------

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        order = np.random.default_rng([self.config.seed, epoch]).permutation(len(self.train_set.trials))
        size = self.config.batch_size
        return [order[i : i + size].tolist() for i in range(0, order.size, size)]

    def _example(self, epoch: int, index: int) -> tuple[npt.NDArray[np.float32], int]:
        trial: Trial = self.train_set.trials[index]
        rng = np.random.default_rng([self.config.seed, epoch, index])
        x = random_crop(read_audio(self.train_set.paths[trial.utt]), rng)
        return self.config.augment.apply(x, rng), int(trial.label == "bonafide")

    def load_batch(
        self, pool: ThreadPoolExecutor, epoch: int, indices: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        examples = list(pool.map(lambda i: self._example(epoch, i), indices))
        x = torch.from_numpy(np.stack([e[0] for e in examples]))
        y = torch.tensor([e[1] for e in examples], dtype=torch.long)
        return x.to(self.device), y.to(self.device)

    # ---- steps -------------------------------------------------------------

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        self.model.train()
        # Mixed precision on CUDA (bf16 needs no loss scaling); full precision on CPU.
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if self.device.type == "cuda"
            else contextlib.nullcontext()
        )
        with autocast:
            logits = self.model(x)  # (B, 2)
            loss = self.loss_fn(logits.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.item())

    def dev_eer(self, pool: ThreadPoolExecutor) -> float:
        """EER (%) on the dev set, official first-window inputs."""
        self.model.eval()
        scores: list[float] = []
        trials = self.dev_set.trials
        size = self.config.batch_size
        with torch.inference_mode():
            for i in range(0, len(trials), size):
                batch = trials[i : i + size]
                audio = list(
                    pool.map(lambda t: official_window(read_audio(self.dev_set.paths[t.utt])), batch)
                )
                windows = torch.from_numpy(np.stack(audio))
                # cuDNN's MaxPool limit caps one forward pass on CUDA (see runtime).
                cap = batch_cap(str(self.device))
                for start in range(0, windows.shape[0], cap):
                    logits = self.model(windows[start : start + cap].to(self.device))
                    scores += logits[:, 1].float().cpu().tolist()
        s = np.array(scores)
        labels = np.array([t.label for t in trials])
        return 100 * eer(s[labels == "bonafide"], s[labels == "spoof"])[0]

    # ---- the loop ----------------------------------------------------------

    @contextlib.contextmanager
    def _stop_on_signals(self) -> Iterator[None]:
        def request_stop(signum: int, frame: Any) -> None:
            log.warning("signal %d: finishing this batch, saving a checkpoint and stopping", signum)
            self._stop = True

        previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _emit(self, record: dict[str, Any]) -> None:
        with (self.out_dir / "metrics.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.on_metrics:
            self.on_metrics(record)

    def run(self, max_batches: int | None = None) -> TrainResult:
        """Train to the configured epoch count (or stop after ``max_batches`` this call)."""
        from tqdm import tqdm

        p = self.progress
        done_this_call = 0
        with self._stop_on_signals(), ThreadPoolExecutor(self.config.decode_workers) as pool:
            while p.epoch < self.config.epochs:
                batches = self.epoch_batches(p.epoch)
                started = time.perf_counter()
                bar = tqdm(
                    total=len(batches),
                    initial=p.batch,
                    desc=f"epoch {p.epoch}",
                    disable=not self.progress_bar,
                    leave=False,
                )
                while p.batch < len(batches):
                    loss = self.train_step(*self.load_batch(pool, p.epoch, batches[p.batch]))
                    if not math.isfinite(loss):
                        raise ModelError(f"training loss became {loss} at step {p.global_step}")
                    p.epoch_loss_sum += loss
                    p.epoch_loss_batches += 1
                    p.batch += 1
                    p.global_step += 1
                    done_this_call += 1
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}")
                    self._emit(
                        {
                            "type": "step",
                            "epoch": p.epoch,
                            "step": p.global_step,
                            "loss": loss,
                            "lr": self.scheduler.get_last_lr()[0],
                        }
                    )
                    if self._stop or (max_batches is not None and done_this_call >= max_batches):
                        bar.close()
                        self.save_checkpoint()
                        return TrainResult(True, p, self._best_path(), None)
                bar.close()
                self._end_epoch(pool, time.perf_counter() - started)
        return TrainResult(False, p, self._best_path(), self._export_best())

    def _end_epoch(self, pool: ThreadPoolExecutor, seconds: float) -> None:
        p = self.progress
        dev = self.dev_eer(pool)
        if dev < p.best_eer:
            p.best_eer, p.best_epoch = dev, p.epoch
            best = self.out_dir / "best.pth"
            tmp = partial_path(best)
            torch.save(self.model.state_dict(), tmp)
            tmp.replace(best)
        record = {
            "type": "epoch",
            "epoch": p.epoch,
            "train_loss": p.epoch_loss_sum / p.epoch_loss_batches if p.epoch_loss_batches else None,
            "dev_eer_percent": dev,
            "best_eer_percent": p.best_eer,
            "best_epoch": p.best_epoch,
            "lr": self.scheduler.get_last_lr()[0],
            "seconds": seconds,
        }
        p.history.append(record)
        p.epoch += 1
        p.batch = 0
        p.epoch_loss_sum, p.epoch_loss_batches = 0.0, 0
        self.save_checkpoint()
        self._emit(record)

    def _best_path(self) -> Path | None:
        path = self.out_dir / "best.pth"
        return path if path.is_file() else None

    def _export_best(self) -> Path | None:
        from .export import export_onnx

        best = self._best_path()
        if best is None:
            return None
        out = self.out_dir / "best.onnx"
        export_onnx(self.config.model, out, best, self.model_config)
        return out
