"""Training mechanics on a tiny LA-format dataset built from the shared clips."""

from __future__ import annotations

import http.server
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from helpers import BONAFIDE_UTT, REPO_ROOT, SPOOF_UTTS

from spoofwatch.cli import main
from spoofwatch.errors import DatasetError, ModelError, WeightsError
from spoofwatch.model.augment import AUGMENTATIONS, AugmentConfig
from spoofwatch.model.la_data import prepare_la
from spoofwatch.model.train import Trainer, random_crop
from spoofwatch.model.train_config import load_train_config

UTTS = (BONAFIDE_UTT, *SPOOF_UTTS)
TINY = "first_conv = 32\nsinc_channels = 20\nfilts = [[1, 8], [8, 8], [8, 8], [8, 8]]\ngat_dims = [8, 8]\n"


def protocol_lines(la_dir: Path) -> dict[str, str]:
    lines = {}
    for split in ("train.trn", "dev.trl", "eval.trl"):
        for line in (la_dir / f"protocols/ASVspoof2019.LA.cm.{split}.txt").read_text().splitlines():
            if line.split()[1] in UTTS:
                lines[line.split()[1]] = line
    return lines


def build_la_tree(la_dir: Path, root: Path, skip: tuple[str, ...] = ()) -> Path:
    """The real LA layout; every split holds the four shared clips."""
    la = root / "LA"
    lines = protocol_lines(la_dir)
    (la / "ASVspoof2019_LA_cm_protocols").mkdir(parents=True)
    for split, suffix in (("train", "trn"), ("dev", "trl"), ("eval", "trl")):
        flac = la / f"ASVspoof2019_LA_{split}" / "flac"
        flac.mkdir(parents=True)
        for utt in UTTS:
            if (split, utt) not in skip:
                shutil.copy(la_dir / "flac" / f"{utt}.flac", flac / f"{utt}.flac")
        (la / "ASVspoof2019_LA_cm_protocols" / f"ASVspoof2019.LA.cm.{split}.{suffix}.txt").write_text(
            "\n".join(lines[u] for u in UTTS) + "\n"
        )
    return la


def write_config(path: Path, la: Path, out: Path, **extra: Any) -> Path:
    values = {"epochs": 3, "batch_size": 2, "seed": 7, "device": "cpu", "decode_workers": 2, **extra}
    text = (
        f'train_protocol = "{la}/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.train.trn.txt"\n'
        f'train_audio_dir = "{la}/ASVspoof2019_LA_train/flac"\n'
        f'dev_protocol = "{la}/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.dev.trl.txt"\n'
        f'dev_audio_dir = "{la}/ASVspoof2019_LA_dev/flac"\n'
        f'out_dir = "{out}"\n'
        + "".join(
            f"{k} = {json.dumps(v)}\n" for k, v in values.items() if k != "tiny" and not isinstance(v, dict)
        )
    )
    for name, table in values.items():
        if isinstance(table, dict):
            text += f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items())
    if extra.get("tiny", True):
        text += "[model_overrides]\n" + TINY
    path.write_text(text)
    return path


def metrics(run_dir: Path, kind: str) -> list[dict[str, Any]]:
    """The trainer's ``metrics.jsonl`` records of one type ("step" or "epoch")."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["type"] == kind]


@pytest.fixture()
def tiny_la(la_dir: Path, tmp_path: Path) -> Path:
    return build_la_tree(la_dir, tmp_path / "data")


def test_training_runs_rotates_and_tracks_best(tiny_la: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = load_train_config(write_config(tmp_path / "t.toml", tiny_la, out, epochs=7))
    result = Trainer(config, progress_bar=False).run()
    assert not result.interrupted and result.progress.epoch == 7
    assert len(list((out / "checkpoints").glob("ckpt-*.pt"))) == 5
    steps = metrics(out, "step")
    epochs = metrics(out, "epoch")
    assert len(steps) == 14 and all(np.isfinite(r["loss"]) for r in steps)
    assert [r["epoch"] for r in epochs] == list(range(7))
    eers = [r["dev_eer_percent"] for r in epochs]
    assert result.progress.best_eer == min(eers) and result.progress.best_epoch == eers.index(min(eers))
    assert steps[-1]["lr"] < steps[0]["lr"]  # cosine schedule decays
    assert result.best_weights == out / "best.pth" and result.onnx == out / "best.onnx"
    from spoofwatch.model.runtime import OnnxScorer

    scorer = OnnxScorer(result.onnx, device="cpu")
    assert scorer.logits(np.zeros((2, 64600), np.float32)).shape == (2, 2)


def test_small_overfit_drives_loss_down(tiny_la: Path, tmp_path: Path) -> None:
    config = load_train_config(
        write_config(
            tmp_path / "t.toml",
            tiny_la,
            tmp_path / "run",
            epochs=25,
            batch_size=4,
            base_lr=0.003,
            lr_min=0.003,
            class_weights=[0.5, 0.5],
        )
    )
    Trainer(config, progress_bar=False).run()
    losses = [r["loss"] for r in metrics(tmp_path / "run", "step")]
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])


def _record_batches(trainer: Trainer, seen: list[tuple[int, list[int]]]) -> None:
    original = trainer.load_batch

    def spy(pool: Any, epoch: int, indices: list[int]) -> Any:
        seen.append((epoch, list(indices)))
        return original(pool, epoch, indices)

    trainer.load_batch = spy  # type: ignore[method-assign]


def test_resume_continues_exactly(tiny_la: Path, tmp_path: Path) -> None:
    def config(name: str) -> Any:
        augment = {"names": ["gain", "noise"], "probability": 0.5}
        return load_train_config(
            write_config(tmp_path / f"{name}.toml", tiny_la, tmp_path / name, epochs=3, augment=augment)
        )

    cfg_a, cfg_b = config("a"), config("b")
    seen_a: list[tuple[int, list[int]]] = []
    a = Trainer(cfg_a, progress_bar=False)
    _record_batches(a, seen_a)
    a.run()

    seen_b: list[tuple[int, list[int]]] = []
    first = Trainer(cfg_b, progress_bar=False)
    _record_batches(first, seen_b)
    interrupted = first.run(max_batches=3)  # stops mid-epoch 1
    assert interrupted.interrupted
    # Then a crash: one more step logged, its checkpoint lost.
    first.run(max_batches=1)
    max((tmp_path / "b" / "checkpoints").glob("ckpt-*.pt")).unlink()
    resumed = Trainer(cfg_b, resume=True, progress_bar=False)
    assert (resumed.progress.epoch, resumed.progress.batch, resumed.progress.global_step) == (1, 1, 3)
    _record_batches(resumed, seen_b)
    resumed.run()

    seen_b = seen_b[:4] + seen_b[5:]  # the crashed step's batch, run again after the resume
    assert seen_b == seen_a  # the same batches, in the same order, across the interruption
    state_a, state_b = a.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert [h["dev_eer_percent"] for h in resumed.progress.history] == [
        h["dev_eer_percent"] for h in a.progress.history
    ]
    # The log reads as one run: each step once (the crashed step's record was
    # cut at the resume), and the resumed epoch's loss is over all its batches.
    for kind, keys in (("step", ("step", "loss")), ("epoch", ("epoch", "train_loss", "dev_eer_percent"))):
        assert [[r[k] for k in keys] for r in metrics(tmp_path / "b", kind)] == [
            [r[k] for k in keys] for r in metrics(tmp_path / "a", kind)
        ]


def test_a_used_out_dir_a_changed_config_and_a_one_class_dev_set_are_refused_before_training(
    tiny_la: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    config = load_train_config(write_config(tmp_path / "t.toml", tiny_la, out, epochs=1))
    Trainer(config, progress_bar=False).run(max_batches=1)
    with pytest.raises(ModelError, match="holds another run's checkpoints: pass --resume"):
        Trainer(config, progress_bar=False)  # would rotate its own checkpoints away
    changed = load_train_config(write_config(tmp_path / "t3.toml", tiny_la, out, epochs=1, batch_size=3))
    with pytest.raises(ModelError, match=r"the config differs from the run's in batch_size \(2 -> 3\)"):
        Trainer(changed, resume=True, progress_bar=False)  # would misread its batch position
    with pytest.raises(ModelError, match="drop --init/--init-weights"):
        Trainer(config, init="aasist-l", resume=True, progress_bar=False)  # the start would be ignored
    dev = tiny_la / "ASVspoof2019_LA_cm_protocols" / "ASVspoof2019.LA.cm.dev.trl.txt"
    original = dev.read_text()
    # Other data of the same length: its "best" epoch would compare EERs of two dev sets.
    fields = original.splitlines()[-1].split()
    dev.write_text(original.replace(" ".join(fields), " ".join([*fields[:3], "A99", fields[4]])))
    with pytest.raises(ModelError, match=r"the config differs from the run's in dev_data"):
        Trainer(config, resume=True, progress_bar=False)
    dev.write_text(original)
    # A file that cannot be decoded is found before training, not mid-epoch.
    flac = tiny_la / "ASVspoof2019_LA_dev" / "flac" / f"{fields[1]}.flac"
    saved = flac.read_bytes()
    flac.write_bytes(b"RIFF not really a wave file")
    with pytest.raises(DatasetError, match=rf"1 audio file\(s\) cannot be decoded: .*{fields[1]}"):
        Trainer(config, resume=True, progress_bar=False)
    flac.write_bytes(saved)
    # A run stopped before its first checkpoint left metrics: a fresh run starts them again.
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    (stopped / "metrics.jsonl").write_text('{"type": "step", "step": 1, "loss": 0.5}\n')
    again = load_train_config(write_config(tmp_path / "t4.toml", tiny_la, stopped, epochs=1))
    Trainer(again, progress_bar=False).run(max_batches=1)
    assert [r["step"] for r in metrics(stopped, "step")] == [1]
    dev.write_text("".join(line + "\n" for line in dev.read_text().splitlines() if line.endswith("spoof")))
    fresh = load_train_config(write_config(tmp_path / "t2.toml", tiny_la, tmp_path / "run2", epochs=1))
    with pytest.raises(
        DatasetError, match="the dev set needs bona fide and spoof utterances, got only spoof"
    ):
        Trainer(fresh, progress_bar=False)
    # The same for the train set (it trained to the end, learning nothing to tell apart).
    train = fresh.train_protocol
    kept = train.read_text()
    train.write_text("".join(line + "\n" for line in kept.splitlines() if line.endswith("bonafide")))
    with pytest.raises(
        DatasetError, match="the train set needs bona fide and spoof utterances, got only bonafide"
    ) as refused:
        Trainer(fresh, progress_bar=False)
    train.write_text(kept)
    # The refused trainer's traceback (kept here) must not keep its out_dir locked.
    assert refused.value is not None
    probe = (
        "import fcntl, os, sys; fcntl.flock(os.open(sys.argv[1], os.O_RDONLY), fcntl.LOCK_EX | fcntl.LOCK_NB)"
    )
    lock = fresh.out_dir / ".spoofwatch.lock"
    assert subprocess.run([sys.executable, "-c", probe, str(lock)], check=False).returncode == 0


def test_sigterm_saves_a_checkpoint(tiny_la: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = write_config(tmp_path / "t.toml", tiny_la, out, epochs=1000)
    log = tmp_path / "stderr.txt"
    with log.open("wb") as err_fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "spoofwatch", "train", "--config", str(cfg)],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=err_fh,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            deadline = time.monotonic() + 120
            metrics = out / "metrics.jsonl"
            while not (metrics.exists() and metrics.read_text().count("\n") >= 3):
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 130
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert "--resume" in log.read_text()
    checkpoints = list((out / "checkpoints").glob("ckpt-*.pt"))
    assert checkpoints
    saved = torch.load(max(checkpoints), map_location="cpu", weights_only=False)
    assert saved["progress"]["global_step"] >= 3


def test_one_real_aasist_l_step_from_official_weights(sw_home: Path, tiny_la: Path, tmp_path: Path) -> None:
    from spoofwatch.model.weights import load_torch_model

    config = load_train_config(
        write_config(tmp_path / "t.toml", tiny_la, tmp_path / "run", tiny=False, epochs=1, batch_size=2)
    )
    trainer = Trainer(config, init="aasist-l", progress_bar=False)
    result = trainer.run(max_batches=1)
    assert result.interrupted and result.progress.global_step == 1
    (step,) = metrics(tmp_path / "run", "step")
    assert np.isfinite(step["loss"])
    official = load_torch_model("aasist-l").state_dict()
    tuned = trainer.model.state_dict()
    assert any(not torch.equal(official[k], tuned[k]) for k in official if official[k].is_floating_point())


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_augmentations(name: str, la_dir: Path) -> None:
    from spoofwatch.audio import read_audio

    x = random_crop(read_audio(la_dir / "flac" / f"{BONAFIDE_UTT}.flac"), np.random.default_rng(0))
    fn = AUGMENTATIONS[name]
    y = fn(x, np.random.default_rng(1))
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.all(np.isfinite(y)) and np.abs(y).max() <= 1.0
    np.testing.assert_array_equal(y, fn(x, np.random.default_rng(1)))
    assert not np.array_equal(y, x)
    if name != "telephony":  # the telephony channel is mostly fixed; its randomness is the band edges
        assert not np.array_equal(y, fn(x, np.random.default_rng(2)))


def test_augment_config_rejects_unknown() -> None:
    from spoofwatch.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown augmentation"):
        AugmentConfig(("reverb",))


def test_random_crop() -> None:
    rng = np.random.default_rng(0)
    long = np.arange(100_000, dtype=np.float32)
    crop = random_crop(long, rng)
    assert crop.shape == (64600,) and np.all(np.diff(crop) == 1)
    short = np.arange(1000, dtype=np.float32)
    np.testing.assert_array_equal(random_crop(short, rng)[:2000], np.tile(short, 2))


# ---- data prepare-la ---------------------------------------------------------


def make_zip(la_dir: Path, tmp_path: Path, skip: tuple[str, ...] = ()) -> bytes:
    tree = build_la_tree(la_dir, tmp_path / f"tree{len(skip)}", skip)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in sorted(tree.rglob("*")):
            zf.write(path, path.relative_to(tree.parent).as_posix())
    return buf.getvalue()


class RangeHandler(http.server.BaseHTTPRequestHandler):
    body = b""
    ranges: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        header = self.headers.get("Range")
        start = 0
        if header:
            type(self).ranges.append(header)
            start = int(header.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(self.body) - 1}/{len(self.body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(self.body) - start))
        self.end_headers()
        self.wfile.write(self.body[start:])

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def la_server(
    la_dir: Path, tmp_path: Path, loopback_http: Callable[[type[RangeHandler]], str]
) -> tuple[str, type[RangeHandler]]:
    handler = type("H", (RangeHandler,), {"body": make_zip(la_dir, tmp_path), "ranges": []})
    return loopback_http(handler) + "/LA.zip", handler


def test_prepare_la_downloads_resumes_and_verifies(
    la_server: tuple[str, type[RangeHandler]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, handler = la_server
    dest = tmp_path / "data"
    dest.mkdir()
    (dest / "LA.zip.partial").write_bytes(handler.body[:1000])  # an interrupted earlier download
    assert main(["data", "prepare-la", "--source", url, "--dest", str(dest)]) == 0
    assert handler.ranges == ["bytes=1000-"]
    assert (dest / "LA.zip").read_bytes() == handler.body
    out = capsys.readouterr().out
    for split in ("train", "dev", "eval"):
        assert f"{split:5s}      4 /      4 files  ok" in out
    assert (dest / "LA/ASVspoof2019_LA_dev/flac" / f"{BONAFIDE_UTT}.flac").is_file()


def test_prepare_la_reports_problems(
    la_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(make_zip(la_dir, tmp_path)[:-5000])
    with pytest.raises(DatasetError, match="not a complete zip archive"):
        prepare_la(str(truncated), tmp_path / "d1", progress=False)
    missing = tmp_path / "missing.zip"
    missing.write_bytes(make_zip(la_dir, tmp_path, skip=(("dev", SPOOF_UTTS[0]),)))
    assert main(["data", "prepare-la", "--source", str(missing), "--dest", str(tmp_path / "d2")]) == 7
    assert f"dev        3 /      4 files  1 missing, e.g. {SPOOF_UTTS[0]}" in capsys.readouterr().out
    wrong = tmp_path / "wrong.zip"
    with zipfile.ZipFile(wrong, "w") as zf:
        zf.writestr("flac/x.flac", b"")
    with pytest.raises(DatasetError, match="expected the LA layout"):
        prepare_la(str(wrong), tmp_path / "d3", progress=False)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("base_lr = 0.0", "base_lr: expected a finite number > 0"),
        ("lr_min = 1.0", r"lr_min: expected a finite number in \[0, base_lr\]"),
        ("weight_decay = -1.0", "weight_decay: expected"),
        ("class_weights = [0.1, 0.0]", "class_weights: expected two positive"),
        ("decode_workers = 0", "decode_workers: expected >= 1"),
        ("device = 'tpu'", "device: expected auto, cpu or cuda"),
        ('epochs = "3"', "epochs: expected an integer, got '3'"),
        ("epochs = 1.5", "epochs: expected an integer, got 1.5"),
        ("seed = true", "seed: expected an integer"),
        ('base_lr = "0.1"', "base_lr: expected a number"),
        ("class_weights = 0.5", r"class_weights: expected two numbers \[spoof, bona fide\]"),
        ('class_weights = ["a", "b"]', "class_weights: expected two numbers"),
        ('augment = "gain"', "augment: expected a table"),
        ("model_overrides = 5", "model_overrides: expected a table"),
        ("[augment]\nprob = 0.3", r"\[augment\]: unknown key\(s\) prob"),
        ('[augment]\nnames = "gain"', r"\[augment\]\.names: expected a list of names"),
    ],
)
def test_train_config_ranges_are_checked_at_load(line: str, message: str, tmp_path: Path) -> None:
    from spoofwatch.errors import ConfigError
    from spoofwatch.model.train_config import load_train_config

    paths = "".join(
        f'{k} = "x"\n'
        for k in ("train_protocol", "train_audio_dir", "dev_protocol", "dev_audio_dir", "out_dir")
    )
    path = tmp_path / "t.toml"
    path.write_text(paths + line + "\n")
    with pytest.raises(ConfigError, match=message):
        load_train_config(path)
    path.write_text(paths)
    assert load_train_config(path).base_lr > 0


def test_init_weights_continues_from_a_previous_run(tiny_la: Path, tmp_path: Path) -> None:
    from spoofwatch.errors import ModelError, WeightsError

    first = load_train_config(write_config(tmp_path / "a.toml", tiny_la, tmp_path / "a", epochs=1))
    best = Trainer(first, progress_bar=False).run().best_weights
    saved = torch.load(best, map_location="cpu", weights_only=True)
    config = load_train_config(write_config(tmp_path / "b.toml", tiny_la, tmp_path / "b", epochs=1))
    trainer = Trainer(config, init_weights=best, progress_bar=False)
    start = trainer.model.state_dict()
    assert saved.keys() == start.keys() and all(torch.equal(saved[k], start[k]) for k in saved)
    assert trainer.model.training
    # A fresh model differs from those weights (the test above is not vacuous).
    fresh = Trainer(config, progress_bar=False).model.state_dict()
    assert any(not torch.equal(fresh[k], saved[k]) for k in saved if saved[k].is_floating_point())
    with pytest.raises(ModelError, match="exclusive"):
        Trainer(config, init="aasist-l", init_weights=best, progress_bar=False)
    official_shape = load_train_config(
        write_config(tmp_path / "c.toml", tiny_la, tmp_path / "c", tiny=False, epochs=1)
    )
    with pytest.raises(WeightsError, match="does not fit"):
        Trainer(official_shape, init_weights=best, progress_bar=False)


def test_every_shipped_recipe_loads_and_names_protocols_the_corpus_recipe_writes() -> None:
    """configs/train/*.toml: each validates, and one that trains on the open corpus
    reads protocols that configs/data/open.toml produces (a split or a [subsets] name)."""
    corpus = tomllib.loads((REPO_ROOT / "configs" / "data" / "open.toml").read_text("utf-8"))
    written = {"train", "dev", "test", *corpus["subsets"]}
    recipes = sorted((REPO_ROOT / "configs" / "train").glob("*.toml"))
    assert len(recipes) >= 4
    for path in recipes:
        config = load_train_config(path)
        for protocol in (config.train_protocol, config.dev_protocol):
            if "corpus" in protocol.parts:  # the open corpus, not ASVspoof 2019 LA
                assert protocol.parent.name == "protocols" and protocol.stem in written, (path, protocol)


def test_resume_moves_past_unreadable_checkpoints_and_damaged_metrics(
    tiny_la: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A newest checkpoint cut short (a full disk) or empty was a raw torch
    traceback, and the older intact one was never tried; a state dict saved
    as ckpt-*.pt was KeyError 'model'; a metrics line of valid JSON but no
    object was AttributeError."""
    out = tmp_path / "run"
    cfg = write_config(tmp_path / "t.toml", tiny_la, out, epochs=1)
    config = load_train_config(cfg)
    Trainer(config, progress_bar=False).run(max_batches=1)
    trainer = Trainer(config, resume=True, progress_bar=False)
    trainer.run(max_batches=1)
    older, newest = sorted((out / "checkpoints").glob("ckpt-*.pt"))
    newest.write_bytes(newest.read_bytes()[:1000])  # cut short
    empty = out / "checkpoints" / "ckpt-00000003-e000-b00003.pt"
    empty.write_bytes(b"")
    weights_only = out / "checkpoints" / "ckpt-00000004-e000-b00004.pt"
    torch.save(trainer.model.state_dict(), weights_only)
    with (out / "metrics.jsonl").open("a") as fh:
        fh.write('[1]\n"text"\n{"type": "step", "step": "2"}\n')
    resumed = Trainer(config, resume=True, progress_bar=False)
    assert resumed.progress.global_step == 1  # the older, intact checkpoint
    assert [p.name for p in resumed.checkpoints()] == [older.name]
    for bad in (newest, empty, weights_only):
        assert (out / "checkpoints" / f"{bad.name}.unreadable").is_file()
    warnings = "\n".join(r.message for r in caplog.records if r.levelname == "WARNING")
    assert f"{newest}: unreadable (" in warnings and f"{empty}: unreadable (" in warnings
    assert f"{weights_only}: not a training checkpoint: it is a state dict" in warnings
    assert "dropped 3 line(s) that are not metrics records" in warnings
    assert [r["step"] for r in metrics(out, "step")] == [1]  # every line reads back
    # A checkpoint is not weights to start from: say so, and what to use instead.
    code = main(
        [
            "train",
            "--config",
            str(write_config(tmp_path / "t2.toml", tiny_la, tmp_path / "run2")),
            "--init-weights",
            str(older),
        ]
    )
    assert code == WeightsError.exit_code
    assert f"{older} is a training checkpoint (model, optimiser and progress), not weights" in (
        capsys.readouterr().err
    )
    # Nothing readable left: one line saying so, not a traceback.
    older.write_bytes(b"garbage")
    assert main(["train", "--config", str(cfg), "--resume"]) == ModelError.exit_code
    err = capsys.readouterr().err
    assert f"--resume: no readable checkpoint in {out / 'checkpoints'}: {older}: unreadable (" in err
    assert "Traceback" not in err and older.is_file()


def test_one_training_run_at_a_time_in_an_out_dir(
    tiny_la: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two runs into one out_dir both finished, with interleaved metrics and
    each other's checkpoints and best.pth: the second is refused, naming the first."""
    import fcntl

    from spoofwatch.errors import InputError
    from spoofwatch.paths import OUTPUT_LOCK_NAME

    out = tmp_path / "run"
    cfg = write_config(tmp_path / "t.toml", tiny_la, out, epochs=1)
    out.mkdir()
    with (out / OUTPUT_LOCK_NAME).open("w") as held:  # another run's hold
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242\n")
        held.flush()
        assert main(["train", "--config", str(cfg)]) == InputError.exit_code
        assert f"out_dir {out} is in use by another run (pid 4242;" in capsys.readouterr().err
    assert not (out / "checkpoints").exists() and not (out / "metrics.jsonl").exists()
    config = load_train_config(cfg)
    Trainer(config, progress_bar=False).run(max_batches=1)  # released with its holder


def test_train_refuses_a_negative_seed_and_names_no_option_it_lacks(
    tiny_la: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """seed = -1 passed the config check and failed in numpy at the first
    batch; a missing file's error suggested --skip-missing, which train has not."""
    from spoofwatch.errors import ConfigError

    negative = write_config(tmp_path / "neg.toml", tiny_la, tmp_path / "neg", seed=-1)
    assert main(["train", "--config", str(negative)]) == ConfigError.exit_code
    assert "seed: expected an integer in [0, 2**64 - 1], got -1" in capsys.readouterr().err
    (tiny_la / "ASVspoof2019_LA_train" / "flac" / f"{BONAFIDE_UTT}.flac").unlink()
    cfg = write_config(tmp_path / "t.toml", tiny_la, tmp_path / "run")
    assert main(["train", "--config", str(cfg)]) == DatasetError.exit_code
    err = capsys.readouterr().err
    assert f"1 of {len(UTTS)} files in ASVspoof2019.LA.cm.train.trn.txt are missing or empty" in err
    assert "training needs every file its protocols list" in err and "--skip-missing" not in err
