"""Score fusion of two AASIST checkpoints as one pluggable detector (issue 9).

    python benchmarks/probe_fusion.py --second-weights AASIST_ASVspoof5.pth --corpus DIR --out DIR
    spoofwatch evaluate-suite --model DIR/fusion.toml --corpus DIR ...

The official AASIST-L (ASVspoof 2019 LA) and a second checkpoint of the full
AASIST architecture, e.g. the ASVspoof 5 challenge's AASIST baseline (MIT,
``asvspoof-challenge/asvspoof5``, ``Baseline-AASIST/models/weights/AASIST/best.pth``;
fetch it yourself: it is not shipped), fail on different attack families. This
writes one ONNX graph that runs both on the same window and returns the mean
of their z-scored bona fide logits, and a model card for it, so that every
command (``evaluate-suite`` included) can measure or use the pair.

Each model's z-scoring statistics (mean and standard deviation of its
official-window scores) come from the corpus's ``dev`` split only: the
``test`` split that ``evaluate-suite`` reports on never sets a constant.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from spoofwatch.audio import official_window, read_audio
from spoofwatch.calibration.protocol import parse_protocol
from spoofwatch.constants import ONNX_INPUT_NAME, WINDOW_SAMPLES
from spoofwatch.model.export import export_graph
from spoofwatch.model.weights import load_torch_model

log = logging.getLogger("probe_fusion")
BONAFIDE = 1  # column of the bona fide logit


class ZFusion(nn.Module):
    """(B, 64600) waveforms -> (B,) mean of the two models' z-scored bona fide logits."""

    mean: Tensor
    std: Tensor

    def __init__(self, first: nn.Module, second: nn.Module, stats: list[tuple[float, float]]) -> None:
        super().__init__()
        if not all(np.isfinite(m) and s > 0 for m, s in stats):
            raise ValueError(f"expected finite means and positive deviations of the dev scores, got {stats}")
        self.first, self.second = first, second
        self.register_buffer("mean", torch.tensor([m for m, _ in stats], dtype=torch.float32))
        self.register_buffer("std", torch.tensor([s for _, s in stats], dtype=torch.float32))

    def forward(self, waveform: Tensor) -> Tensor:
        scores = torch.stack([self.first(waveform)[:, BONAFIDE], self.second(waveform)[:, BONAFIDE]], 1)
        return ((scores - self.mean) / self.std).mean(1)  # (B, 2) -> (B,)


def dev_windows(corpus: Path) -> np.ndarray:
    """(N, 64600) official windows of the dev split's utterances."""
    utts = [t.utt for t in parse_protocol(corpus / "protocols" / "dev.txt")]
    log.info("dev split: %d utterances", len(utts))
    return np.stack([official_window(read_audio(corpus / "flac" / f"{u}.flac")) for u in utts])


@torch.inference_mode()
def bonafide_scores(net: nn.Module, windows: np.ndarray) -> np.ndarray:
    """(N,) the net's output for each window, 16 at a time (a fused net's is its score)."""
    out = [net(torch.from_numpy(windows[i : i + 16])) for i in range(0, len(windows), 16)]
    scores = torch.cat(out)
    return (scores[:, BONAFIDE] if scores.ndim == 2 else scores).numpy()


def check_onnx(fused: nn.Module, onnx_path: Path, windows: np.ndarray) -> dict[str, float]:
    """|ONNX Runtime - PyTorch| of the fused score on the dev windows. Windows whose
    graph poolings tie (see ``spoofwatch.model.export.tied_windows``) may differ
    legitimately; their share is reported beside the differences."""
    from spoofwatch.model.runtime import make_session

    session = make_session(onnx_path, device="cpu")
    onnx_scores = np.concatenate(
        [session.run(None, {ONNX_INPUT_NAME: windows[i : i + 16]})[0] for i in range(0, len(windows), 16)]
    )
    diff = np.abs(onnx_scores - bonafide_scores(fused, windows))
    return {
        "max_abs_diff": float(diff.max()),
        "median_abs_diff": float(np.median(diff)),
        "share_over_1e-3": float(np.mean(diff > 1e-3)),
        "finite": bool(np.isfinite(onnx_scores).all()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--second-weights", type=Path, required=True, help="a full-AASIST checkpoint (.pth)")
    ap.add_argument(
        "--corpus", type=Path, required=True, help="a built corpus (its dev split sets the z-scores)"
    )
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    first, second = (
        load_torch_model("aasist-l").eval(),
        load_torch_model("aasist", args.second_weights).eval(),
    )
    windows = dev_windows(args.corpus)
    stats = [
        (float(np.mean(v)), float(np.std(v))) for v in (bonafide_scores(n, windows) for n in (first, second))
    ]
    fused = ZFusion(first, second, stats).eval()
    args.out.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out / "fusion.onnx"
    example = torch.zeros(2, WINDOW_SAMPLES)
    export_graph(fused, (example,), onnx_path, [ONNX_INPUT_NAME], ["score"])
    card = args.out / "fusion.toml"
    card.write_text(
        "# AASIST-L (official) + a second AASIST checkpoint, z-scored on the corpus's dev split\n"
        "[model]\n"
        'onnx = "fusion.onnx"\n'
        "sample_rate_hz = 16000\n"
        f"window_samples = {WINDOW_SAMPLES}\n"
        f'input = "{ONNX_INPUT_NAME}"\n'
        'output = "score"\n'
        "higher_is_bonafide = true\n"
        'name = "aasist-l+second"\n',
        "utf-8",
    )
    parity = check_onnx(fused, onnx_path, windows)
    if not parity["finite"]:
        raise SystemExit(f"{onnx_path}: the ONNX graph gives non-finite scores on the dev split")
    report = {"dev_mean_std": stats, "second": str(args.second_weights), "onnx_vs_pytorch_on_dev": parity}
    (args.out / "fusion.json").write_text(json.dumps(report))
    log.info("dev statistics (mean, std): %s; ONNX vs PyTorch on dev: %s; wrote %s", stats, parity, card)


if __name__ == "__main__":
    main()
