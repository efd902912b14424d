"""Calibration report: ``report.md`` plus PNG plots (matplotlib, Agg backend)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from .metrics import EvalReport, det_curve
from .protocol import ScoreTable
from .streaming import StreamMetrics

#: DET axes tick rates (fractions), on the normal-deviate scale.
_DET_TICKS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4)


@dataclass(frozen=True)
class StreamingSection:
    metrics: StreamMetrics
    policy: dict[str, Any]
    sweep: list[tuple[float, StreamMetrics]]
    n_conversations: int
    hours: float


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _probit(p: np.ndarray) -> np.ndarray:
    clipped = np.clip(p, 1e-5, 1 - 1e-5)
    return np.array([NormalDist().inv_cdf(float(v)) for v in clipped])


def plot_det(table: ScoreTable, path: Path) -> None:
    plt = _pyplot()
    miss, fa, _ = det_curve(table.by_label("bonafide"), table.by_label("spoof"))
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot(_probit(fa), _probit(miss), lw=1.8)
    ticks = _probit(np.array(_DET_TICKS))
    labels = [f"{100 * t:g}" for t in _DET_TICKS]
    ax.set_xticks(ticks, labels)
    ax.set_yticks(ticks, labels)
    ax.set_xlim(ticks[0], ticks[-1])
    ax.set_ylim(ticks[0], ticks[-1])
    ax.plot(ticks, ticks, ls=":", color="grey", lw=1)
    ax.set_xlabel("spoof accepted as bona fide (false alarm, %)")
    ax.set_ylabel("bona fide rejected (miss, %)")
    ax.set_title("DET curve")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_histograms(table: ScoreTable, threshold: float, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.linspace(table.scores.min(), table.scores.max(), 60)
    for label, color in (("bonafide", "tab:green"), ("spoof", "tab:red")):
        ax.hist(table.by_label(label), bins=bins, alpha=0.55, color=color, label=label, density=True)
    ax.axvline(threshold, color="black", ls="--", lw=1.2, label=f"threshold {threshold:+.2f}")
    ax.set_xlabel("score (bona fide logit)")
    ax.set_ylabel("density")
    ax.set_title("Score distributions by class")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_per_attack(report: EvalReport, path: Path) -> None:
    plt = _pyplot()
    attacks = list(report.per_attack_eer_percent)
    fig, ax = plt.subplots(figsize=(max(4, 0.55 * len(attacks) + 2), 4))
    ax.bar(attacks, [report.per_attack_eer_percent[a] for a in attacks], color="tab:blue")
    ax.axhline(
        report.eer_percent, color="black", ls="--", lw=1, label=f"pooled EER {report.eer_percent:.2f} %"
    )
    ax.set_ylabel("EER (%)")
    ax.set_title("EER per attack")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sweep(section: StreamingSection, chosen: float, path_fa: Path, path_delay: Path) -> None:
    plt = _pyplot()
    thresholds = [t for t, _ in section.sweep]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(thresholds, [m.false_alerts_per_hour for _, m in section.sweep], marker=".")
    ax.axvline(chosen, color="black", ls="--", lw=1, label=f"chosen {chosen:+.2f}")
    ax.set_xlabel("alert enter threshold (smoothed score)")
    ax.set_ylabel("false alerts per hour of bona fide audio")
    ax.set_title("False alerts per hour against threshold")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path_fa, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 4))
    med = [np.nan if m.median_delay_s is None else m.median_delay_s for _, m in section.sweep]
    p90 = [np.nan if m.p90_delay_s is None else m.p90_delay_s for _, m in section.sweep]
    ax.plot(thresholds, med, marker=".", label="median delay")
    ax.plot(thresholds, p90, marker=".", label="p90 delay")
    ax.axvline(chosen, color="black", ls="--", lw=1)
    ax2 = ax.twinx()
    ax2.plot(
        thresholds,
        [100 * m.detection_rate for _, m in section.sweep],
        color="tab:red",
        ls=":",
        label="detection rate",
    )
    ax2.set_ylabel("spoof streams detected (%)", color="tab:red")
    ax2.set_ylim(-5, 105)
    ax.set_xlabel("alert enter threshold (smoothed score)")
    ax.set_ylabel("delay from spoof onset to alert (s)")
    ax.set_title("Detection delay against threshold", pad=28)
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(
        handles,
        [str(h.get_label()) for h in handles],
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        ncol=3,
        frameon=False,
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path_delay, dpi=110)
    plt.close(fig)


def write_report(
    out_dir: Path,
    table: ScoreTable,
    report: EvalReport,
    threshold: float,
    target: str,
    streaming: StreamingSection | None,
) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_det(table, out_dir / "det.png")
    plot_histograms(table, threshold, out_dir / "histograms.png")
    plot_per_attack(report, out_dir / "per_attack_eer.png")
    lines = [
        "# spoofwatch calibration report",
        "",
        f"Trials: {report.n_bonafide} bona fide, {report.n_spoof} spoof. Scores are bona fide logits (higher = more genuine).",
        "",
        "| metric | value |",
        "|---|---|",
        f"| EER | {report.eer_percent:.4f} % |",
        f"| EER threshold | {report.eer_threshold:+.4f} |",
        f"| min t-DCF | {'n/a (no ASV scores)' if report.min_tdcf is None else f'{report.min_tdcf:.6f}'} |",
        f"| chosen threshold ({target}) | {threshold:+.4f} |",
        "",
        "![DET curve](det.png)",
        "",
        "![Score histograms](histograms.png)",
        "",
        "## EER per attack",
        "",
        "| attack | EER (%) |",
        "|---|---|",
        *(f"| {a} | {v:.4f} |" for a, v in report.per_attack_eer_percent.items()),
        "",
        "![Per-attack EER](per_attack_eer.png)",
    ]
    if streaming is not None:
        plot_sweep(
            streaming,
            streaming.policy["enter_threshold"],
            out_dir / "false_alerts.png",
            out_dir / "delay.png",
        )
        m = streaming.metrics
        lines += [
            "",
            "## Streaming",
            "",
            f"{streaming.n_conversations} simulated conversations ({60 * streaming.hours:.1f} min) run through the live engine.",
            "",
            "| metric | value |",
            "|---|---|",
            f"| false alerts per hour (bona fide audio) | {m.false_alerts_per_hour:.2f} |",
            f"| spoof streams detected | {100 * m.detection_rate:.1f} % |",
            f"| median delay, onset to alert | {'n/a' if m.median_delay_s is None else f'{m.median_delay_s:.2f} s'} |",
            f"| p90 delay | {'n/a' if m.p90_delay_s is None else f'{m.p90_delay_s:.2f} s'} |",
            "",
            "Chosen policy: " + ", ".join(f"`{k} = {v:g}`" for k, v in streaming.policy.items()),
            "",
            "![False alerts per hour](false_alerts.png)",
            "",
            "![Detection delay](delay.png)",
        ]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path
