"""Scoring a whole protocol: batched, parallel decoding, resumable.

Writes ``UTT ATTACK KEY SCORE`` lines (the official first-window score) to
the score file, flushed after every batch, and window scores at the stream
hop to ``<scores>.windows.jsonl`` beside it (``hop_s=0``: the first window
only, which is all that EER, min t-DCF and ``calibrate fit`` read: files
longer than one window then cost one window, not one per hop). A rerun skips utterances
already in the score file, so a killed run loses at most the batch in flight;
a partial last line (a run killed mid-write) is cut first. An utterance that
cannot be decoded, or whose score is not finite, is reported as failed and
not written. One run at a time writes a score file: it holds ``<scores>.lock``
(:func:`spoofwatch.paths.lock_output`) while it scores.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from spoofwatch.audio import official_window, read_audio
from spoofwatch.constants import SAMPLE_RATE_HZ, WINDOW_SAMPLES
from spoofwatch.errors import AudioError, InputError, ModelError
from spoofwatch.paths import lock_output, partial_path
from spoofwatch.stamps import changed_settings, write_stamp
from spoofwatch.stream.engine import MIN_HOP_S, Scorer
from spoofwatch.stream.windower import iter_windows

from .dataset import Dataset
from .protocol import SCORE_DECIMALS, Trial, score_value

log = logging.getLogger(__name__)
BATCH_FILES = 16


@dataclass(frozen=True)
class ScoreRun:
    scored: int
    skipped: int
    failed: list[str]
    files_per_s: float


def scored_lines(path: Path) -> tuple[dict[str, tuple[str, str]], list[str], list[str]]:
    """What a resume finds in ``path``: ``{utt: (attack, label)}`` and the lines
    of its complete scores (4 fields, a finite score, the utterance's first),
    and every other line."""
    done: dict[str, tuple[str, str]] = {}
    kept: list[str] = []
    bad: list[str] = []
    if path.is_file():
        for line in path.read_text("utf-8").splitlines():
            fields = line.split()
            if len(fields) == 4 and score_value(fields[3]) is not None and fields[0] not in done:
                done[fields[0]] = (fields[1], fields[2])
                kept.append(line)
            else:
                bad.append(line)
    return done, kept, bad


def keep_only(path: Path, kept: list[str], bad: list[str]) -> None:
    """Rewrite ``path`` without the ``bad`` lines (damage: an edit, a disk error),
    so that the utterances they name are scored again and the file reads back,
    rather than holding a bad line and a new one."""
    log.warning(
        "%s: removing %d line(s) that are not one complete score each before resuming (first: %r)",
        path,
        len(bad),
        bad[0][:80],
    )
    tmp = partial_path(path)
    tmp.write_text("".join(line + "\n" for line in kept), "utf-8")
    os.replace(tmp, path)


def check_done_against(done: dict[str, tuple[str, str]], trials: list[Trial], out: Path) -> None:
    """The lines a resume keeps must be this protocol's: the labels are copied
    into the score file, so a resume with a relabelled or another protocol
    would keep the old labels silently."""
    truth = {t.utt: (t.attack, t.label) for t in trials}
    for utt, labels in done.items():
        if truth.get(utt) != labels:
            now = (
                "it is not in this protocol"
                if utt not in truth
                else f"this protocol says '{' '.join(truth[utt])}'"
            )
            raise InputError(
                f"--out {out} scored {utt} as '{' '.join(labels)}' but {now}: "
                "it was scored from another protocol; use a new --out (or delete it to start again)"
            )


def drop_partial_line(path: Path) -> None:
    """Cut a last line that has no newline (a run killed mid-write, a full disk):
    appending to it would merge two records, and it may hold a cut-off score."""
    if not path.is_file():
        return
    with path.open("rb+") as fh:
        data = fh.read()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            log.warning("%s: dropping a partial last line: %r", path, data[keep:][:80])
            fh.truncate(keep)


def check_resume(out: Path, run: dict[str, object], notes: dict[str, object] | None = None) -> None:
    """Resume only what the same model and hop wrote: ``out``'s run is stamped
    in ``<out>.run.json``, and scores of another model or hop would otherwise
    be mixed in silently (or skipped as done)."""
    stamp = out.with_name(out.name + ".run.json")
    if out.is_dir():
        raise InputError(f"--out {out}: is a folder; expected a score file")
    if out.is_file() and out.stat().st_size > 0:
        changed = changed_settings(stamp, run)
        if changed is None:
            raise InputError(
                f"--out {out} already holds scores but no {stamp.name} says what wrote them: "
                "use a new --out (or delete the file to score again)"
            )
        if changed:
            raise InputError(
                f"--out {out} was scored with another {' and '.join(changed)} "
                f"({', '.join(f'{k}={v!r}' for k, v in changed.items())}): use a new --out to score "
                "with these settings (or delete it to start again)"
            )
        return
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_stamp(stamp, {**run, **(notes or {})})
    except OSError as exc:
        raise InputError(f"--out {out}: cannot write there: {exc.strerror or exc}") from None


def check_fit_matches_scores(scores: Path, stamp: dict[str, str]) -> None:
    """``calibrate fit``: a calibration is stamped with the model, weights and
    precision it is for, and must be the ones that made ``scores`` (as their
    ``<scores>.run.json`` says, when there is one: a score file from elsewhere
    has none)."""
    try:
        made = json.loads(scores.with_name(scores.name + ".run.json").read_text("utf-8")).get("calibration")
    except (OSError, ValueError, AttributeError):
        return
    if isinstance(made, dict) and made != stamp:
        differ = sorted(k for k in stamp if made.get(k) != stamp[k])
        raise InputError(
            f"{scores} was scored with {', '.join(f'{k}={made.get(k)!r}' for k in differ)}, but this fit is "
            f"for {', '.join(f'{k}={stamp[k]!r}' for k in differ)}: pass the --model, --weights and "
            "--precision the scores were made with"
        )


def check_hop_s(hop_s: float) -> None:
    """A window-score hop: 0 (the official first window only) or a finite hop of
    at least the shortest live hop (a near-zero hop would score every sample)."""
    if not (hop_s == 0 or (math.isfinite(hop_s) and hop_s >= MIN_HOP_S)):
        raise InputError(
            f"expected 0 (the first window only) or a hop of at least {MIN_HOP_S:g} s, got {hop_s:g}"
        )


def score_dataset(
    dataset: Dataset,
    scorer: Scorer,
    out: Path,
    hop_s: float,
    workers: int = 4,
    progress: bool = True,
    window_samples: int = WINDOW_SAMPLES,
    model_identity: str = "",
    calibration_stamp: dict[str, str] | None = None,
) -> ScoreRun:
    """Score ``dataset`` into ``out`` (``UTT ATTACK KEY SCORE`` lines) and its
    window scores beside it, resuming a run cut short: utterances already in
    ``out`` are skipped, if ``out`` was written for the same model
    (``model_identity``, e.g. ``OnnxScorer.identity``) and hop. The stamp also
    keeps ``calibration_stamp`` (model name, weights SHA-256, precision: what a
    calibration fitted on these scores must carry) for ``calibrate fit``."""
    check_hop_s(hop_s)
    if hop_s * SAMPLE_RATE_HZ > window_samples:
        # Windows further apart than their length would leave audio unscored
        # (the live engine refuses such a hop too).
        raise InputError(
            f"expected a hop of at most one window ({window_samples / SAMPLE_RATE_HZ:g} s), got {hop_s:g} s"
        )
    # Two runs into one file both appended every utterance (a file evaluate
    # then refuses): the second is refused before it reads the file.
    release = lock_output(out.with_name(out.name + ".lock"), f"--out {out}")
    try:
        return _score_locked(
            dataset, scorer, out, hop_s, workers, progress, window_samples, model_identity, calibration_stamp
        )
    finally:
        release()


def _score_locked(
    dataset: Dataset,
    scorer: Scorer,
    out: Path,
    hop_s: float,
    workers: int,
    progress: bool,
    window_samples: int,
    model_identity: str,
    calibration_stamp: dict[str, str] | None,
) -> ScoreRun:
    """:func:`score_dataset`, with ``out``'s lock held."""
    from tqdm import tqdm

    windows_path = out.with_name(out.name + ".windows.jsonl")
    check_resume(
        out,
        {"model": model_identity, "hop_s": hop_s, "window_samples": window_samples},
        {"calibration": calibration_stamp} if calibration_stamp else None,
    )
    for path in (out, windows_path):
        drop_partial_line(path)
    done, kept, bad = scored_lines(out)
    check_done_against(done, dataset.trials, out)
    if bad:  # once this protocol may resume it
        keep_only(out, kept, bad)
    todo = [t for t in dataset.trials if t.utt not in done]
    skipped = len(dataset.trials) - len(todo)
    hop = max(1, round(hop_s * SAMPLE_RATE_HZ)) if hop_s > 0 else None
    failed: list[str] = []
    start = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    with (
        out.open("a", encoding="utf-8") as scores_fh,
        windows_path.open("a", encoding="utf-8") as windows_fh,
        ThreadPoolExecutor(workers) as pool,
    ):
        bar = tqdm(total=len(todo), unit="file", disable=not progress, desc="scoring")
        batches = [todo[i : i + BATCH_FILES] for i in range(0, len(todo), BATCH_FILES)]

        def submit(batch: list[Trial]) -> list[Future[np.ndarray | AudioError]]:
            return [pool.submit(_decode, dataset.paths[t.utt]) for t in batch]

        # Decoding runs one batch ahead of scoring: the decoders (soundfile,
        # soxr) and ONNX Runtime both release the GIL, so they overlap.
        ahead = submit(batches[0]) if batches else []
        for k, batch in enumerate(batches):
            current = ahead
            if k + 1 < len(batches):
                ahead = submit(batches[k + 1])
            audios = [f.result() for f in current]
            _score_batch(batch, audios, scorer, hop, window_samples, scores_fh, windows_fh, failed)
            bar.update(len(batch))
        bar.close()
    elapsed = time.perf_counter() - start
    rate = len(todo) / elapsed if elapsed > 0 else 0.0
    log.info(
        "scored %d files in %.1f s (%.1f files/s); %d skipped as already scored",
        len(todo),
        elapsed,
        rate,
        skipped,
    )
    return ScoreRun(len(todo) - len(failed), skipped, failed, rate)


def _decode(path: Path) -> np.ndarray | AudioError:
    try:
        return read_audio(path)
    except AudioError as exc:
        return exc


def _scores_or_nan(
    scorer: Scorer, windows: list[np.ndarray], owners: list[int], batch: list[Trial]
) -> np.ndarray:
    """The windows' scores in one call; when the model fails on the batch (a
    card's model can raise on some inputs), file by file, a failing file's
    windows NaN: that file fails on its own, never the run."""
    if not windows:
        return np.zeros(0, np.float32)
    try:
        return scorer.scores(np.stack(windows))
    except ModelError as exc:
        log.warning("%s; scoring the batch's files one by one", exc)
    scores = np.empty(len(windows), np.float32)
    owned = np.asarray(owners)
    for owner in dict.fromkeys(owners):
        mine = np.flatnonzero(owned == owner)
        try:
            scores[mine] = scorer.scores(np.stack([windows[k] for k in mine]))
        except ModelError as exc:
            log.warning("%s: %s", batch[owner].utt, exc)
            scores[mine] = np.nan
    return scores


def _score_batch(
    batch: list[Trial],
    audios: list[np.ndarray | AudioError],
    scorer: Scorer,
    hop: int | None,
    window_samples: int,
    scores_fh: IO[str],
    windows_fh: IO[str],
    failed: list[str],
) -> None:
    owners: list[int] = []
    windows: list[np.ndarray] = []
    for i, audio in enumerate(audios):
        if isinstance(audio, AudioError):
            log.warning("%s", audio)
            failed.append(batch[i].utt)
            continue
        if hop is None:  # the official first window only
            owners.append(i)
            windows.append(official_window(audio, window_samples))
            continue
        for _, window in iter_windows(audio, hop, window_samples):
            owners.append(i)
            windows.append(window)
    scores = _scores_or_nan(scorer, windows, owners, batch)
    per_file: dict[int, list[float]] = {}
    for owner, score in zip(owners, scores.tolist(), strict=True):
        per_file.setdefault(owner, []).append(score)
    for i, file_scores in per_file.items():
        t = batch[i]
        if not all(math.isfinite(x) for x in file_scores):  # a model card's model, say
            log.warning("%s: the model returned a non-finite score; not written", t.utt)
            failed.append(t.utt)
            continue
        # The window scores first: the score line marks the utterance done, so
        # a run cut between the two rescores it (its windows line then comes
        # twice; the last one counts) rather than leaving it without one.
        windows_fh.write(
            json.dumps({"utt": t.utt, "hop_s": (hop or 0) / SAMPLE_RATE_HZ, "scores": file_scores}) + "\n"
        )
        windows_fh.flush()
        # The first window is the official evaluation input.
        scores_fh.write(f"{t.utt} {t.attack} {t.label} {file_scores[0]:.{SCORE_DECIMALS}f}\n")
    scores_fh.flush()
