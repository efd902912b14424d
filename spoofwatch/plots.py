"""Pictures of scores over time (matplotlib, Agg backend): ``stream --plot`` and ``score --plot``.

Both read the JSON form of results (event dicts, ``FileScore.to_json()``),
so a saved ``--jsonl`` log draws the same way as a live run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .paths import shown

#: Colours shared by both plots (and matching the browser page's chart).
SCORE_COLOUR = "#2b6cd4"
SMOOTHED_COLOUR = "#1d2330"
ENTER_COLOUR = "#b3261e"
EXIT_COLOUR = "#d07a00"
SPEECH_COLOUR = "#2e7d32"
ALERT_COLOUR = "#e53935"
DPI = 110


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def prepare_plot_file(path: Path) -> None:
    """Check ``--plot FILE`` before any work: a format matplotlib writes, known
    by the file's suffix, and a folder that exists (made if missing). A picture
    that cannot be written would otherwise fail after the whole run."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from spoofwatch.errors import InputError

    formats = FigureCanvasAgg.get_supported_filetypes()
    if path.is_dir():
        raise InputError(f"--plot {path}: is a folder; expected a picture file such as timeline.png")
    if path.suffix.lower().lstrip(".") not in formats:
        raise InputError(
            f"--plot {path}: expected a file name ending in one of "
            f"{', '.join('.' + f for f in sorted(formats))} (e.g. timeline.png)"
        )
    prepare_plot_dir(path.parent)


def prepare_plot_dir(folder: Path) -> None:
    """The folder pictures go to, made now; a clear error if it cannot be."""
    from spoofwatch.errors import InputError
    from spoofwatch.paths import cannot_write_in

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"--plot: cannot use {folder} as a folder for pictures: {exc.strerror or exc}"
        ) from None
    why = cannot_write_in(folder)
    if why is not None:
        raise InputError(f"--plot: cannot write pictures in {folder}: {why}")


@dataclass(frozen=True)
class Timeline:
    """What a stream's events say, as arrays for plotting (times in stream seconds)."""

    t_end_s: list[float]
    scores: list[float | None]
    smoothed: list[float | None]
    #: ``(start_s, end_s)`` of each hop interval whose window held speech.
    speech_spans_s: list[tuple[float, float]]
    #: ``(start_s, end_s)`` of each alert; an open one ends at the last event.
    alert_spans_s: list[tuple[float, float]]


def timeline_from_events(events: Iterable[dict[str, Any]]) -> Timeline:
    t_end: list[float] = []
    scores: list[float | None] = []
    smoothed: list[float | None] = []
    speech: list[tuple[float, float]] = []
    alerts: list[tuple[float, float]] = []
    open_alert: float | None = None
    previous_end = 0.0
    for event in events:
        kind = event.get("type")
        if kind == "score":
            end = float(event["t_end"])
            t_end.append(end)
            scores.append(event["score"])
            smoothed.append(event["smoothed"])
            # Each score arrives one hop after the last: shade that hop by this window's state.
            if event["speech"]:
                start = previous_end if len(t_end) > 1 else float(event["t_start"])
                if speech and speech[-1][1] >= start:
                    speech[-1] = (speech[-1][0], end)
                else:
                    speech.append((start, end))
            previous_end = end
        elif kind == "alert_start":
            open_alert = float(event["t"])
        elif kind == "alert_end" and open_alert is not None:
            alerts.append((open_alert, float(event["t"])))
            open_alert = None
    if open_alert is not None:
        alerts.append((open_alert, max([open_alert, *t_end])))
    return Timeline(t_end, scores, smoothed, speech, alerts)


def plot_timeline(
    events: Sequence[dict[str, Any]],
    enter_threshold: float,
    exit_threshold: float,
    path: Path,
    title: str = "",
) -> Timeline:
    """Window score, smoothed score, thresholds, speech and alerts over stream time."""
    plt = _pyplot()
    line = timeline_from_events(events)
    fig, ax = plt.subplots(figsize=(10, 4.2))
    for i, (start, end) in enumerate(line.alert_spans_s):
        ax.axvspan(start, end, color=ALERT_COLOUR, alpha=0.18, lw=0, label="alert" if i == 0 else None)
    scored = [(t, s) for t, s in zip(line.t_end_s, line.scores, strict=True) if s is not None]
    if scored:
        ax.scatter(*zip(*scored, strict=True), s=14, color=SCORE_COLOUR, label="window score", zorder=3)
    # The smoothed score, broken where smoothing was reset (no speech).
    xs: list[float] = []
    ys: list[float] = []
    labelled = False
    for t, s in [*zip(line.t_end_s, line.smoothed, strict=True), (None, None)]:
        if s is None or t is None:
            if xs:
                ax.plot(xs, ys, color=SMOOTHED_COLOUR, lw=2, label=None if labelled else "smoothed score")
                labelled = True
            xs, ys = [], []
        else:
            xs.append(t)
            ys.append(s)
    ax.axhline(
        enter_threshold, color=ENTER_COLOUR, ls="--", lw=1.4, label=f"alert below {enter_threshold:+.2f}"
    )
    ax.axhline(
        exit_threshold, color=EXIT_COLOUR, ls=":", lw=1.4, label=f"alert ends above {exit_threshold:+.2f}"
    )
    # Speech regions as a strip along the bottom of the axes.
    transform = ax.get_xaxis_transform()
    for i, (start, end) in enumerate(line.speech_spans_s):
        ax.fill_between(
            [start, end],
            0,
            0.04,
            transform=transform,
            color=SPEECH_COLOUR,
            alpha=0.6,
            lw=0,
            label="speech" if i == 0 else None,
        )
    ax.set_xlabel("stream time (s, window end)")
    ax.set_ylabel("score (bona fide logit; low = spoof-like)")
    ax.set_title(shown(title) or "spoofwatch timeline")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return line


def plot_file_score(result: dict[str, Any], path: Path) -> None:
    """One file: each window's score over the span it covers, the mean and the threshold."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 3.6))
    for i, window in enumerate(result["windows"]):
        ax.hlines(
            window["score"],
            window["start_s"],
            window["end_s"],
            color=SCORE_COLOUR,
            alpha=0.55,
            lw=2.5,
            label="window score (over its span)" if i == 0 else None,
        )
    ax.axhline(
        result["score"], color=SMOOTHED_COLOUR, lw=2, label=f"file score (mean) {result['score']:+.2f}"
    )
    ax.axhline(
        result["threshold"],
        color=ENTER_COLOUR,
        ls="--",
        lw=1.4,
        label=f"threshold {result['threshold']:+.2f}",
    )
    ax.set_xlabel("time in file (s)")
    ax.set_ylabel("score (bona fide logit)")
    ax.set_title(shown(f"{Path(result['file']).name}: {result['verdict']}"))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
