"""The held-out suite's report: the markdown table, the bootstrap intervals'
lines, the detection curve and the DET picture (``evaluate-suite --out``).

The figures themselves are computed in :mod:`.suite`; this only lays them out.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .bootstrap import level_label
from .fit import describe_alerts
from .metrics import det_curve
from .suite import SuiteConfig, VariantResult


def _interval_lines(summaries: list[dict[str, Any]], which: str) -> list[str]:
    """One line per model for the ``which`` ('pooled' or 'balanced') EER's interval."""
    lines = []
    for s in summaries:
        b = s.get(f"{which}_eer_bootstrap")
        if b is None:
            continue
        low, high = b["ci_percent"]
        line = (
            f"- {s['model']}: {which} EER {b['eer_percent']:.1f} %, {level_label(b['level'])} interval "
            f"{low:.1f}–{high:.1f} % ({b['n']} utterances scored by every model, {b['draws']} draws"
        )
        if "vs" in b:
            d_low, d_high = b["difference_ci_percent"]
            line += (
                f"); minus {b['vs']}: {b['difference_percent']:+.1f} points, interval "
                f"{d_low:+.1f} to {d_high:+.1f}: **{b['verdict']}**"
            )
        else:
            line += ")"
        lines.append(line)
    return lines


def markdown(summaries: list[dict[str, Any]], cfg: SuiteConfig) -> str:
    """One table: rows are pooled, each kind, each system and each genuine corpus; a column per model."""
    names = [s["model"] for s in summaries]
    head = (
        "| | n | "
        + " | ".join(f"{n} EER %" for n in names)
        + " | "
        + " | ".join(f"{n} {cfg.spoof_streams} detected" for n in names)
        + " |"
    )
    lines = [head, "|" + "---|" * (2 + 2 * len(names))]

    def fmt(v: float | None, pct: bool = False) -> str:
        return "–" if v is None else f"{100 * v:.0f} %" if pct else f"{v:.1f}"

    first = summaries[0]
    lines.append(
        f"| **pooled** | {first['n_genuine']}+{first['n_spoof']} | "
        + " | ".join(fmt(s["pooled_eer_percent"]) for s in summaries)
        + " | "
        + " | ".join(fmt(s["at_target"]["detection_rate"], True) for s in summaries)
        + " |"
    )
    lines.append(
        f"| **balanced** (each genuine corpus and each system equal) | {first['n_genuine']}+{first['n_spoof']} | "
        + " | ".join(fmt(s.get("balanced_eer_percent")) for s in summaries)
        + " | "
        + " | ".join("" for _ in summaries)
        + " |"
    )
    for kind, v in first["eer_by_kind"].items():
        lines.append(
            f"| kind {kind} | {v['n']} | "
            + " | ".join(fmt(s["eer_by_kind"].get(kind, {}).get("eer_percent")) for s in summaries)
            + " | "
            + " | ".join("" for _ in summaries)
            + " |"
        )
    for system, v in first["eer_by_system"].items():
        lines.append(
            f"| {system} | {v['n']} | "
            + " | ".join(fmt(s["eer_by_system"].get(system, {}).get("eer_percent")) for s in summaries)
            + " | "
            + " | ".join(fmt(s["at_target"]["detection_by_system"].get(system), True) for s in summaries)
            + " |"
        )
    for corpus, v in first["eer_by_genuine_corpus"].items():
        lines.append(
            f"| genuine: {corpus} | {v['n']} | "
            + " | ".join(
                fmt(s["eer_by_genuine_corpus"].get(corpus, {}).get("eer_percent")) for s in summaries
            )
            + " | "
            + " | ".join("" for _ in summaries)
            + " |"
        )
    lines.append("")
    how = (
        "a call: one spoof system's utterances of one channel copy back to back, up to "
        f"{cfg.stream_seconds:g} s (a rate per call, not per utterance, and not comparable with a per-clip one)"
        if cfg.spoof_streams == "calls"
        else "a clip: each spoof utterance is its own stream"
    )
    lines.append(
        f"Live engine, threshold for ≤ {cfg.target_false_alerts_per_hour:g} false alert/hour on the genuine streams; "
        f"'detected' = a spoof stream alerted within {cfg.detect_within_s:g} s of its start; a stream is {how}."
    )
    intervals = _interval_lines(summaries, "pooled") + _interval_lines(summaries, "balanced")
    if intervals:
        resampled = any(s.get("pooled_eer_bootstrap", {}).get("systems_resampled") for s in summaries)
        lines += [
            "",
            "EER intervals (pooled: every utterance counts once; balanced: every genuine corpus and every "
            "spoof system weighs the same): a paired bootstrap over the same utterances, drawing "
            + ("spoof systems, then " if resampled else "")
            + "clips (with their channel copies) within each "
            + ("drawn" if resampled else "fixed")
            + " spoof system and each genuine corpus."
            + (
                " In calls, neighbouring utterances share windows, so these intervals are too narrow."
                if cfg.spoof_streams == "calls"
                else ""
            ),
            *intervals,
            "",
        ]
    for s in summaries:
        t, sh = s["at_target"], s["at_shipped_threshold"]
        at_target = (
            f"no operating point ({t['none_because']})"
            if t["enter_threshold"] is None
            else f"at threshold {t['enter_threshold']:.3f}: {t['false_alerts_per_hour']:.1f} false alerts/h, "
            f"{fmt(t['detection_rate'], True)} detected ({fmt(t['detection_rate_any'], True)} at any time in the stream"
            + (
                f"; the first alert a median {t['median_first_alert_s']:.1f} s into it)"
                if t["median_first_alert_s"] is not None
                else ")"
            )
        )
        if "detection_none_because" in t:
            at_target += f" (no detection within {cfg.detect_within_s:g} s: {t['detection_none_because']})"
        if t.get("limited_by"):
            limits = [(a["stream"], a["t_s"]) for a in t["limited_by"]]
            at_target += f"; a higher threshold would add false alerts in {describe_alerts(limits)}"
        at_target += (
            f"; {sh['spoof_streams_can_alert_within']} of {sh['spoof_stream_count']} spoof {cfg.spoof_streams} are "
            f"long enough to alert within {cfg.detect_within_s:g} s at all ({sh['spoof_streams_can_alert']} at any "
            "time); the others end, or stay gated, before an alert's windows are scored"
        )
        hop = f"hop {s['hop_s']:g} s, " if "hop_s" in s else ""
        lines.append(
            f"- {s['model']}: {hop}{s['genuine_stream_hours']:.2f} h of genuine streams; {at_target}; "
            f"at the shipped threshold {sh['enter_threshold']:.3f}: {sh['false_alerts_per_hour']:.1f} false alerts/h, "
            f"{fmt(sh['detection_rate'], True)} detected ({fmt(sh['detection_rate_any'], True)} at any time); "
            f"{s['n_unscored']} utterances had no scored window centred on them (gated, or too near "
            "a stream's start)."
        )
    return "\n".join(lines + _curve_table(summaries, cfg, fmt)) + "\n"


def _curve_table(
    summaries: list[dict[str, Any]], cfg: SuiteConfig, fmt: Callable[[float | None, bool], str]
) -> list[str]:
    """Detection at each rate of ``curve_false_alerts_per_hour``, model by model."""
    rates = (
        [p["target_false_alerts_per_hour"] for p in summaries[0].get("operating_curve", [])]
        if summaries
        else []
    )
    if not rates:
        return []
    lines = [
        "",
        f"Detected within {cfg.detect_within_s:g} s (at any time) at the highest threshold with at most this many "
        "false alerts per hour on the genuine streams; the rate reached after the semicolon:",
        "",
        "| false alerts/h at most | " + " | ".join(s["model"] for s in summaries) + " |",
        "|---|" + "---|" * len(summaries),
    ]
    for k, rate in enumerate(rates):
        cells = []
        for s in summaries:
            p = s["operating_curve"][k]
            cells.append(
                "no operating point"
                if p["enter_threshold"] is None
                else f"{fmt(p['detection_rate'], True)} ({fmt(p['detection_rate_any'], True)}); "
                f"{p['false_alerts_per_hour']:.1f}"
            )
        lines.append(f"| {rate:g} | " + " | ".join(cells) + " |")
    return lines


def plot_det(results: list[VariantResult], path: Path) -> None:
    """Pooled DET curves (miss vs false alarm, probit axes) of every variant in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from statistics import NormalDist

    import matplotlib.pyplot as plt

    probit = np.vectorize(lambda p: NormalDist().inv_cdf(min(max(p, 1e-4), 1 - 1e-4)))
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    for r in results:
        if not r.genuine or not r.spoof:
            continue
        miss, fa, _ = det_curve(np.array(list(r.genuine.values())), np.array(list(r.spoof.values())))
        ax.plot(probit(fa), probit(miss), label=r.name)
    ticks = [0.01, 0.05, 0.2, 0.5, 0.8, 0.95]
    ax.set_xticks(probit(ticks))
    ax.set_xticklabels([f"{100 * t:g}" for t in ticks])
    ax.set_yticks(probit(ticks))
    ax.set_yticklabels([f"{100 * t:g}" for t in ticks])
    ax.set_xlabel("spoof accepted as genuine (%)")
    ax.set_ylabel("genuine rejected (%)")
    ax.plot(probit([0.01, 0.99]), probit([0.01, 0.99]), "k:", linewidth=0.8)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title("held-out DET (utterance mean score)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
